// CPU fused softmax cross-entropy: losses vs a double reference, dlogits vs finite differences of the mean loss,
// ignored targets, in-place aliasing, extreme logits.
#include "kernels/loss.h"

#include "tests/testing.h"

#include <algorithm>
#include <cmath>

using namespace dsk;
using namespace dsk::testing;

namespace {
// Per-row loss and softmax in double.
void reference(const std::vector<float>& logits, const std::vector<int32_t>& targets, int N, int V,
               std::vector<double>& losses, std::vector<double>& probs) {
  losses.assign(N, 0.0);
  probs.assign(static_cast<size_t>(N) * V, 0.0);
  for (int n = 0; n < N; ++n) {
    double mx = -INFINITY;
    for (int i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(logits[n * V + i]));
    double s = 0;
    for (int i = 0; i < V; ++i) s += std::exp(logits[n * V + i] - mx);
    for (int i = 0; i < V; ++i) probs[n * V + i] = std::exp(logits[n * V + i] - mx) / s;
    if (targets[n] >= 0) losses[n] = mx + std::log(s) - logits[n * V + targets[n]];
  }
}
}  // namespace

TEST_CASE("cross_entropy: losses and softmax match a double reference", "[kernels][loss]") {
  std::mt19937_64 rng(test_seed());
  const int N = 6, V = 333;
  auto logits = randn(N * V, rng, 4.0f);
  logits[5] = -120.0f;  // far below the max: exp underflows to 0, must not become NaN
  auto targets = randint(N, 0, V, rng);
  std::vector<float> losses(N), dlogits(N * V);
  const float scale = 0.37f;
  cross_entropy_forward_backward<Backend::CPU>(losses.data(), dlogits.data(), logits.data(), targets.data(), N, V,
                                               scale);
  std::vector<double> ref_loss, probs;
  reference(logits, targets, N, V, ref_loss, probs);
  for (int n = 0; n < N; ++n) {
    CHECK(losses[n] == Approx(ref_loss[n]).epsilon(1e-5));
    for (int i = 0; i < V; ++i) {
      const double expect = (probs[n * V + i] - (i == targets[n])) * scale;
      INFO("row " << n << " col " << i);
      REQUIRE(std::abs(dlogits[n * V + i] - expect) < 1e-6 * scale + 1e-5 * std::abs(expect));
    }
  }
}

TEST_CASE("cross_entropy: dlogits vs finite differences of the mean loss, ignored targets", "[kernels][loss]") {
  std::mt19937_64 rng(test_seed());
  const int N = 5, V = 11;
  auto logits = randn(N * V, rng);
  std::vector<int32_t> targets{3, -1, 10, 0, -100};  // rows 1 and 4 ignored
  const int valid = 3;
  std::vector<float> losses(N), dlogits(N * V, 123.0f);
  auto loss = [&] {
    cross_entropy_forward_backward<Backend::CPU>(losses.data(), nullptr, logits.data(), targets.data(), N, V, 1.0f);
    double s = 0;
    for (float l : losses) s += l;
    return s / valid;
  };
  cross_entropy_forward_backward<Backend::CPU>(losses.data(), dlogits.data(), logits.data(), targets.data(), N, V,
                                               1.0f / valid);
  CHECK(losses[1] == 0.0f);
  CHECK(losses[4] == 0.0f);
  for (int i = 0; i < V; ++i) {
    CHECK(dlogits[1 * V + i] == 0.0f);
    CHECK(dlogits[4 * V + i] == 0.0f);
  }
  check_gradient(loss, logits, dlogits, 1e-2, 2e-2, 1e-4, 1000);
  // Each valid row's gradient sums to zero (softmax minus one-hot).
  for (int n : {0, 2, 3}) {
    double s = 0;
    for (int i = 0; i < V; ++i) s += dlogits[n * V + i];
    CHECK(std::abs(s) < 1e-6);
  }
}

TEST_CASE("cross_entropy: in place (dlogits aliasing logits) gives the same result", "[kernels][loss]") {
  std::mt19937_64 rng(test_seed());
  const int N = 9, V = 1000;
  auto logits = randn(N * V, rng, 3.0f);
  auto targets = randint(N, 0, V, rng);
  targets[4] = -1;
  std::vector<float> losses(N), dlogits(N * V), losses_inplace(N);
  cross_entropy_forward_backward<Backend::CPU>(losses.data(), dlogits.data(), logits.data(), targets.data(), N, V,
                                               0.5f);
  auto inplace = logits;
  cross_entropy_forward_backward<Backend::CPU>(losses_inplace.data(), inplace.data(), inplace.data(), targets.data(),
                                               N, V, 0.5f);
  CHECK(losses_inplace == losses);
  CHECK(inplace == dlogits);
}

TEST_CASE("cross_entropy: huge logits stay finite; a target out of range is an error", "[kernels][loss]") {
  const int N = 2, V = 4;
  std::vector<float> logits{1e4f, -1e4f, 0.0f, 1e4f, 50.0f, 50.0f, 50.0f, 50.0f};
  std::vector<int32_t> targets{1, 2};
  std::vector<float> losses(N), dlogits(N * V);
  cross_entropy_forward_backward<Backend::CPU>(losses.data(), dlogits.data(), logits.data(), targets.data(), N, V,
                                               1.0f);
  CHECK(losses[0] == Approx(2e4 + std::log(2.0)).epsilon(1e-6));
  CHECK(losses[1] == Approx(std::log(4.0)).epsilon(1e-6));
  CHECK(dlogits[0] == Approx(0.5f));
  CHECK(dlogits[1] == -1.0f);
  CHECK(dlogits[6] == Approx(-0.75f));
  std::vector<int32_t> bad{0, V};
  CHECK_THROWS_AS(cross_entropy_forward_backward<Backend::CPU>(losses.data(), dlogits.data(), logits.data(),
                                                               bad.data(), N, V, 1.0f),
                  Error);
}
