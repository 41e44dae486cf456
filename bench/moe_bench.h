#pragma once
// MoE layer micro-benchmark: the permuted/grouped dispatch (router → permute → gather → expert_ffn → combine)
// against a loop over experts with boolean masks, as the original PyTorch project did.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace dsk {

// One MoE layer shape: N tokens of width d, E routed experts (k per token) of hidden width F, S shared experts.
struct MoeBenchShape {
  std::string name;
  int N, d, F, E, k, S;
};

// The `small` (d 256, F 1024, E 4, k 2) and `default` (d 512, F 2048, E 8, k 2) layers, 1024 tokens, 1 shared
// expert each (what the parameter counts of configs/small.json and default.json imply).
// The shape's fields as JSON (name, N, d, F, E, k, shared), the start of every result record.
nlohmann::json moe_shape_json(const MoeBenchShape& s);

std::vector<MoeBenchShape> moe_bench_shapes();

// Times one MoE layer forward + backward on the CPU for each shape, both ways, after `warmup` untimed runs;
// reports the median of `iters` runs in ms, the masked/permuted ratio, and the largest difference between the two
// paths' outputs and input gradients (they compute the same function). The router projection GEMMs (x · W_rᵀ,
// x · W_noiseᵀ) are shared by both paths and left out; the router and aux-loss kernels are timed in both.
nlohmann::json bench_moe_cpu(const std::vector<MoeBenchShape>& shapes = moe_bench_shapes(), int warmup = 1,
                             int iters = 3);

#ifdef DSK_HAVE_CUDA
// The small, default and large layers (configs/*.json) at one training batch of 8 sequences of each config's
// context length: 1024, 2048 and 4096 tokens.
std::vector<MoeBenchShape> moe_bench_shapes_cuda();

// The same layer forward + backward on the GPU (bench/moe_bench_cuda.cpp), fp32 with TF32 off, CUDA-event median
// ms: the grouped path (permute, gather, grouped expert FFN, combine; no host sync) against a loop over experts as
// the original project ran it (a host sync per expert to learn its tokens, cuBLAS linears per expert), with the
// largest difference between the two paths' outputs and input gradients; and the grouped expert GEMMs' TFLOP/s
// (forward and backward) against dense cuBLAS SGEMMs of the same shapes, in fp32 and again with TF32 on both sides
// ("grouped_gemm_tf32"). Throws dsk::Error without a usable GPU.
nlohmann::json bench_moe_cuda(const std::vector<MoeBenchShape>& shapes = moe_bench_shapes_cuda());
#endif

}  // namespace dsk
