#pragma once
// Causal attention on the GPU (the contract is kernels/attention.h; kernels/cpu/attention.cpp is the spec): what
// the forward (attention_forward.cu) and the backward (attention_backward.cu) share: the design below, the
// problem's geometry and indexing, the shared-memory tiles and their products (FFMA and tensor cores), and the host
// helpers that size and launch the kernels.
//
// One flash-style design for every form the model uses, fp32 on the CUDA cores (FFMA) or with its products on the
// tensor cores in TF32 or 3xTF32 (cuda::attention_math; see "the same products on the tensor cores" below):
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
// Widths are padded with zeros to W = 64*NM (NM = ceil(dim / 64) <= 4): qk/v widths up to 256 (shared memory
// permitting, below).
//
// Forward (attention_forward_kernel): online softmax in base 2 (scores scaled by scale*log2(e), exp2f), per
// key tile: S = Q K^T (registers), running max/sum update, P (with the dropout multiplier) to shared memory,
// O += P V. Writes out = O / l and lse = ln2 * (m + log2 l); a row with no visible key writes 0 and -inf.
// Decode / small grids: when the blocks would not fill the GPU, each block's key range is split over
// gridDim.z blocks (flash-decoding); each writes its normalized partial output and partial lse, and
// attention_combine_kernel merges them in split order (deterministic); the splits fill the GPU's resident-block
// slots once. Decode shapes (<= 16 rows per (b, hk), widths up to 128) run their own kernel, in every arithmetic
// (attention_decode.cuh: 4 warps splitting each key tile, double-buffered tiles); cuda::DecodeBlock can ask for the
// forward kernels' own small blocks instead (8- or 16-row FFMA blocks, one-warp 16-row mma blocks).
//
// Backward (flash-attention-2 math, made deterministic by two kernels instead of atomics):
//   D_i = dout_i · out_i                                          (attention_row_dot_kernel)
//   P = exp(s - lse), dP = dout V^T, dS = P∘(dP∘M - D)            (recomputed in both kernels below)
//   dQ = scale dS K          one block per 64 query rows, loops over the key tiles   (attention_dq_kernel)
//   dK = scale dS^T Q, dV = (P∘M)^T dout   one block per 64-key tile, loops over every query row that sees it, in
//       order, for all heads sharing the K/V tile (so the Hk = 1 sum over heads is a fixed-order register
//       accumulation, no atomics)                                                          (attention_dkv_kernel)
//       When those blocks are too few to fill the GPU twice (Hk = 1: one block per key tile and batch row, each
//       looping over T*H rows), the loop is split over gridDim.z blocks (fill_splits); each writes its partial
//       dK, dV and attention_sum_splits_kernel adds them in split order (deterministic).
//   At qk widths up to 64 (cuda::BackwardDq::kFused, the default; FFMA or tensor cores) the dK/dV kernel also forms
//   each key tile's share of dQ from its dS (flash-attention-2's one pass: no dQ kernel recomputing S and dP) into
//   a dq-sized slice per key tile; attention_dq_sum_kernel adds the slices in key-tile order (deterministic).
// The dropout mask M is regenerated from rng::keep with the same element index as the CPU; never stored.
//
// Shared memory per block (floats; Wq = 64*NMq, Wv = 64*NMv; Ks doubles as Vs when k == v and dqk == dv):
//   forward: Q [BR][Wq+4] + K [64][Wq+4] + V [64][Wv+4] + P [BR][80]       (dqk = dv = 128, shared: 88 KB)
//   dq:      Q, dO [64][W+4] + K, V [64][W+4] + dS [64][80]                 (explicit hd 64: 90 KB)
//   dkv:     K, V, Q, dO [64][W+4] + P, dS [64][80] + lse, D [64]            (explicit hd 64: 111 KB)
//   the tensor-core kernels add a staging tile [BR][80] (BR = 64: 20 KB; the 16-row forward: 5 KB). Where that does
//   not fit the device's 227 KB (widths over 192 with separate K and V) the FFMA kernel runs (fitting_math).
//   Widths up to 256 work in the forward; the backward's blocks hold four or five tiles and fit up to 128, or 192
//   with 128 (wider is a one-line error from allow_shared).
// Tiles are loaded with cp.async (every copy of a tile in flight at once). Not double-buffered outside the decode
// kernel: a block waits for its tile before computing and other blocks on the SM overlap it; the register forward with separate K and V also
// overlaps V's load with S and the next K's with P V (attention_mma.cuh). On the tensor cores the forward (training and
// decode) and both backward kernels keep their products in registers where the widths are at most 128 (mma.sync
// m16n8k8, flash-attention-2's layout: attention_mma.cuh); wider shapes use wmma through a shared staging tile
// (below). wgmma and multi-stage pipelining are next.
#include "kernels/attention.h"
#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/launch_facts.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/cuda/tensor_math.cuh"
#include "kernels/rng.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

namespace dsk::attn {

constexpr int kKeyTile = 64;            // keys per K/V tile
constexpr int kTx = 16;                 // threads across keys / columns
constexpr int kKeysPerThread = kKeyTile / kTx;  // 4
constexpr int kPStride = kKeyTile + 16;         // probability tile row stride (see the header comment)
constexpr int kMaxNm = 4;                        // widths up to 256
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// The dynamic shared memory's declared type: 32-byte aligned, as wmma's fragment pointers must be (every tile in it
// starts at a multiple of 8 floats).
struct alignas(32) SharedBase {
  float x[8];
};

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
  bool vec4;       // every row the kernels load starts 16-byte aligned: tiles load with float4 (rows_aligned16)
  float drop_p, drop_mult;  // dropout probability, 1 / (1 - p)
  uint64_t seed, site;
};

// ---- indexing ----------------------------------------------------------------------------------------------

// A block's place in its grid, (B * Hk, tiles, splits): its (b, kv head) and its 64-row query tile or key tile
// (block_tile_grid). Blocks start in linear order (x fastest), so every (b, kv head) starts a tile index before
// any starts the next, and the tiles are numbered heaviest first: under the causal mask the last query rows see the
// most keys (row tiles run from the last one down) and the first keys are seen by the most rows (key tiles from
// the first up). The short blocks then fill in behind the long ones rather than the long ones starting last.
__device__ __forceinline__ int block_bk() { return static_cast<int>(blockIdx.x); }
__device__ __forceinline__ int block_row_tile() { return static_cast<int>(gridDim.y - 1 - blockIdx.y); }
__device__ __forceinline__ int block_key_tile() { return static_cast<int>(blockIdx.y); }

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

// The backward's two values for one (row, key) element, from its raw score s and dP = dO·v_j, the row's base-2 lse
// and D, and the dropout multiplier (regenerated): P∘M (dV's weight) and dS = P∘(dP∘M - D). Both 0 where the key is
// not visible to the row or the row sees no key at all (lse -inf). Every backward kernel computes them here.
struct BackwardElement {
  float pm, ds;
};
__device__ __forceinline__ BackwardElement backward_element(const Geometry& g, bool visible, float s, float dp,
                                                            float lse2, float D, int64_t stat, int j) {
  if (!visible || lse2 == -INFINITY) return {0.0f, 0.0f};
  const float p = exp2f(s * g.scale2 - lse2);
  const float mult = drop_multiplier(g, stat, j);
  return {p * mult, p * (dp * mult - D)};
}

// ---- shared-memory tiles -----------------------------------------------------------------------------------

// dst[r][c] (stride ld) = src row r, columns [0, width), for r < R; zero where src_row(r) is null (row outside the
// problem) or c >= dim (padding). The copies are asynchronous (async_copy.cuh): every thread issues all of its
// copies at once, so the whole tile is in flight, and the caller runs copies_wait_all() and then __syncthreads()
// before anyone reads the tile. `owned`: an address of the source tensor, named by the zero-filled copies (they
// read nothing, but cp.async needs a global address). One warp per row: coalesced global reads, conflict-free
// shared stores. vec4 (dim a multiple of 4, every source row 16-byte aligned): 16-byte copies, a row per half warp
// at width 64; else 4-byte copies.
template <class SrcRow>
__device__ __forceinline__ void load_tile(float* dst, int ld, int R, int width, int dim, bool vec4, const float* owned,
                                          SrcRow src_row) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (vec4) {
    // A row takes width/4 lanes (at most 32): at width 64 each half warp loads its own row.
    const int per_row = min(32, width / 4), rows_per_warp = 32 / per_row;
    const int sub = lane / per_row, l = lane % per_row;
    for (int r = warp * rows_per_warp + sub; r < R; r += nwarps * rows_per_warp) {
      const float* src = src_row(r);
      for (int c = 4 * l; c < width; c += 4 * per_row) {
        const bool valid = src != nullptr && c < dim;
        copy_async_zfill<16>(dst + r * ld + c, valid ? src + c : owned, valid);
      }
    }
    return;
  }
  for (int r = warp; r < R; r += nwarps) {
    const float* src = src_row(r);
    for (int c = lane; c < width; c += 32) {
      const bool valid = src != nullptr && c < dim;
      copy_async_zfill<4>(dst + r * ld + c, valid ? src + c : owned, valid);
    }
  }
}

// Rows rho0 .. rho0 + R - 1 of (b, hk) of a query-row tensor x (q: dim dqk, padded width wq; out/dout: dv, wv);
// zero past the last row. Asynchronous, as load_tile.
__device__ __forceinline__ void load_row_tile(float* dst, int ld, int R, int width, int dim, const Geometry& g,
                                              const float* x, int b, int hk, int rho0) {
  load_tile(dst, ld, R, width, dim, g.vec4, x, [&](int r) -> const float* {
    return rho0 + r < g.rows ? x + q_row(g, b, hk, rho0 + r) * dim : nullptr;
  });
}

// The K tile of keys j0 .. j0 + 63 of (b, hk); zero from key kend on. Asynchronous, as load_tile.
__device__ __forceinline__ void load_key_tile(float* Ks, int ldk, const Geometry& g, const float* k, int b, int hk,
                                              int j0, int kend) {
  load_tile(Ks, ldk, kKeyTile, g.wq, g.dqk, g.vec4, k, [&](int r) -> const float* {
    return j0 + r < kend ? k + kv_row(g, b, hk, j0 + r) * g.dqk : nullptr;
  });
}
// The V tile of the same keys (a separate V: not shared_kv). Asynchronous, as load_tile.
__device__ __forceinline__ void load_value_tile(float* Vs, int ldv, const Geometry& g, const float* v, int b, int hk,
                                                int j0, int kend) {
  load_tile(Vs, ldv, kKeyTile, g.wv, g.dv, g.vec4, v, [&](int r) -> const float* {
    return j0 + r < kend ? v + kv_row(g, b, hk, j0 + r) * g.dv : nullptr;
  });
}
// Both tiles, V's unless K's serves as V (shared_kv).
__device__ __forceinline__ void load_kv_tiles(float* Ks, int ldk, float* Vs, int ldv, const Geometry& g,
                                              const float* k, const float* v, int b, int hk, int j0, int kend) {
  load_key_tile(Ks, ldk, g, k, b, hk, j0, kend);
  if (!g.shared_kv) load_value_tile(Vs, ldv, g, v, b, hk, j0, kend);
}

// The dQ kernels' operand tiles, carved from the start of dynamic shared memory: Q [64][ldq], dO [64][ldv],
// K [64][ldq], V [64][ldv] (K's tile when shared); `end` is where the kernel's own tiles may follow.
struct DqTiles {
  float *Qs, *dOs, *Ks, *Vs, *end;
};
__device__ __forceinline__ DqTiles dq_tiles(float* smem, const Geometry& g, int ldq, int ldv) {
  DqTiles t;
  t.Qs = smem;
  t.dOs = t.Qs + 64 * ldq;
  t.Ks = t.dOs + 64 * ldv;
  t.Vs = g.shared_kv ? t.Ks : t.Ks + kKeyTile * ldq;
  t.end = g.shared_kv ? t.Ks + kKeyTile * ldq : t.Vs + kKeyTile * ldv;
  return t;
}

// The dK/dV kernels' query tile of 64 rows: per row its base-2 lse, D, last visible key (-1: no such row) and
// statistics index, in shared arrays carved from `at` (3 x 64 floats, then 64 int64: `at` must be 16-byte aligned).
struct QueryRows {
  float* lse2;
  float* D;
  int* last;
  long long* stat;
};
constexpr int kQueryRowsFloats = 3 * 64 + 2 * 64;
__device__ __forceinline__ QueryRows query_rows_at(float* at) {
  return {at, at + 64, reinterpret_cast<int*>(at + 128), reinterpret_cast<long long*>(at + 192)};
}
// Q and dO rows rho0 .. rho0 + 63 of (b, hk) into their tiles (asynchronously, as load_tile), and those rows' data
// into `rows` (plain stores).
__device__ __forceinline__ void load_query_tile(float* Qs, int ldq, float* dOs, int ldv, const QueryRows& rows,
                                                const Geometry& g, const float* q, const float* dout,
                                                const float* lse, const float* D, int b, int hk, int rho0) {
  load_row_tile(Qs, ldq, 64, g.wq, g.dqk, g, q, b, hk, rho0);
  load_row_tile(dOs, ldv, 64, g.wv, g.dv, g, dout, b, hk, rho0);
  for (int r = threadIdx.x; r < 64; r += blockDim.x) {
    const int rho = rho0 + r;
    const bool ok = rho < g.rows;
    const int64_t st = ok ? stat_index(g, b, hk, rho) : 0;
    rows.stat[r] = st;
    rows.last[r] = ok ? rho / g.G + g.offset : -1;
    rows.lse2[r] = ok ? lse[st] * kLog2e : 0.0f;
    rows.D[r] = ok ? D[st] : 0.0f;
  }
}
// The first 64-row query tile that sees key j0 (position j0 - offset, i.e. rho = (j0 - offset) * G, rounded down).
__device__ __forceinline__ int first_query_tile(const Geometry& g, int j0) {
  return max(0, j0 - g.offset) * g.G / 64 * 64;
}

// This block's run of a loop over `ntiles` tiles split over gridDim.z blocks: tiles [begin, end), ceil(ntiles /
// gridDim.z) per split (fill_splits rounds the split count so that no run of the longest loop is empty; a shorter
// loop's last splits may get none: begin >= end).
struct TileRun {
  int begin, end;
};
__device__ __forceinline__ TileRun split_run(int ntiles) {
  const int per_split = (ntiles + static_cast<int>(gridDim.z) - 1) / static_cast<int>(gridDim.z);
  const int begin = static_cast<int>(blockIdx.z) * per_split;
  return {begin, min(ntiles, begin + per_split)};
}

// The query rows [begin, end) (whole 64-row tiles from begin on; end may cut the last one) a dK/dV block of key
// tile j0 loops over: the rows that see its keys, this split's run of their tiles (split_run).
struct QueryTiles {
  int begin, end;
};
__device__ __forceinline__ QueryTiles dkv_query_tiles(const Geometry& g, int j0) {
  const int first = first_query_tile(g, j0);
  const TileRun run = split_run(first < g.rows ? (g.rows - first + 63) / 64 : 0);
  return {first + 64 * run.begin, min(g.rows, first + 64 * run.end)};
}

// Floats of q and dq (B, Tq, H, dqk): one key tile's slice of the fused dQ's partials.
__host__ __device__ inline int64_t q_floats(const Geometry& g) {
  return static_cast<int64_t>(g.B) * g.Tq * g.H * g.dqk;
}
// Floats of the key and value gradients dk (B, cap, Hk, dqk) and dv (B, cap, Hk, dv): one split's slice of their
// partials.
__host__ __device__ inline int64_t dk_floats(const Geometry& g) { return static_cast<int64_t>(g.B) * g.cap * g.Hk * g.dqk; }
__host__ __device__ inline int64_t dv_floats(const Geometry& g) { return static_cast<int64_t>(g.B) * g.cap * g.Hk * g.dv; }

// Where a block of split blockIdx.z writes an output of `per_split` floats: the output itself when the loop is not
// split (gridDim.z == 1), else that split's slice of the partials (summed in split order afterwards).
__device__ __forceinline__ float* split_slice(float* out, int64_t per_split) {
  return out + static_cast<int64_t>(blockIdx.z) * per_split;
}

// A forward block's keys: [start, kend) from kv_start to the last key its last row (of rows rho0 .. rho0 + BR - 1)
// sees, and the key tiles [t_begin, t_end) of its split (split_run).
struct ForwardKeys {
  int start, kend, t_begin, t_end;
};
__device__ __forceinline__ ForwardKeys forward_keys(const Geometry& g, const int32_t* kv_start, int b, int rho0,
                                                    int BR) {
  ForwardKeys f;
  f.start = kv_start ? kv_start[b] : 0;
  const int rho_last = min(rho0 + BR, g.rows) - 1;
  f.kend = min(g.Tk, rho_last / g.G + g.offset + 1);
  const TileRun run = split_run(f.kend > f.start ? (f.kend - f.start + kKeyTile - 1) / kKeyTile : 0);
  f.t_begin = run.begin;
  f.t_end = run.end;
  return f;
}

// Where a forward block writes query row rho's output (dv floats, returned) and log-sum-exp (when write_lse):
// out / lse, or with split keys this split's part_o / part_lse rows for attention_combine_kernel.
__device__ __forceinline__ float* forward_row_output(const Geometry& g, float* out, float* lse, float* part_o,
                                                     float* part_lse, int b, int hk, int rho, int64_t stat,
                                                     float row_lse, bool write_lse) {
  if (gridDim.z == 1) {
    if (lse && write_lse) lse[stat] = row_lse;
    return out + q_row(g, b, hk, rho) * g.dv;
  }
  const int64_t prow = (static_cast<int64_t>(blockIdx.z) * gridDim.x + block_bk()) * g.rows + rho;
  if (write_lse) part_lse[prow] = row_lse;
  return part_o + prow * g.dv;
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

// acc[a][m][e] += Σ_j P[ty + TY*a][j] * Vm[j][4tx + 64m + e] over the 64 keys j of a tile (P's rows at stride ldp).
template <int TY, int RA, int NM>
__device__ __forceinline__ void tile_pv(float (&acc)[RA][NM][4], const float* P, const float* Vm, int ldv,
                                        int ldp = kPStride) {
  const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
#pragma unroll 2
  for (int j = 0; j < kKeyTile; j += 4) {
    float4 pv[RA];
#pragma unroll
    for (int a = 0; a < RA; ++a) pv[a] = ld4(P + (ty + TY * a) * ldp + j);
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
inline size_t stage_floats(TileMath math, int BR) { return math == kFfmaMath ? 0 : static_cast<size_t>(BR) * kPStride; }

// Zeroes a thread's register accumulator (any shape: the output columns acc[RA][NM][4], the scores acc[RA][4]).
template <class T, size_t N>
__device__ __forceinline__ void zero(T (&acc)[N]) {
#pragma unroll
  for (size_t i = 0; i < N; ++i) {
    if constexpr (std::is_array_v<T>)
      zero(acc[i]);
    else
      acc[i] = 0.0f;
  }
}

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


// ---- host side ---------------------------------------------------------------------------------------------

inline int capacity_of(const AttentionShape& s) { return kv_capacity_of(s); }
inline int width_blocks(int dim) { return (dim + 63) / 64; }

inline void check_shape(const AttentionShape& s, const AttentionDropout& drop) {
  check_attention_shape(s, drop);
  DSK_CHECK(s.qk_dim <= 64 * kMaxNm && s.v_dim <= 64 * kMaxNm,
            "attention (CUDA): qk_dim {} and v_dim {} must be at most {}", s.qk_dim, s.v_dim, 64 * kMaxNm);
  DSK_CHECK(static_cast<int64_t>(s.batch) * s.kv_heads <= 0x7fffffff, "attention (CUDA): batch * kv_heads {} "
            "exceeds the grid limit 2^31 - 1", static_cast<int64_t>(s.batch) * s.kv_heads);
}

// same_kv: k and v are one tensor (the shared latent); its tile serves as V's when the widths agree too.
inline Geometry make_geometry(const AttentionShape& s, const AttentionDropout& drop, bool same_kv) {
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
  g.shared_kv = same_kv && s.qk_dim == s.v_dim;
  g.vec4 = false;  // rows_aligned16 decides, knowing the pointers
  g.drop_p = drop.p;
  g.drop_mult = 1.0f / (1.0f - drop.p);
  g.seed = drop.seed;
  g.site = drop.site;
  return g;
}

// The grid of `tiles` query-row or key tiles per (b, kv head), in `splits` parts: (B * Hk, tiles, splits), the order
// block_bk / block_row_tile / block_key_tile read.
inline dim3 block_tile_grid(const Geometry& g, int64_t tiles, int splits) {
  DSK_CHECK(tiles <= 65535, "attention (CUDA): {} tiles of 64 rows or keys exceed the grid limit 65535", tiles);
  return dim3(static_cast<unsigned>(g.B * g.Hk), static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
}

// Whether every row of these tensors (q, k, v, and dout in the backward) starts 16-byte aligned: widths multiples
// of 4 and base pointers aligned (then the tiles load with float4).
inline bool rows_aligned16(const Geometry& g, std::initializer_list<const void*> tensors) {
  return dsk::rows_aligned16({g.dqk, g.dv}, tensors);
}

// The arithmetic of the attention kernels: cuda::attention_math resolved (tensor_math.cuh).
inline TileMath attention_tile_math() { return tile_math(cuda::attention_math(), "attention_math"); }

using cuda::allow_shared;
using cuda::max_shared_bytes;
using cuda::resident_blocks;

// How many parts a kernel splits each block's loop into (gridDim.z; its blocks then write partials that a second
// kernel merges in split order) when `blocks` blocks would leave some of the GPU's `slots` resident-block slots
// empty: enough for the blocks to fill the slots `waves` times (none if they already do), each part at least 2 of
// the longest loop's `max_tiles` tiles, at most 64 parts. Rounded so that splitting the longest loop in
// ceil(max_tiles / splits)-tile runs (as the kernels do) leaves none of its parts empty. One wave where every block
// has the same work (decode: a second, nearly empty wave would cost as much as the first); two where the work is
// uneven (the causal dK/dV loops), so that the blocks of short loops fill in behind the long ones.
inline int fill_splits(int64_t blocks, int64_t slots, int max_tiles, int waves) {
  const int64_t fill = waves * slots / std::max<int64_t>(blocks, 1);
  const int splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({fill, max_tiles / 2, 64})));
  return static_cast<int>(cuda::ceil_div(max_tiles, cuda::ceil_div(max_tiles, splits)));
}

// Whether a block of `floats` shared floats fits the device.
inline bool fits_shared(size_t floats) { return floats * sizeof(float) <= static_cast<size_t>(max_shared_bytes()); }

// The arithmetic a kernel runs when its tensor-core form needs `tc_floats` of shared memory: that form adds a
// staging tile, and at the widest shapes only the FFMA form fits the device (then that one runs).
inline TileMath fitting_math(TileMath math, size_t tc_floats) {
  return math == kFfmaMath || fits_shared(tc_floats) ? math : kFfmaMath;
}

// A kernel's name in reports: "ffma" (the CUDA-core kernel), "mma <math>" (register-resident products,
// attention_mma.cuh) or "wmma-staged <math>" (products through a shared staging tile).
inline std::string kernel_form(bool registers, TileMath math) {
  if (math == kFfmaMath) return "ffma";
  return std::string(registers ? "mma " : "wmma-staged ") + tile_math_name(math);
}

// Calls f(std::integral_constant<int, NM>{}) for NM = nm in 1..4.
template <class F>
inline void with_nm(int nm, F&& f) {
  switch (nm) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: DSK_FAIL("attention (CUDA): unsupported width block count {}", nm);
  }
}

// Forward with BR = TY*RA rows per block; splits the key range when the grid would not fill the GPU.

}  // namespace dsk::attn
