// CPU attention micro-benchmark (see attention_bench.h). Not a test: it only measures.
#include "bench/attention_bench.h"
#include "kernels/attention.h"
#include "kernels/rng.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace dsk {
namespace {

struct BenchCase {
  std::string model;  // the config whose training shape this is
  int batch, seq, heads, head_dim, latent_dim;
};

// The training shapes of configs/small.json and configs/default.json at batch 8.
const BenchCase kCases[] = {
    {"small", 8, 128, 4, 64, 64},
    {"default", 8, 256, 8, 64, 128},
};

constexpr int kRuns = 7;  // timed runs per measurement (after one warm-up); the median is reported

template <class F>
double median_ms(F&& f) {
  f();  // warm-up: first-touch pages, thread pool start
  std::vector<double> ms;
  for (int r = 0; r < kRuns; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::vector<float> random_vector(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

nlohmann::json bench_one(const BenchCase& c, bool absorbed, float dropout_p) {
  AttentionShape s;
  s.batch = c.batch;
  s.q_len = s.kv_len = c.seq;
  s.heads = c.heads;
  s.kv_heads = absorbed ? 1 : c.heads;
  s.qk_dim = s.v_dim = absorbed ? c.latent_dim : c.head_dim;
  s.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const AttentionDropout drop{dropout_p, 1, rng::make_site(0, 0, 1)};

  std::mt19937_64 rng(1);
  const size_t n_q = static_cast<size_t>(s.batch) * s.q_len * s.heads * s.qk_dim;
  const size_t n_kv = static_cast<size_t>(s.batch) * s.kv_len * s.kv_heads * s.qk_dim;
  const size_t n_out = static_cast<size_t>(s.batch) * s.q_len * s.heads * s.v_dim;
  auto q = random_vector(n_q, rng), k = random_vector(n_kv, rng), v = random_vector(n_kv, rng);
  auto dout = random_vector(n_out, rng);
  std::vector<float> out(n_out), lse(static_cast<size_t>(s.batch) * s.heads * s.q_len);
  std::vector<float> dq(n_q), dk(n_kv), dv(n_kv);

  const double fwd_ms = median_ms([&] {
    attention_forward<Backend::CPU>(out.data(), lse.data(), q.data(), k.data(), v.data(), nullptr, s, drop);
  });
  const double bwd_ms = median_ms([&] {
    attention_backward<Backend::CPU>(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(),
                                     out.data(), lse.data(), s, drop);
  });

  return attention_bench_record(c.model, absorbed, s, dropout_p, fwd_ms, bwd_ms, "gflops");
}

}  // namespace

nlohmann::json bench_attention_kernels_cpu() {
  nlohmann::json results = nlohmann::json::array();
  for (const BenchCase& c : kCases)
    for (bool absorbed : {false, true})
      for (float p : {0.0f, 0.1f}) results.push_back(bench_one(c, absorbed, p));
  return {
      {"benchmark", "attention_kernels"},
      {"backend", "cpu"},
      {"threads", omp_get_max_threads()},
      {"timing", "wall clock, median of 7 runs after one warm-up"},
      {"flops", "useful causal flops (visible score entries only)"},
      {"results", results},
  };
}

}  // namespace dsk
