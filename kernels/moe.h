#pragma once
// Mixture-of-experts kernels: noisy top-k router, Switch aux loss, permute/unpermute, expert FFN.
// N tokens, E experts, k experts per token; slot s = n*k + j is token n's j-th choice.
#include "kernels/backend.h"

namespace dsk {

// Router. logits (N, E) clean router logits; noise_logits (N, E) or nullptr (no noise: evaluation/sampling).
//   noisy = logits + normal(seed, site, n*E + e) * softplus(noise_logits)
//   expert_idx (N, k): the k largest noisy values, in descending order, ties to the lower expert id
//   gate (N, k): softmax over the k selected noisy values
//   noisy (N, E): saved for backward;  probs (N, E): softmax(logits) (clean, for the aux loss)
template <Backend B>
void moe_router_forward(int32_t* expert_idx, float* gate, float* noisy, float* probs, const float* logits,
                        const float* noise_logits, int N, int E, int k, uint64_t seed, uint64_t site);

// dgate (N, k) -> dlogits (N, E) (set; nonzero only at selected experts) and dnoise_logits (N, E) (set; when
// noise_logits is given): d noisy * normal * sigmoid(noise_logits).
template <Backend B>
void moe_router_backward(float* dlogits, float* dnoise_logits, const float* dgate, const float* gate,
                         const int32_t* expert_idx, const float* noise_logits, int N, int E, int k, uint64_t seed,
                         uint64_t site);

// Switch load-balancing loss: load f_i = (slots routed to i) / (N*k), importance P_i = mean_n probs[n, i],
// aux = coef * E * Σ_i f_i P_i  (perfect balance gives coef). aux (1), load (E), importance (E) in backend memory.
template <Backend B>
void moe_aux_loss_forward(float* aux, float* load, float* importance, const float* probs,
                          const int32_t* expert_idx, int N, int E, int k, float coef);

// Gradient of daux * aux with respect to the clean logits (through the softmax; f is a constant): dlogits (N, E) set.
template <Backend B>
void moe_aux_loss_backward(float* dlogits, float daux, const float* probs, const float* load, int N, int E,
                           float coef);

// Stable counting sort of the N*k slots by expert id.
//   sorted_slots (N*k): slot ids grouped by expert, in slot order within an expert
//   slot_row (N*k): the inverse map, row of slot s in the sorted order
//   offsets (E+1): rows of expert e are [offsets[e], offsets[e+1])
template <Backend B>
void moe_permute(int32_t* sorted_slots, int32_t* slot_row, int32_t* offsets, const int32_t* expert_idx, int N,
                 int E, int k);

// expert_idx (N, k): expert_idx[n*k + j] = j — every token to each of k experts (the shared experts), made on
// the device so the shared path needs no host copy.
template <Backend B>
void moe_all_experts_index(int32_t* expert_idx, int N, int k);

// xp (N*k, d): xp[r] = x[sorted_slots[r] / k]
template <Backend B>
void moe_gather(float* xp, const float* x, const int32_t* sorted_slots, int N, int k, int d);
// dx (N, d) = Σ_j dxp[slot_row[n*k + j]]  (set; each token reads its k rows: deterministic, no atomics)
template <Backend B>
void moe_gather_backward(float* dx, const float* dxp, const int32_t* slot_row, int N, int k, int d);

// y (N, d) = Σ_j gate[n*k + j] * yp[slot_row[n*k + j]]
template <Backend B>
void moe_combine(float* y, const float* yp, const float* gate, const int32_t* slot_row, int N, int k, int d);
// dyp[slot_row[s]] = gate[s] * dy[s / k];  dgate[s] = dy[s / k] · yp[slot_row[s]]   (both set)
template <Backend B>
void moe_combine_backward(float* dyp, float* dgate, const float* dy, const float* yp, const float* gate,
                          const int32_t* slot_row, int N, int k, int d);

// Expert FFN over the permuted segments: for rows r in [offsets[e], offsets[e+1]):
//   h[r] = relu(xp[r] · w1[e]ᵀ + b1[e])  (F);   y[r] = h[r] · w2[e]ᵀ + b2[e]  (d)
// xp (M, d); w1 (E, F, d); b1 (E, F); w2 (E, d, F); b2 (E, d); h (M, F) saved; y (M, d).
// offsets (E+1) live in the backend's memory (no host synchronisation on CUDA).
template <Backend B>
void expert_ffn_forward(float* h, float* y, const float* xp, const float* w1, const float* b1, const float* w2,
                        const float* b2, const int32_t* offsets, int E, int M, int d, int F);

// dxp (M, d) set; dw1, db1, dw2, db2 accumulate; dh (M, F) is scratch.
template <Backend B>
void expert_ffn_backward(float* dxp, float* dw1, float* db1, float* dw2, float* db2, float* dh, const float* dy,
                         const float* xp, const float* h, const float* w1, const float* w2, const int32_t* offsets,
                         int E, int M, int d, int F);

// The argument checks both backends make (one message, whichever device runs the op).
inline void check_router_forward(int N, int E, int k) {
  DSK_CHECK(N > 0 && E > 0, "moe_router_forward: bad shape N={} E={}", N, E);
  DSK_CHECK(k > 0 && k <= E, "moe_router_forward: k={} must be in [1, E={}]", k, E);
}
inline void check_router_backward(int N, int E, int k, const float* dnoise_logits, const float* noise_logits) {
  DSK_CHECK(N > 0 && E > 0 && k > 0 && k <= E, "moe_router_backward: bad shape N={} E={} k={}", N, E, k);
  DSK_CHECK(!dnoise_logits || noise_logits, "moe_router_backward: dnoise_logits needs noise_logits");
}
inline void check_aux_loss_forward(int N, int E, int k) {
  DSK_CHECK(N > 0 && E > 0 && k > 0, "moe_aux_loss_forward: bad shape N={} E={} k={}", N, E, k);
}
inline void check_aux_loss_backward(int N, int E) {
  DSK_CHECK(N > 0 && E > 0, "moe_aux_loss_backward: bad shape N={} E={}", N, E);
}
// op: "expert_ffn_forward" or "expert_ffn_backward".
inline void check_expert_ffn(int E, int M, int d, int F, const char* op) {
  DSK_CHECK(E > 0 && M >= 0 && d > 0 && F > 0, "{}: bad shape E={} M={} d={} F={}", op, E, M, d, F);
}

}  // namespace dsk
