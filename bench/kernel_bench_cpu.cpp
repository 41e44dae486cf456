// CPU kernel micro-benchmarks on the small model's shapes (see kernel_bench.h).
#include "bench/kernel_bench.h"

#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/latent.h"
#include "kernels/layernorm.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/optim.h"
#include "kernels/rng.h"

#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace dsk {

namespace {

std::vector<float> random_floats(size_t n, float scale, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<int32_t> random_ints(size_t n, int hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(0, hi - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Runs f once to warm up (page faults, caches, BLAS threads), then `runs` times; the median wall time in ms.
double median_ms(int runs, const std::function<void()>& f) {
  f();
  std::vector<double> ms;
  for (int r = 0; r < runs; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// The machine, for the results file: the CPU model as /proc/cpuinfo names it ("unknown" elsewhere).
std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "unknown";
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

struct Recorder {
  int runs;
  nlohmann::json kernels = nlohmann::json::array();

  void flops(const std::string& name, const std::string& shape, double flop, const std::function<void()>& f) {
    const double ms = median_ms(runs, f);
    kernels.push_back({{"name", name}, {"shape", shape}, {"ms", ms}, {"gflops", flop / (ms * 1e6)}});
  }
  void bytes(const std::string& name, const std::string& shape, double byte, const std::function<void()>& f) {
    const double ms = median_ms(runs, f);
    kernels.push_back({{"name", name}, {"shape", shape}, {"ms", ms}, {"gbps", byte / (ms * 1e6)}});
  }
};

// linear forward and backward (dx, dw, db) for one (N, in) -> (N, out) layer.
void bench_linear(Recorder& rec, const std::string& what, int N, int in, int out, bool bias) {
  auto x = random_floats(static_cast<size_t>(N) * in, 1.0f, 1), w = random_floats(static_cast<size_t>(out) * in, 0.02f, 2);
  auto b = random_floats(out, 0.02f, 3), dy = random_floats(static_cast<size_t>(N) * out, 1.0f, 4);
  std::vector<float> y(static_cast<size_t>(N) * out), dx(x.size()), dw(w.size()), db(out);
  const std::string shape = fmt::format("N={} in={} out={}{}", N, in, out, bias ? " +bias" : "");
  const double flop = 2.0 * N * in * out;
  const float* bp = bias ? b.data() : nullptr;
  rec.flops("linear_forward " + what, shape, flop,
            [&] { linear_forward<Backend::CPU>(y.data(), x.data(), w.data(), bp, N, in, out); });
  rec.flops("linear_backward " + what, shape + " (dx, dw" + (bias ? ", db)" : ")"), 2 * flop, [&] {
    linear_backward<Backend::CPU>(dx.data(), dw.data(), bias ? db.data() : nullptr, dy.data(), x.data(), w.data(), N,
                                  in, out);
  });
}

}  // namespace

nlohmann::json bench_kernels_cpu(const KernelBenchShapes& s) {
  DSK_CHECK(s.batch > 0 && s.seq > 0 && s.d > 0 && s.d_ff > 0 && s.latent > 0 && s.vocab > 0 && s.n_params > 0 &&
                s.runs > 0,
            "bench_kernels_cpu: every shape and the run count must be positive");
  Recorder rec{s.runs};
  const int N = s.batch * s.seq, d = s.d, F = s.d_ff, V = s.vocab;
  const size_t Nd = static_cast<size_t>(N) * d, NF = static_cast<size_t>(N) * F, NV = static_cast<size_t>(N) * V;
  constexpr double f4 = sizeof(float);

  // ---- GEMMs: the LM head (tied embedding, no bias) and the block's projections -------------------------------
  bench_linear(rec, "lm_head", N, d, V, false);
  bench_linear(rec, "d->d_ff", N, d, F, true);
  bench_linear(rec, "d_ff->d", N, F, d, true);
  bench_linear(rec, "d->d", N, d, d, true);

  // ---- cross-entropy over the LM head's logits ------------------------------------------------------------
  {
    auto logits0 = random_floats(NV, 2.0f, 5);
    auto targets = random_ints(N, V, 6);
    std::vector<float> logits(NV), losses(N);
    const std::string shape = fmt::format("N={} V={}", N, V);
    // In place, as training uses it. Each run then starts from the previous run's gradient rather than fresh
    // logits; the kernel is branch-free per element, so the cost is the same, and no re-copy is timed.
    std::copy(logits0.begin(), logits0.end(), logits.begin());
    rec.bytes("cross_entropy_forward_backward (in place)", shape, 2.0 * NV * f4, [&] {
      cross_entropy_forward_backward<Backend::CPU>(losses.data(), logits.data(), logits.data(), targets.data(), N, V,
                                                   1.0f / N);
    });
    rec.bytes("cross_entropy_forward (loss only)", shape, 1.0 * NV * f4, [&] {
      cross_entropy_forward_backward<Backend::CPU>(losses.data(), nullptr, logits0.data(), targets.data(), N, V,
                                                   1.0f / N);
    });
  }

  // ---- LayerNorm -------------------------------------------------------------------------------------------
  {
    auto x = random_floats(Nd, 1.0f, 7), w = random_floats(d, 1.0f, 8), b = random_floats(d, 1.0f, 9);
    auto dy = random_floats(Nd, 1.0f, 10);
    std::vector<float> y(Nd), mean(N), rstd(N), dx(Nd), dw(d), db(d);
    const std::string shape = fmt::format("N={} C={}", N, d);
    rec.bytes("layernorm_forward", shape, 2.0 * Nd * f4, [&] {
      layernorm_forward<Backend::CPU>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, d);
    });
    rec.bytes("layernorm_backward", shape, 3.0 * Nd * f4, [&] {
      layernorm_backward<Backend::CPU>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                                       rstd.data(), N, d);
    });
  }

  // ---- the latent-KV projection (GEMM + LayerNorm) ----------------------------------------------------------
  {
    const int dc = s.latent;
    const size_t Nc = static_cast<size_t>(N) * dc;
    auto x = random_floats(Nd, 1.0f, 15), w = random_floats(static_cast<size_t>(dc) * d, 0.05f, 16);
    auto lw = random_floats(dc, 1.0f, 17), lb = random_floats(dc, 1.0f, 18), dy = random_floats(Nc, 1.0f, 19);
    std::vector<float> c(Nc), raw(Nc), mean(N), rstd(N), dx(Nd), d_raw(Nc), dw(w.size()), dlw(dc), dlb(dc);
    const std::string shape = fmt::format("N={} d={} dc={}", N, d, dc);
    const double flop = 2.0 * N * d * dc;
    rec.flops("latent_projection_forward", shape, flop, [&] {
      latent_projection_forward<Backend::CPU>(c.data(), raw.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                              lw.data(), lb.data(), N, d, dc);
    });
    rec.flops("latent_projection_backward", shape + " (dx, dw)", 2 * flop, [&] {
      latent_projection_backward<Backend::CPU>(dx.data(), d_raw.data(), dw.data(), dlw.data(), dlb.data(), dy.data(),
                                               x.data(), w.data(), raw.data(), lw.data(), mean.data(), rstd.data(), N,
                                               d, dc);
    });
  }

  // ---- embedding -------------------------------------------------------------------------------------------
  {
    auto wte = random_floats(static_cast<size_t>(V) * d, 0.02f, 11), wpe = random_floats(static_cast<size_t>(s.seq) * d, 0.02f, 12);
    auto tokens = random_ints(N, V, 13);
    auto dout = random_floats(Nd, 1.0f, 14);
    std::vector<float> out(Nd), dwte(wte.size()), dwpe(wpe.size());
    const std::string shape = fmt::format("B={} T={} d={} V={}", s.batch, s.seq, d, V);
    rec.bytes("embedding_forward", shape, 3.0 * Nd * f4, [&] {
      embedding_forward<Backend::CPU>(out.data(), tokens.data(), nullptr, wte.data(), wpe.data(), s.batch, s.seq, d);
    });
    rec.bytes("embedding_backward", shape, 5.0 * Nd * f4, [&] {
      embedding_backward<Backend::CPU>(dwte.data(), dwpe.data(), dout.data(), tokens.data(), nullptr, s.batch, s.seq,
                                       d, V);
    });
  }

  // ---- element-wise ----------------------------------------------------------------------------------------
  {
    auto a = random_floats(NF, 1.0f, 15), b = random_floats(NF, 1.0f, 16);
    std::vector<float> y(NF), dx(NF);
    const std::string shape_f = fmt::format("n={} (N x d_ff)", NF), shape_d = fmt::format("n={} (N x d)", Nd);
    rec.bytes("relu_forward", shape_f, 2.0 * NF * f4, [&] { relu_forward<Backend::CPU>(y.data(), a.data(), NF); });
    rec.bytes("relu_backward", shape_f, 3.0 * NF * f4,
              [&] { relu_backward<Backend::CPU>(dx.data(), b.data(), y.data(), NF); });
    const uint64_t site = rng::make_site(1, 0, 3);
    rec.bytes("dropout_forward p=0.1", shape_f, 2.0 * NF * f4,
              [&] { dropout_forward<Backend::CPU>(y.data(), a.data(), NF, 0.1f, 1337, site); });
    rec.bytes("dropout_backward p=0.1", shape_f, 2.0 * NF * f4,
              [&] { dropout_backward<Backend::CPU>(dx.data(), b.data(), NF, 0.1f, 1337, site); });
    rec.bytes("add", shape_d, 3.0 * Nd * f4, [&] { add<Backend::CPU>(y.data(), a.data(), b.data(), Nd); });
    rec.bytes("accumulate", shape_d, 3.0 * Nd * f4, [&] { accumulate<Backend::CPU>(y.data(), a.data(), Nd); });
    rec.bytes("fill", shape_d, 1.0 * Nd * f4, [&] { fill<Backend::CPU>(y.data(), 0.0f, Nd); });
  }

  // ---- optimizer over the whole parameter arena ------------------------------------------------------------
  {
    const int64_t n = s.n_params;
    auto p = random_floats(n, 0.02f, 17), g = random_floats(n, 1e-3f, 18);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    const std::string shape = fmt::format("n={}", n);
    float out = 0;
    rec.bytes("sum_squares", shape, 1.0 * n * f4, [&] { sum_squares<Backend::CPU>(&out, g.data(), n); });
    AdamWHyper h;
    rec.bytes("adamw_update", shape, 7.0 * n * f4, [&] {
      adamw_update<Backend::CPU>(p.data(), g.data(), m.data(), v.data(), n, h);
      ++h.step;
    });
  }

  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  return {{"backend", "cpu"},
          {"cpu", cpu_model()},
          {"date", utc_now()},
          {"threads", omp_get_max_threads()},
          {"omp_wait_policy", wait_policy ? wait_policy : "default"},
          {"blas", openblas_get_config()},
          {"runs", s.runs},
          {"kernels", rec.kernels}};
}

}  // namespace dsk
