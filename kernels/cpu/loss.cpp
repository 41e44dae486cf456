// CPU fused softmax cross-entropy: one row at a time, three sweeps over the row while it sits in cache
// (max, exp-and-sum, normalize), OpenMP over rows.
#include "kernels/loss.h"

#include <bit>
#include <cmath>

namespace dsk {

namespace {

// exp(x) for x <= 0 (the max-subtracted logits), ~1 ulp, branch-free so the row loop vectorizes: glibc's expf is
// a scalar call unless the whole build uses -ffast-math, and the LM head's 1024 x 50257 exps are the cost of this
// kernel. Cephes' expf: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n put into the exponent.
// n is rounded by the 1.5·2^23 trick rather than floor() or a float->int conversion: GCC only vectorizes those
// under -fno-trapping-math, which this build does not use.
inline float exp_nonpositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln 2 split so n * kLn2Hi is exact
  constexpr float kMin = -87.0f;       // below this exp(x) is near FLT_MIN: return 0 (2^n stays a normal number)
  constexpr float kRound = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits
  const float xc = x < kMin ? kMin : x;
  const float shifted = xc * kLog2e + kRound;
  const float n = shifted - kRound;  // round(x / ln 2), in [-126, 0]
  const float r = xc - n * kLn2Hi - n * kLn2Lo;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const int32_t n_int = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kRound);
  const float two_n = std::bit_cast<float>((n_int + 127) << 23);
  return x < kMin ? 0.0f : p * two_n;
}

}  // namespace

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
        const float e = exp_nonpositive(x[i] - mx);
        g[i] = e;
        sum += e;
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < V; ++i) sum += exp_nonpositive(x[i] - mx);
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
