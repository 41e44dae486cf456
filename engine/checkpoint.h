#pragma once
// Checkpoints: a folder holding
//   model.safetensors          weights under the PyTorch reference's names (readable by any safetensors reader)
//   config.json                {"format": "dsk-checkpoint", "version": 1, "model": {...}, "train": {...}}
//   trainer_state.safetensors  AdamW m and v per parameter + metadata (step, data-loader position, RNG seed,
//                              best validation loss, tokens seen); only in checkpoints that can resume training
// A folder is written under a temporary name and renamed into place, so a crash never leaves half a checkpoint.
#include "engine/data.h"
#include "engine/model.h"

#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace dsk {

struct TrainerState {
  int64_t step = 0;  // optimizer steps completed
  LoaderState loader;
  uint64_t seed = 0;
  double best_val_loss = std::numeric_limits<double>::infinity();
  int64_t tokens_seen = 0;
  double elapsed_s = 0;
};

// Writes dir (replacing an older checkpoint of the same name only after the new one is complete).
// state == nullptr writes a weights-only checkpoint.
void save_checkpoint(const std::string& dir, const Model& m, const nlohmann::json& train_config,
                     const TrainerState* state);

// The run folder's checkpoint to use: dir itself when it holds model.safetensors, else dir/best, else the
// newest dir/checkpoints/step_*. Throws a one-line error when none exists.
std::string resolve_checkpoint(const std::string& run_or_checkpoint);

// config.json of a checkpoint folder, validated (format, version, model keys).
nlohmann::json read_checkpoint_config(const std::string& dir);
ModelConfig checkpoint_model_config(const std::string& dir);

// Copies weights into an existing model (either device); every name and shape must match exactly.
void load_weights(const std::string& dir, Model& m);
// A model built from the checkpoint's config and weights, on `device`.
std::unique_ptr<Model> load_model(const std::string& run_or_checkpoint, Backend device);

// Restores AdamW moments into m and returns the trainer state; throws when the folder has none.
TrainerState load_trainer_state(const std::string& dir, Model& m);

}  // namespace dsk
