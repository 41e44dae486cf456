// The golden fixture (scripts/make_reference.py) is readable and internally consistent: every parameter of the
// tiny config with its issue-2 name and shape, a gradient and a post-AdamW value for each, tokens in range, and
// numbers that agree with each other. The model-vs-fixture comparison lives with the C++ model.
#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <set>

#include "engine/safetensors.h"

namespace {

const std::string kFixtureDir = std::string(DSK_TEST_DIR) + "/fixtures/";

// name -> shape of every parameter of the model, from the config (the checkpoint names of issue 2).
std::map<std::string, std::vector<int64_t>> expected_params(const nlohmann::json& c) {
  const int64_t V = c["vocab_size"], ctx = c["context_length"], d = c["emb_dim"], L = c["n_layers"];
  const int64_t dc = c["kv_latent_dim"], E = c["num_experts"], S = c["num_shared_experts"], F = c["expert_hidden_dim"];
  std::map<std::string, std::vector<int64_t>> p = {
      {"tok_emb.weight", {V, d}}, {"pos_emb.weight", {ctx, d}}, {"final_norm.weight", {d}}, {"final_norm.bias", {d}}};
  for (int64_t l = 0; l < L; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    for (const char* norm : {"norm1", "norm2"}) {
      p[b + norm + ".weight"] = {d};
      p[b + norm + ".bias"] = {d};
    }
    p[b + "attn.w_q.weight"] = {d, d};
    p[b + "attn.w_dkv.weight"] = {dc, d};
    p[b + "attn.latent_norm.weight"] = {dc};
    p[b + "attn.latent_norm.bias"] = {dc};
    p[b + "attn.w_uk.weight"] = {d, dc};
    p[b + "attn.w_uv.weight"] = {d, dc};
    p[b + "attn.w_o.weight"] = {d, d};
    p[b + "moe.router.weight"] = {E, d};
    p[b + "moe.router_noise.weight"] = {E, d};
    for (auto [group, n] : {std::pair<const char*, int64_t>{"experts", E}, {"shared", S}}) {
      const std::string m = b + "moe." + group + ".";
      p[m + "w1.weight"] = {n, F, d};
      p[m + "w1.bias"] = {n, F};
      p[m + "w2.weight"] = {n, d, F};
      p[m + "w2.bias"] = {n, d};
    }
  }
  return p;
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

TEST_CASE("golden fixture: names, shapes and internal consistency", "[engine][golden]") {
  const dsk::SafeTensorsFile f = dsk::read_safetensors(kFixtureDir + "golden_tiny.safetensors");
  const auto& t = f.tensors;
  const auto& meta = f.metadata;
  for (const char* key : {"config", "optimizer", "max_norm", "tolerances", "layernorm_eps"}) {
    INFO(key);
    REQUIRE(meta.count(key));
  }

  // The config, also committed as golden_tiny.json with the original key names.
  const auto cfg = nlohmann::json::parse(meta.at("config"));
  std::ifstream json_file(kFixtureDir + "golden_tiny.json");
  REQUIRE(json_file);
  CHECK(nlohmann::json::parse(json_file) == cfg);
  std::set<std::string> keys;
  for (const auto& [k, v] : cfg.items()) keys.insert(k);
  CHECK(keys == std::set<std::string>{"vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate",
                                      "kv_latent_dim", "num_experts", "num_shared_experts", "top_k",
                                      "expert_hidden_dim", "aux_loss_coef"});
  CHECK(cfg["drop_rate"].get<double>() == 0.0);
  const int64_t V = cfg["vocab_size"], T = cfg["context_length"];

  // Every parameter, with a gradient and a value after 3 AdamW steps, all F32 and finite; nothing else stored.
  const auto params = expected_params(cfg);
  CHECK(t.at("param.tok_emb.weight").shape == std::vector<int64_t>{64, 32});
  std::set<std::string> expected_names = {"tokens", "logits", "loss", "aux_loss", "losses", "grad_norms"};
  double grad_sq = 0;
  for (const auto& [name, shape] : params) {
    for (const std::string prefix : {"param.", "grad.", "step3."}) {
      INFO(prefix + name);
      expected_names.insert(prefix + name);
      REQUIRE(t.count(prefix + name));
      CHECK(t.at(prefix + name).dtype == "F32");
      CHECK(t.at(prefix + name).shape == shape);
      CHECK(all_finite(dsk::as_floats(t.at(prefix + name))));
    }
    for (float g : dsk::as_floats(t.at("grad." + name))) grad_sq += static_cast<double>(g) * g;
    // Training moved every parameter (weight decay moves even the unused router_noise).
    auto before = dsk::as_floats(t.at("param." + name)), after = dsk::as_floats(t.at("step3." + name));
    double moved = 0;
    for (size_t i = 0; i < before.size(); ++i) moved = std::max(moved, std::abs(double(after[i]) - before[i]));
    INFO(name << " moved by " << moved);
    CHECK(moved > 0);
    CHECK(moved < 0.1);   // 3 steps of lr 1e-2
    // Without router noise, router_noise takes no part in the loss: its gradient is exactly zero.
    if (name.find("router_noise") != std::string::npos)
      for (float g : dsk::as_floats(t.at("grad." + name))) REQUIRE(g == 0.0f);
  }
  std::set<std::string> stored;
  for (const auto& [name, tensor] : t) stored.insert(name);
  CHECK(stored == expected_names);

  // The batch: (B, T+1) tokens in [0, V).
  const auto& tokens = t.at("tokens");
  REQUIRE(tokens.dtype == "I32");
  REQUIRE(tokens.shape.size() == 2);
  CHECK(tokens.shape[1] == T + 1);
  const int64_t B = tokens.shape[0];
  for (int32_t tok : dsk::as_int32s(tokens)) REQUIRE((tok >= 0 && tok < V));

  // Outputs: shapes, and numbers that agree with each other.
  CHECK(t.at("logits").shape == std::vector<int64_t>{B, T, V});
  CHECK(all_finite(dsk::as_floats(t.at("logits"))));
  const float loss = dsk::as_floats(t.at("loss")).at(0), aux = dsk::as_floats(t.at("aux_loss")).at(0);
  const auto losses = dsk::as_floats(t.at("losses")), norms = dsk::as_floats(t.at("grad_norms"));
  REQUIRE(losses.size() == 3);
  REQUIRE(norms.size() == 3);
  CHECK(loss > 0);
  CHECK(aux > 0);
  CHECK(losses[0] == Approx(loss + aux).epsilon(1e-6));   // step 1 trains on CE + aux
  CHECK(losses[2] < losses[0]);
  CHECK(norms[0] == Approx(std::sqrt(grad_sq)).epsilon(1e-5));   // the stored grads are the pre-clip gradients
  const double max_norm = std::stod(meta.at("max_norm"));
  for (float n : norms) CHECK(n > max_norm);   // clipping is active in every step

  // Tolerances cover exactly the compared outputs and are positive.
  const auto tol = nlohmann::json::parse(meta.at("tolerances"));
  std::set<std::string> tol_names;
  for (const auto& [name, value] : tol.items()) {
    tol_names.insert(name);
    CHECK(value.get<double>() > 0);
  }
  std::set<std::string> compared;
  for (const auto& name : expected_names)
    if (name != "tokens" && name.rfind("param.", 0) != 0) compared.insert(name);
  CHECK(tol_names == compared);
}
