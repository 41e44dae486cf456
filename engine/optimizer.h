#pragma once
// AdamW over the flat parameter arena, with global-norm gradient clipping folded into the update, and the
// learning-rate schedule (optional linear warmup, then cosine to min_lr ending exactly at the last step).
#include "engine/params.h"
#include "engine/train_config.h"

namespace dsk {

// The learning rate for optimizer step `step` (0-based) of `total_steps`.
float learning_rate(const TrainConfig& c, int step, int total_steps);

// PyTorch's clip_grad_norm_ factor: min(1, max_norm / (norm + 1e-6)); 1 when max_norm is 0 (no clipping).
float clip_scale(float grad_norm, float max_norm);

class AdamW {
 public:
  AdamW(ParamStore& params, const TrainConfig& c);
  // One update from the accumulated gradients: returns the pre-clip global gradient norm. `step` is 1-based.
  float step(int step, float lr);
  // The global L2 norm of the gradient section.
  float grad_norm();

 private:
  ParamStore& params_;
  TrainConfig config_;
  float* norm_scratch_ = nullptr;  // one float in device memory for the reduction result
  Arena scratch_;
};

}  // namespace dsk
