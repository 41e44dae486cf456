#pragma once
// Training-step benchmark: tokens/s and ms/step split into forward, backward and optimizer, with the achieved
// GFLOP/s (model FLOPs: 6 per active matmul parameter per token plus causal attention).
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
  PeakSizes peaks;  // CUDA: the sizes the GPU's GEMM peak (for MFU) is measured at; tests shrink them
};

// Model FLOPs of one training step per token (forward + backward).
double train_flops_per_token(const ModelConfig& c, int seq_len);

nlohmann::json bench_train(const ModelConfig& c, Backend device, const TrainBenchOptions& o);

}  // namespace dsk
