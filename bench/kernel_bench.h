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
  int latent = 64;           // kv_latent_dim: the fused latent-KV projection d -> latent
  int vocab = 50257;         // GPT-2 BPE: the LM head and cross-entropy width
  long long n_params = 24144128;  // the small model's parameter count (sum_squares, AdamW)
  int runs = 5;              // CPU: timed runs per kernel after one warm-up; the median is reported
  int gpu_reps = 20, gpu_warmups = 2;  // CUDA: timed repetitions (median reported) after the warm-ups

  // Every kernel at a few dozen elements, one repetition: for smoke tests of the harness.
  static KernelBenchShapes tiny() {
    KernelBenchShapes s;
    s.batch = 2, s.seq = 8, s.d = 16, s.d_ff = 32, s.latent = 8, s.vocab = 100, s.n_params = 1000;
    s.runs = 1, s.gpu_reps = 1, s.gpu_warmups = 0;
    return s;
  }
};

// The sizes the GPU's ceilings are measured at (measure_gpu_peaks); tests shrink them.
struct PeakSizes {
  int gemm = 8192;                          // n of the n x n x n GEMMs
  long long copy_bytes = 1LL << 30;         // device-to-device copy
};

// {"backend": "cpu", "cpu": model, "date": UTC, "threads": T, "omp_wait_policy", "blas", "runs": R,
//  "kernels": [{"name", "shape", "ms", "gflops" | "gbps"}, ...]}
// Wall-clock milliseconds (median of `runs`); GFLOP/s for GEMMs, GB/s (bytes read + written once) otherwise.
nlohmann::json bench_kernels_cpu(const KernelBenchShapes& shapes = {});

#ifdef DSK_HAVE_CUDA
// The same kernels on the GPU (bench/kernel_bench_cuda.cpp), timed with CUDA events on dsk's stream: warm-up,
// median of gpu_reps repetitions, inputs rotated over enough buffer sets to exceed 3x the L2. Run at the given
// shapes (mostly launch-bound on a big GPU) and at 16x the batch; GEMMs with TF32 off and on.
// {"backend": "cuda", "gpu", "runs", "warmups", "l2_bytes", "peaks": measure_gpu_peaks(),
//  "kernels": [{"name", "shape", "ms", "bytes" | "flops", "gbps" | "gflops", "buffer_sets", "peak",
//               "fraction_of_peak"}, ...]}
// "peak" names the entry of "peaks" the kernel is compared with (copy bandwidth, or SGEMM at its precision).
// Throws dsk::Error when no GPU is usable.
nlohmann::json bench_kernels_cuda(const KernelBenchShapes& shapes = {}, const PeakSizes& peaks = {});

// The GPU's measured ceilings: {"copy_gbps" (1 GiB device-to-device copy, bytes read + written),
// "gemm_size": 8192, "sgemm_fp32_tflops", "sgemm_tf32_tflops", "gemm_bf16_tflops" (cuBLAS, random data)}.
nlohmann::json measure_gpu_peaks(const PeakSizes& sizes = {});
#endif

}  // namespace dsk
