// CPU MoE layer benchmark (bench/moe_bench.h): the permuted path vs PyTorch-style boolean-mask expert loops.
#include "bench/moe_bench.h"
#include "kernels/moe.h"
#include "kernels/rng.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <random>

namespace dsk {

namespace {

constexpr Backend CPU = Backend::CPU;

struct Ffn {
  std::vector<float> w1, b1, w2, b2;  // (E, F, d), (E, F), (E, d, F), (E, d)
  Ffn(int E, int d, int F)
      : w1(static_cast<size_t>(E) * F * d), b1(static_cast<size_t>(E) * F), w2(static_cast<size_t>(E) * d * F),
        b2(static_cast<size_t>(E) * d) {}
  void zero() {
    for (auto* v : {&w1, &b1, &w2, &b2}) std::fill(v->begin(), v->end(), 0.0f);
  }
};

// Inputs and gradient buffers of one layer; both paths read the same inputs.
struct Layer {
  MoeBenchShape s;
  std::vector<float> x, dy, logits, noise_logits;  // (N, d), (N, d), (N, E), (N, E)
  Ffn routed, shared, d_routed, d_shared;
  std::vector<float> y, dx, dlogits, dnoise_logits;
  Layer(const MoeBenchShape& sh)
      : s(sh), routed(sh.E, sh.d, sh.F), shared(sh.S, sh.d, sh.F), d_routed(sh.E, sh.d, sh.F),
        d_shared(sh.S, sh.d, sh.F) {
    std::mt19937_64 rng(7);
    std::normal_distribution<float> init(0.0f, 0.02f), unit(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& v, std::normal_distribution<float>& dist, size_t n) {
      v.resize(n);
      for (auto& a : v) a = dist(rng);
    };
    const size_t Nd = static_cast<size_t>(s.N) * s.d, NE = static_cast<size_t>(s.N) * s.E;
    fill(x, unit, Nd);
    fill(dy, unit, Nd);
    fill(logits, unit, NE);
    fill(noise_logits, unit, NE);
    for (Ffn* f : {&routed, &shared}) {
      fill(f->w1, init, f->w1.size());
      fill(f->w2, init, f->w2.size());
    }
    y.resize(Nd);
    dx.resize(Nd);
    dlogits.resize(NE);
    dnoise_logits.resize(NE);
  }
};

constexpr uint64_t kSeed = 1;
const uint64_t kSite = rng::make_site(0, 0, 4);
constexpr float kCoef = 0.01f;

// Router + aux loss forward, shared by both paths.
struct Routing {
  std::vector<int32_t> idx;
  std::vector<float> gate, noisy, probs, load, importance;
  float aux = 0;
};
Routing route(const Layer& L) {
  const auto& s = L.s;
  Routing r{std::vector<int32_t>(static_cast<size_t>(s.N) * s.k), std::vector<float>(static_cast<size_t>(s.N) * s.k),
            std::vector<float>(static_cast<size_t>(s.N) * s.E), std::vector<float>(static_cast<size_t>(s.N) * s.E),
            std::vector<float>(s.E), std::vector<float>(s.E)};
  moe_router_forward<CPU>(r.idx.data(), r.gate.data(), r.noisy.data(), r.probs.data(), L.logits.data(),
                          L.noise_logits.data(), s.N, s.E, s.k, kSeed, kSite);
  moe_aux_loss_forward<CPU>(&r.aux, r.load.data(), r.importance.data(), r.probs.data(), r.idx.data(), s.N, s.E, s.k,
                            kCoef);
  return r;
}

// Router + aux backward, shared by both paths: dgate (N, k) -> dlogits, dnoise_logits.
void route_backward(Layer& L, const Routing& r, const std::vector<float>& dgate) {
  const auto& s = L.s;
  moe_router_backward<CPU>(L.dlogits.data(), L.dnoise_logits.data(), dgate.data(), r.gate.data(), r.idx.data(),
                           L.noise_logits.data(), s.N, s.E, s.k, kSeed, kSite);
  std::vector<float> daux(L.dlogits.size());
  moe_aux_loss_backward<CPU>(daux.data(), 1.0f, r.probs.data(), r.load.data(), s.N, s.E, kCoef);
  for (size_t i = 0; i < daux.size(); ++i) L.dlogits[i] += daux[i];
}

// (a) The engine's path: permute the slots by expert, gather rows, one grouped FFN over the segments, combine.
// Shared experts go through the same kernels (every token to each of the S, gate 1/S).
void permuted_layer(Layer& L) {
  const auto& s = L.s;
  const size_t Nd = static_cast<size_t>(s.N) * s.d;
  Routing r = route(L);
  std::fill(L.dx.begin(), L.dx.end(), 0.0f);
  std::vector<float> dgate(static_cast<size_t>(s.N) * s.k), branch_y(Nd), branch_dx(Nd);

  auto branch = [&](const std::vector<int32_t>& idx, const std::vector<float>& gate, int experts, int kk,
                    const Ffn& w, Ffn& dw, std::vector<float>& dg) {
    const size_t M = static_cast<size_t>(s.N) * kk;
    std::vector<int32_t> sorted(M), slot_row(M), offsets(experts + 1);
    std::vector<float> xp(M * s.d), h(M * s.F), yp(M * s.d), dyp(M * s.d), dxp(M * s.d), dh(M * s.F);
    moe_permute<CPU>(sorted.data(), slot_row.data(), offsets.data(), idx.data(), s.N, experts, kk);
    moe_gather<CPU>(xp.data(), L.x.data(), sorted.data(), s.N, kk, s.d);
    expert_ffn_forward<CPU>(h.data(), yp.data(), xp.data(), w.w1.data(), w.b1.data(), w.w2.data(), w.b2.data(),
                            offsets.data(), experts, static_cast<int>(M), s.d, s.F);
    moe_combine<CPU>(branch_y.data(), yp.data(), gate.data(), slot_row.data(), s.N, kk, s.d);
    moe_combine_backward<CPU>(dyp.data(), dg.data(), L.dy.data(), yp.data(), gate.data(), slot_row.data(), s.N, kk,
                              s.d);
    expert_ffn_backward<CPU>(dxp.data(), dw.w1.data(), dw.b1.data(), dw.w2.data(), dw.b2.data(), dh.data(),
                             dyp.data(), xp.data(), h.data(), w.w1.data(), w.w2.data(), offsets.data(), experts,
                             static_cast<int>(M), s.d, s.F);
    moe_gather_backward<CPU>(branch_dx.data(), dxp.data(), slot_row.data(), s.N, kk, s.d);
  };

  branch(r.idx, r.gate, s.E, s.k, L.routed, L.d_routed, dgate);
  std::copy(branch_y.begin(), branch_y.end(), L.y.begin());
  for (size_t i = 0; i < Nd; ++i) L.dx[i] += branch_dx[i];
  if (s.S > 0) {
    std::vector<int32_t> shared_idx(static_cast<size_t>(s.N) * s.S);
    for (int n = 0; n < s.N; ++n)
      for (int j = 0; j < s.S; ++j) shared_idx[static_cast<size_t>(n) * s.S + j] = j;
    std::vector<float> shared_gate(shared_idx.size(), 1.0f / s.S), shared_dgate(shared_idx.size());
    branch(shared_idx, shared_gate, s.S, s.S, L.shared, L.d_shared, shared_dgate);
    for (size_t i = 0; i < Nd; ++i) L.y[i] += branch_y[i], L.dx[i] += branch_dx[i];
  }
  route_backward(L, r, dgate);
}

// One expert's FFN on `rows` contiguous rows through the same GEMM kernel (a single segment).
void ffn_forward(float* h, float* out, const float* in, const Ffn& w, int e, int rows, const MoeBenchShape& s) {
  const int32_t offsets[2] = {0, rows};
  expert_ffn_forward<CPU>(h, out, in, w.w1.data() + static_cast<size_t>(e) * s.F * s.d,
                          w.b1.data() + static_cast<size_t>(e) * s.F, w.w2.data() + static_cast<size_t>(e) * s.d * s.F,
                          w.b2.data() + static_cast<size_t>(e) * s.d, offsets, 1, rows, s.d, s.F);
}
void ffn_backward(float* din, Ffn& dw, float* dh, const float* dout, const float* in, const float* h, const Ffn& w,
                  int e, int rows, const MoeBenchShape& s) {
  const int32_t offsets[2] = {0, rows};
  const size_t fd = static_cast<size_t>(e) * s.F * s.d;
  expert_ffn_backward<CPU>(din, dw.w1.data() + fd, dw.b1.data() + static_cast<size_t>(e) * s.F, dw.w2.data() + fd,
                           dw.b2.data() + static_cast<size_t>(e) * s.d, dh, dout, in, h, w.w1.data() + fd,
                           w.w2.data() + fd, offsets, 1, rows, s.d, s.F);
}

// (b) The original project's way: for each expert, mask = (idx == e).any(-1); copy x[mask] in, run the expert,
// y[mask] += gate[mask, e] * out (scatter-add); backward mirrors it. Shared experts run on all tokens, averaged.
void masked_layer(Layer& L) {
  const auto& s = L.s;
  const size_t Nd = static_cast<size_t>(s.N) * s.d;
  Routing r = route(L);
  std::fill(L.y.begin(), L.y.end(), 0.0f);
  std::fill(L.dx.begin(), L.dx.end(), 0.0f);
  std::vector<float> dgate(static_cast<size_t>(s.N) * s.k, 0.0f);

  struct Saved {
    std::vector<int32_t> token;  // tokens routed to this expert (the mask's true rows)
    std::vector<int32_t> slot;   // the slot of the match (for the gate)
    std::vector<float> xe, h, out;
  };
  std::vector<Saved> saved(s.E);
  for (int e = 0; e < s.E; ++e) {
    Saved& sv = saved[e];
    for (int n = 0; n < s.N; ++n)  // the boolean mask, then nonzero()
      for (int j = 0; j < s.k; ++j)
        if (r.idx[static_cast<size_t>(n) * s.k + j] == e) {
          sv.token.push_back(n);
          sv.slot.push_back(n * s.k + j);
        }
    const int m = static_cast<int>(sv.token.size());
    if (m == 0) continue;
    sv.xe.resize(static_cast<size_t>(m) * s.d);
    sv.h.resize(static_cast<size_t>(m) * s.F);
    sv.out.resize(static_cast<size_t>(m) * s.d);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; ++i)
      std::copy_n(&L.x[static_cast<size_t>(sv.token[i]) * s.d], s.d, &sv.xe[static_cast<size_t>(i) * s.d]);
    ffn_forward(sv.h.data(), sv.out.data(), sv.xe.data(), L.routed, e, m, s);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; ++i) {  // tokens are distinct within one expert: no write conflicts
      float g = r.gate[sv.slot[i]];
      for (int c = 0; c < s.d; ++c) L.y[static_cast<size_t>(sv.token[i]) * s.d + c] += g * sv.out[static_cast<size_t>(i) * s.d + c];
    }
  }
  std::vector<float> sh_h(static_cast<size_t>(s.N) * s.F), sh_out(Nd);
  std::vector<std::vector<float>> sh_saved_h(s.S);
  for (int j = 0; j < s.S; ++j) {
    sh_saved_h[j].resize(sh_h.size());
    ffn_forward(sh_saved_h[j].data(), sh_out.data(), L.x.data(), L.shared, j, s.N, s);
    for (size_t i = 0; i < Nd; ++i) L.y[i] += sh_out[i] / s.S;
  }

  // Backward.
  for (int e = 0; e < s.E; ++e) {
    Saved& sv = saved[e];
    const int m = static_cast<int>(sv.token.size());
    if (m == 0) continue;
    std::vector<float> dout(static_cast<size_t>(m) * s.d), dxe(static_cast<size_t>(m) * s.d),
        dh(static_cast<size_t>(m) * s.F);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; ++i) {
      const float* g_out = &L.dy[static_cast<size_t>(sv.token[i]) * s.d];
      float g = r.gate[sv.slot[i]], acc = 0;
      for (int c = 0; c < s.d; ++c) {
        dout[static_cast<size_t>(i) * s.d + c] = g * g_out[c];
        acc += g_out[c] * sv.out[static_cast<size_t>(i) * s.d + c];
      }
      dgate[sv.slot[i]] = acc;
    }
    ffn_backward(dxe.data(), L.d_routed, dh.data(), dout.data(), sv.xe.data(), sv.h.data(), L.routed, e, m, s);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; ++i)
      for (int c = 0; c < s.d; ++c) L.dx[static_cast<size_t>(sv.token[i]) * s.d + c] += dxe[static_cast<size_t>(i) * s.d + c];
  }
  std::vector<float> sh_dout(Nd), sh_dx(Nd), sh_dh(sh_h.size());
  for (size_t i = 0; i < Nd; ++i) sh_dout[i] = L.dy[i] / s.S;
  for (int j = 0; j < s.S; ++j) {
    ffn_backward(sh_dx.data(), L.d_shared, sh_dh.data(), sh_dout.data(), L.x.data(), sh_saved_h[j].data(), L.shared,
                 j, s.N, s);
    for (size_t i = 0; i < Nd; ++i) L.dx[i] += sh_dx[i];
  }
  route_backward(L, r, dgate);
}

double median_ms(const std::function<void()>& f, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::abs(static_cast<double>(b[i])));
  }
  return diff / (ref + 1e-30);
}

}  // namespace

nlohmann::json moe_shape_json(const MoeBenchShape& s) {
  return {{"shape", s.name}, {"N", s.N}, {"d", s.d}, {"F", s.F}, {"E", s.E}, {"k", s.k}, {"shared", s.S}};
}

std::vector<MoeBenchShape> moe_bench_shapes() {
  return {{"small", 1024, 256, 1024, 4, 2, 1}, {"default", 1024, 512, 2048, 8, 2, 1}};
}

nlohmann::json bench_moe_cpu(const std::vector<MoeBenchShape>& shapes, int warmup, int iters) {
  DSK_CHECK(iters > 0 && warmup >= 0, "bench_moe_cpu: iters must be > 0 (got {}), warmup >= 0 (got {})", iters,
            warmup);
  nlohmann::json results = nlohmann::json::array();
  for (const auto& s : shapes) {
    Layer permuted(s), masked(s);
    double permuted_ms = median_ms([&] { permuted_layer(permuted); }, warmup, iters);
    double masked_ms = median_ms([&] { masked_layer(masked); }, warmup, iters);
    // Parameter gradients accumulated over the runs; the outputs and input gradients are comparable directly.
    nlohmann::json r = moe_shape_json(s);
    r["permuted_ms"] = permuted_ms;
    r["masked_loop_ms"] = masked_ms;
    r["masked_over_permuted"] = masked_ms / permuted_ms;
    r["max_rel_diff_y"] = max_rel_diff(permuted.y, masked.y);
    r["max_rel_diff_dx"] = max_rel_diff(permuted.dx, masked.dx);
    r["max_rel_diff_dlogits"] = max_rel_diff(permuted.dlogits, masked.dlogits);
    results.push_back(r);
  }
  return {{"bench", "moe"},
          {"backend", "cpu"},
          {"what", "one MoE layer forward+backward (router, routed + shared experts, combine, aux loss); "
                   "median ms of the permuted/grouped path vs a boolean-mask loop over experts"},
          {"threads", omp_get_max_threads()},
          {"warmup", warmup},
          {"iters", iters},
          {"results", results}};
}

}  // namespace dsk
