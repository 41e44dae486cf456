// CPU optimizer kernels: the global gradient norm (deterministic) and PyTorch's AdamW over the flat arena.
#include "kernels/optim.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dsk {

template <>
void sum_squares<Backend::CPU>(float* out, const float* g, int64_t n) {
  DSK_CHECK(n >= 0, "sum_squares: bad size {}", n);
  // Fixed chunks (independent of the thread count) each summed in double, then the partials summed in chunk
  // order: the same bits for any number of threads.
  constexpr int64_t kChunk = 1 << 16;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(nchunks));
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nchunks; ++k) {
    const int64_t i0 = k * kChunk, i1 = std::min(n, i0 + kChunk);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; ++i) s += static_cast<double>(g[i]) * g[i];
    partial[static_cast<size_t>(k)] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  *out = static_cast<float>(total);
}

template <>
void adamw_update<Backend::CPU>(float* p, const float* g, float* m, float* v, int64_t n, const AdamWHyper& h) {
  DSK_CHECK(n >= 0, "adamw_update: bad size {}", n);
  DSK_CHECK(h.step >= 1, "adamw_update: step must be 1-based, got {}", h.step);
  // The scalars are formed as torch.optim.AdamW (single-tensor path) forms them: in double on the host, then
  // used as float by the tensor ops.
  const double bias1 = 1.0 - std::pow(static_cast<double>(h.beta1), h.step);
  const double bias2 = 1.0 - std::pow(static_cast<double>(h.beta2), h.step);
  const float decay = static_cast<float>(1.0 - static_cast<double>(h.lr) * h.weight_decay);  // p.mul_(1 - lr*wd)
  const float neg_step_size = static_cast<float>(-(static_cast<double>(h.lr) / bias1));
  const float bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  const float one_minus_b1 = 1.0f - h.beta1, one_minus_b2 = 1.0f - h.beta2;
  const float b2 = h.beta2, eps = h.eps, scale = h.grad_scale;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * scale;                          // clipping folded in (grads were g * clip_coef)
    const float pi = p[i] * decay;                          // decoupled weight decay, before the step
    const float mi = m[i] + one_minus_b1 * (gi - m[i]);     // exp_avg.lerp_(grad, 1 - beta1)
    const float vi = v[i] * b2 + one_minus_b2 * gi * gi;    // exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)
    const float denom = std::sqrt(vi) / bias2_sqrt + eps;   // (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    p[i] = pi + neg_step_size * mi / denom;                 // param.addcdiv_(exp_avg, denom, value=-step_size)
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace dsk
