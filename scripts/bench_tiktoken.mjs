// tiktoken's `gpt2` encode speed on the same corpus, for comparison with `dsk bench tokenizer`.
// Prints JSON; with a second argument (a JSON file from `dsk bench tokenizer`) it prints that file with the
// tiktoken numbers added, which is how bench/results/tokenizer-cpu-<date>.json is made:
//   TIKTOKEN=/tmp/tk/node_modules/tiktoken node scripts/bench_tiktoken.mjs data/tinyshakespeare.txt dsk.json
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";

const require = createRequire(import.meta.url);
const tiktokenDir = process.env.TIKTOKEN || "tiktoken";
const { get_encoding } = require(tiktokenDir);
const corpus = process.argv[2] || "data/tinyshakespeare.txt";
const text = readFileSync(corpus, "utf8");
const bytes = Buffer.byteLength(text, "utf8");
const enc = get_encoding("gpt2");
const tokens = enc.encode(text, "all").length;  // warm-up
const times = [];
for (let r = 0; r < 5; ++r) {
  const t0 = process.hrtime.bigint();
  enc.encode(text, "all");
  times.push(Number(process.hrtime.bigint() - t0) / 1e9);
}
times.sort((a, b) => a - b);
const tiktoken = {
  version: require(path.join(tiktokenDir, "package.json")).version,
  build: "npm (WASM), node " + process.version,
  tokens,
  single_thread_mb_per_s: bytes / 1e6 / times[2],
};
enc.free();
if (process.argv[3]) {
  const dsk = JSON.parse(readFileSync(process.argv[3], "utf8"));
  dsk.tiktoken = tiktoken;
  dsk.speedup_vs_tiktoken = dsk.dsk_single_thread_mb_per_s / tiktoken.single_thread_mb_per_s;
  console.log(JSON.stringify(dsk, null, 2));
} else {
  console.log(JSON.stringify({ corpus, bytes, tiktoken }, null, 2));
}
