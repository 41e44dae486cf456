#pragma once
// Causal scaled-dot-product attention in the one general form the model needs:
//   H query heads attend Hk key/value heads, Hk = H (per-head K/V: explicit MLA, the MHA baseline) or
//   Hk = 1 (every head attends one shared latent: absorbed MLA, K = V = c), with qk width dqk and v width dv
//   that may differ. The scale is passed explicitly (MLA uses 1/sqrt(head_dim), not 1/sqrt(dqk)).
// Queries are the LAST q_len positions of the kv_len keys (prefill: q_len = kv_len; decode: q_len = 1), so
// query i may attend key j when j <= i + (kv_len - q_len).
#include "kernels/backend.h"

#include <string>

namespace dsk {

struct AttentionShape {
  int batch = 1;
  int q_len = 1;        // Tq
  int kv_len = 1;       // Tk (valid keys)
  int kv_capacity = 0;  // time stride of k/v buffers (a KV cache may be larger than kv_len); 0 = kv_len
  int heads = 1;        // H
  int kv_heads = 1;     // Hk: 1 or H
  int qk_dim = 1;       // dqk
  int v_dim = 1;        // dv
  float scale = 1.0f;
};

// Dropout on the attention probabilities (inverted); p = 0 disables it. The keep mask of element
// (b, h, i, j) is rng::keep(seed, site, ((b*H + h)*Tq + i)*Tk + j, p), regenerated in backward.
struct AttentionDropout {
  float p = 0.0f;
  uint64_t seed = 0, site = 0;
};

// The time stride of the k/v buffers.
inline int kv_capacity_of(const AttentionShape& s) { return s.kv_capacity == 0 ? s.kv_len : s.kv_capacity; }

// The checks every backend makes before running: one place, the same messages.
inline void check_attention_shape(const AttentionShape& s, const AttentionDropout& drop) {
  DSK_CHECK(s.batch > 0 && s.q_len > 0 && s.kv_len > 0 && s.heads > 0 && s.qk_dim > 0 && s.v_dim > 0,
            "attention: sizes must be positive (batch {}, q_len {}, kv_len {}, heads {}, qk_dim {}, v_dim {})",
            s.batch, s.q_len, s.kv_len, s.heads, s.qk_dim, s.v_dim);
  DSK_CHECK(s.kv_heads == 1 || s.kv_heads == s.heads, "attention: kv_heads must be 1 or heads ({}), got {}", s.heads,
            s.kv_heads);
  DSK_CHECK(s.q_len <= s.kv_len, "attention: q_len {} exceeds kv_len {}", s.q_len, s.kv_len);
  DSK_CHECK(kv_capacity_of(s) >= s.kv_len, "attention: kv_capacity {} is below kv_len {}", s.kv_capacity, s.kv_len);
  DSK_CHECK(drop.p >= 0.0f && drop.p < 1.0f, "attention: dropout probability must be in [0, 1), got {}", drop.p);
}

// q (B, Tq, H, dqk);  k (B, cap, Hk, dqk);  v (B, cap, Hk, dv)  [cap = kv_capacity]
// out (B, Tq, H, dv);  lse (B, H, Tq) log-sum-exp of the scaled scores (saved for backward; may be nullptr)
// kv_start (B) or nullptr: keys before kv_start[b] are masked out (left padding of a batch of prompts); a query row
// that sees no key at all (a padding row) gets out = 0 and lse = -inf.
template <Backend Bk>
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* kv_start, const AttentionShape& s, const AttentionDropout& drop);

// Training backward (q_len = kv_len = capacity, no kv_start). dq (B,T,H,dqk), dk (B,T,Hk,dqk), dv (B,T,Hk,dv)
// are set. With Hk = 1 the key/value gradients are summed over heads in a fixed order (deterministic).
// When k and v are the same tensor (the shared latent) the caller adds dk and dv.
template <Backend Bk>
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const AttentionShape& s,
                        const AttentionDropout& drop);

// CUDA builds only: the kernels attention_forward / attention_backward run for this shape (shared_kv: k and v are
// one tensor) in the current attention_math, after every fallback, e.g. "mma 3xtf32, 64-row blocks" and
// "dq mma tf32, dkv wmma-staged tf32". Benchmark records carry them, so a figure names the kernel that made it.
std::string attention_forward_kernel_cuda(const AttentionShape& s, bool shared_kv);
std::string attention_backward_kernels_cuda(const AttentionShape& s, bool shared_kv);

}  // namespace dsk
