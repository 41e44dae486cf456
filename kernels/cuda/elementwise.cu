// Element-wise ops on the GPU: ReLU, dropout (the CPU's mask, regenerated from kernels/rng.h), add, accumulate,
// fill. Each is one grid-stride kernel over the flat index, which is also the dropout counter.
#include "kernels/cuda/runtime.cuh"
#include "kernels/elementwise.h"
#include "kernels/rng.h"

namespace dsk {

namespace {

constexpr int kThreads = 256;

// The ReLU kernels are not __restrict__: they may run in place.
__global__ void relu_forward_kernel(float* y, const float* x, int64_t n) {
  DSK_GRID_STRIDE(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f;  // as the CPU: NaN maps to 0
}

__global__ void relu_backward_kernel(float* dx, const float* dy,
                                     const float* y, int64_t n) {
  DSK_GRID_STRIDE(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// y[i] = keep(i) ? x[i] * scale : 0, scale = 1 / (1 - p) rounded to float on the host exactly as the CPU does,
// so values match the CPU bit for bit. Forward and backward are the same map (x = dy). Not __restrict__: in
// place (y == x) is allowed.
__global__ void dropout_kernel(float* y, const float* x, int64_t n, float p, float scale, uint64_t seed,
                               uint64_t site) {
  DSK_GRID_STRIDE(i, n) y[i] = rng::keep(seed, site, static_cast<uint64_t>(i), p) ? x[i] * scale : 0.0f;
}

// Not __restrict__: callers may write in place (out == a).
__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  DSK_GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void accumulate_kernel(float* y, const float* x, int64_t n, float alpha) {
  DSK_GRID_STRIDE(i, n) y[i] += alpha * x[i];
}

__global__ void fill_kernel(float* __restrict__ y, float value, int64_t n) { DSK_GRID_STRIDE(i, n) y[i] = value; }

}  // namespace

template <>
void relu_forward<Backend::CUDA>(float* y, const float* x, int64_t n) {
  check_size(n, "relu_forward");
  if (n == 0) return;
  DSK_LAUNCH(cuda::grid_for(n, kThreads), kThreads, 0, relu_forward_kernel)(y, x, n);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void relu_backward<Backend::CUDA>(float* dx, const float* dy, const float* y, int64_t n) {
  check_size(n, "relu_backward");
  if (n == 0) return;
  DSK_LAUNCH(cuda::grid_for(n, kThreads), kThreads, 0, relu_backward_kernel)(dx, dy, y, n);
  DSK_CUDA_CHECK_LAUNCH();
}

namespace {
void dropout_launch(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t site, const char* op) {
  check_dropout(n, p, op);
  if (n == 0) return;
  if (p == 0.0f) {  // the identity: a copy (nothing to do in place)
    if (y != x) cuda::copy_device(y, x, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  // p = 1 keeps nothing (uniform < 1), so the infinite scale is never selected.
  const float scale = 1.0f / (1.0f - p);
  DSK_LAUNCH(cuda::grid_for(n, kThreads), kThreads, 0, dropout_kernel)(y, x, n, p, scale, seed, site);
  DSK_CUDA_CHECK_LAUNCH();
}
}  // namespace

template <>
void dropout_forward<Backend::CUDA>(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t site) {
  dropout_launch(y, x, n, p, seed, site, "dropout_forward");
}

template <>
void dropout_backward<Backend::CUDA>(float* dx, const float* dy, int64_t n, float p, uint64_t seed, uint64_t site) {
  dropout_launch(dx, dy, n, p, seed, site, "dropout_backward");
}

template <>
void add<Backend::CUDA>(float* out, const float* a, const float* b, int64_t n) {
  check_size(n, "add");
  if (n == 0) return;
  DSK_LAUNCH(cuda::grid_for(n, kThreads), kThreads, 0, add_kernel)(out, a, b, n);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void accumulate<Backend::CUDA>(float* y, const float* x, int64_t n, float alpha) {
  check_size(n, "accumulate");
  if (n == 0) return;
  DSK_LAUNCH(cuda::grid_for(n, kThreads), kThreads, 0, accumulate_kernel)(y, x, n, alpha);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void fill<Backend::CUDA>(float* y, float value, int64_t n) {
  check_size(n, "fill");
  if (n == 0) return;
  DSK_LAUNCH(cuda::grid_for(n, kThreads), kThreads, 0, fill_kernel)(y, value, n);
  DSK_CUDA_CHECK_LAUNCH();
}

}  // namespace dsk
