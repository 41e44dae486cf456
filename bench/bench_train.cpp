#include "bench/bench_train.h"

#include "autograd/profile.h"
#include "bench/kernel_bench.h"
#include "engine/memory_plan.h"
#include "engine/model.h"
#include "engine/optimizer.h"
#include "kernels/device.h"

#include <algorithm>
#include <chrono>
#include <random>

namespace dsk {

double train_flops_per_token(const ModelConfig& c, int seq_len) {
  ParamCounts p = count_parameters(c);
  // Matmul parameters a token touches: everything active except the embedding lookups, plus the tied head
  // (V × d) which is a real GEMM. Norm weights and biases are a rounding error and stay in.
  const double matmul = static_cast<double>(p.active - p.embedding) + static_cast<double>(c.vocab_size) * c.emb_dim;
  // Attention scores and weighted sum: 2 products of width (H·hd) over on average T/2 visible keys, ×3 for
  // forward + backward, ×2 FLOPs per multiply-add. The absorbed form works in the latent width instead.
  const double width = c.attention == "absorbed" ? static_cast<double>(c.n_heads) * c.kv_latent_dim : c.emb_dim;
  const double attn = 6.0 * 2.0 * c.n_layers * width * (seq_len / 2.0);
  return 6.0 * matmul + attn;
}

nlohmann::json bench_train(const ModelConfig& c, Backend device, const TrainBenchOptions& o) {
  const int T = o.seq_len > 0 ? o.seq_len : c.context_length, B = o.batch;
  Model model(c, device);
  model.init_weights(1);
  TrainConfig tc;
  tc.max_steps = o.steps + o.warmup;
  AdamW opt(model.params(), tc);
  MemoryPlan plan = plan_memory(c, B, T);
  Arena arena(device, plan.activation_bytes, "activation");

  // Random tokens: the speed does not depend on the text.
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> tok(0, c.vocab_size - 1);
  std::vector<int32_t> host(static_cast<size_t>(B) * T * 2);
  for (auto& x : host) x = tok(rng);
  Arena io(device, host.size() * sizeof(int32_t) + 2 * Arena::kAlign, "batch");
  Tensor tokens = io.alloc({B, T}, DType::I32), targets = io.alloc({B, T}, DType::I32);
  if (device == Backend::CPU) {
    std::copy(host.begin(), host.begin() + B * T, tokens.i32());
    std::copy(host.begin() + B * T, host.end(), targets.i32());
  } else {
    cuda::copy_to_device(tokens.data, host.data(), tokens.bytes());
    cuda::copy_to_device(targets.data, host.data() + B * T, targets.bytes());
  }

  using clock = std::chrono::steady_clock;
  auto sync = [&] {
    if (device == Backend::CUDA) cuda::synchronize();
  };
  auto ms = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  std::vector<double> fwd, bwd, optim, total;
  // One training step; with a profiler, the op-by-op times go to it (and the step's own times are not kept).
  auto step = [&](int s, OpProfiler* profiler) {
    arena.reset();
    Tape tape(arena, device);
    tape.training = true;
    tape.seed = 1;
    tape.step = s;
    tape.profiler = profiler;
    model.params().zero_grad();
    sync();
    if (profiler) profiler->start();
    auto t0 = clock::now();
    ForwardResult r = model.forward(tape, tokens, targets);
    sync();
    auto t1 = clock::now();
    tape.backward(r.loss_terms);
    sync();
    auto t2 = clock::now();
    opt.step(s + 1, learning_rate(tc, s, tc.max_steps));
    sync();
    auto t3 = clock::now();
    if (profiler) profiler->collect();
    if (s < o.warmup || profiler) return;
    fwd.push_back(ms(t0, t1));
    bwd.push_back(ms(t1, t2));
    optim.push_back(ms(t2, t3));
    total.push_back(ms(t0, t3));
  };
  for (int s = 0; s < o.warmup + o.steps; ++s) step(s, nullptr);
  // Profiled steps after the timed ones, so that the markers cannot slow the timed steps.
  OpProfiler profiler(device);
  for (int s = 0; s < o.profile_steps; ++s) step(o.warmup + o.steps + s, &profiler);
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double step_ms = median(total);
  const double tokens_per_s = B * T / (step_ms / 1000.0);
  const double gflops = train_flops_per_token(c, T) * tokens_per_s / 1e9;
  nlohmann::json out = {{"benchmark", "train"},
          {"device", backend_name(device)},
          {"config", c.to_json()},
          {"batch", B},
          {"seq_len", T},
          {"steps_timed", o.steps},
          {"tokens_per_s", tokens_per_s},
          {"ms_per_step", step_ms},
          {"ms_forward", median(fwd)},
          {"ms_backward", median(bwd)},
          {"ms_optimizer", median(optim)},
          {"model_gflop_per_token", train_flops_per_token(c, T) / 1e9},
          {"achieved_gflop_s", gflops},
          {"activation_arena_mib", plan.activation_bytes / 1048576.0},
          {"parameter_arena_mib", plan.parameter_bytes / 1048576.0},
          {"profile_steps", o.profile_steps},
          {"ops", profiler.report(o.profile_steps)}};
#ifdef DSK_HAVE_CUDA
  if (device == Backend::CUDA) {
    // MFU: model FLOPs per second over the GPU's measured GEMM rate at the precision trained in (fp32; with
    // --tf32 also against the TF32 rate).
    nlohmann::json peaks = measure_gpu_peaks(o.peaks);
    out["gpu_peaks"] = peaks;
    const double fp32 = peaks.value("sgemm_fp32_tflops", 0.0), tf32 = peaks.value("sgemm_tf32_tflops", 0.0);
    if (fp32 > 0) out["mfu_vs_fp32_gemm"] = gflops / 1e3 / fp32;
    if (cuda::tf32_enabled() && tf32 > 0) out["mfu_vs_tf32_gemm"] = gflops / 1e3 / tf32;
  }
#endif
  return out;
}

}  // namespace dsk
