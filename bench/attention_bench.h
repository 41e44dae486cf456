#pragma once
// Attention kernel micro-benchmarks: forward and backward on the small and default model shapes, for the
// explicit (Hk = H, per-head K/V of head_dim) and the absorbed (Hk = 1, one shared latent of d_c) forms.
#include "kernels/attention.h"

#include <nlohmann/json.hpp>

#include <string>

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
// The CUDA kernels (bench/attention_bench_cuda.cpp): forward/backward TFLOP/s on the small/default/large training
// shapes (explicit and absorbed), and decode GB/s of KV-cache read against the measured copy bandwidth.
// {"benchmark", "backend": "cuda", "gpu", "copy_gbps", "training": [{model, form, ..., forward_ms, backward_ms,
//  forward_tflops, backward_tflops}], "decode": [{model, form, batch, kv_len, ..., ms, gbps, fraction_of_copy}]}
// Throws dsk::Error when no GPU is usable.
nlohmann::json bench_attention_kernels_cuda();
#endif

}  // namespace dsk
