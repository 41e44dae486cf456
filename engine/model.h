#pragma once
// The dsk model: token + position embedding, n_layers pre-norm blocks of MLA and MoE, final LayerNorm,
// output head tied to the token embedding. Parameters use the checkpoint names of the PyTorch reference.
#include "autograd/tape.h"
#include "engine/config.h"
#include "engine/params.h"

#include <vector>

namespace dsk {

struct ForwardResult {
  Var* logits = nullptr;  // (B, T, V); after a training forward it holds the logit gradient (fused loss)
  Var* loss = nullptr;    // (1) mean cross-entropy (when targets are given)
  Var* aux = nullptr;     // (1) mean over layers of the per-layer aux loss
  std::vector<Var*> expert_load;  // per layer (E): fraction of token slots per expert
  std::vector<Var*> loss_terms;   // what backward starts from: the CE loss and every layer's aux loss
};

class Model {
 public:
  // plan_only: parameters get fake addresses and no memory; such a model only runs forward/backward on a
  // counting arena to measure the activation plan (memory_plan.h).
  Model(const ModelConfig& config, Backend device, bool plan_only = false);

  const ModelConfig& config() const { return config_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }
  Backend device() const { return params_.device(); }

  // N(0, 0.02) for every matrix and embedding, zero biases, LayerNorm weight 1 / bias 0; reproducible from seed
  // on every backend (counter-based generator).
  void init_weights(uint64_t seed);

  // tokens, targets: (B, T) I32 in the model's device memory; targets may be undefined (no loss).
  // grad_weight: the weight of this forward's loss (CE + aux) in the optimizer step's gradient (1 / accum steps).
  ForwardResult forward(Tape& t, const Tensor& tokens, const Tensor& targets, float grad_weight = 1.0f);

  // One block's parameters (the shared-expert ones are empty when num_shared_experts is 0).
  struct Layer {
    Param norm1_w, norm1_b, w_q, w_dkv, latent_w, latent_b, w_uk, w_uv, w_o, norm2_w, norm2_b;
    Param router, router_noise, e_w1, e_b1, e_w2, e_b2, s_w1, s_b1, s_w2, s_b2;
  };
  // Direct access for code that runs the model without the tape (the inference engine).
  const Layer& layer(int l) const { return layers_.at(l); }
  const Param& tok_emb() const { return tok_emb_; }
  const Param& pos_emb() const { return pos_emb_; }
  const Param& final_norm_weight() const { return final_w_; }
  const Param& final_norm_bias() const { return final_b_; }

 private:
  void register_parameters();
  void bind_parameters();
  Var* attention_block(Tape& t, Var* x, const Layer& L, int layer, int B, int T);
  Var* moe_block(Tape& t, Var* x, const Layer& L, int layer, float aux_weight, ForwardResult& r);

  ModelConfig config_;
  ParamStore params_;
  Param tok_emb_, pos_emb_, final_w_, final_b_;
  std::vector<Layer> layers_;
};

}  // namespace dsk
