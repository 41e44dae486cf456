// dsk eval: mean cross-entropy and perplexity of a checkpoint over a prepared split or a text file.
#include "engine/checkpoint.h"
#include "engine/data.h"
#include "engine/evaluate.h"
#include "engine/read_file.h"
#include "engine/tokenizer.h"
#include "engine/utf8.h"
#include "tools/cli.h"
#include "tools/device_option.h"

#include <algorithm>
#include <cstdio>

namespace dsk {
namespace {

std::vector<uint16_t> encode_file(const std::string& path, bool allow_special) {
  const std::string text = read_file(path, "text file");
  // A byte order mark is not text: `dsk prepare` drops it too, so a file scores the same either way.
  std::vector<int32_t> ids = Tokenizer::gpt2().encode(utf8::strip_bom(text), allow_special);
  return std::vector<uint16_t>(ids.begin(), ids.end());
}

int run_eval(const std::vector<std::string>& argv) {
  cli::Args a("eval", "evaluate a checkpoint: mean cross-entropy and perplexity",
              "dsk eval --model RUN_OR_CHECKPOINT (--data DIR [--split val] | --text FILE) [--json]");
  a.option("model", "PATH", "a run folder (its best checkpoint) or a checkpoint folder")
      .option("data", "DIR", "a folder made by `dsk prepare`")
      .option("split", "NAME", "val or train (with --data)", "val")
      .option("text", "FILE", "a text file, encoded as-is")
      .flag("no-special", "encode a literal <|endoftext|> in --text as plain text")
      .option("batch-size", "B", "windows per forward pass", "8")
      .option("max-windows", "N", "evaluate only the first N windows (0 = all)", "0")
      .option("device", "DEV", "cpu, cuda or auto", "auto")
      .flag("json", "print the result as JSON");
  if (!a.parse(argv)) return 0;
  if (!a.has("model")) throw cli::UsageError("dsk eval: --model is required");
  if (a.has("data") == a.has("text")) throw cli::UsageError("dsk eval: give exactly one of --data or --text");
  // Options that only apply to the other source would be silently ignored: refuse them by name.
  if (a.has("text") && a.given("split"))
    throw cli::UsageError("dsk eval: --split applies to --data only (--text evaluates the whole file)");
  if (a.has("data") && a.given("no-special"))
    throw cli::UsageError("dsk eval: --no-special applies to --text only (a --data folder is tokenized already)");
  const int batch = a.get_int32("batch-size", 1);
  const long long max_windows = a.get_int("max-windows", 0);

  const std::string ckpt = resolve_checkpoint(a.get("model"));
  const Backend device = cli::resolve_device(a.get("device"));
  auto model = load_model(ckpt, device);
  const ModelConfig& c = model->config();

  std::vector<uint16_t> owned;
  const uint16_t* tokens = nullptr;
  size_t n = 0;
  std::unique_ptr<TokenShard> shard;
  std::string source;
  if (a.has("data")) {
    PreparedData d = open_prepared(a.get("data"));
    const std::string split = a.get("split");
    if (split != "val" && split != "train") throw cli::UsageError("dsk eval: --split must be val or train");
    shard = std::make_unique<TokenShard>(split == "val" ? d.val_path : d.train_path);
    if (shard->vocab_size() != c.vocab_size)
      throw Error(fmt::format("the data was tokenized for vocab_size {}, the model has {}", shard->vocab_size(),
                              c.vocab_size));
    tokens = shard->tokens();
    n = shard->size();
    source = shard->path();
  } else {
    owned = encode_file(a.get("text"), !a.has("no-special"));
    tokens = owned.data();
    n = owned.size();
    source = a.get("text");
  }
  // More rows than windows would only size the arena for rows that never exist (--batch-size 5000 on a split of
  // 22 windows asked for 31 GB), so the batch is capped at the windows evaluated; the result is the same.
  int64_t windows = static_cast<int64_t>(eval_windows(n, c.context_length).size());
  if (max_windows > 0) windows = std::min<int64_t>(windows, max_windows);
  const int rows = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(batch, windows)));
  // A step still too large for the memory is an Error (1), with the option that sets it named.
  Arena arena = [&] {
    try {
      return Arena(device, eval_arena_bytes(c, rows, c.context_length), "evaluation");
    } catch (const Error& e) {
      if (rows == 1) throw;
      throw Error(fmt::format("{}; try a smaller --batch-size (this step is {} windows)", e.what(), rows));
    }
  }();
  EvalResult r = evaluate(*model, tokens, n, c.context_length, rows, max_windows, arena);
  if (a.has("json")) {
    nlohmann::json j = {{"loss", r.loss},         {"perplexity", r.perplexity}, {"tokens", r.tokens},
                        {"windows", r.windows},   {"context_length", c.context_length},
                        {"checkpoint", ckpt},     {"source", source},
                        {"expert_load", r.expert_load}};
    std::puts(j.dump(2).c_str());
  } else {
    std::printf("checkpoint %s\nsource     %s\ntokens     %lld predictions in %lld windows of <= %d\nloss       %.4f\n"
                "perplexity %.2f\n",
                ckpt.c_str(), source.c_str(), static_cast<long long>(r.tokens), static_cast<long long>(r.windows),
                c.context_length, r.loss, r.perplexity);
    for (size_t l = 0; l < r.expert_load.size(); ++l) {
      std::string loads;
      for (double f : r.expert_load[l]) loads += fmt::format(" {:.3f}", f);
      std::printf("layer %zu expert load:%s\n", l, loads.c_str());
    }
  }
  return 0;
}

}  // namespace
}  // namespace dsk

DSK_COMMAND("eval", "evaluate a checkpoint: cross-entropy and perplexity (JSON with --json)", dsk::run_eval);
