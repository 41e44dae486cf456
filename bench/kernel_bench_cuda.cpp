// CUDA kernel micro-benchmarks (see kernel_bench.h): the GPU's measured peaks, then every dense kernel timed with
// CUDA events on dsk's stream, inputs rotated over several buffer sets so that L2 does not serve them, and the
// achieved GB/s or GFLOP/s reported with its fraction of the measured peak.
#ifdef DSK_HAVE_CUDA
#include "bench/cuda_timing.h"
#include "bench/kernel_bench.h"

#include "kernels/cuda/runtime.cuh"
#include "kernels/device.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/latent.h"
#include "kernels/layernorm.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/optim.h"
#include "kernels/rng.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dsk {

namespace {

constexpr int kWarmups = 2;
constexpr int kReps = 20;  // timed repetitions; the median is reported

// ---- device buffers filled with non-trivial data ------------------------------------------------------------

struct DeviceFree {
  void operator()(void* p) const { cuda::free_device(p); }
};
template <class T>
using DevPtr = std::unique_ptr<T, DeviceFree>;

// A block of pseudo-random host data, uploaded once and tiled over a device buffer by device copies: the
// values are not all equal or zero (which would flatter GEMMs), and filling gigabytes stays fast.
constexpr size_t kTile = size_t(1) << 22;  // elements

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <class T>
DevPtr<T> device_tiled(size_t n, const std::vector<T>& tile) {
  DevPtr<T> d(static_cast<T*>(cuda::malloc_device(std::max<size_t>(n, 1) * sizeof(T))));
  size_t first = std::min(n, tile.size());
  cuda::copy_to_device(d.get(), tile.data(), first * sizeof(T));
  // Doubling copies: [0, k) -> [k, 2k) ...
  for (size_t done = first; done < n;) {
    size_t chunk = std::min(done, n - done);
    cuda::copy_device(d.get() + done, d.get(), chunk * sizeof(T));
    done += chunk;
  }
  return d;
}

const std::vector<float>& float_tile() {
  static std::vector<float> t = [] {
    std::vector<float> v(kTile);
    uint64_t s = 12345;
    for (auto& x : v) x = static_cast<float>(static_cast<double>(splitmix(s) >> 11) * 0x1.0p-53 * 4.0 - 2.0);
    return v;
  }();
  return t;
}

DevPtr<float> device_floats(size_t n) { return device_tiled(n, float_tile()); }

DevPtr<int32_t> device_ints(size_t n, int hi) {
  std::vector<int32_t> tile(std::min(n, kTile));
  uint64_t s = 777 + static_cast<uint64_t>(hi);
  for (auto& x : tile) x = static_cast<int32_t>(splitmix(s) % static_cast<uint64_t>(hi));
  return device_tiled(n, tile);
}

DevPtr<uint16_t> device_bf16(size_t n) {
  std::vector<uint16_t> tile(std::min(n, kTile));
  const auto& f = float_tile();
  for (size_t i = 0; i < tile.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &f[i], 4);
    tile[i] = static_cast<uint16_t>(bits >> 16);  // truncation to bf16 is fine for benchmark data
  }
  return device_tiled(n, tile);
}

// ---- timing -------------------------------------------------------------------------------------------------


// Median milliseconds of one launch(set) call. Each repetition launches once per buffer set (sets rotate, so the
// data of one call has left L2 before it is used again) between two events and divides by the set count.
double median_ms(int sets, const std::function<void(int)>& launch) { return cuda_median_ms(kWarmups, kReps, sets, launch); }

int l2_bytes() {
  int dev = 0, l2 = 0;
  DSK_CUDA_CHECK(cudaGetDevice(&dev));
  DSK_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  return l2;
}

// How many buffer sets of `bytes` each make the rotation at least 3x the L2 (at most 16 sets, 4 GB in all).
int sets_for(double bytes) {
  double want = 3.0 * l2_bytes();
  int sets = static_cast<int>(std::ceil(want / std::max(bytes, 1.0)));
  sets = std::clamp(sets, 1, 16);
  while (sets > 1 && sets * bytes > 4e9) --sets;
  return sets;
}

// ---- peaks --------------------------------------------------------------------------------------------------

double gemm_peak_tflops(cudaDataType_t type, cublasComputeType_t compute, int n) {
  size_t elems = static_cast<size_t>(n) * n;
  DevPtr<void> a, b, c;
  if (type == CUDA_R_16BF) {
    a.reset(device_bf16(elems).release());
    b.reset(device_bf16(elems).release());
    c.reset(device_bf16(elems).release());
  } else {
    a.reset(device_floats(elems).release());
    b.reset(device_floats(elems).release());
    c.reset(device_floats(elems).release());
  }
  float alpha = 1.0f, beta = 0.0f;
  auto launch = [&](int) {
    DSK_CUBLAS_CHECK(cublasGemmEx(cuda::cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a.get(), type, n,
                                  b.get(), type, n, &beta, c.get(), type, n, compute, CUBLAS_GEMM_DEFAULT));
  };
  double ms = median_ms(1, launch);
  return 2.0 * n * n * n / (ms * 1e9);
}

}  // namespace

nlohmann::json measure_gpu_peaks(const PeakSizes& sizes) {
  DSK_CHECK(cuda_unavailable_reason().empty(), "no GPU: {}", cuda_unavailable_reason());
  DSK_CHECK(sizes.gemm > 0 && sizes.copy_bytes > 0, "measure_gpu_peaks: sizes must be positive");
  nlohmann::json peaks;
  {
    // Device-to-device copy (1 GiB by default): bytes read + written per second.
    const size_t bytes = static_cast<size_t>(sizes.copy_bytes);
    DevPtr<char> src(static_cast<char*>(cuda::malloc_device(bytes))), dst(static_cast<char*>(cuda::malloc_device(bytes)));
    cuda::memset_device(src.get(), 1, bytes);
    double ms = median_ms(1, [&](int) { cuda::copy_device(dst.get(), src.get(), bytes); });
    peaks["copy_gbps"] = 2.0 * bytes / (ms * 1e6);
  }
  const int n = sizes.gemm;
  peaks["gemm_size"] = n;
  peaks["sgemm_fp32_tflops"] = gemm_peak_tflops(CUDA_R_32F, CUBLAS_COMPUTE_32F, n);
  peaks["sgemm_tf32_tflops"] = gemm_peak_tflops(CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, n);
  peaks["gemm_bf16_tflops"] = gemm_peak_tflops(CUDA_R_16BF, CUBLAS_COMPUTE_32F, n);
  return peaks;
}

namespace {

struct Recorder {
  int warmups = kWarmups, reps = kReps;
  nlohmann::json peaks;
  nlohmann::json kernels = nlohmann::json::array();

  // A memory-bound kernel: `bytes` are the bytes it must read and write once.
  void bytes(const std::string& name, const std::string& shape, double byte, int sets,
             const std::function<void(int)>& launch) {
    double ms = cuda_median_ms(warmups, reps, sets, launch);
    double gbps = byte / (ms * 1e6);
    kernels.push_back({{"name", name}, {"shape", shape}, {"ms", ms}, {"bytes", byte}, {"gbps", gbps},
                       {"buffer_sets", sets}, {"peak", "copy_gbps"},
                       {"fraction_of_peak", gbps / peaks.value("copy_gbps", 1.0)}});
  }
  // A GEMM-bound kernel; the peak is the measured cuBLAS SGEMM rate at the precision in use.
  void flops(const std::string& name, const std::string& shape, double flop, int sets,
             const std::function<void(int)>& launch) {
    double ms = cuda_median_ms(warmups, reps, sets, launch);
    double gflops = flop / (ms * 1e6);
    const char* peak = cuda::tf32_enabled() ? "sgemm_tf32_tflops" : "sgemm_fp32_tflops";
    kernels.push_back({{"name", name}, {"shape", shape}, {"ms", ms}, {"flops", flop}, {"gflops", gflops},
                       {"buffer_sets", sets}, {"peak", peak},
                       {"fraction_of_peak", gflops / 1e3 / peaks.value(peak, 1.0)}});
  }
};

// Buffer sets: one vector of device buffers per set.
struct Sets {
  std::vector<std::vector<DevPtr<float>>> f;
  std::vector<std::vector<DevPtr<int32_t>>> i;
  float* operator()(int set, int k) const { return f[set][k].get(); }
  int32_t* ints(int set, int k) const { return i[set][k].get(); }
};

// `sizes` floats buffers and `int_sizes` int buffers (tokens in [0, int_hi)) per set.
Sets make_sets(int sets, const std::vector<size_t>& sizes, const std::vector<size_t>& int_sizes = {}, int int_hi = 1) {
  Sets s;
  s.f.resize(sets);
  s.i.resize(sets);
  for (int k = 0; k < sets; ++k) {
    for (size_t n : sizes) s.f[k].push_back(device_floats(n));
    for (size_t n : int_sizes) s.i[k].push_back(device_ints(n, int_hi));
  }
  return s;
}

double total_bytes(const std::vector<size_t>& sizes, const std::vector<size_t>& int_sizes = {}) {
  double b = 0;
  for (size_t n : sizes) b += 4.0 * n;
  for (size_t n : int_sizes) b += 4.0 * n;
  return b;
}

void bench_linear(Recorder& rec, const std::string& what, int N, int in, int out, bool bias) {
  const size_t x = size_t(N) * in, w = size_t(out) * in, y = size_t(N) * out;
  std::vector<size_t> sizes{x, w, size_t(out), y, x, w, size_t(out)};  // x w b y | dx dw db (dy = y)
  int sets = sets_for(total_bytes(sizes));
  Sets s = make_sets(sets, sizes);
  const std::string shape = fmt::format("N={} in={} out={}{}{}", N, in, out, bias ? " +bias" : "",
                                        cuda::tf32_enabled() ? " tf32" : "");
  const double flop = 2.0 * N * in * out;
  rec.flops("linear_forward " + what, shape, flop, sets, [&](int k) {
    linear_forward<Backend::CUDA>(s(k, 3), s(k, 0), s(k, 1), bias ? s(k, 2) : nullptr, N, in, out);
  });
  rec.flops("linear_backward " + what, shape + " (dx, dw" + (bias ? ", db)" : ")"), 2 * flop, sets, [&](int k) {
    linear_backward<Backend::CUDA>(s(k, 4), s(k, 5), bias ? s(k, 6) : nullptr, s(k, 3), s(k, 0), s(k, 1), N, in,
                                   out);
  });
}

// All kernels at one token count N.
void bench_at(Recorder& rec, const KernelBenchShapes& sh, int batch) {
  const int T = sh.seq, N = batch * T, d = sh.d, F = sh.d_ff, V = sh.vocab;
  const size_t Nd = size_t(N) * d, NF = size_t(N) * F, NV = size_t(N) * V;
  const std::string tag = fmt::format("N={}", N);

  // ---- GEMMs, fp32 and TF32 ---------------------------------------------------------------------------------
  for (bool tf32 : {false, true}) {
    cuda::set_tf32(tf32);
    bench_linear(rec, "lm_head", N, d, V, false);
    bench_linear(rec, "d->d_ff", N, d, F, true);
    bench_linear(rec, "d_ff->d", N, F, d, true);
    bench_linear(rec, "d->d", N, d, d, true);
  }
  cuda::set_tf32(false);

  // ---- cross-entropy ----------------------------------------------------------------------------------------
  {
    std::vector<size_t> sizes{NV, size_t(N)};
    std::vector<size_t> ints{size_t(N)};
    int sets = sets_for(total_bytes(sizes, ints));
    Sets s = make_sets(sets, sizes, ints, V);
    const std::string shape = fmt::format("N={} V={}", N, V);
    // In place, as training uses it: later runs overwrite the previous run's gradient (same cost).
    rec.bytes("cross_entropy_forward_backward (in place)", shape, 2.0 * NV * 4, sets, [&](int k) {
      cross_entropy_forward_backward<Backend::CUDA>(s(k, 1), s(k, 0), s(k, 0), s.ints(k, 0), N, V, 1.0f / N);
    });
    rec.bytes("cross_entropy_forward (loss only)", shape, 1.0 * NV * 4, sets, [&](int k) {
      cross_entropy_forward_backward<Backend::CUDA>(s(k, 1), nullptr, s(k, 0), s.ints(k, 0), N, V, 1.0f / N);
    });
  }

  // ---- LayerNorm --------------------------------------------------------------------------------------------
  {
    std::vector<size_t> sizes{Nd, Nd, size_t(d), size_t(d), size_t(N), size_t(N), Nd, size_t(d), size_t(d)};
    // x y w b mean rstd | dx dw db (dy = y)
    int sets = sets_for(total_bytes(sizes));
    Sets s = make_sets(sets, sizes);
    // mean/rstd must be valid statistics for backward: run forward once per set.
    for (int k = 0; k < sets; ++k)
      layernorm_forward<Backend::CUDA>(s(k, 1), s(k, 4), s(k, 5), s(k, 0), s(k, 2), s(k, 3), N, d);
    const std::string shape = fmt::format("N={} C={}", N, d);
    rec.bytes("layernorm_forward", shape, 4.0 * (2.0 * Nd + 2 * d + 2 * N), sets, [&](int k) {
      layernorm_forward<Backend::CUDA>(s(k, 1), s(k, 4), s(k, 5), s(k, 0), s(k, 2), s(k, 3), N, d);
    });
    rec.bytes("layernorm_backward", shape, 4.0 * (3.0 * Nd + 2 * N + 5 * d), sets, [&](int k) {
      layernorm_backward<Backend::CUDA>(s(k, 6), s(k, 7), s(k, 8), s(k, 1), s(k, 0), s(k, 2), s(k, 4), s(k, 5), N, d);
    });
  }

  // ---- the latent-KV projection: fused (GEMM + LayerNorm epilogue) vs the two kernels it replaces ------------
  {
    const int dc = sh.latent;
    const size_t Nc = size_t(N) * dc, W = size_t(dc) * d;
    // x w lw lb c raw mean rstd | dx d_raw dw dlw dlb dy
    std::vector<size_t> sizes{Nd, W, size_t(dc), size_t(dc), Nc, Nc, size_t(N), size_t(N),
                              Nd, Nc, W, size_t(dc), size_t(dc), Nc};
    int sets = sets_for(total_bytes(sizes));
    Sets s = make_sets(sets, sizes);
    for (int k = 0; k < sets; ++k)  // valid statistics for backward
      latent_projection_forward<Backend::CUDA>(s(k, 4), s(k, 5), s(k, 6), s(k, 7), s(k, 0), s(k, 1), s(k, 2),
                                               s(k, 3), N, d, dc);
    const std::string shape = fmt::format("N={} d={} dc={}", N, d, dc);
    const double flop = 2.0 * N * d * dc;
    rec.flops("latent_projection_forward (fused)", shape, flop, sets, [&](int k) {
      latent_projection_forward<Backend::CUDA>(s(k, 4), s(k, 5), s(k, 6), s(k, 7), s(k, 0), s(k, 1), s(k, 2),
                                               s(k, 3), N, d, dc);
    });
    rec.flops("latent_projection_forward (cuBLAS + LayerNorm, unfused)", shape, flop, sets, [&](int k) {
      linear_forward<Backend::CUDA>(s(k, 5), s(k, 0), s(k, 1), nullptr, N, d, dc);
      layernorm_forward<Backend::CUDA>(s(k, 4), s(k, 6), s(k, 7), s(k, 5), s(k, 2), s(k, 3), N, dc);
    });
    rec.flops("latent_projection_backward", shape + " (dx, dw)", 2 * flop, sets, [&](int k) {
      latent_projection_backward<Backend::CUDA>(s(k, 8), s(k, 9), s(k, 10), s(k, 11), s(k, 12), s(k, 13), s(k, 0),
                                                s(k, 1), s(k, 5), s(k, 2), s(k, 6), s(k, 7), N, d, dc);
    });
  }

  // ---- embedding --------------------------------------------------------------------------------------------
  {
    std::vector<size_t> sizes{size_t(V) * d, size_t(T) * d, Nd};  // wte wpe out (dwte dwpe dout reuse them)
    std::vector<size_t> ints{size_t(N)};
    int sets = sets_for(total_bytes(sizes, ints));
    Sets s = make_sets(sets, sizes, ints, V);
    const std::string shape = fmt::format("B={} T={} d={} V={}", batch, T, d, V);
    rec.bytes("embedding_forward", shape, 4.0 * (3.0 * Nd + N), sets, [&](int k) {
      embedding_forward<Backend::CUDA>(s(k, 2), s.ints(k, 0), nullptr, s(k, 0), s(k, 1), batch, T, d);
    });
    // Compulsory traffic: dout once, tokens, and read+write of the touched table rows (≤ N of wte, T of wpe).
    double rows = std::min<double>(N, V);
    rec.bytes("embedding_backward", shape, 4.0 * (Nd + N + 2.0 * rows * d + 2.0 * T * d), sets, [&](int k) {
      embedding_backward<Backend::CUDA>(s(k, 0), s(k, 1), s(k, 2), s.ints(k, 0), nullptr, batch, T, d, V);
    });
  }

  // ---- element-wise on the expert hidden activations (N, d_ff) ------------------------------------------------
  {
    std::vector<size_t> sizes{NF, NF, NF};
    int sets = sets_for(total_bytes(sizes));
    Sets s = make_sets(sets, sizes);
    const std::string shape = fmt::format("n={} ({} x {})", NF, N, F);
    const int64_t n = static_cast<int64_t>(NF);
    const uint64_t site = rng::make_site(1, 0, 3);
    rec.bytes("relu_forward", shape, 8.0 * NF, sets, [&](int k) { relu_forward<Backend::CUDA>(s(k, 1), s(k, 0), n); });
    rec.bytes("relu_backward", shape, 12.0 * NF, sets,
              [&](int k) { relu_backward<Backend::CUDA>(s(k, 2), s(k, 0), s(k, 1), n); });
    rec.bytes("dropout_forward p=0.1", shape, 8.0 * NF, sets,
              [&](int k) { dropout_forward<Backend::CUDA>(s(k, 1), s(k, 0), n, 0.1f, 1234, site); });
    rec.bytes("dropout_backward p=0.1", shape, 8.0 * NF, sets,
              [&](int k) { dropout_backward<Backend::CUDA>(s(k, 2), s(k, 1), n, 0.1f, 1234, site); });
    rec.bytes("add", shape, 12.0 * NF, sets, [&](int k) { add<Backend::CUDA>(s(k, 2), s(k, 0), s(k, 1), n); });
    rec.bytes("accumulate", shape, 12.0 * NF, sets,
              [&](int k) { accumulate<Backend::CUDA>(s(k, 2), s(k, 0), n, 0.5f); });
    rec.bytes("fill", shape, 4.0 * NF, sets, [&](int k) { fill<Backend::CUDA>(s(k, 2), 0.0f, n); });
  }
}

}  // namespace

nlohmann::json bench_kernels_cuda(const KernelBenchShapes& sh, const PeakSizes& peak_sizes) {
  DSK_CHECK(sh.batch > 0 && sh.seq > 0 && sh.d > 0 && sh.d_ff > 0 && sh.latent > 0 && sh.vocab > 0 && sh.n_params > 0,
            "bench_kernels_cuda: every shape must be positive");
  DSK_CHECK(cuda_unavailable_reason().empty(), "no GPU: {}", cuda_unavailable_reason());
  // bench_at switches TF32 on and off; the caller's setting comes back at the end.
  cuda::ScopedTf32 keep(cuda::tf32_enabled());
  DSK_CHECK(sh.gpu_reps > 0 && sh.gpu_warmups >= 0, "bench_kernels_cuda: gpu_reps must be positive");
  Recorder rec;
  rec.warmups = sh.gpu_warmups;
  rec.reps = sh.gpu_reps;
  rec.peaks = measure_gpu_peaks(peak_sizes);

  // The model's own step (small shapes: mostly launch-bound on a large GPU), then 16x the tokens, where the
  // kernels' throughput, not launch latency, shows.
  bench_at(rec, sh, sh.batch);
  bench_at(rec, sh, sh.batch * 16);

  // ---- optimizer over the whole parameter arena ------------------------------------------------------------
  {
    const size_t n = static_cast<size_t>(sh.n_params);
    std::vector<size_t> sizes{n, n, n, n, 1};  // p g m v | out
    int sets = sets_for(total_bytes(sizes));
    Sets s = make_sets(sets, sizes);
    const std::string shape = fmt::format("n={}", n);
    rec.bytes("sum_squares", shape, 4.0 * n, sets,
              [&](int k) { sum_squares<Backend::CUDA>(s(k, 4), s(k, 1), static_cast<int64_t>(n)); });
    // v must stay non-negative: start it at |v| by one fill (the tiled data has negatives).
    for (int k = 0; k < sets; ++k) fill<Backend::CUDA>(s(k, 3), 1e-4f, static_cast<int64_t>(n));
    AdamWHyper h;
    rec.bytes("adamw_update", shape, 28.0 * n, sets,
              [&](int k) { adamw_update<Backend::CUDA>(s(k, 0), s(k, 1), s(k, 2), s(k, 3), static_cast<int64_t>(n), h); });
  }
  cuda::synchronize();

  auto gpus = cuda_devices();
  nlohmann::json out;
  out["backend"] = "cuda";
  out["gpu"] = gpus.empty() ? "" : gpus[0].name;
  out["runs"] = rec.reps;
  out["warmups"] = rec.warmups;
  out["l2_bytes"] = l2_bytes();
  out["peaks"] = rec.peaks;
  out["kernels"] = rec.kernels;
  return out;
}

}  // namespace dsk
#endif  // DSK_HAVE_CUDA
