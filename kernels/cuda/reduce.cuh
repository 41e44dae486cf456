#pragma once
// Deterministic reductions shared by the CUDA kernel files: warp and block sums with a fixed combination order,
// and a two-stage column sum (parameter gradients such as db, LayerNorm's dw/db) that never uses float atomics.
// "Fixed order" means the result depends only on the shapes, not on scheduling: the same inputs give
// bit-identical sums on every run.
#include "kernels/cuda/runtime.cuh"

namespace dsk::cuda {

// Sum over the 32 lanes of a warp by a butterfly; every lane gets the same (order-fixed) result.
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds at least 32 T. Contains __syncthreads: call it from all threads of the block.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = lane < nwarps ? shared[lane] : T(0);
  return warp_sum(total);
}

// ---- two-stage column sums ------------------------------------------------------------------------------------
// out_k[c] += Σ_r f_k(r, c) for k < NOUT, r < R, c < C. Stage 1: block (32, 8) owns 32 columns and one chunk of
// kColChunkRows rows, each thread sums rows ty, ty+8, ... of its column in order, then the 8 partials are added
// in order; stage 2 adds the chunks' partials in chunk order. The chunking depends only on R, so the order is
// fixed. F is a functor: __device__ void operator()(int64_t r, int c, float (&acc)[NOUT]) adds f_k(r, c) to acc[k].

constexpr int kColTile = 32;
constexpr int kColRowsPerBlock = 8;
constexpr int kColChunkRows = 256;

template <int NOUT, class F>
__global__ void column_partials_kernel(float* __restrict__ partials, int64_t R, int C, F f) {
  DSK_SHARED(float, s, [NOUT][kColRowsPerBlock][kColTile + 1]);
  int tx = threadIdx.x, ty = threadIdx.y;
  int c = blockIdx.x * kColTile + tx;
  int64_t r0 = static_cast<int64_t>(blockIdx.y) * kColChunkRows;
  int64_t r1 = r0 + kColChunkRows < R ? r0 + kColChunkRows : R;
  float acc[NOUT];
#pragma unroll
  for (int k = 0; k < NOUT; ++k) acc[k] = 0.0f;
  if (c < C)
    for (int64_t r = r0 + ty; r < r1; r += kColRowsPerBlock) f(r, c, acc);
#pragma unroll
  for (int k = 0; k < NOUT; ++k) s[k][ty][tx] = acc[k];
  __syncthreads();
  if (ty == 0 && c < C) {
#pragma unroll
    for (int k = 0; k < NOUT; ++k) {
      float t = 0.0f;
#pragma unroll
      for (int j = 0; j < kColRowsPerBlock; ++j) t += s[k][j][tx];
      partials[(static_cast<int64_t>(blockIdx.y) * NOUT + k) * C + c] = t;
    }
  }
}

template <int NOUT>
struct ColumnOutputs {
  float* out[NOUT];  // each (C) or nullptr (not wanted)
};

template <int NOUT>
__global__ void column_finalize_kernel(ColumnOutputs<NOUT> outs, const float* __restrict__ partials, int chunks,
                                       int C) {
  int64_t total = static_cast<int64_t>(NOUT) * C;
  DSK_GRID_STRIDE(i, total) {
    int k = static_cast<int>(i / C), c = static_cast<int>(i % C);
    float* out = outs.out[k];
    if (!out) continue;
    float t = 0.0f;
    for (int p = 0; p < chunks; ++p) t += partials[(static_cast<int64_t>(p) * NOUT + k) * C + c];
    out[c] += t;
  }
}

// Launches both stages on stream(); partial sums live in scratch().
template <int NOUT, class F>
void column_sums_accumulate(ColumnOutputs<NOUT> outs, int64_t R, int C, F f) {
  DSK_CHECK(R > 0 && C > 0, "column sums: bad shape R={} C={}", R, C);
  int64_t chunks = ceil_div(R, kColChunkRows);
  DSK_CHECK(chunks <= 65535, "column sums: {} rows is more than one launch handles", R);
  float* partials = static_cast<float*>(scratch(sizeof(float) * static_cast<size_t>(chunks) * NOUT * C));
  dim3 block(kColTile, kColRowsPerBlock);
  dim3 grid(static_cast<unsigned>(ceil_div(C, kColTile)), static_cast<unsigned>(chunks));
  DSK_LAUNCH(grid, block, 0, column_partials_kernel<NOUT, F>)(partials, R, C, f);
  DSK_CUDA_CHECK_LAUNCH();
  DSK_LAUNCH(grid_for(int64_t(NOUT) * C, 256), 256, 0, column_finalize_kernel<NOUT>)(
      outs, partials, static_cast<int>(chunks), C);
  DSK_CUDA_CHECK_LAUNCH();
}

// The plain case: out (C) += Σ_r x[r, :] for x (R, C) row-major.
void column_sum_accumulate(float* out, const float* x, int64_t R, int C);

}  // namespace dsk::cuda
