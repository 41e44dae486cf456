// dsk bench: train | kernels | attention | moe | tokenizer — results as JSON on stdout and optionally a file.
#include "bench/attention_bench.h"
#include "bench/bench_decode.h"
#include "bench/bench_tokenizer.h"
#include "bench/bench_train.h"
#include "bench/kernel_bench.h"
#include "bench/machine.h"
#include "bench/moe_bench.h"
#include "engine/config.h"
#include "engine/paths.h"
#include "engine/read_file.h"
#include "kernels/device.h"
#include "tools/cli.h"
#include "tools/run_setup.h"
#include "tools/device_option.h"

#include <fmt/ranges.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

namespace fs = std::filesystem;

namespace dsk {
namespace {

const char* kUsage =
    "dsk bench <train|kernels|attention|moe|tokenizer> [options]\n"
    "  train      training-step speed: tokens/s, ms forward/backward/optimizer, GFLOP/s\n"
    "  kernels    per-kernel micro-benchmarks (CPU wall clock; CUDA events on a GPU)\n"
    "  attention  MLA's KV cache and decode speed (absorbed / explicit / MHA) + the attention kernel forward/backward\n"
    "  moe        one MoE layer: permuted/grouped dispatch vs the original loop over experts\n"
    "  tokenizer  GPT-2 encoding speed (MB/s), single-threaded and parallel";

// Where --json FILE is written: through symbolic links (even one to a file not there yet) to the file itself, so
// that a link is never replaced by a file while its target stays stale.
fs::path json_output_path(const cli::Args& a) {
  fs::path p(a.get("json"));
  std::error_code ec;
  for (int hops = 0; fs::is_symlink(fs::symlink_status(p, ec)); ++hops) {
    const fs::path target = fs::read_symlink(p, ec);
    if (hops == 40 || ec) throw Error(fmt::format("--json {}: its symbolic links cannot be followed", a.get("json")));
    p = target.is_absolute() ? target : p.parent_path() / target;
  }
  return p;
}

// Checked before a benchmark runs, not after: --json FILE must be writable, and may replace only an earlier dsk
// benchmark result (a re-run), never a file of the user's.
void check_json_output(const cli::Args& a) {
  if (!a.has("json") || a.get("json").empty()) return;
  const fs::path path = json_output_path(a);
  if (fs::is_directory(path)) throw Error(fmt::format("--json {} is a folder", path.string()));
  // (A FIFO or a device would block the check below, or receive the result in place of a file.)
  if (fs::exists(path) && !fs::is_regular_file(path))
    throw Error(fmt::format("--json {} is not a regular file", path.string()));
  const fs::path folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (!fs::is_directory(folder)) throw Error(fmt::format("--json {}: the folder {} does not exist", path.string(), folder.string()));
  if (fs::exists(path)) {
    const nlohmann::json old = probe_json(path.string());
    if (!old.is_object() || !old.contains("machine") || !old.contains("result"))
      throw Error(fmt::format("--json {} exists and is not a dsk benchmark result; not overwriting it", path.string()));
  }
  if (access(folder.c_str(), W_OK) != 0) throw Error(fmt::format("--json {}: cannot write into {}", path.string(), folder.string()));
}

// Prints the result with the machine description, and writes it to --json FILE when given.
int emit(const cli::Args& a, nlohmann::json result) {
  nlohmann::json out = {{"machine", machine_info()}, {"result", std::move(result)}};
  std::string text = out.dump(2);
  std::puts(text.c_str());
  if (a.has("json") && !a.get("json").empty()) {
    // A temporary of this process's own, renamed into place.
    const std::string path = json_output_path(a).string();
    const std::string tmp = fmt::format("{}.tmp-{}", path, getpid());
    {
      std::ofstream f(tmp);
      if (!(f << text << "\n")) {
        std::remove(tmp.c_str());
        throw Error(fmt::format("cannot write {}", path));
      }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      throw Error(fmt::format("cannot write {}", path));
    }
    std::fprintf(stderr, "wrote %s\n", path.c_str());
  }
  return 0;
}

int bench_train_cmd(const std::vector<std::string>& argv) {
  cli::Args a("bench train", "training-step speed", "dsk bench train [--config small] [--device cpu|cuda|auto]");
  a.option("config", "NAME|FILE", "model configuration", "small")
      .option("device", "DEV", "cpu, cuda or auto", "auto")
      .option("batch", "B", "batch size", "8")
      .option("seq-len", "T", "sequence length (default: context_length)", "0")
      .option("steps", "N", "timed steps", "5")
      .option("warmup", "N", "untimed steps first", "1")
      .option("profile-steps", "N", "steps profiled op by op after the timed ones (0: none)", "2")
      .repeated("set", "KEY=VALUE", "override a model config key")
      .flag("tf32", "CUDA: TF32 tensor cores for the fp32 GEMMs")
      .option("expert-math", "NAME", "CUDA: grouped expert GEMMs in auto (follows --tf32), ffma, tf32 or 3xtf32",
              "auto")
      .option("attention-math", "NAME", "CUDA: attention kernels in auto (follows --tf32), ffma, tf32 or 3xtf32",
              "auto")
      .option("json", "FILE", "also write the result here");
  if (!a.parse(argv)) return 0;
  check_json_output(a);
  const cuda::Math expert_math = cli::parse_math("expert-math", a.get("expert-math"));
  const cuda::Math attention_math = cli::parse_math("attention-math", a.get("attention-math"));
  cuda::set_tf32(a.has("tf32"));
  cuda::set_expert_math(expert_math);
  cuda::set_attention_math(attention_math);
  ModelConfig c = load_model_config(a.get("config"));
  cli::apply_overrides(a.all("set"), c, nullptr);
  cli::validate_after_overrides(c, nullptr, a.all("set"));
  TrainBenchOptions o;
  o.batch = a.get_int32("batch", 1);
  o.seq_len = a.get_int32("seq-len", 0, c.context_length);
  o.steps = a.get_int32("steps", 1);
  o.warmup = a.get_int32("warmup", 0);
  o.profile_steps = a.get_int32("profile-steps", 0);
  const Backend device = cli::resolve_device(a.get("device"));
  nlohmann::json r = bench_train(c, device, o);
  r["config_name"] = a.get("config");
  if (device == Backend::CUDA) {  // the arithmetic that ran (what auto resolved to on this GPU)
    r["tf32"] = a.has("tf32");
    r["expert_math"] = cuda::math_name(cuda::running_math(expert_math, "expert_math"));
    r["attention_math"] = cuda::math_name(cuda::running_math(attention_math, "attention_math"));
  }
  return emit(a, r);
}

int bench_simple(const std::string& name, const std::vector<std::string>& argv,
                 const std::function<nlohmann::json(const cli::Args&)>& run) {
  cli::Args a("bench " + name, "micro-benchmark", "dsk bench " + name + " [--json FILE]");
  a.option("json", "FILE", "also write the result here").option("device", "DEV", "cpu (CUDA: see scripts/gpu_check.sh)", "cpu");
  if (name == "tokenizer")
    a.option("corpus", "FILE", "text to encode (default: the embedded Tiny Shakespeare)")
        .option("threads", "N", "threads for the parallel mode (0 = all cores)", "0");
  if (!a.parse(argv)) return 0;
  check_json_output(a);
  if (a.get("device") != "cpu") throw cli::UsageError(fmt::format("bench {}: only --device cpu here", name));
  return emit(a, run(a));
}

int bench_kernels_cmd(const std::vector<std::string>& argv) {
  cli::Args a("bench kernels", "per-kernel micro-benchmarks", "dsk bench kernels [--device cpu|cuda] [--json FILE]");
  a.option("device", "DEV", "cpu or cuda", "cpu").option("json", "FILE", "also write the result here");
  if (!a.parse(argv)) return 0;
  check_json_output(a);
  const Backend dev = cli::resolve_device(a.get("device"));
  if (dev == Backend::CPU) return emit(a, bench_kernels_cpu());
#ifdef DSK_HAVE_CUDA
  return emit(a, bench_kernels_cuda());
#else
  throw Error("built without CUDA");
#endif
}

// The shapes named by --shape (all of the device's when none is), in the device's order; an unknown name is a
// usage error naming the choices.
std::vector<MoeBenchShape> chosen_moe_shapes(const std::vector<MoeBenchShape>& all,
                                             const std::vector<std::string>& names) {
  if (names.empty()) return all;
  std::vector<std::string> known;
  for (const auto& s : all) known.push_back(s.name);
  for (const auto& n : names)
    if (std::find(known.begin(), known.end(), n) == known.end())
      throw cli::UsageError(fmt::format("bench moe: unknown --shape '{}' (this device has: {})", n,
                                        fmt::join(known, ", ")));
  std::vector<MoeBenchShape> chosen;
  for (const auto& s : all)
    if (std::find(names.begin(), names.end(), s.name) != names.end()) chosen.push_back(s);
  return chosen;
}

int bench_moe_cmd(const std::vector<std::string>& argv) {
  cli::Args a("bench moe", "one MoE layer: grouped dispatch vs a loop over experts",
              "dsk bench moe [--device cpu|cuda] [--shape NAME ...] [--json FILE]");
  a.option("device", "DEV", "cpu or cuda", "cpu")
      .repeated("shape", "NAME", "only this shape (repeatable; CPU: small, default; CUDA: small, default, large)")
      .option("json", "FILE", "also write the result here");
  if (!a.parse(argv)) return 0;
  check_json_output(a);
  const Backend dev = cli::resolve_device(a.get("device"));
  if (dev == Backend::CPU) return emit(a, bench_moe_cpu(chosen_moe_shapes(moe_bench_shapes(), a.all("shape"))));
#ifdef DSK_HAVE_CUDA
  return emit(a, bench_moe_cuda(chosen_moe_shapes(moe_bench_shapes_cuda(), a.all("shape"))));
#else
  throw Error("built without CUDA");
#endif
}

// bench attention: the decode benchmark over small/default/large (or --config), plus the kernel micro-benchmark.
int bench_attention_cmd(const std::vector<std::string>& argv) {
  cli::Args a("bench attention", "KV-cache sizes and decode speed of absorbed MLA, explicit MLA and MHA",
              "dsk bench attention [--config NAME|FILE ...] [--device cpu|cuda] [--json FILE]");
  a.repeated("config", "NAME|FILE", "configurations to run (default: small, default, large)")
      .option("device", "DEV", "cpu or cuda", "cpu")
      .option("contexts", "L,L,..", "context lengths to decode at (default: per config and device)")
      .option("batches", "B,B,..", "batch sizes (default: per device)")
      .option("steps", "N", "timed decode steps per point (0: the device's default)", "0")
      .option("layers", "N", "run with this many layers (0: all, except large on the CPU: 1)", "0")
      .flag("no-kernels", "skip the attention kernel micro-benchmark")
      .option("json", "FILE", "also write the result here");
  if (!a.parse(argv)) return 0;
  check_json_output(a);
  const Backend dev = cli::resolve_device(a.get("device"));
  auto int_list = [&](const std::string& flag) {
    std::vector<int> v;
    std::string s = a.get(flag);
    size_t i = 0;
    while (i < s.size()) {
      size_t j = s.find(',', i);
      if (j == std::string::npos) j = s.size();
      const std::string w = s.substr(i, j - i);
      char* end = nullptr;
      const long x = std::strtol(w.c_str(), &end, 10);
      if (w.empty() || *end != '\0' || x <= 0) throw cli::UsageError(fmt::format("--{}: bad value '{}'", flag, w));
      v.push_back(static_cast<int>(x));
      i = j + 1;
    }
    return v;
  };
  std::vector<std::string> configs = a.all("config");
  if (configs.empty()) configs = {"small", "default", "large"};
  const int steps = a.get_int32("steps", 0), layers = a.get_int32("layers", 0);  // 0: the sweep's own
  nlohmann::json decode = nlohmann::json::array();
  for (const std::string& name : configs) {
    ModelConfig c = load_model_config(name);
    c.validate();
    DecodeSweep sw = default_decode_sweep(c, name, dev);
    if (a.has("contexts") && !a.get("contexts").empty()) sw.contexts = int_list("contexts");
    if (a.has("batches") && !a.get("batches").empty()) sw.batches = int_list("batches");
    if (steps > 0) sw.steps = steps;
    if (layers > 0) {
      sw.layers = std::min(layers, c.n_layers);
      sw.note = fmt::format("timed with {} of {} layers (--layers)", sw.layers, c.n_layers);
    }
    for (int L : sw.contexts)
      if (L < 2 || L > c.context_length)
        throw cli::UsageError(fmt::format("--contexts: {} is outside 2..{} for {}", L, c.context_length, name));
    decode.push_back(bench_decode(c, name, dev, sw));
  }
  nlohmann::json r = {{"decode", decode}};
  if (a.has("no-kernels")) r["kernels"] = "skipped (--no-kernels)";
  else if (dev == Backend::CPU) r["kernels"] = bench_attention_kernels_cpu();
  else {
#ifdef DSK_HAVE_CUDA
    r["kernels"] = bench_attention_kernels_cuda();
#endif
  }
  return emit(a, r);
}

int run_bench(const std::vector<std::string>& argv) {
  if (argv.empty()) {  // a command-line mistake: the usage goes with the errors, to stderr
    std::fputs(kUsage, stderr);
    std::fputs("\n", stderr);
    return 2;
  }
  if (argv[0] == "--help" || argv[0] == "-h") {
    std::puts(kUsage);
    return 0;
  }
  const std::string what = argv[0];
  std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (what == "train") return bench_train_cmd(rest);
  if (what == "kernels") return bench_kernels_cmd(rest);
  if (what == "attention") return bench_attention_cmd(rest);
  if (what == "moe") return bench_moe_cmd(rest);
  if (what == "tokenizer")
    return bench_simple(what, rest, [](const cli::Args& a) {
      std::string corpus = a.has("corpus") ? a.get("corpus") : data_dir() + "/tinyshakespeare.txt";
      return bench_tokenizer(corpus, a.get_int32("threads", 0, 1024));
    });
  throw cli::UsageError(fmt::format("dsk bench: unknown benchmark '{}' (train, kernels, attention, moe, tokenizer)", what));
}

}  // namespace
}  // namespace dsk

DSK_COMMAND("bench", "benchmarks: train, kernels, attention, moe, tokenizer (JSON)", dsk::run_bench);
