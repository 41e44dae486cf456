// Differential check of the pre-tokenizer's Unicode classes against tiktoken, over every code point.
// Writes FILE.txt (one line per code point: the code point in letter, number, space and symbol contexts),
// FILE.ids (tiktoken's ids for each line, encoded alone) and FILE.cps (the code point of each line, hex). Compare with the dsk side:
//   TIKTOKEN=/tmp/tk/node_modules/tiktoken node scripts/check_unicode_classes.mjs /tmp/allcp
//   build/dsk tokenize encode --lines --no-special /tmp/allcp.txt > /tmp/allcp.dsk
//   paste -d'\t' /tmp/allcp.cps /tmp/allcp.ids /tmp/allcp.dsk | awk -F'\t' '$2 != $3 {print $1}'  # differing code points
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";

const require = createRequire(import.meta.url);
const { get_encoding } = require(process.env.TIKTOKEN || "tiktoken");
const enc = get_encoding("gpt2");
const base = process.argv[2] || "/tmp/allcp";
const lines = [], ids = [], cps = [];
for (let cp = 0; cp <= 0x10ffff; ++cp) {
  if (cp >= 0xd800 && cp <= 0xdfff) continue;
  if (cp === 0x0a || cp === 0x0d || cp === 0x85 || cp === 0x2028 || cp === 0x2029) continue;  // line breaks
  const c = String.fromCodePoint(cp);
  // Contexts whose ids change with the class: "'s" splits off only after a letter/number/space, a space
  // attaches only to a non-space, runs join only within one class.
  const line = `a${c}b ${c}1${c}${c}x ${c}.${c} ${c}  ${c}'s ${c}'re x${c}'ll 1${c}'d`;
  cps.push(cp.toString(16));
  lines.push(line);
  ids.push(Array.from(enc.encode_ordinary(line)).join(" "));
}
writeFileSync(base + ".txt", lines.join("\n") + "\n");
writeFileSync(base + ".ids", ids.join("\n") + "\n");
writeFileSync(base + ".cps", cps.join("\n") + "\n");
console.log(`wrote ${lines.length} lines to ${base}.txt / .ids`);
enc.free();
