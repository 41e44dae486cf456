#pragma once
// Attention kernel micro-benchmarks: forward and backward on the small and default model shapes, for the
// explicit (Hk = H, per-head K/V of head_dim) and the absorbed (Hk = 1, one shared latent of d_c) forms.
#include <nlohmann/json.hpp>

namespace dsk {

// Times the CPU kernels (wall clock, median of several runs) and returns one JSON record per case with
// milliseconds and GFLOP/s (useful causal flops only).
nlohmann::json bench_attention_kernels_cpu();

}  // namespace dsk
