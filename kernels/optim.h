#pragma once
// Optimizer kernels: the global gradient norm and AdamW over the flat parameter arena.
#include "kernels/backend.h"

namespace dsk {

// *out = Σ g[i]² as one float in the backend's memory, by a fixed reduction order (deterministic).
template <Backend B>
void sum_squares(float* out, const float* g, int64_t n);

struct AdamWHyper {
  float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  int step = 1;             // 1-based, for bias correction
  float grad_scale = 1.0f;  // gradient clipping folded in: g is used as g * grad_scale
};

// PyTorch AdamW (decoupled weight decay):  p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g²;
// p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
template <Backend B>
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWHyper& h);

}  // namespace dsk
