#include "engine/evaluate.h"

#include "engine/data.h"
#include "engine/memory_plan.h"
#include "kernels/device.h"

#include <cmath>
#include <cstring>

namespace dsk {

namespace {

// Copies host ids into a device-side (B, T) tensor allocated from the arena.
Tensor upload_ids(Arena& arena, const std::vector<int32_t>& host, int B, int T) {
  Tensor t = arena.alloc({B, T}, DType::I32);
  if (arena.device() == Backend::CPU)
    std::memcpy(t.data, host.data(), t.bytes());
  else
    cuda::copy_to_device(t.data, host.data(), t.bytes());
  return t;
}

std::vector<float> download(const Tensor& t) {
  std::vector<float> h(static_cast<size_t>(t.numel()));
  if (t.device == Backend::CPU)
    std::memcpy(h.data(), t.data, t.bytes());
  else
    cuda::copy_to_host(h.data(), t.data, t.bytes());
  return h;
}

}  // namespace

size_t eval_arena_bytes(const ModelConfig& c, int batch, int seq_len) {
  return plan_memory(c, batch, seq_len, /*training=*/false).activation_bytes +
         2 * (static_cast<size_t>(batch) * seq_len * sizeof(int32_t) + Arena::kAlign);
}

EvalResult evaluate(Model& m, const uint16_t* tokens, size_t n_tokens, int seq_len, int batch, int64_t max_windows,
                    Arena& arena) {
  const ModelConfig& c = m.config();
  if (seq_len > c.context_length)
    throw Error(fmt::format("evaluation window {} exceeds the model's context_length {}", seq_len, c.context_length));
  std::vector<EvalWindow> windows = eval_windows(n_tokens, seq_len);
  if (max_windows > 0 && static_cast<int64_t>(windows.size()) > max_windows) windows.resize(max_windows);
  if (windows.empty()) throw Error("nothing to evaluate: fewer than 2 tokens");
  for (size_t i = 0; i < n_tokens; ++i)
    if (tokens[i] >= c.vocab_size)
      throw Error(fmt::format("token {} at position {} is outside the model's vocabulary ({})", tokens[i], i,
                              c.vocab_size));

  EvalResult r;
  r.expert_load.assign(c.n_layers, std::vector<double>(c.num_experts, 0.0));
  double loss_sum = 0;
  // Full-length windows go `batch` at a time; the last, shorter one (if any) alone with its own length.
  size_t i = 0;
  while (i < windows.size()) {
    const int T = windows[i].length;
    size_t j = i;
    while (j < windows.size() && j - i < static_cast<size_t>(batch) && windows[j].length == T) ++j;
    const int B = static_cast<int>(j - i);
    std::vector<int32_t> in(static_cast<size_t>(B) * T), tg(static_cast<size_t>(B) * T);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) {
        const int64_t pos = windows[i + b].start + t;
        in[b * T + t] = tokens[pos];
        tg[b * T + t] = tokens[pos + 1];
      }
    arena.reset();
    Tape tape(arena, m.device());
    tape.training = false;
    tape.record = false;
    Tensor in_t = upload_ids(arena, in, B, T), tg_t = upload_ids(arena, tg, B, T);
    ForwardResult f = m.forward(tape, in_t, tg_t);
    loss_sum += static_cast<double>(download(f.loss->value)[0]) * B * T;
    for (int l = 0; l < c.n_layers; ++l) {
      std::vector<float> load = download(f.expert_load[l]->value);
      for (int e = 0; e < c.num_experts; ++e) r.expert_load[l][e] += load[e] * B * T;
    }
    r.tokens += static_cast<int64_t>(B) * T;
    i = j;
  }
  r.windows = static_cast<int64_t>(windows.size());
  r.loss = loss_sum / static_cast<double>(r.tokens);
  r.perplexity = std::exp(r.loss);
  for (auto& layer : r.expert_load)
    for (double& x : layer) x /= static_cast<double>(r.tokens);
  return r;
}

}  // namespace dsk
