// `dsk train` and `dsk eval` through the binary: exit codes, messages, SIGINT checkpointing, eval consistency.
#include "engine/checkpoint.h"
#include "engine/run_lock.h"
#include "engine/data.h"
#include "engine/trainer.h"
#include "tests/train_testing.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
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
  SECTION("--force with inputs that cannot start a run fails before the old run is touched") {
    auto bad = run_dsk(fmt::format("train --config {} --data {} --out {} --device cpu --force", f.config,
                                   f.d / "no_such_data", f.d / "run"));
    CHECK(bad.exit_code == 1);
    CHECK_THAT(bad.output, Catch::Contains("no_such_data"));
    CHECK(fs::exists(f.d / "run/best/model.safetensors"));
    CHECK(fs::exists(f.d / "run/config.json"));
    CHECK(fs::exists(f.d / "run/metrics.jsonl"));
  }
  SECTION("--force replaces the run's own files and keeps the user's") {
    std::ofstream(f.d / "run/notes.txt") << "mine";
    std::ofstream(f.d / "run/checkpoints/README") << "mine too";
    auto again = run_dsk(f.train_args(f.d / "run", 2) + " --force");
    INFO(again.output);
    CHECK(again.exit_code == 0);
    CHECK(fs::exists(f.d / "run/notes.txt"));
    CHECK(fs::exists(f.d / "run/checkpoints/README"));
    CHECK_FALSE(fs::exists(f.d / "run/checkpoints/step_00000003"));  // the old run's checkpoint
    CHECK(fs::exists(f.d / "run/checkpoints/step_00000002"));
    std::ifstream in(f.d / "run/metrics.jsonl");
    int train_lines = 0;
    for (std::string line; std::getline(in, line);) train_lines += nlohmann::json::parse(line)["type"] == "train";
    CHECK(train_lines == 2);  // a new log, not the old one appended to
  }
  SECTION("resume into another folder trains on the run's data, recorded as an absolute path") {
    const auto cfg = nlohmann::json::parse(std::ifstream(f.d / "run/config.json"));
    CHECK(cfg["format"] == "dsk-run");
    CHECK(fs::path(cfg["data"].get<std::string>()).is_absolute());
    CHECK(fs::equivalent(cfg["data"].get<std::string>(), f.data));
    auto more = run_dsk(fmt::format("train --resume {} --out {} --set max_steps=5 --device cpu --sample-tokens 0",
                                    f.d / "run", f.d / "other"));
    INFO(more.output);
    CHECK(more.exit_code == 0);
    const auto other = nlohmann::json::parse(std::ifstream(f.d / "other/config.json"));
    CHECK(other["data"] == cfg["data"]);
    // Into a folder that holds another run: refused without --force, as for a fresh run.
    auto onto = run_dsk(fmt::format("train --resume {} --out {} --set max_steps=6 --device cpu", f.d / "run",
                                    f.d / "other"));
    CHECK(onto.exit_code == 1);
    CHECK_THAT(onto.output, Catch::Contains("already holds a run"));
  }
  SECTION("a run's config.json given as --config says what it is") {
    auto bad = run_dsk(fmt::format("train --config {} --device cpu --out {}", f.d / "run/config.json", f.d / "r2"));
    CHECK(bad.exit_code == 1);
    CHECK_THAT(bad.output, Catch::Contains("is a run's or checkpoint's config.json") && Catch::Contains("--resume"));
  }
  SECTION("sample --stop with an empty text is a usage error") {
    auto bad = run_dsk(fmt::format("sample --model {} --prompt hi --stop \"\" --device cpu", f.d / "run"));
    CHECK(bad.exit_code == 2);
    CHECK_THAT(bad.output, Catch::Contains("--stop needs a non-empty text"));
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
  SECTION("a checkpoint holding a NaN is refused as damaged, not sampled from") {
    const std::string file = f.d / "run/best/model.safetensors";
    {
      std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
      io.seekp(-4, std::ios::end);  // the last element of the last tensor
      const float nan = std::nanf("");
      io.write(reinterpret_cast<const char*>(&nan), 4);
    }
    auto e = run_dsk(fmt::format("eval --model {} --data {} --device cpu", f.d / "run", f.data));
    CHECK(e.exit_code == 1);
    CHECK_THAT(e.output, Catch::Contains("model.safetensors") && Catch::Contains("holds nan") &&
                             Catch::Contains("damaged"));
    auto smp = run_dsk(fmt::format("sample --model {} --prompt hi --max-new-tokens 3 --device cpu", f.d / "run"));
    CHECK(smp.exit_code == 1);
    CHECK_THAT(smp.output, Catch::Contains("damaged"));
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
  // A --set value of the wrong type or out of range is a command-line mistake (2), reported before the run starts.
  for (const char* set : {"seq_len=64", "lr=abc", "max_steps=-1", "max_steps=1.5", "tf32=yes", "n_layers=0"}) {
    auto r = run_dsk(f.train_args(f.d / "r", 2) + " --set " + set);
    INFO(set << "\n" << r.output);
    CHECK(r.exit_code == 2);
    CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
    CHECK(!fs::exists(f.d / "r"));
  }
  CHECK_THAT(run_dsk(f.train_args(f.d / "r", 2) + " --set seq_len=64").output,
             Catch::Contains("exceeds the model's context_length 16"));
  CHECK(run_dsk("info --set n_layers=abc").exit_code == 2);
  CHECK(run_dsk("info --set n_layers=0").exit_code == 2);
  // The same value in a config file is not a command-line mistake.
  CHECK(run_dsk("info --config " + f.d.file("zero.json", R"({"n_layers": 0})")).exit_code == 1);
}

TEST_CASE("dsk train: folders holding files dsk did not write are refused, even with --force", "[train_cli]") {
  Fixture f;
  fs::create_directories(f.d / "p");
  std::ofstream(f.d / "p/config.json") << "{\"my\": 1}\n";
  fs::create_directories(f.d / "q/best");
  std::ofstream(f.d / "q/best/notes.txt") << "mine";
  for (const char* flags : {"", " --force"}) {
    auto p = run_dsk(f.train_args(f.d / "p", 1) + flags);
    CHECK(p.exit_code == 1);
    CHECK_THAT(p.output, Catch::Contains("config.json was not written by dsk train"));
    auto q = run_dsk(f.train_args(f.d / "q", 1) + flags);
    CHECK(q.exit_code == 1);
    CHECK_THAT(q.output, Catch::Contains("best was not written by dsk train"));
  }
  CHECK(nlohmann::json::parse(std::ifstream(f.d / "p/config.json"))["my"] == 1);
  CHECK(fs::exists(f.d / "q/best/notes.txt"));
  // Other files beside a run's names are fine: the run is written next to them.
  fs::create_directories(f.d / "r");
  std::ofstream(f.d / "r/notes.txt") << "mine";
  auto r = run_dsk(f.train_args(f.d / "r", 1));
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(fs::exists(f.d / "r/notes.txt"));
}

TEST_CASE("dsk: a folder where a file is expected is a one-line error naming it", "[train_cli]") {
  Fixture f;
  const std::string dir = f.d / "folder";
  fs::create_directories(dir);
  for (const std::string& cmd : {"train --device cpu --config " + dir, "tokenize encode " + dir,
                                 "bench tokenizer --corpus " + dir}) {
    auto r = run_dsk(cmd);
    INFO(cmd << "\n" << r.output);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains(dir + " is a folder"));
  }
  auto text = run_dsk(fmt::format("train --device cpu --text {} --out {}", dir, f.d / "run"));
  CHECK(text.exit_code == 1);
  CHECK_THAT(text.output, Catch::Contains("is a folder") && Catch::Contains("dsk prepare"));
  // A checkpoint's files replaced by folders: named, not "basic_filebuf::underflow" or a 2^63-byte length.
  REQUIRE(run_dsk(f.train_args(f.d / "run", 1)).exit_code == 0);
  // And the other way round: a text file where a prepared folder is expected.
  auto file_as_data = run_dsk("eval --device cpu --model " + (f.d / "run") + " --data " + (f.d / "corpus.txt"));
  CHECK(file_as_data.exit_code == 1);
  CHECK_THAT(file_as_data.output, Catch::Contains("corpus.txt is a file, not a folder made by dsk prepare"));
  for (const char* file : {"config.json", "model.safetensors"}) {
    const fs::path bad = f.d / (std::string("bad-") + file);
    fs::copy(f.d / "run/best", bad, fs::copy_options::recursive);
    fs::remove(bad / file);
    fs::create_directories(bad / file);
    for (const std::string& cmd : {"sample --device cpu --max-new-tokens 1 --model " + bad.string(),
                                   "eval --device cpu --data " + f.data + " --model " + bad.string()}) {
      auto r = run_dsk(cmd);
      INFO(cmd << "\n" << r.output);
      CHECK(r.exit_code == 1);
      CHECK_THAT(r.output, Catch::Contains((bad / file).string() + "' is a folder") ||
                               Catch::Contains((bad / file).string() + " is a folder"));
      CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
    }
  }
}

TEST_CASE("dsk bench --json: checked before the benchmark; replaces only an earlier result", "[train_cli]") {
  Fixture f;
  const std::string corpus = f.d / "corpus.txt", mine = f.d / "mine.json", result = f.d / "result.json";
  std::ofstream(corpus) << "To be, or not to be, that is the question.\n";
  std::ofstream(mine) << "my notes\n";
  const std::string bench = "bench tokenizer --threads 1 --corpus " + corpus + " --json ";
  auto refused = run_dsk(bench + mine);
  CHECK(refused.exit_code == 1);
  CHECK_THAT(refused.output, Catch::Contains("not a dsk benchmark result; not overwriting"));
  std::ifstream in(mine);
  CHECK(std::string((std::istreambuf_iterator<char>(in)), {}) == "my notes\n");
  auto invalid = run_dsk("bench tokenizer --threads 1 --corpus " + f.d.file("bad.txt", "caf\xe9\n"));
  CHECK(invalid.exit_code == 1);
  CHECK_THAT(invalid.output, Catch::Contains("bad.txt: invalid UTF-8"));
  auto nowhere = run_dsk(bench + (f.d / "no/such/folder.json"));
  CHECK(nowhere.exit_code == 1);
  CHECK_THAT(nowhere.output, Catch::Contains("does not exist"));
  CHECK(run_dsk(bench + result).exit_code == 0);
  auto again = run_dsk(bench + result);  // a re-run replaces its own earlier result
  INFO(again.output);
  CHECK(again.exit_code == 0);
  CHECK(nlohmann::json::parse(std::ifstream(result)).contains("result"));
  // A link to a file not written yet: the result goes to the link's target, and the link stays a link.
  fs::create_symlink("target.json", f.d / "link.json");
  CHECK(run_dsk(bench + (f.d / "link.json")).exit_code == 0);
  CHECK(fs::is_symlink(f.d / "link.json"));
  CHECK(nlohmann::json::parse(std::ifstream(f.d / "target.json")).contains("result"));
  // A FIFO would block the check (and take the result in place of a file): refused at once.
  fs::create_symlink("loop-b.json", f.d / "loop-a.json");
  fs::create_symlink("loop-a.json", f.d / "loop-b.json");
  auto loop = run_dsk(bench + (f.d / "loop-a.json"));
  CHECK(loop.exit_code == 1);
  CHECK_THAT(loop.output, Catch::Contains("its symbolic links cannot be followed"));
  REQUIRE(mkfifo((f.d / "fifo.json").c_str(), 0600) == 0);
  auto fifo = run_dsk(bench + (f.d / "fifo.json"));
  CHECK(fifo.exit_code == 1);
  CHECK_THAT(fifo.output, Catch::Contains("is not a regular file"));
}

TEST_CASE("dsk train: option errors come before the training, a NaN stop names no checkpoint that is not there",
          "[train_cli]") {
  Fixture f;
  auto bad = run_dsk(f.train_args(f.d / "run", 2) + " --sample-tokens abc");
  CHECK(bad.exit_code == 2);
  CHECK_FALSE(fs::exists(f.d / "run"));  // nothing trained or written
  CHECK(run_dsk(f.train_args(f.d / "run", 2) + " --sample-tokens -1").exit_code == 2);
  auto nan = run_dsk(f.train_args(f.d / "nan", 5) + " --set lr=1e30 --set grad_clip=0 --set warmup_steps=0");
  INFO(nan.output);
  CHECK(nan.exit_code == 1);
  CHECK_THAT(nan.output, Catch::Contains("the loss became") && Catch::Contains("no checkpoint was written yet"));
  CHECK_THAT(nan.output, Catch::Contains("became NaN") || Catch::Contains("became inf"));  // not "-nan"
  // An error found in setup (here: a batch far beyond memory) is the only line: the config comes after setup.
  auto huge = run_dsk(f.train_args(f.d / "huge", 2) + " --set batch_size=100000000");
  INFO(huge.output);
  CHECK(huge.exit_code == 1);
  CHECK(std::count(huge.output.begin(), huge.output.end(), '\n') == 1);
  CHECK_THAT(huge.output, !Catch::Contains("config:"));
  CHECK_FALSE(fs::exists(f.d / "huge"));  // the write check made it and took it away again
  // An --out that cannot be a folder is found before setup, in dsk's words (not a std::filesystem exception).
  auto blocked = run_dsk(f.train_args(f.d / "corpus.txt/run", 2));
  CHECK(blocked.exit_code == 1);
  CHECK_THAT(blocked.output, Catch::Contains("corpus.txt/run: cannot create the folder: Not a directory"));
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

TEST_CASE("dsk train --resume: a checkpoint outside a run needs --out; a link to one continues its own run",
          "[train_cli]") {
  Fixture f;
  const std::string run = f.d / "run";
  REQUIRE(run_dsk(f.train_args(run, 2)).exit_code == 0);
  // Copied out beside the user's own config.json: resuming must not make the user's folder a run.
  fs::create_directories(f.d / "models");
  fs::copy(run + "/checkpoints/step_00000002", f.d / "models/v1", fs::copy_options::recursive);
  std::ofstream(f.d / "models/config.json") << "{\"my\": 1}\n";
  const std::string resume = " --device cpu --sample-tokens 0 --set max_steps=3 --data " + f.data;
  auto copied = run_dsk("train --resume " + (f.d / "models/v1") + resume);
  CHECK(copied.exit_code == 1);
  CHECK_THAT(copied.output, Catch::Contains("not inside a run folder; give --out"));
  CHECK(nlohmann::json::parse(std::ifstream(f.d / "models/config.json"))["my"] == 1);
  CHECK(!fs::exists(f.d / "models/metrics.jsonl"));
  // The same for a copy of best/: a folder holding a best/ is not a run either.
  fs::copy(run + "/best", f.d / "models/best", fs::copy_options::recursive);
  auto copied_best = run_dsk("train --resume " + (f.d / "models/best") + resume);
  CHECK(copied_best.exit_code == 1);
  CHECK_THAT(copied_best.output, Catch::Contains("not inside a run folder; give --out"));
  CHECK(!fs::exists(f.d / "models/checkpoints"));
  auto elsewhere = run_dsk("train --resume " + (f.d / "models/v1") + resume + " --out " + (f.d / "continued"));
  INFO(elsewhere.output);
  CHECK(elsewhere.exit_code == 0);
  CHECK(fs::exists(f.d / "continued/checkpoints/step_00000003"));
  // A symbolic link to a run's checkpoint belongs to that run, not to the folder holding the link.
  fs::create_symlink(run + "/checkpoints/step_00000002", f.d / "link");
  auto linked = run_dsk("train --resume " + (f.d / "link") + " --device cpu --sample-tokens 0 --set max_steps=3");
  INFO(linked.output);
  CHECK(linked.exit_code == 0);
  CHECK(fs::exists(run + "/checkpoints/step_00000003"));
  CHECK(!fs::exists(f.d / "metrics.jsonl"));
  // A run with a folder of the user's in it is still a run to continue (the run never touches that folder).
  fs::create_directories(run + "/checkpoints/step_notes");
  auto with_notes = run_dsk("train --resume " + run + " --device cpu --sample-tokens 0 --set max_steps=4");
  INFO(with_notes.output);
  CHECK(with_notes.exit_code == 0);
  CHECK(fs::exists(run + "/checkpoints/step_notes"));
}

TEST_CASE("dsk train --text: a cache folder left without its manifest is prepared again", "[train_cli]") {
  Fixture f;
  const std::string cache = f.d / "cache";
  dsk::testing::ScopedEnv cache_dir("DSK_CACHE_DIR", cache);  // (run_dsk's processes inherit it)
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Now is the winter of our discontent made glorious summer.\n";
  const std::string args = "train --device cpu --sample-tokens 0 --set max_steps=1 --set batch_size=2 --config " +
                           f.config + " --text " + f.d.file("small.txt", text) + " --out ";
  REQUIRE(run_dsk(args + (f.d / "a")).exit_code == 0);
  const fs::path prepared = fs::directory_iterator(fs::path(cache) / "prepared")->path();
  fs::remove(prepared / "manifest.json");
  auto again = run_dsk(args + (f.d / "b"));
  INFO(again.output);
  CHECK(again.exit_code == 0);
  CHECK(fs::exists(prepared / "manifest.json"));
}

TEST_CASE("dsk train --resume: a run whose validation loss does not improve still names its best checkpoint",
          "[train_cli]") {
  Fixture f;
  const std::string run = f.d / "run";
  REQUIRE(run_dsk(f.train_args(run, 2)).exit_code == 0);
  // Continued on other text, the validation loss is far above the best so far: nothing saves best/ again.
  std::string other;
  for (int i = 0; i < 60; ++i) other += "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n";
  REQUIRE(run_dsk("prepare --input " + f.d.file("other.txt", other) + " --out " + (f.d / "other")).exit_code == 0);
  auto worse = run_dsk("train --resume " + run + " --data " + (f.d / "other") +
                       " --device cpu --sample-tokens 2 --set max_steps=3");
  INFO(worse.output);
  CHECK(worse.exit_code == 0);
  double val = 0, best = 0;
  const auto at = worse.output.find("val loss ");
  REQUIRE(at != std::string::npos);
  REQUIRE(std::sscanf(worse.output.c_str() + at, "val loss %lf (best %lf)", &val, &best) == 2);
  REQUIRE(val > best);  // (else this run tests nothing)
  CHECK_THAT(worse.output, Catch::Contains("best checkpoint: " + run + "/best\n"));
  CHECK_THAT(worse.output, Catch::Contains("--- sample"));
}

namespace {

// A checkpoint of tiny_model_config() with fresh weights, written without training (eval needs only weights).
std::string untrained_checkpoint(const TempDir& d) {
  Model m(dsk::testing::tiny_model_config(), Backend::CPU);
  m.init_weights(7);
  save_checkpoint(d / "ckpt", m, nlohmann::json::object(), nullptr);
  return d / "ckpt";
}

}  // namespace

TEST_CASE("dsk eval: the batch is capped at the windows; a BOM is not text; misplaced options are refused",
          "[train_cli]") {
  Fixture f;
  const std::string ckpt = untrained_checkpoint(f.d);
  const std::string eval = "eval --device cpu --json --model " + ckpt;
  auto one = run_dsk(eval + " --data " + f.data + " --batch-size 1");
  REQUIRE(one.exit_code == 0);
  const nlohmann::json j1 = nlohmann::json::parse(one.output);
  REQUIRE(j1["windows"].get<int>() < 100);
  // 10^8 rows of 16 tokens would need an arena of hundreds of GB; the split has a few windows, so that is the batch.
  auto huge = run_dsk(eval + " --data " + f.data + " --batch-size 100000000");
  INFO(huge.output);
  REQUIRE(huge.exit_code == 0);
  const nlohmann::json jh = nlohmann::json::parse(huge.output);
  CHECK(jh["windows"] == j1["windows"]);
  CHECK(jh["tokens"] == j1["tokens"]);
  CHECK(std::abs(jh["loss"].get<double>() - j1["loss"].get<double>()) < 1e-5);
  CHECK(run_dsk(eval + " --data " + f.data + " --batch-size 100000000 --max-windows 1").exit_code == 0);

  // A UTF-8 byte order mark is dropped, as `dsk prepare` does: the same tokens and loss as without it.
  const std::string text = "Now is the winter of our discontent made glorious summer by this sun of York.\n";
  auto plain = run_dsk(eval + " --text " + f.d.file("plain.txt", text));
  auto bom = run_dsk(eval + " --text " + f.d.file("bom.txt", "\xEF\xBB\xBF" + text));
  REQUIRE(plain.exit_code == 0);
  REQUIRE(bom.exit_code == 0);
  CHECK(nlohmann::json::parse(bom.output)["tokens"] == nlohmann::json::parse(plain.output)["tokens"]);
  CHECK(nlohmann::json::parse(bom.output)["loss"] == nlohmann::json::parse(plain.output)["loss"]);

  // The weights file named instead of its folder: said so, with what --model takes.
  auto file = run_dsk(eval + "/model.safetensors --data " + f.data);
  CHECK(file.exit_code == 1);
  CHECK_THAT(file.output, Catch::Contains("model.safetensors is a file; --model takes a run folder or a checkpoint "
                                          "folder (the one holding model.safetensors)"));
  CHECK(std::count(file.output.begin(), file.output.end(), '\n') == 1);

  // Options that apply only to the other source are refused rather than ignored, even at their default value.
  for (const std::string& bad : {" --text " + (f.d / "plain.txt") + " --split train",
                                 " --text " + (f.d / "plain.txt") + " --split val",
                                 " --data " + f.data + " --no-special"}) {
    auto r = run_dsk(eval + bad);
    INFO(bad << "\n" << r.output);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains("applies to --"));
    CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
  }
}

TEST_CASE("dsk bench tokenizer: an empty corpus is refused", "[train_cli]") {
  TempDir d("bench_empty");
  auto r = run_dsk("bench tokenizer --threads 1 --corpus " + d.file("empty.txt", ""));
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("empty.txt is empty"));
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}

TEST_CASE("dsk bench moe --shape runs only the named shapes; an unknown one is a usage error naming the choices",
          "[train_cli]") {
  TempDir d("bench_moe_shape");
  const std::string out = d / "moe.json";
  auto r = run_dsk("bench moe --shape small --json " + out);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(std::ifstream(out));
  REQUIRE(j.at("result").at("results").size() == 1);
  CHECK(j.at("result").at("results")[0].at("shape") == "small");
  r = run_dsk("bench moe --shape large");  // a CUDA shape, not a CPU one
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("unknown --shape 'large'") && Catch::Contains("small, default"));
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}

TEST_CASE("dsk train: the closing sample is what the dsk sample command in its header prints", "[train_cli]") {
  Fixture f;
  const std::string run = f.d / "run";
  auto slurp = [](const std::string& path) {
    std::stringstream text;
    text << std::ifstream(path).rdbuf();
    return text.str();
  };
  // stdout (the sample) and stderr (the log, the header) apart.
  const int trained = std::system(fmt::format("{} train --config {} --data {} --out {} --device cpu --sample-tokens 12 "
                                              "--set max_steps=2 --set batch_size=2 --set eval_batches=1 > {} 2> {}",
                                              DSK_BINARY, f.config, f.data, run, f.d / "train.out", f.d / "train.err")
                                      .c_str());
  const std::string log = slurp(f.d / "train.err"), train_text = slurp(f.d / "train.out");
  INFO(log);
  REQUIRE(trained == 0);
  const size_t at = log.find("--- sample (dsk ");
  REQUIRE(at != std::string::npos);
  const size_t args_begin = at + std::string("--- sample (dsk ").size();
  const std::string command = log.substr(args_begin, log.find(") ---", args_begin) - args_begin);
  CHECK_THAT(command, Catch::Contains("--max-new-tokens 12") && Catch::Contains("--device cpu"));
  // The command as printed gives the same text.
  REQUIRE(std::system(fmt::format("{} {} > {} 2> /dev/null", DSK_BINARY, command, f.d / "sample.out").c_str()) == 0);
  const std::string sample_text = slurp(f.d / "sample.out");
  CHECK(sample_text.size() > 1);
  CHECK(train_text == sample_text);
}

TEST_CASE("dsk train: a log line shows an earlier validation loss with the step it is from", "[train_cli]") {
  Fixture f;
  auto r = run_dsk(fmt::format("train --config {} --data {} --out {} --device cpu --sample-tokens 0 --set max_steps=5 "
                               "--set batch_size=2 --set eval_batches=1 --set eval_every=3 --set log_every=1",
                               f.config, f.data, f.d / "run"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto line_of = [&](const std::string& start) {
    const size_t at = r.output.find(start);
    REQUIRE(at != std::string::npos);
    return r.output.substr(at, r.output.find('\n', at) - at);
  };
  CHECK_THAT(line_of("step 2/5"), !Catch::Contains("val"));  // none yet
  CHECK_THAT(line_of("step 3/5"), Catch::Contains("| val ") && !Catch::Contains("(step"));
  CHECK_THAT(line_of("step 4/5"), Catch::Contains("| val ") && Catch::Contains("(step 3)"));
  CHECK_THAT(line_of("step 5/5"), Catch::Contains("| val ") && !Catch::Contains("(step"));  // the final evaluation
}

TEST_CASE("dsk train --resume of a run another process is writing, before its first checkpoint, names that process",
          "[train_cli]") {
  TempDir d("resume_busy");
  const std::string run = d / "run";
  fs::create_directories(run);
  RunLock writer;  // this test process plays the dsk train that is writing the run
  REQUIRE(writer.try_acquire(run));
  auto r = run_dsk("train --resume " + run + " --device cpu --sample-tokens 0");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains(fmt::format("another dsk train (process {}) is writing into", getpid())));
  writer.release();
  r = run_dsk("train --resume " + run + " --device cpu --sample-tokens 0");  // nobody writing: the plain reason
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("holds no resumable checkpoint"));
}
