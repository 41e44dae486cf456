#pragma once
// The fused latent-KV projection of MLA: the shared latent every head attends to (and the only thing the KV cache
// keeps) is   c = LN_c(x · W_dkvᵀ).   One op for the GEMM and the latent LayerNorm, so a backend can fuse them
// (kernels/cuda/latent.cu does: one pass over x's tile with the LayerNorm as the GEMM's epilogue).
#include "kernels/backend.h"

namespace dsk {

// x (N, d) · w_dkv (dc, d)ᵀ = c_raw (N, dc) (saved for backward);  c (N, dc) = LayerNorm(c_raw; ln_w, ln_b (dc))
// with mean, rstd (N) saved (kernels/layernorm.h semantics, eps kLayerNormEps). All outputs are set.
template <Backend B>
void latent_projection_forward(float* c, float* c_raw, float* mean, float* rstd, const float* x, const float* w_dkv,
                               const float* ln_w, const float* ln_b, int N, int d, int dc);

// dc_out (N, dc) = dLoss/dc.  d_raw (N, dc) = dLoss/dc_raw is set (the caller's buffer: the weight gradient is
// computed from it, and a kernel keeps no hidden allocation). dx (N, d) is set (skipped when nullptr); dw_dkv
// (dc, d), dln_w, dln_b (dc) accumulate. Needs the forward's c_raw, mean, rstd.
template <Backend B>
void latent_projection_backward(float* dx, float* d_raw, float* dw_dkv, float* dln_w, float* dln_b,
                                const float* dc_out, const float* x, const float* w_dkv, const float* c_raw,
                                const float* ln_w, const float* mean, const float* rstd, int N, int d, int dc);

// The argument checks both backends make.
inline void check_latent_forward(int N, int d, int dc, const float* c_raw, const float* mean, const float* rstd) {
  DSK_CHECK(N > 0 && d > 0 && dc > 0, "latent_projection_forward: bad shape N={} d={} dc={}", N, d, dc);
  DSK_CHECK(c_raw && mean && rstd, "latent_projection_forward: c_raw, mean and rstd are needed for backward");
}
inline void check_latent_backward(int N, int d, int dc, const float* d_raw) {
  DSK_CHECK(N > 0 && d > 0 && dc > 0, "latent_projection_backward: bad shape N={} d={} dc={}", N, d, dc);
  DSK_CHECK(d_raw != nullptr, "latent_projection_backward: d_raw (N, dc) is needed");
}

}  // namespace dsk
