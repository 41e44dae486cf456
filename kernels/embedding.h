#pragma once
// Token + learned absolute position embedding.
#include "kernels/backend.h"

namespace dsk {

// out (Bsz, T, d) = wte[tokens[b,t]] + wpe[pos(b,t)];  tokens (Bsz, T) in [0, V);  wte (V, d);  wpe (ctx, d).
// pos(b,t) = positions[b*T + t] when positions is given, else t.
template <Backend B>
void embedding_forward(float* out, const int32_t* tokens, const int32_t* positions, const float* wte,
                       const float* wpe, int Bsz, int T, int d);

// dwte[tokens[b,t]] += dout[b,t];  dwpe[pos(b,t)] += dout[b,t]  (accumulate; deterministic order on every backend)
template <Backend B>
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, const int32_t* positions,
                        int Bsz, int T, int d, int V);

}  // namespace dsk
