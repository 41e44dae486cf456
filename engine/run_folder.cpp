#include "engine/run_folder.h"

#include "engine/folder_replace.h"
#include "engine/paths.h"
#include "engine/read_file.h"
#include "kernels/common.h"  // Error

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <vector>

namespace fs = std::filesystem;

namespace dsk {
namespace {

// What save_checkpoint leaves behind when it is interrupted (engine/folder_replace.h): a leftover of best or
// step_<8 digits>.
bool is_interrupted_save(const fs::path& p) {
  const std::string stem = replace_leftover_stem(p.filename().string());
  const bool step = stem.size() == 13 && stem.rfind("step_", 0) == 0 &&
                    std::all_of(stem.begin() + 5, stem.end(), [](unsigned char c) { return std::isdigit(c); });
  return stem == "best" || step;
}

// The first thing under a run's names in `d` that a dsk run did not write ("" when there is none): metrics.jsonl
// a file, best/ a dsk checkpoint, checkpoints/ a folder whose step_* entries are dsk checkpoints (entries under
// other names are the user's and are left alone).
std::string first_foreign_entry(const fs::path& d) {
  if (fs::exists(d / "metrics.jsonl") && !fs::is_regular_file(d / "metrics.jsonl")) return (d / "metrics.jsonl").string();
  if (fs::exists(fs::symlink_status(d / "best")) && !is_dsk_checkpoint((d / "best").string())) return (d / "best").string();
  const fs::path checkpoints = d / "checkpoints";
  if (!fs::exists(fs::symlink_status(checkpoints))) return "";
  if (!fs::is_directory(fs::symlink_status(checkpoints))) return checkpoints.string();
  for (const auto& e : fs::directory_iterator(checkpoints)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) == 0 && !is_interrupted_save(e.path()) && !is_dsk_checkpoint(e.path().string()))
      return e.path().string();
  }
  return "";
}

// The run folder that `d` lies inside, if any ("" when none): dsk never writes a run into another run.
std::string enclosing_run(const fs::path& d) {
  for (fs::path p = absolute_path(d.string()).parent_path(); !p.empty(); p = p.parent_path()) {
    if (is_run_config((p / "config.json").string())) return p.string();
    if (p == p.root_path()) break;
  }
  return "";
}

}  // namespace

bool is_run_config(const std::string& config_json_path) {
  const nlohmann::json j = probe_json(config_json_path);
  if (!j.is_object()) return false;
  if (j.value("format", "") == "dsk-run") return true;
  // Runs written before the "format" key carry exactly these.
  return j.contains("model") && j.contains("train") && j.contains("data") && j.contains("dsk_version");
}

bool is_dsk_checkpoint(const std::string& dir) {
  if (!fs::is_directory(fs::symlink_status(dir))) return false;
  const nlohmann::json j = probe_json((fs::path(dir) / "config.json").string());
  return j.is_object() && j.value("format", "") == "dsk-checkpoint";
}

RunFolder inspect_run_folder(const std::string& dir) {
  const fs::path d(dir);
  const std::string outer = enclosing_run(d);
  if (!outer.empty()) return {RunFolderKind::kForeign, fmt::format("{} lies inside the run {}", dir, outer)};
  if (!fs::exists(d)) return {};
  if (!fs::is_directory(d)) throw Error(fmt::format("{} exists and is not a folder", dir));
  const bool has_config = fs::exists(fs::symlink_status(d / "config.json"));
  if (has_config && !is_run_config((d / "config.json").string()))
    return {RunFolderKind::kForeign, fmt::format("{} was not written by dsk train", (d / "config.json").string())};
  const std::string foreign = first_foreign_entry(d);
  if (!foreign.empty()) return {RunFolderKind::kForeign, fmt::format("{} was not written by dsk train", foreign)};
  if (has_config) return {RunFolderKind::kRun, ""};
  // dsk's own files (checked above) without the run's config.json: a run whose config.json is gone.
  bool dsk_files = fs::exists(d / "metrics.jsonl") || fs::exists(d / "best");
  if (fs::is_directory(d / "checkpoints"))
    for (const auto& e : fs::directory_iterator(d / "checkpoints"))
      dsk_files = dsk_files || e.path().filename().string().rfind("step_", 0) == 0;
  if (dsk_files)
    return {RunFolderKind::kRunWithoutConfig,
            fmt::format("{} holds a run's files but no config.json (continue it with --resume {} --data DIR)", dir, dir)};
  return {};
}

void remove_interrupted_saves(const std::string& dir) {
  std::vector<std::pair<fs::path, ReplaceLeftover>> stale;
  for (const fs::path& folder : {fs::path(dir), fs::path(dir) / "checkpoints"}) {
    if (!fs::is_directory(folder)) continue;
    for (const auto& e : fs::directory_iterator(folder)) {
      if (!is_interrupted_save(e.path())) continue;
      const ReplaceLeftover leftover = parse_replace_leftover(e.path().filename().string());
      const long long pid = leftover.pid;
      const bool gone = pid > 0 && pid <= INT32_MAX && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
      if (gone) stale.emplace_back(e.path(), leftover);  // (a live process may be saving it now)
    }
  }
  std::error_code ec;
  for (const auto& [p, leftover] : stale) {
    // Killed between FolderReplace::commit's two renames, the save left no <stem> at all: its complete previous
    // version is <stem>.old-PID, and goes back into place rather than away.
    const fs::path stem = p.parent_path() / leftover.stem;
    if (leftover.old_copy && !fs::exists(fs::symlink_status(stem)) && is_dsk_checkpoint(p.string())) {
      fs::rename(p, stem, ec);
      if (!ec) continue;
    }
    fs::remove_all(p, ec);
  }
}

void clear_run_folder(const std::string& dir) {
  const fs::path d(dir), checkpoints = d / "checkpoints";
  // Listed first, moved after: a directory_iterator need not survive changes under it.
  std::vector<fs::path> doomed;
  for (const char* name : {"config.json", "metrics.jsonl", "best"})
    if (fs::exists(fs::symlink_status(d / name))) doomed.push_back(d / name);
  for (const auto& e : fs::directory_iterator(d))
    if (is_interrupted_save(e.path())) doomed.push_back(e.path());
  if (fs::is_directory(checkpoints))
    for (const auto& e : fs::directory_iterator(checkpoints))
      if (is_dsk_checkpoint(e.path().string()) || is_interrupted_save(e.path())) doomed.push_back(e.path());

  // Everything moves into one hidden folder first (renames: all or nothing), and only then is deleted, so a
  // file that cannot go (permissions, an immutable file) leaves the old run whole instead of half-deleted.
  const fs::path trash = d / fmt::format(".dsk-replaced-{}", getpid());
  fs::create_directory(trash);
  std::vector<std::pair<fs::path, fs::path>> moved;  // (from, to)
  for (size_t i = 0; i < doomed.size(); ++i) {
    const fs::path to = trash / fmt::format("{}-{}", i, doomed[i].filename().string());
    std::error_code ec;
    fs::rename(doomed[i], to, ec);
    if (ec) {
      const std::string why = ec.message();
      for (auto it = moved.rbegin(); it != moved.rend(); ++it) fs::rename(it->second, it->first, ec);
      fs::remove(trash, ec);
      throw Error(fmt::format("cannot replace the run in {}: {} cannot be moved ({}); the old run is unchanged", dir,
                              doomed[i].string(), why));
    }
    moved.emplace_back(doomed[i], to);
  }
  std::error_code ec;
  fs::remove_all(trash, ec);
  if (ec) std::fprintf(stderr, "note: could not delete the replaced run's files in %s (%s)\n", trash.c_str(), ec.message().c_str());
  if (fs::is_directory(checkpoints) && fs::is_empty(checkpoints)) fs::remove(checkpoints, ec);
}

}  // namespace dsk
