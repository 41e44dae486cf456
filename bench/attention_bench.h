#pragma once
// Attention kernel micro-benchmarks: forward and backward on the small and default model shapes, for the
// explicit (Hk = H, per-head K/V of head_dim) and the absorbed (Hk = 1, one shared latent of d_c) forms.
#include "kernels/attention.h"
#include "kernels/device.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace dsk {

// One training-shape record shared by both backends: the shape, forward/backward ms and the achieved rate of the
// useful causal FLOPs (visible score entries only, 2 per multiply-add; forward: scores (dqk) + weighted sum (dv);
// backward: scores again, dout·vᵀ, dv, dq, dk). `unit` is "gflops" (CPU) or "tflops" (GPU): the rate's key suffix.
nlohmann::json attention_bench_record(const std::string& model, bool absorbed, const AttentionShape& s, float dropout,
                                      double forward_ms, double backward_ms, const std::string& unit);

// Times the CPU kernels (wall clock, median of several runs) and returns one JSON record per case with
// milliseconds and GFLOP/s (useful causal flops only).
nlohmann::json bench_attention_kernels_cpu();

#ifdef DSK_HAVE_CUDA
// One model's attention shapes: training at (batch, seq), decode against a cache of decode_kv tokens.
struct AttentionModelShape {
  std::string model;
  int batch, seq, heads, head_dim, latent_dim;
};
// What the CUDA attention benchmark runs; the defaults are the configs' shapes (tests shrink them).
struct AttentionBenchSizes {
  // The training shapes of configs/small.json, default.json, large.json at batch 8; the second one's also with
  // dropout 0.1.
  std::vector<AttentionModelShape> models = {{"small", 8, 128, 4, 64, 64},
                                             {"default", 8, 256, 8, 64, 128},
                                             {"large", 8, 512, 16, 64, 128}};
  int decode_kv = 4096;                // cache length of the decode points
  int decode_batch_absorbed = 64;      // big enough that the latent cache (>= 128 MB) is far beyond L2
  int decode_batch_explicit = 16;
  long long copy_bytes = 1LL << 30;    // the copy bandwidth measurement
};

// The arithmetics each training shape is timed in (the record's "math"): FFMA, and TF32 and 3xTF32 where the GPU
// has TF32 tensor cores (compute capability 8.0+).
inline std::vector<cuda::Math> attention_bench_maths() {
  if (!cuda::tf32_tensor_cores()) return {cuda::Math::kFfma};
  return {cuda::Math::kFfma, cuda::Math::kTf32, cuda::Math::kTf32x3};
}

// The CUDA kernels (bench/attention_bench_cuda.cpp): forward/backward TFLOP/s on the training shapes (explicit
// and absorbed) in each of attention_bench_maths(), and decode GB/s of KV-cache read against the measured copy
// bandwidth.
// {"benchmark", "backend": "cuda", "gpu", "copy_gbps", "training": [{model, form, math, ..., forward_ms,
//  backward_ms, forward_tflops, backward_tflops}], "decode": [{model, form, batch, kv_len, ..., ms, gbps,
//  fraction_of_copy}]}
// Throws dsk::Error when no GPU is usable.
nlohmann::json bench_attention_kernels_cuda(const AttentionBenchSizes& sizes = {});
#endif

}  // namespace dsk
