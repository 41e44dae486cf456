// CUDA latent-KV projection c = LN_c(x · W_dkvᵀ) (kernels/latent.h; kernels/cpu/latent.cpp is the spec), fused.
//
// Forward, one kernel: a block owns 16 rows of x and ALL dc latent columns (dc <= 256), so the latent LayerNorm
// is the GEMM's epilogue: the row statistics are taken from the accumulators in registers, and c_raw, c, mean,
// rstd are written once. x is read once; c_raw never makes a round trip through memory before the LayerNorm.
//   8 warps x 2 rows; lane owns columns lane + 32 j (j < J, dc <= 32 J), so a row's reduction is one warp's
//   butterfly. K-steps of 32: x tile xs[16][32] (every lane of a warp reads the same element: a broadcast) and
//   W tile ws[32][32 J + 1] stored k-major (a warp's 32 consecutive k of one W row land on 32 banks thanks to
//   the +1; the reads ws[k][lane + 32 j] are consecutive). W (dc x d, 256 KB at most for the configs) is re-read
//   by every block from L2.
// Backward:
//   1. one kernel per 16 rows: the LayerNorm backward of each row (row-local: two warp sums) gives
//      d_raw = dLoss/dc_raw, kept in shared memory and written out, and the same block goes on to
//      dx = d_raw · W for its rows (thread t owns column t of a 256-column slice; each W element read from
//      L2 serves 16 rows). d_raw never has to be read back for dx.
//   2. dln_w, dln_b: the LayerNorm's deterministic column sums (kernels/cuda/layernorm.cu, dx skipped).
//   3. dW_dkv += d_rawᵀ · x: cuBLAS (kernels/cuda/matmul.cu), a reduction over all N rows that needs its own pass.
// The GEMMs here are fp32 FFMA regardless of the TF32 switch: they are small (N·d·dc), and the fusion, not the
// math rate, is what this op is for.
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/latent.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"

namespace dsk {

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 2;
constexpr int kRows = kWarps * kRowsPerWarp;  // rows of x per block
constexpr int kK = 32;                        // K-step
constexpr int kMaxLatent = 256;               // dc <= 32 * 8

// c_raw = x · Wᵀ, then LayerNorm per row from the registers. J = columns per lane (dc <= 32 J).
template <int J>
__global__ void __launch_bounds__(kThreads)
    latent_forward_kernel(float* __restrict__ c, float* __restrict__ c_raw, float* __restrict__ mean,
                          float* __restrict__ rstd, const float* __restrict__ x, const float* __restrict__ w,
                          const float* __restrict__ ln_w, const float* __restrict__ ln_b, int N, int d, int dc) {
  DSK_SHARED(float, xs, [kRows][kK]);
  DSK_SHARED(float, ws, [kK][32 * J + 1]);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;

  float acc[kRowsPerWarp][J];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int j = 0; j < J; ++j) acc[r][j] = 0.0f;

  for (int k0 = 0; k0 < d; k0 += kK) {
    __syncthreads();  // every warp is done with the previous step's tiles
    const int k = k0 + lane;
    for (int r = warp; r < kRows; r += kWarps) {
      const int64_t row = row0 + r;
      xs[r][lane] = (row < N && k < d) ? x[row * d + k] : 0.0f;
    }
    for (int col = warp; col < 32 * J; col += kWarps)
      ws[lane][col] = (col < dc && k < d) ? w[static_cast<int64_t>(col) * d + k] : 0.0f;
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kK; ++kk) {
      float wv[J];
#pragma unroll
      for (int j = 0; j < J; ++j) wv[j] = ws[kk][lane + 32 * j];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float xv = xs[warp * kRowsPerWarp + r][kk];
#pragma unroll
        for (int j = 0; j < J; ++j) acc[r][j] = fmaf(xv, wv[j], acc[r][j]);
      }
    }
  }

  // Epilogue: two-pass statistics (mean, then the centered variance), as kernels/cuda/layernorm.cu.
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + warp * kRowsPerWarp + r;
    if (row >= N) continue;  // the same for the whole warp: the shuffles below see full warps
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < J; ++j)
      if (lane + 32 * j < dc) s += acc[r][j];
    const float m = cuda::warp_sum(s) / dc;
    float v = 0.0f;
#pragma unroll
    for (int j = 0; j < J; ++j)
      if (lane + 32 * j < dc) {
        const float dev = acc[r][j] - m;
        v += dev * dev;
      }
    const float rs = 1.0f / sqrtf(cuda::warp_sum(v) / dc + kLayerNormEps);
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int col = lane + 32 * j;
      if (col >= dc) continue;
      c_raw[row * dc + col] = acc[r][j];
      c[row * dc + col] = (acc[r][j] - m) * rs * ln_w[col] + ln_b[col];
    }
    if (lane == 0) {
      mean[row] = m;
      rstd[row] = rs;
    }
  }
}

// d_raw (N, dc) = rstd (g - mean(g) - xhat mean(g xhat)), g = dc_out ln_w, xhat = (c_raw - mean) rstd;
// then dx (N, d) = d_raw · W when dx is not null.
template <int J>
__global__ void __launch_bounds__(kThreads)
    latent_backward_kernel(float* __restrict__ dx, float* __restrict__ d_raw, const float* __restrict__ dc_out,
                           const float* __restrict__ c_raw, const float* __restrict__ ln_w,
                           const float* __restrict__ mean, const float* __restrict__ rstd,
                           const float* __restrict__ w, int N, int d, int dc) {
  DSK_SHARED(float, ds, [kRows][32 * J]);  // this block's rows of d_raw; 0 past dc and past N
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int rr = warp * kRowsPerWarp + r;
    const int64_t row = row0 + rr;
    if (row >= N) {
#pragma unroll
      for (int j = 0; j < J; ++j) ds[rr][lane + 32 * j] = 0.0f;
      continue;
    }
    const float m = mean[row], rs = rstd[row];
    float g[J], xh[J], sg = 0.0f, sgx = 0.0f;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int col = lane + 32 * j;
      g[j] = col < dc ? dc_out[row * dc + col] * ln_w[col] : 0.0f;
      xh[j] = col < dc ? (c_raw[row * dc + col] - m) * rs : 0.0f;
      sg += g[j];
      sgx += g[j] * xh[j];
    }
    const float mean_g = cuda::warp_sum(sg) / dc, mean_gx = cuda::warp_sum(sgx) / dc;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int col = lane + 32 * j;
      const float v = col < dc ? rs * (g[j] - mean_g - xh[j] * mean_gx) : 0.0f;
      ds[rr][col] = v;
      if (col < dc) d_raw[row * dc + col] = v;
    }
  }
  if (dx == nullptr) return;  // the same for the whole block
  __syncthreads();

  // dx rows of this block: thread t owns column n0 + t; ds[rr][cc] is a broadcast, W's row cc a coalesced read.
  for (int n0 = 0; n0 < d; n0 += kThreads) {
    const int n = n0 + threadIdx.x;
    if (n >= d) break;
    float acc[kRows];
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr) acc[rr] = 0.0f;
    for (int cc = 0; cc < dc; ++cc) {
      const float wv = w[static_cast<int64_t>(cc) * d + n];
#pragma unroll
      for (int rr = 0; rr < kRows; ++rr) acc[rr] = fmaf(ds[rr][cc], wv, acc[rr]);
    }
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr)
      if (row0 + rr < N) dx[(row0 + rr) * d + n] = acc[rr];
  }
}

// Calls f(std::integral_constant<int, J>) with the smallest J in {1, 2, 4, 8} such that dc <= 32 J.
template <class F>
void with_lanes(int dc, F f) {
  DSK_CHECK(dc <= kMaxLatent, "latent projection: the CUDA kernel handles kv_latent_dim up to {}, got {}",
            kMaxLatent, dc);
  if (dc <= 32)
    f(std::integral_constant<int, 1>{});
  else if (dc <= 64)
    f(std::integral_constant<int, 2>{});
  else if (dc <= 128)
    f(std::integral_constant<int, 4>{});
  else
    f(std::integral_constant<int, 8>{});
}

}  // namespace

template <>
void latent_projection_forward<Backend::CUDA>(float* c, float* c_raw, float* mean, float* rstd, const float* x,
                                              const float* w_dkv, const float* ln_w, const float* ln_b, int N, int d,
                                              int dc) {
  check_latent_forward(N, d, dc, c_raw, mean, rstd);
  const unsigned blocks = static_cast<unsigned>(cuda::ceil_div(N, kRows));
  with_lanes(dc, [&](auto lanes) {
    DSK_LAUNCH(blocks, kThreads, 0, latent_forward_kernel<decltype(lanes)::value>)(
        c, c_raw, mean, rstd, x, w_dkv, ln_w, ln_b, N, d, dc);
  });
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void latent_projection_backward<Backend::CUDA>(float* dx, float* d_raw, float* dw_dkv, float* dln_w, float* dln_b,
                                               const float* dc_out, const float* x, const float* w_dkv,
                                               const float* c_raw, const float* ln_w, const float* mean,
                                               const float* rstd, int N, int d, int dc) {
  check_latent_backward(N, d, dc, d_raw);
  const unsigned blocks = static_cast<unsigned>(cuda::ceil_div(N, kRows));
  with_lanes(dc, [&](auto lanes) {
    DSK_LAUNCH(blocks, kThreads, 0, latent_backward_kernel<decltype(lanes)::value>)(
        dx, d_raw, dc_out, c_raw, ln_w, mean, rstd, w_dkv, N, d, dc);
  });
  DSK_CUDA_CHECK_LAUNCH();
  // dx = nullptr: only the parameter gradients' column sums.
  layernorm_backward<Backend::CUDA>(nullptr, dln_w, dln_b, dc_out, c_raw, ln_w, mean, rstd, N, dc);
  linear_backward<Backend::CUDA>(nullptr, dw_dkv, nullptr, d_raw, x, w_dkv, N, d, dc);
}

}  // namespace dsk
