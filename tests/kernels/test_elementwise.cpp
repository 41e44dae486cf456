// CPU element-wise ops: ReLU and dropout gradients vs finite differences, dropout's mask statistics, add,
// accumulate, fill.
#include "kernels/elementwise.h"

#include "kernels/rng.h"
#include "tests/testing.h"

#include <algorithm>
#include <cmath>

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("relu: forward and backward vs finite differences", "[kernels][elementwise]") {
  std::mt19937_64 rng(test_seed());
  const int n = 50;
  auto x = randn(n, rng), dy = randn(n, rng);
  for (auto& v : x) v += v > 0 ? 0.05f : -0.05f;  // keep the kink out of the finite-difference step
  std::vector<float> y(n), dx(n);
  auto loss = [&] {
    relu_forward<Backend::CPU>(y.data(), x.data(), n);
    return dot(dy, y);
  };
  loss();
  for (int i = 0; i < n; ++i) CHECK(y[i] == std::max(x[i], 0.0f));
  relu_backward<Backend::CPU>(dx.data(), dy.data(), y.data(), n);
  check_gradient(loss, x, dx);
}

TEST_CASE("dropout: the same mask forward and backward, scaling, gradient vs finite differences",
          "[kernels][elementwise]") {
  std::mt19937_64 rng(test_seed());
  const int n = 300;
  const float p = 0.25f;
  const uint64_t seed = test_seed(), site = rng::make_site(7, 2, 0);
  auto x = randn(n, rng), dy = randn(n, rng);
  std::vector<float> y(n), dx(n);
  auto loss = [&] {
    dropout_forward<Backend::CPU>(y.data(), x.data(), n, p, seed, site);
    return dot(dy, y);
  };
  loss();
  dropout_backward<Backend::CPU>(dx.data(), dy.data(), n, p, seed, site);
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    const bool keep = rng::keep(seed, site, i, p);  // the mask is rng::keep with index = element index
    kept += keep;
    CHECK((y[i] != 0.0f) == keep);
    CHECK((dx[i] != 0.0f) == keep);
    if (keep) {
      CHECK(y[i] == Approx(x[i] / (1.0f - p)).epsilon(1e-6));
      CHECK(dx[i] == Approx(dy[i] / (1.0f - p)).epsilon(1e-6));
    }
  }
  CHECK(kept > 0);
  CHECK(kept < n);
  check_gradient(loss, x, dx, 1e-2, 2e-2, 2e-3, 1000);

  // Another site draws another mask.
  std::vector<float> y2(n);
  dropout_forward<Backend::CPU>(y2.data(), x.data(), n, p, seed, site + 1);
  int differ = 0;
  for (int i = 0; i < n; ++i) differ += (y[i] == 0.0f) != (y2[i] == 0.0f);
  CHECK(differ > 0);
}

TEST_CASE("dropout: keep fraction is 1 - p on a large n; p = 0 copies exactly; p = 1 drops all",
          "[kernels][elementwise]") {
  const int64_t n = 200000;
  std::vector<float> x(n, 1.0f), y(n);
  for (float p : {0.1f, 0.5f, 0.9f}) {
    dropout_forward<Backend::CPU>(y.data(), x.data(), n, p, 1234, rng::make_site(1, 0, 0));
    int64_t kept = 0;
    double total = 0;
    for (float v : y) {
      kept += v != 0.0f;
      total += v;
    }
    // Binomial sd is at most sqrt(0.25 / n) ~ 0.0011; 0.006 is over 5 sd.
    CHECK(std::abs(static_cast<double>(kept) / n - (1.0 - p)) < 0.006);
    CHECK(std::abs(total / n - 1.0) < 0.006 / (1.0 - p));  // inverted dropout preserves the mean
  }
  std::mt19937_64 rng(test_seed());
  auto r = randn(1000, rng);
  std::vector<float> out(1000);
  dropout_forward<Backend::CPU>(out.data(), r.data(), 1000, 0.0f, 1, 2);
  CHECK(out == r);
  dropout_backward<Backend::CPU>(out.data(), r.data(), 1000, 1.0f, 1, 2);
  for (float v : out) CHECK(v == 0.0f);
  CHECK_THROWS_AS(dropout_forward<Backend::CPU>(out.data(), r.data(), 1000, 1.5f, 1, 2), Error);
}

TEST_CASE("add, accumulate, fill", "[kernels][elementwise]") {
  std::mt19937_64 rng(test_seed());
  const int n = 1001;
  auto a = randn(n, rng), b = randn(n, rng);
  std::vector<float> out(n);
  add<Backend::CPU>(out.data(), a.data(), b.data(), n);
  for (int i = 0; i < n; ++i) CHECK(out[i] == a[i] + b[i]);
  auto y = a;
  accumulate<Backend::CPU>(y.data(), b.data(), n);
  for (int i = 0; i < n; ++i) CHECK(y[i] == a[i] + b[i]);
  y = a;
  accumulate<Backend::CPU>(y.data(), b.data(), n, -0.5f);
  for (int i = 0; i < n; ++i) CHECK(y[i] == Approx(a[i] - 0.5f * b[i]).margin(1e-6));
  fill<Backend::CPU>(y.data(), 3.5f, n);
  for (float v : y) CHECK(v == 3.5f);
}
