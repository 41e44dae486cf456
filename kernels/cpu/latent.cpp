// CPU latent-KV projection (the specification for kernels/cuda/latent.cu): composed from the CPU linear layer and
// LayerNorm, nothing new.
#include "kernels/latent.h"

#include "kernels/layernorm.h"
#include "kernels/matmul.h"

namespace dsk {

template <>
void latent_projection_forward<Backend::CPU>(float* c, float* c_raw, float* mean, float* rstd, const float* x,
                                             const float* w_dkv, const float* ln_w, const float* ln_b, int N, int d,
                                             int dc) {
  DSK_CHECK(N > 0 && d > 0 && dc > 0, "latent_projection_forward: bad shape N={} d={} dc={}", N, d, dc);
  DSK_CHECK(c_raw && mean && rstd, "latent_projection_forward: c_raw, mean and rstd are needed for backward");
  linear_forward<Backend::CPU>(c_raw, x, w_dkv, nullptr, N, d, dc);
  layernorm_forward<Backend::CPU>(c, mean, rstd, c_raw, ln_w, ln_b, N, dc);
}

template <>
void latent_projection_backward<Backend::CPU>(float* dx, float* d_raw, float* dw_dkv, float* dln_w, float* dln_b,
                                              const float* dc_out, const float* x, const float* w_dkv,
                                              const float* c_raw, const float* ln_w, const float* mean,
                                              const float* rstd, int N, int d, int dc) {
  DSK_CHECK(N > 0 && d > 0 && dc > 0, "latent_projection_backward: bad shape N={} d={} dc={}", N, d, dc);
  DSK_CHECK(d_raw != nullptr, "latent_projection_backward: d_raw (N, dc) is needed");
  layernorm_backward<Backend::CPU>(d_raw, dln_w, dln_b, dc_out, c_raw, ln_w, mean, rstd, N, dc);
  linear_backward<Backend::CPU>(dx, dw_dkv, nullptr, d_raw, x, w_dkv, N, d, dc);
}

}  // namespace dsk
