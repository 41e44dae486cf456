// Decode benchmark (see bench_decode.h). Not a test: it only measures.
#include "bench/bench_decode.h"

#include "engine/inference.h"
#include "engine/model.h"
#include "kernels/device.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>

namespace dsk {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

DecodeSweep default_decode_sweep(const ModelConfig& c, const std::string& name, Backend device) {
  const int ctx = c.context_length;
  DecodeSweep s;
  if (device == Backend::CUDA) {
    s.contexts = {std::max(16, ctx / 4), ctx / 2, ctx};
    s.batches = {1, 8, 32};
    s.steps = 16;
    return s;
  }
  s.contexts = {std::max(16, ctx / 4), ctx};
  s.batches = {1, 4};
  s.steps = 12;
  if (name == "large") {
    s.layers = 1;
    s.note = fmt::format("CPU: timed with 1 of {} layers (the full model's weights do not fit a short CPU run); "
                         "per-token times grow about linearly with layers, cache bytes are for all {} layers",
                         c.n_layers, c.n_layers);
  }
  return s;
}

nlohmann::json bench_decode(const ModelConfig& full, const std::string& name, Backend device, const DecodeSweep& sw) {
  const int H = full.n_heads, hd = full.head_dim(), dc = full.kv_latent_dim;
  const int64_t mha_floats = cache_floats_per_token_layer(full, DecodeMode::MHA);
  const int64_t mla_floats = cache_floats_per_token_layer(full, DecodeMode::Absorbed);
  nlohmann::json r;
  r["config"] = name;
  r["model"] = full.to_json();
  r["device"] = backend_name(device);
  r["cache_per_token_per_layer"] = {
      {"mha_floats", mha_floats},  // 2 · n_heads · head_dim
      {"mha_bytes", mha_floats * 4},
      {"mla_latent_floats", mla_floats},  // kv_latent_dim
      {"mla_latent_bytes", mla_floats * 4},
      {"ratio_mha_over_mla", static_cast<double>(mha_floats) / static_cast<double>(mla_floats)},
      {"formula", fmt::format("MHA 2*{}*{} = {} floats; MLA d_c = {} floats; fp32", H, hd, mha_floats, dc)}};
  r["cache_per_token_all_layers_bytes"] = {{"mha", mha_floats * 4 * full.n_layers},
                                           {"mla", mla_floats * 4 * full.n_layers}};

  ModelConfig c = full;
  if (sw.layers > 0) c.n_layers = sw.layers;
  r["timed_layers"] = c.n_layers;
  if (!sw.note.empty()) r["note"] = sw.note;
  r["decode_steps_per_point"] = sw.steps;
  r["decode_timing"] = "median of the timed steps; the three modes are stepped interleaved on the same tokens";
  r["weights"] = "init_weights(seed 1): N(0, 0.02); routing is then nearly uniform, as at the start of training";

  std::fprintf(stderr, "bench attention: %s (%d of %d layers) on %s...\n", name.c_str(), c.n_layers, full.n_layers,
               backend_name(device));
  Model model(c, device);
  model.init_weights(1);
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int32_t> tok(0, c.vocab_size - 1);
  const DecodeMode modes[] = {DecodeMode::Absorbed, DecodeMode::Explicit, DecodeMode::MHA};

  nlohmann::json points = nlohmann::json::array();
  for (int B : sw.batches) {
    // One session per mode (cache and workspace sized for the full context). The modes' decode steps are timed
    // interleaved, step by step, and the median is reported: on a shared machine a load change then hits all
    // three modes alike instead of whichever ran during it.
    std::vector<std::unique_ptr<InferenceSession>> sessions;
    for (DecodeMode mode : modes) sessions.push_back(std::make_unique<InferenceSession>(model, mode, B));
    for (int L : sw.contexts) {
      const int steps = std::min(sw.steps, L - 2);
      const int prompt_len = L - steps - 1;  // + 1 warm-up step + `steps` timed steps = L cached tokens
      if (prompt_len < 1 || steps < 1) continue;
      std::vector<std::vector<int32_t>> prompts(B, std::vector<int32_t>(prompt_len));
      for (auto& p : prompts)
        for (auto& t : p) t = tok(rng);
      std::vector<std::vector<int32_t>> next(steps + 1, std::vector<int32_t>(B));
      for (auto& n : next)
        for (auto& t : n) t = tok(rng);
      std::vector<double> prefill_s(3);
      std::vector<std::vector<double>> step_s(3);
      for (int m = 0; m < 3; ++m) {
        const double t0 = now_s();
        sessions[m]->prefill(prompts);  // ends with a host copy of the logits: the device is synchronized
        prefill_s[m] = now_s() - t0;
        sessions[m]->decode(next[0]);  // warm-up
      }
      for (int i = 1; i <= steps; ++i)
        for (int m = 0; m < 3; ++m) {
          const double t0 = now_s();
          sessions[m]->decode(next[i]);
          step_s[m].push_back(now_s() - t0);
        }
      for (int m = 0; m < 3; ++m) {
        const DecodeMode mode = modes[m];
        std::vector<double> st = step_s[m];
        std::sort(st.begin(), st.end());
        const double median = st[st.size() / 2];
        const int64_t cache_bytes = static_cast<int64_t>(B) * L * full.n_layers *
                                    cache_floats_per_token_layer(full, mode) * 4;
        nlohmann::json p = {{"mode", decode_mode_name(mode)},
                            {"batch", B},
                            {"context", L},
                            {"prefill_tokens", B * prompt_len},
                            {"prefill_ms", 1e3 * prefill_s[m]},
                            {"prefill_tokens_per_s", B * prompt_len / prefill_s[m]},
                            {"decode_ms_per_step", 1e3 * median},
                            {"decode_ms_per_token", 1e3 * median / B},
                            {"decode_tokens_per_s", B / median},
                            {"decode_ms_per_step_min", 1e3 * st.front()},
                            {"cache_bytes_full_model", cache_bytes},
                            {"cache_mib_full_model", cache_bytes / 1048576.0}};
        // Explicit mode also rebuilds every cached position's K and V each step: transient, reused per layer.
        if (mode == DecodeMode::Explicit) p["transient_kv_bytes_per_layer"] = static_cast<int64_t>(B) * L * mha_floats * 4;
        std::fprintf(stderr, "  %-8s B=%-3d ctx=%-4d prefill %8.1f ms | decode %7.2f ms/step %8.1f tok/s | cache %.2f MiB\n",
                     decode_mode_name(mode), B, L, 1e3 * prefill_s[m], 1e3 * median, B / median,
                     cache_bytes / 1048576.0);
        points.push_back(std::move(p));
      }
    }
  }
  r["points"] = std::move(points);
  return r;
}

}  // namespace dsk
