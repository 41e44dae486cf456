// CPU attention: forward against a naive reference (all scores materialized, masked, softmaxed, summed), the MLA
// absorption identity, finite-difference gradients, and dropout statistics.
#include "kernels/attention.h"
#include "kernels/rng.h"
#include "tests/testing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

using namespace dsk;
using namespace dsk::testing;

namespace {

int cap_of(const AttentionShape& s) { return s.kv_capacity == 0 ? s.kv_len : s.kv_capacity; }

// The definition, in double: out (B,Tq,H,dv), lse (B,H,Tq). Rows with no visible key give out 0, lse -inf.
void reference_attention(std::vector<float>& out, std::vector<float>& lse, const std::vector<float>& q,
                         const std::vector<float>& k, const std::vector<float>& v, const int32_t* kv_start,
                         const AttentionShape& s, const AttentionDropout& drop) {
  const int B = s.batch, Tq = s.q_len, Tk = s.kv_len, cap = cap_of(s), H = s.heads, Hk = s.kv_heads;
  const int dqk = s.qk_dim, dv = s.v_dim;
  out.assign(static_cast<size_t>(B) * Tq * H * dv, 0.0f);
  lse.assign(static_cast<size_t>(B) * H * Tq, 0.0f);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int hk = Hk == 1 ? 0 : h;
      for (int i = 0; i < Tq; ++i) {
        std::vector<double> score(Tk, 0.0);
        std::vector<bool> visible(Tk, false);
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < Tk; ++j) {
          visible[j] = j <= i + (Tk - Tq) && (!kv_start || j >= kv_start[b]);
          if (!visible[j]) continue;
          double dot = 0;
          for (int c = 0; c < dqk; ++c)
            dot += static_cast<double>(q[((static_cast<size_t>(b) * Tq + i) * H + h) * dqk + c]) *
                   k[((static_cast<size_t>(b) * cap + j) * Hk + hk) * dqk + c];
          score[j] = s.scale * dot;
          mx = std::max(mx, score[j]);
        }
        double sum = 0;
        for (int j = 0; j < Tk; ++j)
          if (visible[j]) sum += std::exp(score[j] - mx);
        lse[(static_cast<size_t>(b) * H + h) * Tq + i] =
            sum > 0 ? static_cast<float>(mx + std::log(sum)) : -std::numeric_limits<float>::infinity();
        for (int j = 0; j < Tk; ++j) {
          if (!visible[j]) continue;
          double p = std::exp(score[j] - mx) / sum;
          if (drop.p > 0) {
            uint64_t index = ((static_cast<uint64_t>(b) * H + h) * Tq + i) * Tk + j;
            p = rng::keep(drop.seed, drop.site, index, drop.p) ? p / (1.0 - drop.p) : 0.0;
          }
          for (int c = 0; c < dv; ++c)
            out[((static_cast<size_t>(b) * Tq + i) * H + h) * dv + c] +=
                static_cast<float>(p * v[((static_cast<size_t>(b) * cap + j) * Hk + hk) * dv + c]);
        }
      }
    }
}

struct Inputs {
  std::vector<float> q, k, v;
};

// Random q/k/v; the key/value slots past kv_len (unused cache capacity) hold NaN so that reading them shows.
Inputs random_inputs(const AttentionShape& s, std::mt19937_64& rng) {
  const int cap = cap_of(s);
  Inputs in;
  in.q = randn(static_cast<size_t>(s.batch) * s.q_len * s.heads * s.qk_dim, rng);
  in.k = randn(static_cast<size_t>(s.batch) * cap * s.kv_heads * s.qk_dim, rng);
  in.v = randn(static_cast<size_t>(s.batch) * cap * s.kv_heads * s.v_dim, rng);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int b = 0; b < s.batch; ++b)
    for (int j = s.kv_len; j < cap; ++j) {
      std::fill_n(in.k.begin() + (static_cast<size_t>(b) * cap + j) * s.kv_heads * s.qk_dim, s.kv_heads * s.qk_dim, nan);
      std::fill_n(in.v.begin() + (static_cast<size_t>(b) * cap + j) * s.kv_heads * s.v_dim, s.kv_heads * s.v_dim, nan);
    }
  return in;
}

void check_forward(const AttentionShape& s, const std::vector<int32_t>& kv_start = {}, AttentionDropout drop = {}) {
  std::mt19937_64 rng(test_seed());
  Inputs in = random_inputs(s, rng);
  const int32_t* start = kv_start.empty() ? nullptr : kv_start.data();
  std::vector<float> out(static_cast<size_t>(s.batch) * s.q_len * s.heads * s.v_dim, 123.0f);
  std::vector<float> lse(static_cast<size_t>(s.batch) * s.heads * s.q_len, 123.0f);
  attention_forward<Backend::CPU>(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), start, s, drop);
  std::vector<float> ref_out, ref_lse;
  reference_attention(ref_out, ref_lse, in.q, in.k, in.v, start, s, drop);
  INFO("seed " << test_seed());
  for (float x : out) REQUIRE(std::isfinite(x));
  CHECK(rel_err(out, ref_out) < 1e-5);
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(ref_lse[i])) {
      CHECK(std::isinf(lse[i]));
    } else {
      CHECK(std::abs(lse[i] - ref_lse[i]) < 1e-5f * (1 + std::abs(ref_lse[i])));
    }
  }
}

AttentionShape shape(int B, int Tq, int Tk, int H, int Hk, int dqk, int dv, float scale = 0.0f) {
  AttentionShape s;
  s.batch = B;
  s.q_len = Tq;
  s.kv_len = Tk;
  s.heads = H;
  s.kv_heads = Hk;
  s.qk_dim = dqk;
  s.v_dim = dv;
  s.scale = scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(dqk));
  return s;
}

}  // namespace

TEST_CASE("attention forward matches the naive reference", "[kernels][attention]") {
  SECTION("Hk = H, dqk = dv") { check_forward(shape(2, 6, 6, 3, 3, 8, 8)); }
  SECTION("Hk = 1 over a latent wider than head_dim, scale 1/sqrt(head_dim)") {
    check_forward(shape(2, 6, 6, 3, 1, 12, 12, 1.0f / std::sqrt(4.0f)));
  }
  SECTION("dqk != dv") {
    check_forward(shape(2, 5, 5, 2, 2, 3, 7));
    check_forward(shape(2, 5, 5, 2, 1, 7, 3));
  }
  SECTION("decode: q_len = 1 of kv_len = 7") {
    check_forward(shape(2, 1, 7, 3, 3, 4, 4));
    check_forward(shape(2, 1, 7, 3, 1, 6, 6, 0.5f));
  }
  SECTION("q_len = 3 of kv_len = 7") { check_forward(shape(2, 3, 7, 2, 1, 5, 5)); }
  SECTION("kv_capacity > kv_len (cache tail is NaN and must not be read)") {
    AttentionShape s = shape(2, 3, 7, 2, 2, 4, 5);
    s.kv_capacity = 11;
    check_forward(s);
    s.kv_heads = 1;
    s.q_len = 1;
    check_forward(s);
  }
  SECTION("kv_start masks left padding, including rows that see nothing") {
    check_forward(shape(3, 6, 6, 2, 2, 4, 4), {0, 2, 5});
    AttentionShape s = shape(3, 2, 7, 2, 1, 6, 6);
    s.kv_capacity = 9;
    check_forward(s, {0, 3, 6});
  }
  SECTION("T = 1") {
    check_forward(shape(2, 1, 1, 2, 2, 4, 4));
    check_forward(shape(2, 1, 1, 2, 1, 4, 3));
  }
  SECTION("T spanning several query blocks") {
    check_forward(shape(1, 70, 70, 2, 2, 4, 4));
    check_forward(shape(1, 45, 77, 2, 1, 4, 6));
  }
  SECTION("with dropout") {
    AttentionDropout drop{0.3f, 42, rng::make_site(3, 1, 1)};
    check_forward(shape(2, 6, 6, 2, 2, 4, 4), {}, drop);
    check_forward(shape(2, 3, 7, 2, 1, 4, 5), {0, 2}, drop);
  }
}

TEST_CASE("attention argument checks", "[kernels][attention]") {
  AttentionShape s = shape(1, 4, 3, 2, 2, 4, 4);  // q_len > kv_len
  std::vector<float> buf(1024);
  REQUIRE_THROWS_AS(attention_forward<Backend::CPU>(buf.data(), nullptr, buf.data(), buf.data(), buf.data(), nullptr,
                                                    s, {}),
                    Error);
  s = shape(1, 4, 4, 4, 2, 4, 4);  // Hk neither 1 nor H
  REQUIRE_THROWS_AS(attention_forward<Backend::CPU>(buf.data(), nullptr, buf.data(), buf.data(), buf.data(), nullptr,
                                                    s, {}),
                    Error);
  s = shape(1, 2, 4, 2, 2, 4, 4);  // backward wants training shapes
  REQUIRE_THROWS_AS(attention_backward<Backend::CPU>(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(),
                                                     buf.data(), buf.data(), buf.data(), buf.data(), s, {}),
                    Error);
}

// MLA absorption at kernel level: attending per-head keys/values k_h = W_uk,h c, v_h = W_uv,h c (Hk = H) equals
// attending the shared latent c with q_lat,h = W_uk,h^T q_h (Hk = 1) and mapping back with o_h = W_uv,h out_lat,h.
TEST_CASE("attention absorption identity", "[kernels][attention]") {
  const int B = 2, T = 9, H = 3, hd = 4, dc = 6;
  std::mt19937_64 rng(test_seed());
  auto q = randn(static_cast<size_t>(B) * T * H * hd, rng);
  auto c = randn(static_cast<size_t>(B) * T * dc, rng);
  auto w_uk = randn(static_cast<size_t>(H) * hd * dc, rng, 0.5f);  // (H*hd, dc): rows h*hd..h*hd+hd-1 are W_uk,h
  auto w_uv = randn(static_cast<size_t>(H) * hd * dc, rng, 0.5f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // Explicit: k, v (B, T, H, hd).
  std::vector<float> k(static_cast<size_t>(B) * T * H * hd), v(k.size());
  for (int bt = 0; bt < B * T; ++bt)
    for (int r = 0; r < H * hd; ++r) {
      double sk = 0, sv = 0;
      for (int e = 0; e < dc; ++e) {
        sk += static_cast<double>(w_uk[static_cast<size_t>(r) * dc + e]) * c[static_cast<size_t>(bt) * dc + e];
        sv += static_cast<double>(w_uv[static_cast<size_t>(r) * dc + e]) * c[static_cast<size_t>(bt) * dc + e];
      }
      k[static_cast<size_t>(bt) * H * hd + r] = static_cast<float>(sk);
      v[static_cast<size_t>(bt) * H * hd + r] = static_cast<float>(sv);
    }
  AttentionShape explicit_shape = shape(B, T, T, H, H, hd, hd, scale);
  std::vector<float> out_explicit(static_cast<size_t>(B) * T * H * hd);
  attention_forward<Backend::CPU>(out_explicit.data(), nullptr, q.data(), k.data(), v.data(), nullptr, explicit_shape,
                                  {});

  // Absorbed: q_lat (B, T, H, dc), attend c (Hk = 1, K = V = c), out_lat (B, T, H, dc) -> o (B, T, H, hd).
  std::vector<float> q_lat(static_cast<size_t>(B) * T * H * dc);
  for (int bt = 0; bt < B * T; ++bt)
    for (int h = 0; h < H; ++h)
      for (int e = 0; e < dc; ++e) {
        double sum = 0;
        for (int d = 0; d < hd; ++d)
          sum += static_cast<double>(w_uk[(static_cast<size_t>(h) * hd + d) * dc + e]) *
                 q[(static_cast<size_t>(bt) * H + h) * hd + d];
        q_lat[(static_cast<size_t>(bt) * H + h) * dc + e] = static_cast<float>(sum);
      }
  AttentionShape absorbed_shape = shape(B, T, T, H, 1, dc, dc, scale);
  std::vector<float> out_lat(static_cast<size_t>(B) * T * H * dc);
  attention_forward<Backend::CPU>(out_lat.data(), nullptr, q_lat.data(), c.data(), c.data(), nullptr, absorbed_shape,
                                  {});
  std::vector<float> out_absorbed(out_explicit.size());
  for (int bt = 0; bt < B * T; ++bt)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < hd; ++d) {
        double sum = 0;
        for (int e = 0; e < dc; ++e)
          sum += static_cast<double>(w_uv[(static_cast<size_t>(h) * hd + d) * dc + e]) *
                 out_lat[(static_cast<size_t>(bt) * H + h) * dc + e];
        out_absorbed[(static_cast<size_t>(bt) * H + h) * hd + d] = static_cast<float>(sum);
      }
  INFO("seed " << test_seed());
  CHECK(rel_err(out_absorbed, out_explicit) < 1e-5);
}

namespace {

// loss = dot(dy, attention(q, k, v)); the analytic gradients against central differences.
// shared_kv: k and v are one buffer (the absorbed latent), so its gradient is dk + dv.
void check_attention_gradients(const AttentionShape& s, const AttentionDropout& drop, bool shared_kv) {
  std::mt19937_64 rng(test_seed());
  Inputs in = random_inputs(s, rng);
  if (shared_kv) {
    REQUIRE(s.qk_dim == s.v_dim);
    in.v = in.k;
  }
  const size_t n_out = static_cast<size_t>(s.batch) * s.q_len * s.heads * s.v_dim;
  const auto dy = randn(n_out, rng);
  std::vector<float> out(n_out), lse(static_cast<size_t>(s.batch) * s.heads * s.q_len);
  auto loss = [&]() {
    const float* v = shared_kv ? in.k.data() : in.v.data();
    attention_forward<Backend::CPU>(out.data(), lse.data(), in.q.data(), in.k.data(), v, nullptr, s, drop);
    return dot(dy, out);
  };
  loss();
  std::vector<float> dq(in.q.size(), 7.0f), dk(in.k.size(), 7.0f), dv(in.v.size(), 7.0f);  // poisoned: set, not +=
  attention_backward<Backend::CPU>(dq.data(), dk.data(), dv.data(), dy.data(), in.q.data(), in.k.data(),
                                   shared_kv ? in.k.data() : in.v.data(), out.data(), lse.data(), s, drop);
  check_gradient(loss, in.q, dq);
  if (shared_kv) {
    std::vector<float> dkv(dk.size());
    for (size_t i = 0; i < dk.size(); ++i) dkv[i] = dk[i] + dv[i];
    check_gradient(loss, in.k, dkv);
  } else {
    check_gradient(loss, in.k, dk);
    check_gradient(loss, in.v, dv);
  }
}

}  // namespace

TEST_CASE("attention backward matches finite differences", "[kernels][attention]") {
  // The dropout mask depends only on (seed, site, element), so with it on the function is still deterministic.
  const float p = GENERATE(0.0f, 0.25f);
  const AttentionDropout d{p, 7, rng::make_site(11, 2, 1)};
  INFO("dropout p = " << d.p);
  SECTION("Hk = H") { check_attention_gradients(shape(2, 6, 6, 2, 2, 4, 4), d, false); }
  SECTION("Hk = H, dqk != dv") { check_attention_gradients(shape(2, 5, 5, 2, 2, 3, 5), d, false); }
  SECTION("Hk = 1, separate k and v") { check_attention_gradients(shape(2, 5, 5, 3, 1, 4, 6, 0.7f), d, false); }
  SECTION("Hk = 1, k = v (shared latent)") { check_attention_gradients(shape(2, 6, 6, 3, 1, 5, 5, 0.5f), d, true); }
  SECTION("several query blocks") { check_attention_gradients(shape(1, 37, 37, 2, 1, 3, 3), d, true); }
}

TEST_CASE("attention Hk = 1 backward is deterministic and equals the per-head sum", "[kernels][attention]") {
  // Replicating the shared K/V per head (Hk = H) must give per-head dk/dv whose head sum is the Hk = 1 gradient.
  const int B = 2, T = 40, H = 3, d = 5;
  AttentionShape shared = shape(B, T, T, H, 1, d, d);
  AttentionShape replicated = shape(B, T, T, H, H, d, d);
  std::mt19937_64 rng(test_seed());
  Inputs in = random_inputs(shared, rng);
  std::vector<float> k_rep(static_cast<size_t>(B) * T * H * d), v_rep(k_rep.size());
  for (int bt = 0; bt < B * T; ++bt)
    for (int h = 0; h < H; ++h)
      for (int c = 0; c < d; ++c) {
        k_rep[(static_cast<size_t>(bt) * H + h) * d + c] = in.k[static_cast<size_t>(bt) * d + c];
        v_rep[(static_cast<size_t>(bt) * H + h) * d + c] = in.v[static_cast<size_t>(bt) * d + c];
      }
  const auto dy = randn(static_cast<size_t>(B) * T * H * d, rng);
  AttentionDropout drop{0.1f, 5, 9};
  std::vector<float> out(dy.size()), lse(static_cast<size_t>(B) * H * T);
  attention_forward<Backend::CPU>(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), nullptr, shared, drop);
  std::vector<float> dq(in.q.size()), dk(in.k.size()), dv(in.v.size());
  attention_backward<Backend::CPU>(dq.data(), dk.data(), dv.data(), dy.data(), in.q.data(), in.k.data(), in.v.data(),
                                   out.data(), lse.data(), shared, drop);
  std::vector<float> dq2(dq.size()), dk2(dk.size()), dv2(dv.size());
  attention_backward<Backend::CPU>(dq2.data(), dk2.data(), dv2.data(), dy.data(), in.q.data(), in.k.data(),
                                   in.v.data(), out.data(), lse.data(), shared, drop);
  CHECK(dq2 == dq);
  CHECK(dk2 == dk);
  CHECK(dv2 == dv);

  std::vector<float> out_rep(dy.size()), lse_rep(lse.size());
  attention_forward<Backend::CPU>(out_rep.data(), lse_rep.data(), in.q.data(), k_rep.data(), v_rep.data(), nullptr,
                                  replicated, drop);
  CHECK(rel_err(out_rep, out) < 1e-6);
  std::vector<float> dq_rep(dq.size()), dk_rep(k_rep.size()), dv_rep(v_rep.size());
  attention_backward<Backend::CPU>(dq_rep.data(), dk_rep.data(), dv_rep.data(), dy.data(), in.q.data(), k_rep.data(),
                                   v_rep.data(), out_rep.data(), lse_rep.data(), replicated, drop);
  std::vector<float> dk_sum(dk.size(), 0.0f), dv_sum(dv.size(), 0.0f);
  for (int bt = 0; bt < B * T; ++bt)
    for (int h = 0; h < H; ++h)
      for (int c = 0; c < d; ++c) {
        dk_sum[static_cast<size_t>(bt) * d + c] += dk_rep[(static_cast<size_t>(bt) * H + h) * d + c];
        dv_sum[static_cast<size_t>(bt) * d + c] += dv_rep[(static_cast<size_t>(bt) * H + h) * d + c];
      }
  INFO("seed " << test_seed());
  CHECK(rel_err(dq_rep, dq) < 1e-5);
  CHECK(rel_err(dk_sum, dk) < 1e-5);
  CHECK(rel_err(dv_sum, dv) < 1e-5);
}

TEST_CASE("attention dropout drops about p of the probabilities, reproducibly", "[kernels][attention]") {
  // With v = one-hot of the key position (Hk = 1, dv = Tk), out row i IS the dropped probability row i.
  const int B = 2, T = 64, H = 2, d = 8;
  AttentionShape s = shape(B, T, T, H, 1, d, T);
  std::mt19937_64 rng(test_seed());
  auto q = randn(static_cast<size_t>(B) * T * H * d, rng);
  auto k = randn(static_cast<size_t>(B) * T * d, rng);
  std::vector<float> v(static_cast<size_t>(B) * T * T, 0.0f);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < T; ++j) v[(static_cast<size_t>(b) * T + j) * T + j] = 1.0f;

  const AttentionDropout drop{0.5f, 1234, rng::make_site(0, 0, 1)};
  std::vector<float> plain(static_cast<size_t>(B) * T * H * T), dropped(plain.size()), again(plain.size());
  attention_forward<Backend::CPU>(plain.data(), nullptr, q.data(), k.data(), v.data(), nullptr, s, {});
  attention_forward<Backend::CPU>(dropped.data(), nullptr, q.data(), k.data(), v.data(), nullptr, s, drop);
  attention_forward<Backend::CPU>(again.data(), nullptr, q.data(), k.data(), v.data(), nullptr, s, drop);
  CHECK(again == dropped);

  long visible = 0, zeroed = 0;
  double worst = 0;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < T; ++i)
      for (int h = 0; h < H; ++h)
        for (int j = 0; j <= i; ++j) {
          const size_t at = ((static_cast<size_t>(b) * T + i) * H + h) * T + j;
          ++visible;
          if (dropped[at] == 0.0f) {
            ++zeroed;
          } else {
            worst = std::max(worst, std::abs(dropped[at] - 2.0 * plain[at]) / (2.0 * plain[at]));  // kept: P/(1-p)
          }
        }
  const double fraction = static_cast<double>(zeroed) / visible;
  INFO("zeroed fraction " << fraction << " of " << visible);
  CHECK(std::abs(fraction - 0.5) < 0.03);  // ~5.5 standard deviations for 4160 draws
  CHECK(worst < 1e-5);

  AttentionDropout other_site = drop;
  other_site.site = rng::make_site(0, 1, 1);
  std::vector<float> elsewhere(plain.size());
  attention_forward<Backend::CPU>(elsewhere.data(), nullptr, q.data(), k.data(), v.data(), nullptr, s, other_site);
  CHECK(elsewhere != dropped);
}
