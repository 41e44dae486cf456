// Causal attention on the GPU (the contract is kernels/attention.h; kernels/cpu/attention.cpp is the spec).
//
// One flash-style design for every form the model uses, fp32 on the CUDA cores (FFMA) or, for the 64-row blocks
// (training and prefill), with its products on the tensor cores in TF32 or 3xTF32 (cuda::attention_math; see
// "the same products on the tensor cores" below):
//
// Flattened query rows. Query heads h = hk*G + g share kv head hk (G = H / Hk: G = 1 for per-head K/V, G = H
// for the shared latent). For one (batch b, kv head hk) the kernels see Tq*G "rows" rho = i*G + g (query
// position i = rho / G, head h = hk*G + rho % G). With Hk = 1 these rows are contiguous in q/out, and one block
// of 64 rows covers 64/H positions of ALL heads, so every K/V tile loaded into shared memory serves all heads
// (the absorbed-MLA reuse); with Hk = H a block is 64 positions of one head. Row rho sees key j when
// kv_start[b] <= j <= i + (Tk - Tq).
//
// Thread layout (all kernels). A block has TY*16 threads: tx = tid % 16 runs across keys/columns, ty = tid / 16
// across rows. A thread owns rows r = ty + TY*a (a < RA) of the block, keys c = tx + 16*kk (kk < 4) of a
// 64-key tile, and output columns 4*tx + 64*m + e (m < NM, e < 4). The 16 lanes that share a row are one half
// warp, so row reductions are 4 xor-shuffles. Shared-memory tiles are row-major with padded strides chosen so
// that these accesses are bank-conflict free (float4 reads along the reduced dimension):
//   "row" operands (Q in the forward) [rows][W + 4]  with W = 64*NM: stride ≡ 4 (mod 8) words, so the two
//       half-warps' rows r, r+1 land on different banks and a key tile's 16 rows c = tx + 16kk hit all 32 banks;
//   probability tiles [rows][64 + 16]: stride ≡ 16 (mod 32), rows r and r+1 on opposite bank halves.
// Widths are padded with zeros to W = 64*NM (NM = ceil(dim / 64) <= 4), so any qk/v width up to 256 works.
//
// Forward (attention_forward_kernel): online softmax in base 2 (scores scaled by scale*log2(e), exp2f), per
// key tile: S = Q K^T (registers), running max/sum update, P (with the dropout multiplier) to shared memory,
// O += P V. Writes out = O / l and lse = ln2 * (m + log2 l); a row with no visible key writes 0 and -inf.
// Decode / small grids: when the blocks would not fill the GPU, each block's key range is split over
// gridDim.z blocks (flash-decoding); each writes its normalized partial output and partial lse, and
// attention_combine_kernel merges them in split order (deterministic). Decode shapes (<= 8 or <= 16 rows per
// (b, hk)) use 8- or 16-row blocks so the key tiles are not multiplied against empty rows.
//
// Backward (flash-attention-2 math, made deterministic by two kernels instead of atomics):
//   D_i = dout_i · out_i                                          (attention_row_dot_kernel)
//   P = exp(s - lse), dP = dout V^T, dS = P∘(dP∘M - D)            (recomputed in both kernels below)
//   dQ = scale dS K          one block per 64 query rows, loops over the key tiles   (attention_dq_kernel)
//   dK = scale dS^T Q, dV = (P∘M)^T dout   one block per 64-key tile, loops over every query row that sees it, in
//       order, for all heads sharing the K/V tile (so the Hk = 1 sum over heads is a fixed-order register
//       accumulation, no atomics)                                                          (attention_dkv_kernel)
// The dropout mask M is regenerated from rng::keep with the same element index as the CPU; never stored.
//
// Shared memory per block (floats; Wq = 64*NMq, Wv = 64*NMv; Ks doubles as Vs when k == v and dqk == dv):
//   forward: Q [BR][Wq+4] + K [64][Wq+4] + V [64][Wv+4] + P [BR][80]       (dqk = dv = 128, shared: 88 KB)
//   dq:      Q, dO [64][W+4] + K, V [64][W+4] + dS [64][80]                 (explicit hd 64: 90 KB)
//   dkv:     K, V, Q, dO [64][W+4] + P, dS [64][80] + lse, D [64]            (explicit hd 64: 111 KB)
//   the tensor-core kernels add a staging tile [64][80] (20 KB) each.
// Loads are plain coalesced loads staged through registers (no cp.async/TMA pipelining yet). The tensor-core path
// uses wmma (mma.sync) through a shared staging tile; register-resident mma fragments (flash-attention-2's layout)
// and wgmma are the next steps if a GPU report shows the staging is the bottleneck.
#include "kernels/attention.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/cuda/tensor_math.cuh"
#include "kernels/rng.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace dsk {

namespace {

constexpr int kKeyTile = 64;            // keys per K/V tile
constexpr int kTx = 16;                 // threads across keys / columns
constexpr int kKeysPerThread = kKeyTile / kTx;  // 4
constexpr int kPStride = kKeyTile + 16;         // probability tile row stride (see the header comment)
constexpr int kMaxNm = 4;                        // widths up to 256
constexpr float kLog2e = 1.4426950408889634f;
// The dynamic shared memory's declared type: 32-byte aligned, as wmma's fragment pointers must be (every tile in it
// starts at a multiple of 8 floats).
struct alignas(32) SharedBase {
  float x[8];
};
constexpr float kLn2 = 0.6931471805599453f;

// Everything a kernel needs to know about the problem.
struct Geometry {
  int B, Tq, Tk, cap, H, Hk, G;
  int dqk, dv;
  int wq, wv;    // padded widths 64 * ceil(dim / 64)
  int rows;      // Tq * G flattened query rows per (b, hk)
  int offset;    // Tk - Tq: query i sits at key position i + offset
  float scale;   // softmax scale (natural units)
  float scale2;  // scale * log2(e): scores in base-2 units
  bool shared_kv;  // k == v and dqk == dv: the K tile serves as the V tile
  float drop_p, drop_mult;  // dropout probability, 1 / (1 - p)
  uint64_t seed, site;
};

// ---- indexing ----------------------------------------------------------------------------------------------

// Element offset of query row rho of (b, hk) in q (stride dqk) / out (stride dv): row index in (B, Tq, H).
__device__ __forceinline__ int64_t q_row(const Geometry& g, int b, int hk, int rho) {
  const int i = rho / g.G, gi = rho - i * g.G;
  return (static_cast<int64_t>(b) * g.Tq + i) * g.H + hk * g.G + gi;
}
// Index of row rho's statistics in lse / D: (b, h, i) in (B, H, Tq).
__device__ __forceinline__ int64_t stat_index(const Geometry& g, int b, int hk, int rho) {
  const int i = rho / g.G, gi = rho - i * g.G;
  return (static_cast<int64_t>(b) * g.H + hk * g.G + gi) * g.Tq + i;
}
// Row index of key j of (b, hk) in k / v: (b, j, hk) in (B, cap, Hk).
__device__ __forceinline__ int64_t kv_row(const Geometry& g, int b, int hk, int j) {
  return (static_cast<int64_t>(b) * g.cap + j) * g.Hk + hk;
}

// The dropout multiplier of element (stat, j): 0 (dropped) or 1/(1-p); 1 without dropout. Same index as the CPU:
// ((b*H + h)*Tq + i)*Tk + j = stat*Tk + j.
__device__ __forceinline__ float drop_multiplier(const Geometry& g, int64_t stat, int j) {
  if (g.drop_p == 0.0f) return 1.0f;
  const uint64_t index = static_cast<uint64_t>(stat) * static_cast<uint64_t>(g.Tk) + static_cast<uint64_t>(j);
  return rng::keep(g.seed, g.site, index, g.drop_p) ? g.drop_mult : 0.0f;
}

// ---- shared-memory tiles -----------------------------------------------------------------------------------

// dst[r][c] (stride ld) = src row r, columns [0, width), for r < R; zero where src_row(r) is null (row outside the
// problem) or c >= dim (padding). One warp per row: coalesced global reads, conflict-free shared stores.
template <class SrcRow>
__device__ __forceinline__ void load_tile(float* dst, int ld, int R, int width, int dim, SrcRow src_row) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int r = warp; r < R; r += nwarps) {
    const float* src = src_row(r);
    for (int c = lane; c < width; c += 32) dst[r * ld + c] = (src != nullptr && c < dim) ? src[c] : 0.0f;
  }
}

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// acc[a][kk] += Σ_d A[ty + TY*a][d] * Bm[tx + 16*kk][d] over d < dim (dim rounded up to 4; the padding is zero).
template <int TY, int RA>
__device__ __forceinline__ void tile_dot(float (&acc)[RA][kKeysPerThread], const float* A, int lda, const float* Bm,
                                         int ldb, int dim) {
  const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
  const float* a_base = A + ty * lda;
  const float* b_base = Bm + tx * ldb;
#pragma unroll 2
  for (int d = 0; d < dim; d += 4) {
    float4 av[RA], bv[kKeysPerThread];
#pragma unroll
    for (int a = 0; a < RA; ++a) av[a] = ld4(a_base + a * TY * lda + d);
#pragma unroll
    for (int kk = 0; kk < kKeysPerThread; ++kk) bv[kk] = ld4(b_base + kk * kTx * ldb + d);
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) {
        acc[a][kk] = fmaf(av[a].x, bv[kk].x, acc[a][kk]);
        acc[a][kk] = fmaf(av[a].y, bv[kk].y, acc[a][kk]);
        acc[a][kk] = fmaf(av[a].z, bv[kk].z, acc[a][kk]);
        acc[a][kk] = fmaf(av[a].w, bv[kk].w, acc[a][kk]);
      }
  }
}

// acc[a][m][e] += Σ_j P[ty + TY*a][j] * Vm[j][4tx + 64m + e] over the 64 keys j of a tile.
template <int TY, int RA, int NM>
__device__ __forceinline__ void tile_pv(float (&acc)[RA][NM][4], const float* P, const float* Vm, int ldv) {
  const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
#pragma unroll 2
  for (int j = 0; j < kKeyTile; j += 4) {
    float4 pv[RA];
#pragma unroll
    for (int a = 0; a < RA; ++a) pv[a] = ld4(P + (ty + TY * a) * kPStride + j);
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      float4 vv[NM];
#pragma unroll
      for (int m = 0; m < NM; ++m) vv[m] = ld4(Vm + (j + jj) * ldv + 4 * tx + 64 * m);
#pragma unroll
      for (int a = 0; a < RA; ++a) {
        const float p = jj == 0 ? pv[a].x : jj == 1 ? pv[a].y : jj == 2 ? pv[a].z : pv[a].w;
#pragma unroll
        for (int m = 0; m < NM; ++m) {
          acc[a][m][0] = fmaf(p, vv[m].x, acc[a][m][0]);
          acc[a][m][1] = fmaf(p, vv[m].y, acc[a][m][1]);
          acc[a][m][2] = fmaf(p, vv[m].z, acc[a][m][2]);
          acc[a][m][3] = fmaf(p, vv[m].w, acc[a][m][3]);
        }
      }
    }
  }
}

// ---- the same products on the tensor cores (TF32 / 3xTF32: cuda::attention_math, tensor_math.cuh) -----------------
// The tensor-core forms of tile_dot and tile_pv hand back exactly what those do, in the same register layout, so the
// softmax, masking, dropout and determinism around them are unchanged: wmma m16n16k8 fragments write the block's
// BR x 64 product into a shared staging tile [BR][kPStride], and every thread adds its own elements from there.
// Warp w of the NW = TY/2 warps owns row block w % RB (RB = BR/16) and column blocks w / RB + i NW/RB, so its A
// fragment serves all its products. Every operand pointer is 32-byte aligned (tile rows are multiples of 16, strides
// multiples of 4 floats, column offsets multiples of 8). Costs two block barriers per 64-column product.

// stage[r][c] (stride kPStride) = Σ_d A[r][d] B(d, c) for r < BR, c < 64, with d < dim rounded up to 8 (the tiles'
// padding is zero). B_ROWS: B(d, c) = Bm[c*ldb + d] (tile_dot's operand: 64 rows of Bm) else Bm[d*ldb + c] (tile_pv's).
template <int TY, int BR, bool kSplit, bool B_ROWS>
__device__ __forceinline__ void tc_product(float* stage, const float* A, int lda, const float* Bm, int ldb, int dim) {
#if defined(DSK_CUDA_EMULATOR) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
  namespace wmma = nvcuda::wmma;
  constexpr int NW = TY * kTx / 32, RB = BR / 16, FPW = RB * 4 / NW, CSTEP = NW / RB;
  static_assert(BR % 16 == 0 && NW % RB == 0 && FPW >= 1, "tensor-core attention tiling");
  using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
  using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32,
                               std::conditional_t<B_ROWS, wmma::col_major, wmma::row_major>>;
  const int warp = threadIdx.x / 32, rb = warp % RB, cb0 = warp / RB;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> fc[FPW];
#pragma unroll
  for (int i = 0; i < FPW; ++i) wmma::fill_fragment(fc[i], 0.0f);
  for (int d = 0; d < dim; d += 8) {
    FragA fa, fa_lo;
    wmma::load_matrix_sync(fa, A + 16 * rb * lda + d, lda);
    prepare_tf32<kSplit>(fa, fa_lo);
#pragma unroll
    for (int i = 0; i < FPW; ++i) {
      const int c0 = 16 * (cb0 + i * CSTEP);
      FragB fb, fb_lo;
      wmma::load_matrix_sync(fb, B_ROWS ? Bm + c0 * ldb + d : Bm + d * ldb + c0, ldb);
      prepare_tf32<kSplit>(fb, fb_lo);
      mma_tf32<kSplit>(fc[i], fa, fa_lo, fb, fb_lo);
    }
  }
#pragma unroll
  for (int i = 0; i < FPW; ++i)
    wmma::store_matrix_sync(stage + 16 * rb * kPStride + 16 * (cb0 + i * CSTEP), fc[i], kPStride,
                            wmma::mem_row_major);
#else
  __trap();  // compiled for an architecture below sm_80 (attention_tile_math never picks it on such a GPU)
#endif
}

// tile_dot in the arithmetic MATH (stage: [TY*RA][kPStride] shared floats, unused by FFMA). Called by every thread.
template <int MATH, int TY, int RA>
__device__ __forceinline__ void any_tile_dot(float (&acc)[RA][kKeysPerThread], const float* A, int lda, const float* Bm,
                                             int ldb, int dim, float* stage) {
  if constexpr (MATH == kFfmaMath) {
    tile_dot<TY, RA>(acc, A, lda, Bm, ldb, dim);
  } else {
    const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
    tc_product<TY, TY * RA, MATH == kTf32x3Math, true>(stage, A, lda, Bm, ldb, dim);
    __syncthreads();  // the product is in stage
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) acc[a][kk] += stage[(ty + TY * a) * kPStride + tx + kTx * kk];
    __syncthreads();  // stage free for the next product
  }
}

// tile_pv in the arithmetic MATH, one 64-column block of Vm at a time (stage as any_tile_dot).
template <int MATH, int TY, int RA, int NM>
__device__ __forceinline__ void any_tile_pv(float (&acc)[RA][NM][4], const float* P, const float* Vm, int ldv,
                                            float* stage) {
  if constexpr (MATH == kFfmaMath) {
    tile_pv<TY, RA, NM>(acc, P, Vm, ldv);
  } else {
    const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
#pragma unroll
    for (int m = 0; m < NM; ++m) {
      tc_product<TY, TY * RA, MATH == kTf32x3Math, false>(stage, P, kPStride, Vm + 64 * m, ldv, kKeyTile);
      __syncthreads();
#pragma unroll
      for (int a = 0; a < RA; ++a) {
        const float4 t = ld4(stage + (ty + TY * a) * kPStride + 4 * tx);
        acc[a][m][0] += t.x;
        acc[a][m][1] += t.y;
        acc[a][m][2] += t.z;
        acc[a][m][3] += t.w;
      }
      __syncthreads();
    }
  }
}

// Shared floats the staging tile adds to a kernel of BR-row blocks in the arithmetic math.
size_t stage_floats(TileMath math, int BR) { return math == kFfmaMath ? 0 : static_cast<size_t>(BR) * kPStride; }

// Reductions over the 16 lanes of a half warp (the threads sharing a row).
__device__ __forceinline__ float half_warp_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float half_warp_sum(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The query rows a thread owns in a block: row a (a < RA) is block row ty + TY*a, i.e. flattened row rho0 + ty + TY*a
// of (b, hk). Whether it exists, the last key it sees (causal; -1 if none) and its statistics index (lse / D).
template <int RA>
struct ThreadRows {
  bool ok[RA];
  int last_key[RA];
  int64_t stat[RA];
};
template <int TY, int RA>
__device__ __forceinline__ ThreadRows<RA> thread_rows(const Geometry& g, int b, int hk, int rho0) {
  ThreadRows<RA> r;
  const int ty = threadIdx.x / kTx;
#pragma unroll
  for (int a = 0; a < RA; ++a) {
    const int rho = rho0 + ty + TY * a;
    r.ok[a] = rho < g.rows;
    r.last_key[a] = r.ok[a] ? rho / g.G + g.offset : -1;
    r.stat[a] = r.ok[a] ? stat_index(g, b, hk, rho) : 0;
  }
  return r;
}

// ---- forward -----------------------------------------------------------------------------------------------

// grid (ceil(rows / BR), B * Hk, splits); block TY*16 threads; BR = TY*RA query rows per block.
// splits == 1: writes out / lse. splits > 1: writes the split's normalized output part_o
// ((split, B*Hk, rows, dv)) and log-sum-exp part_lse ((split, B*Hk, rows)) for attention_combine_kernel.
// Launch bounds: with the block size alone, ptxas traded registers for resident blocks and gave the 8-row decode
// blocks 64 registers and spills (8-28 bytes), aiming at 8 blocks per SM that their shared memory (~41 KB at
// width 128) never allows; they ask for 5, what that memory allows: 80-95 registers, no spills
// (scripts/kernel_resources.sh).
template <int TY, int RA, int NMV, int MATH>
__global__ void __launch_bounds__(TY* kTx, RA == 1 ? 5 : 1) attention_forward_kernel(float* __restrict__ out, float* __restrict__ lse,
                                                                   float* __restrict__ part_o,
                                                                   float* __restrict__ part_lse,
                                                                   const float* __restrict__ q,
                                                                   const float* __restrict__ k,
                                                                   const float* __restrict__ v,
                                                                   const int32_t* __restrict__ kv_start, Geometry g) {
  constexpr int BR = TY * RA;
  DSK_DYNAMIC_SHARED(SharedBase, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);
  const int ldq = g.wq + 4, ldv = g.wv + 4;
  float* Qs = smem;                                  // [BR][ldq]
  float* Ks = Qs + BR * ldq;                         // [64][ldq]
  float* Vs = g.shared_kv ? Ks : Ks + kKeyTile * ldq;  // [64][ldv] (the K tile itself when shared)
  float* Ps = (g.shared_kv ? Ks + kKeyTile * ldq : Vs + kKeyTile * ldv);  // [BR][kPStride]
  float* stage = Ps + BR * kPStride;  // [BR][kPStride] tensor-core products (none with FFMA)

  const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
  const int bk = blockIdx.y, b = bk / g.Hk, hk = bk % g.Hk;
  const int rho0 = blockIdx.x * BR;
  const int split = blockIdx.z, splits = gridDim.z;

  // This block's key range [start, kend): from kv_start to the last key its last row sees.
  const int start = kv_start ? kv_start[b] : 0;
  const int rho_last = min(rho0 + BR, g.rows) - 1;
  const int kend = min(g.Tk, rho_last / g.G + g.offset + 1);
  const int ntiles = kend > start ? (kend - start + kKeyTile - 1) / kKeyTile : 0;
  const int per_split = (ntiles + splits - 1) / splits;
  const int t_begin = split * per_split, t_end = min(ntiles, t_begin + per_split);

  // Per-row state: the rows, running max (base 2) and this thread's partial sum.
  const ThreadRows<RA> rows = thread_rows<TY, RA>(g, b, hk, rho0);
  float row_max[RA], row_sum[RA], acc_o[RA][NMV][4];
#pragma unroll
  for (int a = 0; a < RA; ++a) {
    row_max[a] = -INFINITY;
    row_sum[a] = 0.0f;
#pragma unroll
    for (int m = 0; m < NMV; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[a][m][e] = 0.0f;
  }

  load_tile(Qs, ldq, BR, g.wq, g.dqk, [&](int r) -> const float* {
    const int rho = rho0 + r;
    return rho < g.rows ? q + q_row(g, b, hk, rho) * g.dqk : nullptr;
  });

  for (int t = t_begin; t < t_end; ++t) {
    const int j0 = start + t * kKeyTile;
    load_tile(Ks, ldq, kKeyTile, g.wq, g.dqk, [&](int r) -> const float* {
      return j0 + r < kend ? k + kv_row(g, b, hk, j0 + r) * g.dqk : nullptr;
    });
    if (!g.shared_kv)
      load_tile(Vs, ldv, kKeyTile, g.wv, g.dv, [&](int r) -> const float* {
        return j0 + r < kend ? v + kv_row(g, b, hk, j0 + r) * g.dv : nullptr;
      });
    __syncthreads();  // Q (first tile), K, V visible

    float s[RA][kKeysPerThread];
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) s[a][kk] = 0.0f;
    any_tile_dot<MATH, TY, RA>(s, Qs, ldq, Ks, ldq, g.dqk, stage);

#pragma unroll
    for (int a = 0; a < RA; ++a) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) {
        const int j = j0 + tx + kTx * kk;  // j >= start by construction
        s[a][kk] = (j <= rows.last_key[a] && j < kend) ? s[a][kk] * g.scale2 : -INFINITY;
        tile_max = fmaxf(tile_max, s[a][kk]);
      }
      tile_max = half_warp_max(tile_max);
      const float new_max = fmaxf(row_max[a], tile_max);
      // A row that has seen no key yet keeps max -inf: use 0 so that exp2f gives 0, not NaN.
      const float ref = new_max == -INFINITY ? 0.0f : new_max;
      const float alpha = exp2f(row_max[a] - ref);  // rescales the old sum and output (0 when there were none)
      row_max[a] = new_max;
      float psum = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) {
        const float p = exp2f(s[a][kk] - ref);
        psum += p;
        // Dropout acts on the probabilities that multiply V; the normalizer l stays un-dropped (as on the CPU).
        const float pm = p == 0.0f ? 0.0f : p * drop_multiplier(g, rows.stat[a], j0 + tx + kTx * kk);
        Ps[(ty + TY * a) * kPStride + tx + kTx * kk] = pm;
      }
      row_sum[a] = row_sum[a] * alpha + psum;
#pragma unroll
      for (int m = 0; m < NMV; ++m)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_o[a][m][e] *= alpha;
    }
    __syncthreads();  // P visible
    any_tile_pv<MATH, TY, RA, NMV>(acc_o, Ps, Vs, ldv, stage);
    __syncthreads();  // K, V, P free for the next tile
  }

  // Finish: the row sums are per-thread partials over this thread's keys; add the half warp's.
#pragma unroll
  for (int a = 0; a < RA; ++a) {
    const float l = half_warp_sum(row_sum[a]);
    if (!rows.ok[a]) continue;
    const int rho = rho0 + ty + TY * a;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const float row_lse = l > 0.0f ? (row_max[a] + log2f(l)) * kLn2 : -INFINITY;
    float* dst;
    if (splits == 1) {
      dst = out + q_row(g, b, hk, rho) * g.dv;
      if (lse && tx == 0) lse[rows.stat[a]] = row_lse;
    } else {
      const int64_t prow = (static_cast<int64_t>(split) * gridDim.y + bk) * g.rows + rho;
      dst = part_o + prow * g.dv;
      if (tx == 0) part_lse[prow] = row_lse;
    }
#pragma unroll
    for (int m = 0; m < NMV; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = 4 * tx + 64 * m + e;
        if (c < g.dv) dst[c] = acc_o[a][m][e] * inv;
      }
  }
}

// Merges the split partials of one query row per warp, in split order:
//   lse = M + ln Σ_z exp(lse_z - M),  out = Σ_z exp(lse_z - lse) out_z;  no visible key anywhere: 0 and -inf.
__global__ void attention_combine_kernel(float* __restrict__ out, float* __restrict__ lse,
                                         const float* __restrict__ part_o, const float* __restrict__ part_lse,
                                         int splits, Geometry g) {
  const int lane = threadIdx.x & 31;
  const int64_t total = static_cast<int64_t>(g.B) * g.Hk * g.rows;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= total) return;
  const int bk = static_cast<int>(row / g.rows), rho = static_cast<int>(row % g.rows);
  const int b = bk / g.Hk, hk = bk % g.Hk;
  float M = -INFINITY;
  for (int z = 0; z < splits; ++z) M = fmaxf(M, part_lse[static_cast<int64_t>(z) * total + row]);
  float* dst = out + q_row(g, b, hk, rho) * g.dv;
  if (M == -INFINITY) {
    for (int c = lane; c < g.dv; c += 32) dst[c] = 0.0f;
    if (lse && lane == 0) lse[stat_index(g, b, hk, rho)] = -INFINITY;
    return;
  }
  float wsum = 0.0f;
  for (int z = 0; z < splits; ++z) wsum += expf(part_lse[static_cast<int64_t>(z) * total + row] - M);
  const float row_lse = M + logf(wsum);
  for (int c = lane; c < g.dv; c += 32) {
    float o = 0.0f;
    for (int z = 0; z < splits; ++z) {
      const float w = expf(part_lse[static_cast<int64_t>(z) * total + row] - row_lse);  // 0 for an empty split
      o = fmaf(w, part_o[(static_cast<int64_t>(z) * total + row) * g.dv + c], o);
    }
    dst[c] = o;
  }
  if (lse && lane == 0) lse[stat_index(g, b, hk, rho)] = row_lse;
}

// ---- backward ----------------------------------------------------------------------------------------------

// D (B, H, Tq): D = dout · out per query row; one warp per row of the (B, Tq, H) layout.
__global__ void attention_row_dot_kernel(float* __restrict__ D, const float* __restrict__ dout,
                                         const float* __restrict__ out, Geometry g) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);  // (b, i, h)
  const int64_t total = static_cast<int64_t>(g.B) * g.Tq * g.H;
  if (n >= total) return;
  float s = 0.0f;
  for (int c = lane; c < g.dv; c += 32) s = fmaf(dout[n * g.dv + c], out[n * g.dv + c], s);
  s = cuda::warp_sum(s);
  if (lane == 0) {
    const int h = static_cast<int>(n % g.H);
    const int64_t bi = n / g.H;
    const int i = static_cast<int>(bi % g.Tq), b = static_cast<int>(bi / g.Tq);
    D[(static_cast<int64_t>(b) * g.H + h) * g.Tq + i] = s;
  }
}

// dQ for 64 query rows per block: grid (ceil(rows / 64), B * Hk); block 128 threads (TY = 8, RA = 8).
// Loops over the key tiles the rows see; dq = scale Σ_j dS_ij k_j, set.
template <int NMQ, int MATH>
__global__ void __launch_bounds__(128) attention_dq_kernel(float* __restrict__ dq, const float* __restrict__ dout,
                                                          const float* __restrict__ q, const float* __restrict__ k,
                                                          const float* __restrict__ v, const float* __restrict__ lse,
                                                          const float* __restrict__ D, Geometry g) {
  constexpr int TY = 8, RA = 8, BR = TY * RA;
  DSK_DYNAMIC_SHARED(SharedBase, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);
  const int ldq = g.wq + 4, ldv = g.wv + 4;
  float* Qs = smem;                                    // [64][ldq]
  float* dOs = Qs + BR * ldq;                          // [64][ldv]
  float* Ks = dOs + BR * ldv;                          // [64][ldq]
  float* Vs = g.shared_kv ? Ks : Ks + kKeyTile * ldq;  // [64][ldv]
  float* dSs = g.shared_kv ? Ks + kKeyTile * ldq : Vs + kKeyTile * ldv;  // [64][kPStride]
  float* stage = dSs + BR * kPStride;                                    // [64][kPStride] (none with FFMA)

  const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
  const int bk = blockIdx.y, b = bk / g.Hk, hk = bk % g.Hk;
  const int rho0 = blockIdx.x * BR;
  const int rho_last = min(rho0 + BR, g.rows) - 1;
  const int kend = min(g.Tk, rho_last / g.G + g.offset + 1);
  const int ntiles = (kend + kKeyTile - 1) / kKeyTile;

  const ThreadRows<RA> rows = thread_rows<TY, RA>(g, b, hk, rho0);
  float row_lse2[RA], row_D[RA], acc[RA][NMQ][4];
#pragma unroll
  for (int a = 0; a < RA; ++a) {
    row_lse2[a] = rows.ok[a] ? lse[rows.stat[a]] * kLog2e : 0.0f;
    row_D[a] = rows.ok[a] ? D[rows.stat[a]] : 0.0f;
#pragma unroll
    for (int m = 0; m < NMQ; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[a][m][e] = 0.0f;
  }

  load_tile(Qs, ldq, BR, g.wq, g.dqk, [&](int r) -> const float* {
    return rho0 + r < g.rows ? q + q_row(g, b, hk, rho0 + r) * g.dqk : nullptr;
  });
  load_tile(dOs, ldv, BR, g.wv, g.dv, [&](int r) -> const float* {
    return rho0 + r < g.rows ? dout + q_row(g, b, hk, rho0 + r) * g.dv : nullptr;
  });

  for (int t = 0; t < ntiles; ++t) {
    const int j0 = t * kKeyTile;
    load_tile(Ks, ldq, kKeyTile, g.wq, g.dqk, [&](int r) -> const float* {
      return j0 + r < kend ? k + kv_row(g, b, hk, j0 + r) * g.dqk : nullptr;
    });
    if (!g.shared_kv)
      load_tile(Vs, ldv, kKeyTile, g.wv, g.dv, [&](int r) -> const float* {
        return j0 + r < kend ? v + kv_row(g, b, hk, j0 + r) * g.dv : nullptr;
      });
    __syncthreads();

    float s[RA][kKeysPerThread], dp[RA][kKeysPerThread];
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) s[a][kk] = dp[a][kk] = 0.0f;
    any_tile_dot<MATH, TY, RA>(s, Qs, ldq, Ks, ldq, g.dqk, stage);
    any_tile_dot<MATH, TY, RA>(dp, dOs, ldv, Vs, ldv, g.dv, stage);
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) {
        const int j = j0 + tx + kTx * kk;
        float ds = 0.0f;
        if (j <= rows.last_key[a] && j < kend && row_lse2[a] != -INFINITY) {
          const float p = exp2f(s[a][kk] * g.scale2 - row_lse2[a]);
          ds = p * (dp[a][kk] * drop_multiplier(g, rows.stat[a], j) - row_D[a]);
        }
        dSs[(ty + TY * a) * kPStride + tx + kTx * kk] = ds;
      }
    __syncthreads();
    any_tile_pv<MATH, TY, RA, NMQ>(acc, dSs, Ks, ldq, stage);  // dQ += dS K
    __syncthreads();
  }

#pragma unroll
  for (int a = 0; a < RA; ++a) {
    if (!rows.ok[a]) continue;
    float* dst = dq + q_row(g, b, hk, rho0 + ty + TY * a) * g.dqk;
#pragma unroll
    for (int m = 0; m < NMQ; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = 4 * tx + 64 * m + e;
        if (c < g.dqk) dst[c] = acc[a][m][e] * g.scale;
      }
  }
}

// dK, dV for one 64-key tile per block: grid (ceil(Tk / 64), B * Hk); block 256 threads (TY = 16, RA = 4: each
// thread owns 4 keys). Loops over the query-row tiles that see the keys in ascending order; all G heads sharing
// the K/V are in those rows, so the sum over heads is this fixed-order loop. dk = scale Σ dS^T q, dv = Σ (P∘M)^T dout.
template <int NMQ, int NMV, int MATH>
__global__ void __launch_bounds__(256, 1) attention_dkv_kernel(float* __restrict__ dk, float* __restrict__ dv,
                                                           const float* __restrict__ dout,
                                                           const float* __restrict__ q, const float* __restrict__ k,
                                                           const float* __restrict__ v, const float* __restrict__ lse,
                                                           const float* __restrict__ D, Geometry g) {
  constexpr int TY = 16, RA = 4, BQ = 64;  // BQ: query rows per inner tile
  DSK_DYNAMIC_SHARED(SharedBase, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);
  const int ldq = g.wq + 4, ldv = g.wv + 4;
  float* Ks = smem;                                    // [64][ldq]  this block's keys
  float* Vs = g.shared_kv ? Ks : Ks + kKeyTile * ldq;  // [64][ldv]
  float* Qs = g.shared_kv ? Ks + kKeyTile * ldq : Vs + kKeyTile * ldv;  // [BQ][ldq]
  float* dOs = Qs + BQ * ldq;                          // [BQ][ldv]
  float* Ps = dOs + BQ * ldv;                          // [64 keys][kPStride]  (P∘M)^T
  float* dSs = Ps + kKeyTile * kPStride;                // [64 keys][kPStride]  dS^T
  float* stage = dSs + kKeyTile * kPStride;            // [64][kPStride] tensor-core products (none with FFMA)
  float* lse2s = stage + (MATH == kFfmaMath ? 0 : kKeyTile * kPStride);  // [BQ] row lse in base 2
  float* Ds = lse2s + BQ;                              // [BQ]
  int* lasts = reinterpret_cast<int*>(Ds + BQ);        // [BQ] last key each row sees (-1: no row)
  long long* stats = reinterpret_cast<long long*>(lasts + BQ);  // [BQ] statistics index (8-byte aligned: see size)

  const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
  const int bk = blockIdx.y, b = bk / g.Hk, hk = bk % g.Hk;
  const int j0 = blockIdx.x * kKeyTile;

  float acc_k[RA][NMQ][4], acc_v[RA][NMV][4];
#pragma unroll
  for (int a = 0; a < RA; ++a) {
#pragma unroll
    for (int m = 0; m < NMQ; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_k[a][m][e] = 0.0f;
#pragma unroll
    for (int m = 0; m < NMV; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_v[a][m][e] = 0.0f;
  }

  load_tile(Ks, ldq, kKeyTile, g.wq, g.dqk, [&](int r) -> const float* {
    return j0 + r < g.Tk ? k + kv_row(g, b, hk, j0 + r) * g.dqk : nullptr;
  });
  if (!g.shared_kv)
    load_tile(Vs, ldv, kKeyTile, g.wv, g.dv, [&](int r) -> const float* {
      return j0 + r < g.Tk ? v + kv_row(g, b, hk, j0 + r) * g.dv : nullptr;
    });

  // The first query row that can see key j0 is position j0 - offset, i.e. rho = (j0 - offset) * G.
  const int first_rho = max(0, j0 - g.offset) * g.G;
  for (int rho0 = (first_rho / BQ) * BQ; rho0 < g.rows; rho0 += BQ) {
    load_tile(Qs, ldq, BQ, g.wq, g.dqk, [&](int r) -> const float* {
      return rho0 + r < g.rows ? q + q_row(g, b, hk, rho0 + r) * g.dqk : nullptr;
    });
    load_tile(dOs, ldv, BQ, g.wv, g.dv, [&](int r) -> const float* {
      return rho0 + r < g.rows ? dout + q_row(g, b, hk, rho0 + r) * g.dv : nullptr;
    });
    for (int r = threadIdx.x; r < BQ; r += blockDim.x) {
      const int rho = rho0 + r;
      if (rho < g.rows) {
        const int64_t st = stat_index(g, b, hk, rho);
        stats[r] = st;
        lasts[r] = rho / g.G + g.offset;
        lse2s[r] = lse[st] * kLog2e;
        Ds[r] = D[st];
      } else {
        stats[r] = 0;
        lasts[r] = -1;
        lse2s[r] = 0.0f;
        Ds[r] = 0.0f;
      }
    }
    __syncthreads();  // K, V (first pass), Q, dO, row data visible

    // Transposed scores: s[a][kk] for key ty + 16a and query row tx + 16kk of this tile.
    float s[RA][kKeysPerThread], dp[RA][kKeysPerThread];
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) s[a][kk] = dp[a][kk] = 0.0f;
    any_tile_dot<MATH, TY, RA>(s, Ks, ldq, Qs, ldq, g.dqk, stage);
    any_tile_dot<MATH, TY, RA>(dp, Vs, ldv, dOs, ldv, g.dv, stage);
#pragma unroll
    for (int a = 0; a < RA; ++a) {
      const int key = ty + TY * a, j = j0 + key;
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) {
        const int r = tx + kTx * kk;
        float pm = 0.0f, ds = 0.0f;
        if (j < g.Tk && j <= lasts[r] && lse2s[r] != -INFINITY) {
          const float p = exp2f(s[a][kk] * g.scale2 - lse2s[r]);
          const float mult = drop_multiplier(g, stats[r], j);
          pm = p * mult;
          ds = p * (dp[a][kk] * mult - Ds[r]);
        }
        Ps[key * kPStride + r] = pm;
        dSs[key * kPStride + r] = ds;
      }
    }
    __syncthreads();
    any_tile_pv<MATH, TY, RA, NMV>(acc_v, Ps, dOs, ldv, stage);  // dV += (P∘M)^T dO
    any_tile_pv<MATH, TY, RA, NMQ>(acc_k, dSs, Qs, ldq, stage);  // dK += dS^T Q
    __syncthreads();  // Q, dO, P, dS free for the next row tile
  }

#pragma unroll
  for (int a = 0; a < RA; ++a) {
    const int j = j0 + ty + TY * a;
    if (j >= g.Tk) continue;
    float* dkr = dk + kv_row(g, b, hk, j) * g.dqk;
    float* dvr = dv + kv_row(g, b, hk, j) * g.dv;
#pragma unroll
    for (int m = 0; m < NMQ; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = 4 * tx + 64 * m + e;
        if (c < g.dqk) dkr[c] = acc_k[a][m][e] * g.scale;
      }
#pragma unroll
    for (int m = 0; m < NMV; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = 4 * tx + 64 * m + e;
        if (c < g.dv) dvr[c] = acc_v[a][m][e];
      }
  }
}

// ---- host side ---------------------------------------------------------------------------------------------

int capacity_of(const AttentionShape& s) { return kv_capacity_of(s); }
int width_blocks(int dim) { return (dim + 63) / 64; }

void check_shape(const AttentionShape& s, const AttentionDropout& drop) {
  check_attention_shape(s, drop);
  DSK_CHECK(s.qk_dim <= 64 * kMaxNm && s.v_dim <= 64 * kMaxNm,
            "attention (CUDA): qk_dim {} and v_dim {} must be at most {}", s.qk_dim, s.v_dim, 64 * kMaxNm);
  DSK_CHECK(static_cast<int64_t>(s.batch) * s.kv_heads <= 65535, "attention (CUDA): batch * kv_heads {} exceeds "
            "the grid limit 65535", static_cast<int64_t>(s.batch) * s.kv_heads);
}

Geometry make_geometry(const AttentionShape& s, const AttentionDropout& drop, bool shared_kv) {
  Geometry g;
  g.B = s.batch;
  g.Tq = s.q_len;
  g.Tk = s.kv_len;
  g.cap = capacity_of(s);
  g.H = s.heads;
  g.Hk = s.kv_heads;
  g.G = s.heads / s.kv_heads;
  g.dqk = s.qk_dim;
  g.dv = s.v_dim;
  g.wq = 64 * width_blocks(s.qk_dim);
  g.wv = 64 * width_blocks(s.v_dim);
  g.rows = s.q_len * g.G;
  g.offset = s.kv_len - s.q_len;
  g.scale = s.scale;
  g.scale2 = s.scale * kLog2e;
  g.shared_kv = shared_kv;
  g.drop_p = drop.p;
  g.drop_mult = 1.0f / (1.0f - drop.p);
  g.seed = drop.seed;
  g.site = drop.site;
  return g;
}

// The arithmetic of the 64-row kernels: cuda::attention_math resolved (tensor_math.cuh).
TileMath attention_tile_math() { return tile_math(cuda::attention_math(), "attention_math"); }

int max_shared_bytes() {
  static int bytes = [] {
    int dev = 0, v = 0;
    DSK_CUDA_CHECK(cudaGetDevice(&dev));
    DSK_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return v;
  }();
  return bytes;
}

// Raises a kernel's dynamic shared-memory limit (needed above 48 KB) and checks the device has that much.
template <class Kernel>
void allow_shared(Kernel kernel, size_t bytes, const char* what) {
  DSK_CHECK(bytes <= static_cast<size_t>(max_shared_bytes()),
            "{}: needs {} bytes of shared memory per block, the device allows {} (qk/v widths too large)", what,
            bytes, max_shared_bytes());
  DSK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// Calls f(std::integral_constant<int, NM>{}) for NM = nm in 1..4.
template <class F>
void with_nm(int nm, F&& f) {
  switch (nm) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: DSK_FAIL("attention (CUDA): unsupported width block count {}", nm);
  }
}

// Forward with BR = TY*RA rows per block; splits the key range when the grid would not fill the GPU.
template <int TY, int RA, int MATH>
void launch_forward(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* kv_start,
                    const Geometry& g) {
  constexpr int BR = TY * RA;
  const int row_blocks = static_cast<int>(cuda::ceil_div(g.rows, BR));
  const int64_t blocks = static_cast<int64_t>(row_blocks) * g.B * g.Hk;
  DSK_CHECK(row_blocks <= 0x7fffffff, "attention: too many rows");
  // Split the keys when fewer than two waves of blocks would run, keeping at least 2 key tiles per split.
  const int max_tiles = static_cast<int>(cuda::ceil_div(g.Tk, kKeyTile));
  const int64_t target = 2LL * cuda::sm_count();
  int splits = 1;
  if (blocks < target) splits = static_cast<int>(std::min<int64_t>(cuda::ceil_div(target, blocks), max_tiles / 2));
  splits = std::max(1, std::min(splits, 64));

  const size_t ldq = g.wq + 4, ldv = g.wv + 4;
  const size_t floats = BR * ldq + kKeyTile * ldq + (g.shared_kv ? 0 : kKeyTile * ldv) + BR * kPStride +
                        stage_floats(TileMath(MATH), BR);
  const size_t bytes = floats * sizeof(float);

  float *part_o = nullptr, *part_lse = nullptr;
  if (splits > 1) {
    const size_t prow = static_cast<size_t>(splits) * g.B * g.Hk * g.rows;
    part_o = static_cast<float*>(cuda::scratch(prow * (g.dv + 1) * sizeof(float)));
    part_lse = part_o + prow * g.dv;
  }
  with_nm(g.wv / 64, [&](auto nmv) {
    constexpr int NMV = decltype(nmv)::value;
    auto kernel = attention_forward_kernel<TY, RA, NMV, MATH>;
    allow_shared(kernel, bytes, "attention_forward");
    dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(g.B * g.Hk), static_cast<unsigned>(splits));
    DSK_LAUNCH(grid, TY * kTx, bytes, kernel)(out, lse, part_o, part_lse, q, k, v, kv_start, g);
    DSK_CUDA_CHECK_LAUNCH();
  });
  if (splits > 1) {
    const int64_t rows_total = static_cast<int64_t>(g.B) * g.Hk * g.rows;
    constexpr int kWarps = 4;
    DSK_LAUNCH(static_cast<unsigned>(cuda::ceil_div(rows_total, kWarps)), kWarps * 32, 0, attention_combine_kernel)(
        out, lse, part_o, part_lse, splits, g);
    DSK_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

template <>
void attention_forward<Backend::CUDA>(float* out, float* lse, const float* q, const float* k, const float* v,
                                      const int32_t* kv_start, const AttentionShape& s, const AttentionDropout& drop) {
  check_shape(s, drop);
  // kv_start lives on the device; its range is the caller's responsibility (the CPU checks it on the host).
  const Geometry g = make_geometry(s, drop, k == v && s.qk_dim == s.v_dim);
  DSK_CHECK(cuda::ceil_div(g.rows, 16) <= 0x7fffffff, "attention: too many rows");
  // Decode-like shapes (a few query rows per (b, kv head)) use 8- or 16-row blocks, training 64. Every block row
  // costs its multiply-adds whether or not it is a real query row: absorbed decode of the default config has 8
  // rows (its heads), and with 16-row blocks half of the work would be padding.
  // The tensor cores (attention_math) take the 16- and 64-row blocks: wmma's fragments have 16 rows, and an 8-row
  // block on them would multiply as many padding rows as real ones.
  if (g.rows <= 8)
    launch_forward<8, 1, kFfmaMath>(out, lse, q, k, v, kv_start, g);
  else if (g.rows <= 16)
    with_tile_math(attention_tile_math(), [&](auto math) {
      launch_forward<8, 2, decltype(math)::value>(out, lse, q, k, v, kv_start, g);
    });
  else
    with_tile_math(attention_tile_math(), [&](auto math) {
      // The tensor-core blocks spread the 64 rows over 8 warps (4 rows per thread): with 4 the 3xTF32 fragments
      // on top of the output accumulators spilled at width 128 (scripts/kernel_resources.sh).
      constexpr int MATH = decltype(math)::value;
      if constexpr (MATH == kFfmaMath)
        launch_forward<8, 8, MATH>(out, lse, q, k, v, kv_start, g);
      else
        launch_forward<16, 4, MATH>(out, lse, q, k, v, kv_start, g);
    });
}

template <>
void attention_backward<Backend::CUDA>(float* dq, float* dk, float* dv, const float* dout, const float* q,
                                       const float* k, const float* v, const float* out, const float* lse,
                                       const AttentionShape& s, const AttentionDropout& drop) {
  check_shape(s, drop);
  const int T = s.q_len;
  DSK_CHECK(s.kv_len == T && capacity_of(s) == T,
            "attention_backward: training shapes only (q_len = kv_len = kv_capacity), got {} / {} / {}", T, s.kv_len,
            capacity_of(s));
  DSK_CHECK(lse != nullptr, "attention_backward: needs the log-sum-exp saved by the forward");
  const Geometry g = make_geometry(s, drop, k == v && s.qk_dim == s.v_dim);
  const size_t ldq = g.wq + 4, ldv = g.wv + 4;
  const TileMath math = attention_tile_math();

  // D = dout · out per row (B, H, T), in scratch (kernels below only read it).
  const int64_t nrows = static_cast<int64_t>(s.batch) * T * s.heads;
  float* D = static_cast<float*>(cuda::scratch(static_cast<size_t>(nrows) * sizeof(float)));
  {
    constexpr int kWarps = 8;
    DSK_LAUNCH(static_cast<unsigned>(cuda::ceil_div(nrows, kWarps)), kWarps * 32, 0, attention_row_dot_kernel)(
        D, dout, out, g);
    DSK_CUDA_CHECK_LAUNCH();
  }

  // dQ: 64 query rows per block.
  {
    const size_t floats = 64 * ldq + 64 * ldv + kKeyTile * ldq + (g.shared_kv ? 0 : kKeyTile * ldv) +
                          64 * kPStride + stage_floats(math, 64);
    const size_t bytes = floats * sizeof(float);
    with_tile_math(math, [&](auto mt) {
    with_nm(g.wq / 64, [&](auto nmq) {
      constexpr int NMQ = decltype(nmq)::value;
      auto kernel = attention_dq_kernel<NMQ, decltype(mt)::value>;
      allow_shared(kernel, bytes, "attention_backward (dq)");
      dim3 grid(static_cast<unsigned>(cuda::ceil_div(g.rows, 64)), static_cast<unsigned>(g.B * g.Hk));
      DSK_LAUNCH(grid, 128, bytes, kernel)(dq, dout, q, k, v, lse, D, g);
      DSK_CUDA_CHECK_LAUNCH();
    });
    });
  }

  // dK, dV: one 64-key tile per block.
  {
    const size_t floats = kKeyTile * ldq + (g.shared_kv ? 0 : kKeyTile * ldv) + 64 * ldq + 64 * ldv +
                          2 * kKeyTile * kPStride + 2 * 64 /* lse2s, Ds */ + 64 /* lasts */ + 1 /* align */ +
                          2 * 64 /* stats: 64 int64 */ + stage_floats(math, kKeyTile);
    const size_t bytes = floats * sizeof(float);
    with_tile_math(math, [&](auto mt) {
    with_nm(g.wq / 64, [&](auto nmq) {
      with_nm(g.wv / 64, [&](auto nmv) {
        constexpr int NMQ = decltype(nmq)::value, NMV = decltype(nmv)::value;
        auto kernel = attention_dkv_kernel<NMQ, NMV, decltype(mt)::value>;
        allow_shared(kernel, bytes, "attention_backward (dk, dv)");
        dim3 grid(static_cast<unsigned>(cuda::ceil_div(T, kKeyTile)), static_cast<unsigned>(g.B * g.Hk));
        DSK_LAUNCH(grid, 256, bytes, kernel)(dk, dv, dout, q, k, v, lse, D, g);
        DSK_CUDA_CHECK_LAUNCH();
      });
    });
    });
  }
}

}  // namespace dsk
