#pragma once
// Element-wise ops: ReLU, dropout, residual add, accumulate, fill.
#include "kernels/backend.h"

namespace dsk {

// y = max(x, 0)
template <Backend B>
void relu_forward(float* y, const float* x, int64_t n);
// dx = dy * (y > 0)   (set; y is the forward output)
template <Backend B>
void relu_backward(float* dx, const float* dy, const float* y, int64_t n);

// Inverted dropout: y[i] = keep(i) ? x[i] / (1 - p) : 0, keep(i) = rng::keep(seed, site, i, p). p = 0 copies.
template <Backend B>
void dropout_forward(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t site);
// dx[i] = keep(i) ? dy[i] / (1 - p) : 0 (set; the mask is regenerated, never stored)
template <Backend B>
void dropout_backward(float* dx, const float* dy, int64_t n, float p, uint64_t seed, uint64_t site);

// The argument checks both backends make (one message, whichever device runs the op).
inline void check_size(int64_t n, const char* op) { DSK_CHECK(n >= 0, "{}: negative size {}", op, n); }
inline void check_dropout(int64_t n, float p, const char* op) {
  check_size(n, op);
  DSK_CHECK(p >= 0.0f && p <= 1.0f, "{}: dropout probability {} outside [0, 1]", op, p);
}

// out = a + b
template <Backend B>
void add(float* out, const float* a, const float* b, int64_t n);
// y += alpha * x
template <Backend B>
void accumulate(float* y, const float* x, int64_t n, float alpha = 1.0f);
// y = value
template <Backend B>
void fill(float* y, float value, int64_t n);

}  // namespace dsk
