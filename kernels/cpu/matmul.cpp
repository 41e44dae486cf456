// CPU dense matrix products: OpenBLAS sgemm per batch, the linear layer on top of it.
#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>

namespace dsk {

template <>
void gemm<Backend::CPU>(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                        long long stride_a, const float* B, int ldb, long long stride_b, float beta, float* C, int ldc,
                        long long stride_c, int batch) {
  DSK_CHECK(M > 0 && N > 0 && K >= 0 && batch > 0, "gemm: bad shape M={} N={} K={} batch={}", M, N, K, batch);
  // Row strides as stored: A is (M, K), or (K, M) when transposed; likewise B.
  DSK_CHECK(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N,
            "gemm: leading dimension too small (lda={} ldb={} ldc={} for M={} N={} K={})", lda, ldb, ldc, M, N, K);
  for (int b = 0; b < batch; ++b) {
    float* Cb = C + b * stride_c;
    // The contract says beta = 0 never reads C (it may hold garbage or NaN from an arena). OpenBLAS honours that
    // in sgemm's beta pass, but K = 0 is a corner where BLAS only scales C, so clear it ourselves there.
    if (K == 0) {
      for (int i = 0; i < M; ++i) {
        float* row = Cb + static_cast<long long>(i) * ldc;
        for (int j = 0; j < N; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
      }
      continue;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta, Cb, ldc);
  }
}

template <>
void linear_forward<Backend::CPU>(float* y, const float* x, const float* w, const float* b, int N, int in, int out) {
  DSK_CHECK(N > 0 && in > 0 && out > 0, "linear_forward: bad shape N={} in={} out={}", N, in, out);
  float beta = 0.0f;
  if (b) {
    // Broadcast the bias into y, then let the GEMM accumulate onto it: one pass over y instead of two.
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) std::copy(b, b + out, y + static_cast<long long>(n) * out);
    beta = 1.0f;
  }
  // y (N, out) = x (N, in) · wᵀ, w stored (out, in).
  gemm<Backend::CPU>(false, true, N, out, in, 1.0f, x, in, 0, w, in, 0, beta, y, out, 0);
}

template <>
void linear_backward<Backend::CPU>(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                                   int N, int in, int out) {
  DSK_CHECK(N > 0 && in > 0 && out > 0, "linear_backward: bad shape N={} in={} out={}", N, in, out);
  // dx (N, in) = dy (N, out) · w (out, in)   (set)
  if (dx) gemm<Backend::CPU>(false, false, N, in, out, 1.0f, dy, out, 0, w, in, 0, 0.0f, dx, in, 0);
  // dw (out, in) += dyᵀ (out, N) · x (N, in)   (accumulate)
  if (dw) gemm<Backend::CPU>(true, false, out, in, N, 1.0f, dy, out, 0, x, in, 0, 1.0f, dw, in, 0);
  if (db) {
    // db (out) += Σ_n dy[n, :]. Threads own disjoint column blocks and sum rows in order, so the result does not
    // depend on the thread count.
    constexpr int kBlock = 256;
    const int nblocks = (out + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; ++blk) {
      const int c0 = blk * kBlock, c1 = std::min(out, c0 + kBlock);
      float acc[kBlock] = {};
      for (int n = 0; n < N; ++n) {
        const float* row = dy + static_cast<long long>(n) * out;
#pragma omp simd
        for (int c = c0; c < c1; ++c) acc[c - c0] += row[c];
      }
      for (int c = c0; c < c1; ++c) db[c] += acc[c - c0];
    }
  }
}

}  // namespace dsk
