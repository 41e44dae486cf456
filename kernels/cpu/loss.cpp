// CPU fused softmax cross-entropy: one row at a time, three sweeps over the row while it sits in cache
// (max, exp-and-sum, normalize), OpenMP over rows.
#include "kernels/loss.h"
#include "kernels/cpu/fast_exp.h"

#include <cmath>

namespace dsk {

template <>
void cross_entropy_forward_backward<Backend::CPU>(float* losses, float* dlogits, const float* logits,
                                                  const int32_t* targets, int N, int V, float dloss_scale) {
  DSK_CHECK(N > 0 && V > 0, "cross_entropy: bad shape N={} V={}", N, V);
  // Checked before the parallel loop: an exception must not leave an OpenMP region.
  for (int n = 0; n < N; ++n)
    DSK_CHECK(targets[n] < V, "cross_entropy: target {} at row {} is not below the vocabulary size {}", targets[n], n,
              V);

#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = logits + static_cast<long long>(n) * V;
    float* g = dlogits ? dlogits + static_cast<long long>(n) * V : nullptr;  // may be the same memory as x
    const int t = targets[n];
    if (t < 0) {  // ignored: no loss, no gradient
      losses[n] = 0.0f;
      if (g)
        for (int i = 0; i < V; ++i) g[i] = 0.0f;
      continue;
    }
    const float x_t = x[t];  // read before g (possibly x itself) is overwritten

    float mx = x[0];
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; ++i) mx = x[i] > mx ? x[i] : mx;

    // Σ exp(x - max) in float: every term is in (0, 1] and the max term is 1, so the sum is well conditioned.
    float sum = 0.0f;
    if (g) {
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < V; ++i) {
        const float e = cpu_math::exp_nonpositive(x[i] - mx);
        g[i] = e;
        sum += e;
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < V; ++i) sum += cpu_math::exp_nonpositive(x[i] - mx);
    }
    losses[n] = static_cast<float>(static_cast<double>(mx) + std::log(static_cast<double>(sum)) - x_t);

    if (g) {
      // dlogits = (softmax - onehot) * dloss_scale
      const float s = dloss_scale / sum;
#pragma omp simd
      for (int i = 0; i < V; ++i) g[i] *= s;
      g[t] -= dloss_scale;
    }
  }
}

}  // namespace dsk
