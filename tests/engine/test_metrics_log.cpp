// metrics.jsonl on resume (engine/metrics_log.h): what a killed run logged after its last checkpoint is dropped.
#include "engine/metrics_log.h"
#include "tests/test_env.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <vector>

using dsk::testing::TempDir;

namespace {

std::vector<int64_t> steps_in(const std::string& path) {
  std::vector<int64_t> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  return out;
}

// Train records for steps 1..n, an eval record every 4th step; `padding` bytes of text in each.
std::string log_of(int n, size_t padding) {
  std::string text;
  for (int s = 1; s <= n; ++s) {
    text += nlohmann::json({{"type", "train"}, {"step", s}, {"note", std::string(padding, 'x')}}).dump() + "\n";
    if (s % 4 == 0) text += nlohmann::json({{"type", "eval"}, {"step", s}}).dump() + "\n";
  }
  return text;
}

}  // namespace

TEST_CASE("metrics log: records after the resumed step and a cut last line are dropped", "[trainer]") {
  TempDir d("metrics");
  const std::string path = d.file("m.jsonl", log_of(10, 10) + R"({"type": "train", "st)");
  dsk::truncate_metrics_after(path, 8);
  CHECK(steps_in(path) == std::vector<int64_t>{1, 2, 3, 4, 4, 5, 6, 7, 8, 8});
  // Nothing to drop: the file stays as it is.
  const auto size = std::filesystem::file_size(path);
  dsk::truncate_metrics_after(path, 8);
  CHECK(std::filesystem::file_size(path) == size);
  // Appending after the cut starts a fresh line.
  { dsk::MetricsLog log(path, 8); log.write({{"type", "train"}, {"step", 9}}); }
  CHECK(steps_in(path).back() == 9);
}

TEST_CASE("metrics log: a long log is cut at the right record, past the first window it reads", "[trainer]") {
  TempDir d("metrics_long");
  const std::string path = d.file("m.jsonl", log_of(3000, 200));  // ~700 KB: several windows from the end
  dsk::truncate_metrics_after(path, 100);
  const auto steps = steps_in(path);
  REQUIRE(!steps.empty());
  CHECK(steps.back() == 100);
  CHECK(steps.size() == 125);  // 100 train + 25 eval records
  dsk::truncate_metrics_after(path, 0);  // nothing at or before step 0
  CHECK(std::filesystem::file_size(path) == 0);
}
