#pragma once
// Stand-in for the wmma API (nvcuda::wmma) in emulator builds: m16n16k8 TF32 fragments, emulated per lane (each
// lane holds the whole fragment and computes the whole product: the warp-collective result, redundantly).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K>
struct fragment_shape;
template <int M, int N, int K>
struct fragment_shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct fragment_shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct fragment_shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = fragment_shape<Use, M, N, K>::rows, cols = fragment_shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  float x[num_elements];  // row-major (r, c) -> x[r * cols + c]
};

// Round to TF32 (10 mantissa bits), to nearest with ties away from zero, as cvt.rna.tf32.f32.
inline float __float_to_tf32(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x1000u) & 0xffffe000u;  // finite values only
  std::memcpy(&f, &b, 4);
  return f;
}

template <class Use, int M, int N, int K, class T, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const float* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  constexpr bool col = std::is_same_v<Layout, col_major>;
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) dsk_emu::trap("wmma::load_matrix_sync: pointer not 32-byte aligned");
  if (ldm % 4 != 0) dsk_emu::trap("wmma::load_matrix_sync: ldm not a multiple of 4 floats");
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = col ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) dsk_emu::trap("wmma::store_matrix_sync: pointer not 32-byte aligned");
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (float& e : f.x) e = v;
}

// Warp-collective: one lane computes the product for the warp (dsk_emu::warp_once), every lane copies it. Products
// of TF32 operands are exact in fp32; they are summed in fp32.
template <int M, int N, int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  const float* result = dsk_emu::warp_once(M * N, [&](float* out) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        float s = c.x[i * N + j];
        for (int k = 0; k < K; ++k) s += dsk_emu::tf32_operand(a.x[i * K + k]) * dsk_emu::tf32_operand(b.x[k * N + j]);
        out[i * N + j] = s;
      }
  });
  std::memcpy(d.x, result, sizeof(float) * M * N);  // d may be c: the product was taken from c first
}

}  // namespace nvcuda::wmma
