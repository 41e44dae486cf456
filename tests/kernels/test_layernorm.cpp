// CPU LayerNorm: forward vs the definition, backward vs finite differences, accumulate and determinism.
#include "kernels/layernorm.h"

#include "tests/testing.h"

#include <cmath>

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("layernorm: forward matches PyTorch's definition", "[kernels][layernorm]") {
  std::mt19937_64 rng(test_seed());
  const int N = 5, C = 37;
  auto x = randn(N * C, rng, 3.0f), w = randn(C, rng), b = randn(C, rng);
  for (auto& v : x) v += 10.0f;  // an offset that would hurt a one-pass E[x²] - E[x]² variance
  std::vector<float> y(N * C), mean(N), rstd(N), expect(N * C);
  layernorm_forward<Backend::CPU>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  for (int n = 0; n < N; ++n) {
    double mu = 0, var = 0;
    for (int c = 0; c < C; ++c) mu += x[n * C + c];
    mu /= C;
    for (int c = 0; c < C; ++c) var += (x[n * C + c] - mu) * (x[n * C + c] - mu);
    var /= C;  // biased, as PyTorch
    const double r = 1.0 / std::sqrt(var + 1e-5);
    CHECK(std::abs(mean[n] - mu) < 1e-5 * std::abs(mu));
    CHECK(std::abs(rstd[n] - r) < 1e-5 * r);
    for (int c = 0; c < C; ++c) expect[n * C + c] = static_cast<float>((x[n * C + c] - mu) * r * w[c] + b[c]);
  }
  CHECK(rel_err(y, expect) < 1e-5);
}

TEST_CASE("layernorm: backward dx, dw, db vs finite differences; dw, db accumulate", "[kernels][layernorm]") {
  std::mt19937_64 rng(test_seed());
  const int N = 7, C = 70;  // C > 64 so more than one column block reduces dw, db
  auto x = randn(N * C, rng), w = randn(C, rng), b = randn(C, rng), dy = randn(N * C, rng);
  std::vector<float> y(N * C), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward<Backend::CPU>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    return dot(dy, y);
  };
  loss();
  std::vector<float> dx(N * C), dw(C, 0.0f), db(C, 0.0f);
  layernorm_backward<Backend::CPU>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                                   rstd.data(), N, C);
  // x enters nonlinearly: a smaller step keeps the central difference's error below the tolerance.
  check_gradient(loss, x, dx, 1e-3, 3e-2, 5e-3);
  check_gradient(loss, w, dw);
  check_gradient(loss, b, db);

  loss();  // restore mean/rstd for the unperturbed x
  auto dx1 = dx, dw2 = dw, db2 = db;
  for (auto& g : dw2) g *= 2;
  for (auto& g : db2) g *= 2;
  layernorm_backward<Backend::CPU>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                                   rstd.data(), N, C);
  CHECK(rel_err(dx, dx1) < 1e-6);  // set, not added
  CHECK(rel_err(dw, dw2) < 1e-6);
  CHECK(rel_err(db, db2) < 1e-6);
}

TEST_CASE("layernorm: the gradient of a constant row's mean is zero and outputs stay finite", "[kernels][layernorm]") {
  // A constant row: variance 0, rstd = 1/sqrt(eps), y = b.
  const int N = 1, C = 8;
  std::vector<float> x(C, 3.0f), w(C, 1.0f), b(C, 0.5f), y(C), mean(N), rstd(N), dy(C, 1.0f), dx(C), dw(C), db(C);
  layernorm_forward<Backend::CPU>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  for (float v : y) CHECK(v == 0.5f);
  CHECK(rstd[0] == Approx(1.0 / std::sqrt(1e-5)).epsilon(1e-6));
  layernorm_backward<Backend::CPU>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                                   rstd.data(), N, C);
  for (float v : dx) CHECK(std::abs(v) < 1e-3);  // a uniform dy moves only the mean, which LN removes
}
