// CPU MoE kernels (kernels/moe.h): router, aux loss, permute/gather/combine, expert FFN — finite-difference
// checks of every backward, and a whole MoE layer through the permuted path against a plain loop over experts.
#include "kernels/moe.h"
#include "kernels/rng.h"
#include "tests/testing.h"

#include <algorithm>
#include <cmath>
#include <numeric>

using namespace dsk;
using namespace dsk::testing;

namespace {

constexpr Backend CPU = Backend::CPU;

double softplus_ref(double x) { return std::log1p(std::exp(x)); }

struct RouterOut {
  std::vector<int32_t> idx;
  std::vector<float> gate, noisy, probs;
};

RouterOut run_router(const std::vector<float>& logits, const std::vector<float>* noise_logits, int N, int E, int k,
                     uint64_t seed, uint64_t site) {
  RouterOut o{std::vector<int32_t>(N * k, -1), std::vector<float>(N * k, NAN), std::vector<float>(N * E, NAN),
              std::vector<float>(N * E, NAN)};
  moe_router_forward<CPU>(o.idx.data(), o.gate.data(), o.noisy.data(), o.probs.data(), logits.data(),
                          noise_logits ? noise_logits->data() : nullptr, N, E, k, seed, site);
  return o;
}

// The noise the router adds at (n, e), computed here from the generator itself.
double noise_at(const std::vector<float>& noise_logits, int n, int e, int E, uint64_t seed, uint64_t site) {
  uint64_t i = static_cast<uint64_t>(n) * E + e;
  return rng::normal(seed, site, i) * softplus_ref(noise_logits[i]);
}

}  // namespace

TEST_CASE("moe router: top-k order, ties to the lower expert id, gates", "[kernels][moe]") {
  const int N = 3, E = 5, k = 2;
  std::vector<float> logits = {
      0.1f, 2.0f, 0.5f, 2.0f, -1.0f,  // tie between experts 1 and 3 at the top
      1.0f, 1.0f, 1.0f, 1.0f, 1.0f,   // all equal: the lowest ids win
      -3.0f, 0.0f, 5.0f, 4.0f, 4.5f,  // plain descending pick 2, 4
  };
  RouterOut o = run_router(logits, nullptr, N, E, k, 1, 2);
  CHECK(o.idx == std::vector<int32_t>{1, 3, 0, 1, 2, 4});
  // Softmax over the two selected values.
  CHECK(o.gate[0] == Approx(0.5f));
  CHECK(o.gate[1] == Approx(0.5f));
  CHECK(o.gate[2] == Approx(0.5f));
  CHECK(o.gate[4] == Approx(1.0 / (1.0 + std::exp(-0.5))));
  CHECK(o.gate[5] == Approx(std::exp(-0.5) / (1.0 + std::exp(-0.5))));
  // Without noise the noisy logits are the logits.
  CHECK(o.noisy == logits);

  // k = 3 on the tie row picks 1, 3 then the next best (2).
  RouterOut o3 = run_router(logits, nullptr, N, E, 3, 1, 2);
  CHECK(o3.idx[0] == 1);
  CHECK(o3.idx[1] == 3);
  CHECK(o3.idx[2] == 2);
}

TEST_CASE("moe router: random logits give a sorted top-k, gates summing to 1, clean softmax probs",
          "[kernels][moe]") {
  std::mt19937_64 rng(test_seed());
  INFO("seed " << test_seed());
  const int N = 37, E = 7, k = 3;
  auto logits = randn(N * E, rng);
  auto noise_logits = randn(N * E, rng);
  const uint64_t seed = 1234, site = rng::make_site(5, 2, 4);
  RouterOut o = run_router(logits, &noise_logits, N, E, k, seed, site);
  for (int n = 0; n < N; ++n) {
    const float* z = &o.noisy[n * E];
    std::vector<bool> chosen(E, false);
    double gsum = 0, psum = 0;
    for (int j = 0; j < k; ++j) {
      int e = o.idx[n * k + j];
      REQUIRE(e >= 0);
      REQUIRE(e < E);
      REQUIRE_FALSE(chosen[e]);
      chosen[e] = true;
      if (j > 0) CHECK(z[e] <= z[o.idx[n * k + j - 1]]);
      gsum += o.gate[n * k + j];
      // Gate ratios follow the noisy values: g_j / g_0 = exp(z_j - z_0).
      CHECK(o.gate[n * k + j] / o.gate[n * k] == Approx(std::exp(z[e] - z[o.idx[n * k]])).epsilon(1e-5));
    }
    CHECK(gsum == Approx(1.0).epsilon(1e-6));
    float kth = z[o.idx[n * k + k - 1]];
    for (int e = 0; e < E; ++e)
      if (!chosen[e]) CHECK(z[e] <= kth);
    // Clean probs: softmax of the logits, untouched by noise.
    double lmax = *std::max_element(&logits[n * E], &logits[n * E] + E), denom = 0;
    for (int e = 0; e < E; ++e) denom += std::exp(logits[n * E + e] - lmax);
    for (int e = 0; e < E; ++e) {
      psum += o.probs[n * E + e];
      CHECK(o.probs[n * E + e] == Approx(std::exp(logits[n * E + e] - lmax) / denom).epsilon(1e-5));
    }
    CHECK(psum == Approx(1.0).epsilon(1e-6));
  }
}

TEST_CASE("moe router: noise is reproducible for (seed, site) and follows the formula", "[kernels][moe]") {
  std::mt19937_64 rng(test_seed());
  INFO("seed " << test_seed());
  const int N = 9, E = 6, k = 2;
  auto logits = randn(N * E, rng);
  auto noise_logits = randn(N * E, rng);
  const uint64_t seed = 77, site = rng::make_site(3, 1, 4);
  RouterOut a = run_router(logits, &noise_logits, N, E, k, seed, site);
  RouterOut b = run_router(logits, &noise_logits, N, E, k, seed, site);
  CHECK(a.noisy == b.noisy);
  CHECK(a.idx == b.idx);
  CHECK(a.gate == b.gate);
  for (int n = 0; n < N; ++n)
    for (int e = 0; e < E; ++e)
      CHECK(a.noisy[n * E + e] == Approx(logits[n * E + e] + noise_at(noise_logits, n, e, E, seed, site))
                                      .epsilon(1e-5)
                                      .margin(1e-5));
  // Another site (the next step) or another seed draws other noise.
  RouterOut c = run_router(logits, &noise_logits, N, E, k, seed, rng::make_site(4, 1, 4));
  RouterOut d = run_router(logits, &noise_logits, N, E, k, seed + 1, site);
  CHECK(c.noisy != a.noisy);
  CHECK(d.noisy != a.noisy);
  // No noise_logits: no noise at all.
  RouterOut clean = run_router(logits, nullptr, N, E, k, seed, site);
  CHECK(clean.noisy == logits);
}

TEST_CASE("moe router backward: finite differences of dlogits and dnoise_logits", "[kernels][moe]") {
  std::mt19937_64 rng(test_seed());
  INFO("seed " << test_seed());
  const int N = 5, E = 6;
  const uint64_t seed = 99, site = rng::make_site(7, 0, 4);
  for (int k : {1, 2, 3}) {
    INFO("k = " << k);
    auto noise_logits = randn(N * E, rng, 0.7f);
    // Build the logits so that the noisy values are a shuffled ladder with 0.6 between rungs: the FD step
    // (0.01 on a logit, at most ~0.05 on the noise) can never change the selection.
    std::vector<float> logits(N * E);
    for (int n = 0; n < N; ++n) {
      std::vector<int> rank(E);
      std::iota(rank.begin(), rank.end(), 0);
      std::shuffle(rank.begin(), rank.end(), rng);
      for (int e = 0; e < E; ++e)
        logits[n * E + e] = static_cast<float>(0.6 * rank[e] - noise_at(noise_logits, n, e, E, seed, site));
    }
    auto dgate = randn(N * k, rng);
    auto loss = [&] {
      RouterOut o = run_router(logits, &noise_logits, N, E, k, seed, site);
      return dot(dgate, o.gate);
    };
    RouterOut o = run_router(logits, &noise_logits, N, E, k, seed, site);
    std::vector<float> dlogits(N * E, NAN), dnoise(N * E, NAN);
    moe_router_backward<CPU>(dlogits.data(), dnoise.data(), dgate.data(), o.gate.data(), o.idx.data(),
                             noise_logits.data(), N, E, k, seed, site);
    check_gradient(loss, logits, dlogits);
    check_gradient(loss, noise_logits, dnoise);
    // Without noise, dnoise_logits may be omitted and dlogits is the same softmax-over-k Jacobian
    // (on a clean ladder with the same margins).
    std::vector<float> clean_logits(N * E);
    for (int n = 0; n < N; ++n)
      for (int e = 0; e < E; ++e)
        clean_logits[n * E + e] = logits[n * E + e] + static_cast<float>(noise_at(noise_logits, n, e, E, seed, site));
    RouterOut clean = run_router(clean_logits, nullptr, N, E, k, seed, site);
    auto clean_loss = [&] { return dot(dgate, run_router(clean_logits, nullptr, N, E, k, seed, site).gate); };
    std::vector<float> dclean(N * E, NAN);
    moe_router_backward<CPU>(dclean.data(), nullptr, dgate.data(), clean.gate.data(), clean.idx.data(), nullptr, N,
                             E, k, seed, site);
    check_gradient(clean_loss, clean_logits, dclean);
    if (k > 1) CHECK(*std::max_element(dclean.begin(), dclean.end()) > 1e-3);
  }
}

TEST_CASE("moe aux loss: balanced routing with uniform probs gives coef; load and importance", "[kernels][moe]") {
  const int E = 4, k = 2, N = 8;
  // Token n picks experts (n, n+1) mod E: every expert gets N*k/E slots.
  std::vector<int32_t> idx(N * k);
  for (int n = 0; n < N; ++n) {
    idx[n * k] = n % E;
    idx[n * k + 1] = (n + 1) % E;
  }
  std::vector<float> probs(N * E, 1.0f / E), load(E), importance(E);
  float aux = NAN;
  const float coef = 0.01f;
  moe_aux_loss_forward<CPU>(&aux, load.data(), importance.data(), probs.data(), idx.data(), N, E, k, coef);
  CHECK(aux == Approx(coef).epsilon(1e-6));
  for (int e = 0; e < E; ++e) {
    CHECK(load[e] == Approx(0.25));
    CHECK(importance[e] == Approx(0.25));
  }

  // Unbalanced: everything to expert 0 with probs concentrated there gives coef * E * 1 * P_0.
  std::vector<int32_t> all0(N * k, 0);
  all0[1] = 2;  // one slot elsewhere
  std::mt19937_64 rng(test_seed());
  auto logits = randn(N * E, rng);
  RouterOut o = run_router(logits, nullptr, N, E, k, 0, 0);
  moe_aux_loss_forward<CPU>(&aux, load.data(), importance.data(), o.probs.data(), all0.data(), N, E, k, coef);
  double P0 = 0, P2 = 0;
  for (int n = 0; n < N; ++n) P0 += o.probs[n * E] / N, P2 += o.probs[n * E + 2] / N;
  double f0 = (N * k - 1.0) / (N * k), f2 = 1.0 / (N * k);
  CHECK(load[0] == Approx(f0));
  CHECK(load[2] == Approx(f2));
  CHECK(load[1] == 0.0f);
  CHECK(importance[0] == Approx(P0));
  CHECK(aux == Approx(coef * E * (f0 * P0 + f2 * P2)).epsilon(1e-5));
}

TEST_CASE("moe aux loss backward: finite differences w.r.t. the clean logits (selection fixed)", "[kernels][moe]") {
  std::mt19937_64 rng(test_seed());
  INFO("seed " << test_seed());
  const int N = 6, E = 5, k = 2;
  const float coef = 0.7f, daux = 3.0f;
  auto logits = randn(N * E, rng);
  // A fixed, unbalanced selection: f is a constant of the loss.
  auto idx = randint(N * k, 0, 3, rng);
  std::vector<float> load(E), importance(E);
  auto loss = [&] {
    RouterOut o = run_router(logits, nullptr, N, E, k, 0, 0);
    float aux;
    moe_aux_loss_forward<CPU>(&aux, load.data(), importance.data(), o.probs.data(), idx.data(), N, E, k, coef);
    return static_cast<double>(daux) * aux;
  };
  loss();  // fills load
  RouterOut o = run_router(logits, nullptr, N, E, k, 0, 0);
  std::vector<float> dlogits(N * E, NAN);
  moe_aux_loss_backward<CPU>(dlogits.data(), daux, o.probs.data(), load.data(), N, E, coef);
  check_gradient(loss, logits, dlogits, 1e-2, 2e-2, 1e-4);
  // The gradient is not trivially zero.
  CHECK(*std::max_element(dlogits.begin(), dlogits.end()) > 1e-3);
}

TEST_CASE("moe permute: stable counting sort, offsets, inverse map", "[kernels][moe]") {
  std::mt19937_64 rng(test_seed());
  INFO("seed " << test_seed());
  const int N = 23, E = 5, k = 2;
  // Expert 2 gets nothing: an empty segment in the middle.
  auto idx = randint(N * k, 0, E - 1, rng);
  for (auto& e : idx)
    if (e >= 2) ++e;
  std::vector<int32_t> sorted(N * k, -1), slot_row(N * k, -1), offsets(E + 1, -1);
  moe_permute<CPU>(sorted.data(), slot_row.data(), offsets.data(), idx.data(), N, E, k);
  CHECK(offsets[0] == 0);
  CHECK(offsets[E] == N * k);
  CHECK(offsets[2] == offsets[3]);
  for (int e = 0; e < E; ++e) {
    int count = static_cast<int>(std::count(idx.begin(), idx.end(), e));
    CHECK(offsets[e + 1] - offsets[e] == count);
    for (int r = offsets[e]; r < offsets[e + 1]; ++r) {
      CHECK(idx[sorted[r]] == e);
      if (r > offsets[e]) CHECK(sorted[r] > sorted[r - 1]);  // slot order kept inside an expert
    }
  }
  std::vector<int32_t> seen(N * k, 0);
  for (int r = 0; r < N * k; ++r) {
    REQUIRE(sorted[r] >= 0);
    REQUIRE(sorted[r] < N * k);
    ++seen[sorted[r]];
    CHECK(slot_row[sorted[r]] == r);
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));

  std::vector<int32_t> bad = idx;
  bad[3] = E;
  CHECK_THROWS_AS(moe_permute<CPU>(sorted.data(), slot_row.data(), offsets.data(), bad.data(), N, E, k), Error);
}

namespace {

struct Permuted {
  std::vector<int32_t> sorted, slot_row, offsets;
};

Permuted permute(const std::vector<int32_t>& idx, int N, int E, int k) {
  Permuted p{std::vector<int32_t>(N * k), std::vector<int32_t>(N * k), std::vector<int32_t>(E + 1)};
  moe_permute<CPU>(p.sorted.data(), p.slot_row.data(), p.offsets.data(), idx.data(), N, E, k);
  return p;
}

}  // namespace

TEST_CASE("moe gather / combine: forward values and finite differences of dx, dyp, dgate", "[kernels][moe]") {
  std::mt19937_64 rng(test_seed());
  INFO("seed " << test_seed());
  const int N = 7, E = 4, k = 2, d = 5, M = N * k;
  auto idx = randint(M, 0, E, rng);
  Permuted p = permute(idx, N, E, k);

  // Gather: xp[r] = x[sorted[r] / k]; backward sums each token's k rows.
  auto x = randn(N * d, rng);
  std::vector<float> xp(M * d, NAN);
  moe_gather<CPU>(xp.data(), x.data(), p.sorted.data(), N, k, d);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < d; ++c) CHECK(xp[r * d + c] == x[(p.sorted[r] / k) * d + c]);
  auto dxp = randn(M * d, rng);
  std::vector<float> dx(N * d, NAN);
  moe_gather_backward<CPU>(dx.data(), dxp.data(), p.slot_row.data(), N, k, d);
  check_gradient(
      [&] {
        std::vector<float> out(M * d);
        moe_gather<CPU>(out.data(), x.data(), p.sorted.data(), N, k, d);
        return dot(dxp, out);
      },
      x, dx);

  // Combine: y[n] = Σ_j gate[n,j] yp[slot_row[n,j]].
  auto yp = randn(M * d, rng);
  auto gate = randn(M, rng);
  auto dy = randn(N * d, rng);
  std::vector<float> y(N * d, NAN);
  moe_combine<CPU>(y.data(), yp.data(), gate.data(), p.slot_row.data(), N, k, d);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < d; ++c) {
      double ref = 0;
      for (int j = 0; j < k; ++j) ref += gate[n * k + j] * yp[p.slot_row[n * k + j] * d + c];
      CHECK(y[n * d + c] == Approx(ref).margin(1e-5));
    }
  std::vector<float> dyp(M * d, NAN), dgate(M, NAN);
  moe_combine_backward<CPU>(dyp.data(), dgate.data(), dy.data(), yp.data(), gate.data(), p.slot_row.data(), N, k, d);
  auto combine_loss = [&] {
    std::vector<float> out(N * d);
    moe_combine<CPU>(out.data(), yp.data(), gate.data(), p.slot_row.data(), N, k, d);
    return dot(dy, out);
  };
  check_gradient(combine_loss, yp, dyp);
  check_gradient(combine_loss, gate, dgate);
}

namespace {

struct FfnParams {
  std::vector<float> w1, b1, w2, b2;
};

FfnParams random_ffn(int E, int d, int F, std::mt19937_64& rng, float scale) {
  return {randn(E * F * d, rng, scale), randn(E * F, rng, scale), randn(E * d * F, rng, scale),
          randn(E * d, rng, scale)};
}

}  // namespace

TEST_CASE("expert_ffn: finite differences of dxp, dw1, db1, dw2, db2 with an empty segment; accumulation",
          "[kernels][moe]") {
  std::mt19937_64 rng(test_seed());
  INFO("seed " << test_seed());
  const int E = 4, d = 5, F = 6;
  const std::vector<int32_t> offsets = {0, 3, 3, 7, 9};  // expert 1 has no rows
  const int M = offsets[E];
  FfnParams P = random_ffn(E, d, F, rng, 0.5f);
  auto xp = randn(M * d, rng);
  // Resample any row whose pre-activations come within 0.15 of the ReLU kink, so that no FD step (0.01 on a
  // weight times |x| < ~5, or on a bias) crosses it.
  for (int e = 0; e < E; ++e)
    for (int r = offsets[e]; r < offsets[e + 1]; ++r)
      for (int tries = 0;; ++tries) {
        REQUIRE(tries < 1000);
        bool clear = true;
        for (int f = 0; f < F; ++f) {
          double pre = P.b1[e * F + f];
          for (int c = 0; c < d; ++c) pre += xp[r * d + c] * P.w1[(e * F + f) * d + c];
          clear = clear && std::abs(pre) > 0.15;
        }
        if (clear) break;
        auto fresh = randn(d, rng);
        std::copy(fresh.begin(), fresh.end(), xp.begin() + r * d);
      }

  auto forward = [&](std::vector<float>& h, std::vector<float>& y) {
    expert_ffn_forward<CPU>(h.data(), y.data(), xp.data(), P.w1.data(), P.b1.data(), P.w2.data(), P.b2.data(),
                            offsets.data(), E, M, d, F);
  };
  std::vector<float> h(M * F, NAN), y(M * d, NAN);
  forward(h, y);
  // Forward against a plain loop.
  for (int e = 0; e < E; ++e)
    for (int r = offsets[e]; r < offsets[e + 1]; ++r)
      for (int c = 0; c < d; ++c) {
        double out = P.b2[e * d + c];
        for (int f = 0; f < F; ++f) {
          double pre = P.b1[e * F + f];
          for (int i = 0; i < d; ++i) pre += xp[r * d + i] * P.w1[(e * F + f) * d + i];
          out += std::max(pre, 0.0) * P.w2[(e * d + c) * F + f];
        }
        CHECK(y[r * d + c] == Approx(out).margin(1e-5));
      }

  auto dy = randn(M * d, rng);
  auto loss = [&] {
    std::vector<float> hh(M * F), yy(M * d);
    forward(hh, yy);
    return dot(dy, yy);
  };
  // Parameter gradients accumulate: start from a random prefill and subtract it afterwards.
  FfnParams pre = random_ffn(E, d, F, rng, 1.0f);
  FfnParams g = pre;
  std::vector<float> dxp(M * d, NAN), dh(M * F, NAN);
  expert_ffn_backward<CPU>(dxp.data(), g.w1.data(), g.b1.data(), g.w2.data(), g.b2.data(), dh.data(), dy.data(),
                           xp.data(), h.data(), P.w1.data(), P.w2.data(), offsets.data(), E, M, d, F);
  auto minus = [](std::vector<float> a, const std::vector<float>& b) {
    for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i];
    return a;
  };
  auto dw1 = minus(g.w1, pre.w1), db1 = minus(g.b1, pre.b1), dw2 = minus(g.w2, pre.w2), db2 = minus(g.b2, pre.b2);
  // The empty expert's parameters are untouched.
  for (int i = 0; i < F * d; ++i) CHECK(g.w1[1 * F * d + i] == pre.w1[1 * F * d + i]);
  for (int i = 0; i < d; ++i) CHECK(g.b2[1 * d + i] == pre.b2[1 * d + i]);

  check_gradient(loss, xp, dxp, 1e-2, 2e-2, 2e-3, 200);
  check_gradient(loss, P.w1, dw1, 1e-2, 2e-2, 2e-3, 200);
  check_gradient(loss, P.b1, db1, 1e-2, 2e-2, 2e-3, 200);
  check_gradient(loss, P.w2, dw2, 1e-2, 2e-2, 2e-3, 200);
  check_gradient(loss, P.b2, db2, 1e-2, 2e-2, 2e-3, 200);

  // A second backward doubles the parameter gradients (accumulate) and sets dxp again (not += ).
  std::vector<float> dxp2(M * d, 123.0f);
  expert_ffn_backward<CPU>(dxp2.data(), g.w1.data(), g.b1.data(), g.w2.data(), g.b2.data(), dh.data(), dy.data(),
                           xp.data(), h.data(), P.w1.data(), P.w2.data(), offsets.data(), E, M, d, F);
  CHECK(rel_err(dxp2, dxp) < 1e-6);
  auto twice = minus(g.w1, pre.w1);
  for (auto& v : dw1) v *= 2;
  CHECK(rel_err(twice, dw1) < 1e-5);

  // Offsets that do not span the rows are rejected.
  std::vector<int32_t> short_offsets = {0, 3, 3, 7, 8};
  CHECK_THROWS_AS(expert_ffn_forward<CPU>(h.data(), y.data(), xp.data(), P.w1.data(), P.b1.data(), P.w2.data(),
                                          P.b2.data(), short_offsets.data(), E, M, d, F),
                  Error);
}

// ---- The whole MoE layer: permuted path vs a plain loop over experts -------------------------------------------
//
// Layer (per token x_n, d):  logits = W_r x,  noise_logits = W_n x,  router → (idx, gate);
//   y_n = Σ_j gate_j FFN_{idx_j}(x_n) + (1/S) Σ_s SharedFFN_s(x_n);   loss = dy · y + daux · aux.
namespace {

struct LayerShape {
  int N, d, F, E, k, S;
};

struct LayerParams {
  std::vector<float> wr, wn;   // (E, d) router and noise projections
  FfnParams routed, shared;    // (E, ...) and (S, ...)
};

struct LayerGrads {
  std::vector<float> y, dx, dlogits, dnoise_logits;
  FfnParams routed, shared;
  float aux = 0;
};

FfnParams zero_ffn(int E, int d, int F) {
  return {std::vector<float>(E * F * d, 0.0f), std::vector<float>(E * F, 0.0f), std::vector<float>(E * d * F, 0.0f),
          std::vector<float>(E * d, 0.0f)};
}

// out (N, E) = x (N, d) · wᵀ, in double: shared by both paths (it is a plain linear layer, not under test).
std::vector<float> project(const std::vector<float>& x, const std::vector<float>& w, int N, int d, int E) {
  std::vector<float> out(N * E);
  for (int n = 0; n < N; ++n)
    for (int e = 0; e < E; ++e) {
      double s = 0;
      for (int c = 0; c < d; ++c) s += static_cast<double>(x[n * d + c]) * w[e * d + c];
      out[n * E + e] = static_cast<float>(s);
    }
  return out;
}

// dx (N, d) += dout (N, E) · w (E, d), in double.
void project_backward_dx(std::vector<float>& dx, const std::vector<float>& dout, const std::vector<float>& w, int N,
                         int d, int E) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < d; ++c) {
      double s = 0;
      for (int e = 0; e < E; ++e) s += static_cast<double>(dout[n * E + e]) * w[e * d + c];
      dx[n * d + c] += static_cast<float>(s);
    }
}

// The reference: for each token, for each selected expert, run its FFN and add gate × output; shared experts
// averaged; then the backward by hand, in the same loops. Doubles throughout.
LayerGrads naive_layer(const LayerShape& s, const LayerParams& p, const std::vector<float>& x,
                       const std::vector<float>& dy, float daux, float coef, uint64_t seed, uint64_t site) {
  const int N = s.N, d = s.d, F = s.F, E = s.E, k = s.k, S = s.S;
  LayerGrads g{std::vector<float>(N * d, 0.0f), std::vector<float>(N * d, 0.0f), std::vector<float>(N * E, 0.0f),
               std::vector<float>(N * E, 0.0f), zero_ffn(E, d, F), zero_ffn(S, d, F)};
  auto logits = project(x, p.wr, N, d, E);
  auto noise_logits = project(x, p.wn, N, d, E);
  std::vector<double> probs(N * E);
  std::vector<int> count(E, 0);
  std::vector<std::vector<int>> chosen(N);
  std::vector<std::vector<double>> gates(N);
  for (int n = 0; n < N; ++n) {
    // Noisy logits in float, exactly as the router's formula, so both paths see the same ranking.
    std::vector<float> z(E);
    for (int e = 0; e < E; ++e) {
      float sp = static_cast<float>(softplus_ref(noise_logits[n * E + e]));
      z[e] = logits[n * E + e] + rng::normal(seed, site, static_cast<uint64_t>(n) * E + e) * sp;
    }
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
    chosen[n].assign(order.begin(), order.begin() + k);
    double denom = 0;
    for (int j = 0; j < k; ++j) denom += std::exp(static_cast<double>(z[chosen[n][j]]) - z[chosen[n][0]]);
    for (int j = 0; j < k; ++j) gates[n].push_back(std::exp(static_cast<double>(z[chosen[n][j]]) - z[chosen[n][0]]) / denom);
    for (int j = 0; j < k; ++j) ++count[chosen[n][j]];
    double lmax = *std::max_element(&logits[n * E], &logits[n * E] + E), psum = 0;
    for (int e = 0; e < E; ++e) psum += probs[n * E + e] = std::exp(logits[n * E + e] - lmax);
    for (int e = 0; e < E; ++e) probs[n * E + e] /= psum;
  }

  // One expert on one token, forward and backward: returns out (d); accumulates parameter grads and dx.
  auto expert = [&](const FfnParams& w, FfnParams& dw, int e, int n, const double* dout, std::vector<double>& out) {
    std::vector<double> h(F);
    for (int f = 0; f < F; ++f) {
      double pre = w.b1[e * F + f];
      for (int c = 0; c < d; ++c) pre += static_cast<double>(x[n * d + c]) * w.w1[(e * F + f) * d + c];
      h[f] = std::max(pre, 0.0);
    }
    out.assign(d, 0.0);
    for (int c = 0; c < d; ++c) {
      out[c] = w.b2[e * d + c];
      for (int f = 0; f < F; ++f) out[c] += h[f] * w.w2[(e * d + c) * F + f];
    }
    if (!dout) return;
    for (int c = 0; c < d; ++c) {
      dw.b2[e * d + c] += static_cast<float>(dout[c]);
      for (int f = 0; f < F; ++f) dw.w2[(e * d + c) * F + f] += static_cast<float>(dout[c] * h[f]);
    }
    for (int f = 0; f < F; ++f) {
      if (h[f] <= 0) continue;
      double dh = 0;
      for (int c = 0; c < d; ++c) dh += dout[c] * w.w2[(e * d + c) * F + f];
      dw.b1[e * F + f] += static_cast<float>(dh);
      for (int c = 0; c < d; ++c) {
        dw.w1[(e * F + f) * d + c] += static_cast<float>(dh * x[n * d + c]);
        g.dx[n * d + c] += static_cast<float>(dh * w.w1[(e * F + f) * d + c]);
      }
    }
  };

  double aux = 0;
  std::vector<double> P(E, 0.0), f(E);
  for (int e = 0; e < E; ++e) {
    for (int n = 0; n < N; ++n) P[e] += probs[n * E + e] / N;
    f[e] = static_cast<double>(count[e]) / (N * k);
    aux += coef * E * f[e] * P[e];
  }
  g.aux = static_cast<float>(aux);

  std::vector<double> out, dout(d);
  for (int n = 0; n < N; ++n) {
    std::vector<double> y(d, 0.0), dgate(k);
    for (int j = 0; j < k; ++j) {
      int e = chosen[n][j];
      expert(p.routed, g.routed, e, n, nullptr, out);
      for (int c = 0; c < d; ++c) y[c] += gates[n][j] * out[c];
      dgate[j] = 0;
      for (int c = 0; c < d; ++c) dgate[j] += static_cast<double>(dy[n * d + c]) * out[c];
      for (int c = 0; c < d; ++c) dout[c] = gates[n][j] * dy[n * d + c];
      expert(p.routed, g.routed, e, n, dout.data(), out);
    }
    for (int sh = 0; sh < S; ++sh) {
      for (int c = 0; c < d; ++c) dout[c] = static_cast<double>(dy[n * d + c]) / S;
      expert(p.shared, g.shared, sh, n, dout.data(), out);
      for (int c = 0; c < d; ++c) y[c] += out[c] / S;
    }
    for (int c = 0; c < d; ++c) g.y[n * d + c] = static_cast<float>(y[c]);

    // Router: softmax over the k selected noisy values, then the noise scale's sigmoid.
    double gdg = 0;
    for (int j = 0; j < k; ++j) gdg += gates[n][j] * dgate[j];
    for (int j = 0; j < k; ++j) {
      int e = chosen[n][j];
      double dz = gates[n][j] * (dgate[j] - gdg);
      g.dlogits[n * E + e] = static_cast<float>(dz);
      double sig = 1.0 / (1.0 + std::exp(-static_cast<double>(noise_logits[n * E + e])));
      g.dnoise_logits[n * E + e] =
          static_cast<float>(dz * rng::normal(seed, site, static_cast<uint64_t>(n) * E + e) * sig);
    }
    // Aux loss through the clean softmax: d aux / d probs[n, e] = coef E f_e / N.
    double pg = 0;
    for (int e = 0; e < E; ++e) pg += probs[n * E + e] * daux * coef * E * f[e] / N;
    for (int e = 0; e < E; ++e)
      g.dlogits[n * E + e] += static_cast<float>(probs[n * E + e] * (daux * coef * E * f[e] / N - pg));
  }
  project_backward_dx(g.dx, g.dlogits, p.wr, N, d, E);
  project_backward_dx(g.dx, g.dnoise_logits, p.wn, N, d, E);
  return g;
}

// The engine's path: router → permute → gather → expert_ffn → combine, and the shared experts through the same
// kernels (every token routed to each of the S, k = S, gate 1/S).
LayerGrads permuted_layer(const LayerShape& s, const LayerParams& p, const std::vector<float>& x,
                          const std::vector<float>& dy, float daux, float coef, uint64_t seed, uint64_t site) {
  const int N = s.N, d = s.d, F = s.F, E = s.E, k = s.k, S = s.S;
  LayerGrads g{std::vector<float>(N * d), std::vector<float>(N * d), std::vector<float>(N * E),
               std::vector<float>(N * E), zero_ffn(E, d, F), zero_ffn(S, d, F)};
  auto logits = project(x, p.wr, N, d, E);
  auto noise_logits = project(x, p.wn, N, d, E);
  std::vector<int32_t> idx(N * k);
  std::vector<float> gate(N * k), noisy(N * E), probs(N * E), load(E), importance(E);
  moe_router_forward<CPU>(idx.data(), gate.data(), noisy.data(), probs.data(), logits.data(), noise_logits.data(),
                          N, E, k, seed, site);
  moe_aux_loss_forward<CPU>(&g.aux, load.data(), importance.data(), probs.data(), idx.data(), N, E, k, coef);

  // One routed-or-shared branch: (idx, gate) over `experts` experts with `kk` slots per token.
  // Returns its output (N, d) and adds its dx; fills dgate.
  auto branch = [&](const std::vector<int32_t>& bidx, const std::vector<float>& bgate, int experts, int kk,
                    const FfnParams& w, FfnParams& dw, std::vector<float>& y, std::vector<float>& dgate) {
    const int M = N * kk;
    Permuted perm = permute(bidx, N, experts, kk);
    std::vector<float> xp(M * d), h(M * F), yp(M * d), dyp(M * d), dxp(M * d), dh(M * F), dx(N * d);
    moe_gather<CPU>(xp.data(), x.data(), perm.sorted.data(), N, kk, d);
    expert_ffn_forward<CPU>(h.data(), yp.data(), xp.data(), w.w1.data(), w.b1.data(), w.w2.data(), w.b2.data(),
                            perm.offsets.data(), experts, M, d, F);
    moe_combine<CPU>(y.data(), yp.data(), bgate.data(), perm.slot_row.data(), N, kk, d);
    moe_combine_backward<CPU>(dyp.data(), dgate.data(), dy.data(), yp.data(), bgate.data(), perm.slot_row.data(), N,
                              kk, d);
    expert_ffn_backward<CPU>(dxp.data(), dw.w1.data(), dw.b1.data(), dw.w2.data(), dw.b2.data(), dh.data(),
                             dyp.data(), xp.data(), h.data(), w.w1.data(), w.w2.data(), perm.offsets.data(), experts,
                             M, d, F);
    moe_gather_backward<CPU>(dx.data(), dxp.data(), perm.slot_row.data(), N, kk, d);
    for (int i = 0; i < N * d; ++i) g.dx[i] += dx[i];
  };

  std::vector<float> y_routed(N * d), dgate(N * k);
  branch(idx, gate, E, k, p.routed, g.routed, y_routed, dgate);

  std::vector<int32_t> shared_idx(N * S);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < S; ++j) shared_idx[n * S + j] = j;
  std::vector<float> shared_gate(N * S, 1.0f / S), y_shared(N * d), shared_dgate(N * S);
  branch(shared_idx, shared_gate, S, S, p.shared, g.shared, y_shared, shared_dgate);
  for (int i = 0; i < N * d; ++i) g.y[i] = y_routed[i] + y_shared[i];

  moe_router_backward<CPU>(g.dlogits.data(), g.dnoise_logits.data(), dgate.data(), gate.data(), idx.data(),
                           noise_logits.data(), N, E, k, seed, site);
  std::vector<float> daux_logits(N * E);
  moe_aux_loss_backward<CPU>(daux_logits.data(), daux, probs.data(), load.data(), N, E, coef);
  for (int i = 0; i < N * E; ++i) g.dlogits[i] += daux_logits[i];
  project_backward_dx(g.dx, g.dlogits, p.wr, N, d, E);
  project_backward_dx(g.dx, g.dnoise_logits, p.wn, N, d, E);
  return g;
}

}  // namespace

TEST_CASE("moe layer: permuted path equals a plain loop over experts, forward and every gradient",
          "[kernels][moe]") {
  std::mt19937_64 rng(test_seed());
  INFO("seed " << test_seed());
  // N*k = 40 slots over 4 experts; S = 2 shared experts, averaged.
  const LayerShape s{20, 8, 12, 4, 2, 2};
  LayerParams p{randn(s.E * s.d, rng, 0.5f), randn(s.E * s.d, rng, 0.5f), random_ffn(s.E, s.d, s.F, rng, 0.4f),
                random_ffn(s.S, s.d, s.F, rng, 0.4f)};
  auto x = randn(s.N * s.d, rng);
  auto dy = randn(s.N * s.d, rng);
  const float daux = 2.0f, coef = 0.3f;
  const uint64_t seed = 4242, site = rng::make_site(11, 3, 4);

  LayerGrads ref = naive_layer(s, p, x, dy, daux, coef, seed, site);
  LayerGrads got = permuted_layer(s, p, x, dy, daux, coef, seed, site);
  const double tol = 1e-5;
  CHECK(got.aux == Approx(ref.aux).epsilon(tol));
  CHECK(rel_err(got.y, ref.y) < tol);
  CHECK(rel_err(got.dx, ref.dx) < tol);
  CHECK(rel_err(got.dlogits, ref.dlogits) < tol);
  CHECK(rel_err(got.dnoise_logits, ref.dnoise_logits) < tol);
  for (auto [name, a, b] : {std::tuple{"routed", &got.routed, &ref.routed}, std::tuple{"shared", &got.shared, &ref.shared}}) {
    INFO(name << " experts");
    CHECK(rel_err(a->w1, b->w1) < tol);
    CHECK(rel_err(a->b1, b->b1) < tol);
    CHECK(rel_err(a->w2, b->w2) < tol);
    CHECK(rel_err(a->b2, b->b2) < tol);
  }
  // Router weight gradients follow from dlogits / dnoise_logits: dW_r = dlogitsᵀ x, compared as such.
  auto weight_grad = [&](const std::vector<float>& dl) {
    std::vector<float> dw(s.E * s.d, 0.0f);
    for (int n = 0; n < s.N; ++n)
      for (int e = 0; e < s.E; ++e)
        for (int c = 0; c < s.d; ++c) dw[e * s.d + c] += dl[n * s.E + e] * x[n * s.d + c];
    return dw;
  };
  CHECK(rel_err(weight_grad(got.dlogits), weight_grad(ref.dlogits)) < tol);
  CHECK(rel_err(weight_grad(got.dnoise_logits), weight_grad(ref.dnoise_logits)) < tol);
}

TEST_CASE("moe: the all-experts index sends every token to each expert in order", "[kernels][moe]") {
  std::vector<int32_t> idx(5 * 3, -1);
  dsk::moe_all_experts_index<dsk::Backend::CPU>(idx.data(), 5, 3);
  for (int n = 0; n < 5; ++n)
    for (int j = 0; j < 3; ++j) CHECK(idx[n * 3 + j] == j);
}
