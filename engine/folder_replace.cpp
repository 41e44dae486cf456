#include "engine/folder_replace.h"

#include "engine/paths.h"
#include "kernels/common.h"  // Error

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace fs = std::filesystem;

namespace dsk {
namespace {

fs::path sibling(const fs::path& final_dir, const char* kind) {
  return final_dir.parent_path() / fmt::format("{}.{}-{}", final_dir.filename().string(), kind, getpid());
}

}  // namespace

// (absolute_path: "data/" is the folder data, whose siblings are data.tmp-<pid>, not entries inside it.)
FolderReplace::FolderReplace(const fs::path& final_dir)
    : final_(absolute_path(final_dir.string())), tmp_(sibling(final_, "tmp")) {
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  fs::create_directories(tmp_, ec);
  if (ec) throw Error(fmt::format("cannot create {}: {}", tmp_.string(), ec.message()));
}

FolderReplace::~FolderReplace() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void FolderReplace::commit() {
  const fs::path old = sibling(final_, "old");
  std::error_code ec;
  const bool had_old = fs::exists(fs::symlink_status(final_));
  if (had_old) {
    fs::rename(final_, old, ec);
    if (ec) throw Error(fmt::format("cannot replace {}: {}", final_.string(), ec.message()));
  }
  fs::rename(tmp_, final_, ec);
  if (ec) {
    std::error_code ignored;
    if (had_old) fs::rename(old, final_, ignored);
    throw Error(fmt::format("cannot replace {}: {}", final_.string(), ec.message()));
  }
  committed_ = true;
  if (had_old) fs::remove_all(old, ec);  // the new folder is in place; a failure here leaves only a leftover
}

ReplaceLeftover parse_replace_leftover(const std::string& name) {
  for (const char* kind : {".tmp-", ".old-"}) {
    const size_t at = name.rfind(kind);
    if (at == std::string::npos || at == 0) continue;
    const std::string pid = name.substr(at + 5);
    if (pid.empty() || !std::all_of(pid.begin(), pid.end(), [](unsigned char c) { return std::isdigit(c); })) continue;
    ReplaceLeftover r;
    r.stem = name.substr(0, at);
    r.old_copy = std::string(kind) == ".old-";
    // (more than 10 digits cannot be a pid; strtoll would saturate)
    if (pid.size() <= 10) r.pid = std::strtoll(pid.c_str(), nullptr, 10);
    return r;
  }
  return {};
}

std::string replace_leftover_stem(const std::string& name) { return parse_replace_leftover(name).stem; }

}  // namespace dsk
