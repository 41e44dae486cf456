#pragma once
// A training run's folder (config.json, metrics.jsonl, checkpoints/, best/), and how `dsk train` decides what it
// may write there: it never overwrites or deletes a file that an earlier dsk run did not write.
#include <string>

namespace dsk {

enum class RunFolderKind {
  kFresh,    // missing, or holds none of the names a run writes (other files beside them are left alone)
  kRun,      // holds a dsk run (its config.json says so) and nothing else under a run's names
  kForeign,  // holds something under a run's names that dsk did not write, or sits inside a run
  kRunWithoutConfig,  // only dsk's files, but no config.json: a run whose config.json is gone (resumable in
                      // place with --resume and --data; never replaced)
};

struct RunFolder {
  RunFolderKind kind = RunFolderKind::kFresh;
  std::string problem;  // kForeign, kRunWithoutConfig: what is in the way, as a sentence for the user
};

// Throws when `dir` exists but is not a folder.
RunFolder inspect_run_folder(const std::string& dir);

// Replaces nothing yet: moves an earlier run's own files out of `dir` (a kRun folder) into a hidden folder and
// deletes that. config.json, metrics.jsonl, the dsk checkpoints in checkpoints/, best/ and leftovers of
// interrupted saves go; anything else stays. If any of them cannot be moved, the ones already moved are put back
// and it throws: the old run is then as it was.
void clear_run_folder(const std::string& dir);

// Deletes what interrupted checkpoint saves left in `dir` and its checkpoints/ (best.tmp-PID, step_N.old-PID, ...)
// when the process PID is gone: a killed run's half-written copies, which nothing else would ever remove. A save
// killed mid-swap left only <stem>.old-PID (the complete previous checkpoint): that one is put back as <stem>.
void remove_interrupted_saves(const std::string& dir);

// True when the file is the config.json that run_training writes into a run folder.
bool is_run_config(const std::string& config_json_path);

// True when `dir` is a checkpoint written by save_checkpoint (its config.json says "dsk-checkpoint").
bool is_dsk_checkpoint(const std::string& dir);

}  // namespace dsk
