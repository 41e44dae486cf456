#pragma once
// A training run's folder (config.json, metrics.jsonl, checkpoints/, best/), and how `dsk train` decides what it
// may write there: it never overwrites or deletes a file that an earlier dsk run did not write.
#include <string>

namespace dsk {

enum class RunFolderKind {
  kFresh,    // missing, or holds none of the names a run writes (other files beside them are left alone)
  kRun,      // holds a dsk run (its config.json says so)
  kForeign,  // holds one of a run's names (config.json, metrics.jsonl, checkpoints, best) that dsk did not write
};

struct RunFolder {
  RunFolderKind kind = RunFolderKind::kFresh;
  std::string foreign;  // kForeign: the path that is not dsk's
};

// Throws when `dir` exists but is not a folder.
RunFolder inspect_run_folder(const std::string& dir);

// Removes an earlier run's own files from `dir` (a kRun folder): config.json, metrics.jsonl, the dsk checkpoints
// in checkpoints/ and best/ (and leftovers of interrupted saves). Anything else stays, and so does checkpoints/
// when something else is in it.
void clear_run_folder(const std::string& dir);

// True when `json` is the config.json that run_training writes into a run folder.
bool is_run_config(const std::string& config_json_path);

}  // namespace dsk
