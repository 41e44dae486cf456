#pragma once
// The tensor-core attention kernels with register-resident products (flash-attention-2's layout), in TF32 or
// 3xTF32: the forward (training and decode; launched by attention_forward.cu), and the dQ and dK/dV kernels of the
// backward (attention_backward.cu; at qk width 64 the dK/dV kernel computes dQ too). The design shared by every
// attention kernel is in attention_common.cuh.
//
// A block is 4 warps and 64 query rows, 16 per warp (its decode block, one warp of 16 rows, runs only when
// cuda::DecodeBlock::kForwardKernel asks: decode has attention_decode.cuh); key tiles of 64 as
// everywhere. Each warp computes its
// S = Q K^T (16 x 64) with mma.sync m16n8k8 straight into registers (warp_scores), works on it there (the online
// softmax in the forward, dS = P∘(dP∘M - D) in dQ; a row's values sit in the 4 lanes of a quad: 2 xor-shuffles per
// reduction), and feeds the result back as the A operand of the next product (warp_times_tile: O += P V,
// dQ += dS K): no shared staging tile, no P tile, and no block barrier between the products (the staged wmma
// kernels have two per product). Only the operand tiles live in shared memory.
//
// The key order inside each 8-key group is permuted so that S's accumulator layout IS P's operand layout: S's
// column c holds key perm(c) = 4 (c % 2) + c / 2, so a lane's accumulators (g, 2t) and (g, 2t+1) are keys t and
// t + 4, exactly the A fragment's (g, t) and (g, t + 4) for the P V product (whose k runs over keys in order).
// Bank conflicts: Q and K fragments read rows at stride W + 4 (4g + t: all 32 banks); V's B fragments read
// (key t, column g): stride Wv + 8 when V has its own tile (8t + g: all banks), 2-way when K's tile serves as V.
#include "kernels/cuda/attention_common.cuh"

namespace dsk::attn {

constexpr int kMmaWarps = 4;
constexpr int kMmaRows = 16 * kMmaWarps;  // 64 query rows per block

// Row strides of the register kernel's tiles (floats): Q and K [rows][wq + 4], V [64][wv + 8] (K's own when shared).
inline __host__ __device__ int mma_ldq(const Geometry& g) { return g.wq + 4; }
inline __host__ __device__ int mma_ldv(const Geometry& g) { return g.shared_kv ? g.wq + 4 : g.wv + 8; }

// Shared floats of a forward block of the register kernel with `warps` warps (16 query rows each).
inline size_t forward_mma_floats(const Geometry& g, int warps) {
  const size_t tiles = static_cast<size_t>(16 * warps + kKeyTile) * mma_ldq(g);
  return tiles + (g.shared_kv ? 0 : static_cast<size_t>(kKeyTile) * mma_ldv(g));
}

// Key of column c of an 8-key group of S (see above).
__device__ __forceinline__ int mma_key_of_column(int c) { return 4 * (c % 2) + c / 2; }

// s[n] += the warp's 16 rows of A (row-major, stride lda) times key group n of Bm (8 NG rows, stride ldb: 64 keys
// for a whole tile) transposed, over d < dim8 (a multiple of 8; the tiles' padding is zero): s[n][2h + e] is row
// gq + 8h, key 8n + tq + 4e. A points at the warp's first row, Bm at its first key.
template <bool kSplit, int NG>
__device__ __forceinline__ void warp_scores(float (&s)[NG][4], const float* A, int lda, const float* Bm, int ldb,
                                            int dim8) {
  const int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  for (int d = 0; d < dim8; d += 8) {
    float a[4], a_lo[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = A[(gq + 8 * (i % 2)) * lda + d + tq + 4 * (i / 2)];
    prepare_tf32<kSplit>(a, a_lo);
#pragma unroll
    for (int n = 0; n < NG; ++n) {
      const float* key = Bm + (8 * n + mma_key_of_column(gq)) * ldb + d + tq;
      float bf[2] = {key[0], key[4]}, bf_lo[2];
      prepare_tf32<kSplit>(bf, bf_lo);
      mma_tf32<kSplit>(s[n], a, a_lo, bf, bf_lo);
    }
  }
}

// acc[c] += P Tm for the output columns 8c .. 8c + 7 (c < NT): P the warp's 16 x 8NG values in warp_scores' layout,
// Tm an 8NG-row tile (stride ldt) whose row j is key j of P. acc[c][2h + e] is row gq + 8h, column 8c + 2tq + e.
template <bool kSplit, int NT, int NG>
__device__ __forceinline__ void warp_times_tile(float (&acc)[NT][4], const float (&p)[NG][4], const float* Tm,
                                                int ldt) {
  const int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
#pragma unroll
  for (int n = 0; n < NG; ++n) {
    // Key group n's A fragment is p[n] reordered: a1 is row g + 8, key t.
    float a[4] = {p[n][0], p[n][2], p[n][1], p[n][3]}, a_lo[4];
    prepare_tf32<kSplit>(a, a_lo);
    const float* trow = Tm + (8 * n + tq) * ldt + gq;
#pragma unroll
    for (int c = 0; c < NT; ++c) {
      float bf[2] = {trow[8 * c], trow[4 * ldt + 8 * c]}, bf_lo[2];
      prepare_tf32<kSplit>(bf, bf_lo);
      mma_tf32<kSplit>(acc[c], a, a_lo, bf, bf_lo);
    }
  }
}

// acc[c][2h + e] *= alpha: row h of this lane's output accumulators (warp_times_tile's layout), after the online
// softmax moved the row's maximum.
template <int NT>
__device__ __forceinline__ void scale_warp_row(float (&acc)[NT][4], int h, float alpha) {
#pragma unroll
  for (int c = 0; c < NT; ++c) {
    acc[c][2 * h] *= alpha;
    acc[c][2 * h + 1] *= alpha;
  }
}

// dst[col] = factor * acc[c][2h + e] for this lane's columns col = 8c + 2tq + e < dim of row h (warp_times_tile's
// layout).
template <int NT>
__device__ __forceinline__ void store_warp_row(float* dst, const float (&acc)[NT][4], int h, int dim, float factor) {
  const int tq = threadIdx.x % 4;
#pragma unroll
  for (int c = 0; c < NT; ++c)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int col = 8 * c + 2 * tq + e;
      if (col < dim) dst[col] = acc[c][2 * h + e] * factor;
    }
}

// One online-softmax step of row h (this lane's rows: gq + 8h) over a key tile in registers, s[n][2h + e] holding the
// raw score of key j0 + 8n + tq + 4e (warp_scores' layout; the row's other keys sit in the quad's other lanes):
// keys past last_key (causal) or from kend on score -inf; the row's running max (base 2) and this lane's partial
// sum are updated, s becomes P times the dropout multiplier, and the factor for the row's output accumulators is
// returned (0 while no key was seen: exp2f(-inf)). Shared by the forward and the decode kernels.
template <int NG>
__device__ __forceinline__ float online_softmax_row(float (&s)[NG][4], int h, int j0, int last_key, int kend,
                                                    int64_t stat, const Geometry& g, float& row_max, float& row_sum) {
  const int tq = threadIdx.x % 4;
  float tile_max = -INFINITY;
#pragma unroll
  for (int n = 0; n < NG; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int j = j0 + 8 * n + tq + 4 * e;
      float& x = s[n][2 * h + e];
      x = (j <= last_key && j < kend) ? x * g.scale2 : -INFINITY;
      tile_max = fmaxf(tile_max, x);
    }
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
  const float new_max = fmaxf(row_max, tile_max);
  const float ref = new_max == -INFINITY ? 0.0f : new_max;  // no key seen yet: exp2f gives 0, not NaN
  const float alpha = exp2f(row_max - ref);
  row_max = new_max;
  float psum = 0.0f;
#pragma unroll
  for (int n = 0; n < NG; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float& x = s[n][2 * h + e];
      const float p = exp2f(x - ref);
      psum += p;
      // Dropout acts on the probabilities that multiply V; the normalizer stays un-dropped (as on the CPU).
      x = p == 0.0f ? 0.0f : p * drop_multiplier(g, stat, j0 + 8 * n + tq + 4 * e);
    }
  row_sum = row_sum * alpha + psum;
  return alpha;
}

// __launch_bounds__'s minimum blocks per SM, which sets ptxas's register budget: for the training block what its
// shared memory allows (width 64: 4 blocks of ~53 KB, 128 registers; width 128: 3 of ~68 KB, 170), so registers
// never lower the occupancy below that (left to its own heuristics ptxas gave the width-128 3xTF32 block 180
// registers, 2 blocks); 1 for the decode block, whose shared memory allows ~5 one-warp blocks anyway (the default
// budgets for many more and spilled). Cost: the TF32 width-64 block spills 16 bytes at 128 registers.
template <int NMV, int kWarps>
constexpr int kForwardMmaMinBlocks = kWarps == 1 ? 1 : (NMV == 1 ? 4 : 3);

// grid (B * Hk, ceil(rows / (16 kWarps)), splits); 32 kWarps threads, 16 query rows per warp. Outputs as
// attention_forward_kernel (out / lse, or the split's part_o / part_lse). NMV = wv / 64 (at most 2: the output
// accumulators are 32 registers per 64 columns). kWarps = 4 for training shapes; 1 for decode (at most 16 rows per
// (b, kv head): the heads sharing the latent, or a few new tokens): one warp's block holds all of them, and many
// small blocks per SM (split over the keys) keep the latent cache streaming while each computes.
template <int NMV, bool kSplit, int kWarps>
__global__ void __launch_bounds__(kWarps * 32, (kForwardMmaMinBlocks<NMV, kWarps>)) attention_forward_mma_kernel(
    float* __restrict__ out, float* __restrict__ lse, float* __restrict__ part_o, float* __restrict__ part_lse,
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const int32_t* __restrict__ kv_start, Geometry g) {
  constexpr int NT = 8 * NMV;  // 8-column output tiles
  DSK_DYNAMIC_SHARED(SharedBase, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);
  const int ldq = mma_ldq(g), ldv = mma_ldv(g);
  constexpr int kRows = 16 * kWarps;
  float* Qs = smem;                                                    // [kRows][ldq]
  float* Ks = Qs + kRows * ldq;                                        // [64][ldq]
  float* Vs = g.shared_kv ? Ks : Ks + kKeyTile * ldq;                  // [64][ldv]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int b = block_bk() / g.Hk, hk = block_bk() % g.Hk;
  const int rho0 = block_row_tile() * kRows;
  const ForwardKeys keys = forward_keys(g, kv_start, b, rho0, kRows);
  const int kend = keys.kend;

  // This lane's two rows: block rows 16 warp + gq (h = 0) and + 8 (h = 1).
  bool ok[2];
  int last_key[2];
  int64_t stat[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int rho = rho0 + 16 * warp + gq + 8 * h;
    ok[h] = rho < g.rows;
    last_key[h] = ok[h] ? rho / g.G + g.offset : -1;
    stat[h] = ok[h] ? stat_index(g, b, hk, rho) : 0;
  }
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  float o[NT][4];
  zero(o);

  // The loads overlap the products (flash-attention-2's order): with a separate V, V's tile is copied while S and
  // the softmax are computed, and the next K tile while P V is. A shared K = V tile is loaded at the top of its
  // iteration. (No key tiles: no Q either.)
  const auto load_keys = [&](int t) { load_key_tile(Ks, ldq, g, k, b, hk, keys.start + t * kKeyTile, kend); };
  if (keys.t_begin < keys.t_end) {
    load_row_tile(Qs, ldq, kRows, g.wq, g.dqk, g, q, b, hk, rho0);
    load_keys(keys.t_begin);
  }
  const float* q_warp = Qs + 16 * warp * ldq;
  const int dq8 = (g.dqk + 7) / 8 * 8;  // the tiles' padding beyond dqk is zero

  for (int t = keys.t_begin; t < keys.t_end; ++t) {
    const int j0 = keys.start + t * kKeyTile;
    if (g.shared_kv && t > keys.t_begin) load_keys(t);
    copies_wait_all();
    __syncthreads();  // Q (first tile) and K visible; every warp is done with the previous V (P V)
    if (!g.shared_kv) load_value_tile(Vs, ldv, g, v, b, hk, j0, kend);

    // S = Q K^T: s[n] is the 16 x 8 product with key group n.
    float s[8][4];
    zero(s);
    warp_scores<kSplit>(s, q_warp, ldq, Ks, ldq, dq8);

    // Online softmax on the registers: s[n][2h + e] is row h's key j0 + 8n + tq + 4e.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      scale_warp_row(o, h, online_softmax_row(s, h, j0, last_key[h], kend, stat[h], g, row_max[h], row_sum[h]));
    }

    if (!g.shared_kv) {
      copies_wait_all();
      __syncthreads();  // V visible; every warp is done with K (S)
      if (t + 1 < keys.t_end) load_keys(t + 1);
    }
    warp_times_tile<kSplit>(o, s, Vs, ldv);  // O += P V
    if (g.shared_kv) __syncthreads();  // the K = V tile free for the next load
  }

  // Finish: a row's sum is spread over its quad's 4 lanes.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = row_sum[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (!ok[h]) continue;
    const int rho = rho0 + 16 * warp + gq + 8 * h;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const float row_lse = l > 0.0f ? (row_max[h] + log2f(l)) * kLn2 : -INFINITY;
    float* dst = forward_row_output(g, out, lse, part_o, part_lse, b, hk, rho, stat[h], row_lse, tq == 0);
    store_warp_row(dst, o, h, g.dv, inv);
  }
}

// ---- backward: dQ -------------------------------------------------------------------------------------------

// Strides of the dQ kernel's tiles (floats): Q and K [64][wq + 4], dO and V [64][wv + 4] (V is K's tile when
// shared). V is read as warp_scores' B operand, like K, hence W + 4 for both (conflict-free there).
inline size_t dq_mma_floats(const Geometry& g) {
  const size_t ldq = g.wq + 4, ldv = g.wv + 4;
  return (kMmaRows + kKeyTile) * ldq + kMmaRows * ldv + (g.shared_kv ? 0 : kKeyTile * ldv);
}

// dQ for 64 query rows per block (16 per warp): grid (B * Hk, ceil(rows / 64)); 128 threads. Per key tile:
// S = Q K^T and dP = dO V^T (warp_scores), dS = P∘(dP∘M - D) in registers, dQ += dS K (warp_times_tile);
// dq = scale dQ, set. NMQ = wq / 64 (at most 2).
template <int NMQ, bool kSplit>
__global__ void __launch_bounds__(kMmaWarps * 32) attention_dq_mma_kernel(
    float* __restrict__ dq, const float* __restrict__ dout, const float* __restrict__ q, const float* __restrict__ k,
    const float* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ D, Geometry g) {
  constexpr int NT = 8 * NMQ;
  DSK_DYNAMIC_SHARED(SharedBase, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);
  const int ldq = g.wq + 4, ldv = g.wv + 4;
  const DqTiles tiles = dq_tiles(smem, g, ldq, ldv);
  float *Qs = tiles.Qs, *dOs = tiles.dOs, *Ks = tiles.Ks, *Vs = tiles.Vs;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int b = block_bk() / g.Hk, hk = block_bk() % g.Hk;
  const int rho0 = block_row_tile() * kMmaRows;
  const int rho_last = min(rho0 + kMmaRows, g.rows) - 1;
  const int kend = min(g.Tk, rho_last / g.G + g.offset + 1);
  const int ntiles = (kend + kKeyTile - 1) / kKeyTile;

  // This lane's two rows (block rows 16 warp + gq + 8h): visibility, base-2 lse and D.
  int last_key[2];
  int64_t stat[2];
  float row_lse2[2], row_D[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int rho = rho0 + 16 * warp + gq + 8 * h;
    const bool ok = rho < g.rows;
    last_key[h] = ok ? rho / g.G + g.offset : -1;
    stat[h] = ok ? stat_index(g, b, hk, rho) : 0;
    row_lse2[h] = ok ? lse[stat[h]] * kLog2e : 0.0f;
    row_D[h] = ok ? D[stat[h]] : 0.0f;
  }
  float acc[NT][4];
  zero(acc);

  if (ntiles > 0) {  // (copies in flight until the first key tile's wait; no key tiles: no rows either)
    load_row_tile(Qs, ldq, kMmaRows, g.wq, g.dqk, g, q, b, hk, rho0);
    load_row_tile(dOs, ldv, kMmaRows, g.wv, g.dv, g, dout, b, hk, rho0);
  }
  const int dq8 = (g.dqk + 7) / 8 * 8, dv8 = (g.dv + 7) / 8 * 8;

  for (int t = 0; t < ntiles; ++t) {
    const int j0 = t * kKeyTile;
    load_kv_tiles(Ks, ldq, Vs, ldv, g, k, v, b, hk, j0, kend);
    copies_wait_all();
    __syncthreads();  // Q, dO (first tile), K, V visible

    float s[8][4], dp[8][4];
    zero(s);
    zero(dp);
    warp_scores<kSplit>(s, Qs + 16 * warp * ldq, ldq, Ks, ldq, dq8);
    warp_scores<kSplit>(dp, dOs + 16 * warp * ldv, ldv, Vs, ldv, dv8);
    // dS into s (same layout): s[n][2h + e] is row h, key j0 + 8n + tq + 4e.
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int h = i / 2, j = j0 + 8 * n + tq + 4 * (i % 2);
        const bool visible = j <= last_key[h] && j < kend;
        s[n][i] = backward_element(g, visible, s[n][i], dp[n][i], row_lse2[h], row_D[h], stat[h], j).ds;
      }
    warp_times_tile<kSplit>(acc, s, Ks, ldq);  // dQ += dS K
    __syncthreads();  // K, V free for the next tile
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (last_key[h] < 0) continue;  // no such row
    store_warp_row(dq + q_row(g, b, hk, rho0 + 16 * warp + gq + 8 * h) * g.dqk, acc, h, g.dqk, g.scale);
  }
}

// ---- backward: dK, dV ------------------------------------------------------------------------------------------

// The fused dQ's dS^T tile [64 keys][64 query rows + 8]: stored by the rows of S^T's layout (2-way bank conflicts),
// read as dS's A fragments, (query row g, key t) at t * 72 + g: every bank once.
constexpr int kDsStride = 64 + 8;

// The fused dQ of one query tile (rows rho0 ..): this warp's 16 rows of scale dS K, dS^T in dSs (every key of the
// tile, kDsStride) and K in Ks [64][ldk], written to their rows of part (laid out as dq).
template <bool kSplit>
__device__ __forceinline__ void fused_dq_rows(float* part, const float* dSs, const float* Ks, int ldk,
                                              const Geometry& g, int b, int hk, int rho0) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  // ds[n][2h + e]: query row 16 warp + gq + 8h, key 8n + tq + 4e: warp_scores' layout, as warp_times_tile reads.
  float ds[8][4], acc[8][4];
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) ds[n][i] = dSs[(8 * n + tq + 4 * (i % 2)) * kDsStride + 16 * warp + gq + 8 * (i / 2)];
  zero(acc);
  warp_times_tile<kSplit>(acc, ds, Ks, ldk);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int rho = rho0 + 16 * warp + gq + 8 * h;
    if (rho < g.rows) store_warp_row(part + q_row(g, b, hk, rho) * g.dqk, acc, h, g.dqk, g.scale);
  }
}

// Shared floats of the dK/dV kernel: K [64][wq + 4], V [64][wv + 4] (K's tile when shared), Q [64][wq + 4],
// dO [64][wv + 4], the query tile's row data (lse2, D, last key: 64 each, then 64 int64 statistics indices), and
// with the fused dQ the dS^T tile.
inline size_t dkv_mma_floats(const Geometry& g, bool fused_dq) {
  const size_t ldq = g.wq + 4, ldv = g.wv + 4;
  return (kKeyTile + 64) * ldq + 64 * ldv + (g.shared_kv ? 0 : kKeyTile * ldv) + kQueryRowsFloats +
         (fused_dq ? kKeyTile * kDsStride : 0);
}

// dK, dV for one 64-key tile per block, 16 keys per warp as the mma rows: grid (B * Hk, ceil(Tk / 64), splits); 128
// threads. Loops over the 64-row query tiles that see the keys (its split's run of them, dkv_query_tiles), in order
// (all G heads sharing the K/V are among those rows: the sum over heads is this fixed-order loop, no atomics). Per
// query tile, transposed: S^T = K Q^T and dP^T = V dO^T (warp_scores, the query rows as the "keys"), P^T and dS^T
// in registers, then dV += (P∘M)^T dO and dK += dS^T Q (warp_times_tile). dk = scale dK, dv = dV, set (with
// splits: the split's slice of the partials). NMQ, NMV = widths / 64 (<= 2).
// kDq (NMQ = 1): also this key tile's share of dQ for each query tile, scale dS K (flash-attention-2's one pass,
// instead of attention_dq_mma_kernel recomputing S and dP): dS^T goes through shared memory (each warp holds 16
// keys, dQ's rows need all 64), each warp multiplies 16 query rows of it by the K tile, and the rows go to
// dq_part's slice of this key tile, (B, Tq, H, dqk) like dq, for attention_dq_sum_kernel.
template <int NMQ, int NMV, bool kSplit, bool kDq>
__global__ void __launch_bounds__(kMmaWarps * 32) attention_dkv_mma_kernel(
    float* __restrict__ dk, float* __restrict__ dv, float* __restrict__ dq_part, const float* __restrict__ dout,
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ lse, const float* __restrict__ D, Geometry g) {
  static_assert(!kDq || NMQ == 1, "the fused dQ's accumulators are sized for qk widths up to 64");
  constexpr int BQ = 64;  // query rows per inner tile
  DSK_DYNAMIC_SHARED(SharedBase, smem_base);
  float* smem = reinterpret_cast<float*>(smem_base);
  const int ldq = g.wq + 4, ldv = g.wv + 4;
  float* Ks = smem;                                                    // [64][ldq]
  float* Vs = g.shared_kv ? Ks : Ks + kKeyTile * ldq;                  // [64][ldv]
  float* Qs = g.shared_kv ? Ks + kKeyTile * ldq : Vs + kKeyTile * ldv;  // [BQ][ldq]
  float* dOs = Qs + BQ * ldq;                                          // [BQ][ldv]
  const QueryRows rows = query_rows_at(dOs + BQ * ldv);  // (16-byte aligned: every tile is a multiple of 4 floats)
  float* dSs = dOs + BQ * ldv + kQueryRowsFloats;         // [64 keys][kDsStride]  dS^T (kDq only)

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int b = block_bk() / g.Hk, hk = block_bk() % g.Hk;
  const int j0 = block_key_tile() * kKeyTile;
  const int dq8 = (g.dqk + 7) / 8 * 8, dv8 = (g.dv + 7) / 8 * 8;

  float acc_k[8 * NMQ][4], acc_v[8 * NMV][4];
  zero(acc_k);
  zero(acc_v);
  // (copies in flight until the first query tile's wait; no query of this split sees these keys: no K/V either)
  const QueryTiles tiles = dkv_query_tiles(g, j0);
  if (tiles.begin < tiles.end) {
    load_kv_tiles(Ks, ldq, Vs, ldv, g, k, v, b, hk, j0, g.Tk);
    load_query_tile(Qs, ldq, dOs, ldv, rows, g, q, dout, lse, D, b, hk, tiles.begin);
  }

  for (int rho0 = tiles.begin; rho0 < tiles.end; rho0 += BQ) {
    copies_wait_all();
    __syncthreads();  // K, V (first pass), Q, dO, row data visible; every warp is done with the last dS^T

    // st[n][2h + e]: key j0 + 16 warp + gq + 8h against query row 8n + tq + 4e of the tile.
    float st[8][4], dpt[8][4];
    zero(st);
    zero(dpt);
    warp_scores<kSplit>(st, Ks + 16 * warp * ldq, ldq, Qs, ldq, dq8);
    warp_scores<kSplit>(dpt, Vs + 16 * warp * ldv, ldv, dOs, ldv, dv8);
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int j = j0 + 16 * warp + gq + 8 * (i / 2), r = 8 * n + tq + 4 * (i % 2);
        const BackwardElement e = backward_element(g, j < g.Tk && j <= rows.last[r], st[n][i], dpt[n][i],
                                                   rows.lse2[r], rows.D[r], rows.stat[r], j);
        st[n][i] = e.pm;
        dpt[n][i] = e.ds;
        if constexpr (kDq) dSs[(16 * warp + gq + 8 * (i / 2)) * kDsStride + 8 * n + tq + 4 * (i % 2)] = e.ds;
      }
    warp_times_tile<kSplit>(acc_v, st, dOs, ldv);  // dV += (P∘M)^T dO
    warp_times_tile<kSplit>(acc_k, dpt, Qs, ldq);  // dK += dS^T Q
    __syncthreads();  // every warp is done with Q, dO and the row data (and has stored its keys of dS^T)
    // The next query tile is in flight during the fused dQ product, which reads only dS^T and K.
    if (rho0 + BQ < tiles.end) load_query_tile(Qs, ldq, dOs, ldv, rows, g, q, dout, lse, D, b, hk, rho0 + BQ);
    if constexpr (kDq) fused_dq_rows<kSplit>(dq_part + block_key_tile() * q_floats(g), dSs, Ks, ldq, g, b, hk, rho0);
  }

  dk = split_slice(dk, dk_floats(g));
  dv = split_slice(dv, dv_floats(g));
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int j = j0 + 16 * warp + gq + 8 * h;
    if (j >= g.Tk) continue;
    store_warp_row(dk + kv_row(g, b, hk, j) * g.dqk, acc_k, h, g.dqk, g.scale);
    store_warp_row(dv + kv_row(g, b, hk, j) * g.dv, acc_v, h, g.dv, 1.0f);
  }
}

}  // namespace dsk::attn
