// CPU token + learned absolute position embedding.
#include "kernels/embedding.h"

#include <algorithm>

namespace dsk {

namespace {
// Position of token (b, t): the given position, else t.
inline int position_of(const int32_t* positions, int b, int t, int T) {
  return positions ? positions[static_cast<long long>(b) * T + t] : t;
}
}  // namespace

template <>
void embedding_forward<Backend::CPU>(float* out, const int32_t* tokens, const int32_t* positions, const float* wte,
                                     const float* wpe, int Bsz, int T, int d) {
  DSK_CHECK(Bsz > 0 && T > 0 && d > 0, "embedding_forward: bad shape Bsz={} T={} d={}", Bsz, T, d);
  const long long n_tok = static_cast<long long>(Bsz) * T;
  // Checked before the parallel loop: an exception must not leave an OpenMP region. The contract passes neither
  // V nor ctx here, so only the lower bound can be checked; the caller validates the upper bounds.
  for (long long i = 0; i < n_tok; ++i) {
    DSK_CHECK(tokens[i] >= 0, "embedding_forward: negative token id {} at {}", tokens[i], i);
    if (positions) DSK_CHECK(positions[i] >= 0, "embedding_forward: negative position {} at {}", positions[i], i);
  }
#pragma omp parallel for schedule(static)
  for (long long i = 0; i < n_tok; ++i) {
    const int b = static_cast<int>(i / T), t = static_cast<int>(i % T);
    const float* te = wte + static_cast<long long>(tokens[i]) * d;
    const float* pe = wpe + static_cast<long long>(position_of(positions, b, t, T)) * d;
    float* o = out + i * d;
#pragma omp simd
    for (int c = 0; c < d; ++c) o[c] = te[c] + pe[c];
  }
}

template <>
void embedding_backward<Backend::CPU>(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                                      const int32_t* positions, int Bsz, int T, int d, int V) {
  DSK_CHECK(Bsz > 0 && T > 0 && d > 0 && V > 0, "embedding_backward: bad shape Bsz={} T={} d={} V={}", Bsz, T, d, V);
  const long long n_tok = static_cast<long long>(Bsz) * T;
  for (long long i = 0; i < n_tok; ++i) {
    DSK_CHECK(tokens[i] >= 0 && tokens[i] < V, "embedding_backward: token id {} at {} outside [0, {})", tokens[i], i,
              V);
    if (positions) DSK_CHECK(positions[i] >= 0, "embedding_backward: negative position {} at {}", positions[i], i);
  }
  // Repeated tokens scatter into the same row, so tokens cannot be split between threads. Threads own disjoint
  // column blocks of d instead and walk the tokens in order: no races, and every element sums in token order
  // whatever the thread count (deterministic).
  constexpr int kBlock = 32;
  const int nblocks = (d + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < nblocks; ++blk) {
    const int c0 = blk * kBlock, c1 = std::min(d, c0 + kBlock);
    for (long long i = 0; i < n_tok; ++i) {
      const int b = static_cast<int>(i / T), t = static_cast<int>(i % T);
      const float* g = dout + i * d;
      if (dwte) {
        float* te = dwte + static_cast<long long>(tokens[i]) * d;
#pragma omp simd
        for (int c = c0; c < c1; ++c) te[c] += g[c];
      }
      if (dwpe) {
        float* pe = dwpe + static_cast<long long>(position_of(positions, b, t, T)) * d;
#pragma omp simd
        for (int c = c0; c < c1; ++c) pe[c] += g[c];
      }
    }
  }
}

}  // namespace dsk
