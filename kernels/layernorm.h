#pragma once
// LayerNorm over the last dimension (PyTorch semantics: biased variance, eps inside the sqrt).
#include "kernels/backend.h"

namespace dsk {

constexpr float kLayerNormEps = 1e-5f;

// y (N, C) = (x - mean) * rstd * w + b;  mean, rstd (N) saved for backward.
template <Backend B>
void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, int N,
                       int C);

// dx (N, C) set; dw, db (C) accumulate.
template <Backend B>
void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, int N, int C);

}  // namespace dsk
