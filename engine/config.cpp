#include "engine/config.h"

#include "engine/keyed_config.h"

#include "engine/read_file.h"
#include "kernels/common.h"

#include <filesystem>

namespace dsk {

void ModelConfig::validate() const {
  auto positive = [](const char* key, long long v) {
    if (v <= 0) throw Error(fmt::format("config key '{}' must be positive, got {}", key, v));
  };
  positive("vocab_size", vocab_size);
  positive("context_length", context_length);
  positive("emb_dim", emb_dim);
  positive("n_heads", n_heads);
  positive("n_layers", n_layers);
  positive("kv_latent_dim", kv_latent_dim);
  positive("num_experts", num_experts);
  positive("top_k", top_k);
  positive("expert_hidden_dim", expert_hidden_dim);
  // Every layer is a loop iteration in building and planning the model (dsk info plans a million layers for
  // minutes); no model this engine is for comes near (DeepSeek-V3 has 61).
  if (n_layers > kMaxLayers)
    throw Error(fmt::format("config key 'n_layers' must be at most {}, got {}", kMaxLayers, n_layers));
  if (num_shared_experts < 0)
    throw Error(fmt::format("config key 'num_shared_experts' must be >= 0, got {}", num_shared_experts));
  if (emb_dim % n_heads != 0)
    throw Error(fmt::format("config key 'emb_dim' ({}) must be divisible by n_heads ({})", emb_dim, n_heads));
  if (top_k > num_experts)
    throw Error(fmt::format("config key 'top_k' ({}) must not exceed num_experts ({})", top_k, num_experts));
  if (!(drop_rate >= 0.0f && drop_rate < 1.0f))
    throw Error(fmt::format("config key 'drop_rate' must be in [0, 1), got {}", drop_rate));
  if (!(aux_loss_coef >= 0.0f))
    throw Error(fmt::format("config key 'aux_loss_coef' must be >= 0, got {}", aux_loss_coef));
  if (vocab_size > 65536)
    throw Error(fmt::format("config key 'vocab_size' ({}) exceeds 65536, the uint16 token shards' limit", vocab_size));
  if (attention != "explicit" && attention != "absorbed")
    throw Error(fmt::format("config key 'attention' must be \"explicit\" or \"absorbed\", got \"{}\"", attention));
}

nlohmann::json ModelConfig::to_json() const { return keyed::to_json(*this); }

bool ModelConfig::has_key(const std::string& key) const { return keyed::has_key(*this, key); }

void ModelConfig::update_from_json(const nlohmann::json& j) { keyed::update_from_json(*this, j, "model config key"); }

void ModelConfig::set(const std::string& key, const std::string& value) {
  keyed::set(*this, key, value, "model config key");
}

ModelConfig load_model_config(const std::string& name_or_path) {
  const auto& builtin = builtin_model_configs();
  std::string text;
  if (auto it = builtin.find(name_or_path); it != builtin.end()) {
    text = it->second;
  } else {
    if (!std::filesystem::exists(name_or_path))
      throw Error(fmt::format("config '{}' is neither small, default, large nor a JSON file", name_or_path));
    text = read_file(name_or_path, "config");
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) throw Error(fmt::format("config '{}' is not valid JSON", name_or_path));
  if (!j.is_object())
    throw Error(fmt::format("config '{}' must hold a JSON object of model keys, not {}", name_or_path, j.type_name()));
  // A run's or checkpoint's config.json holds the model config under "model", beside the training keys.
  if (j.contains("model") && j.contains("train"))
    throw Error(fmt::format("config '{}' is a run's or checkpoint's config.json, not a model config: continue that "
                            "run with --resume, or save its \"model\" object as a file of its own", name_or_path));
  ModelConfig c;
  c.update_from_json(j);
  c.validate();
  return c;
}

ParamCounts count_parameters(const ModelConfig& c) {
  const int64_t d = c.emb_dim, dc = c.kv_latent_dim, F = c.expert_hidden_dim, E = c.num_experts;
  const int64_t S = c.num_shared_experts;
  const int64_t expert = F * d + F + d * F + d;  // w1, b1, w2, b2
  const int64_t attn = d * d + dc * d + 2 * dc + d * dc + d * dc + d * d;  // w_q, w_dkv, latent_norm, w_uk, w_uv, w_o
  const int64_t moe = 2 * E * d + E * expert + S * expert;                   // router, router_noise, experts, shared
  const int64_t layer = 2 * d + attn + 2 * d + moe;                          // norm1, attn, norm2, moe
  ParamCounts p;
  p.embedding = static_cast<int64_t>(c.vocab_size) * d + static_cast<int64_t>(c.context_length) * d;
  p.total = p.embedding + c.n_layers * layer + 2 * d;
  p.routed_experts = c.n_layers * E * expert;
  // active = total − routed × (1 − k/E), exact in integers since routed is a multiple of E
  p.active = p.total - p.routed_experts / E * (E - c.top_k);
  return p;
}

}  // namespace dsk
