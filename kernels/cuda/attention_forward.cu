// Causal attention forward on the GPU: the flash kernel, the split combine and their launch (the design is in
// kernels/cuda/attention_common.cuh).
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_decode.cuh"
#include "kernels/cuda/attention_mma.cuh"

#include <fmt/format.h>

#include <string>

namespace dsk {

namespace {

using namespace attn;

// ---- forward -----------------------------------------------------------------------------------------------

// grid (B * Hk, ceil(rows / BR), splits) (block_tile_grid); block TY*16 threads; BR = TY*RA query rows per block.
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
  const int b = block_bk() / g.Hk, hk = block_bk() % g.Hk;
  const int rho0 = block_row_tile() * BR;
  const ForwardKeys keys = forward_keys(g, kv_start, b, rho0, BR);
  const int kend = keys.kend;

  // Per-row state: the rows, running max (base 2) and this thread's partial sum.
  const ThreadRows<RA> rows = thread_rows<TY, RA>(g, b, hk, rho0);
  float row_max[RA], row_sum[RA], acc_o[RA][NMV][4];
  zero(row_sum);
  zero(acc_o);
#pragma unroll
  for (int a = 0; a < RA; ++a) row_max[a] = -INFINITY;

  // (copies in flight until the first key tile's wait; no key tiles: no Q either)
  if (keys.t_begin < keys.t_end) load_row_tile(Qs, ldq, BR, g.wq, g.dqk, g, q, b, hk, rho0);

  for (int t = keys.t_begin; t < keys.t_end; ++t) {
    const int j0 = keys.start + t * kKeyTile;
    load_kv_tiles(Ks, ldq, Vs, ldv, g, k, v, b, hk, j0, kend);
    copies_wait_all();
    __syncthreads();  // Q (first tile), K, V visible

    float s[RA][kKeysPerThread];
    zero(s);
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
    float* dst = forward_row_output(g, out, lse, part_o, part_lse, b, hk, rho, rows.stat[a], row_lse, tx == 0);
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


// Shared floats of a forward block of BR rows in the arithmetic math (see the kernel's carving).
size_t forward_floats(const Geometry& g, int BR, TileMath math) {
  const size_t ldq = g.wq + 4, ldv = g.wv + 4;
  return BR * ldq + kKeyTile * ldq + (g.shared_kv ? 0 : kKeyTile * ldv) + BR * kPStride + stage_floats(math, BR);
}

// Runs a forward kernel over blocks of BR rows, of which blocks_per_sm fit on a multiprocessor at once
// (resident_blocks): launch_rows(grid, part_o, part_lse) launches it. When the grid would leave some of the GPU's
// resident-block slots empty (decode: a few rows per (b, kv head)), the keys are split over gridDim.z blocks, as
// many as fill the slots once (more would start a second, nearly empty wave: the blocks of a decode step all
// take the same time), each split at least 2 key tiles of the full key range; attention_combine_kernel merges the
// split partials.
template <class LaunchRows>
void run_forward(float* out, float* lse, const Geometry& g, int BR, int blocks_per_sm, LaunchRows launch_rows) {
  const int row_blocks = static_cast<int>(cuda::ceil_div(g.rows, BR));
  const int64_t blocks = static_cast<int64_t>(row_blocks) * g.B * g.Hk;
  const int max_tiles = static_cast<int>(cuda::ceil_div(g.Tk, kKeyTile));
  const int64_t slots = static_cast<int64_t>(blocks_per_sm) * cuda::sm_count();
  // The blocks split their keys as forward_keys does: rows cut short by kv_start or the causal end can have empty
  // splits (they write a zero-weight partial).
  const int splits = fill_splits(blocks, slots, max_tiles, 1);

  float *part_o = nullptr, *part_lse = nullptr;
  if (splits > 1) {
    const size_t prow = static_cast<size_t>(splits) * g.B * g.Hk * g.rows;
    part_o = static_cast<float*>(cuda::scratch(prow * (g.dv + 1) * sizeof(float)));
    part_lse = part_o + prow * g.dv;
  }
  launch_rows(block_tile_grid(g, row_blocks, splits), part_o, part_lse);
  if (splits > 1) {
    const int64_t rows_total = static_cast<int64_t>(g.B) * g.Hk * g.rows;
    constexpr int kWarps = 4;
    DSK_LAUNCH(static_cast<unsigned>(cuda::ceil_div(rows_total, kWarps)), kWarps * 32, 0, attention_combine_kernel)(
        out, lse, part_o, part_lse, splits, g);
    DSK_CUDA_CHECK_LAUNCH();
  }
}

// Launches `kernel` (threads per block, `bytes` of dynamic shared memory) over blocks of BR rows through
// run_forward, with the forward kernels' arguments.
template <class Kernel>
void launch_rows_of(Kernel kernel, int threads, size_t bytes, int BR, const char* what, float* out, float* lse,
                    const float* q, const float* k, const float* v, const int32_t* kv_start, const Geometry& g) {
  allow_shared(kernel, bytes, what);
  run_forward(out, lse, g, BR, resident_blocks(kernel, threads, bytes), [&](dim3 grid, float* part_o, float* part_lse) {
    DSK_LAUNCH(grid, threads, bytes, kernel)(out, lse, part_o, part_lse, q, k, v, kv_start, g);
    DSK_CUDA_CHECK_LAUNCH();
  });
}

// The staged kernel (FFMA, or wmma through a staging tile) with BR = TY*RA rows per block.
template <int TY, int RA, int MATH>
void launch_forward(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* kv_start,
                    const Geometry& g) {
  const size_t bytes = forward_floats(g, TY * RA, TileMath(MATH)) * sizeof(float);
  with_nm(g.wv / 64, [&](auto nmv) {
    constexpr int NMV = decltype(nmv)::value;
    launch_rows_of(attention_forward_kernel<TY, RA, NMV, MATH>, TY * kTx, bytes, TY * RA, "attention_forward", out,
                   lse, q, k, v, kv_start, g);
  });
}

// The register-resident tensor-core kernel (attention_mma.cuh), output widths up to 128: 4-warp blocks of 64 rows
// for training shapes, 1-warp blocks of 16 rows for decode (at most 16 rows per (b, kv head), with
// cuda::DecodeBlock::kForwardKernel: the key-split decode kernel below is the default).
template <int MATH, int kWarps>
void launch_forward_mma(float* out, float* lse, const float* q, const float* k, const float* v,
                        const int32_t* kv_start, const Geometry& g) {
  const size_t bytes = forward_mma_floats(g, kWarps) * sizeof(float);
  with_nm(g.wv / 64, [&](auto nmv) {
    constexpr int NMV = decltype(nmv)::value;
    if constexpr (NMV <= 2) {
      launch_rows_of(attention_forward_mma_kernel<NMV, MATH == kTf32x3Math, kWarps>, kWarps * 32, bytes, 16 * kWarps,
                     "attention_forward_mma", out, lse, q, k, v, kv_start, g);
    } else {
      DSK_FAIL("attention_forward_mma: output width {} above 128", g.wv);
    }
  });
}

// The decode kernel (attention_decode.cuh): 8 RH rows per block, 4 warps splitting each key tile, double-buffered
// tiles. Output widths up to 128.
template <int MATH, int RH>
void launch_decode(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* kv_start,
                   const Geometry& g) {
  const size_t bytes = decode_floats(g, 8 * RH) * sizeof(float);
  with_nm(g.wv / 64, [&](auto nmv) {
    constexpr int NMV = decltype(nmv)::value;
    if constexpr (NMV <= 2) {
      launch_rows_of(attention_decode_kernel<MATH, NMV, RH>, kDecodeWarps * 32, bytes, 8 * RH, "attention_decode",
                     out, lse, q, k, v, kv_start, g);
    } else {
      DSK_FAIL("attention_decode: output width {} above 128", g.wv);
    }
  });
}

// Whether the register-resident kernel serves this shape: output widths up to 128 (its accumulators), and its
// tiles fit (the training block's, the larger).
bool forward_mma_serves(const Geometry& g) {
  return g.wv <= 128 && fits_shared(forward_mma_floats(g, 4));
}

// The kernel a forward of geometry g runs in the current attention_math. Decode-like shapes (a few query rows per
// (b, kv head)) use 8- or 16-row blocks, training 64. Every block row costs its multiply-adds whether or not it is a
// real query row: absorbed decode of the default config has 8 rows (its heads), and with 16-row blocks half of the
// work would be padding on the CUDA cores. On the tensor cores (attention_math) the smallest block is 16 rows, the
// fragment height (one warp in the register kernel): there padding rows are cheap next to the key tiles' loads (the
// benchmark's decode records compare).
// Decode shapes (at most 16 rows, output widths up to 128) take the key-split decode kernel (attention_decode.cuh)
// in any arithmetic, unless cuda::DecodeBlock asks for the forward kernels' own small blocks; with FFMA up to 8 rows
// in blocks of 8.
struct ForwardPlan {
  TileMath math;   // after the shared-memory fallback (fitting_math)
  bool registers;  // the register-resident mma kernel (attention_mma.cuh), else the staged one
  bool decode;     // the key-split decode kernel (then `registers` does not matter)
  int rows;        // query rows per block
};
ForwardPlan forward_plan(const Geometry& g) {
  const TileMath tc_math = attention_tile_math();
  const TileMath math = fitting_math(tc_math, forward_floats(g, g.rows <= 16 ? 16 : 64, tc_math));
  const int rows = math == kFfmaMath && g.rows <= 8 ? 8 : (g.rows <= 16 ? 16 : 64);
  const bool decode = rows <= 16 && g.wv <= 128 && cuda::decode_block() != cuda::DecodeBlock::kForwardKernel &&
                      fits_shared(decode_floats(g, rows));
  const bool registers = math != kFfmaMath && forward_mma_serves(g);
  return {math, registers, decode, rows};
}

}  // namespace

std::string attention_forward_kernel_cuda(const AttentionShape& s, bool shared_kv) {
  check_shape(s, AttentionDropout{});
  const ForwardPlan p = forward_plan(make_geometry(s, AttentionDropout{}, shared_kv));
  if (p.decode)
    return fmt::format("{} key-split decode (4 warps, 2 stages), {}-row blocks",
                       p.math == kFfmaMath ? std::string("ffma") : "mma " + std::string(tile_math_name(p.math)),
                       p.rows);
  return fmt::format("{}, {}-row blocks", kernel_form(p.registers, p.math), p.rows);
}

template <>
void attention_forward<Backend::CUDA>(float* out, float* lse, const float* q, const float* k, const float* v,
                                      const int32_t* kv_start, const AttentionShape& s, const AttentionDropout& drop) {
  check_shape(s, drop);
  // kv_start lives on the device; its range is the caller's responsibility (the CPU checks it on the host).
  Geometry g = make_geometry(s, drop, k == v);
  g.vec4 = rows_aligned16(g, {q, k, v});
  DSK_CHECK(cuda::ceil_div(g.rows, 16) <= 0x7fffffff, "attention: too many rows");
  const ForwardPlan plan = forward_plan(g);
  with_tile_math(plan.math, [&](auto mt) {
    constexpr int MATH = decltype(mt)::value;
    if (plan.decode) {
      // 8-row blocks (RH 1) exist only with FFMA (forward_plan): the tensor-core products are 16 rows.
      if constexpr (MATH == kFfmaMath)
        if (plan.rows == 8) return launch_decode<MATH, 1>(out, lse, q, k, v, kv_start, g);
      launch_decode<MATH, 2>(out, lse, q, k, v, kv_start, g);
    } else if constexpr (MATH == kFfmaMath) {
      if (plan.rows == 8)
        launch_forward<8, 1, MATH>(out, lse, q, k, v, kv_start, g);
      else if (plan.rows == 16)
        launch_forward<8, 2, MATH>(out, lse, q, k, v, kv_start, g);
      else
        launch_forward<8, 8, MATH>(out, lse, q, k, v, kv_start, g);
    } else if (plan.registers) {
      if (plan.rows == 16)
        launch_forward_mma<MATH, 1>(out, lse, q, k, v, kv_start, g);
      else
        launch_forward_mma<MATH, 4>(out, lse, q, k, v, kv_start, g);
    } else {
      // The 64-row staged tensor-core blocks spread their rows over 8 warps (4 rows per thread): with 4 warps the
      // 3xTF32 fragments on top of the output accumulators spilled at width 128 (scripts/kernel_resources.sh).
      if (plan.rows == 16)
        launch_forward<8, 2, MATH>(out, lse, q, k, v, kv_start, g);
      else
        launch_forward<16, 4, MATH>(out, lse, q, k, v, kv_start, g);
    }
  });
}

}  // namespace dsk
