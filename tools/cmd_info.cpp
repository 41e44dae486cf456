// dsk info: parameters (total / active), KV-cache bytes per token, the memory plan, devices.
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/memory_plan.h"
#include "kernels/device.h"
#include "tools/cli.h"
#include "tools/run_setup.h"

#include <cstdio>

namespace dsk {
namespace {

std::string mib(size_t bytes) { return fmt::format("{:.1f} MiB", bytes / 1048576.0); }
std::string commas(int64_t v) {
  const std::string digits = std::to_string(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

int run_info(const std::vector<std::string>& argv) {
  cli::Args a("info", "parameters, KV-cache bytes per token, memory plan, devices",
              "dsk info [--config small|default|large|FILE | --model RUN_OR_CHECKPOINT] [--batch 8] [--seq-len T] "
              "[--json]");
  a.option("config", "NAME|FILE", "model configuration", "small")
      .option("model", "PATH", "the model of a run folder (its best checkpoint) or a checkpoint folder")
      .option("batch", "B", "batch size for the memory plan", "8")
      .option("seq-len", "T", "sequence length for the memory plan (default: context_length)", "0")
      .repeated("set", "KEY=VALUE", "override a model config key")
      .flag("json", "print JSON");
  if (!a.parse(argv)) return 0;
  if (a.given("model") && a.given("config"))
    throw cli::UsageError("dsk info: give --config or --model, not both");
  // A trained model's own configuration, as `dsk eval` and `dsk sample` find it.
  const std::string named = a.given("model") ? a.get("model") : a.get("config");
  ModelConfig c = a.given("model") ? checkpoint_model_config(resolve_checkpoint(named)) : load_model_config(named);
  cli::apply_overrides(a.all("set"), c, nullptr);
  cli::validate_after_overrides(c, nullptr, a.all("set"));
  const int B = a.get_int32("batch", 1);
  const int seq_len = a.get_int32("seq-len", 0, c.context_length);
  const int T = seq_len > 0 ? seq_len : c.context_length;

  const ParamCounts p = count_parameters(c);
  // fp32 cache: MLA keeps the latent c (d_c per token per layer); MHA would keep K and V of every head.
  const int64_t latent_bytes = static_cast<int64_t>(c.n_layers) * c.kv_latent_dim * 4;
  const int64_t mha_bytes = static_cast<int64_t>(c.n_layers) * 2 * c.n_heads * c.head_dim() * 4;
  const MemoryPlan train = plan_memory(c, B, T, true), infer = plan_memory(c, B, T, false);
  nlohmann::json gpus = nlohmann::json::array();
  for (const GpuInfo& g : cuda_devices())
    gpus.push_back({{"index", g.index}, {"name", g.name}, {"sm_count", g.sm_count},
                    {"compute_capability", fmt::format("{}.{}", g.cc_major, g.cc_minor)},
                    {"memory_bytes", g.total_memory}, {"shared_per_block_bytes", g.shared_per_block}});
  const std::string no_gpu = cuda_unavailable_reason();

  if (a.has("json")) {
    nlohmann::json j = {
        {"config", c.to_json()},
        {"parameters", {{"total", p.total}, {"active", p.active}, {"routed_experts", p.routed_experts},
                        {"embedding", p.embedding}}},
        {"kv_cache_bytes_per_token", {{"mla_latent", latent_bytes}, {"mha_equivalent", mha_bytes},
                                      {"ratio", static_cast<double>(mha_bytes) / latent_bytes}}},
        {"memory_plan", {{"batch", B}, {"seq_len", T}, {"parameter_arena_bytes", train.parameter_bytes},
                         {"training_activation_bytes", train.activation_bytes},
                         {"inference_activation_bytes", infer.activation_bytes}}},
        {"gpus", gpus}};
    if (!no_gpu.empty()) j["gpu_unavailable"] = no_gpu;
    std::puts(j.dump(2).c_str());
    return 0;
  }
  std::printf("%s %s: d=%d, heads=%d×%d, layers=%d, d_c=%d, experts %d routed (top-%d) + %d shared, F=%d, "
              "ctx=%d, vocab=%d\n",
              a.given("model") ? "model" : "config", named.c_str(), c.emb_dim, c.n_heads, c.head_dim(), c.n_layers,
              c.kv_latent_dim, c.num_experts, c.top_k, c.num_shared_experts, c.expert_hidden_dim, c.context_length, c.vocab_size);
  std::printf("parameters      %s total, %s active per token (routed experts %s; embeddings %s)\n",
              commas(p.total).c_str(), commas(p.active).c_str(), commas(p.routed_experts).c_str(),
              commas(p.embedding).c_str());
  std::printf("KV cache/token  %s bytes (MLA latent, fp32, all layers) vs %s bytes for MHA: %.1f× smaller\n",
              commas(latent_bytes).c_str(), commas(mha_bytes).c_str(), static_cast<double>(mha_bytes) / latent_bytes);
  std::printf("memory plan     batch %d × %d tokens: parameter arena %s (params, grads, AdamW m, v); activations %s "
              "training, %s inference\n",
              B, T, mib(train.parameter_bytes).c_str(), mib(train.activation_bytes).c_str(),
              mib(infer.activation_bytes).c_str());
  if (gpus.empty()) std::printf("GPUs            none (%s)\n", no_gpu.c_str());
  for (const auto& g : gpus)
    std::printf("GPU %d           %s, %d SMs, compute %s, %.1f GiB, %d KiB shared memory per block\n",
                g["index"].get<int>(), g["name"].get<std::string>().c_str(), g["sm_count"].get<int>(),
                g["compute_capability"].get<std::string>().c_str(), g["memory_bytes"].get<size_t>() / 1073741824.0,
                g["shared_per_block_bytes"].get<int>() / 1024);
  return 0;
}

}  // namespace
}  // namespace dsk

DSK_COMMAND("info", "parameters (total / active), KV-cache bytes per token, memory plan, devices", dsk::run_info);
