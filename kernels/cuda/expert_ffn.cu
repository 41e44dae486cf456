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
// Where every operand row starts 16-byte aligned (widths multiples of 4: every model config), the tensor-core tiles
// load by cp.async instead (cuda::ExpertLoads::kAsync, the default; AsyncTileCfg, tile_gemm_async): 16-byte copies
// from global straight into a ring of 3-4 K-steps of shared tiles, issued STAGES - 1 steps ahead of the products,
// with no registers on the way and one barrier per K-step, on 4 warps with 64 x 64 warp tiles (32 x 32 in the small
// tile); each operand keeps its source's contiguous dimension in shared memory (AsyncOperand). Both loads feed each
// output element the same products in the same order: bit-identical results.
// cuda::set_expert_tile forces one tile size and cuda::set_expert_loads one way of loading (tests run each on any
// device; `dsk bench moe` times each). Follow-up: bigger tensor-core tiles (wgmma with TMA), which is where the
// H200's speed is.
#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/launch_facts.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/cuda/tensor_math.cuh"
#include "kernels/moe.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

namespace dsk {

namespace {

// The register-fed tiles' blocks: 16 x 16 threads (FFMA), 8 warps (tensor cores).
constexpr int kRegisterTileThreads = 256;

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
  static constexpr int kThreads = kRegisterTileThreads;
  static constexpr int LA = BM * BK / kThreads;  // A elements each thread loads per K-step
  static constexpr int LB = BN * BK / kThreads;
  static_assert(BM * BK % kThreads == 0 && BN * BK % kThreads == 0, "whole loads per thread");
  static constexpr bool kAsync = false;
  static constexpr int kSharedFloats = 2 * BK * (SA + SB);  // two k-major tile pairs (stream_tiles)
};
using BigTile = TileCfg<2, 2, 8>;     // 128 x 128, 8 x 8 per thread
using SmallTile = TileCfg<1, 1, 16>;  // 64 x 64, 4 x 4 per thread
// The same sizes on the tensor cores, padding 8. K-steps: 16 for 64 x 64; 8 for 128 x 128, whose 64 accumulators
// per thread spilled 44-188 bytes at 16 under the 128-register cap of two blocks per SM (4-12 at 8).
template <class Cfg>
using TensorCoreTile = TileCfg<Cfg::RM, Cfg::RN, Cfg::RM == 2 ? 8 : 16, 8>;

// The tensor-core tiles fed by cp.async (cuda::ExpertLoads::kAsync; tile_gemm_async): BM x BN as above, K-steps
// of BK, a ring of STAGES K-steps in shared memory, each operand tile laid out as AsyncOperand says.
// 128 x 128: 16-deep K-steps, 4 stages (80 KB: two blocks per SM); 64 x 64: 32-deep, 3 stages (54 KB).
// 4 warps in a 2 x 2 grid (CUTLASS's shape for TF32 mma.sync on sm_80+): warp tiles of 64 x 64 (big) and 32 x 32
// (small) rather than the register-fed tiles' 32 x 64 and 16 x 32 on 8 warps. The fragments come from shared memory
// at 32 bits a lane, and a warp tile of a x b reads (a + b) / (a b) of them per product: 64 x 64 reads 2/3 of
// 32 x 64's shared bytes per mma and 32 x 32 2/3 of 16 x 32's, where the shared-memory bandwidth is about the
// tensor cores' mma.sync rate. The price is registers: 128 accumulators a thread in the big tile, with two blocks
// per SM still (128 threads x up to 255 registers).
template <int RM_, int RN_, int BK_, int STAGES_>
struct AsyncTileCfg {
  static constexpr int RM = RM_, RN = RN_, BK = BK_, STAGES = STAGES_;
  static constexpr int BM = 64 * RM, BN = 64 * RN;
  static constexpr int kThreads = 128;
  static constexpr bool kAsync = true;
  // Room for either layout of each operand (AsyncOperand), so one size serves every kernel of this tile.
  static constexpr int kAFloats = std::max(BM * (BK + 4), BK * (BM + 8));
  static constexpr int kBFloats = std::max(BN * (BK + 4), BK * (BN + 8));
  static constexpr int kStageFloats = kAFloats + kBFloats;
  static constexpr int kSharedFloats = STAGES * kStageFloats;
};
template <class Cfg>
using AsyncTile = std::conditional_t<Cfg::RM == 2, AsyncTileCfg<2, 2, 16, 4>, AsyncTileCfg<1, 1, 32, 3>>;

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
      const int idx = tid + l * kRegisterTileThreads;
      const int i = A_KC ? idx / BK : idx % BM;
      const int kk = A_KC ? idx % BK : idx / BM;
      const int k = k0 + kk;
      ra[l] = (i < m_valid && k < K)
                  ? (A_KC ? A[static_cast<int64_t>(i) * lda + k] : A[static_cast<int64_t>(k) * lda + i])
                  : 0.0f;
    }
#pragma unroll
    for (int l = 0; l < Cfg::LB; ++l) {
      const int idx = tid + l * kRegisterTileThreads;
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
      const int idx = tid + l * kRegisterTileThreads;
      const int i = A_KC ? idx / BK : idx % BM;
      const int kk = A_KC ? idx % BK : idx / BM;
      As_s[kk * SA + i] = ra[l];
    }
#pragma unroll
    for (int l = 0; l < Cfg::LB; ++l) {
      const int idx = tid + l * kRegisterTileThreads;
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
__device__ __forceinline__ void tile_gemm(float (&acc)[4 * Cfg::RM][4 * Cfg::RN], const float* __restrict__ A, int lda,
                                          int m_valid, const float* __restrict__ B, int ldb, int n_valid, int K,
                                          float* As, float* Bs, bool with_rowsum, float& rowsum) {
  constexpr int BK = Cfg::BK, SA = Cfg::SA, SB = Cfg::SB, TM = 4 * Cfg::RM, TN = 4 * Cfg::RN;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int a = 0; a < TM; ++a)
#pragma unroll
    for (int b = 0; b < TN; ++b) acc[a][b] = 0.0f;
  rowsum = stream_tiles<Cfg, A_KC, B_KC>(A, lda, m_valid, B, ldb, n_valid, K, As, Bs, with_rowsum,
                                         [&](const float* As, const float* Bs) {
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
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
      for (int x = 0; x < TM; ++x)
#pragma unroll
        for (int y = 0; y < TN; ++y) acc[x][y] = fmaf(a[x], b[y], acc[x][y]);
    }
  });
}

// ---- the same tiles on the tensor cores (TF32, or 3xTF32 with kSplit) ----------------------------------------------
// Loads through stream_tiles as tile_gemm (same k-major shared tiles, same rowsum; rows padded by 8).
// The 8 warps form a 4 x 2 grid over the BM x BN tile (the cp.async tiles: 4 warps, 2 x 2): warp w owns the
// WM x WN block (WM = BM / 4, WN = BN / 2) at rows WM (w / 2), columns WN (w % 2), as FM x FN mma.sync m16n8k8
// accumulators (FM = WM / 16, FN = WN / 8: 128 x 128: 2 x 8, 64 x 64: 1 x 4; cp.async: 4 x 8, 2 x 4) kept in
// registers to the epilogue, each A fragment serving FN products. In the
// k-major tiles A(i, kk) = As[kk][i] and B(kk, j) = Bs[kk][j]: a lane (gq = lane / 4, tq = lane % 4) reads A rows
// gq, gq + 8 and B column gq at k = tq, tq + 4 (PTX's m16n8k8 .tf32 fragments, as attention_mma.cuh).
// kSplit: 3xTF32 (prepare_tf32 / mma_tf32 in tensor_math.cuh).
template <class Cfg>
struct MmaShape {
  static constexpr int kWarpCols = 2, kWarpRows = Cfg::kThreads / 32 / kWarpCols;  // 8 warps: 4 x 2; 4: 2 x 2
  static constexpr int WM = Cfg::BM / kWarpRows, WN = Cfg::BN / kWarpCols, FM = WM / 16, FN = WN / 8;
  static_assert(WM % 16 == 0 && WN % 8 == 0 && Cfg::BK % 8 == 0, "m16n8k8 tiling");
  // This lane's warp's first row and column in the tile.
  __device__ __forceinline__ static int warp_row() { return WM * (threadIdx.x / 32 / kWarpCols); }
  __device__ __forceinline__ static int warp_col() { return WN * (threadIdx.x / 32 % kWarpCols); }
};

// Where the thread's register element (x, y) of a finished tile lies in it (tile-local row and column), per
// arithmetic: the FFMA tile's (4 RM) x (4 RN) blocks (rows ty*4 + 64·h, columns tx*4 + 64·h), or the tensor-core
// tile's fragments (x = 2 i + half: fragment row block i, rows gq (+ 8); y = 2 j + e: fragment column block j,
// column 2 tq + e). The epilogues read acc[x][y] through these.
template <class Cfg, int MATH>
struct TileLayout {  // the tensor-core tiles
  using Shape = MmaShape<Cfg>;
  static constexpr int TM = 2 * Shape::FM, TN = 2 * Shape::FN;
  __device__ __forceinline__ static int row(int x) {
    const int gq = (threadIdx.x % 32) / 4;
    return Shape::warp_row() + 16 * (x / 2) + gq + 8 * (x % 2);
  }
  __device__ __forceinline__ static int col(int y) {
    const int tq = threadIdx.x % 4;
    return Shape::warp_col() + 8 * (y / 2) + 2 * tq + y % 2;
  }
};
template <class Cfg>
struct TileLayout<Cfg, kFfmaMath> {
  static constexpr int TM = 4 * Cfg::RM, TN = 4 * Cfg::RN;  // (4 RM) x (4 RN) per thread
  __device__ __forceinline__ static int row(int x) { return (x / 4) * 64 + (threadIdx.x / 16) * 4 + x % 4; }
  __device__ __forceinline__ static int col(int y) { return (y / 4) * 64 + (threadIdx.x % 16) * 4 + y % 4; }
};

// One K-step's products on the tensor cores: fc += A(rows, 0..BK) · B(0..BK, cols) over the warp's fragments,
// the operands read from shared memory through a(row, kk) and b(col, kk) (tile-local). Shared by the register-fed
// and the cp.async-fed tiles, which lay their shared tiles out differently.
template <class Cfg, bool kSplit, class ReadA, class ReadB>
__device__ __forceinline__ void mma_k_step(float (&fc)[MmaShape<Cfg>::FM][MmaShape<Cfg>::FN][4], ReadA a,
                                           ReadB b) {
  using Shape = MmaShape<Cfg>;
  constexpr int FM = Shape::FM, FN = Shape::FN;
  const int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int r0 = Shape::warp_row() + gq, c0 = Shape::warp_col() + gq;  // this lane's first row, column
#pragma unroll
  for (int kk = 0; kk < Cfg::BK; kk += 8) {
    float fa[FM][4], fa_lo[FM][4];
#pragma unroll
    for (int i = 0; i < FM; ++i) {
      fa[i][0] = a(r0 + 16 * i, kk + tq);
      fa[i][1] = a(r0 + 16 * i + 8, kk + tq);
      fa[i][2] = a(r0 + 16 * i, kk + tq + 4);
      fa[i][3] = a(r0 + 16 * i + 8, kk + tq + 4);
      prepare_tf32<kSplit>(fa[i], fa_lo[i]);
    }
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      float fb[2] = {b(c0 + 8 * j, kk + tq), b(c0 + 8 * j, kk + tq + 4)}, fb_lo[2];
      prepare_tf32<kSplit>(fb, fb_lo);
#pragma unroll
      for (int i = 0; i < FM; ++i) mma_tf32<kSplit>(fc[i][j], fa[i], fa_lo[i], fb, fb_lo);
    }
  }
}

template <class Cfg>
__device__ __forceinline__ void zero_fragments(float (&fc)[MmaShape<Cfg>::FM][MmaShape<Cfg>::FN][4]) {
#pragma unroll
  for (int i = 0; i < MmaShape<Cfg>::FM; ++i)
#pragma unroll
    for (int j = 0; j < MmaShape<Cfg>::FN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) fc[i][j][r] = 0.0f;
}

// Fragment (i, j) element r is row gq + 8 (r / 2), column 2 tq + r % 2 of its 16 x 8 block: acc[2i + r/2][2j + r%2]
// (TileLayout).
template <class Cfg>
__device__ __forceinline__ void fragments_to_acc(float (&acc)[2 * MmaShape<Cfg>::FM][2 * MmaShape<Cfg>::FN],
                                                 const float (&fc)[MmaShape<Cfg>::FM][MmaShape<Cfg>::FN][4]) {
#pragma unroll
  for (int i = 0; i < MmaShape<Cfg>::FM; ++i)
#pragma unroll
    for (int j = 0; j < MmaShape<Cfg>::FN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[2 * i + r / 2][2 * j + r % 2] = fc[i][j][r];
}

template <class Cfg, bool A_KC, bool B_KC, bool kSplit>
__device__ __forceinline__ void tile_gemm_mma(float (&acc)[2 * MmaShape<Cfg>::FM][2 * MmaShape<Cfg>::FN],
                                              const float* __restrict__ A, int lda, int m_valid,
                                              const float* __restrict__ B, int ldb, int n_valid, int K, float* As,
                                              float* Bs, bool with_rowsum, float& rowsum) {
  constexpr int SA = Cfg::SA, SB = Cfg::SB;
  float fc[MmaShape<Cfg>::FM][MmaShape<Cfg>::FN][4];
  zero_fragments<Cfg>(fc);
  rowsum = stream_tiles<Cfg, A_KC, B_KC>(A, lda, m_valid, B, ldb, n_valid, K, As, Bs, with_rowsum,
                                         [&](const float* As, const float* Bs) {
    mma_k_step<Cfg, kSplit>(fc, [&](int r, int kk) { return As[kk * SA + r]; },
                            [&](int c, int kk) { return Bs[kk * SB + c]; });
  });
  fragments_to_acc<Cfg>(acc, fc);
}

// ---- the tensor-core tiles fed by cp.async -------------------------------------------------------------------------
// One operand's shared tile for one K-step: R rows (A: the tile's BM rows; B: its BN columns) by BK. cp.async copies
// 16 bytes as they lie in global memory and cannot transpose, so each operand keeps its source's contiguous dimension:
//   KC (K-contiguous source: the activations; a weight used as Wᵀ): [R][BK + 4]. A fragment's lanes (row gq,
//       k = tq) read words (BK + 4) gq + tq, strides 20 / 36 = 20 / 4 (mod 32): all 32 banks;
//   else (row-contiguous: a weight used as W; the weight gradients' transposed operands): [BK][R + 8], the register
//       tiles' k-major layout (words 8 tq + gq: all 32 banks).
template <int R, int BK, bool KC, int THREADS>
struct AsyncOperand {
  static constexpr int kStride = KC ? BK + 4 : R + 8;
  static constexpr int kChunks = R * BK / 4;  // 16-byte copies per K-step
  static_assert(kChunks % THREADS == 0, "whole copies per thread");

  __device__ __forceinline__ static int at(int r, int kk) { return KC ? r * kStride + kk : kk * kStride + r; }

  // Issues this thread's copies of the K-step at k0 into `tile`: element (r, kk) = src(r, k0 + kk), src(r, k) =
  // src[r * ld + k] (KC) or src[k * ld + r]; zeros for r >= r_valid or k >= K. A copy is all in or all out: ld and
  // K are multiples of 4 for KC; for the others r_valid is (tiles start at multiples of 64 of a width that ld, a
  // multiple of 4, holds).
  __device__ __forceinline__ static void copy(float* tile, const float* __restrict__ src, int ld, int r_valid, int K,
                                              int k0) {
#pragma unroll
    for (int n = 0; n < kChunks / THREADS; ++n) {
      const int c = threadIdx.x + n * THREADS;
      const int r = KC ? c / (BK / 4) : 4 * (c % (R / 4));
      const int kk = KC ? 4 * (c % (BK / 4)) : c / (R / 4);
      const int k = k0 + kk;
      const bool valid = r < r_valid && k < K;
      const float* from = KC ? src + static_cast<int64_t>(r) * ld + k : src + static_cast<int64_t>(k) * ld + r;
      copy_async_zfill<16>(tile + at(r, kk), valid ? from : src, valid);
    }
  }
};

// The register-fed tiles' loop (stream_tiles) with cp.async: the copies of K-step t + STAGES - 1 are issued while
// step t's products run, into the ring slot that step t - 1 used; one barrier per K-step (it both publishes step t's
// tiles and retires step t - 1's slot). Returns the row sum as stream_tiles does (in the same K order: bit-identical).
template <class Cfg, bool A_KC, bool B_KC, bool kSplit>
__device__ __forceinline__ void tile_gemm_async(float (&acc)[2 * MmaShape<Cfg>::FM][2 * MmaShape<Cfg>::FN],
                                                const float* __restrict__ A, int lda, int m_valid,
                                                const float* __restrict__ B, int ldb, int n_valid, int K,
                                                float* smem, bool with_rowsum, float& rowsum) {
  using OpA = AsyncOperand<Cfg::BM, Cfg::BK, A_KC, Cfg::kThreads>;
  using OpB = AsyncOperand<Cfg::BN, Cfg::BK, B_KC, Cfg::kThreads>;
  constexpr int BK = Cfg::BK, STAGES = Cfg::STAGES;
  static_assert(Cfg::BM <= Cfg::kThreads, "a thread per row for the row sum");
  const int steps = (K + BK - 1) / BK;
  auto slot = [&](int step) { return smem + (step % STAGES) * Cfg::kStageFloats; };  // A tile, then B tile
  // Every call commits a group, empty past the last step, so that "all but the newest STAGES - 2 groups" is
  // always "every step up to the current one".
  auto issue = [&](int step) {
    if (step < steps) {
      OpA::copy(slot(step), A, lda, m_valid, K, step * BK);
      OpB::copy(slot(step) + Cfg::kAFloats, B, ldb, n_valid, K, step * BK);
    }
    copies_commit();
  };
  float fc[MmaShape<Cfg>::FM][MmaShape<Cfg>::FN][4];
  zero_fragments<Cfg>(fc);
  float rs = 0.0f;
#pragma unroll
  for (int step = 0; step < STAGES - 1; ++step) issue(step);
  for (int step = 0; step < steps; ++step) {
    copies_wait_pending<STAGES - 2>();  // this thread's copies of `step` have landed
    __syncthreads();                    // everyone's have; everyone is done with step - 1's slot
    issue(step + STAGES - 1);           // into step - 1's slot
    const float* As = slot(step);
    const float* Bs = As + Cfg::kAFloats;
    if (with_rowsum && static_cast<int>(threadIdx.x) < Cfg::BM)
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) rs += As[OpA::at(threadIdx.x, kk)];
    mma_k_step<Cfg, kSplit>(fc, [&](int r, int kk) { return As[OpA::at(r, kk)]; },
                            [&](int c, int kk) { return Bs[OpB::at(c, kk)]; });
  }
  rowsum = rs;
  fragments_to_acc<Cfg>(acc, fc);
}

// One tile in the arithmetic MATH; acc in TileLayout<Cfg, MATH>. smem: Cfg::kSharedFloats floats of shared memory.
template <class Cfg, int MATH, bool A_KC, bool B_KC>
__device__ __forceinline__ void any_tile_gemm(float (&acc)[TileLayout<Cfg, MATH>::TM][TileLayout<Cfg, MATH>::TN],
                                              const float* __restrict__ A, int lda, int m_valid,
                                              const float* __restrict__ B, int ldb, int n_valid, int K, float* smem,
                                              bool with_rowsum, float& rowsum) {
  constexpr bool kSplit = MATH == kTf32x3Math;
  if constexpr (Cfg::kAsync) {
    static_assert(MATH != kFfmaMath, "the cp.async tiles are tensor-core tiles");
    tile_gemm_async<Cfg, A_KC, B_KC, kSplit>(acc, A, lda, m_valid, B, ldb, n_valid, K, smem, with_rowsum, rowsum);
  } else {
    float* As = smem;  // two k-major pairs: As[2][BK][SA], then Bs[2][BK][SB]
    float* Bs = smem + 2 * Cfg::BK * Cfg::SA;
    if constexpr (MATH == kFfmaMath)
      tile_gemm<Cfg, A_KC, B_KC>(acc, A, lda, m_valid, B, ldb, n_valid, K, As, Bs, with_rowsum, rowsum);
    else
      tile_gemm_mma<Cfg, A_KC, B_KC, kSplit>(acc, A, lda, m_valid, B, ldb, n_valid, K, As, Bs, with_rowsum,
                                             rowsum);
  }
}

// ---- row-grouped GEMM: C (M, Nout) = epilogue(A (M, K) · op(W[e])), expert e by row segment ------------------------

enum Epilogue { kBiasRelu, kBias, kReluMask, kStore };

// The kernels' dynamic shared memory: the tiles' floats, 16-byte aligned for float4 reads and 16-byte cp.async.
struct alignas(16) TileShared {
  float floats[4];
};

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
__global__ void __launch_bounds__(Cfg::kThreads, 2)
    grouped_gemm_kernel(float* __restrict__ C, const float* __restrict__ A, const float* __restrict__ W,
                        const float* __restrict__ bias, const float* __restrict__ mask,
                        const int32_t* __restrict__ offsets, int E, int K, int Nout) {
  using Layout = TileLayout<Cfg, MATH>;
  DSK_DYNAMIC_SHARED(TileShared, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);  // Cfg::kSharedFloats floats (any_tile_gemm)
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
  any_tile_gemm<Cfg, MATH, true, B_KC>(acc, Ab, K, row_end - row0, Bb, ldb, Nout - col0, K, smem, false,
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
__global__ void __launch_bounds__(Cfg::kThreads, 2)
    weight_grad_kernel(float* __restrict__ dW, float* __restrict__ db, const float* __restrict__ X,
                       const float* __restrict__ Y, const int32_t* __restrict__ offsets, int Mw, int Nw) {
  using Layout = TileLayout<Cfg, MATH>;
  DSK_DYNAMIC_SHARED(TileShared, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);  // Cfg::kSharedFloats floats (any_tile_gemm)
  const int e = blockIdx.z;
  const int r0 = offsets[e], m = offsets[e + 1] - r0;
  if (m <= 0) return;  // no rows: no gradient (the whole block)
  const int i0 = blockIdx.x * Cfg::BM, j0 = blockIdx.y * Cfg::BN;
  const bool bias_tile = db != nullptr && blockIdx.y == 0;  // one column tile owns each db element

  float acc[Layout::TM][Layout::TN];
  float rs = 0.0f;
  any_tile_gemm<Cfg, MATH, false, false>(acc, X + static_cast<int64_t>(r0) * Mw + i0, Mw, Mw - i0,
                                         Y + static_cast<int64_t>(r0) * Nw + j0, Nw, Nw - j0, m, smem,
                                         bias_tile, rs);

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

// Calls f with the tile of that size for the arithmetic: Cfg itself for FFMA; on the tensor cores AsyncTile<Cfg>
// where cuda::expert_loads() asks for cp.async and the operands allow it (`aligned`: every row of the launch's
// operands starts 16-byte aligned, rows_aligned16; the expert and tile offsets into them then keep it), else
// TensorCoreTile<Cfg>.
template <class Cfg, class F>
void with_math(bool aligned, F&& f) {
  const bool async = aligned && cuda::expert_loads() == cuda::ExpertLoads::kAsync;
  with_tile_math(tile_math(cuda::expert_math(), "expert_math"), [&](auto math) {
    if constexpr (decltype(math)::value == kFfmaMath)
      f(Cfg{}, math);
    else if (async)
      f(AsyncTile<Cfg>{}, math);
    else
      f(TensorCoreTile<Cfg>{}, math);
  });
}

// Calls f(tile, std::integral_constant<int, MATH>{}) (tile: as with_math) with the tile size for a launch that would
// have `big_blocks` blocks of the big tile: the big tile when that still gives two blocks per multiprocessor (small
// layers take the small one), unless cuda::set_expert_tile forces one; the arithmetic cuda::expert_math() resolves
// to (tensor_math.cuh).
template <class F>
void with_tile(int64_t big_blocks, bool aligned, F&& f) {
  bool big = big_blocks >= 2LL * cuda::sm_count();
  if (cuda::expert_tile() != cuda::ExpertTile::kAuto) big = cuda::expert_tile() == cuda::ExpertTile::kBig;
  if (big)
    with_math<BigTile>(aligned, f);
  else
    with_math<SmallTile>(aligned, f);
}

// The dynamic shared memory of a launch of `kernel` with tile Cfg, its limit raised where it is above 48 KB.
template <class Cfg, class Kernel>
size_t tile_shared_bytes(Kernel kernel) {
  const size_t bytes = Cfg::kSharedFloats * sizeof(float);
  cuda::allow_shared(kernel, bytes, "expert_ffn");
  return bytes;
}

template <bool B_KC, int EPI>
void launch_grouped(float* C, const float* A, const float* W, const float* bias, const float* mask,
                    const int32_t* offsets, int E, int M, int K, int Nout) {
  const int64_t big_blocks = (cuda::ceil_div(M, BigTile::BM) + E) * cuda::ceil_div(Nout, BigTile::BN);
  with_tile(big_blocks, rows_aligned16({K, Nout}, {A, W}), [&](auto cfg, auto math) {
    using Cfg = decltype(cfg);
    const int64_t row_tiles = cuda::ceil_div(M, Cfg::BM) + E;  // ≥ Σ_e ceil(m_e / BM)
    const int64_t col_tiles = cuda::ceil_div(Nout, Cfg::BN);
    DSK_CHECK(row_tiles <= INT32_MAX && col_tiles <= 65535, "expert_ffn: M={} Nout={} is too large for one launch",
              M, Nout);
    dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(col_tiles));
    auto kernel = grouped_gemm_kernel<Cfg, decltype(math)::value, B_KC, EPI>;
    DSK_LAUNCH(grid, Cfg::kThreads, tile_shared_bytes<Cfg>(kernel), kernel)(C, A, W, bias, mask, offsets, E, K, Nout);
    DSK_CUDA_CHECK_LAUNCH();
  });
}

void launch_weight_grad(float* dW, float* db, const float* X, const float* Y, const int32_t* offsets, int E, int Mw,
                        int Nw) {
  const int64_t big_blocks = cuda::ceil_div(Mw, BigTile::BM) * cuda::ceil_div(Nw, BigTile::BN) * E;
  with_tile(big_blocks, rows_aligned16({Mw, Nw}, {X, Y}), [&](auto cfg, auto math) {
    using Cfg = decltype(cfg);
    dim3 grid(static_cast<unsigned>(cuda::ceil_div(Mw, Cfg::BM)), static_cast<unsigned>(cuda::ceil_div(Nw, Cfg::BN)),
              static_cast<unsigned>(E));
    DSK_CHECK(grid.y <= 65535 && grid.z <= 65535, "expert_ffn_backward: {} x {} x {} experts is too large", Mw, Nw,
              E);
    auto kernel = weight_grad_kernel<Cfg, decltype(math)::value>;
    DSK_LAUNCH(grid, Cfg::kThreads, tile_shared_bytes<Cfg>(kernel), kernel)(dW, db, X, Y, offsets, Mw, Nw);
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
