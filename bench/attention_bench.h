#pragma once
// Attention kernel micro-benchmarks: forward and backward on the small and default model shapes, for the
// explicit (Hk = H, per-head K/V of head_dim) and the absorbed (Hk = 1, one shared latent of d_c) forms.
#include <nlohmann/json.hpp>

namespace dsk {

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
