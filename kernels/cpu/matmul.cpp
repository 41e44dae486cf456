// CPU dense matrix products: OpenBLAS sgemm (single-threaded) split over OpenMP threads; the linear layer on top.
#include "kernels/matmul.h"

#include "kernels/cpu/blas_threads.h"

#include <cblas.h>

#include <omp.h>

#include <algorithm>

namespace dsk {

namespace {

// One row-major sgemm on the calling thread. K = 0 is cleared by hand: BLAS only scales C then, and the
// contract says beta = 0 never reads C (it may hold garbage or NaN from an arena). OpenBLAS's own beta = 0 pass
// writes zeros without reading C.
void sgemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                  const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    for (int i = 0; i < M; ++i) {
      float* row = C + static_cast<long long>(i) * ldc;
      for (int j = 0; j < N; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha,
              A, lda, B, ldb, beta, C, ldc);
}

// One GEMM split over the OpenMP threads along the longer side of C: thread t computes a band of rows (or
// columns) of C, every element by exactly one thread over the full K (no cross-thread sums), and the bands are a
// fixed function of the thread count, so runs are bit-reproducible.
void sgemm_parallel(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                    const float* B, int ldb, float beta, float* C, int ldc) {
  constexpr int kAlign = 16;  // band edges on whole SIMD tiles
  const bool split_rows = M >= N;
  const int len = split_rows ? M : N;
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int units = (len + kAlign - 1) / kAlign;
    const int u0 = static_cast<int>(static_cast<long long>(units) * t / nt);
    const int u1 = static_cast<int>(static_cast<long long>(units) * (t + 1) / nt);
    const int i0 = std::min(len, u0 * kAlign), i1 = std::min(len, u1 * kAlign);
    if (i1 > i0) {
      if (split_rows) {  // rows i0..i1 of C come from rows i0..i1 of op(A)
        const float* Ab = trans_a ? A + i0 : A + static_cast<long long>(i0) * lda;
        sgemm_serial(trans_a, trans_b, i1 - i0, N, K, alpha, Ab, lda, B, ldb, beta,
                     C + static_cast<long long>(i0) * ldc, ldc);
      } else {  // columns i0..i1 of C come from columns i0..i1 of op(B)
        const float* Bb = trans_b ? B + static_cast<long long>(i0) * ldb : B + i0;
        sgemm_serial(trans_a, trans_b, M, i1 - i0, K, alpha, A, lda, Bb, ldb, beta, C + i0, ldc);
      }
    }
  }
}

}  // namespace

template <>
void gemm<Backend::CPU>(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                        long long stride_a, const float* B, int ldb, long long stride_b, float beta, float* C, int ldc,
                        long long stride_c, int batch) {
  DSK_CHECK(M > 0 && N > 0 && K >= 0 && batch > 0, "gemm: bad shape M={} N={} K={} batch={}", M, N, K, batch);
  // Row strides as stored: A is (M, K), or (K, M) when transposed; likewise B.
  DSK_CHECK(lda >= std::max(1, trans_a ? M : K) && ldb >= std::max(1, trans_b ? K : N) && ldc >= N,
            "gemm: leading dimension too small (lda={} ldb={} ldc={} for M={} N={} K={})", lda, ldb, ldc, M, N, K);
  cpu::use_single_threaded_blas();  // one thread pool, OpenMP's: gemm splits the work itself (blas_threads.h)
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  // Below ~1 MFLOP a GEMM takes microseconds: waking threads would cost more than it saves.
  const bool tiny = 2.0 * M * N * std::max(K, 1) < 1e6;
  if (threads > 1 && batch > 1 && (batch % threads == 0 || batch >= 4 * threads || tiny)) {
    // Many GEMMs: whole GEMMs per thread (an uneven share costs at most one GEMM in four).
#pragma omp parallel for schedule(static)
    for (int b = 0; b < batch; ++b)
      sgemm_serial(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta,
                   C + b * stride_c, ldc);
    return;
  }
  for (int b = 0; b < batch; ++b) {
    if (threads > 1 && !tiny)
      sgemm_parallel(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta,
                     C + b * stride_c, ldc);
    else
      sgemm_serial(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta,
                   C + b * stride_c, ldc);
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
