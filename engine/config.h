#pragma once
// Model configuration: the original project's keys, validated; unknown keys are errors.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>

namespace dsk {

struct ModelConfig {
  static constexpr int kMaxLayers = 4096;  // validate(): far above any model dsk is for

  int vocab_size = 50257;
  int context_length = 128;
  int emb_dim = 256;
  int n_heads = 4;
  int n_layers = 4;
  float drop_rate = 0.1f;
  int kv_latent_dim = 64;
  int num_experts = 4;
  int num_shared_experts = 1;
  int top_k = 2;
  int expert_hidden_dim = 1024;
  float aux_loss_coef = 0.01f;
  // How training computes attention: "explicit" (per-head K/V rebuilt from the latent) or "absorbed"
  // (every head attends the shared latent). Same math; see `dsk bench attention`.
  std::string attention = "explicit";

  int head_dim() const { return emb_dim / n_heads; }

  // The one table of keys (engine/keyed_config.h): adding a key means adding one line here.
  template <class C, class F>
  static void visit(C& c, F&& f) {
    f("vocab_size", c.vocab_size);
    f("context_length", c.context_length);
    f("emb_dim", c.emb_dim);
    f("n_heads", c.n_heads);
    f("n_layers", c.n_layers);
    f("drop_rate", c.drop_rate);
    f("kv_latent_dim", c.kv_latent_dim);
    f("num_experts", c.num_experts);
    f("num_shared_experts", c.num_shared_experts);
    f("top_k", c.top_k);
    f("expert_hidden_dim", c.expert_hidden_dim);
    f("aux_loss_coef", c.aux_loss_coef);
    f("attention", c.attention);
  }

  // Throws dsk::Error naming the key for an impossible value.
  void validate() const;
  nlohmann::json to_json() const;
  // Reads the keys present in j over the current values; unknown keys and wrong types are errors naming the key.
  void update_from_json(const nlohmann::json& j);
  // key=value with the value parsed as JSON if possible ("0.1", "true", "\"absorbed\"" or bare "absorbed").
  void set(const std::string& key, const std::string& value);
  bool has_key(const std::string& key) const;
};

// "small", "default", "large" (built in, from configs/*.json) or a path to a JSON file.
ModelConfig load_model_config(const std::string& name_or_path);

// The built-in configuration texts, generated at build time from configs/*.json.
const std::map<std::string, std::string>& builtin_model_configs();

// Parameter counts: total (tied head counted once) and active per token (total − routed × (1 − k/E)).
struct ParamCounts {
  int64_t total = 0, active = 0, routed_experts = 0, embedding = 0;
};
ParamCounts count_parameters(const ModelConfig& c);

}  // namespace dsk
