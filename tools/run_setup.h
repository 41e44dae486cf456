#pragma once
// Helpers shared by `dsk train` and `dsk eval`: applying --set overrides, and turning --text FILE (or the
// embedded corpus) into a prepared data folder cached under cache_dir().
#include "engine/config.h"
#include "engine/train_config.h"

#include <string>
#include <vector>

namespace dsk::cli {

// Applies KEY=VALUE overrides to whichever config owns the key; unknown keys are errors naming the key.
// Returns the keys that were model keys.
std::vector<std::string> apply_overrides(const std::vector<std::string>& sets, ModelConfig& model, TrainConfig* train);

// Validates the configs once the --set overrides are in. What they were applied to was valid (a built-in config,
// a checked file, a checkpoint), so a value now out of range came from the command line: a usage error (exit 2),
// as a flag's would be. Without overrides an error stays an Error (exit 1).
void validate_after_overrides(const ModelConfig& model, const TrainConfig* train, const std::vector<std::string>& sets);

// A prepared folder for a plain text file, made on first use under cache_dir()/prepared/<name>-<sha256 prefix>.
std::string prepared_text(const std::string& text_file, bool verbose);

// The embedded default corpus (Tiny Shakespeare from data_dir()).
std::string default_corpus();

}  // namespace dsk::cli
