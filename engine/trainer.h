#pragma once
// The training loop: AdamW with the clip folded in, cosine schedule with warmup, gradient accumulation,
// periodic evaluation, best checkpoint by validation loss, periodic checkpoints with retention, resume,
// metrics.jsonl, a progress line, graceful stop on request, NaN/Inf detection.
#include "engine/config.h"
#include "engine/train_config.h"
#include "kernels/backend.h"

#include <cstdio>
#include <functional>
#include <string>

namespace dsk {

struct TrainRun {
  ModelConfig model;
  TrainConfig train;
  std::string data_dir;     // a `dsk prepare` folder (train.bin, val.bin, manifest.json)
  std::string out_dir;      // the run folder: config.json, metrics.jsonl, checkpoints/, best/
  Backend device = Backend::CPU;
  std::string resume_from;  // a checkpoint folder holding trainer_state (empty: fresh start)
  // out_dir holds an earlier run (`dsk train --force`): its files are removed once this run is sure to start
  // (data, device, model and memory all set up), not before, so a run that cannot start loses nothing.
  bool replace_run = false;
  // Polled after every optimizer step; true finishes the step, writes a checkpoint and returns.
  std::function<bool()> stop_requested;
  std::FILE* log = stderr;  // progress and messages
  bool progress_line = false;  // a live \r line (terminal) instead of plain log lines
};

struct TrainSummary {
  int64_t steps_done = 0, total_steps = 0;
  double last_loss = 0, last_val_loss = 0, best_val_loss = 0;
  double tokens_per_s = 0;
  std::string last_checkpoint, best_checkpoint;
  bool stopped_early = false;  // stop_requested
};

// Optimizer steps of a run: max_steps, or ceil(epochs · windows_per_epoch / (batch · accumulation)).
int64_t total_train_steps(const TrainConfig& c, int64_t windows_per_epoch);

TrainSummary run_training(const TrainRun& run);

// The newest periodic checkpoint of a run folder (run/checkpoints/step_*), or dir itself when it is a
// checkpoint with trainer state. Throws when there is none.
std::string latest_checkpoint(const std::string& run_or_checkpoint);

}  // namespace dsk
