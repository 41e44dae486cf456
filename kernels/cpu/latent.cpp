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
  check_latent_forward(N, d, dc, c_raw, mean, rstd);
  linear_forward<Backend::CPU>(c_raw, x, w_dkv, nullptr, N, d, dc);
  layernorm_forward<Backend::CPU>(c, mean, rstd, c_raw, ln_w, ln_b, N, dc);
}

template <>
void latent_projection_backward<Backend::CPU>(float* dx, float* d_raw, float* dw_dkv, float* dln_w, float* dln_b,
                                              const float* dc_out, const float* x, const float* w_dkv,
                                              const float* c_raw, const float* ln_w, const float* mean,
                                              const float* rstd, int N, int d, int dc) {
  check_latent_backward(N, d, dc, d_raw);
  layernorm_backward<Backend::CPU>(d_raw, dln_w, dln_b, dc_out, c_raw, ln_w, mean, rstd, N, dc);
  linear_backward<Backend::CPU>(dx, dw_dkv, nullptr, d_raw, x, w_dkv, N, d, dc);
}

}  // namespace dsk
