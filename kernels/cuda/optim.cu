// Optimizer kernels on the GPU: the squared gradient norm by a deterministic two-stage reduction, and AdamW as
// one fused element-wise kernel over the flat parameter arena.
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/optim.h"

#include <cmath>

namespace dsk {

namespace {

// The reduction's shape is a constant, not derived from the device, so the summation order (and hence the
// bits of the result) is the same on every GPU and every run.
constexpr int kSumBlocks = 1024;
constexpr int kSumThreads = 256;

// Stage 1: block k sums g² over its grid-stride slice (in double: 10⁸ terms stay accurate), one partial each.
__global__ void sum_squares_partial_kernel(double* __restrict__ partials, const float* __restrict__ g, int64_t n) {
  DSK_SHARED(double, shared, [32]);
  double s = 0.0;
  DSK_GRID_STRIDE(i, n) {
    double v = g[i];
    s += v * v;
  }
  s = cuda::block_sum(s, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Stage 2: one block of kSumBlocks threads adds the partials.
__global__ void sum_squares_final_kernel(float* __restrict__ out, const double* __restrict__ partials) {
  DSK_SHARED(double, shared, [32]);
  double s = cuda::block_sum(partials[threadIdx.x], shared);
  if (threadIdx.x == 0) *out = static_cast<float>(s);
}

// PyTorch AdamW (torch.optim.AdamW's single-tensor path), element-wise, in the same operation order as the CPU
// specification; the scalars (decay, step size, sqrt of the second bias correction) come from the host.
__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, float decay, float neg_step_size, float bias2_sqrt,
                             float one_minus_b1, float b2, float one_minus_b2, float eps, float grad_scale) {
  DSK_GRID_STRIDE(i, n) {
    float gi = g[i] * grad_scale;                       // clipping folded in
    float pi = p[i] * decay;                            // decoupled weight decay, before the step
    float m0 = m[i];
    float mi = m0 + one_minus_b1 * (gi - m0);           // exp_avg.lerp_(grad, 1 - beta1)
    float vi = v[i] * b2 + one_minus_b2 * gi * gi;      // exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)
    float denom = sqrtf(vi) / bias2_sqrt + eps;         // (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    p[i] = pi + neg_step_size * mi / denom;             // param.addcdiv_(exp_avg, denom, value=-step_size)
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

template <>
void sum_squares<Backend::CUDA>(float* out, const float* g, int64_t n) {
  DSK_CHECK(n >= 0, "sum_squares: negative size {}", n);
  double* partials = static_cast<double*>(cuda::scratch(sizeof(double) * kSumBlocks));
  // Always the full fixed grid (blocks past the end contribute 0): the order must not depend on n's size class.
  DSK_LAUNCH(kSumBlocks, kSumThreads, 0, sum_squares_partial_kernel)(partials, g, n);
  DSK_CUDA_CHECK_LAUNCH();
  static_assert(kSumBlocks <= 1024 && kSumBlocks % 32 == 0, "stage 2 runs one thread per partial");
  DSK_LAUNCH(1, kSumBlocks, 0, sum_squares_final_kernel)(out, partials);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void adamw_update<Backend::CUDA>(float* p, const float* g, float* m, float* v, int64_t n, const AdamWHyper& h) {
  DSK_CHECK(n >= 0, "adamw_update: negative size {}", n);
  DSK_CHECK(h.step >= 1, "adamw_update: step must be 1-based, got {}", h.step);
  if (n == 0) return;
  // The scalars as the CPU forms them (torch.optim.AdamW's way): in double on the host, used as float.
  const double bias1 = 1.0 - std::pow(static_cast<double>(h.beta1), h.step);
  const double bias2 = 1.0 - std::pow(static_cast<double>(h.beta2), h.step);
  const float decay = static_cast<float>(1.0 - static_cast<double>(h.lr) * h.weight_decay);
  const float neg_step_size = static_cast<float>(-(static_cast<double>(h.lr) / bias1));
  const float bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  DSK_LAUNCH(cuda::grid_for(n, 256), 256, 0, adamw_kernel)(
      p, g, m, v, n, decay, neg_step_size, bias2_sqrt, 1.0f - h.beta1, h.beta2, 1.0f - h.beta2, h.eps, h.grad_scale);
  DSK_CUDA_CHECK_LAUNCH();
}

}  // namespace dsk
