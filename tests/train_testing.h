#pragma once
// Helpers for the tests that train a model end to end (trainer, CLI, CUDA model): a tiny MLA + MoE config, a
// prepared corpus of one repeated line, and the losses a run logged.
#include "engine/config.h"
#include "engine/data.h"
#include "tests/test_env.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace dsk::testing {

// A tiny model over the real GPT-2 vocabulary (prepared shards are GPT-2 tokens). Dropout and router noise are on:
// the determinism and resume tests must hold with them. Tests widen it where they need bigger tiles.
inline ModelConfig tiny_model_config() {
  ModelConfig c;
  c.context_length = 16;
  c.emb_dim = 32;
  c.n_heads = 4;
  c.n_layers = 2;
  c.kv_latent_dim = 12;
  c.num_experts = 4;
  c.num_shared_experts = 1;
  c.top_k = 2;
  c.expert_hidden_dim = 32;
  c.drop_rate = 0.1f;
  return c;
}

// tiny_model_config() with the given dropout, written as d/tiny.json (for `dsk ... --config`); returns the path.
inline std::string tiny_config_file(const TempDir& d, float drop_rate) {
  ModelConfig c = tiny_model_config();
  c.drop_rate = drop_rate;
  return d.file("tiny.json", c.to_json().dump(2));
}

// `line` repeated `times` times, prepared (dsk prepare) into d/data; returns that folder.
inline std::string prepare_repeated_line(const TempDir& d, const std::string& line, int times) {
  std::string text;
  for (int i = 0; i < times; ++i) text += line + "\n";
  PrepareOptions o;
  o.input = d.file("corpus.txt", text);
  o.out_dir = d / "data";
  prepare_dataset(o);
  return o.out_dir;
}

// The training losses of a run, in step order, from its metrics.jsonl.
inline std::vector<double> train_losses(const std::string& run_dir) {
  std::vector<double> out;
  std::ifstream in(std::filesystem::path(run_dir) / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == "train") out.push_back(j["loss"].get<double>());
  }
  return out;
}

}  // namespace dsk::testing
