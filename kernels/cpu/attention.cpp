// CPU causal attention (the specification for kernels/cuda/attention_forward.cu and attention_backward.cu).
//
// One (batch, head) pair is one task. Its queries are processed in blocks of kQueryBlock rows so that the causal
// mask lets each block skip the keys no row of it can see; per block the work is three small GEMMs on strided
// views of q/k/v (cblas_sgemm with lda = heads*dim, so nothing is copied):
//   scores = scale * Q_blk K^T   ->   softmax per row (+ dropout)   ->   out_blk = P V
// Each thread keeps one (kQueryBlock x Tk) score tile (two in backward); nothing of size (Tq x Tk) per head is stored.
//
// OpenMP parallelizes over the tasks, so each GEMM must run single-threaded inside its task: OpenBLAS's own
// threads would otherwise fight the OpenMP team (measured: ~40% slower on 2 cores); see blas_threads.h.
#include "kernels/attention.h"
#include "kernels/cpu/blas_threads.h"
#include "kernels/cpu/fast_exp.h"
#include "kernels/rng.h"

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

namespace dsk {
namespace {

constexpr int kQueryBlock = 32;  // query rows per GEMM block: small enough to skip most masked keys

// Below this many multiply-adds a call runs on one thread: starting an OpenMP team costs more than it saves
// (decode steps, tiny test shapes).
constexpr double kParallelMinWork = 1 << 20;

// Multiply-adds of the score and value GEMMs of one forward (upper bound: ignores the causal half).
double forward_work(const AttentionShape& s) {
  return static_cast<double>(s.batch) * s.heads * s.q_len * s.kv_len * (s.qk_dim + s.v_dim);
}

// The dropout multipliers of probability elements [index, index + n): 0 (dropped) or 1/(1-p) (kept); all 1 when
// dropout is off. A separate loop so the generator vectorizes (it is ~5x slower called element by element).
void dropout_multipliers(float* m, int n, const AttentionDropout& drop, uint64_t index) {
  if (drop.p == 0.0f) {
    std::fill_n(m, n, 1.0f);
    return;
  }
  const float p = drop.p, kept = 1.0f / (1.0f - drop.p);
  const uint64_t seed = drop.seed, site = drop.site;
#pragma omp simd
  for (int c = 0; c < n; ++c) m[c] = rng::uniform(seed, site, index + c) >= p ? kept : 0.0f;  // rng::keep
}

}  // namespace

template <>
void attention_forward<Backend::CPU>(float* out, float* lse, const float* q, const float* k, const float* v,
                                     const int32_t* kv_start, const AttentionShape& s, const AttentionDropout& drop) {
  check_attention_shape(s, drop);
  const int B = s.batch, Tq = s.q_len, Tk = s.kv_len, cap = kv_capacity_of(s), H = s.heads, Hk = s.kv_heads;
  const int dqk = s.qk_dim, dv = s.v_dim;
  const int offset = Tk - Tq;  // query i sits at key position i + offset and sees keys [start, i + offset]
  if (kv_start) {
    for (int b = 0; b < B; ++b)
      DSK_CHECK(kv_start[b] >= 0 && kv_start[b] <= Tk, "attention: kv_start[{}] = {} is outside [0, {}]", b,
                kv_start[b], Tk);
  }
  // Row strides of the per-head views.
  const int ldq = H * dqk, ldk = Hk * dqk, ldv = Hk * dv, ldo = H * dv;

  cpu::use_single_threaded_blas();
#pragma omp parallel if (forward_work(s) >= kParallelMinWork)
  {
    std::vector<float> tile(static_cast<size_t>(std::min(Tq, kQueryBlock)) * Tk);  // scores, then probabilities
    std::vector<float> mask(Tk);                                                     // one row's dropout multipliers
#pragma omp for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; ++bh) {
      const int b = bh / H, h = bh % H, hk = Hk == 1 ? 0 : h;
      const int start = kv_start ? kv_start[b] : 0;
      const float* qh = q + (static_cast<size_t>(b) * Tq * H + h) * dqk;   // row i: qh + i*ldq
      const float* kh = k + (static_cast<size_t>(b) * cap * Hk + hk) * dqk;  // row j: kh + j*ldk
      const float* vh = v + (static_cast<size_t>(b) * cap * Hk + hk) * dv;   // row j: vh + j*ldv
      float* oh = out + (static_cast<size_t>(b) * Tq * H + h) * dv;         // row i: oh + i*ldo
      for (int i0 = 0; i0 < Tq; i0 += kQueryBlock) {
        const int rows = std::min(kQueryBlock, Tq - i0);
        const int n = i0 + rows + offset - start;  // keys [start, start + n) are seen by some row of the block
        if (n > 0) {
          // tile (rows, n) = scale * Q_blk K[start : start+n]^T
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, dqk, s.scale, qh + static_cast<size_t>(i0) * ldq,
                      ldq, kh + static_cast<size_t>(start) * ldk, ldk, 0.0f, tile.data(), n);
        }
        for (int r = 0; r < rows; ++r) {
          const int i = i0 + r;
          float* p = tile.data() + static_cast<size_t>(r) * std::max(n, 0);
          const int visible = std::min(std::max(i + offset + 1 - start, 0), std::max(n, 0));
          float row_lse = -std::numeric_limits<float>::infinity();
          if (visible > 0) {
            // (simd reductions: a fixed, thread-count independent summation order)
            float mx = p[0];
#pragma omp simd reduction(max : mx)
            for (int c = 1; c < visible; ++c) mx = std::max(mx, p[c]);
            for (int c = 0; c < visible; ++c) p[c] = cpu_math::exp_nonpositive(p[c] - mx);
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int c = 0; c < visible; ++c) sum += p[c];
            row_lse = mx + std::log(sum);
            const float inv = 1.0f / sum;
            // Dropout acts on the normalized probabilities (as dropout(softmax(scores)) @ v); lse stays un-dropped.
            dropout_multipliers(mask.data(), visible, drop, (static_cast<uint64_t>(bh) * Tq + i) * Tk + start);
            for (int c = 0; c < visible; ++c) p[c] *= inv * mask[c];
          }
          for (int c = visible; c < n; ++c) p[c] = 0.0f;  // masked keys of this row
          if (lse) lse[static_cast<size_t>(bh) * Tq + i] = row_lse;
        }
        float* o_blk = oh + static_cast<size_t>(i0) * ldo;
        if (n > 0) {
          // out_blk (rows, dv) = P (rows, n) V[start : start+n]
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dv, n, 1.0f, tile.data(), n,
                      vh + static_cast<size_t>(start) * ldv, ldv, 0.0f, o_blk, ldo);
        } else {
          // Every row of this block precedes kv_start (left padding): nothing to attend, output zero.
          for (int r = 0; r < rows; ++r) std::fill_n(o_blk + static_cast<size_t>(r) * ldo, dv, 0.0f);
        }
      }
    }
  }
}

template <>
void attention_backward<Backend::CPU>(float* dq, float* dk, float* dv, const float* dout, const float* q,
                                      const float* k, const float* v, const float* out, const float* lse,
                                      const AttentionShape& s, const AttentionDropout& drop) {
  check_attention_shape(s, drop);
  const int B = s.batch, T = s.q_len, H = s.heads, Hk = s.kv_heads, dqk = s.qk_dim, dvd = s.v_dim;
  DSK_CHECK(s.kv_len == T && kv_capacity_of(s) == T,
            "attention_backward: training shapes only (q_len = kv_len = kv_capacity), got {} / {} / {}", T, s.kv_len,
            kv_capacity_of(s));
  DSK_CHECK(lse != nullptr, "attention_backward: needs the log-sum-exp saved by the forward");
  const int ldq = H * dqk, ldk = Hk * dqk, ldv = Hk * dvd, ldo = H * dvd;
  const int heads_per_kv = H / Hk;  // H when all heads share one K/V, else 1

  // With P = softmax(scale * q k^T) per row, M the dropout multipliers (0 or 1/(1-p)) and out = (P∘M) v:
  //   dv = (P∘M)^T dout;   dP = (dout v^T)∘M;   dS = P∘(dP - D),  D_i = Σ_j P_ij dP_ij = dout_i · out_i;
  //   dq = scale dS k;     dk = scale dS^T q.
  // One task owns one (b, kv head): it loops over the query heads using that K/V in head order, so the Hk = 1
  // sums over heads are accumulated in a fixed order (deterministic) without atomics or per-head copies.
  cpu::use_single_threaded_blas();
#pragma omp parallel if (2 * forward_work(s) >= kParallelMinWork)
  {
    const size_t tile_size = static_cast<size_t>(std::min(T, kQueryBlock)) * T;
    std::vector<float> prob(tile_size);   // P, then P∘M
    std::vector<float> dprob(tile_size);  // dout v^T, then dS
    std::vector<float> mask(T);           // one row's dropout multipliers M
#pragma omp for schedule(dynamic, 1)
    for (int bk = 0; bk < B * Hk; ++bk) {
      const int b = bk / Hk, hk = bk % Hk;
      const float* kh = k + (static_cast<size_t>(b) * T * Hk + hk) * dqk;
      const float* vh = v + (static_cast<size_t>(b) * T * Hk + hk) * dvd;
      float* dkh = dk + (static_cast<size_t>(b) * T * Hk + hk) * dqk;
      float* dvh = dv + (static_cast<size_t>(b) * T * Hk + hk) * dvd;
      for (int j = 0; j < T; ++j) {
        std::fill_n(dkh + static_cast<size_t>(j) * ldk, dqk, 0.0f);
        std::fill_n(dvh + static_cast<size_t>(j) * ldv, dvd, 0.0f);
      }
      for (int hh = 0; hh < heads_per_kv; ++hh) {
        const int h = Hk == 1 ? hh : hk;
        const size_t bh = static_cast<size_t>(b) * H + h;
        const float* qh = q + (static_cast<size_t>(b) * T * H + h) * dqk;
        const float* oh = out + (static_cast<size_t>(b) * T * H + h) * dvd;
        const float* doh = dout + (static_cast<size_t>(b) * T * H + h) * dvd;
        float* dqh = dq + (static_cast<size_t>(b) * T * H + h) * dqk;
        for (int i0 = 0; i0 < T; i0 += kQueryBlock) {
          const int rows = std::min(kQueryBlock, T - i0);
          const int n = i0 + rows;  // keys [0, n) are seen by some row of the block
          const float* q_blk = qh + static_cast<size_t>(i0) * ldq;
          const float* do_blk = doh + static_cast<size_t>(i0) * ldo;
          // prob (rows, n) = scale * Q_blk K^T;  dprob (rows, n) = dout_blk V^T
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, dqk, s.scale, q_blk, ldq, kh, ldk, 0.0f,
                      prob.data(), n);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, dvd, 1.0f, do_blk, ldo, vh, ldv, 0.0f,
                      dprob.data(), n);
          for (int r = 0; r < rows; ++r) {
            const int i = i0 + r;
            float* p = prob.data() + static_cast<size_t>(r) * n;
            float* ds = dprob.data() + static_cast<size_t>(r) * n;
            const float row_lse = lse[bh * T + i];
            float D = 0.0f;  // dout_i · out_i
#pragma omp simd reduction(+ : D)
            for (int c = 0; c < dvd; ++c) D += do_blk[static_cast<size_t>(r) * ldo + c] * oh[static_cast<size_t>(i) * ldo + c];
            dropout_multipliers(mask.data(), i + 1, drop, (bh * T + i) * T);
            for (int j = 0; j <= i; ++j) {
              const float pij = cpu_math::exp_nonpositive(p[j] - row_lse);
              p[j] = pij * mask[j];                 // P∘M, for dv
              ds[j] = pij * (ds[j] * mask[j] - D);  // dS
            }
            for (int j = i + 1; j < n; ++j) p[j] = ds[j] = 0.0f;  // causal mask
          }
          // dv[0:n] += (P∘M)^T dout_blk;  dq_blk = scale dS K[0:n];  dk[0:n] += scale dS^T Q_blk
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, dvd, rows, 1.0f, prob.data(), n, do_blk, ldo, 1.0f,
                      dvh, ldv);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dqk, n, s.scale, dprob.data(), n, kh, ldk, 0.0f,
                      dqh + static_cast<size_t>(i0) * ldq, ldq);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, dqk, rows, s.scale, dprob.data(), n, q_blk, ldq,
                      1.0f, dkh, ldk);
        }
      }
    }
  }
}

}  // namespace dsk
