#pragma once
// The arithmetic of dsk's own fp32 matrix tiles (kernels/device.h cuda::Math), shared by the grouped expert GEMMs
// (expert_ffn.cu) and the attention kernels (attention_*.cu): which arithmetic a launch runs (host), and the wmma
// m16n16k8 TF32 operand handling both use (device).
//
// TF32: operands rounded to TF32 (10 mantissa bits), products accumulated in fp32: ~1e-3 relative error.
// 3xTF32: each operand x split into hi = tf32(x) and lo = tf32(x - hi) and every product taken as
// lo·hi + hi·lo + hi·hi (the small terms first): hi + lo holds x to ~2^-22 and the dropped lo·lo is ~2^-22
// relative, so each product is good to ~2^-21 (fp32: 2^-24). An infinite operand gives NaN there (lo = inf - inf)
// where FFMA gives inf: no finite training step has one.
#include "kernels/cuda/runtime.cuh"
#include "kernels/device.h"

#include <mma.h>

#include <type_traits>

namespace dsk {

// A tile's arithmetic (a template argument of the kernels).
enum TileMath { kFfmaMath, kTf32Math, kTf32x3Math };

// ---- host: which arithmetic ---------------------------------------------------------------------------------------

// The arithmetic for a setting on this GPU (cuda::running_math; `key` names the setting in its error).
inline TileMath tile_math(cuda::Math chosen, const char* key) {
  switch (cuda::running_math(chosen, key)) {
    case cuda::Math::kTf32: return kTf32Math;
    case cuda::Math::kTf32x3: return kTf32x3Math;
    default: return kFfmaMath;
  }
}

// The arithmetic's name, as cuda::math_name spells it.
inline const char* tile_math_name(TileMath math) {
  switch (math) {
    case kFfmaMath: return cuda::math_name(cuda::Math::kFfma);
    case kTf32Math: return cuda::math_name(cuda::Math::kTf32);
    case kTf32x3Math: return cuda::math_name(cuda::Math::kTf32x3);
  }
  return "?";
}

// Calls f(std::integral_constant<int, MATH>{}) for the run-time choice `math`.
template <class F>
void with_tile_math(TileMath math, F&& f) {
  switch (math) {
    case kFfmaMath: f(std::integral_constant<int, kFfmaMath>{}); break;
    case kTf32Math: f(std::integral_constant<int, kTf32Math>{}); break;
    case kTf32x3Math: f(std::integral_constant<int, kTf32x3Math>{}); break;
  }
}

// ---- device: wmma m16n16k8 TF32 operands ---------------------------------------------------------------------------

// hi = TF32(x) in place, lo = TF32(x - hi).
template <class Frag>
__device__ __forceinline__ void split_tf32(Frag& hi, Frag& lo) {
#pragma unroll
  for (int t = 0; t < hi.num_elements; ++t) {
    const float x = hi.x[t];
    hi.x[t] = nvcuda::wmma::__float_to_tf32(x);
    lo.x[t] = nvcuda::wmma::__float_to_tf32(x - hi.x[t]);
  }
}
template <class Frag>
__device__ __forceinline__ void round_tf32(Frag& f) {
#pragma unroll
  for (int t = 0; t < f.num_elements; ++t) f.x[t] = nvcuda::wmma::__float_to_tf32(f.x[t]);
}

// A loaded operand made ready for kSplit (3xTF32: split into hi and lo) or not (TF32: rounded; lo unused).
template <bool kSplit, class Frag>
__device__ __forceinline__ void prepare_tf32(Frag& hi, Frag& lo) {
  if constexpr (kSplit)
    split_tf32(hi, lo);
  else
    round_tf32(hi);
}

// c += a · b in TF32 (one mma) or 3xTF32 (three: lo·hi, hi·lo, then hi·hi), operands from prepare_tf32.
template <bool kSplit, class FragC, class FragA, class FragB>
__device__ __forceinline__ void mma_tf32(FragC& c, const FragA& a, const FragA& a_lo, const FragB& b,
                                         const FragB& b_lo) {
  if constexpr (kSplit) {
    nvcuda::wmma::mma_sync(c, a_lo, b, c);
    nvcuda::wmma::mma_sync(c, a, b_lo, c);
  }
  nvcuda::wmma::mma_sync(c, a, b, c);
}

// ---- device: mma.sync m16n8k8 TF32 on registers (flash-attention-2's register-resident products) ---------------
// The fragments, per lane (g = lane / 4, t = lane % 4): A (16 x 8, row-major) a0 (g, t), a1 (g+8, t), a2 (g, t+4),
// a3 (g+8, t+4); B (8 x 8, "col": B(k, n)) b0 (t, g), b1 (t+4, g); C/D (16 x 8) c0 (g, 2t), c1 (g, 2t+1),
// c2 (g+8, 2t), c3 (g+8, 2t+1). The emulator runs the same layout (dsk_emu::mma_m16n8k8_tf32).

// d += a b, operands already TF32 (round_tf32_scalar / split_tf32_scalar).
__device__ __forceinline__ void mma_m16n8k8(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
#if defined(DSK_CUDA_EMULATOR)
  dsk_emu::mma_m16n8k8_tf32(d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
        "r"(__float_as_uint(a[3])), "r"(__float_as_uint(b[0])), "r"(__float_as_uint(b[1])));
#else
  __trap();  // compiled for an architecture below sm_80 (tile_math never picks a tensor-core form on such a GPU)
#endif
}

// A fragment's values made ready for kSplit (3xTF32: hi = tf32(x) in x, lo = tf32(x - hi)) or not (TF32: rounded).
template <bool kSplit, int N>
__device__ __forceinline__ void prepare_tf32(float (&hi)[N], float (&lo)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float x = hi[i];
    hi[i] = nvcuda::wmma::__float_to_tf32(x);
    if constexpr (kSplit) lo[i] = nvcuda::wmma::__float_to_tf32(x - hi[i]);
  }
}

// d += a b in TF32 (one mma) or 3xTF32 (lo·hi, hi·lo, then hi·hi), operands from prepare_tf32.
template <bool kSplit>
__device__ __forceinline__ void mma_tf32(float (&d)[4], const float (&a)[4], const float (&a_lo)[4],
                                         const float (&b)[2], const float (&b_lo)[2]) {
  if constexpr (kSplit) {
    mma_m16n8k8(d, a_lo, b);
    mma_m16n8k8(d, a, b_lo);
  }
  mma_m16n8k8(d, a, b);
}

}  // namespace dsk
