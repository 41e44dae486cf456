// dsk train: train a model (embedded Tiny Shakespeare by default), with resume, checkpoints and metrics.
#include "engine/checkpoint.h"
#include "engine/paths.h"
#include "engine/read_file.h"
#include "engine/run_folder.h"
#include "engine/run_lock.h"
#include "engine/trainer.h"
#include "tools/cli.h"
#include "tools/device_option.h"
#include "tools/run_setup.h"
#include "tools/sample_after_train.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <vector>
#include <unistd.h>

namespace fs = std::filesystem;

namespace dsk {
namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

constexpr int kDefaultSteps = 200;  // a few minutes of the small config on a 2-core CPU

// runs/<date-time>, or runs/<date-time>-2, -3, ... when a run started in the same second; locked for this process
// (two starts in one second must not share a folder).
std::string fresh_run_dir(RunLock& lock) {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&now));
  const std::string base = (fs::path("runs") / buf).string();
  for (int i = 1;; ++i) {
    const std::string dir = i == 1 ? base : fmt::format("{}-{}", base, i);
    if (fs::exists(fs::symlink_status(dir))) continue;
    if (lock.try_acquire(dir) && !fs::exists(fs::symlink_status(dir))) return dir;
  }
}

// The run folder a resumed checkpoint belongs to: run/checkpoints/step_N → run (through symbolic links: a link
// to a checkpoint belongs to the run the checkpoint is in, not to the folder holding the link).
std::string run_folder_of(const std::string& checkpoint) {
  const fs::path p = fs::weakly_canonical(absolute_path(checkpoint));  // ("." or "best" have a parent)
  if (p.parent_path().filename() == "checkpoints") return p.parent_path().parent_path().string();
  return p.parent_path().string();
}

bool same_folder(const std::string& a, const std::string& b) {
  return fs::weakly_canonical(a) == fs::weakly_canonical(b);
}

// Whether --out may be written, decided before anything is trained: a folder with files dsk did not write under
// the names a run uses is refused, even with --force; an earlier run is replaced only with --force (and then
// only once the new run has started: TrainRun::replace_run). Returns whether the old run is to be replaced.
bool check_out_folder(const std::string& out_dir, bool force) {
  const RunFolder folder = inspect_run_folder(out_dir);
  if (folder.kind == RunFolderKind::kForeign || folder.kind == RunFolderKind::kRunWithoutConfig)
    throw Error(fmt::format("{}; dsk train writes config.json, metrics.jsonl, checkpoints/ and best/ into its --out "
                            "folder and replaces only its own: choose another --out", folder.problem));
  if (folder.kind == RunFolderKind::kRun && !force)
    throw Error(fmt::format("{} already holds a run; use --resume {} to continue it, --force to replace it, or "
                            "another --out", out_dir, cli::shell_quote(out_dir)));
  return folder.kind == RunFolderKind::kRun;
}

// Finds an --out that cannot be written (a file in the way, a read-only mount, /proc) now, before the data and
// model are set up, by creating it and a file in it; what this made is removed again (the run makes it later).
void check_writable(const std::string& out_dir) {
  const fs::path out = absolute_path(out_dir);
  std::vector<fs::path> missing;  // the folders of `out` that do not exist yet, deepest first
  for (fs::path p = out; !fs::exists(fs::symlink_status(p)) && p != p.parent_path(); p = p.parent_path())
    missing.push_back(p);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw Error(fmt::format("--out {}: cannot create the folder: {}", out_dir, ec.message()));
  const fs::path probe = out / fmt::format(".dsk-write-test-{}", getpid());
  const bool writable = std::ofstream(probe).good();
  fs::remove(probe, ec);
  // One by one and only while empty: another process (a run started in the same second) may be filling runs/.
  for (const fs::path& p : missing)
    if (!fs::remove(p, ec)) break;
  if (!writable) throw Error(fmt::format("--out {}: cannot write into the folder", out_dir));
}

int run_train(const std::vector<std::string>& argv) {
  cli::Args a("train", "train a model",
              "dsk train [--config small|default|large|FILE] [--data DIR | --text FILE] [--out DIR] [--device auto]\n"
              "                 [--resume RUN] [--set KEY=VALUE ...]");
  a.option("config", "NAME|FILE", "model configuration", "small")
      .option("data", "DIR", "a folder made by `dsk prepare`")
      .option("text", "FILE", "a plain text file (prepared on first use into the cache)")
      .option("out", "DIR", "run folder (default runs/<timestamp>)")
      .option("device", "DEV", "cpu, cuda or auto", "auto")
      .option("resume", "RUN", "continue a run folder (or checkpoint) from its latest checkpoint")
      .repeated("set", "KEY=VALUE", "override a model or training key (e.g. max_steps=500, lr=1e-3)")
      .flag("force", "replace the run an output folder holds (its files go once the new run has started)")
      .option("sample-tokens", "N", "tokens of sample text printed at the end (0 = none)", "100");
  if (!a.parse(argv)) return 0;
  if (a.has("data") && a.has("text")) throw cli::UsageError("dsk train: give --data or --text, not both");
  // Read now: a typo here must not surface only after the training it follows.
  const int sample_tokens = a.get_int32("sample-tokens", 0);

  ModelConfig model = load_model_config(a.get("config"));
  TrainConfig train;
  // --set KEY=VALUE goes to whichever config owns the key.
  std::vector<std::string> model_sets, train_sets;
  for (const std::string& kv : a.all("set"))
    (model.has_key(kv.substr(0, kv.find('='))) ? model_sets : train_sets).push_back(kv);
  std::string resume_ckpt, resumed_run, out_dir = a.get("out"), data_dir;
  if (a.has("resume")) {
    try {
      resume_ckpt = latest_checkpoint(a.get("resume"));
    } catch (const Error&) {
      // A run another dsk train is still writing may have no checkpoint yet: say that, not just "none".
      const std::string pid = RunLock::holder(a.get("resume"));
      if (!pid.empty())
        throw Error(fmt::format("another dsk train (process {}) is writing into {} and has saved no checkpoint "
                                "yet; wait for it", pid, a.get("resume")));
      throw;
    }
    nlohmann::json saved = read_checkpoint_config(resume_ckpt);
    ModelConfig saved_model;
    saved_model.update_from_json(saved.at("model"));
    // The model must be the checkpoint's: --config or a model --set that disagrees is an error, not a silent change.
    ModelConfig requested = a.all("config").empty() ? saved_model : model;
    cli::apply_overrides(model_sets, requested, nullptr);
    const nlohmann::json saved_json = saved_model.to_json(), requested_json = requested.to_json();
    for (const auto& [key, value] : saved_json.items())
      if (requested_json.at(key) != value)
        throw Error(fmt::format("--resume: model key '{}' is {} in the checkpoint but {} here", key, value.dump(),
                                requested_json.at(key).dump()));
    model = saved_model;
    train.update_from_json(saved.at("train"));
    cli::apply_overrides(train_sets, model, &train);  // e.g. a larger max_steps to train on
    resumed_run = run_folder_of(resume_ckpt);
    // A checkpoint copied out of its run (models/v1, models/best) has no run around it to continue in: the folder
    // holding it is the user's, not dsk's to fill with a run. A run is a folder whose config.json is dsk's (other
    // entries in it stay the user's, untouched by the run), or one that lost its config.json and holds the
    // checkpoint in its checkpoints/.
    const bool in_checkpoints = fs::path(resume_ckpt).parent_path().filename() == "checkpoints";
    const bool is_run = is_run_config((fs::path(resumed_run) / "config.json").string()) ||
                        (in_checkpoints && inspect_run_folder(resumed_run).kind == RunFolderKind::kRunWithoutConfig);
    if (!is_run) {
      if (out_dir.empty())
        throw Error(fmt::format("--resume {}: the checkpoint is not inside a run folder; give --out DIR for the "
                                "continued run", a.get("resume")));
      resumed_run.clear();
    }
    if (out_dir.empty()) out_dir = resumed_run;
    // The resumed run's own data unless another is named (from its folder, whatever --out says).
    const nlohmann::json rc =
        resumed_run.empty() ? nlohmann::json() : probe_json((fs::path(resumed_run) / "config.json").string());
    if (!a.has("data") && !a.has("text")) {
      if (!rc.is_object() || !rc.contains("data") || !rc["data"].is_string())
        throw Error(fmt::format("--resume {}: no run config names the data; give --data or --text", a.get("resume")));
      data_dir = rc["data"];
      if (!fs::is_directory(data_dir))
        throw Error(fmt::format("--resume: the run's data folder {} (from {}/config.json) does not exist here; give "
                                "--data or --text", data_dir, resumed_run));
    }
  } else {
    cli::apply_overrides(a.all("set"), model, &train);
    if (train.max_steps == 0 && train.epochs == 0) train.max_steps = kDefaultSteps;
  }
  cli::validate_after_overrides(model, &train, a.all("set"));

  if (data_dir.empty()) {
    if (a.has("data"))
      data_dir = a.get("data");
    else
      data_dir = cli::prepared_text(a.has("text") ? a.get("text") : cli::default_corpus(), true);
  }
  RunLock lock;  // held until the process ends
  if (out_dir.empty())
    out_dir = fresh_run_dir(lock);
  else
    lock.acquire(out_dir);
  // Continuing a run in its own folder writes over nothing but its own files; any other --out is checked.
  const bool in_place = !resumed_run.empty() && same_folder(out_dir, resumed_run);
  const bool replace_run = !in_place && check_out_folder(out_dir, a.has("force"));
  check_writable(out_dir);

  TrainRun run;
  run.model = model;
  run.train = train;
  run.data_dir = data_dir;
  run.out_dir = out_dir;
  run.device = cli::resolve_device(a.get("device"));
  run.resume_from = resume_ckpt;
  run.replace_run = replace_run;
  run.progress_line = isatty(fileno(stderr));
  run.stop_requested = [] { return g_stop.load(); };
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  // The handlers stay until the process ends (a late Ctrl-C must not turn a saved run's exit 0 into 130), except
  // for the sample printed after training, which Ctrl-C interrupts as usual.
  TrainSummary s = run_training(run);

  if (s.stopped_early) {
    std::fprintf(stderr, "stopped at step %lld of %lld; checkpoint saved in %s\nresume with: dsk train --resume %s\n",
                 static_cast<long long>(s.steps_done), static_cast<long long>(s.total_steps), s.last_checkpoint.c_str(),
                 cli::shell_quote(out_dir).c_str());
    return 0;
  }
  // A resumed run that never beat its earlier validation loss saved no new best: the earlier one stands.
  std::string best = s.best_checkpoint;
  if (best.empty() && !resumed_run.empty() && is_dsk_checkpoint((fs::path(resumed_run) / "best").string()))
    best = (fs::path(resumed_run) / "best").string();
  if (best.empty()) best = s.last_checkpoint;
  std::fprintf(stderr, "done: %lld steps, final loss %.4f, val loss %.4f (best %.4f), %.0f tok/s\nbest checkpoint: %s\n",
               static_cast<long long>(s.steps_done), s.last_loss, s.last_val_loss, s.best_val_loss, s.tokens_per_s,
               best.c_str());
  if (sample_tokens > 0) {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    cli::print_sample_after_training(best, run.device, sample_tokens);
  }
  return 0;
}

}  // namespace
}  // namespace dsk

DSK_COMMAND("train", "train a model (default: small config on the embedded Tiny Shakespeare)", dsk::run_train);
