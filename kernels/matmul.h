#pragma once
// Dense matrix products: a strided-batched GEMM and the linear layer built on it.
#include "kernels/backend.h"

namespace dsk {

// Row-major, batched with strides (in elements):
//   C_b (M, N) = alpha * op(A_b) (M, K) · op(B_b) (K, N) + beta * C_b,   b = 0 .. batch-1
// op(X) = X or Xᵀ. lda/ldb/ldc are the row strides of A, B, C as stored (before op).
// beta = 0 overwrites C (C is not read); beta = 1 accumulates.
// CPU: OpenBLAS runs single-threaded and this function spreads the work over OpenMP threads (whole GEMMs of a
// batch, or bands of C), so the backend has one thread pool; call CPU GEMMs through here, not cblas directly.
template <Backend Bk>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, long long stride_a,
          const float* B, int ldb, long long stride_b, float beta, float* C, int ldc, long long stride_c, int batch = 1);

// y (N, out) = x (N, in) · wᵀ + b;  w (out, in) as PyTorch stores it; b (out) or nullptr.
template <Backend Bk>
void linear_forward(float* y, const float* x, const float* w, const float* b, int N, int in, int out);

// dx (N, in) = dy · w (set; skipped when dx is nullptr);  dw (out, in) += dyᵀ · x;  db (out) += Σ_n dy (if db).
template <Backend Bk>
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int N, int in,
                     int out);

}  // namespace dsk
