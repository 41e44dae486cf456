#pragma once
// The coarse differentiable ops the model is built from. Each runs its kernel on the tape's device and
// records one node with a hand-written backward (see tape.h for the gradient rules).
#include "autograd/tape.h"
#include "engine/params.h"
#include "kernels/attention.h"

namespace dsk::ops {

// ---- dense -----------------------------------------------------------------------------------------------
// tokens (B, T) I32 -> (B, T, d) = wte[tokens] + wpe[t]
Var* embedding(Tape& t, Var* tokens, const Param& wte, const Param& wpe);
// Inverted dropout with the mask keyed by (tape seed, step, layer, kind); identity unless training and p > 0.
Var* dropout(Tape& t, Var* x, float p, uint32_t layer, uint32_t kind);
// LayerNorm over the last dimension.
Var* layernorm(Tape& t, Var* x, const Param& w, const Param& b);
// x (..., in) -> (..., out) = x · wᵀ + b; b may be null.
Var* linear(Tape& t, Var* x, const Param& w, const Param* b);
// a + b (same shape)
Var* add(Tape& t, Var* a, Var* b);

// ---- attention ---------------------------------------------------------------------------------------------
// The MLA latent: x (..., d) -> c (..., dc) = LayerNorm(x · w_dkvᵀ; ln_w, ln_b), one fused op (kernels/latent.h).
Var* latent_projection(Tape& t, Var* x, const Param& w_dkv, const Param& ln_w, const Param& ln_b);
// Causal attention (kernels/attention.h) over q (B,T,H,dqk), k (B,T,Hk,dqk), v (B,T,Hk,dv) -> (B,T,H*dv).
// k and v may be the same Var (the shared latent); its gradient is then the sum of both.
Var* attention(Tape& t, Var* q, Var* k, Var* v, const AttentionShape& shape, float dropout_p, uint32_t layer);
// Per-head product with a weight split by rows into heads: w (H*hd, dc), block w_h = rows h*hd .. (h+1)*hd.
//   to_latent:   x (N, H, hd) -> (N, H*dc),  y_h = x_h · w_h        (absorbed query:  q_lat,h = W_uk,hᵀ q_h)
//   from_latent: x (N, H, dc) -> (N, H*hd),  y_h = x_h · w_hᵀ       (absorbed output: o_h = W_uv,h o_lat,h)
Var* head_project(Tape& t, Var* x, const Param& w, int heads, bool to_latent);

// ---- losses (terminal: their gradient weight is fixed at forward time) ------------------------------------
// Mean cross-entropy over positions with targets >= 0, as a (1) Var. When recording, the logit gradient
// (times grad_weight) is computed in the same pass, in place over the logits.
Var* cross_entropy(Tape& t, Var* logits, Var* targets, float grad_weight);

// ---- mixture of experts ------------------------------------------------------------------------------------
struct RouterOut {
  Var* expert_idx;  // (N, k) I32
  Var* gate;        // (N, k) softmax over the selected
  Var* probs;       // (N, E) clean softmax, for the aux loss (not differentiated through here)
};
// Noisy top-k (noise only when training and noise_logits is given).
RouterOut router(Tape& t, Var* logits, Var* noise_logits, int k, uint32_t layer);
struct AuxOut {
  Var* aux;   // (1)  coef * E * Σ f_i P_i
  Var* load;  // (E)  f_i, fraction of token slots per expert
};
// Switch aux loss; its gradient (times grad_weight) flows into the clean router logits.
AuxOut aux_loss(Tape& t, Var* logits, const RouterOut& r, float coef, float grad_weight);
struct Permutation {
  Var* sorted_slots;  // (N*k) I32
  Var* slot_row;      // (N*k) I32
  Var* offsets;       // (E+1) I32, in the device's memory
  int k = 1, num_experts = 1;
};
Permutation permute(Tape& t, Var* expert_idx, int num_experts);
// Every token to each of S experts (the shared experts), through the same kernels as routed ones.
Permutation permute_all(Tape& t, int tokens, int num_experts);
// x (N, d) -> xp (N*k, d), rows grouped by expert
Var* gather(Tape& t, Var* x, const Permutation& p);
// xp (M, d) -> (M, d): per expert segment relu(xp·w1ᵀ + b1)·w2ᵀ + b2
Var* expert_ffn(Tape& t, Var* xp, const Permutation& p, const Param& w1, const Param& b1, const Param& w2,
                const Param& b2);
// yp (N*k, d), gate (N*k) -> y (N, d) = Σ_j gate · yp row; gate may be a constant (requires_grad false)
Var* combine(Tape& t, Var* yp, Var* gate, const Permutation& p);
// A constant Var filled with `value` (not differentiated).
Var* constant(Tape& t, const std::vector<int64_t>& shape, float value, const std::string& name);

}  // namespace dsk::ops
