#pragma once
// Training-step benchmark: tokens/s and ms/step split into forward, backward and optimizer, with the achieved
// GFLOP/s (model FLOPs: 6 per active matmul parameter per token plus causal attention), and where the time goes
// op by op ("ops", from profile_steps further steps with an OpProfiler on the tape: autograd/profile.h).
#include "bench/kernel_bench.h"
#include "engine/config.h"
#include "kernels/backend.h"

#include <nlohmann/json.hpp>

namespace dsk {

struct TrainBenchOptions {
  int batch = 8;
  int seq_len = 0;  // 0 = context_length
  int steps = 5;    // timed steps
  int warmup = 1;   // untimed steps first
  int profile_steps = 2;  // profiled steps after the timed ones (0: no "ops")
  PeakSizes peaks;  // CUDA: the sizes the GPU's GEMM peak (for MFU) is measured at; tests shrink them
};

// Model FLOPs of one training step per token (forward + backward).
double train_flops_per_token(const ModelConfig& c, int seq_len);

nlohmann::json bench_train(const ModelConfig& c, Backend device, const TrainBenchOptions& o);

}  // namespace dsk
