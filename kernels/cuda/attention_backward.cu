// Causal attention backward on the GPU: D = dout · out, the dQ and the dK/dV kernels, and their launch (the
// design is in kernels/cuda/attention_common.cuh).
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/reduce.cuh"

#include <fmt/format.h>

#include <string>

namespace dsk {

namespace {

using namespace attn;

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

// dQ for 64 query rows per block: grid (B * Hk, ceil(rows / 64)); block 128 threads (TY = 8, RA = 8).
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
  const DqTiles tiles = dq_tiles(smem, g, ldq, ldv);
  float *Qs = tiles.Qs, *dOs = tiles.dOs, *Ks = tiles.Ks, *Vs = tiles.Vs;
  float* dSs = tiles.end;  // [64][kPStride]
  float* stage = dSs + BR * kPStride;                                    // [64][kPStride] (none with FFMA)

  const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
  const int bk = block_bk(), b = bk / g.Hk, hk = bk % g.Hk;
  const int rho0 = block_row_tile() * BR;
  const int rho_last = min(rho0 + BR, g.rows) - 1;
  const int kend = min(g.Tk, rho_last / g.G + g.offset + 1);
  const int ntiles = (kend + kKeyTile - 1) / kKeyTile;

  const ThreadRows<RA> rows = thread_rows<TY, RA>(g, b, hk, rho0);
  float row_lse2[RA], row_D[RA], acc[RA][NMQ][4];
  zero(acc);
#pragma unroll
  for (int a = 0; a < RA; ++a) {
    row_lse2[a] = rows.ok[a] ? lse[rows.stat[a]] * kLog2e : 0.0f;
    row_D[a] = rows.ok[a] ? D[rows.stat[a]] : 0.0f;
  }

  if (ntiles > 0) {  // (copies in flight until the first key tile's wait; no key tiles: no rows either)
    load_row_tile(Qs, ldq, BR, g.wq, g.dqk, g, q, b, hk, rho0);
    load_row_tile(dOs, ldv, BR, g.wv, g.dv, g, dout, b, hk, rho0);
  }

  for (int t = 0; t < ntiles; ++t) {
    const int j0 = t * kKeyTile;
    load_kv_tiles(Ks, ldq, Vs, ldv, g, k, v, b, hk, j0, kend);
    copies_wait_all();
    __syncthreads();

    float s[RA][kKeysPerThread], dp[RA][kKeysPerThread];
    zero(s);
    zero(dp);
    any_tile_dot<MATH, TY, RA>(s, Qs, ldq, Ks, ldq, g.dqk, stage);
    any_tile_dot<MATH, TY, RA>(dp, dOs, ldv, Vs, ldv, g.dv, stage);
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) {
        const int j = j0 + tx + kTx * kk;
        const bool visible = j <= rows.last_key[a] && j < kend;
        dSs[(ty + TY * a) * kPStride + tx + kTx * kk] =
            backward_element(g, visible, s[a][kk], dp[a][kk], row_lse2[a], row_D[a], rows.stat[a], j).ds;
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

// The fused dQ's dS tile of the staged kernel, [64 query rows][64 keys + 4]: stored by threads that own 4 keys x 4
// rows (2-way bank conflicts; kPStride's 80 would give 8), read as tile_pv's P rows.
constexpr int kDsRowStride = 64 + 4;

// dK, dV for one 64-key tile per block: grid (B * Hk, ceil(Tk / 64), splits); block 256 threads (TY = 16, RA = 4:
// each thread owns 4 keys). Loops over the query-row tiles that see the keys (its split's run of them,
// dkv_query_tiles) in ascending order; all G heads sharing the K/V are in those rows, so the sum over heads is this
// fixed-order loop. dk = scale Σ dS^T q, dv = Σ (P∘M)^T dout, set (with splits: the split's slice of the partials).
// kDq (FFMA, NMQ = 1): also this key tile's share of dQ, scale dS K, for each query tile (as the register kernel's
// kDq: dS in row layout in shared memory, the rows to dq_part's slice of this key tile, for attention_dq_sum_kernel).
template <int NMQ, int NMV, int MATH, bool kDq>
__global__ void __launch_bounds__(256, 1) attention_dkv_kernel(float* __restrict__ dk, float* __restrict__ dv,
                                                           float* __restrict__ dq_part,
                                                           const float* __restrict__ dout,
                                                           const float* __restrict__ q, const float* __restrict__ k,
                                                           const float* __restrict__ v, const float* __restrict__ lse,
                                                           const float* __restrict__ D, Geometry g) {
  constexpr int TY = 16, RA = 4, BQ = 64;  // BQ: query rows per inner tile
  static_assert(!kDq || (MATH == kFfmaMath && NMQ == 1), "the staged kernel fuses dQ in FFMA at qk widths up to 64");
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
  // The query tile's row data (16-byte aligned: every tile above is a multiple of 4 floats).
  const QueryRows rows = query_rows_at(stage + (MATH == kFfmaMath ? 0 : kKeyTile * kPStride));
  float* dSrows = stage + kQueryRowsFloats;           // [BQ][kDsRowStride]  dS (kDq only, FFMA: no stage tile)

  const int tx = threadIdx.x % kTx, ty = threadIdx.x / kTx;
  const int bk = block_bk(), b = bk / g.Hk, hk = bk % g.Hk;
  const int j0 = block_key_tile() * kKeyTile;

  float acc_k[RA][NMQ][4], acc_v[RA][NMV][4];
  zero(acc_k);
  zero(acc_v);

  // (copies in flight until the first query tile's wait; no query of this split sees these keys: no K/V either)
  const QueryTiles tiles = dkv_query_tiles(g, j0);
  if (tiles.begin < tiles.end) load_kv_tiles(Ks, ldq, Vs, ldv, g, k, v, b, hk, j0, g.Tk);

  for (int rho0 = tiles.begin; rho0 < tiles.end; rho0 += BQ) {
    load_query_tile(Qs, ldq, dOs, ldv, rows, g, q, dout, lse, D, b, hk, rho0);
    copies_wait_all();
    __syncthreads();  // K, V (first pass), Q, dO, row data visible

    // Transposed scores: s[a][kk] for key ty + 16a and query row tx + 16kk of this tile.
    float s[RA][kKeysPerThread], dp[RA][kKeysPerThread];
    zero(s);
    zero(dp);
    any_tile_dot<MATH, TY, RA>(s, Ks, ldq, Qs, ldq, g.dqk, stage);
    any_tile_dot<MATH, TY, RA>(dp, Vs, ldv, dOs, ldv, g.dv, stage);
#pragma unroll
    for (int a = 0; a < RA; ++a) {
      const int key = ty + TY * a, j = j0 + key;
#pragma unroll
      for (int kk = 0; kk < kKeysPerThread; ++kk) {
        const int r = tx + kTx * kk;
        const BackwardElement e = backward_element(g, j < g.Tk && j <= rows.last[r], s[a][kk], dp[a][kk],
                                                   rows.lse2[r], rows.D[r], rows.stat[r], j);
        Ps[key * kPStride + r] = e.pm;
        dSs[key * kPStride + r] = e.ds;
        if constexpr (kDq) dSrows[r * kDsRowStride + key] = e.ds;
      }
    }
    __syncthreads();
    any_tile_pv<MATH, TY, RA, NMV>(acc_v, Ps, dOs, ldv, stage);  // dV += (P∘M)^T dO
    any_tile_pv<MATH, TY, RA, NMQ>(acc_k, dSs, Qs, ldq, stage);  // dK += dS^T Q
    if constexpr (kDq) {
      // This key tile's dQ for the query rows ty + 16a: scale dS K, to its slice of dq_part.
      float acc_q[RA][1][4];
      zero(acc_q);
      tile_pv<TY, RA, 1>(acc_q, dSrows, Ks, ldq, kDsRowStride);
      float* part = dq_part + block_key_tile() * q_floats(g);
#pragma unroll
      for (int a = 0; a < RA; ++a) {
        const int rho = rho0 + ty + TY * a;
        if (rho >= g.rows) continue;
        float* dst = part + q_row(g, b, hk, rho) * g.dqk;
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (4 * tx + e < g.dqk) dst[4 * tx + e] = acc_q[a][0][e] * g.scale;
      }
    }
    __syncthreads();  // Q, dO, P, dS free for the next row tile
  }

  dk = split_slice(dk, dk_floats(g));
  dv = split_slice(dv, dv_floats(g));
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


// Shared floats of the staged kernels' blocks in the arithmetic m (see the kernels' carving).
size_t dq_floats(const Geometry& g, TileMath m) {
  const size_t ldq = g.wq + 4, ldv = g.wv + 4;
  return 64 * ldq + 64 * ldv + kKeyTile * ldq + (g.shared_kv ? 0 : kKeyTile * ldv) + 64 * kPStride +
         stage_floats(m, 64);
}
size_t dkv_floats(const Geometry& g, TileMath m, bool fused_dq) {
  const size_t ldq = g.wq + 4, ldv = g.wv + 4;
  return kKeyTile * ldq + (g.shared_kv ? 0 : kKeyTile * ldv) + 64 * ldq + 64 * ldv + 2 * kKeyTile * kPStride +
         kQueryRowsFloats + stage_floats(m, kKeyTile) + (fused_dq ? 64 * kDsRowStride : 0);
}

// dq from the fused dQ's partials (attention_dkv_mma_kernel<..., kDq>): element (b, i, h, c) sums the slices of the
// key tiles whose blocks saw its 64-row query tile, in key-tile order (deterministic).
__global__ void attention_dq_sum_kernel(float* __restrict__ dq, const float* __restrict__ part, Geometry g) {
  const int64_t n = q_floats(g);
  const int key_tiles = (g.Tk + kKeyTile - 1) / kKeyTile;
  DSK_GRID_STRIDE(idx, n) {
    const int64_t row = idx / g.dqk;  // (b, i, h)
    const int h = static_cast<int>(row % g.H), i = static_cast<int>(row / g.H % g.Tq);
    const int rho0 = (i * g.G + h % g.G) / 64 * 64;  // its query tile in (b, kv head h / G)
    float t = 0.0f;
    for (int kt = 0; kt < key_tiles && first_query_tile(g, kt * kKeyTile) <= rho0; ++kt) t += part[kt * n + idx];
    dq[idx] = t;
  }
}

// The dK/dV partials of the splits summed in split order (deterministic): dst[i] = Σ_z parts[z n + i], i < n.
__global__ void attention_sum_splits_kernel(float* __restrict__ dst, const float* __restrict__ parts, int64_t n,
                                            int splits) {
  DSK_GRID_STRIDE(i, n) {
    float t = 0.0f;
    for (int z = 0; z < splits; ++z) t += parts[static_cast<int64_t>(z) * n + i];
    dst[i] = t;
  }
}

// The signatures of the backward's kernels, whatever their arithmetic: dQ's (dq, dout, q, k, v, lse, D, g) and
// dK/dV's (dk, dv, dq_part, dout, q, k, v, lse, D, g).
using DqKernel = void (*)(float*, const float*, const float*, const float*, const float*, const float*, const float*,
                          Geometry);
using DkvKernel = void (*)(float*, float*, float*, const float*, const float*, const float*, const float*,
                           const float*, const float*, Geometry);

// The most memory the fused dQ's partials may take; beyond it (long sequences) the separate dQ kernel runs. 256 MiB
// holds the large config's explicit backward at batch 8 (134 MB).
constexpr int64_t kFusedDqMaxBytes = int64_t(256) << 20;

// Floats of the fused dQ's partials: one dq-sized slice per key tile (attention_dq_sum_kernel).
int64_t dq_part_floats(const Geometry& g) { return cuda::ceil_div(g.Tk, kKeyTile) * q_floats(g); }

// A kernel as launched: its instantiation, threads per block and dynamic shared bytes, and for dK/dV the number of
// splits of its query loop (gridDim.z) and whether it computes dQ too (then no dQ kernel runs).
template <class Kernel>
struct Launch {
  Kernel kernel = nullptr;
  int threads = 0;
  size_t bytes = 0;
  bool registers = false;  // the register-resident tensor-core kernel (attention_mma.cuh)
  TileMath math = kFfmaMath;
  int splits = 1;
  bool fused_dq = false;
};

// The kernels a backward of geometry g runs in the current attention_math: for dQ and for dK/dV, on the tensor
// cores the register-resident kernel (attention_mma.cuh) where its accumulators allow (widths up to 128) and its
// tiles fit, else the staged kernel in the arithmetic whose tiles fit (fitting_math).
Launch<DqKernel> dq_launch(const Geometry& g) {
  const TileMath math = attention_tile_math();
  Launch<DqKernel> l;
  l.registers = math != kFfmaMath && g.wq <= 128 && fits_shared(dq_mma_floats(g));
  if (l.registers) {
    l.math = math;
    l.threads = kMmaWarps * 32;
    l.bytes = dq_mma_floats(g) * sizeof(float);
    const bool x3 = math == kTf32x3Math;
    l.kernel = g.wq <= 64 ? (x3 ? attention_dq_mma_kernel<1, true> : attention_dq_mma_kernel<1, false>)
                          : (x3 ? attention_dq_mma_kernel<2, true> : attention_dq_mma_kernel<2, false>);
    return l;
  }
  l.math = fitting_math(math, dq_floats(g, math));
  l.threads = 128;
  l.bytes = dq_floats(g, l.math) * sizeof(float);
  with_tile_math(l.math, [&](auto mt) {
    with_nm(g.wq / 64, [&](auto nmq) { l.kernel = attention_dq_kernel<decltype(nmq)::value, decltype(mt)::value>; });
  });
  return l;
}

// The dK/dV kernel, chosen as dq_launch chooses (with dQ fused in where cuda::BackwardDq, the width and the
// partials' memory cap allow), and its splits: one block per 64-key tile and (b, kv head) is few blocks where one
// kv head serves every query head (Hk = 1: 64 blocks at the large config's batch 8, on 132 SMs, each looping over
// 8192 rows), so then the loop is split (fill_splits, two waves: the causal loops are uneven).
Launch<DkvKernel> dkv_launch(const Geometry& g) {
  const TileMath math = attention_tile_math();
  Launch<DkvKernel> l;
  const bool fuse = cuda::backward_dq() == cuda::BackwardDq::kFused && g.wq == 64 &&
                    dq_part_floats(g) * int64_t(sizeof(float)) <= kFusedDqMaxBytes;
  l.registers = math != kFfmaMath && g.wq <= 128 && g.wv <= 128 && fits_shared(dkv_mma_floats(g, false));
  if (l.registers) {
    l.math = math;
    l.threads = kMmaWarps * 32;
    l.fused_dq = fuse && fits_shared(dkv_mma_floats(g, true));
    l.bytes = dkv_mma_floats(g, l.fused_dq) * sizeof(float);
    const bool x3 = math == kTf32x3Math;
    with_nm(g.wv / 64, [&](auto nmv) {
      constexpr int NMV = decltype(nmv)::value;
      if constexpr (NMV <= 2) {
        if (g.wq == 128)
          l.kernel = x3 ? attention_dkv_mma_kernel<2, NMV, true, false> : attention_dkv_mma_kernel<2, NMV, false, false>;
        else if (l.fused_dq)
          l.kernel = x3 ? attention_dkv_mma_kernel<1, NMV, true, true> : attention_dkv_mma_kernel<1, NMV, false, true>;
        else
          l.kernel = x3 ? attention_dkv_mma_kernel<1, NMV, true, false> : attention_dkv_mma_kernel<1, NMV, false, false>;
      }
    });
  } else {
    l.math = fitting_math(math, dkv_floats(g, math, false));
    l.threads = 256;
    l.fused_dq = fuse && l.math == kFfmaMath && fits_shared(dkv_floats(g, l.math, true));
    l.bytes = dkv_floats(g, l.math, l.fused_dq) * sizeof(float);
    with_tile_math(l.math, [&](auto mt) {
      with_nm(g.wq / 64, [&](auto nmq) {
        with_nm(g.wv / 64, [&](auto nmv) {
          constexpr int MATH = decltype(mt)::value, NMQ = decltype(nmq)::value, NMV = decltype(nmv)::value;
          if constexpr (MATH == kFfmaMath && NMQ == 1) {
            if (l.fused_dq) {
              l.kernel = attention_dkv_kernel<1, NMV, kFfmaMath, true>;
              return;
            }
          }
          l.kernel = attention_dkv_kernel<NMQ, NMV, MATH, false>;
        });
      });
    });
  }
  allow_shared(l.kernel, l.bytes, "attention_backward (dk, dv)");
  const int64_t blocks = cuda::ceil_div(g.Tk, kKeyTile) * static_cast<int64_t>(g.B) * g.Hk;
  const int64_t slots = static_cast<int64_t>(resident_blocks(l.kernel, l.threads, l.bytes)) * cuda::sm_count();
  const int max_tiles = static_cast<int>(cuda::ceil_div(g.rows, 64));  // key tile 0's loop
  l.splits = fill_splits(blocks, slots, max_tiles, 2);
  return l;
}

}  // namespace

std::string attention_backward_kernels_cuda(const AttentionShape& s, bool shared_kv) {
  check_shape(s, AttentionDropout{});
  const Geometry g = make_geometry(s, AttentionDropout{}, shared_kv);
  const Launch<DqKernel> dq = dq_launch(g);
  const Launch<DkvKernel> dkv = dkv_launch(g);
  std::string text = dkv.fused_dq ? fmt::format("dq fused, dkv {}", kernel_form(dkv.registers, dkv.math))
                                  : fmt::format("dq {}, dkv {}", kernel_form(dq.registers, dq.math),
                                                kernel_form(dkv.registers, dkv.math));
  if (dkv.splits > 1) text += fmt::format(" (query loop in {} splits)", dkv.splits);
  return text;
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
  Geometry g = make_geometry(s, drop, k == v);
  g.vec4 = rows_aligned16(g, {q, k, v, dout});
  const Launch<DqKernel> dq_k = dq_launch(g);
  const Launch<DkvKernel> dkv_k = dkv_launch(g);

  // Scratch (one request: growing it would free what an earlier request queued work on): D = dout · out per row
  // (B, H, T), then with split dK/dV loops their partials, [splits][dk floats] and [splits][dv floats], and with the
  // fused dQ its partials [key tiles][dq floats].
  const int64_t nrows = static_cast<int64_t>(s.batch) * T * s.heads;
  const int64_t nk = dk_floats(g), nv = dv_floats(g), nq = q_floats(g);
  const int64_t split_floats = dkv_k.splits > 1 ? dkv_k.splits * (nk + nv) : 0;
  const int64_t part_floats = dkv_k.fused_dq ? dq_part_floats(g) : 0;
  float* D = static_cast<float*>(
      cuda::scratch(static_cast<size_t>(nrows + split_floats + part_floats) * sizeof(float)));
  float* part_k = D + nrows;
  float* part_v = part_k + dkv_k.splits * nk;
  float* dq_part = D + nrows + split_floats;
  {
    constexpr int kWarps = 8;
    DSK_LAUNCH(static_cast<unsigned>(cuda::ceil_div(nrows, kWarps)), kWarps * 32, 0, attention_row_dot_kernel)(
        D, dout, out, g);
    DSK_CUDA_CHECK_LAUNCH();
  }

  // dQ: 64 query rows per block (unless the dK/dV kernel computes it).
  if (!dkv_k.fused_dq) {
    allow_shared(dq_k.kernel, dq_k.bytes, "attention_backward (dq)");
    const dim3 dq_grid = block_tile_grid(g, cuda::ceil_div(g.rows, 64), 1);
    DSK_LAUNCH(dq_grid, dq_k.threads, dq_k.bytes, dq_k.kernel)(dq, dout, q, k, v, lse, D, g);
    DSK_CUDA_CHECK_LAUNCH();
  }

  // dK, dV: one 64-key tile per block, its query loop in gridDim.z splits (then summed in split order).
  const bool split = dkv_k.splits > 1;
  const dim3 dkv_grid = block_tile_grid(g, cuda::ceil_div(T, kKeyTile), dkv_k.splits);
  DSK_LAUNCH(dkv_grid, dkv_k.threads, dkv_k.bytes, dkv_k.kernel)(split ? part_k : dk, split ? part_v : dv, dq_part,
                                                                 dout, q, k, v, lse, D, g);
  DSK_CUDA_CHECK_LAUNCH();
  if (dkv_k.fused_dq) {
    DSK_LAUNCH(cuda::grid_for(nq, 256), 256, 0, attention_dq_sum_kernel)(dq, dq_part, g);
    DSK_CUDA_CHECK_LAUNCH();
  }
  if (split) {
    DSK_LAUNCH(cuda::grid_for(nk, 256), 256, 0, attention_sum_splits_kernel)(dk, part_k, nk, dkv_k.splits);
    DSK_CUDA_CHECK_LAUNCH();
    DSK_LAUNCH(cuda::grid_for(nv, 256), 256, 0, attention_sum_splits_kernel)(dv, part_v, nv, dkv_k.splits);
    DSK_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace dsk
