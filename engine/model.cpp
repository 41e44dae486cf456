#include "engine/model.h"

#include "autograd/ops.h"
#include "kernels/device.h"
#include "kernels/elementwise.h"
#include "kernels/rng.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace dsk {

Model::Model(const ModelConfig& config, Backend device, bool plan_only) : config_(config) {
  config_.validate();
  register_parameters();
  params_.allocate(device, plan_only);
  bind_parameters();
}

void Model::register_parameters() {
  const ModelConfig& c = config_;
  const int64_t V = c.vocab_size, d = c.emb_dim, dc = c.kv_latent_dim, E = c.num_experts;
  const int64_t S = c.num_shared_experts, F = c.expert_hidden_dim;
  // decay: matrices yes; embeddings, norms and biases no (used when decay_all is false).
  params_.add("tok_emb.weight", {V, d}, false);
  params_.add("pos_emb.weight", {c.context_length, d}, false);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("blocks.{}.", l);
    params_.add(p + "norm1.weight", {d}, false);
    params_.add(p + "norm1.bias", {d}, false);
    params_.add(p + "attn.w_q.weight", {d, d}, true);
    params_.add(p + "attn.w_dkv.weight", {dc, d}, true);
    params_.add(p + "attn.latent_norm.weight", {dc}, false);
    params_.add(p + "attn.latent_norm.bias", {dc}, false);
    params_.add(p + "attn.w_uk.weight", {d, dc}, true);
    params_.add(p + "attn.w_uv.weight", {d, dc}, true);
    params_.add(p + "attn.w_o.weight", {d, d}, true);
    params_.add(p + "norm2.weight", {d}, false);
    params_.add(p + "norm2.bias", {d}, false);
    params_.add(p + "moe.router.weight", {E, d}, true);
    params_.add(p + "moe.router_noise.weight", {E, d}, true);
    params_.add(p + "moe.experts.w1.weight", {E, F, d}, true);
    params_.add(p + "moe.experts.w1.bias", {E, F}, false);
    params_.add(p + "moe.experts.w2.weight", {E, d, F}, true);
    params_.add(p + "moe.experts.w2.bias", {E, d}, false);
    if (S > 0) {
      params_.add(p + "moe.shared.w1.weight", {S, F, d}, true);
      params_.add(p + "moe.shared.w1.bias", {S, F}, false);
      params_.add(p + "moe.shared.w2.weight", {S, d, F}, true);
      params_.add(p + "moe.shared.w2.bias", {S, d}, false);
    }
  }
  params_.add("final_norm.weight", {d}, false);
  params_.add("final_norm.bias", {d}, false);
}

void Model::bind_parameters() {
  auto P = [&](const std::string& n) { return params_.param(n); };
  tok_emb_ = P("tok_emb.weight");
  pos_emb_ = P("pos_emb.weight");
  final_w_ = P("final_norm.weight");
  final_b_ = P("final_norm.bias");
  layers_.clear();
  for (int l = 0; l < config_.n_layers; ++l) {
    const std::string p = fmt::format("blocks.{}.", l);
    Layer L;
    L.norm1_w = P(p + "norm1.weight");
    L.norm1_b = P(p + "norm1.bias");
    L.w_q = P(p + "attn.w_q.weight");
    L.w_dkv = P(p + "attn.w_dkv.weight");
    L.latent_w = P(p + "attn.latent_norm.weight");
    L.latent_b = P(p + "attn.latent_norm.bias");
    L.w_uk = P(p + "attn.w_uk.weight");
    L.w_uv = P(p + "attn.w_uv.weight");
    L.w_o = P(p + "attn.w_o.weight");
    L.norm2_w = P(p + "norm2.weight");
    L.norm2_b = P(p + "norm2.bias");
    L.router = P(p + "moe.router.weight");
    L.router_noise = P(p + "moe.router_noise.weight");
    L.e_w1 = P(p + "moe.experts.w1.weight");
    L.e_b1 = P(p + "moe.experts.w1.bias");
    L.e_w2 = P(p + "moe.experts.w2.weight");
    L.e_b2 = P(p + "moe.experts.w2.bias");
    if (config_.num_shared_experts > 0) {
      L.s_w1 = P(p + "moe.shared.w1.weight");
      L.s_b1 = P(p + "moe.shared.w1.bias");
      L.s_w2 = P(p + "moe.shared.w2.weight");
      L.s_b2 = P(p + "moe.shared.w2.bias");
    }
    layers_.push_back(L);
  }
}

void Model::init_weights(uint64_t seed) {
  // Built on the host, then copied: one code path for both backends.
  std::vector<float> host(static_cast<size_t>(params_.total()), 0.0f);
  const auto& infos = params_.infos();
  for (size_t i = 0; i < infos.size(); ++i) {
    const ParamInfo& p = infos[i];
    const bool is_norm = p.name.find("norm") != std::string::npos;
    const bool is_bias = p.name.size() >= 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
    float* dst = host.data() + p.offset;
    // Each value is a function of (seed, parameter, index) alone, so the threads give the same weights as one
    // thread; on one core the large config's 1.8 G parameters took most of a minute.
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < p.numel; ++j) {
      if (is_bias)
        dst[j] = 0.0f;
      else if (is_norm)
        dst[j] = 1.0f;
      else
        dst[j] = 0.02f * rng::normal(seed, /*site=*/0xC0FFEE0000ull + i, static_cast<uint64_t>(j));
    }
  }
  if (device() == Backend::CPU)
    std::copy(host.begin(), host.end(), params_.values());
  else
    cuda::copy_to_device(params_.values(), host.data(), host.size() * sizeof(float));
}

Var* Model::attention_block(Tape& t, Var* x, const Layer& L, int layer, int B, int T) {
  const ModelConfig& c = config_;
  const int H = c.n_heads, hd = c.head_dim(), dc = c.kv_latent_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));  // always the head width, never the latent's
  Var* q = ops::linear(t, x, L.w_q, nullptr);                      // (B, T, H*hd)
  // (B, T, dc) = LN(x · W_dkvᵀ): the only thing a KV cache keeps; one fused op (kernels/latent.h)
  Var* latent = ops::latent_projection(t, x, L.w_dkv, L.latent_w, L.latent_b);
  AttentionShape s;
  s.batch = B;
  s.q_len = s.kv_len = T;
  s.heads = H;
  s.scale = scale;
  Var* heads_out = nullptr;  // (B, T, H, hd)
  if (c.attention == "absorbed") {
    // Every head attends the one shared latent: q_lat,h = W_uk,hᵀ q_h; o_h = W_uv,h (Σ p c).
    Var* q_lat = ops::head_project(t, q, L.w_uk, H, /*to_latent=*/true);  // (B*T, H, dc)
    s.kv_heads = 1;
    s.qk_dim = s.v_dim = dc;
    Var* o_lat = ops::attention(t, q_lat, latent, latent, s, c.drop_rate, layer);  // (B, T, H, dc)
    heads_out = ops::head_project(t, o_lat, L.w_uv, H, /*to_latent=*/false);
  } else {
    // Per-head K and V rebuilt from the latent.
    Var* k = ops::linear(t, latent, L.w_uk, nullptr);  // (B, T, H*hd)
    Var* v = ops::linear(t, latent, L.w_uv, nullptr);
    s.kv_heads = H;
    s.qk_dim = s.v_dim = hd;
    heads_out = ops::attention(t, q, k, v, s, c.drop_rate, layer);
  }
  Var* y = ops::linear(t, heads_out, L.w_o, nullptr);
  return ops::dropout(t, y, c.drop_rate, layer, 2);
}

Var* Model::moe_block(Tape& t, Var* x, const Layer& L, int layer, float aux_weight, ForwardResult& r) {
  const ModelConfig& c = config_;
  const int N = static_cast<int>(x->value.numel() / c.emb_dim);
  Var* logits = ops::linear(t, x, L.router, nullptr);  // (N, E)
  Var* noise_logits = t.training ? ops::linear(t, x, L.router_noise, nullptr) : nullptr;
  ops::RouterOut route = ops::router(t, logits, noise_logits, c.top_k, layer);
  ops::AuxOut aux = ops::aux_loss(t, logits, route, c.aux_loss_coef, aux_weight);
  r.expert_load.push_back(aux.load);
  r.loss_terms.push_back(aux.aux);
  if (r.aux == nullptr) {
    r.aux = ops::constant(t, {1}, 0.0f, "aux_loss.mean");
  }
  t.run([&]<Backend B>() {
    accumulate<B>(r.aux->value.f32(), aux.aux->value.f32(), 1, 1.0f / static_cast<float>(c.n_layers));
  });

  ops::Permutation perm = ops::permute(t, route.expert_idx, c.num_experts);
  Var* xp = ops::gather(t, x, perm);                                           // (N*k, d) grouped by expert
  Var* yp = ops::expert_ffn(t, xp, perm, L.e_w1, L.e_b1, L.e_w2, L.e_b2);    // (N*k, d)
  yp = ops::dropout(t, yp, c.drop_rate, layer, 3);
  Var* y = ops::combine(t, yp, route.gate, perm);  // (N, d)
  if (c.num_shared_experts > 0) {
    const int S = c.num_shared_experts;
    ops::Permutation all = ops::permute_all(t, N, S);
    Var* xs = ops::gather(t, x, all);
    Var* ys = ops::expert_ffn(t, xs, all, L.s_w1, L.s_b1, L.s_w2, L.s_b2);
    ys = ops::dropout(t, ys, c.drop_rate, layer, 5);
    Var* avg = ops::constant(t, {N * S}, 1.0f / static_cast<float>(S), "shared.gate");  // outputs averaged
    y = ops::add(t, y, ops::combine(t, ys, avg, all));
  }
  return y;
}

ForwardResult Model::forward(Tape& t, const Tensor& tokens, const Tensor& targets, float grad_weight) {
  const ModelConfig& c = config_;
  DSK_CHECK(tokens.ndim == 2, "tokens must be (B, T), got {}", tokens.shape_str());
  const int B = static_cast<int>(tokens.dim(0)), T = static_cast<int>(tokens.dim(1));
  if (T > c.context_length)
    throw Error(fmt::format("sequence of {} tokens exceeds the model's context_length {}", T, c.context_length));
  // The kernels count rows (B·T tokens, B·T·(top_k + shared) expert slots) in int: refused here, not wrapped.
  const int64_t slots = int64_t(B) * T * (c.top_k + c.num_shared_experts);
  if (slots > std::numeric_limits<int>::max())
    throw Error(fmt::format("a batch of {} × {} tokens is too large for one step (batch × seq_len × (top_k + "
                            "num_shared_experts) must stay below 2^31); lower the batch size", B, T));
  ForwardResult r;
  Var* tok = t.wrap(tokens, "tokens");
  Var* x = ops::embedding(t, tok, tok_emb_, pos_emb_);  // (B, T, d)
  x = ops::dropout(t, x, c.drop_rate, 0, 0);
  const float aux_weight = grad_weight / static_cast<float>(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& L = layers_[l];
    x = ops::add(t, x, attention_block(t, ops::layernorm(t, x, L.norm1_w, L.norm1_b), L, l, B, T));
    x = ops::add(t, x, moe_block(t, ops::layernorm(t, x, L.norm2_w, L.norm2_b), L, l, aux_weight, r));
  }
  x = ops::layernorm(t, x, final_w_, final_b_);
  r.logits = ops::linear(t, x, tok_emb_, nullptr);  // tied head: (B, T, V)
  if (targets.data) {
    r.loss = ops::cross_entropy(t, r.logits, t.wrap(targets, "targets"), grad_weight);
    r.loss_terms.push_back(r.loss);
  }
  return r;
}

}  // namespace dsk
