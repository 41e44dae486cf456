#pragma once
// The reproducible random numbers of dropout and router noise: a counter-based generator (Philox-4x32-10)
// keyed by (seed, site) and indexed by the element, so the CPU and the GPU draw the same number for the same
// element in any order, and backward regenerates a dropout mask instead of storing it.
//   seed: the run's seed; site: which use (see make_site); index: the element's flat index.
#include <cstdint>

#if defined(__CUDACC__)
#define DSK_HD __host__ __device__ __forceinline__
#else
#define DSK_HD inline
#endif

namespace dsk::rng {

// Packs (step, layer, kind) into a 64-bit site so different uses never share a stream.
// kind: 0 embedding dropout, 1 attention-probability dropout, 2 attention output (W_o) dropout,
//       3 routed-expert output dropout (indexed by permuted row), 5 shared-expert output dropout,
//       4 router noise; 6.. free for later uses.
DSK_HD uint64_t make_site(uint64_t step, uint32_t layer, uint32_t kind) {
  return (step << 24) ^ (static_cast<uint64_t>(layer) << 8) ^ kind;
}

struct Philox4 {
  uint32_t v[4];
};

// Philox-4x32 with 10 rounds (Salmon et al. 2011), counter = (index lo, index hi, site lo, site hi), key = seed.
DSK_HD Philox4 philox(uint64_t seed, uint64_t site, uint64_t index) {
  uint32_t c0 = static_cast<uint32_t>(index), c1 = static_cast<uint32_t>(index >> 32);
  uint32_t c2 = static_cast<uint32_t>(site), c3 = static_cast<uint32_t>(site >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = static_cast<uint32_t>(p1);
    uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 bits, exactly representable in float: identical on every backend.
DSK_HD float uniform(uint64_t seed, uint64_t site, uint64_t index) {
  return static_cast<float>(philox(seed, site, index).v[0] >> 8) * (1.0f / 16777216.0f);
}

// Dropout's keep decision for one element (keep with probability 1 - p).
DSK_HD bool keep(uint64_t seed, uint64_t site, uint64_t index, float p) { return uniform(seed, site, index) >= p; }

// Standard normal by Box-Muller on two 24-bit uniforms. Uses float math; CPU and GPU agree to a few ulp
// (logf/cosf differ slightly between libm and CUDA), which the tests allow for.
DSK_HD float normal(uint64_t seed, uint64_t site, uint64_t index) {
  Philox4 r = philox(seed, site, index);
  float u1 = (static_cast<float>(r.v[0] >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
  float u2 = static_cast<float>(r.v[1] >> 8) * (1.0f / 16777216.0f);
#if defined(__CUDA_ARCH__)
  return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
#else
  return __builtin_sqrtf(-2.0f * __builtin_logf(u1)) * __builtin_cosf(6.283185307179586f * u2);
#endif
}

}  // namespace dsk::rng
