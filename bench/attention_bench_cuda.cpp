// CUDA attention micro-benchmark (see attention_bench.h): forward and backward TFLOP/s on the three configs'
// training shapes (explicit per-head K/V and absorbed shared latent), and decode GB/s of KV-cache read against the
// measured device copy bandwidth. Timed with CUDA events on dsk's stream, warm-up, median of kReps.
#ifdef DSK_HAVE_CUDA
#include "bench/cuda_timing.h"
#include "bench/attention_bench.h"

#include "kernels/attention.h"
#include "kernels/cuda/runtime.cuh"
#include "kernels/device.h"
#include "kernels/rng.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace dsk {
namespace {

constexpr int kWarmups = 2;
constexpr int kReps = 15;

struct DeviceFree {
  void operator()(float* p) const { cuda::free_device(p); }
};
using DevFloats = std::unique_ptr<float, DeviceFree>;

// n floats of N(0, 1) data (one host block uploaded once; benchmarks only need non-degenerate values).
DevFloats device_randn(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> h(n);
  for (auto& x : h) x = dist(rng);
  DevFloats d(static_cast<float*>(cuda::malloc_device(std::max<size_t>(n, 1) * sizeof(float))));
  cuda::copy_to_device(d.get(), h.data(), n * sizeof(float));
  return d;
}

double median_ms(const std::function<void()>& launch) { return cuda_median_ms(kWarmups, kReps, launch); }

// Device-to-device copy of `bytes` (1 GiB by default): bytes read + written per second (as measure_gpu_peaks()).
double copy_gbps(size_t bytes) {
  void* src = cuda::malloc_device(bytes);
  void* dst = cuda::malloc_device(bytes);
  cuda::memset_device(src, 1, bytes);
  double ms = median_ms([&] { cuda::copy_device(dst, src, bytes); });
  cuda::free_device(src);
  cuda::free_device(dst);
  return 2.0 * bytes / (ms * 1e6);
}

// One training shape timed in one arithmetic (cuda::attention_math, pinned for the record).
nlohmann::json bench_training(const AttentionModelShape& m, bool absorbed, float p, cuda::Math math) {
  cuda::ScopedAttentionMath pinned(math);
  AttentionShape s;
  s.batch = m.batch;
  s.q_len = s.kv_len = m.seq;
  s.heads = m.heads;
  s.kv_heads = absorbed ? 1 : m.heads;
  s.qk_dim = s.v_dim = absorbed ? m.latent_dim : m.head_dim;
  s.scale = 1.0f / std::sqrt(static_cast<float>(m.head_dim));
  const AttentionDropout drop{p, 1, rng::make_site(0, 0, 1)};
  const size_t nq = size_t(s.batch) * s.q_len * s.heads * s.qk_dim;
  const size_t nkv = size_t(s.batch) * s.kv_len * s.kv_heads * s.qk_dim;
  const size_t nout = size_t(s.batch) * s.q_len * s.heads * s.v_dim;
  auto q = device_randn(nq, 1), k = device_randn(nkv, 2), v = device_randn(nkv, 3), dout = device_randn(nout, 4);
  auto out = device_randn(nout, 5), lse = device_randn(size_t(s.batch) * s.heads * s.q_len, 6);
  auto dq = device_randn(nq, 7), dk = device_randn(nkv, 8), dv = device_randn(nkv, 9);
  const float* vp = absorbed ? k.get() : v.get();  // absorbed: K = V = the latent, one buffer
  auto fwd = [&] { attention_forward<Backend::CUDA>(out.get(), lse.get(), q.get(), k.get(), vp, nullptr, s, drop); };
  fwd();  // valid out / lse for backward
  auto bwd = [&] {
    attention_backward<Backend::CUDA>(dq.get(), dk.get(), dv.get(), dout.get(), q.get(), k.get(), vp, out.get(),
                                      lse.get(), s, drop);
  };
  const double fwd_ms = median_ms(fwd), bwd_ms = median_ms(bwd);
  nlohmann::json r = attention_bench_record(m.model, absorbed, s, p, fwd_ms, bwd_ms, "tflops");
  r["math"] = cuda::math_name(math);
  r["forward_kernel"] = attention_forward_kernel_cuda(s, absorbed);  // what ran, after any fallback
  r["backward_kernels"] = attention_backward_kernels_cuda(s, absorbed);
  // Where dQ is fused into the dK/dV kernel (the default), the backward with dQ in its own kernel as well, so that a
  // run settles which is faster (cuda::BackwardDq).
  if (cuda::backward_dq() == cuda::BackwardDq::kFused) {
    cuda::ScopedBackwardDq separate(cuda::BackwardDq::kSeparate);
    const std::string kernels = attention_backward_kernels_cuda(s, absorbed);
    if (kernels != r["backward_kernels"].get<std::string>()) {
      r["backward_ms_separate_dq"] = median_ms(bwd);
      r["backward_kernels_separate_dq"] = kernels;
    }
  }
  return r;
}

// One decode step (q_len 1) for `batch` sequences against a cache of kv_len tokens, in the arithmetic `math`. The
// compulsory traffic is the cache read (K, plus V when it is a separate tensor) plus q and out; GB/s is compared
// with the copy bandwidth.
nlohmann::json bench_decode(const char* model, bool absorbed, int batch, int kv_len, int heads, int dim, double copy,
                            cuda::Math math = cuda::Math::kFfma,
                            cuda::DecodeBlock block = cuda::DecodeBlock::kAuto) {
  cuda::ScopedAttentionMath pinned(math);
  cuda::ScopedDecodeBlock pinned_block(block);
  AttentionShape s;
  s.batch = batch;
  s.q_len = 1;
  s.kv_len = s.kv_capacity = kv_len;
  s.heads = heads;
  s.kv_heads = absorbed ? 1 : heads;
  s.qk_dim = s.v_dim = dim;
  s.scale = 0.125f;
  const size_t nq = size_t(batch) * heads * dim;
  const size_t nkv = size_t(batch) * kv_len * s.kv_heads * dim;
  auto q = device_randn(nq, 11), k = device_randn(nkv, 12), out = device_randn(nq, 13);
  DevFloats v = absorbed ? nullptr : device_randn(nkv, 14);
  const float* vp = absorbed ? k.get() : v.get();
  const double ms = median_ms([&] {
    attention_forward<Backend::CUDA>(out.get(), nullptr, q.get(), k.get(), vp, nullptr, s, AttentionDropout{});
  });
  const double bytes = 4.0 * ((absorbed ? 1.0 : 2.0) * nkv + 2.0 * nq);
  const double gbps = bytes / (ms * 1e6);
  return {{"model", model},       {"form", absorbed ? "absorbed" : "explicit"},
          {"batch", batch},       {"kv_len", kv_len},
          {"heads", heads},       {"kv_heads", s.kv_heads},
          {"dim", dim},           {"ms", ms},
          {"cache_bytes", 4.0 * (absorbed ? 1.0 : 2.0) * nkv},
          {"gbps", gbps},         {"fraction_of_copy", gbps / copy},
          {"math", cuda::math_name(math)}, {"kernel", attention_forward_kernel_cuda(s, absorbed)}};
}

}  // namespace

// The decode blocks timed: the key-split decode block (the default) and the forward kernels' own small blocks.
constexpr cuda::DecodeBlock kDecodeBlocks[] = {cuda::DecodeBlock::kKeySplit, cuda::DecodeBlock::kForwardKernel};

nlohmann::json bench_attention_kernels_cuda(const AttentionBenchSizes& sizes) {
  DSK_CHECK(cuda_unavailable_reason().empty(), "no GPU: {}", cuda_unavailable_reason());
  DSK_CHECK(!sizes.models.empty() && sizes.decode_kv > 0 && sizes.copy_bytes > 0,
            "bench_attention_kernels_cuda: empty or non-positive sizes");
  const double copy = copy_gbps(static_cast<size_t>(sizes.copy_bytes));
  const auto& models = sizes.models;
  nlohmann::json training = nlohmann::json::array(), decode = nlohmann::json::array();
  // Every training record in each arithmetic: FFMA, and TF32 and 3xTF32 (tensor cores) where the GPU has them.
  for (cuda::Math math : attention_bench_maths()) {
    for (const AttentionModelShape& m : models)
      for (bool absorbed : {false, true}) training.push_back(bench_training(m, absorbed, 0.0f, math));
    const AttentionModelShape& dropout_model = models[std::min<size_t>(1, models.size() - 1)];
    training.push_back(bench_training(dropout_model, true, 0.1f, math));  // the cost of in-kernel dropout
    training.push_back(bench_training(dropout_model, false, 0.1f, math));
  }
  // Decode: a batch large enough that the cache is far beyond L2, and one sequence (latency, split-K). Both forms
  // (absorbed: what `dsk sample` runs) in each arithmetic with each decode block (the key-split block, the default,
  // and the forward kernels' small blocks it replaced).
  for (const AttentionModelShape& m : models)
    for (bool absorbed : {true, false}) {
      const int batch = absorbed ? sizes.decode_batch_absorbed : sizes.decode_batch_explicit;
      const int dim = absorbed ? m.latent_dim : m.head_dim;
      for (cuda::Math math : attention_bench_maths())
        for (cuda::DecodeBlock block : kDecodeBlocks)
          decode.push_back(bench_decode(m.model.c_str(), absorbed, batch, sizes.decode_kv, m.heads, dim, copy, math,
                                        block));
    }
  const AttentionModelShape& last = models.back();
  decode.push_back(bench_decode(last.model.c_str(), true, 1, sizes.decode_kv, last.heads, last.latent_dim, copy));
  if (cuda::tf32_tensor_cores())  // batch 1 on the tensor cores too
    decode.push_back(bench_decode(last.model.c_str(), true, 1, sizes.decode_kv, last.heads, last.latent_dim, copy,
                                  cuda::Math::kTf32x3));
  auto gpus = cuda_devices();
  return {{"benchmark", "attention_kernels"},
          {"backend", "cuda"},
          {"gpu", gpus.empty() ? "" : gpus[0].name},
          {"timing", fmt::format("CUDA events, median of {} after {} warm-ups", kReps, kWarmups)},
          {"flops", "useful causal flops (visible score entries only); training and absorbed decode records per "
                    "arithmetic ('math': ffma on the CUDA cores, tf32 / 3xtf32 on the tensor cores)"},
          {"copy_gbps", copy},
          {"training", training},
          {"decode", decode}};
}

}  // namespace dsk
#endif  // DSK_HAVE_CUDA
