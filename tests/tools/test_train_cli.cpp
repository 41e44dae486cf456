// `dsk train` and `dsk eval` through the binary: exit codes, messages, SIGINT checkpointing, eval consistency.
#include "engine/checkpoint.h"
#include "engine/data.h"
#include "engine/trainer.h"
#include "tests/train_testing.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

using namespace dsk;
using dsk::testing::run_dsk;
using dsk::testing::TempDir;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  TempDir d{"train_cli"};
  std::string config, data;
  Fixture() {
    config = dsk::testing::tiny_config_file(d, 0.0f);
    data = dsk::testing::prepare_repeated_line(
        d, "Now is the winter of our discontent made glorious summer by this sun of York.", 50);
  }
  std::string train_args(const std::string& out, int steps) const {
    return fmt::format("train --config {} --data {} --out {} --device cpu --sample-tokens 0 --set max_steps={} "
                       "--set batch_size=2 --set eval_batches=0 --set eval_every=0",
                       config, data, out, steps);
  }
};

}  // namespace

TEST_CASE("dsk train/eval: a run, then eval of its best checkpoint over the whole val split", "[train_cli]") {
  Fixture f;
  auto r = run_dsk(f.train_args(f.d / "run", 3));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("done: 3 steps"));
  CHECK(fs::exists(f.d / "run/best/model.safetensors"));
  // The trainer's final evaluation covered the whole split (eval_batches=0); `dsk eval` must agree.
  double trainer_val = -1;
  std::ifstream in(f.d / "run/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == "eval") trainer_val = j["val_loss"];
  }
  auto e = run_dsk(fmt::format("eval --model {} --data {} --json --device cpu", f.d / "run", f.data));
  INFO(e.output);
  REQUIRE(e.exit_code == 0);
  auto j = nlohmann::json::parse(e.output);
  CHECK(j["loss"].get<double>() == Approx(trainer_val).epsilon(1e-6));
  CHECK(j["perplexity"].get<double>() == Approx(std::exp(trainer_val)).epsilon(1e-5));
  CHECK(j["expert_load"].size() == 2);

  SECTION("an output folder that holds a run is refused without --force or --resume") {
    auto again = run_dsk(f.train_args(f.d / "run", 3));
    CHECK(again.exit_code == 1);
    CHECK_THAT(again.output, Catch::Contains("already holds a run") && Catch::Contains("--resume"));
    CHECK(fs::exists(f.d / "run/best/model.safetensors"));  // untouched
  }
  SECTION("resume with a different model config is refused") {
    auto bad = run_dsk(fmt::format("train --resume {} --set emb_dim=64 --set max_steps=5 --device cpu", f.d / "run"));
    CHECK(bad.exit_code == 1);
    CHECK_THAT(bad.output, Catch::Contains("model key 'emb_dim' is 32 in the checkpoint but 64 here"));
  }
  SECTION("resume continues to a new max_steps") {
    auto more = run_dsk(fmt::format("train --resume {} --set max_steps=5 --device cpu --sample-tokens 0", f.d / "run"));
    INFO(more.output);
    CHECK(more.exit_code == 0);
    CHECK_THAT(more.output, Catch::Contains("resuming from") && Catch::Contains("done: 5 steps"));
  }
  SECTION("a full disk while saving is a one-line error and the previous checkpoints stay intact") {
    // RLIMIT_FSIZE stands in for a full disk: writes past 3 MB fail (SIGXFSZ ignored, so they return EFBIG).
    const std::string best = f.d / "run/best/model.safetensors";
    const auto size = fs::file_size(best);
    const std::string cmd = fmt::format(
        "sh -c \"trap '' XFSZ; ulimit -f 3000; exec {} train --resume {} --set max_steps=5 --device cpu "
        "--sample-tokens 0\" > {} 2>&1", DSK_BINARY, f.d / "run", f.d / "full.log");
    const int status = std::system(cmd.c_str());
    std::ifstream log(f.d / "full.log");
    std::string text((std::istreambuf_iterator<char>(log)), {});
    INFO(text);
    CHECK(WEXITSTATUS(status) == 1);
    CHECK_THAT(text, Catch::Contains("cannot write") && Catch::Contains("disk full"));
    CHECK(fs::file_size(best) == size);
    CHECK_NOTHROW(load_model(f.d / "run", Backend::CPU));
    for (const auto& e : fs::directory_iterator(f.d / "run"))  // no half-written folder left behind
      CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
  }
  SECTION("a truncated checkpoint is a one-line error and stays as it was") {
    const std::string file = f.d / "run/best/model.safetensors";
    fs::resize_file(file, fs::file_size(file) / 2);
    const auto size = fs::file_size(file);
    auto bad = run_dsk(fmt::format("eval --model {} --data {} --device cpu", f.d / "run", f.data));
    CHECK(bad.exit_code == 1);
    CHECK_THAT(bad.output, Catch::Contains("model.safetensors"));
    CHECK(fs::file_size(file) == size);
  }
}

TEST_CASE("dsk train/eval: bad command lines and missing models", "[train_cli]") {
  Fixture f;
  CHECK(run_dsk("train --bogus").exit_code == 2);
  CHECK(run_dsk("train --set nope=1 --device cpu").exit_code == 2);
  auto missing = run_dsk(fmt::format("eval --model {} --data {}", f.d / "nothing", f.data));
  CHECK(missing.exit_code == 1);
  CHECK_THAT(missing.output, Catch::Contains("no such model"));
  CHECK(run_dsk("eval --data x").exit_code == 2);  // --model missing
  auto ctx = run_dsk(f.train_args(f.d / "r", 2) + " --set seq_len=64");
  CHECK(ctx.exit_code == 1);
  CHECK_THAT(ctx.output, Catch::Contains("exceeds the model's context_length 16"));
}

TEST_CASE("dsk train: SIGINT finishes the step, writes a checkpoint and exits 0", "[train_cli]") {
  Fixture f;
  const std::string out = f.d / "run";
  const std::string cmd = std::string(DSK_BINARY) + " " + f.train_args(out, 100000) + " > " + (f.d / "log.txt") + " 2>&1";
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until a few steps are logged, then interrupt.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool started = false;
  while (!started && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ifstream m(fs::path(out) / "metrics.jsonl");
    std::string s((std::istreambuf_iterator<char>(m)), {});
    started = std::count(s.begin(), s.end(), '\n') >= 3;
  }
  REQUIRE(started);
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  std::ifstream log(f.d / "log.txt");
  std::string text((std::istreambuf_iterator<char>(log)), {});
  INFO(text);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(text, Catch::Contains("stopped at step") && Catch::Contains("resume with: dsk train --resume"));
  CHECK_NOTHROW(load_model(latest_checkpoint(out), Backend::CPU));
}
