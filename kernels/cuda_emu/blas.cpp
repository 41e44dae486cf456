// cuBLAS and cuBLASLt stand-ins of the emulator: the GEMMs dsk calls, on OpenBLAS (column-major, as cuBLAS), with
// TF32 inputs rounded like the tensor cores, bf16 widened, and the cuBLASLt bias epilogue.
#include <cblas.h>
#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

// ---- cuBLAS -------------------------------------------------------------------------------------------------------

struct cublasContext {};
cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_NOT_INITIALIZED";
  }
}

namespace {
// A column-major (rows x cols, ld) matrix's elements rounded to TF32.
std::vector<float> tf32_copy(const float* p, int rows, int cols, int ld) {
  std::vector<float> out(static_cast<size_t>(ld) * cols);
  for (int c = 0; c < cols; ++c)
    for (int r = 0; r < rows; ++r) {
      float f = p[static_cast<size_t>(c) * ld + r];
      uint32_t b;
      std::memcpy(&b, &f, 4);
      if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x1000u) & 0xffffe000u;
      std::memcpy(&f, &b, 4);
      out[static_cast<size_t>(c) * ld + r] = f;
    }
  return out;
}
}  // namespace

void emu_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
               float beta, float* C, int ldc, bool tf32) {
  if (m <= 0 || n <= 0) return;
  if (k == 0) {  // cuBLAS: C = beta C
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        float& c = C[static_cast<size_t>(j) * ldc + i];
        c = beta == 0.0f ? 0.0f : beta * c;
      }
    return;
  }
  std::vector<float> a32, b32;
  if (tf32) {
    a32 = tf32_copy(A, ta ? k : m, ta ? m : k, lda);
    b32 = tf32_copy(B, tb ? n : k, tb ? k : n, ldb);
    A = a32.data();
    B = b32.data();
  }
  if (beta == 0.0f)  // cuBLAS never reads C then (it may hold NaN)
    for (int j = 0; j < n; ++j)
      std::memset(C + static_cast<size_t>(j) * ldc, 0, sizeof(float) * static_cast<size_t>(m));
  cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, A, lda, B,
              ldb, beta, C, ldc);
}

namespace {
// The matrices of a GEMM live in device memory; alpha and beta are host scalars (CUBLAS_POINTER_MODE_HOST, which
// dsk uses): the stand-ins read those outside DeviceWork, so a device pointer there faults as on a GPU.
void require_operands(const void* A, const void* B, const void* C) {
  dsk_emu::require_device_pointer(A, "a GEMM's A operand");
  dsk_emu::require_device_pointer(B, "a GEMM's B operand");
  dsk_emu::require_device_pointer(C, "a GEMM's C operand");
}

// bf16 GEMMs (only the peak measurement uses them): widened to fp32, computed, rounded back to nearest even.
float bf16_to_float(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint16_t float_to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fffu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}
std::vector<float> widen(const void* p, size_t count) {
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) out[i] = bf16_to_float(static_cast<const uint16_t*>(p)[i]);
  return out;
}
cublasStatus_t bf16_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void* alpha,
                         const void* A, int lda, long long stride_a, const void* B, int ldb, long long stride_b,
                         const void* beta, void* C, int ldc, long long stride_c, int batch) {
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);  // host scalars
  require_operands(A, B, C);
  dsk_emu::DeviceWork work;
  const size_t na = static_cast<size_t>(lda) * (ta == CUBLAS_OP_T ? m : k);
  const size_t nb = static_cast<size_t>(ldb) * (tb == CUBLAS_OP_T ? k : n);
  const size_t nc = static_cast<size_t>(ldc) * n;
  for (int i = 0; i < batch; ++i) {
    auto a = widen(static_cast<const uint16_t*>(A) + i * stride_a, na);
    auto b = widen(static_cast<const uint16_t*>(B) + i * stride_b, nb);
    uint16_t* c16 = static_cast<uint16_t*>(C) + i * stride_c;
    auto c = widen(c16, nc);
    emu_sgemm(ta == CUBLAS_OP_T, tb == CUBLAS_OP_T, m, n, k, al, a.data(), lda, b.data(), ldb, be, c.data(), ldc,
              false);
    for (size_t j = 0; j < nc; ++j) c16[j] = float_to_bf16(c[j]);
  }
  return CUBLAS_STATUS_SUCCESS;
}
}  // namespace

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType_t at, int lda, const void* B,
                            cudaDataType_t bt, int ldb, const void* beta, void* C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
  return cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C, ct, ldc, 0, 1,
                                    compute, algo);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void* alpha, const void* A, cudaDataType_t at, int lda,
                                          long long stride_a, const void* B, cudaDataType_t bt, int ldb,
                                          long long stride_b, const void* beta, void* C, cudaDataType_t ct, int ldc,
                                          long long stride_c, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t) {
  if (at == CUDA_R_16BF && bt == CUDA_R_16BF && ct == CUDA_R_16BF)
    return bf16_gemm(ta, tb, m, n, k, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c, batch);
  if (at != CUDA_R_32F || bt != CUDA_R_32F || ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, ta ? k : m) || ldb < std::max(1, tb ? n : k) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);  // host scalars
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  require_operands(A, B, C);
  dsk_emu::DeviceWork work;
  for (int i = 0; i < batch; ++i)
    emu_sgemm(ta == CUBLAS_OP_T, tb == CUBLAS_OP_T, m, n, k, al, static_cast<const float*>(A) + i * stride_a, lda,
              static_cast<const float*>(B) + i * stride_b, ldb, be, static_cast<float*>(C) + i * stride_c, ldc,
              compute == CUBLAS_COMPUTE_32F_FAST_TF32);
  return CUBLAS_STATUS_SUCCESS;
}

// ---- cuBLASLt: one matmul, optional bias epilogue ------------------------------------------------------------------

struct cublasLtContext {};
struct EmuLtDesc {
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const float* bias = nullptr;
};
struct EmuLtLayout {
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
};
struct EmuLtPref {};

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  *h = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t) {
  *d = new EmuLtDesc;
  (*d)->compute = compute;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: std::memcpy(&d->ta, buf, std::min(bytes, sizeof d->ta)); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: std::memcpy(&d->tb, buf, std::min(bytes, sizeof d->tb)); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: std::memcpy(&d->epilogue, buf, std::min(bytes, sizeof d->epilogue)); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: std::memcpy(&d->bias, buf, std::min(bytes, sizeof d->bias)); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
  }
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *l = new EmuLtLayout{rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new EmuLtPref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void*, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* found) {
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t) {
  // D (m, n) = alpha op(A) op(B) + beta C (+ bias over rows m); layouts are stored (rows, cols) as given.
  const int m = static_cast<int>(dl->rows), n = static_cast<int>(dl->cols);
  const int k = static_cast<int>(d->ta == CUBLAS_OP_T ? a->rows : a->cols);
  // The shapes must agree and every leading dimension cover its rows. cuBLASLt answers CUBLAS_STATUS_INVALID_VALUE,
  // which dsk's linear takes as "no fused algorithm" and quietly computes unfused; here it is the bug it is.
  const bool ta = d->ta == CUBLAS_OP_T, tb = d->tb == CUBLAS_OP_T;
  bool valid = (ta ? a->cols : a->rows) == dl->rows && (tb ? b->rows : b->cols) == dl->cols &&
               (tb ? b->cols : b->rows) == static_cast<uint64_t>(k) && c->rows == dl->rows && c->cols == dl->cols;
  for (const EmuLtLayout* l : {a, b, c, dl}) valid = valid && l->ld >= std::max<int64_t>(1, int64_t(l->rows));
  if (d->epilogue == CUBLASLT_EPILOGUE_BIAS && !d->bias) valid = false;
  if (!valid) throw std::runtime_error("CUDA emulator: cublasLtMatmul with inconsistent layouts or no bias pointer");
  if (C != D || c->ld != dl->ld) return CUBLAS_STATUS_NOT_SUPPORTED;  // dsk always passes C == D
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);  // host scalars
  require_operands(A, B, D);
  dsk_emu::require_device_pointer(d->bias, "cublasLtMatmul's bias");
  dsk_emu::DeviceWork work;
  float* out = static_cast<float*>(D);
  emu_sgemm(d->ta == CUBLAS_OP_T, d->tb == CUBLAS_OP_T, m, n, k, al, static_cast<const float*>(A),
            static_cast<int>(a->ld), static_cast<const float*>(B), static_cast<int>(b->ld), be, out,
            static_cast<int>(dl->ld), d->compute == CUBLAS_COMPUTE_32F_FAST_TF32);
  if (d->epilogue == CUBLASLT_EPILOGUE_BIAS)
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) out[static_cast<size_t>(j) * dl->ld + i] += d->bias[i];
  return CUBLAS_STATUS_SUCCESS;
}
