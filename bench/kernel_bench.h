#pragma once
// Kernel micro-benchmarks: each forward/backward kernel timed on the small model's shapes, as JSON.
// `dsk bench kernels` calls these; results are committed under bench/results/.
#include "kernels/common.h"

#include <nlohmann/json.hpp>

namespace dsk {

// The shapes timed; the defaults are the small model's (configs/small.json) training step.
struct KernelBenchShapes {
  int batch = 8, seq = 128;  // N = batch * seq tokens
  int d = 256;               // model width
  int d_ff = 1024;           // expert hidden width
  int vocab = 50257;         // GPT-2 BPE: the LM head and cross-entropy width
  long long n_params = 24144128;  // the small model's parameter count (sum_squares, AdamW)
  int runs = 5;              // timed runs per kernel after one warm-up; the median is reported
};

// {"backend": "cpu", "threads": T, "runs": R, "kernels": [{"name", "shape", "ms", "gflops" | "gbps"}, ...]}
// Wall-clock milliseconds (median of `runs`); GFLOP/s for GEMMs, GB/s (bytes read + written once) otherwise.
nlohmann::json bench_kernels_cpu(const KernelBenchShapes& shapes = {});

}  // namespace dsk
