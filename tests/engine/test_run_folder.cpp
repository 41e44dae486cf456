// What `dsk train` may write into and remove from an --out folder (engine/run_folder.h).
#include "engine/run_folder.h"
#include "engine/run_lock.h"
#include "tests/test_env.h"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

using namespace dsk;
using dsk::testing::TempDir;
namespace fs = std::filesystem;

namespace {

void checkpoint_at(const fs::path& dir) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"format": "dsk-checkpoint", "version": 1})";
  std::ofstream(dir / "model.safetensors") << "weights";
}

// A run as run_training leaves it: config.json, metrics.jsonl, best/, checkpoints/step_*.
fs::path make_run(const TempDir& d) {
  const fs::path run = d.path / "run";
  fs::create_directories(run);
  std::ofstream(run / "config.json") << R"({"format": "dsk-run", "model": {}, "train": {}})";
  std::ofstream(run / "metrics.jsonl") << "{}\n";
  checkpoint_at(run / "best");
  checkpoint_at(run / "checkpoints/step_00000002");
  return run;
}

}  // namespace

TEST_CASE("run folder: a run, a fresh folder, and what dsk did not write", "[run_folder]") {
  TempDir d("run_folder");
  const fs::path run = make_run(d);
  CHECK(inspect_run_folder(run.string()).kind == RunFolderKind::kRun);
  // "run/" (a shell's completion) is the run itself, not a folder inside it.
  CHECK(inspect_run_folder(run.string() + "/").kind == RunFolderKind::kRun);
  CHECK(inspect_run_folder((d.path / "nothing").string()).kind == RunFolderKind::kFresh);
  std::ofstream(run / "notes.txt") << "mine";  // other names beside a run are the user's business
  fs::create_directories(run / "checkpoints/mine");
  CHECK(inspect_run_folder(run.string()).kind == RunFolderKind::kRun);

  auto foreign = [](const fs::path& dir, const std::string& needle) {
    const RunFolder f = inspect_run_folder(dir.string());
    CHECK(f.kind == RunFolderKind::kForeign);
    CHECK_THAT(f.problem, Catch::Contains(needle));
  };
  SECTION("a best/ that is not a dsk checkpoint") {
    fs::remove_all(run / "best");
    fs::create_directories(run / "best");
    std::ofstream(run / "best/photo.jpg") << "mine";
    foreign(run, "best was not written by dsk train");
  }
  SECTION("a checkpoints/step_* folder that is not a dsk checkpoint") {
    fs::create_directories(run / "checkpoints/step_00000001_mine");
    foreign(run, "step_00000001_mine was not written by dsk train");
  }
  SECTION("checkpoints as a plain file") {
    fs::remove_all(run / "checkpoints");
    std::ofstream(run / "checkpoints") << "x";
    foreign(run, "checkpoints was not written by dsk train");
  }
  SECTION("metrics.jsonl as a folder") {
    fs::remove(run / "metrics.jsonl");
    fs::create_directories(run / "metrics.jsonl");
    foreign(run, "metrics.jsonl was not written by dsk train");
  }
  SECTION("a config.json that is not a run's") {
    std::ofstream(run / "config.json") << R"({"my": 1})";
    foreign(run, "config.json was not written by dsk train");
  }
  SECTION("a run that lost its config.json") {
    fs::remove(run / "config.json");
    const RunFolder f = inspect_run_folder(run.string());
    CHECK(f.kind == RunFolderKind::kRunWithoutConfig);
    CHECK_THAT(f.problem, Catch::Contains("holds a run's files but no config.json"));
  }
  SECTION("a folder inside a run") {
    foreign(run / "checkpoints", "lies inside the run");
    foreign(run / "best", "lies inside the run");
    foreign(run / "new/deeper", "lies inside the run");
  }
}

TEST_CASE("run folder: clearing removes only dsk's files, and all or nothing", "[run_folder]") {
  TempDir d("run_folder_clear");
  const fs::path run = make_run(d);
  std::ofstream(run / "notes.txt") << "mine";
  fs::create_directories(run / "checkpoints/mine");
  fs::create_directories(run / "step_00000003.tmp-12");  // an interrupted save
  SECTION("everything of dsk's goes, the user's stays") {
    clear_run_folder(run.string());
    CHECK(inspect_run_folder(run.string()).kind == RunFolderKind::kFresh);
    for (const char* gone : {"config.json", "metrics.jsonl", "best", "checkpoints/step_00000002"})
      CHECK_FALSE(fs::exists(run / gone));
    CHECK(fs::exists(run / "notes.txt"));
    CHECK(fs::exists(run / "checkpoints/mine"));
    for (const auto& e : fs::directory_iterator(run))  // no hidden leftovers
      CHECK(e.path().filename().string().rfind(".dsk-replaced", 0) != 0);
  }
  SECTION("a file that cannot be moved puts back what was moved and leaves the run whole") {
    // The second move (metrics.jsonl) finds a non-empty folder at its destination and fails, whoever runs this.
    fs::create_directories(run / fmt::format(".dsk-replaced-{}/1-metrics.jsonl/blocker", getpid()));
    CHECK_THROWS_WITH(clear_run_folder(run.string()), Catch::Contains("the old run is unchanged"));
    for (const char* kept : {"config.json", "metrics.jsonl", "best/model.safetensors",
                             "checkpoints/step_00000002/model.safetensors"})
      CHECK(fs::exists(run / kept));
    CHECK(inspect_run_folder(run.string()).kind == RunFolderKind::kRun);
  }
}

TEST_CASE("run lock: one holder per run folder, whatever path names it", "[run_folder]") {
  TempDir d("run_lock");
  const std::string run = (d.path / "run").string();
  RunLock first;
  REQUIRE(first.try_acquire(run));
  RunLock second;
  CHECK_FALSE(second.try_acquire(run + "/"));
  CHECK_FALSE(second.try_acquire((d.path / "." / "run").string()));
  CHECK_THROWS_WITH(second.acquire(run),
                    Catch::Contains(fmt::format("another dsk train (process {}) is writing into", getpid())));
  CHECK(second.try_acquire((d.path / "other").string()));  // another folder is free
  first.release();
  CHECK(second.try_acquire(run));
  // The holder deletes its lock file when it lets go: a temporary folder does not collect one per run.
  CHECK(fs::exists(RunLock::lock_file(run)));
  second.release();
  CHECK_FALSE(fs::exists(RunLock::lock_file(run)));
  CHECK(second.try_acquire(run));  // and the lock is taken again from scratch
  // A TMPDIR that names nothing falls back to /tmp rather than failing the run.
  dsk::testing::ScopedEnv tmpdir("TMPDIR", "/nonexistent/dsk");
  RunLock third;
  CHECK(third.try_acquire((d.path / "third").string()));
}

TEST_CASE("run lock: holder() names the holding process without taking, creating or deleting anything",
          "[run_folder]") {
  TempDir d("lock_holder");
  const std::string run = d / "run";
  CHECK(RunLock::holder(run).empty());
  CHECK_FALSE(fs::exists(RunLock::lock_file(run)));  // asking created nothing
  RunLock held;
  REQUIRE(held.try_acquire(run));
  CHECK(RunLock::holder(run) == std::to_string(getpid()));
  RunLock other;
  CHECK_FALSE(other.try_acquire(run));  // still held after the question
  held.release();
  CHECK(RunLock::holder(run).empty());
}

TEST_CASE("run lock: a holder whose file was removed by someone else leaves the new holder's file alone",
          "[run_folder]") {
  TempDir d("lock_cleaner");
  const std::string run = d / "run";
  RunLock first;
  REQUIRE(first.try_acquire(run));
  fs::remove(RunLock::lock_file(run));  // a /tmp cleaner
  RunLock second;
  REQUIRE(second.try_acquire(run));  // a new file at the path
  first.release();
  CHECK(fs::exists(RunLock::lock_file(run)));  // second's file: not first's to delete
  RunLock third;
  CHECK_FALSE(third.try_acquire(run));  // second still holds the run
}

TEST_CASE("run lock: processes racing for one run never hold it at the same time", "[run_folder]") {
  // Each child takes the lock, proves it is alone by creating a marker with O_EXCL, then lets go (deleting the
  // lock file); a locker that got a file its holder deleted must notice and start again, or two hold at once.
  TempDir d("lock_race");
  const std::string run = d / "run", marker = d / "held";
  constexpr int kChildren = 4, kRounds = 2000;
  std::vector<pid_t> children;
  for (int c = 0; c < kChildren; ++c) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int overlaps = 0;
      for (int i = 0; i < kRounds; ++i) {
        RunLock lock;
        if (!lock.try_acquire(run)) continue;
        const int fd = open(marker.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd < 0) {
          ++overlaps;  // someone else holds the run too
          continue;
        }
        close(fd);
        unlink(marker.c_str());
      }
      _exit(overlaps == 0 ? 0 : 1);
    }
    children.push_back(pid);
  }
  int failed = 0;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  CHECK(failed == 0);
}

TEST_CASE("run folder: leftovers of a killed save are removed, those of a live process kept", "[run_folder]") {
  TempDir d("leftovers");
  const fs::path run = make_run(d);
  // A pid that cannot be running: the largest pid_max Linux allows is 2^22.
  const std::string dead = "99999999", live = std::to_string(getpid());
  checkpoint_at(run / ("best.tmp-" + dead));
  checkpoint_at(run / ("checkpoints/step_00000003.old-" + dead));
  checkpoint_at(run / ("best.tmp-" + live));
  fs::create_directories(run / ("notes.tmp-" + dead));  // not a checkpoint's name: the user's
  remove_interrupted_saves(run.string());
  CHECK_FALSE(fs::exists(run / ("best.tmp-" + dead)));
  CHECK_FALSE(fs::exists(run / ("checkpoints/step_00000003.old-" + dead)));
  CHECK(fs::exists(run / ("best.tmp-" + live)));
  CHECK(fs::exists(run / ("notes.tmp-" + dead)));
  CHECK(fs::exists(run / "best/model.safetensors"));
  CHECK(fs::exists(run / "checkpoints/step_00000002/model.safetensors"));
  // Killed between the swap's renames: best/ is gone, its previous version is best.old-PID and comes back.
  fs::rename(run / "best", run / ("best.old-" + dead));
  checkpoint_at(run / ("best.tmp-" + dead));
  remove_interrupted_saves(run.string());
  CHECK(fs::exists(run / "best/model.safetensors"));
  CHECK_FALSE(fs::exists(run / ("best.old-" + dead)));
  CHECK_FALSE(fs::exists(run / ("best.tmp-" + dead)));
}
