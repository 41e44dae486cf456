// CPU latent-KV projection c = LN(x · W_dkvᵀ): forward vs its definition (linear then LayerNorm), backward vs
// finite differences for dx, dW_dkv, dln_w, dln_b; parameter gradients accumulate.
#include "kernels/latent.h"
#include "kernels/layernorm.h"

#include "tests/testing.h"

#include <cmath>

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("latent projection: forward is LayerNorm of x W_dkv^T", "[kernels][latent]") {
  std::mt19937_64 rng(test_seed());
  const int N = 6, d = 20, dc = 12;
  auto x = randn(N * d, rng), w = randn(dc * d, rng, 0.3f), lw = randn(dc, rng), lb = randn(dc, rng);
  std::vector<float> c(N * dc), raw(N * dc), mean(N), rstd(N), expect(N * dc);
  latent_projection_forward<Backend::CPU>(c.data(), raw.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                          lw.data(), lb.data(), N, d, dc);
  for (int n = 0; n < N; ++n) {
    std::vector<double> r(dc);
    double mu = 0, var = 0;
    for (int j = 0; j < dc; ++j) {
      for (int i = 0; i < d; ++i) r[j] += double(x[n * d + i]) * w[j * d + i];
      mu += r[j];
      CHECK(std::abs(raw[n * dc + j] - r[j]) < 1e-4 * (1 + std::abs(r[j])));
    }
    mu /= dc;
    for (int j = 0; j < dc; ++j) var += (r[j] - mu) * (r[j] - mu);
    var /= dc;
    for (int j = 0; j < dc; ++j) expect[n * dc + j] = float((r[j] - mu) / std::sqrt(var + 1e-5) * lw[j] + lb[j]);
  }
  CHECK(rel_err(c, expect) < 1e-5);
}

TEST_CASE("latent projection: backward vs finite differences, parameters accumulate", "[kernels][latent]") {
  std::mt19937_64 rng(test_seed() ^ 0x1a7e);
  const int N = 5, d = 9, dc = 7;
  auto x = randn(N * d, rng), w = randn(dc * d, rng, 0.5f), lw = randn(dc, rng), lb = randn(dc, rng);
  auto dy = randn(N * dc, rng);
  std::vector<float> c(N * dc), raw(N * dc), mean(N), rstd(N);
  auto loss = [&] {
    latent_projection_forward<Backend::CPU>(c.data(), raw.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                            lw.data(), lb.data(), N, d, dc);
    return dot(dy, c);
  };
  loss();
  // Start the parameter gradients at non-zero values: backward must add to them.
  auto dw0 = randn(dc * d, rng), dlw0 = randn(dc, rng), dlb0 = randn(dc, rng);
  std::vector<float> dx(N * d), d_raw(N * dc), dw = dw0, dlw = dlw0, dlb = dlb0;
  latent_projection_backward<Backend::CPU>(dx.data(), d_raw.data(), dw.data(), dlw.data(), dlb.data(), dy.data(),
                                           x.data(), w.data(), raw.data(), lw.data(), mean.data(), rstd.data(), N, d,
                                           dc);
  for (size_t i = 0; i < dw.size(); ++i) dw[i] -= dw0[i];
  for (int j = 0; j < dc; ++j) {
    dlw[j] -= dlw0[j];
    dlb[j] -= dlb0[j];
  }
  check_gradient(loss, x, dx);
  check_gradient(loss, w, dw);
  check_gradient(loss, lw, dlw);
  check_gradient(loss, lb, dlb);
  // d_raw is dLoss/dc_raw: the same loss as a function of c_raw alone.
  std::vector<float> raw_in = raw;
  auto loss_of_raw = [&] {
    layernorm_forward<Backend::CPU>(c.data(), mean.data(), rstd.data(), raw_in.data(), lw.data(), lb.data(), N, dc);
    return dot(dy, c);
  };
  check_gradient(loss_of_raw, raw_in, d_raw);
}
