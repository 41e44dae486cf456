// CPU optimizer kernels: sum_squares (exact enough and thread-count independent) and AdamW against a scalar
// re-implementation and against values worked out by hand.
#include "kernels/optim.h"

#include "tests/testing.h"

#include <omp.h>

#include <cmath>

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("sum_squares: matches double and is the same bits for any thread count", "[kernels][optim]") {
  std::mt19937_64 rng(test_seed());
  const int64_t n = (1 << 16) * 3 + 12345;  // several fixed chunks and a ragged tail
  auto g = randn(n, rng);
  double expect = 0;
  for (float v : g) expect += static_cast<double>(v) * v;
  float out = -1, out1 = -2;
  sum_squares<Backend::CPU>(&out, g.data(), n);
  CHECK(out == Approx(expect).epsilon(1e-6));
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  sum_squares<Backend::CPU>(&out1, g.data(), n);
  omp_set_num_threads(3);  // more threads than chunks divide evenly into
  float out3 = -3;
  sum_squares<Backend::CPU>(&out3, g.data(), n);
  omp_set_num_threads(threads);
  CHECK(out1 == out);
  CHECK(out3 == out);
  float zero = -1;
  sum_squares<Backend::CPU>(&zero, g.data(), 0);
  CHECK(zero == 0.0f);
}

TEST_CASE("adamw: matches a scalar re-implementation of the header's formula over 3 steps", "[kernels][optim]") {
  std::mt19937_64 rng(test_seed());
  const int n = 1001;
  auto p = randn(n, rng), m = std::vector<float>(n, 0.0f), v = std::vector<float>(n, 0.0f);
  std::vector<double> pr(p.begin(), p.end()), mr(n, 0.0), vr(n, 0.0);
  AdamWHyper h;
  h.lr = 1e-2f;
  h.beta1 = 0.9f;
  h.beta2 = 0.95f;
  h.eps = 1e-8f;
  h.weight_decay = 0.1f;
  h.grad_scale = 0.5f;
  for (int step = 1; step <= 3; ++step) {
    auto g = randn(n, rng);
    h.step = step;
    adamw_update<Backend::CPU>(p.data(), g.data(), m.data(), v.data(), n, h);
    for (int i = 0; i < n; ++i) {
      const double gi = static_cast<double>(g[i]) * h.grad_scale;
      pr[i] -= static_cast<double>(h.lr) * h.weight_decay * pr[i];
      mr[i] = h.beta1 * mr[i] + (1.0 - h.beta1) * gi;
      vr[i] = h.beta2 * vr[i] + (1.0 - h.beta2) * gi * gi;
      const double mhat = mr[i] / (1.0 - std::pow(static_cast<double>(h.beta1), step));
      const double vhat = vr[i] / (1.0 - std::pow(static_cast<double>(h.beta2), step));
      pr[i] -= h.lr * mhat / (std::sqrt(vhat) + h.eps);
    }
  }
  std::vector<float> pf(pr.begin(), pr.end()), mf(mr.begin(), mr.end()), vf(vr.begin(), vr.end());
  CHECK(rel_err(p, pf) < 1e-5);
  CHECK(rel_err(m, mf) < 1e-5);
  CHECK(rel_err(v, vf) < 1e-5);
}

TEST_CASE("adamw: two steps on three elements, worked out by hand", "[kernels][optim]") {
  // lr 0.1, betas (0.9, 0.99), eps 1e-8, wd 0.1, p0 = (1, -2, 0.5), g1 = (0.5, -1, 0), g2 = (0.5, 1, 2).
  // Step 1: bc1 = 0.1, bc2 = 0.01, so m̂ = g1, v̂ = g1² and the step is lr·sign(g1) (0 where g1 = 0):
  //   p1 = 0.99·p0 − 0.1·sign(g1) = (0.89, −1.88, 0.495);  m1 = 0.1·g1 = (0.05, −0.1, 0);  v1 = 0.01·g1² = (0.0025, 0.01, 0).
  // Step 2: m2 = 0.9 m1 + 0.1 g2 = (0.095, 0.01, 0.2);  v2 = 0.99 v1 + 0.01 g2² = (0.004975, 0.0199, 0.04);
  //   bc1 = 1 − 0.81 = 0.19, bc2 = 1 − 0.9801 = 0.0199;  m̂ = (0.5, 1/19, 20/19);  v̂ = (0.25, 1, 0.04/0.0199);
  //   step = lr·m̂/√v̂ = (0.1, 0.1/19, 0.1·√0.0199/0.19 = 0.0742459788);
  //   p2 = 0.99·p1 − step = (0.8811 − 0.1, −1.8612 − 0.0052631579, 0.49005 − 0.0742459788)
  //      = (0.7811, −1.8664631579, 0.4158040212).
  std::vector<float> p{1.0f, -2.0f, 0.5f}, m(3, 0.0f), v(3, 0.0f);
  std::vector<float> g1{0.5f, -1.0f, 0.0f}, g2{0.5f, 1.0f, 2.0f};
  AdamWHyper h;
  h.lr = 0.1f;
  h.beta1 = 0.9f;
  h.beta2 = 0.99f;
  h.eps = 1e-8f;
  h.weight_decay = 0.1f;
  h.step = 1;
  adamw_update<Backend::CPU>(p.data(), g1.data(), m.data(), v.data(), 3, h);
  CHECK(p[0] == Approx(0.89).epsilon(1e-6));
  CHECK(p[1] == Approx(-1.88).epsilon(1e-6));
  CHECK(p[2] == Approx(0.495).epsilon(1e-6));
  CHECK(m[1] == Approx(-0.1).epsilon(1e-6));
  CHECK(v[1] == Approx(0.01).epsilon(1e-6));
  h.step = 2;
  adamw_update<Backend::CPU>(p.data(), g2.data(), m.data(), v.data(), 3, h);
  CHECK(p[0] == Approx(0.7811).epsilon(1e-6));
  CHECK(p[1] == Approx(-1.8664631579).epsilon(1e-6));
  CHECK(p[2] == Approx(0.4158040212).epsilon(1e-6));
  CHECK(m[0] == Approx(0.095).epsilon(1e-6));
  CHECK(m[2] == Approx(0.2).epsilon(1e-6));
  CHECK(v[0] == Approx(0.004975).epsilon(1e-6));
  CHECK(v[2] == Approx(0.04).epsilon(1e-6));
}

TEST_CASE("adamw: grad_scale scales the gradient before the moments", "[kernels][optim]") {
  // Scaling g by s and the eps-free update: m scales by s, v by s², the step is unchanged; so compare m, v only.
  std::vector<float> p{1.0f, 2.0f}, m(2, 0.0f), v(2, 0.0f), g{4.0f, -2.0f};
  std::vector<float> p2 = p, m2 = m, v2 = v, g_half{2.0f, -1.0f};
  AdamWHyper h;
  h.grad_scale = 0.5f;
  adamw_update<Backend::CPU>(p.data(), g.data(), m.data(), v.data(), 2, h);
  h.grad_scale = 1.0f;
  adamw_update<Backend::CPU>(p2.data(), g_half.data(), m2.data(), v2.data(), 2, h);
  CHECK(p == p2);
  CHECK(m == m2);
  CHECK(v == v2);
}
