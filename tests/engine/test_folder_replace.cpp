// Replacing a folder all at once (engine/folder_replace.h): checkpoints and prepared data are written this way.
#include "engine/folder_replace.h"
#include "tests/test_env.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

using dsk::FolderReplace;
using dsk::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The names in `dir`, sorted.
std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A folder `name` in `parent` holding one file; returns the folder.
fs::path folder_with_file(const fs::path& parent, const std::string& name, const std::string& file,
                          const std::string& text) {
  const fs::path dir = parent / name;
  fs::create_directories(dir);
  std::ofstream(dir / file) << text;
  return dir;
}

}  // namespace

TEST_CASE("folder replace: the old folder stays until commit, then the new one is there and nothing else", "[folder]") {
  TempDir d("replace");
  const fs::path target = folder_with_file(d.path, "data", "old.txt", "old");
  {
    FolderReplace r(target);
    CHECK(r.dir().parent_path() == d.path);
    CHECK(r.dir().filename() == "data.tmp-" + std::to_string(getpid()));
    std::ofstream(r.dir() / "new.txt") << "new";
    CHECK(read(target / "old.txt") == "old");  // readers still see the old folder
    r.commit();
  }
  CHECK(entries(d.path) == std::vector<std::string>{"data"});
  CHECK(entries(target) == std::vector<std::string>{"new.txt"});
  CHECK(read(target / "new.txt") == "new");
}

TEST_CASE("folder replace: abandoned before commit, the old folder is untouched and the temporary one gone", "[folder]") {
  TempDir d("abandon");
  const fs::path target = folder_with_file(d.path, "ckpt", "model.safetensors", "weights");
  try {
    FolderReplace r(target);
    std::ofstream(r.dir() / "model.safetensors") << "half";
    throw std::runtime_error("disk full");
  } catch (const std::runtime_error&) {
  }
  CHECK(entries(d.path) == std::vector<std::string>{"ckpt"});
  CHECK(read(target / "model.safetensors") == "weights");
}

TEST_CASE("folder replace: a path ending in a separator names the folder, not an entry inside it", "[folder]") {
  TempDir d("slash");
  const fs::path target = folder_with_file(d.path, "out", "a", "1");
  FolderReplace r(target.string() + "/");
  CHECK(r.dir().parent_path() == d.path);
  std::ofstream(r.dir() / "b") << "2";
  r.commit();
  CHECK(entries(d.path) == std::vector<std::string>{"out"});
  CHECK(entries(target) == std::vector<std::string>{"b"});
}

TEST_CASE("folder replace: a commit that cannot happen says so and keeps the old folder", "[folder]") {
  TempDir d("fail");
  const fs::path target = folder_with_file(d.path, "data", "keep", "k");
  FolderReplace r(target);
  fs::remove_all(r.dir());  // the written folder vanished: the swap must fail and put the old one back
  CHECK_THROWS_WITH(r.commit(), Catch::Contains("cannot replace") && Catch::Contains("data"));
  CHECK(entries(d.path) == std::vector<std::string>{"data"});
  CHECK(read(target / "keep") == "k");
}

TEST_CASE("folder replace: leftovers of an interrupted replace are recognised by name", "[folder]") {
  CHECK(dsk::replace_leftover_stem("best.tmp-123") == "best");
  CHECK(dsk::replace_leftover_stem("step_00000004.old-9") == "step_00000004");
  CHECK(dsk::replace_leftover_stem("my.data.tmp-77") == "my.data");
  CHECK(dsk::replace_leftover_stem("best") == "");
  CHECK(dsk::replace_leftover_stem("best.tmp-") == "");
  CHECK(dsk::replace_leftover_stem("best.tmp-12x") == "");
  CHECK(dsk::replace_leftover_stem(".tmp-12") == "");
  CHECK(dsk::replace_leftover_stem("notes.txt") == "");
}

TEST_CASE("folder replace: a leftover's name tells its writer's pid and whether it is the old copy", "[folder]") {
  const auto tmp = dsk::parse_replace_leftover("best.tmp-123");
  CHECK(tmp.stem == "best");
  CHECK(tmp.pid == 123);
  CHECK_FALSE(tmp.old_copy);
  const auto old = dsk::parse_replace_leftover("step_00000004.old-98765");
  CHECK(old.stem == "step_00000004");
  CHECK(old.pid == 98765);
  CHECK(old.old_copy);
  // Too many digits for a pid: still a leftover by name, but no process to ask about.
  const auto huge = dsk::parse_replace_leftover("best.old-123456789012345678901234");
  CHECK(huge.stem == "best");
  CHECK(huge.pid == 0);
  CHECK(dsk::parse_replace_leftover("best.old-").stem.empty());
}
