// `dsk prepare`: tokenize a corpus into train/val token shards + manifest.json.
#include "engine/data.h"
#include "engine/documents.h"
#include "tools/cli.h"

#include <cstdio>

namespace {

int run_prepare(const std::vector<std::string>& argv) {
  dsk::cli::Args args("prepare", "tokenize a corpus into train/val shards",
                      "dsk prepare --input PATH --out DIR [options]");
  args.option("input", "PATH", "a .txt file, a folder of .txt files, a .csv or a .jsonl file")
      .option("out", "DIR", "output folder (train.bin, val.bin, manifest.json)")
      .option("format", "FMT", "txt | dir | csv | jsonl | auto (by extension)", "auto")
      .option("column", "NAME", "CSV column holding the text", "text")
      .option("field", "NAME", "JSONL field holding the text", "text")
      .option("val-fraction", "F", "fraction of documents (or of a single text) for validation", "0.1")
      .option("seed", "N", "seed of the document split", "1337")
      .flag("force", "replace an existing output folder")
      .flag("no-special", "encode a literal <|endoftext|> in the text as plain text");
  if (!args.parse(argv)) return 0;
  if (args.get("input").empty()) throw dsk::cli::UsageError("dsk prepare: --input PATH is required");
  if (args.get("out").empty()) throw dsk::cli::UsageError("dsk prepare: --out DIR is required");
  dsk::PrepareOptions opt;
  opt.input = args.get("input");
  opt.out_dir = args.get("out");
  opt.format = args.get("format");
  std::string format;  // what the input is read as (resolve_format knows the names --format takes)
  try {
    format = dsk::resolve_format(opt.input, opt.format);
  } catch (const dsk::Error& e) {
    throw dsk::cli::UsageError(fmt::format("dsk prepare: --format: {}", e.what()));
  }
  opt.column = args.get("column");
  opt.field = args.get("field");
  // --column / --field name where CSV / JSONL text lives; given for another format they would be silently unused.
  if (args.given("column") && format != "csv")
    throw dsk::cli::UsageError(
        fmt::format("dsk prepare: --column applies to CSV input; {} is read as {}", opt.input, format));
  if (args.given("field") && format != "jsonl")
    throw dsk::cli::UsageError(
        fmt::format("dsk prepare: --field applies to JSONL input; {} is read as {}", opt.input, format));
  opt.val_fraction = args.get_double("val-fraction");
  if (!(opt.val_fraction > 0.0 && opt.val_fraction < 1.0))  // (written so that NaN fails too)
    throw dsk::cli::UsageError(fmt::format(
        "dsk prepare: --val-fraction must be greater than 0 and less than 1, got {}", args.get("val-fraction")));
  long long seed = args.get_int("seed");
  if (seed < 0) throw dsk::cli::UsageError("dsk prepare: --seed must be >= 0");
  opt.seed = static_cast<uint64_t>(seed);
  opt.force = args.has("force");
  opt.allow_special = !args.has("no-special");

  nlohmann::json m = dsk::prepare_dataset(opt);
  double mb = m["input_bytes"].get<double>() / 1e6;
  double secs = m["seconds"].get<double>();
  std::printf("prepared %s (%s) -> %s\n", m["source"].get<std::string>().c_str(),
              m["input_format"].get<std::string>().c_str(), opt.out_dir.c_str());
  std::printf("  documents: %zu train, %zu val (%zu empty skipped)\n", m["documents"]["train"].get<size_t>(),
              m["documents"]["val"].get<size_t>(), m["documents"]["skipped_empty"].get<size_t>());
  std::printf("  tokens:    %zu train, %zu val\n", m["tokens"]["train"].get<size_t>(), m["tokens"]["val"].get<size_t>());
  std::printf("  %.2f MB in %.2f s: %.1f MB/s overall, %.1f MB/s tokenizing\n", mb, secs, mb / secs,
              mb / m["tokenize_seconds"].get<double>());
  return 0;
}

}  // namespace

DSK_COMMAND("prepare", "tokenize text / a folder of .txt / CSV / JSONL into train/val shards", run_prepare);
