#pragma once
// The tensor-core decode forward (TF32 or 3xTF32): a few query rows per (b, kv head) against a long key range, the
// shape of a sampling step (absorbed MLA: the heads sharing the latent; explicit: one new token per head).
// Launched by attention_forward.cu for forward shapes of at most 16 rows per (b, kv head) in a tensor-core
// attention_math (cuda::DecodeBlock chooses it or the one-warp block of attention_mma.cuh; kAuto takes this one).
//
// Why a kernel of its own: decode reads every key of the cache once and does little arithmetic per key, so its speed
// is how much of the cache is in flight. The one-warp block (attention_mma.cuh) waits for each key tile, then
// computes it on one warp: its loads and its products take turns. Here
//   - a block of 4 warps shares the 16 query rows (the fragment height) and each 64-key tile: warp w takes keys
//     16w .. 16w + 15 of the tile (S = Q K_w^T, 16 x 16, and O_w += P_w V_w), with its own running max, sum and output,
//     so a tile's products are spread over 4 warps instead of 1;
//   - the tiles are double-buffered: tile t + 1 is copied (cp.async, committed as a group) while tile t is computed,
//     so the block always has a tile in flight;
//   - the keys are split over gridDim.z blocks so the grid fills the GPU's resident-block slots once
//     (attention_forward.cu's run_forward), and attention_combine_kernel merges the splits.
// At the end the 4 warps' states are merged in warp order through shared memory (the stage buffers, free by then):
//   M = max_w m_w, L = Σ_w 2^(m_w - M) l_w, O = Σ_w 2^(m_w - M) O_w / L, lse = ln2 (M + log2 L)   (deterministic).
// Shared memory: Q [16][wq + 4] + 2 stages of K [64][wq + 4] and V [64][wv + 8] (K's own when shared):
// absorbed width 128: 76 KB (2 blocks per SM); explicit width 64: 76 KB.
#include "kernels/cuda/attention_mma.cuh"

namespace dsk::attn {

constexpr int kDecodeWarps = 4;
constexpr int kDecodeRows = 16;   // one fragment height, shared by the block's warps
constexpr int kDecodeStages = 2;  // key tiles in shared memory: the one computed, the one in flight
constexpr int kDecodeKeysPerWarp = kKeyTile / kDecodeWarps;  // 16: two 8-key groups

// The merge scratch's row stride (floats): 4 x 16 rows of wv values, + 4 so the warps' rows spread over banks.
inline __host__ __device__ int decode_ldo(const Geometry& g) { return g.wv + 4; }

// Shared floats of a decode block: the tiles, or the merge scratch placed after Q if that is larger.
inline size_t decode_floats(const Geometry& g) {
  const size_t q = static_cast<size_t>(kDecodeRows) * mma_ldq(g);
  const size_t stage = static_cast<size_t>(kKeyTile) * mma_ldq(g) + (g.shared_kv ? 0 : kKeyTile * mma_ldv(g));
  const size_t merge = static_cast<size_t>(kDecodeWarps) * kDecodeRows * (decode_ldo(g) + 2);
  return q + std::max(kDecodeStages * stage, merge);
}

// grid (ceil(rows / 16), B * Hk, splits); 128 threads. Outputs as attention_forward_kernel (out / lse, or the
// split's part_o / part_lse). NMV = wv / 64 (at most 2).
template <int NMV, bool kSplit>
__global__ void __launch_bounds__(kDecodeWarps * 32) attention_decode_kernel(
    float* __restrict__ out, float* __restrict__ lse, float* __restrict__ part_o, float* __restrict__ part_lse,
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const int32_t* __restrict__ kv_start, Geometry g) {
  constexpr int NT = 8 * NMV;  // 8-column output tiles
  constexpr int NG = kDecodeKeysPerWarp / 8;
  DSK_DYNAMIC_SHARED(SharedBase, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);
  const int ldq = mma_ldq(g), ldv = mma_ldv(g);
  const int stage_floats = kKeyTile * ldq + (g.shared_kv ? 0 : kKeyTile * ldv);
  float* Qs = smem;                                 // [16][ldq]
  float* stages = Qs + kDecodeRows * ldq;           // kDecodeStages x (K [64][ldq], V [64][ldv])
  const auto key_tile = [&](int s) { return stages + s * stage_floats; };
  const auto value_tile = [&](int s) { return g.shared_kv ? key_tile(s) : key_tile(s) + kKeyTile * ldq; };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int b = blockIdx.y / g.Hk, hk = blockIdx.y % g.Hk;
  const int rho0 = blockIdx.x * kDecodeRows;
  const ForwardKeys keys = forward_keys(g, kv_start, b, rho0, kDecodeRows);
  const int kend = keys.kend, ntiles = keys.t_end - keys.t_begin;

  // This lane's two rows: block rows gq (h = 0) and gq + 8 (h = 1), the same for every warp.
  int last_key[2];
  int64_t stat[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int rho = rho0 + gq + 8 * h;
    last_key[h] = rho < g.rows ? rho / g.G + g.offset : -1;
    stat[h] = rho < g.rows ? stat_index(g, b, hk, rho) : 0;
  }
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  float o[NT][4];
  zero(o);

  // Tile i of the split (key tile keys.t_begin + i) into stage i % 2, as one committed group per thread.
  const auto load_stage = [&](int i) {
    const int j0 = keys.start + (keys.t_begin + i) * kKeyTile;
    load_key_tile(key_tile(i % kDecodeStages), ldq, g, k, b, hk, j0, kend);
    if (!g.shared_kv) load_value_tile(value_tile(i % kDecodeStages), ldv, g, v, b, hk, j0, kend);
  };
  if (ntiles > 0) {
    load_row_tile(Qs, ldq, kDecodeRows, g.wq, g.dqk, g, q, b, hk, rho0);
    load_stage(0);
  }
  copies_commit();
  const int dq8 = (g.dqk + 7) / 8 * 8;  // the tiles' padding beyond dqk is zero

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
    warp_scores<kSplit>(s, Qs, ldq, Kw, ldq, dq8);

    // Online softmax on the registers, as attention_forward_mma_kernel over the warp's 16 keys.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int n = 0; n < NG; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = jw + 8 * n + tq + 4 * e;
          float& x = s[n][2 * h + e];
          x = (j <= last_key[h] && j < kend) ? x * g.scale2 : -INFINITY;
          tile_max = fmaxf(tile_max, x);
        }
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
      const float new_max = fmaxf(row_max[h], tile_max);
      const float ref = new_max == -INFINITY ? 0.0f : new_max;  // no key seen yet: exp2f gives 0, not NaN
      const float alpha = exp2f(row_max[h] - ref);
      row_max[h] = new_max;
      float psum = 0.0f;
#pragma unroll
      for (int n = 0; n < NG; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[n][2 * h + e];
          const float p = exp2f(x - ref);
          psum += p;
          // Dropout acts on the probabilities that multiply V; the normalizer stays un-dropped (as on the CPU).
          x = p == 0.0f ? 0.0f : p * drop_multiplier(g, stat[h], jw + 8 * n + tq + 4 * e);
        }
      row_sum[h] = row_sum[h] * alpha + psum;
#pragma unroll
      for (int c = 0; c < NT; ++c) {
        o[c][2 * h] *= alpha;
        o[c][2 * h + 1] *= alpha;
      }
    }
    warp_times_tile<kSplit>(o, s, Vw, ldv);  // O_w += P_w V_w
    __syncthreads();  // every warp is done with this stage before iteration i + 1 refills it
  }

  // Merge the warps: each writes its rows' max, sum and unnormalized output to the scratch (over the stages).
  float* Os = stages;                                  // [4][16][ldo]
  const int ldo = decode_ldo(g);
  float* Ms = Os + kDecodeWarps * kDecodeRows * ldo;  // [4][16]
  float* Ls = Ms + kDecodeWarps * kDecodeRows;        // [4][16]
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = row_sum[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int r = gq + 8 * h, slot = warp * kDecodeRows + r;
    if (tq == 0) {
      Ms[slot] = row_max[h];
      Ls[slot] = l;
    }
    store_warp_row(Os + slot * ldo, o, h, g.dv, 1.0f);
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kDecodeRows * g.dv; idx += blockDim.x) {
    const int r = idx / g.dv, c = idx % g.dv, rho = rho0 + r;
    if (rho >= g.rows) break;  // rows grow with idx
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) M = fmaxf(M, Ms[w * kDecodeRows + r]);
    float L = 0.0f, acc = 0.0f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float a = exp2f(Ms[w * kDecodeRows + r] - M);  // 0 for a warp that saw no key of this row
        L = fmaf(a, Ls[w * kDecodeRows + r], L);
        acc = fmaf(a, Os[(w * kDecodeRows + r) * ldo + c], acc);
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
