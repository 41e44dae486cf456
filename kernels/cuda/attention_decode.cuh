#pragma once
// The decode forward: a few query rows per (b, kv head) against a long key range, the shape of a sampling step
// (absorbed MLA: the heads sharing the latent; explicit: one new token per head), in every attention_math (FFMA on
// the CUDA cores, TF32 or 3xTF32 on the tensor cores). attention_forward.cu launches it for forward shapes of at
// most 16 rows per (b, kv head) and output widths up to 128, unless cuda::DecodeBlock asks for the forward
// kernels' own small blocks (the FFMA 8/16-row block, the one-warp mma block).
//
// Why a kernel of its own: decode reads every key of the cache once and does little arithmetic per key, so its speed
// is how much of the cache is in flight and how fast a tile is consumed. The forward kernels' decode blocks wait for
// each key tile and then compute it (the one-warp mma block on a single warp; the FFMA block with 1 row x 4 keys
// per thread, more shared-memory reads than FMAs): their loads and their products take turns. Here
//   - a block of 4 warps shares the 8 or 16 query rows and each 64-key tile: warp w takes keys 16w .. 16w + 15 of the
//     tile (S = Q K_w^T and O_w += P_w V_w) with its own running max, sum and output;
//   - the tiles are double-buffered: tile t + 1 is copied (cp.async, committed as a group) while tile t is computed,
//     so the block always has a tile in flight;
//   - the keys are split over gridDim.z blocks so the grid fills the GPU's resident-block slots once
//     (attention_forward.cu's run_forward), and attention_combine_kernel merges the splits.
// At the end the 4 warps' states are merged in warp order through shared memory (the stage buffers, free by then):
//   M = max_w m_w, L = Σ_w 2^(m_w - M) l_w, O = Σ_w 2^(m_w - M) O_w / L, lse = ln2 (M + log2 L)   (deterministic).
//
// Registers. A lane (gq = lane / 4, tq = lane % 4) owns rows gq + 8h (h < RH; RH = 2 for 16-row blocks, 1 for 8)
// and in S the keys 8n + tq + 4e of the warp's 16 (n, e < 2): s[n][2h + e], the layout of the tensor cores'
// accumulators (attention_mma.cuh), which the FFMA products below reproduce, so the softmax is one piece of code.
// The output accumulators differ: on the tensor cores o[c][2h + e] is column 8c + 2tq + e (mma's layout); with FFMA
// o[c][4h + x] is column 16c + 4tq + x, so each V read is one float4 that serves 4 RH multiply-adds.
// FFMA products: per 4 dims S reads a float4 of each of the lane's RH rows and 4 keys (the warp's reads of one
// instruction are a few distinct float4s, each broadcast over the 4 lanes of a key or the 8 of a row; expected to
// take one shared-memory wavefront, to be confirmed by a profile) for 16 RH FMAs; P V gets P's values of the warp's
// 16 keys by a shuffle within the quad (key j's value sits in lane tq = j % 4).
// Shared memory: Q [8 RH][wq + 4] + 2 stages of K [64][wq + 4] and V [64][wv + 8] (K's own when shared):
// absorbed width 128: 72-76 KB, explicit width 64: 72-76 KB (3 blocks per SM by shared memory and registers; the
// launch asks the occupancy calculator).
#include "kernels/cuda/attention_mma.cuh"

namespace dsk::attn {

constexpr int kDecodeWarps = 4;
constexpr int kDecodeStages = 2;  // key tiles in shared memory: the one computed, the one in flight
constexpr int kDecodeKeysPerWarp = kKeyTile / kDecodeWarps;  // 16: two 8-key groups
constexpr int kDecodeGroups = kDecodeKeysPerWarp / 8;

// The merge scratch's row stride (floats): 4 x rows of wv values, + 4 (its stores still meet 2-4-way bank conflicts,
// once per block: negligible).
inline __host__ __device__ int decode_ldo(const Geometry& g) { return g.wv + 4; }

// Shared floats of a decode block of `rows` (8 or 16) query rows: the tiles, or the merge scratch placed after Q if
// that is larger.
inline size_t decode_floats(const Geometry& g, int rows) {
  const size_t q = static_cast<size_t>(rows) * mma_ldq(g);
  const size_t stage = static_cast<size_t>(kKeyTile) * mma_ldq(g) + (g.shared_kv ? 0 : kKeyTile * mma_ldv(g));
  const size_t merge = static_cast<size_t>(kDecodeWarps) * rows * (decode_ldo(g) + 2);
  return q + std::max(kDecodeStages * stage, merge);
}

// A lane's output accumulators, in the layout above: v[NC][4] on the tensor cores (NC = 8 NMV tiles of 8 columns),
// v[NC][4 RH] with FFMA (NC = 4 NMV groups of 16 columns).
template <int MATH, int NMV, int RH>
struct DecodeAcc {
  static constexpr bool kFfma = MATH == kFfmaMath;
  static constexpr int NC = kFfma ? 4 * NMV : 8 * NMV;
  static constexpr int W = kFfma ? 4 * RH : 4;
  float v[NC][W];

  // Row h's accumulators times alpha (the tensor cores' layout: attention_mma.cuh's helper).
  __device__ __forceinline__ void scale_row(int h, float alpha) {
    if constexpr (!kFfma) {
      scale_warp_row(v, h, alpha);
    } else {
#pragma unroll
      for (int c = 0; c < NC; ++c)
#pragma unroll
        for (int x = 0; x < 4; ++x) v[c][4 * h + x] *= alpha;
    }
  }
  // dst[col] = row h's accumulator of column col, for col < dim.
  __device__ __forceinline__ void store_row(float* dst, int h, int dim) const {
    if constexpr (!kFfma) {
      store_warp_row(dst, v, h, dim, 1.0f);
    } else {
      const int tq = threadIdx.x % 4;
#pragma unroll
      for (int c = 0; c < NC; ++c)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int col = 16 * c + 4 * tq + x;
          if (col < dim) dst[col] = v[c][4 * h + x];
        }
    }
  }
};

// FFMA: s[n][2h + e] += Σ_d A[gq + 8h][d] · Bm[8n + tq + 4e][d] over d < dim4 (a multiple of 4; the tiles' padding
// is zero), for h < RH. A points at row 0, Bm at the warp's first key.
template <int RH>
__device__ __forceinline__ void warp_scores_ffma(float (&s)[kDecodeGroups][4], const float* A, int lda,
                                                 const float* Bm, int ldb, int dim4) {
  const int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
#pragma unroll 2
  for (int d = 0; d < dim4; d += 4) {
    float4 a[RH];
#pragma unroll
    for (int h = 0; h < RH; ++h) a[h] = ld4(A + (gq + 8 * h) * lda + d);
#pragma unroll
    for (int n = 0; n < kDecodeGroups; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float4 b = ld4(Bm + (8 * n + tq + 4 * e) * ldb + d);
#pragma unroll
        for (int h = 0; h < RH; ++h) {
          float& x = s[n][2 * h + e];
          x = fmaf(a[h].x, b.x, x);
          x = fmaf(a[h].y, b.y, x);
          x = fmaf(a[h].z, b.z, x);
          x = fmaf(a[h].w, b.w, x);
        }
      }
  }
}

// FFMA: o[c][4h + x] += Σ_j P[gq + 8h][j] · Tm[j][16c + 4tq + x] over the warp's 16 keys j (P in s's layout: key j
// of row h is s[j / 8][2h + (j % 8) / 4] of lane tq = j % 4 of the quad). Tm points at the warp's first key.
template <int RH, class Acc>
__device__ __forceinline__ void warp_times_tile_ffma(Acc& o, const float (&p)[kDecodeGroups][4], const float* Tm,
                                                     int ldt) {
  const int lane = threadIdx.x % 32, tq = lane % 4;
#pragma unroll
  for (int j = 0; j < kDecodeKeysPerWarp; ++j) {
    const int n = j / 8, e = (j % 8) / 4, src = (lane & ~3) | (j % 4);
    float pj[RH];
#pragma unroll
    for (int h = 0; h < RH; ++h) pj[h] = __shfl_sync(0xffffffffu, p[n][2 * h + e], src);
    const float* trow = Tm + j * ldt + 4 * tq;
#pragma unroll
    for (int c = 0; c < Acc::NC; ++c) {
      const float4 t = ld4(trow + 16 * c);
#pragma unroll
      for (int h = 0; h < RH; ++h) {
        o.v[c][4 * h] = fmaf(pj[h], t.x, o.v[c][4 * h]);
        o.v[c][4 * h + 1] = fmaf(pj[h], t.y, o.v[c][4 * h + 1]);
        o.v[c][4 * h + 2] = fmaf(pj[h], t.z, o.v[c][4 * h + 2]);
        o.v[c][4 * h + 3] = fmaf(pj[h], t.w, o.v[c][4 * h + 3]);
      }
    }
  }
}

// grid (B * Hk, ceil(rows / (8 RH)), splits); 128 threads. Outputs as attention_forward_kernel (out / lse, or the
// split's part_o / part_lse). MATH: kFfmaMath, kTf32Math or kTf32x3Math; NMV = wv / 64 (at most 2); RH = 2 on the
// tensor cores (the fragment's 16 rows), 1 or 2 with FFMA.
template <int MATH, int NMV, int RH>
__global__ void __launch_bounds__(kDecodeWarps * 32) attention_decode_kernel(
    float* __restrict__ out, float* __restrict__ lse, float* __restrict__ part_o, float* __restrict__ part_lse,
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const int32_t* __restrict__ kv_start, Geometry g) {
  constexpr bool kFfma = MATH == kFfmaMath, kSplit = MATH == kTf32x3Math;
  static_assert(kFfma || RH == 2, "the tensor-core products are 16 rows");
  constexpr int kRows = 8 * RH;
  constexpr int NG = kDecodeGroups;
  DSK_DYNAMIC_SHARED(SharedBase, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);
  const int ldq = mma_ldq(g), ldv = mma_ldv(g);
  const int stage_floats = kKeyTile * ldq + (g.shared_kv ? 0 : kKeyTile * ldv);
  float* Qs = smem;                        // [kRows][ldq]
  float* stages = Qs + kRows * ldq;        // kDecodeStages x (K [64][ldq], V [64][ldv])
  const auto key_tile = [&](int s) { return stages + s * stage_floats; };
  const auto value_tile = [&](int s) { return g.shared_kv ? key_tile(s) : key_tile(s) + kKeyTile * ldq; };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int b = block_bk() / g.Hk, hk = block_bk() % g.Hk;
  const int rho0 = block_row_tile() * kRows;
  const ForwardKeys keys = forward_keys(g, kv_start, b, rho0, kRows);
  const int kend = keys.kend, ntiles = keys.t_end - keys.t_begin;

  // This lane's rows: block rows gq + 8h (h < RH), the same for every warp.
  int last_key[RH];
  int64_t stat[RH];
#pragma unroll
  for (int h = 0; h < RH; ++h) {
    const int rho = rho0 + gq + 8 * h;
    last_key[h] = rho < g.rows ? rho / g.G + g.offset : -1;
    stat[h] = rho < g.rows ? stat_index(g, b, hk, rho) : 0;
  }
  float row_max[RH], row_sum[RH];
#pragma unroll
  for (int h = 0; h < RH; ++h) row_max[h] = -INFINITY, row_sum[h] = 0.0f;
  DecodeAcc<MATH, NMV, RH> o;
  zero(o.v);

  // Tile i of the split (key tile keys.t_begin + i) into stage i % 2.
  const auto load_stage = [&](int i) {
    const int j0 = keys.start + (keys.t_begin + i) * kKeyTile;
    load_key_tile(key_tile(i % kDecodeStages), ldq, g, k, b, hk, j0, kend);
    if (!g.shared_kv) load_value_tile(value_tile(i % kDecodeStages), ldv, g, v, b, hk, j0, kend);
  };
  if (ntiles > 0) {
    load_row_tile(Qs, ldq, kRows, g.wq, g.dqk, g, q, b, hk, rho0);
    load_stage(0);
  }
  copies_commit();
  const int dq8 = (g.dqk + 7) / 8 * 8;  // the tiles' padding beyond dqk is zero (a multiple of 4 for FFMA too)

  for (int i = 0; i < ntiles; ++i) {
    if (i + 1 < ntiles) load_stage(i + 1);  // into the stage every warp left at the end of iteration i - 1
    copies_commit();
    copies_wait_pending<1>();  // all but the newest group: tile i (and Q) landed
    __syncthreads();           // ... for the whole block
    const int jw = keys.start + (keys.t_begin + i) * kKeyTile + kDecodeKeysPerWarp * warp;  // the warp's first key
    const float* Kw = key_tile(i % kDecodeStages) + kDecodeKeysPerWarp * warp * ldq;
    const float* Vw = value_tile(i % kDecodeStages) + kDecodeKeysPerWarp * warp * ldv;

    // S = Q K_w^T: s[n][2h + e] is row h's key jw + 8n + tq + 4e.
    float s[NG][4];
    zero(s);
    if constexpr (kFfma)
      warp_scores_ffma<RH>(s, Qs, ldq, Kw, ldq, dq8);
    else
      warp_scores<kSplit>(s, Qs, ldq, Kw, ldq, dq8);

    // Online softmax on the registers, over the warp's 16 keys.
#pragma unroll
    for (int h = 0; h < RH; ++h)
      o.scale_row(h, online_softmax_row(s, h, jw, last_key[h], kend, stat[h], g, row_max[h], row_sum[h]));
    if constexpr (kFfma)
      warp_times_tile_ffma<RH>(o, s, Vw, ldv);  // O_w += P_w V_w
    else
      warp_times_tile<kSplit>(o.v, s, Vw, ldv);
    __syncthreads();  // every warp is done with this stage before iteration i + 1 refills it
  }

  // Merge the warps: each writes its rows' max, sum and unnormalized output to the scratch (over the stages).
  float* Os = stages;  // [4][kRows][ldo]
  const int ldo = decode_ldo(g);
  float* Ms = Os + kDecodeWarps * kRows * ldo;  // [4][kRows]
  float* Ls = Ms + kDecodeWarps * kRows;        // [4][kRows]
#pragma unroll
  for (int h = 0; h < RH; ++h) {
    float l = row_sum[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int slot = warp * kRows + gq + 8 * h;
    if (tq == 0) {
      Ms[slot] = row_max[h];
      Ls[slot] = l;
    }
    o.store_row(Os + slot * ldo, h, g.dv);
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kRows * g.dv; idx += blockDim.x) {
    const int r = idx / g.dv, c = idx % g.dv, rho = rho0 + r;
    if (rho >= g.rows) break;  // rows grow with idx
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) M = fmaxf(M, Ms[w * kRows + r]);
    float L = 0.0f, acc = 0.0f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float a = exp2f(Ms[w * kRows + r] - M);  // 0 for a warp that saw no key of this row
        L = fmaf(a, Ls[w * kRows + r], L);
        acc = fmaf(a, Os[(w * kRows + r) * ldo + c], acc);
      }
    }
    // L >= 1 when M is finite (the maximum's own term); a row that saw no key writes 0 and -inf.
    const float row_lse = M == -INFINITY ? -INFINITY : (M + log2f(L)) * kLn2;
    float* dst = forward_row_output(g, out, lse, part_o, part_lse, b, hk, rho, stat_index(g, b, hk, rho), row_lse,
                                    c == 0);
    dst[c] = M == -INFINITY ? 0.0f : acc / L;
  }
}

}  // namespace dsk::attn
