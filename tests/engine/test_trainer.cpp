// The training loop on a tiny model: it learns, is deterministic, and resuming equals not stopping.
#include "engine/checkpoint.h"
#include "engine/data.h"
#include "engine/trainer.h"
#include "tests/train_testing.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

using namespace dsk;
using dsk::testing::prepare_repeated_line;
using dsk::testing::TempDir;
using dsk::testing::tiny_model_config;
using dsk::testing::train_losses;
namespace fs = std::filesystem;

namespace {

TrainConfig tiny_train(int steps) {
  TrainConfig t;
  t.batch_size = 4;
  t.max_steps = steps;
  t.lr = 3e-3f;
  t.min_lr = 3e-4f;
  t.eval_every = 0;
  t.eval_batches = 2;
  t.log_every = 1;
  t.warmup_steps = std::min(2, steps - 1);  // (a warmup must be shorter than the run)
  return t;
}

// A prepared corpus made once per test binary run.
std::string tiny_data(const TempDir& d) {
  return prepare_repeated_line(d, "To be, or not to be, that is the question. Whether 'tis nobler in the mind to suffer.",
                               60);
}

TrainSummary train(const std::string& data, const std::string& out, TrainConfig tc, const std::string& resume = "",
                   std::function<bool()> stop = {}) {
  TrainRun r;
  r.model = tiny_model_config();
  r.train = tc;
  r.data_dir = data;
  r.out_dir = out;
  r.resume_from = resume;
  r.stop_requested = std::move(stop);
  r.log = std::fopen("/dev/null", "w");
  TrainSummary s = run_training(r);
  std::fclose(r.log);
  return s;
}

}  // namespace

TEST_CASE("trainer: a few steps lower the loss and write metrics and checkpoints", "[trainer]") {
  TempDir d("trainer_learn");
  const std::string data = tiny_data(d);
  TrainConfig tc = tiny_train(12);
  tc.eval_every = 6;
  tc.save_every = 4;
  tc.keep_checkpoints = 2;
  TrainSummary s = train(data, d / "run", tc);
  std::vector<double> losses = train_losses(d / "run");
  REQUIRE(losses.size() == 12);
  CHECK(losses.front() > 10.0);  // ~ln(50257) at the start
  CHECK(losses.back() < losses.front() - 1.0);
  CHECK(s.best_val_loss < 10.5);
  // retention: steps 4, 8, 12 were saved, the newest 2 kept
  CHECK_FALSE(fs::exists(d / "run/checkpoints/step_00000004"));
  CHECK(fs::exists(d / "run/checkpoints/step_00000008/trainer_state.safetensors"));
  CHECK(fs::exists(d / "run/checkpoints/step_00000012/model.safetensors"));
  CHECK(resolve_checkpoint(d / "run") == d / "run/best");
  CHECK(latest_checkpoint(d / "run") == d / "run/checkpoints/step_00000012");
}

TEST_CASE("trainer: the same seed gives bit-identical losses", "[trainer]") {
  TempDir d("trainer_det");
  const std::string data = tiny_data(d);
  train(data, d / "a", tiny_train(4));
  train(data, d / "b", tiny_train(4));
  std::vector<double> a = train_losses(d / "a"), b = train_losses(d / "b");
  REQUIRE(a.size() == 4);
  CHECK(a == b);
  TrainConfig other = tiny_train(4);
  other.seed = 99;
  train(data, d / "c", other);
  CHECK(train_losses(d / "c") != a);  // the check can fail: a different seed differs
}

TEST_CASE("trainer: stop + resume gives the same losses as an uninterrupted run", "[trainer]") {
  TempDir d("trainer_resume");
  const std::string data = tiny_data(d);
  TrainConfig tc = tiny_train(6);
  tc.grad_accum_steps = 2;  // resume must also restore the micro-batch stream
  train(data, d / "full", tc);
  const std::vector<double> full = train_losses(d / "full");
  REQUIRE(full.size() == 6);

  int polls = 0;
  TrainSummary first = train(data, d / "split", tc, "", [&] { return ++polls == 3; });  // stop after step 3
  CHECK(first.stopped_early);
  CHECK(first.steps_done == 3);
  const std::string ckpt = latest_checkpoint(d / "split");
  CHECK(ckpt == d / "split/checkpoints/step_00000003");
  TrainSummary second = train(data, d / "split", tc, ckpt);
  CHECK(second.steps_done == 6);
  CHECK(train_losses(d / "split") == full);  // 3 before the stop + 3 after, bit for bit
}

TEST_CASE("trainer: a metrics.jsonl line cut by a crash is dropped on resume, not glued to the next", "[trainer]") {
  TempDir d("trainer_cut");
  const std::string data = tiny_data(d);
  TrainConfig tc = tiny_train(3);
  int polls = 0;
  train(data, d / "run", tc, "", [&] { return ++polls == 2; });
  const std::string metrics = d / "run/metrics.jsonl";
  std::filesystem::resize_file(metrics, std::filesystem::file_size(metrics) - 5);  // the last record cut short
  train(data, d / "run", tc, latest_checkpoint(d / "run"));
  std::ifstream in(metrics);
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    INFO(line);
    CHECK_NOTHROW(nlohmann::json::parse(line));
  }
  CHECK(lines > 3);
}

TEST_CASE("trainer: bad input is refused with a clear message", "[trainer]") {
  TempDir d("trainer_bad");
  const std::string data = tiny_data(d);
  TrainRun r;
  r.model = tiny_model_config();
  r.train = tiny_train(2);
  r.data_dir = data;
  r.out_dir = d / "run";
  r.log = stderr;
  SECTION("vocabulary mismatch") {
    r.model.vocab_size = 1000;
    CHECK_THROWS_WITH(run_training(r), Catch::Contains("vocab_size 50257") && Catch::Contains("1000"));
  }
  SECTION("window longer than the context") {
    r.train.seq_len = 32;
    CHECK_THROWS_WITH(run_training(r), Catch::Contains("exceeds the model's context_length 16"));
  }
  SECTION("missing data") {
    r.data_dir = d / "nowhere";
    CHECK_THROWS_WITH(run_training(r), Catch::Contains("nowhere"));
  }
  SECTION("a warmup longer than the run that epochs give") {
    r.train.max_steps = 0;
    r.train.epochs = 1;
    r.train.warmup_steps = 100000;
    CHECK_THROWS_WITH(run_training(r), Catch::Contains("warmup_steps 100000 must be less than the run's") &&
                                           Catch::Contains("epochs 1"));
    CHECK_FALSE(std::filesystem::exists(std::filesystem::path(r.out_dir) / "checkpoints"));
  }
  SECTION("more epochs than a 32-bit step counter holds") {
    r.train.max_steps = 0;
    r.train.epochs = 1e30f;
    CHECK_THROWS_WITH(run_training(r), Catch::Contains("epochs 1e+30 is") && Catch::Contains("lower epochs"));
  }
  SECTION("resume past the end") {
    train(data, d / "done", tiny_train(2));
    r.resume_from = latest_checkpoint(d / "done");
    CHECK_THROWS_WITH(run_training(r), Catch::Contains("nothing to do"));
  }
  SECTION("a NaN loss stops the run and leaves the last good checkpoint") {
    r.train = tiny_train(4);
    r.train.save_every = 1;
    r.train.lr = 1e30f;  // diverges
    r.train.min_lr = 1e30f;
    r.train.grad_clip = 0;
    CHECK_THROWS_WITH(run_training(r), Catch::Contains("the loss became") && Catch::Contains("last good checkpoint"));
    CHECK_NOTHROW(load_model(latest_checkpoint(d / "run"), Backend::CPU));
  }
}
