// CUDA expert FFN over the permuted segments (kernels/moe.h); kernels/cpu/expert_ffn.cpp is the specification.
//
// Grouped GEMMs with the segment offsets read from device memory (no host synchronisation):
//   forward   h = relu(xp · w1[e]ᵀ + b1[e])          grouped_gemm<B = Wᵀ,  bias + ReLU epilogue>
//             y = h · w2[e]ᵀ + b2[e]                 grouped_gemm<B = Wᵀ,  bias epilogue>
//   backward  dh = (dy · w2[e]) ⊙ (h > 0)            grouped_gemm<B = W,   ReLU-mask epilogue>
//             dxp = dh · w1[e]                       grouped_gemm<B = W,   plain store>
//             dw2[e] += dyᵀ h, db2[e] += Σ dy        weight_grad (bias sum fused into the first column tile)
//             dw1[e] += dhᵀ xp, db1[e] += Σ dh       weight_grad
//
// The row-grouped GEMMs (forward, dh, dxp): the M rows are split into tiles that never straddle two experts:
// expert e owns ceil(m_e / BM) consecutive tiles. The grid is launched for the upper bound ceil(M/BM) + E tiles
// (known on the host without reading offsets); block t finds its (expert, first row) from the offsets with one warp
// (a prefix sum of the per-expert tile counts, 32 experts per step) and blocks past the last tile exit.
// The weight gradients: block (tile of dW[e], e) loops over expert e's rows in order, so each dW element is one
// thread's sequential sum: deterministic, no atomics, no split-K.
//
// The tile GEMM is classic fp32 SIMT: 256 threads (16 x 16), each owning a (4·RM) x (4·RN) register tile spread as
// RM x RN blocks of 4 x 4 (rows ty*4 + 64·h, columns tx*4 + 64·h, so the shared-memory reads are conflict-free
// float4s); tiles BM x BN = 64·RM x 64·RN, K-step BK; shared memory holds the A and B tiles k-major
// (As[BK][BM + 4], Bs[BK][BN + 4], 8.4-8.7 KB per pair) in two pairs: the next K-step's global loads are issued
// into registers before the current step's FMAs and stored into the other pair after them, so a K-step costs one
// barrier and no thread waits at a barrier between its stores and its FMAs. Two configurations: 128 x 128 x 8
// (8 x 8 per thread) when the launch has enough tiles to fill the GPU twice, else 64 x 64 x 16 (4 x 4 per thread).
// Measured on an H200 (2026-12-01, dsk bench moe, with one pair and two barriers per K-step then): 42-50% of
// cuBLAS's fp32 SGEMM rate at the default config's shapes, 64-67% at the large config's.
//
// With TF32 on (cuda::set_tf32, the `tf32` training key; or cuda::Math::kTf32 / kTf32x3 via cuda::set_expert_math,
// which takes precedence) the same kernels take a tensor-core tile of the same size instead (tile_gemm_mma): the
// 8 warps' products are mma.sync m16n8k8 in TF32 or 3xTF32 (kernels/cuda/tensor_math.cuh: near-fp32 at three
// tensor-core products per one) with fragments read straight from the k-major tiles (rows padded by 8:
// conflict-free) and accumulators kept in registers through the epilogue (TileLayout says where each lies);
// the loads, the tile scheduling, the epilogues and the determinism are the FFMA tile's. The first tensor-core tiles
// (wmma m16n16k8, 8-deep K-steps, the result staged through shared memory back into the FFMA layout) reached only
// 8-17% of cuBLAS's TF32 rate on the H200 and lost to the FFMA tiles in 3xTF32, so fp32 keeps FFMA by default; the
// register-fragment tiles await a GPU run.
// cuda::set_expert_tile forces one tile size (tests run both on any device; `dsk bench moe` times both).
// Follow-ups: cp.async/TMA multi-stage loads and bigger tensor-core tiles (wgmma), which is where the H200's
// speed is.
#include "kernels/cuda/runtime.cuh"
#include "kernels/cuda/tensor_math.cuh"
#include "kernels/moe.h"

#include <type_traits>

namespace dsk {

namespace {

constexpr int kThreads = 256;  // 16 x 16

// PAD: the shared rows' padding (floats). 4 for the FFMA tiles: rows stay 16-byte aligned and the k-major stores
// spread over the banks. 8 for the tensor-core tiles: a fragment reads (k = tq, row gq) of a k-major tile, i.e.
// words 8 tq + gq (mod 32) at a stride of BM + 8: all 32 banks. The price: the k-major stores of a K-contiguous
// source (bank 8 kk + i) meet 2-way (BK 8) or 4-way (BK 16) conflicts, once per element and K-step, against the
// fragment reads' once per warp column; a swizzle would avoid both (to weigh once a GPU run has timed these tiles).
template <int RM_, int RN_, int BK_, int PAD_ = 4>
struct TileCfg {
  static constexpr int RM = RM_, RN = RN_, BK = BK_, PAD = PAD_;
  static constexpr int BM = 64 * RM, BN = 64 * RN;
  static constexpr int SA = BM + PAD, SB = BN + PAD;  // shared row strides (floats)
  static constexpr int TM = 4 * RM, TN = 4 * RN;      // FFMA register tile
  static constexpr int LA = BM * BK / kThreads;       // A elements each thread loads per K-step
  static constexpr int LB = BN * BK / kThreads;
  static_assert(BM * BK % kThreads == 0 && BN * BK % kThreads == 0, "whole loads per thread");
};
using BigTile = TileCfg<2, 2, 8>;     // 128 x 128, 8 x 8 per thread
using SmallTile = TileCfg<1, 1, 16>;  // 64 x 64, 4 x 4 per thread
// The same sizes on the tensor cores, padding 8. K-steps: 16 for 64 x 64; 8 for 128 x 128, whose 64 accumulators
// per thread spilled 44-188 bytes at 16 under the 128-register cap of two blocks per SM (4-12 at 8).
template <class Cfg>
using TensorCoreTile = TileCfg<Cfg::RM, Cfg::RN, Cfg::RM == 2 ? 8 : 16, 8>;

// ---- one output tile: acc = A (m_valid x K) · B (K x n_valid), zero-padded to BM x BN -------------------------
// A_KC: A(i, kk) = A[i*lda + kk] (rows K-contiguous, activations) else A[kk*lda + i] (a transposed view).
// B_KC: B(kk, j) = B[j*ldb + kk] (a weight used as Wᵀ)            else B[kk*ldb + j].
// with_rowsum: threads tid < BM also return rowsum = Σ_kk A(tid, kk) in K order (the fused bias gradient).

// Streams A and B through the k-major shared tiles As[BK][BM + PAD], Bs[BK][BN + PAD], one K-step at a time, and
// calls step(As_s, Bs_s) once per complete pair of tiles. As and Bs hold two such pairs: the next K-step's global
// loads go to registers before this step's math and are stored into the other pair after it, so a K-step costs
// one barrier and no thread waits at a barrier between its stores and its math. Returns the row sum (see
// with_rowsum). Shared by the FFMA and the tensor-core tiles.
template <class Cfg, bool A_KC, bool B_KC, class Step>
__device__ __forceinline__ float stream_tiles(const float* __restrict__ A, int lda, int m_valid,
                                              const float* __restrict__ B, int ldb, int n_valid, int K, float* As,
                                              float* Bs, bool with_rowsum, Step step) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK;
  constexpr int SA = Cfg::SA, SB = Cfg::SB;
  const int tid = threadIdx.x;
  float ra[Cfg::LA], rb[Cfg::LB];
  // Global -> registers for the K-step starting at k0; out-of-range elements are 0 (they add nothing).
  auto load = [&](int k0) {
#pragma unroll
    for (int l = 0; l < Cfg::LA; ++l) {
      const int idx = tid + l * kThreads;
      const int i = A_KC ? idx / BK : idx % BM;
      const int kk = A_KC ? idx % BK : idx / BM;
      const int k = k0 + kk;
      ra[l] = (i < m_valid && k < K)
                  ? (A_KC ? A[static_cast<int64_t>(i) * lda + k] : A[static_cast<int64_t>(k) * lda + i])
                  : 0.0f;
    }
#pragma unroll
    for (int l = 0; l < Cfg::LB; ++l) {
      const int idx = tid + l * kThreads;
      const int j = B_KC ? idx / BK : idx % BN;
      const int kk = B_KC ? idx % BK : idx / BN;
      const int k = k0 + kk;
      rb[l] = (j < n_valid && k < K)
                  ? (B_KC ? B[static_cast<int64_t>(j) * ldb + k] : B[static_cast<int64_t>(k) * ldb + j])
                  : 0.0f;
    }
  };
  // Registers -> shared pair `s`, k-major: As_s[kk][i], Bs_s[kk][j].
  auto store = [&](int s) {
    float* As_s = As + s * BK * SA;
    float* Bs_s = Bs + s * BK * SB;
#pragma unroll
    for (int l = 0; l < Cfg::LA; ++l) {
      const int idx = tid + l * kThreads;
      const int i = A_KC ? idx / BK : idx % BM;
      const int kk = A_KC ? idx % BK : idx / BM;
      As_s[kk * SA + i] = ra[l];
    }
#pragma unroll
    for (int l = 0; l < Cfg::LB; ++l) {
      const int idx = tid + l * kThreads;
      const int j = B_KC ? idx / BK : idx % BN;
      const int kk = B_KC ? idx % BK : idx / BN;
      Bs_s[kk * SB + j] = rb[l];
    }
  };
  // This K-step's math on pair s: the row sum in K order, then step().
  float rs = 0.0f;
  auto compute = [&](int s) {
    const float* As_s = As + s * BK * SA;
    if (with_rowsum && tid < BM)
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) rs += As_s[kk * SA + tid];
    step(As_s, Bs + s * BK * SB);
  };

  load(0);
  store(0);
  __syncthreads();  // pair 0 complete
  int s = 0;
  for (int k0 = 0; k0 < K; k0 += BK, s ^= 1) {
    const bool more = k0 + BK < K;
    if (more) load(k0 + BK);  // next step's global loads overlap this step's math
    compute(s);
    // Pair s ^ 1 was last read in the previous K-step, which every thread finished before the barrier ending it.
    if (more) store(s ^ 1);
    __syncthreads();  // pair s ^ 1 complete; every thread is done with pair s
  }
  return rs;
}

// The FFMA tile: each thread's (4 RM) x (4 RN) register block, float4 reads of the shared tiles.
template <class Cfg, bool A_KC, bool B_KC>
__device__ __forceinline__ void tile_gemm(float (&acc)[Cfg::TM][Cfg::TN], const float* __restrict__ A, int lda,
                                          int m_valid, const float* __restrict__ B, int ldb, int n_valid, int K,
                                          float* As, float* Bs, bool with_rowsum, float& rowsum) {
  constexpr int BK = Cfg::BK, SA = Cfg::SA, SB = Cfg::SB;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int a = 0; a < Cfg::TM; ++a)
#pragma unroll
    for (int b = 0; b < Cfg::TN; ++b) acc[a][b] = 0.0f;
  rowsum = stream_tiles<Cfg, A_KC, B_KC>(A, lda, m_valid, B, ldb, n_valid, K, As, Bs, with_rowsum,
                                         [&](const float* As, const float* Bs) {
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[Cfg::TM], b[Cfg::TN];
#pragma unroll
      for (int h = 0; h < Cfg::RM; ++h) {
        const float4 v = *reinterpret_cast<const float4*>(&As[kk * SA + h * 64 + ty * 4]);
        a[4 * h] = v.x, a[4 * h + 1] = v.y, a[4 * h + 2] = v.z, a[4 * h + 3] = v.w;
      }
#pragma unroll
      for (int h = 0; h < Cfg::RN; ++h) {
        const float4 v = *reinterpret_cast<const float4*>(&Bs[kk * SB + h * 64 + tx * 4]);
        b[4 * h] = v.x, b[4 * h + 1] = v.y, b[4 * h + 2] = v.z, b[4 * h + 3] = v.w;
      }
#pragma unroll
      for (int x = 0; x < Cfg::TM; ++x)
#pragma unroll
        for (int y = 0; y < Cfg::TN; ++y) acc[x][y] = fmaf(a[x], b[y], acc[x][y]);
    }
  });
}

// ---- the same tiles on the tensor cores (TF32, or 3xTF32 with kSplit) ----------------------------------------------
// Loads through stream_tiles as tile_gemm (same k-major shared tiles, same rowsum; rows padded by 8).
// The 8 warps form a 4 x 2 grid over the BM x BN tile: warp w owns the WM x WN block (WM = BM / 4, WN = BN / 2) at
// rows WM (w / 2), columns WN (w % 2), as FM x FN mma.sync m16n8k8 accumulators (FM = WM / 16, FN = WN / 8:
// 128 x 128: 2 x 8, 64 x 64: 1 x 4) kept in registers to the epilogue, each A fragment serving FN products. In the
// k-major tiles A(i, kk) = As[kk][i] and B(kk, j) = Bs[kk][j]: a lane (gq = lane / 4, tq = lane % 4) reads A rows
// gq, gq + 8 and B column gq at k = tq, tq + 4 (PTX's m16n8k8 .tf32 fragments, as attention_mma.cuh).
// kSplit: 3xTF32 (prepare_tf32 / mma_tf32 in tensor_math.cuh).
template <class Cfg>
struct MmaShape {
  static constexpr int WM = Cfg::BM / 4, WN = Cfg::BN / 2, FM = WM / 16, FN = WN / 8;
  static_assert(WM % 16 == 0 && WN % 8 == 0 && Cfg::BK % 8 == 0, "m16n8k8 tiling");
};

// Where the thread's register element (x, y) of a finished tile lies in it (tile-local row and column), per
// arithmetic: the FFMA tile's (4 RM) x (4 RN) blocks (rows ty*4 + 64·h, columns tx*4 + 64·h), or the tensor-core
// tile's fragments (x = 2 i + half: fragment row block i, rows gq (+ 8); y = 2 j + e: fragment column block j,
// column 2 tq + e). The epilogues read acc[x][y] through these.
template <class Cfg, int MATH>
struct TileLayout {
  static constexpr bool kFfma = MATH == kFfmaMath;
  using Shape = MmaShape<Cfg>;
  static constexpr int TM = kFfma ? Cfg::TM : 2 * Shape::FM, TN = kFfma ? Cfg::TN : 2 * Shape::FN;
  __device__ __forceinline__ static int row(int x) {
    if constexpr (kFfma) return (x / 4) * 64 + (threadIdx.x / 16) * 4 + x % 4;
    const int warp = threadIdx.x / 32, gq = (threadIdx.x % 32) / 4;
    return Shape::WM * (warp / 2) + 16 * (x / 2) + gq + 8 * (x % 2);
  }
  __device__ __forceinline__ static int col(int y) {
    if constexpr (kFfma) return (y / 4) * 64 + (threadIdx.x % 16) * 4 + y % 4;
    const int warp = threadIdx.x / 32, tq = threadIdx.x % 4;
    return Shape::WN * (warp % 2) + 8 * (y / 2) + 2 * tq + y % 2;
  }
};

template <class Cfg, bool A_KC, bool B_KC, bool kSplit>
__device__ __forceinline__ void tile_gemm_mma(float (&acc)[2 * MmaShape<Cfg>::FM][2 * MmaShape<Cfg>::FN],
                                              const float* __restrict__ A, int lda, int m_valid,
                                              const float* __restrict__ B, int ldb, int n_valid, int K, float* As,
                                              float* Bs, bool with_rowsum, float& rowsum) {
  using Shape = MmaShape<Cfg>;
  constexpr int BK = Cfg::BK, SA = Cfg::SA, SB = Cfg::SB, FM = Shape::FM, FN = Shape::FN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int r0 = Shape::WM * (warp / 2) + gq, c0 = Shape::WN * (warp % 2) + gq;  // this lane's first row, column
  float fc[FM][FN][4];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) fc[i][j][r] = 0.0f;

  rowsum = stream_tiles<Cfg, A_KC, B_KC>(A, lda, m_valid, B, ldb, n_valid, K, As, Bs, with_rowsum,
                                         [&](const float* As, const float* Bs) {
#pragma unroll
    for (int kk = 0; kk < BK; kk += 8) {
      const float* a_k = As + (kk + tq) * SA + r0;  // A(r0, k = tq); k = tq + 4 is 4 SA further
      float fa[FM][4], fa_lo[FM][4];
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        fa[i][0] = a_k[16 * i];
        fa[i][1] = a_k[16 * i + 8];
        fa[i][2] = a_k[4 * SA + 16 * i];
        fa[i][3] = a_k[4 * SA + 16 * i + 8];
        prepare_tf32<kSplit>(fa[i], fa_lo[i]);
      }
      const float* b_k = Bs + (kk + tq) * SB + c0;
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        float fb[2] = {b_k[8 * j], b_k[4 * SB + 8 * j]}, fb_lo[2];
        prepare_tf32<kSplit>(fb, fb_lo);
#pragma unroll
        for (int i = 0; i < FM; ++i) mma_tf32<kSplit>(fc[i][j], fa[i], fa_lo[i], fb, fb_lo);
      }
    }
  });
  // Fragment (i, j) element r is row gq + 8 (r / 2), column 2 tq + r % 2 of its 16 x 8 block: acc[2i + r/2][2j + r%2].
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[2 * i + r / 2][2 * j + r % 2] = fc[i][j][r];
}

// One tile in the arithmetic MATH; acc in TileLayout<Cfg, MATH>.
template <class Cfg, int MATH, bool A_KC, bool B_KC>
__device__ __forceinline__ void any_tile_gemm(float (&acc)[TileLayout<Cfg, MATH>::TM][TileLayout<Cfg, MATH>::TN],
                                              const float* __restrict__ A, int lda, int m_valid,
                                              const float* __restrict__ B, int ldb, int n_valid, int K, float* As,
                                              float* Bs, bool with_rowsum, float& rowsum) {
  if constexpr (MATH == kFfmaMath)
    tile_gemm<Cfg, A_KC, B_KC>(acc, A, lda, m_valid, B, ldb, n_valid, K, As, Bs, with_rowsum, rowsum);
  else
    tile_gemm_mma<Cfg, A_KC, B_KC, MATH == kTf32x3Math>(acc, A, lda, m_valid, B, ldb, n_valid, K, As, Bs,
                                                        with_rowsum, rowsum);
}

// ---- row-grouped GEMM: C (M, Nout) = epilogue(A (M, K) · op(W[e])), expert e by row segment ------------------------

enum Epilogue { kBiasRelu, kBias, kReluMask, kStore };

// Warp 0: which expert and rows tile t covers. tiles_e = ceil(m_e / BM); tile t belongs to the first expert whose
// inclusive tile prefix exceeds t (empty experts have no tiles and are never chosen).
template <int BM>
__device__ void find_tile(int t, const int32_t* __restrict__ offsets, int E, int* info) {
  const int lane = threadIdx.x & 31;
  int before = 0;  // tiles of the experts in earlier chunks
  for (int e0 = 0; e0 < E; e0 += 32) {
    const int e = e0 + lane;
    int tiles = 0;
    if (e < E) tiles = (offsets[e + 1] - offsets[e] + BM - 1) / BM;
    int incl = tiles;  // inclusive prefix over the chunk's lanes
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      int v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    const unsigned hit = __ballot_sync(0xffffffffu, e < E && t < before + incl);
    if (hit) {  // the same on every lane
      const int l = __ffs(hit) - 1;
      const int first_tile = before + __shfl_sync(0xffffffffu, incl - tiles, l);
      if (lane == 0) {
        const int eh = e0 + l;
        info[0] = eh;
        info[1] = offsets[eh] + (t - first_tile) * BM;  // first row
        info[2] = offsets[eh + 1];                      // end of the expert's rows
      }
      return;
    }
    before += __shfl_sync(0xffffffffu, incl, 31);
  }
  if (lane == 0) info[0] = -1;  // past the last tile
}

// Grid (ceil(M/BM) + E, ceil(Nout/BN)). A (M, K) row-major; W (E, ...) with w_stride = Nout*K per expert:
// B_KC: W[e] is (Nout, K) used as W[e]ᵀ; else W[e] is (K, Nout). bias (E, Nout); mask (M, Nout) for kReluMask.
template <class Cfg, int MATH, bool B_KC, int EPI>
__global__ void __launch_bounds__(kThreads, 2)
    grouped_gemm_kernel(float* __restrict__ C, const float* __restrict__ A, const float* __restrict__ W,
                        const float* __restrict__ bias, const float* __restrict__ mask,
                        const int32_t* __restrict__ offsets, int E, int K, int Nout) {
  using Layout = TileLayout<Cfg, MATH>;
  DSK_SHARED(__align__(16) float, As, [2 * Cfg::BK * Cfg::SA]);  // two k-major tile pairs (stream_tiles)
  DSK_SHARED(__align__(16) float, Bs, [2 * Cfg::BK * Cfg::SB]);
  DSK_SHARED(int, info, [3]);
  if (threadIdx.x < 32) find_tile<Cfg::BM>(blockIdx.x, offsets, E, info);
  __syncthreads();
  const int e = info[0];
  if (e < 0) return;  // the whole block
  const int row0 = info[1], row_end = info[2];
  const int col0 = blockIdx.y * Cfg::BN;

  const float* Ab = A + static_cast<int64_t>(row0) * K;
  const float* We = W + static_cast<int64_t>(e) * Nout * K;
  const float* Bb = B_KC ? We + static_cast<int64_t>(col0) * K : We + col0;
  const int ldb = B_KC ? K : Nout;
  float acc[Layout::TM][Layout::TN];
  float unused_rowsum;
  any_tile_gemm<Cfg, MATH, true, B_KC>(acc, Ab, K, row_end - row0, Bb, ldb, Nout - col0, K, As, Bs, false,
                                       unused_rowsum);

  const float* be = bias ? bias + static_cast<int64_t>(e) * Nout : nullptr;
#pragma unroll
  for (int x = 0; x < Layout::TM; ++x) {
    const int row = row0 + Layout::row(x);
    if (row >= row_end) continue;
#pragma unroll
    for (int y = 0; y < Layout::TN; ++y) {
      const int col = col0 + Layout::col(y);
      if (col >= Nout) continue;
      const int64_t o = static_cast<int64_t>(row) * Nout + col;
      float v = acc[x][y];
      if (EPI == kBiasRelu) {
        v += be[col];
        v = v > 0.0f ? v : 0.0f;
      } else if (EPI == kBias) {
        v += be[col];
      } else if (EPI == kReluMask) {
        v = mask[o] > 0.0f ? v : 0.0f;  // as the CPU: the gradient passes where h > 0
      }
      C[o] = v;
    }
  }
}

// ---- per-expert weight gradient: dW[e] (Mw, Nw) += X_eᵀ · Y_e, db[e] (Mw) += Σ_r X_e[r] -----------------------
// X (M, Mw), Y (M, Nw) row-major; rows of expert e are [offsets[e], offsets[e+1]). Grid (ceil(Mw/BM), ceil(Nw/BN), E).
template <class Cfg, int MATH>
__global__ void __launch_bounds__(kThreads, 2)
    weight_grad_kernel(float* __restrict__ dW, float* __restrict__ db, const float* __restrict__ X,
                       const float* __restrict__ Y, const int32_t* __restrict__ offsets, int Mw, int Nw) {
  using Layout = TileLayout<Cfg, MATH>;
  DSK_SHARED(__align__(16) float, As, [2 * Cfg::BK * Cfg::SA]);
  DSK_SHARED(__align__(16) float, Bs, [2 * Cfg::BK * Cfg::SB]);
  const int e = blockIdx.z;
  const int r0 = offsets[e], m = offsets[e + 1] - r0;
  if (m <= 0) return;  // no rows: no gradient (the whole block)
  const int i0 = blockIdx.x * Cfg::BM, j0 = blockIdx.y * Cfg::BN;
  const bool bias_tile = db != nullptr && blockIdx.y == 0;  // one column tile owns each db element

  float acc[Layout::TM][Layout::TN];
  float rs = 0.0f;
  any_tile_gemm<Cfg, MATH, false, false>(acc, X + static_cast<int64_t>(r0) * Mw + i0, Mw, Mw - i0,
                                         Y + static_cast<int64_t>(r0) * Nw + j0, Nw, Nw - j0, m, As, Bs, bias_tile,
                                         rs);

  float* dWe = dW + static_cast<int64_t>(e) * Mw * Nw;
#pragma unroll
  for (int x = 0; x < Layout::TM; ++x) {
    const int i = i0 + Layout::row(x);
    if (i >= Mw) continue;
#pragma unroll
    for (int y = 0; y < Layout::TN; ++y) {
      const int j = j0 + Layout::col(y);
      if (j < Nw) dWe[static_cast<int64_t>(i) * Nw + j] += acc[x][y];
    }
  }
  if (bias_tile && static_cast<int>(threadIdx.x) < Cfg::BM && i0 + static_cast<int>(threadIdx.x) < Mw)
    db[static_cast<int64_t>(e) * Mw + i0 + threadIdx.x] += rs;
}

// ---- launch helpers -----------------------------------------------------------------------------------------------

// Calls f with the tile of that size for the arithmetic: Cfg itself for FFMA, TensorCoreTile<Cfg> on the tensor cores.
template <class Cfg, class F>
void with_math(F&& f) {
  with_tile_math(tile_math(cuda::expert_math(), "expert_math"), [&](auto math) {
    if constexpr (decltype(math)::value == kFfmaMath)
      f(Cfg{}, math);
    else
      f(TensorCoreTile<Cfg>{}, math);
  });
}

// Calls f(tile, std::integral_constant<int, MATH>{}) (tile: as with_math) with the tile size for a launch that would
// have `big_blocks` blocks of the big tile: the big tile when that still gives two blocks per multiprocessor (small
// layers take the small one), unless cuda::set_expert_tile forces one; the arithmetic cuda::expert_math() resolves
// to (tensor_math.cuh).
template <class F>
void with_tile(int64_t big_blocks, F&& f) {
  bool big = big_blocks >= 2LL * cuda::sm_count();
  if (cuda::expert_tile() != cuda::ExpertTile::kAuto) big = cuda::expert_tile() == cuda::ExpertTile::kBig;
  if (big)
    with_math<BigTile>(f);
  else
    with_math<SmallTile>(f);
}

template <bool B_KC, int EPI>
void launch_grouped(float* C, const float* A, const float* W, const float* bias, const float* mask,
                    const int32_t* offsets, int E, int M, int K, int Nout) {
  with_tile((cuda::ceil_div(M, BigTile::BM) + E) * cuda::ceil_div(Nout, BigTile::BN), [&](auto cfg, auto math) {
    using Cfg = decltype(cfg);
    const int64_t row_tiles = cuda::ceil_div(M, Cfg::BM) + E;  // ≥ Σ_e ceil(m_e / BM)
    const int64_t col_tiles = cuda::ceil_div(Nout, Cfg::BN);
    DSK_CHECK(row_tiles <= INT32_MAX && col_tiles <= 65535, "expert_ffn: M={} Nout={} is too large for one launch",
              M, Nout);
    dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(col_tiles));
    DSK_LAUNCH(grid, kThreads, 0, grouped_gemm_kernel<Cfg, decltype(math)::value, B_KC, EPI>)(C, A, W, bias, mask,
                                                                                            offsets, E, K, Nout);
    DSK_CUDA_CHECK_LAUNCH();
  });
}

void launch_weight_grad(float* dW, float* db, const float* X, const float* Y, const int32_t* offsets, int E, int Mw,
                        int Nw) {
  with_tile(cuda::ceil_div(Mw, BigTile::BM) * cuda::ceil_div(Nw, BigTile::BN) * E, [&](auto cfg, auto math) {
    using Cfg = decltype(cfg);
    dim3 grid(static_cast<unsigned>(cuda::ceil_div(Mw, Cfg::BM)), static_cast<unsigned>(cuda::ceil_div(Nw, Cfg::BN)),
              static_cast<unsigned>(E));
    DSK_CHECK(grid.y <= 65535 && grid.z <= 65535, "expert_ffn_backward: {} x {} x {} experts is too large", Mw, Nw,
              E);
    DSK_LAUNCH(grid, kThreads, 0, weight_grad_kernel<Cfg, decltype(math)::value>)(dW, db, X, Y, offsets, Mw, Nw);
    DSK_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

// ---- launchers ----------------------------------------------------------------------------------------------------

template <>
void expert_ffn_forward<Backend::CUDA>(float* h, float* y, const float* xp, const float* w1, const float* b1,
                                       const float* w2, const float* b2, const int32_t* offsets, int E, int M, int d,
                                       int F) {
  check_expert_ffn(E, M, d, F, "expert_ffn_forward");
  // offsets stay on the device: they must span [0, M) and not decrease, which is not checked here (a host sync);
  // moe_permute produces them so.
  if (M == 0) return;
  launch_grouped<true, kBiasRelu>(h, xp, w1, b1, nullptr, offsets, E, M, d, F);  // h (M, F)
  launch_grouped<true, kBias>(y, h, w2, b2, nullptr, offsets, E, M, F, d);        // y (M, d)
}

template <>
void expert_ffn_backward<Backend::CUDA>(float* dxp, float* dw1, float* db1, float* dw2, float* db2, float* dh,
                                        const float* dy, const float* xp, const float* h, const float* w1,
                                        const float* w2, const int32_t* offsets, int E, int M, int d, int F) {
  check_expert_ffn(E, M, d, F, "expert_ffn_backward");
  if (M == 0) return;
  launch_grouped<false, kReluMask>(dh, dy, w2, nullptr, h, offsets, E, M, d, F);  // dh (M, F) = (dy · w2[e]) ⊙ (h > 0)
  launch_grouped<false, kStore>(dxp, dh, w1, nullptr, nullptr, offsets, E, M, F, d);  // dxp (M, d) = dh · w1[e]
  launch_weight_grad(dw2, db2, dy, h, offsets, E, d, F);   // dw2[e] (d, F) += dyᵀ h;  db2[e] += Σ dy
  launch_weight_grad(dw1, db1, dh, xp, offsets, E, F, d);  // dw1[e] (F, d) += dhᵀ xp; db1[e] += Σ dh
}

}  // namespace dsk
