// CPU expert FFN over the permuted segments (kernels/moe.h): one pair of CBLAS GEMMs per expert on its contiguous
// rows [offsets[e], offsets[e+1]); experts with no rows are skipped.
#include "kernels/moe.h"

#include <cblas.h>

#include <algorithm>

namespace dsk {

namespace {

void check_offsets(const char* op, const int32_t* offsets, int E, int M) {
  DSK_CHECK(offsets[0] == 0 && offsets[E] == M, "{}: offsets must span [0, M={}), got [{}, {})", op, M, offsets[0],
            offsets[E]);
  for (int e = 0; e < E; ++e)
    DSK_CHECK(offsets[e] <= offsets[e + 1], "{}: offsets decrease at expert {} ({} > {})", op, e, offsets[e],
              offsets[e + 1]);
}

// out (rows, cols) = bias broadcast over rows.
void fill_rows_with_bias(float* out, const float* bias, int rows, int cols) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) out[static_cast<size_t>(r) * cols + c] = bias[c];
}

// db (cols) += Σ_r a[r, :]. Threads own column blocks so each db element has one writer and a fixed sum order.
void add_column_sums(float* db, const float* a, int rows, int cols) {
  constexpr int kBlock = 64;
  const int blocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks; ++b) {
    const int c0 = b * kBlock, c1 = std::min(cols, c0 + kBlock);
    float acc[kBlock] = {};
    for (int r = 0; r < rows; ++r) {
      const float* row = a + static_cast<size_t>(r) * cols;
      for (int c = c0; c < c1; ++c) acc[c - c0] += row[c];
    }
    for (int c = c0; c < c1; ++c) db[c] += acc[c - c0];
  }
}

}  // namespace

template <>
void expert_ffn_forward<Backend::CPU>(float* h, float* y, const float* xp, const float* w1, const float* b1,
                                      const float* w2, const float* b2, const int32_t* offsets, int E, int M, int d,
                                      int F) {
  check_expert_ffn(E, M, d, F, "expert_ffn_forward");
  check_offsets("expert_ffn_forward", offsets, E, M);
  for (int e = 0; e < E; ++e) {
    const int r0 = offsets[e], m = offsets[e + 1] - offsets[e];
    if (m == 0) continue;
    const float* xe = xp + static_cast<size_t>(r0) * d;  // (m, d)
    float* he = h + static_cast<size_t>(r0) * F;         // (m, F)
    float* ye = y + static_cast<size_t>(r0) * d;         // (m, d)
    const float* w1e = w1 + static_cast<size_t>(e) * F * d;  // (F, d)
    const float* w2e = w2 + static_cast<size_t>(e) * d * F;  // (d, F)

    // h = relu(xe · w1eᵀ + b1e): start from the bias and let the GEMM accumulate (beta = 1).
    fill_rows_with_bias(he, b1 + static_cast<size_t>(e) * F, m, F);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, F, d, 1.0f, xe, d, w1e, d, 1.0f, he, F);
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < static_cast<long long>(m) * F; ++i) he[i] = he[i] > 0.0f ? he[i] : 0.0f;

    // y = h · w2eᵀ + b2e.
    fill_rows_with_bias(ye, b2 + static_cast<size_t>(e) * d, m, d);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, d, F, 1.0f, he, F, w2e, F, 1.0f, ye, d);
  }
}

template <>
void expert_ffn_backward<Backend::CPU>(float* dxp, float* dw1, float* db1, float* dw2, float* db2, float* dh,
                                       const float* dy, const float* xp, const float* h, const float* w1,
                                       const float* w2, const int32_t* offsets, int E, int M, int d, int F) {
  check_expert_ffn(E, M, d, F, "expert_ffn_backward");
  check_offsets("expert_ffn_backward", offsets, E, M);
  for (int e = 0; e < E; ++e) {
    const int r0 = offsets[e], m = offsets[e + 1] - offsets[e];
    if (m == 0) continue;  // no rows: no parameter gradient, no dxp rows
    const float* xe = xp + static_cast<size_t>(r0) * d;   // (m, d)
    const float* he = h + static_cast<size_t>(r0) * F;    // (m, F)
    const float* dye = dy + static_cast<size_t>(r0) * d;  // (m, d)
    float* dhe = dh + static_cast<size_t>(r0) * F;        // (m, F)
    float* dxe = dxp + static_cast<size_t>(r0) * d;       // (m, d)
    const float* w1e = w1 + static_cast<size_t>(e) * F * d;  // (F, d)
    const float* w2e = w2 + static_cast<size_t>(e) * d * F;  // (d, F)
    float* dw1e = dw1 + static_cast<size_t>(e) * F * d;
    float* dw2e = dw2 + static_cast<size_t>(e) * d * F;

    // Second linear: dw2e += dyᵀ h; db2e += Σ dy; dh = dy · w2e, masked by the ReLU (h > 0).
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, F, m, 1.0f, dye, d, he, F, 1.0f, dw2e, F);
    add_column_sums(db2 + static_cast<size_t>(e) * d, dye, m, d);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, F, d, 1.0f, dye, d, w2e, F, 0.0f, dhe, F);
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < static_cast<long long>(m) * F; ++i)
      if (!(he[i] > 0.0f)) dhe[i] = 0.0f;

    // First linear: dw1e += dhᵀ xe; db1e += Σ dh; dxe = dh · w1e.
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, F, d, m, 1.0f, dhe, F, xe, d, 1.0f, dw1e, d);
    add_column_sums(db1 + static_cast<size_t>(e) * F, dhe, m, F);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, d, F, 1.0f, dhe, F, w1e, d, 0.0f, dxe, d);
  }
}

}  // namespace dsk
