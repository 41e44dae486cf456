// CPU LayerNorm over the last dimension (PyTorch semantics: biased variance, eps inside the sqrt).
#include "kernels/layernorm.h"

#include <algorithm>
#include <cmath>

namespace dsk {

template <>
void layernorm_forward<Backend::CPU>(float* y, float* mean, float* rstd, const float* x, const float* w,
                                     const float* b, int N, int C) {
  DSK_CHECK(N > 0 && C > 0, "layernorm_forward: bad shape N={} C={}", N, C);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* xr = x + static_cast<long long>(n) * C;
    float* yr = y + static_cast<long long>(n) * C;
    // Two passes in double: the mean, then the variance about it (no cancellation from E[x²] - E[x]²).
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; ++c) s += xr[c];
    const double mu = s / C;
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; ++c) {
      const double d = xr[c] - mu;
      ss += d * d;
    }
    const float m = static_cast<float>(mu);
    const float r = static_cast<float>(1.0 / std::sqrt(ss / C + static_cast<double>(kLayerNormEps)));
    for (int c = 0; c < C; ++c) yr[c] = (xr[c] - m) * r * w[c] + b[c];
    mean[n] = m;
    rstd[n] = r;
  }
}

template <>
void layernorm_backward<Backend::CPU>(float* dx, float* dw, float* db, const float* dy, const float* x,
                                      const float* w, const float* mean, const float* rstd, int N, int C) {
  DSK_CHECK(N > 0 && C > 0, "layernorm_backward: bad shape N={} C={}", N, C);
  // dx (set), row by row:  xhat = (x - mean) rstd,  g = dy * w,
  //   dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)).
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* xr = x + static_cast<long long>(n) * C;
    const float* dyr = dy + static_cast<long long>(n) * C;
    float* dxr = dx + static_cast<long long>(n) * C;
    const float m = mean[n], r = rstd[n];
    double sum_g = 0.0, sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int c = 0; c < C; ++c) {
      const float g = dyr[c] * w[c];
      sum_g += g;
      sum_gx += static_cast<double>(g) * ((xr[c] - m) * r);
    }
    const float mg = static_cast<float>(sum_g / C), mgx = static_cast<float>(sum_gx / C);
    for (int c = 0; c < C; ++c) {
      const float xhat = (xr[c] - m) * r;
      dxr[c] = r * (dyr[c] * w[c] - mg - xhat * mgx);
    }
  }

  // dw += Σ_n dy * xhat,  db += Σ_n dy  (accumulate). Threads own disjoint column blocks and walk the rows in
  // order, so the sums are the same for any thread count (deterministic).
  constexpr int kBlock = 64;
  const int nblocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < nblocks; ++blk) {
    const int c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    float acc_w[kBlock] = {}, acc_b[kBlock] = {};
    for (int n = 0; n < N; ++n) {
      const float* xr = x + static_cast<long long>(n) * C;
      const float* dyr = dy + static_cast<long long>(n) * C;
      const float m = mean[n], r = rstd[n];
#pragma omp simd
      for (int c = c0; c < c1; ++c) {
        acc_w[c - c0] += dyr[c] * ((xr[c] - m) * r);
        acc_b[c - c0] += dyr[c];
      }
    }
    for (int c = c0; c < c1; ++c) {
      if (dw) dw[c] += acc_w[c - c0];
      if (db) db[c] += acc_b[c - c0];
    }
  }
}

}  // namespace dsk
