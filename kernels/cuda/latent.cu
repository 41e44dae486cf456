// CUDA latent-KV projection, first version: the W_dkv GEMM through cuBLAS (linear_forward / linear_backward) and
// the latent LayerNorm kernels of kernels/cuda/layernorm.cu, in sequence. Not yet one fused kernel: c_raw makes a
// round trip through device memory (N x dc floats, small next to x). A fused GEMM + LayerNorm epilogue (one CTA
// owning whole latent rows, dc <= 256) is later work; this op boundary is where it goes.
#include "kernels/cuda/runtime.cuh"
#include "kernels/latent.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"

#include <mutex>

namespace dsk {

namespace {

// dLoss/dc_raw (N, dc) between the two backward steps. Not cuda::scratch(): layernorm_backward takes scratch for
// its column sums, which may reallocate it. Grow-only, kept for the process like scratch.
float* dc_raw_buffer(size_t floats) {
  static std::mutex mutex;
  static float* buffer = nullptr;
  static size_t capacity = 0;
  std::lock_guard<std::mutex> lock(mutex);
  if (floats > capacity) {
    if (buffer) DSK_CUDA_CHECK(cudaFree(buffer));  // synchronizes: no queued kernel still uses it
    buffer = nullptr;
    DSK_CUDA_CHECK(cudaMalloc(&buffer, floats * sizeof(float)));
    capacity = floats;
  }
  return buffer;
}

}  // namespace

template <>
void latent_projection_forward<Backend::CUDA>(float* c, float* c_raw, float* mean, float* rstd, const float* x,
                                              const float* w_dkv, const float* ln_w, const float* ln_b, int N, int d,
                                              int dc) {
  DSK_CHECK(N > 0 && d > 0 && dc > 0, "latent_projection_forward: bad shape N={} d={} dc={}", N, d, dc);
  DSK_CHECK(c_raw && mean && rstd, "latent_projection_forward: c_raw, mean and rstd are needed for backward");
  linear_forward<Backend::CUDA>(c_raw, x, w_dkv, nullptr, N, d, dc);
  layernorm_forward<Backend::CUDA>(c, mean, rstd, c_raw, ln_w, ln_b, N, dc);
}

template <>
void latent_projection_backward<Backend::CUDA>(float* dx, float* dw_dkv, float* dln_w, float* dln_b,
                                               const float* dc_out, const float* x, const float* w_dkv,
                                               const float* c_raw, const float* ln_w, const float* mean,
                                               const float* rstd, int N, int d, int dc) {
  DSK_CHECK(N > 0 && d > 0 && dc > 0, "latent_projection_backward: bad shape N={} d={} dc={}", N, d, dc);
  float* dc_raw = dc_raw_buffer(static_cast<size_t>(N) * dc);
  layernorm_backward<Backend::CUDA>(dc_raw, dln_w, dln_b, dc_out, c_raw, ln_w, mean, rstd, N, dc);
  linear_backward<Backend::CUDA>(dx, dw_dkv, nullptr, dc_raw, x, w_dkv, N, d, dc);
}

}  // namespace dsk
