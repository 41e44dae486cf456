#pragma once
// exp(x) for x <= 0 as plain arithmetic, so softmax row loops vectorize: libm's expf is a call per element (GCC
// vectorizes it only under -ffast-math) and was the largest cost of the cross-entropy and attention loops.
// Shared by every CPU kernel that exponentiates shifted scores.
#include <bit>
#include <cstdint>

namespace dsk::cpu_math {

// exp(x) for x <= 0 (max-subtracted logits or scores), ~1 ulp, branch-free so the row loop vectorizes: glibc's expf is
// a scalar call unless the whole build uses -ffast-math, and the LM head's 1024 x 50257 exps were the
// cross-entropy's whole cost. Cephes' expf: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n put into the exponent.
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

}  // namespace dsk::cpu_math
