#include "engine/run_folder.h"

#include "kernels/common.h"  // Error

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <vector>

namespace fs = std::filesystem;

namespace dsk {
namespace {

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

bool is_checkpoint(const fs::path& dir) {
  const nlohmann::json j = read_json(dir / "config.json");
  return j.is_object() && j.value("format", "") == "dsk-checkpoint";
}

// What save_checkpoint leaves behind when it is interrupted: step_N.tmp-PID, best.old-PID, ...
bool is_interrupted_save(const fs::path& p, const std::string& stem) {
  const std::string name = p.filename().string();
  return name.rfind(stem, 0) == 0 &&
         (name.find(".tmp-") != std::string::npos || name.find(".old-") != std::string::npos);
}

}  // namespace

bool is_run_config(const std::string& config_json_path) {
  const nlohmann::json j = read_json(config_json_path);
  if (!j.is_object()) return false;
  if (j.value("format", "") == "dsk-run") return true;
  // Runs written before the "format" key carry exactly these.
  return j.contains("model") && j.contains("train") && j.contains("data") && j.contains("dsk_version");
}

RunFolder inspect_run_folder(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::exists(d)) return {};
  if (!fs::is_directory(d)) throw Error(fmt::format("{} exists and is not a folder", dir));
  if (fs::exists(d / "config.json"))
    return is_run_config((d / "config.json").string()) ? RunFolder{RunFolderKind::kRun, ""}
                                                       : RunFolder{RunFolderKind::kForeign, (d / "config.json").string()};
  // No run config: any of the other names a run writes belongs to someone else (or to a run whose config.json
  // is gone, which dsk cannot tell apart).
  for (const char* name : {"metrics.jsonl", "checkpoints", "best"})
    if (fs::exists(d / name)) return {RunFolderKind::kForeign, (d / name).string()};
  return {};
}

void clear_run_folder(const std::string& dir) {
  const fs::path d(dir), checkpoints = d / "checkpoints";
  // Listed first, removed after: a directory_iterator need not survive removals under it.
  std::vector<fs::path> doomed = {d / "config.json", d / "metrics.jsonl"};
  for (const auto& e : fs::directory_iterator(d))
    if (e.is_directory() && (e.path().filename() == "best" ? is_checkpoint(e.path()) : is_interrupted_save(e.path(), "best")))
      doomed.push_back(e.path());
  if (fs::is_directory(checkpoints))
    for (const auto& e : fs::directory_iterator(checkpoints))
      if (e.is_directory() && (is_checkpoint(e.path()) || is_interrupted_save(e.path(), "step_")))
        doomed.push_back(e.path());
  for (const fs::path& p : doomed) fs::remove_all(p);
  if (fs::is_directory(checkpoints) && fs::is_empty(checkpoints)) fs::remove(checkpoints);
}

}  // namespace dsk
