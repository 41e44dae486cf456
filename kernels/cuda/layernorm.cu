// LayerNorm on the GPU: one warp per row for the row-wise work (statistics, normalization, dx), and the
// deterministic two-stage column sum of kernels/cuda/reduce.cuh for the parameter gradients dw and db.
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/layernorm.h"

namespace dsk {

namespace {

constexpr int kWarpsPerBlock = 4;  // rows per block
constexpr int kThreads = kWarpsPerBlock * 32;

// x, y (N, C); mean, rstd (N), either may be nullptr; b may be nullptr (no shift).
// Two passes over the row (the second hits L1/L2): mean, then the centered variance, as the CPU does, which is
// more accurate than E[x²] - mean².
__global__ void layernorm_forward_kernel(float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                                         const float* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ b, int N, int C) {
  int lane = threadIdx.x & 31;
  int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;  // whole warps leave together: the shuffles below see full warps
  const float* xr = x + row * C;
  float s = 0.0f;
  for (int c = lane; c < C; c += 32) s += xr[c];
  float m = cuda::warp_sum(s) / C;
  float v = 0.0f;
  for (int c = lane; c < C; c += 32) {
    float d = xr[c] - m;
    v += d * d;
  }
  float var = cuda::warp_sum(v) / C;
  float rs = 1.0f / sqrtf(var + kLayerNormEps);
  float* yr = y + row * C;
  for (int c = lane; c < C; c += 32) yr[c] = (xr[c] - m) * rs * w[c] + (b ? b[c] : 0.0f);
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = rs;
  }
}

// dx (N, C) = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),  g = dy * w,  xhat = (x - mean) * rstd.
__global__ void layernorm_backward_dx_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                             const float* __restrict__ x, const float* __restrict__ w,
                                             const float* __restrict__ mean, const float* __restrict__ rstd, int N,
                                             int C) {
  int lane = threadIdx.x & 31;
  int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const float* xr = x + row * C;
  const float* dyr = dy + row * C;
  float m = mean[row], rs = rstd[row];
  float sg = 0.0f, sgx = 0.0f;
  for (int c = lane; c < C; c += 32) {
    float g = dyr[c] * w[c];
    sg += g;
    sgx += g * (xr[c] - m) * rs;
  }
  float mean_g = cuda::warp_sum(sg) / C;
  float mean_gx = cuda::warp_sum(sgx) / C;
  float* dxr = dx + row * C;
  for (int c = lane; c < C; c += 32) {
    float xhat = (xr[c] - m) * rs;
    dxr[c] = rs * (dyr[c] * w[c] - mean_g - xhat * mean_gx);
  }
}

// acc[0] += dy * xhat (→ dw), acc[1] += dy (→ db)
struct LayerNormParamGrads {
  const float *dy, *x, *mean, *rstd;
  int C;
  __device__ void operator()(int64_t r, int c, float (&acc)[2]) const {
    float g = dy[r * C + c];
    acc[0] += g * (x[r * C + c] - mean[r]) * rstd[r];
    acc[1] += g;
  }
};

}  // namespace

template <>
void layernorm_forward<Backend::CUDA>(float* y, float* mean, float* rstd, const float* x, const float* w,
                                      const float* b, int N, int C) {
  DSK_CHECK(N > 0 && C > 0, "layernorm_forward: bad shape N={} C={}", N, C);
  unsigned blocks = static_cast<unsigned>(cuda::ceil_div(N, kWarpsPerBlock));
  DSK_LAUNCH(blocks, kThreads, 0, layernorm_forward_kernel)(y, mean, rstd, x, w, b, N, C);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void layernorm_backward<Backend::CUDA>(float* dx, float* dw, float* db, const float* dy, const float* x,
                                       const float* w, const float* mean, const float* rstd, int N, int C) {
  DSK_CHECK(N > 0 && C > 0, "layernorm_backward: bad shape N={} C={}", N, C);
  if (dx) {
    unsigned blocks = static_cast<unsigned>(cuda::ceil_div(N, kWarpsPerBlock));
    DSK_LAUNCH(blocks, kThreads, 0, layernorm_backward_dx_kernel)(dx, dy, x, w, mean, rstd, N, C);
    DSK_CUDA_CHECK_LAUNCH();
  }
  if (dw || db)
    cuda::column_sums_accumulate<2>(cuda::ColumnOutputs<2>{{dw, db}}, N, C, LayerNormParamGrads{dy, x, mean, rstd, C});
}

}  // namespace dsk
