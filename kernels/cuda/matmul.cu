// Dense matrix products on cuBLAS / cuBLASLt: the strided-batched GEMM and the linear layer.
//
// Row-major on column-major: a row-major matrix X (r, c) with row stride ld is, read column-major, Xᵀ (c, r) with
// leading dimension ld. So the row-major C = op(A)·op(B) is computed as the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ,
// i.e. cuBLAS is called with the operands swapped (B first), the same transpose flags, and m = N, n = M.
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/matmul.h"

#include <map>
#include <mutex>
#include <tuple>

namespace dsk {

namespace {

cublasComputeType_t compute_type() {
  return cuda::tf32_enabled() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

// ---- kernels ------------------------------------------------------------------------------------------------

// y (N, out) += b (out) broadcast over rows; used when cuBLASLt has no bias-epilogue algorithm for a shape.
__global__ void add_bias_kernel(float* __restrict__ y, const float* __restrict__ b, int64_t N, int out) {
  int64_t total = N * out;
  DSK_GRID_STRIDE(i, total)
    y[i] += b[i % out];
}

// C_b (M, N) = beta * C_b (0 when beta = 0, never reading C): a GEMM with K = 0.
__global__ void scale_c_kernel(float* C, int M, int N, int ldc, long long stride_c, int batch, float beta) {
  int64_t total = int64_t(batch) * M * N;
  DSK_GRID_STRIDE(i, total) {
    int64_t b = i / (int64_t(M) * N), r = (i / N) % M, c = i % N;
    float* p = C + b * stride_c + r * ldc + c;
    *p = beta == 0.0f ? 0.0f : beta * *p;
  }
}

// ---- cuBLASLt linear with the bias in the epilogue ------------------------------------------------------------

// The largest power of two (≤ 256) dividing the address: cuBLASLt picks algorithms by the operands' alignment.
uint32_t alignment_of(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 4 && (a % al) != 0) al /= 2;
  return al;
}

// One cached plan per (shape, precision, alignments): descriptors, layouts and the heuristic's algorithm, so the
// host-side cost of a linear call is a few attribute sets, not a heuristic query.
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;  // false: no algorithm supports the bias epilogue here; use GEMM + bias kernel
};

using LtKey = std::tuple<int, int, int, int, uint32_t, uint32_t, uint32_t, uint32_t>;

std::mutex g_lt_mutex;
std::map<LtKey, LtPlan>& lt_plans() {
  static auto* m = new std::map<LtKey, LtPlan>();  // kept for the process's lifetime, like the handles
  return *m;
}

// y (N, out) = x (N, in) · wᵀ + b, as the column-major yᵀ (out, N) = op_T(w' (in, out)) · x' (in, N) + b.
// cuBLASLt's BIAS epilogue adds a vector of length m = out to every column of yᵀ, i.e. to every row of y.
LtPlan& lt_plan(const float* y, const float* x, const float* w, const float* b, int N, int in, int out) {
  cublasComputeType_t ct = compute_type();
  LtKey key{N, in, out, static_cast<int>(ct), alignment_of(y), alignment_of(x), alignment_of(w), alignment_of(b)};
  std::lock_guard<std::mutex> lock(g_lt_mutex);
  auto& plans = lt_plans();
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;

  LtPlan p;
  DSK_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&p.desc, ct, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  DSK_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  DSK_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
  DSK_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  cudaDataType_t bias_type = CUDA_R_32F;
  DSK_CUBLASLT_CHECK(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  // The heuristic must see a bias pointer of the right alignment; the real one is set per call.
  DSK_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof(b)));

  DSK_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_32F, in, out, in));   // w' (in, out), ld in
  DSK_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_32F, in, N, in));     // x' (in, N), ld in
  DSK_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, out, N, out));   // y' (out, N), ld out

  cublasLtMatmulPreference_t pref = nullptr;
  DSK_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = cuda::kLtWorkspaceBytes;
  DSK_CUBLASLT_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  uint32_t al_a = std::get<6>(key), al_b = std::get<5>(key), al_c = std::get<4>(key);
  DSK_CUBLASLT_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
  DSK_CUBLASLT_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
  DSK_CUBLASLT_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c)));
  DSK_CUBLASLT_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c)));

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(cuda::cublaslt(), p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    p.algo = result.algo;
    p.ok = true;
  }
  return plans.emplace(key, p).first->second;
}

}  // namespace

// ---- launchers ----------------------------------------------------------------------------------------------

template <>
void gemm<Backend::CUDA>(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                         long long stride_a, const float* B, int ldb, long long stride_b, float beta, float* C,
                         int ldc, long long stride_c, int batch) {
  DSK_CHECK(M > 0 && N > 0 && K >= 0 && batch > 0, "gemm: bad shape M={} N={} K={} batch={}", M, N, K, batch);
  DSK_CHECK(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N,
            "gemm: leading dimension too small (lda={} ldb={} ldc={} for M={} N={} K={})", lda, ldb, ldc, M, N, K);
  if (K == 0) {  // an empty sum: C = beta C, as the CPU specification does (cuBLAS's k = 0 corner is not relied on)
    DSK_LAUNCH(cuda::grid_for(int64_t(batch) * M * N, 256), 256, 0, scale_c_kernel)(
        C, M, N, ldc, stride_c, batch, beta);
    DSK_CUDA_CHECK_LAUNCH();
    return;
  }
  cublasOperation_t opa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  // Column-major Cᵀ (N, M) = op(B)ᵀ (N, K) · op(A)ᵀ (K, M): B goes first. With beta = 0 cuBLAS does not read C.
  DSK_CUBLAS_CHECK(cublasGemmStridedBatchedEx(cuda::cublas(), opb, opa, N, M, K, &alpha, B, CUDA_R_32F, ldb,
                                              stride_b, A, CUDA_R_32F, lda, stride_a, &beta, C, CUDA_R_32F, ldc,
                                              stride_c, batch, compute_type(), CUBLAS_GEMM_DEFAULT));
}

template <>
void linear_forward<Backend::CUDA>(float* y, const float* x, const float* w, const float* b, int N, int in, int out) {
  DSK_CHECK(N > 0 && in > 0 && out > 0, "linear_forward: bad shape N={} in={} out={}", N, in, out);
  // The bias epilogue reads b with vector loads: fuse only when b is 16-byte aligned (arena slices may not be).
  if (b && alignment_of(b) >= 16) {
    LtPlan& p = lt_plan(y, x, w, b, N, in, out);
    if (p.ok) {
      // Plans are shared between calls of the same shape: set this call's bias pointer under the lock.
      std::lock_guard<std::mutex> lock(g_lt_mutex);
      DSK_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof(b)));
      float alpha = 1.0f, beta = 0.0f;
      cublasStatus_t st = cublasLtMatmul(cuda::cublaslt(), p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c,
                                         &p.algo, cuda::lt_workspace(), cuda::kLtWorkspaceBytes, cuda::stream());
      if (st == CUBLAS_STATUS_SUCCESS) return;
      // The heuristic's choice refused this call (a case it did not foresee): use the unfused path from now on
      // for this plan rather than fail the step. Any other error is real.
      DSK_CHECK(st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE,
                "cuBLASLt linear failed: {} ({})", static_cast<int>(st), cublasGetStatusString(st));
      p.ok = false;
    }
  }
  // y = x · wᵀ (+ b by a separate pass when cuBLASLt could not fuse it).
  gemm<Backend::CUDA>(false, true, N, out, in, 1.0f, x, in, 0, w, in, 0, 0.0f, y, out, 0, 1);
  if (b) {
    DSK_LAUNCH(cuda::grid_for(int64_t(N) * out, 256), 256, 0, add_bias_kernel)(y, b, N, out);
    DSK_CUDA_CHECK_LAUNCH();
  }
}

template <>
void linear_backward<Backend::CUDA>(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                                    int N, int in, int out) {
  DSK_CHECK(N > 0 && in > 0 && out > 0, "linear_backward: bad shape N={} in={} out={}", N, in, out);
  // dx (N, in) = dy (N, out) · w (out, in)
  if (dx) gemm<Backend::CUDA>(false, false, N, in, out, 1.0f, dy, out, 0, w, in, 0, 0.0f, dx, in, 0, 1);
  // dw (out, in) += dyᵀ (out, N) · x (N, in)
  if (dw) gemm<Backend::CUDA>(true, false, out, in, N, 1.0f, dy, out, 0, x, in, 0, 1.0f, dw, in, 0, 1);
  // db (out) += Σ_n dy[n, :], in a fixed order (kernels/cuda/reduce.cuh)
  if (db) cuda::column_sum_accumulate(db, dy, N, out);
}

}  // namespace dsk
