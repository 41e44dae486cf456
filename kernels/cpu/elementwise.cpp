// CPU element-wise ops: ReLU, dropout, residual add, accumulate, fill.
#include "kernels/elementwise.h"

#include "kernels/rng.h"

namespace dsk {

template <>
void relu_forward<Backend::CPU>(float* y, const float* x, int64_t n) {
  check_size(n, "relu_forward");
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

template <>
void relu_backward<Backend::CPU>(float* dx, const float* dy, const float* y, int64_t n) {
  check_size(n, "relu_backward");
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

namespace {
// Shared by forward and backward: the mask is a pure function of (seed, site, i), so backward regenerates the
// exact forward mask. out[i] = keep(i) ? in[i] / (1 - p) : 0.
void apply_dropout(float* out, const float* in, int64_t n, float p, uint64_t seed, uint64_t site, const char* what) {
  check_dropout(n, p, what);
  if (p == 0.0f) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = in[i];
    return;
  }
  // p = 1 drops everything: the scale is then inf but never selected.
  const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = rng::keep(seed, site, static_cast<uint64_t>(i), p) ? in[i] * scale : 0.0f;
}
}  // namespace

template <>
void dropout_forward<Backend::CPU>(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t site) {
  apply_dropout(y, x, n, p, seed, site, "dropout_forward");
}

template <>
void dropout_backward<Backend::CPU>(float* dx, const float* dy, int64_t n, float p, uint64_t seed, uint64_t site) {
  apply_dropout(dx, dy, n, p, seed, site, "dropout_backward");
}

template <>
void add<Backend::CPU>(float* out, const float* a, const float* b, int64_t n) {
  check_size(n, "add");
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <>
void accumulate<Backend::CPU>(float* y, const float* x, int64_t n, float alpha) {
  check_size(n, "accumulate");
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <>
void fill<Backend::CPU>(float* y, float value, int64_t n) {
  check_size(n, "fill");
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

}  // namespace dsk
