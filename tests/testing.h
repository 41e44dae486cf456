#pragma once
// Shared test helpers: random inputs, error measures, finite-difference gradient checks.
#include <algorithm>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace dsk::testing {

// Fresh random inputs every run unless DSK_TEST_SEED is set; the seed is printed on failure via INFO.
inline uint64_t test_seed() {
  static uint64_t seed = [] {
    if (const char* s = std::getenv("DSK_TEST_SEED")) return static_cast<uint64_t>(std::strtoull(s, nullptr, 10));
    return static_cast<uint64_t>(std::random_device{}());
  }();
  return seed;
}

inline std::vector<float> randn(size_t n, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<int32_t> randint(size_t n, int lo, int hi, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> dist(lo, hi - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// max_i |a_i - b_i| / (max_i |b_i| + tiny): a relative error that is not blown up by single near-zero entries.
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::abs(static_cast<double>(b[i])));
  }
  return diff / (ref + 1e-12);
}

inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Finite-difference check of an analytic gradient.
//   loss():   recomputes the scalar loss from the current contents of `x` (typically dot(dy, f(x)))
//   x:        the input being perturbed (modified and restored in place)
//   grad:     the analytic d loss / d x
// Checks every element when x is small, else `samples` random ones; central differences with step h.
// Fails when |fd - analytic| > atol + rtol * max(|fd|, |analytic|) anywhere.
inline void check_gradient(const std::function<double()>& loss, std::vector<float>& x, const std::vector<float>& grad,
                           double h = 1e-2, double rtol = 2e-2, double atol = 2e-3, int samples = 64) {
  REQUIRE(x.size() == grad.size());
  std::mt19937_64 rng(test_seed() ^ 0x5eed);
  std::vector<size_t> idx;
  if (x.size() <= static_cast<size_t>(samples)) {
    for (size_t i = 0; i < x.size(); ++i) idx.push_back(i);
  } else {
    std::uniform_int_distribution<size_t> d(0, x.size() - 1);
    for (int i = 0; i < samples; ++i) idx.push_back(d(rng));
  }
  for (size_t i : idx) {
    float orig = x[i];
    x[i] = orig + static_cast<float>(h);
    double lp = loss();
    x[i] = orig - static_cast<float>(h);
    double lm = loss();
    x[i] = orig;
    double fd = (lp - lm) / (2 * h);
    double an = grad[i];
    INFO("element " << i << ": finite difference " << fd << " vs analytic " << an << " (seed " << test_seed() << ")");
    REQUIRE(std::abs(fd - an) <= atol + rtol * std::max(std::abs(fd), std::abs(an)));
  }
}

}  // namespace dsk::testing
