// CUDA MoE layer benchmark (bench/moe_bench.h): the grouped path (permute -> gather -> grouped expert FFN ->
// combine, no host synchronisation) against a loop over experts in the original PyTorch project's way (per expert:
// the host reads which tokens go there, gathers them, runs cuBLAS linears), plus the grouped GEMMs' TFLOP/s against
// dense cuBLAS GEMMs of the same shapes and FLOPs. Times are CUDA events on dsk's stream, median of kReps.
#ifdef DSK_HAVE_CUDA
#include "bench/cuda_timing.h"
#include "bench/moe_bench.h"

#include "kernels/cuda/runtime.cuh"
#include "kernels/device.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/moe.h"
#include "kernels/rng.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

namespace dsk {

namespace {

constexpr Backend GPU = Backend::CUDA;
constexpr int kWarmups = 2;
constexpr int kReps = 10;
constexpr uint64_t kSeed = 1;
const uint64_t kSite = rng::make_site(0, 0, 4);
constexpr float kCoef = 0.01f;

// ---- device buffers -------------------------------------------------------------------------------------------

struct DeviceFree {
  void operator()(void* p) const { cuda::free_device(p); }
};
template <class T>
using DevPtr = std::unique_ptr<T, DeviceFree>;

template <class T>
DevPtr<T> alloc(size_t n) {
  return DevPtr<T>(static_cast<T*>(cuda::malloc_device(std::max<size_t>(n, 1) * sizeof(T))));
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// n floats uniform in [-scale, scale), every one drawn (no tile repeated: with a 1 Mi-element tile doubled on the
// device, every expert of the default shape had the same weights (F x d = 1 Mi), which made the router's gradient
// pure rounding noise, and the two paths' dlogits "differed" by 100% on the first GPU run).
DevPtr<float> random_floats(size_t n, float scale, uint64_t salt) {
  std::vector<float> host(n);
  uint64_t s = salt;
  for (auto& v : host) v = scale * static_cast<float>(static_cast<double>(splitmix(s) >> 11) * 0x1.0p-52 - 1.0);
  DevPtr<float> d = alloc<float>(n);
  cuda::copy_to_device(d.get(), host.data(), n * sizeof(float));
  return d;
}

DevPtr<float> zeros(size_t n) {
  DevPtr<float> d = alloc<float>(n);
  cuda::memset_device(d.get(), 0, n * sizeof(float));
  return d;
}

// ---- timing ---------------------------------------------------------------------------------------------------

double median_ms(const std::function<void()>& f) { return cuda_median_ms(kWarmups, kReps, f); }

// ---- one layer's data -----------------------------------------------------------------------------------------

struct Experts {
  DevPtr<float> w1, b1, w2, b2;      // (E, F, d), (E, F), (E, d, F), (E, d)
  DevPtr<float> dw1, db1, dw2, db2;  // gradients, accumulated over the runs
  Experts(int E, int d, int F, uint64_t salt)
      : w1(random_floats(size_t(E) * F * d, 0.035f, salt)), b1(zeros(size_t(E) * F)),
        w2(random_floats(size_t(E) * d * F, 0.035f, salt + 1)), b2(zeros(size_t(E) * d)),
        dw1(zeros(size_t(E) * F * d)), db1(zeros(size_t(E) * F)), dw2(zeros(size_t(E) * d * F)),
        db2(zeros(size_t(E) * d)) {}
};

struct Layer {
  MoeBenchShape s;
  DevPtr<float> x, dy, logits, noise_logits;  // (N, d) (N, d) (N, E) (N, E)
  Experts routed, shared;
  // Router state.
  DevPtr<int32_t> idx;
  DevPtr<float> gate, noisy, probs, aux, load, importance, dgate, dlogits, dnoise_logits, dlogits_aux;
  // Output and input gradient.
  DevPtr<float> y, dx, branch_y, branch_dx;
  // Permuted buffers sized for the larger branch (M = N * max(k, S) rows).
  DevPtr<int32_t> sorted, slot_row, offsets, shared_idx;
  DevPtr<float> shared_gate, shared_dgate, xp, h, yp, dyp, dxp, dh;
  // The expert loop's shared-expert buffers: S activations (N, F), one output (N, d), one hidden gradient (N, F).
  DevPtr<float> loop_shared_h, loop_shared_out, loop_shared_dh;

  explicit Layer(const MoeBenchShape& sh)
      : s(sh), x(random_floats(size_t(sh.N) * sh.d, 1.0f, 11)), dy(random_floats(size_t(sh.N) * sh.d, 1.0f, 12)),
        logits(random_floats(size_t(sh.N) * sh.E, 1.0f, 13)),
        noise_logits(random_floats(size_t(sh.N) * sh.E, 1.0f, 14)), routed(sh.E, sh.d, sh.F, 20),
        shared(std::max(sh.S, 1), sh.d, sh.F, 30) {
    const size_t N = sh.N, NE = N * sh.E, Nk = N * sh.k, Nd = N * sh.d;
    const size_t M = N * std::max(sh.k, sh.S);
    idx = alloc<int32_t>(Nk);
    gate = alloc<float>(Nk), dgate = alloc<float>(Nk);
    noisy = alloc<float>(NE), probs = alloc<float>(NE), dlogits = alloc<float>(NE), dnoise_logits = alloc<float>(NE),
    dlogits_aux = alloc<float>(NE);
    aux = alloc<float>(1), load = alloc<float>(sh.E), importance = alloc<float>(sh.E);
    y = alloc<float>(Nd), dx = alloc<float>(Nd), branch_y = alloc<float>(Nd), branch_dx = alloc<float>(Nd);
    sorted = alloc<int32_t>(M), slot_row = alloc<int32_t>(M), offsets = alloc<int32_t>(std::max(sh.E, sh.S) + 1);
    xp = alloc<float>(M * sh.d), yp = alloc<float>(M * sh.d), dyp = alloc<float>(M * sh.d),
    dxp = alloc<float>(M * sh.d);
    h = alloc<float>(M * sh.F), dh = alloc<float>(M * sh.F);
    loop_shared_h = alloc<float>(N * std::max(sh.S, 1) * sh.F), loop_shared_out = alloc<float>(Nd),
    loop_shared_dh = alloc<float>(N * sh.F);
    // Shared experts: every token to each of the S, gate 1/S (their outputs averaged).
    std::vector<int32_t> sidx(N * std::max(sh.S, 1));
    for (size_t n = 0; n < N; ++n)
      for (int j = 0; j < sh.S; ++j) sidx[n * sh.S + j] = j;
    shared_idx = alloc<int32_t>(sidx.size());
    cuda::copy_to_device(shared_idx.get(), sidx.data(), sidx.size() * sizeof(int32_t));
    std::vector<float> sg(sidx.size(), 1.0f / std::max(sh.S, 1));
    shared_gate = alloc<float>(sg.size());
    cuda::copy_to_device(shared_gate.get(), sg.data(), sg.size() * sizeof(float));
    shared_dgate = alloc<float>(sg.size());
  }

  void route() {
    moe_router_forward<GPU>(idx.get(), gate.get(), noisy.get(), probs.get(), logits.get(), noise_logits.get(), s.N,
                            s.E, s.k, kSeed, kSite);
    moe_aux_loss_forward<GPU>(aux.get(), load.get(), importance.get(), probs.get(), idx.get(), s.N, s.E, s.k, kCoef);
  }
  void route_backward() {
    moe_router_backward<GPU>(dlogits.get(), dnoise_logits.get(), dgate.get(), gate.get(), idx.get(),
                             noise_logits.get(), s.N, s.E, s.k, kSeed, kSite);
    moe_aux_loss_backward<GPU>(dlogits_aux.get(), 1.0f, probs.get(), load.get(), s.N, s.E, kCoef);
    accumulate<GPU>(dlogits.get(), dlogits_aux.get(), int64_t(s.N) * s.E);
  }
};

// ---- (a) the grouped path -------------------------------------------------------------------------------------

// One branch (routed: E experts, k per token; shared: S experts, all per token) forward and backward through the
// permuted kernels; y and dx of the branch land in branch_y / branch_dx. Forward and backward run back to back here
// (the real model saves xp, h, yp per layer in between); the work is the same.
void grouped_branch(Layer& L, const int32_t* idx, const float* gate, float* dgate, int experts, int kk, Experts& w) {
  const auto& s = L.s;
  const int M = s.N * kk;
  moe_permute<GPU>(L.sorted.get(), L.slot_row.get(), L.offsets.get(), idx, s.N, experts, kk);
  moe_gather<GPU>(L.xp.get(), L.x.get(), L.sorted.get(), s.N, kk, s.d);
  expert_ffn_forward<GPU>(L.h.get(), L.yp.get(), L.xp.get(), w.w1.get(), w.b1.get(), w.w2.get(), w.b2.get(),
                          L.offsets.get(), experts, M, s.d, s.F);
  moe_combine<GPU>(L.branch_y.get(), L.yp.get(), gate, L.slot_row.get(), s.N, kk, s.d);
  moe_combine_backward<GPU>(L.dyp.get(), dgate, L.dy.get(), L.yp.get(), gate, L.slot_row.get(), s.N, kk, s.d);
  expert_ffn_backward<GPU>(L.dxp.get(), w.dw1.get(), w.db1.get(), w.dw2.get(), w.db2.get(), L.dh.get(), L.dyp.get(),
                           L.xp.get(), L.h.get(), w.w1.get(), w.w2.get(), L.offsets.get(), experts, M, s.d, s.F);
  moe_gather_backward<GPU>(L.branch_dx.get(), L.dxp.get(), L.slot_row.get(), s.N, kk, s.d);
}

void grouped_layer(Layer& L) {
  const auto& s = L.s;
  const int64_t Nd = int64_t(s.N) * s.d;
  L.route();
  grouped_branch(L, L.idx.get(), L.gate.get(), L.dgate.get(), s.E, s.k, L.routed);
  cuda::copy_device(L.y.get(), L.branch_y.get(), Nd * sizeof(float));
  cuda::copy_device(L.dx.get(), L.branch_dx.get(), Nd * sizeof(float));
  if (s.S > 0) {
    grouped_branch(L, L.shared_idx.get(), L.shared_gate.get(), L.shared_dgate.get(), s.S, s.S, L.shared);
    accumulate<GPU>(L.y.get(), L.branch_y.get(), Nd);
    accumulate<GPU>(L.dx.get(), L.branch_dx.get(), Nd);
  }
  L.route_backward();
}

// ---- (b) the loop over experts ----------------------------------------------------------------------------------

// Per routed expert, as the original: the host learns which tokens chose the expert (PyTorch's mask.any() and
// x[mask] synchronise with the device), gathers those rows, runs Linear -> ReLU -> Linear with cuBLAS (bias in the
// epilogue), and the gate-weighted outputs go back to the tokens (here through one gather-based combine over the
// stacked outputs instead of index_add_, so the result is deterministic). Shared experts run on all tokens and are
// averaged. Backward mirrors it with cuBLAS linears per expert (no host syncs: the index lists are known).
void loop_layer(Layer& L) {
  const auto& s = L.s;
  const size_t N = s.N, Nd = N * s.d;
  L.route();

  std::vector<int32_t> host_idx(N * s.k);
  std::vector<int32_t> rows_of_expert(N * s.k);  // token ids, expert-major (the index lists, stacked)
  std::vector<int32_t> host_slot_row(N * s.k);
  std::vector<int> start(s.E + 1, 0);
  for (int e = 0; e < s.E; ++e) {
    // The host sync of mask.any() / nonzero(): read the routing decisions back.
    cuda::copy_to_host(host_idx.data(), L.idx.get(), host_idx.size() * sizeof(int32_t));
    int m = 0;
    for (size_t n = 0; n < N; ++n)
      for (int j = 0; j < s.k; ++j)
        if (host_idx[n * s.k + j] == e) {
          rows_of_expert[start[e] + m] = static_cast<int32_t>(n);
          host_slot_row[n * s.k + j] = start[e] + m;
          ++m;
        }
    start[e + 1] = start[e] + m;
    if (m == 0) continue;
    int32_t* tokens = L.sorted.get() + start[e];  // this expert's token list on the device
    cuda::copy_to_device(tokens, rows_of_expert.data() + start[e], m * sizeof(int32_t));
    float* xe = L.xp.get() + size_t(start[e]) * s.d;
    float* he = L.h.get() + size_t(start[e]) * s.F;
    float* ye = L.yp.get() + size_t(start[e]) * s.d;
    moe_gather<GPU>(xe, L.x.get(), tokens, m, 1, s.d);  // x[mask]
    linear_forward<GPU>(he, xe, L.routed.w1.get() + size_t(e) * s.F * s.d, L.routed.b1.get() + size_t(e) * s.F, m, s.d,
                        s.F);
    relu_forward<GPU>(he, he, int64_t(m) * s.F);
    linear_forward<GPU>(ye, he, L.routed.w2.get() + size_t(e) * s.d * s.F, L.routed.b2.get() + size_t(e) * s.d, m, s.F,
                        s.d);
  }
  cuda::copy_to_device(L.slot_row.get(), host_slot_row.data(), host_slot_row.size() * sizeof(int32_t));
  moe_combine<GPU>(L.y.get(), L.yp.get(), L.gate.get(), L.slot_row.get(), s.N, s.k, s.d);

  // Shared experts on every token, averaged: y += out_j / S.
  std::vector<float*> shared_h(s.S);
  for (int j = 0; j < s.S; ++j) {
    shared_h[j] = L.loop_shared_h.get() + size_t(j) * N * s.F;
    linear_forward<GPU>(shared_h[j], L.x.get(), L.shared.w1.get() + size_t(j) * s.F * s.d,
                        L.shared.b1.get() + size_t(j) * s.F, s.N, s.d, s.F);
    relu_forward<GPU>(shared_h[j], shared_h[j], int64_t(N) * s.F);
    linear_forward<GPU>(L.loop_shared_out.get(), shared_h[j], L.shared.w2.get() + size_t(j) * s.d * s.F,
                        L.shared.b2.get() + size_t(j) * s.d, s.N, s.F, s.d);
    accumulate<GPU>(L.y.get(), L.loop_shared_out.get(), int64_t(Nd), 1.0f / s.S);
  }

  // Backward: routed experts.
  moe_combine_backward<GPU>(L.dyp.get(), L.dgate.get(), L.dy.get(), L.yp.get(), L.gate.get(), L.slot_row.get(), s.N,
                            s.k, s.d);
  for (int e = 0; e < s.E; ++e) {
    const int m = start[e + 1] - start[e];
    if (m == 0) continue;
    float* xe = L.xp.get() + size_t(start[e]) * s.d;
    float* he = L.h.get() + size_t(start[e]) * s.F;
    float* dhe = L.dh.get() + size_t(start[e]) * s.F;
    float* dye = L.dyp.get() + size_t(start[e]) * s.d;
    float* dxe = L.dxp.get() + size_t(start[e]) * s.d;
    linear_backward<GPU>(dhe, L.routed.dw2.get() + size_t(e) * s.d * s.F, L.routed.db2.get() + size_t(e) * s.d, dye,
                         he, L.routed.w2.get() + size_t(e) * s.d * s.F, m, s.F, s.d);
    relu_backward<GPU>(dhe, dhe, he, int64_t(m) * s.F);
    linear_backward<GPU>(dxe, L.routed.dw1.get() + size_t(e) * s.F * s.d, L.routed.db1.get() + size_t(e) * s.F, dhe,
                         xe, L.routed.w1.get() + size_t(e) * s.F * s.d, m, s.d, s.F);
  }
  moe_gather_backward<GPU>(L.dx.get(), L.dxp.get(), L.slot_row.get(), s.N, s.k, s.d);  // index_add_'s backward

  // Backward: shared experts (dout = dy / S).
  float* sh_dout = L.loop_shared_out.get();  // free again after the forward
  float* sh_dh = L.loop_shared_dh.get();
  float* sh_dx = L.branch_dx.get();
  fill<GPU>(sh_dout, 0.0f, int64_t(Nd));
  accumulate<GPU>(sh_dout, L.dy.get(), int64_t(Nd), 1.0f / std::max(s.S, 1));
  for (int j = 0; j < s.S; ++j) {
    linear_backward<GPU>(sh_dh, L.shared.dw2.get() + size_t(j) * s.d * s.F, L.shared.db2.get() + size_t(j) * s.d,
                         sh_dout, shared_h[j], L.shared.w2.get() + size_t(j) * s.d * s.F, s.N, s.F, s.d);
    relu_backward<GPU>(sh_dh, sh_dh, shared_h[j], int64_t(N) * s.F);
    linear_backward<GPU>(sh_dx, L.shared.dw1.get() + size_t(j) * s.F * s.d, L.shared.db1.get() + size_t(j) * s.F,
                         sh_dh, L.x.get(), L.shared.w1.get() + size_t(j) * s.F * s.d, s.N, s.d, s.F);
    accumulate<GPU>(L.dx.get(), sh_dx, int64_t(Nd));
  }
  L.route_backward();
}

std::vector<float> to_host(const float* dev, size_t n) {
  std::vector<float> host(n);
  cuda::copy_to_host(host.data(), dev, n * sizeof(float));
  return host;
}

double max_rel_diff(const float* a_dev, const float* b_dev, size_t n) {
  const std::vector<float> a = to_host(a_dev, n), b = to_host(b_dev, n);
  double diff = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::abs(static_cast<double>(b[i])));
  }
  return diff / (ref + 1e-30);
}

// Rows (of `cols` values) where a and b differ by more than 1e-4 of b's largest magnitude. A ReLU pre-activation
// within rounding of zero can take the other side in one path (cuBLAS vs the grouped tile): that changes one row of
// dx by one term, which max_rel_diff alone cannot tell from a bug that changes many rows.
int64_t rows_differing(const float* a_dev, const float* b_dev, int64_t rows, int64_t cols) {
  const size_t n = size_t(rows) * cols;
  const std::vector<float> a = to_host(a_dev, n), b = to_host(b_dev, n);
  double ref = 0;
  for (float v : b) ref = std::max(ref, std::abs(static_cast<double>(v)));
  int64_t differing = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (std::abs(static_cast<double>(a[r * cols + c]) - b[r * cols + c]) > 1e-4 * ref) {
        ++differing;
        break;
      }
  return differing;
}

// ---- grouped GEMMs vs dense cuBLAS of the same shapes -----------------------------------------------------------

// The routed experts' FFN alone on the router's real segments, forward (2 GEMMs, 4·M·d·F FLOPs) and backward
// (4 GEMMs, 8·M·d·F), against cuBLAS SGEMMs of the same M x F x d and M x d x F shapes on one weight (dense: what
// the GEMMs would cost if the M rows went to a single expert). Both sides at the current precision: plain fp32, or
// with TF32 on the grouped tensor-core tile against cuBLAS's TF32 GEMMs.
nlohmann::json grouped_vs_dense(Layer& L) {
  const auto& s = L.s;
  const int M = s.N * s.k;
  L.route();
  moe_permute<GPU>(L.sorted.get(), L.slot_row.get(), L.offsets.get(), L.idx.get(), s.N, s.E, s.k);
  moe_gather<GPU>(L.xp.get(), L.x.get(), L.sorted.get(), s.N, s.k, s.d);
  auto& w = L.routed;
  auto time_forward = [&] {
    return median_ms([&] {
      expert_ffn_forward<GPU>(L.h.get(), L.yp.get(), L.xp.get(), w.w1.get(), w.b1.get(), w.w2.get(), w.b2.get(),
                              L.offsets.get(), s.E, M, s.d, s.F);
    });
  };
  auto time_backward = [&] {
    return median_ms([&] {
      expert_ffn_backward<GPU>(L.dxp.get(), w.dw1.get(), w.db1.get(), w.dw2.get(), w.db2.get(), L.dh.get(),
                               L.yp.get(), L.xp.get(), L.h.get(), w.w1.get(), w.w2.get(), L.offsets.get(), s.E, M,
                               s.d, s.F);
    });
  };
  const double fwd_ms = time_forward(), bwd_ms = time_backward();
  // Each tile size forced (the automatic choice above picks one per GEMM by its tile count): the figures that
  // tell whether that choice's threshold is right on this GPU.
  nlohmann::json tiles;
  for (auto [name, tile] : {std::pair{"64x64", cuda::ExpertTile::kSmall}, std::pair{"128x128", cuda::ExpertTile::kBig}}) {
    cuda::ScopedExpertTile forced(tile);
    tiles[name] = {{"forward_ms", time_forward()}, {"backward_ms", time_backward()}};
  }
  // The tensor-core tiles load their operands by cp.async where the widths allow (all the bench shapes); the
  // register-fed tiles they replaced, timed beside them, tell whether that default is right.
  nlohmann::json register_loads;
  if (cuda::running_math(cuda::expert_math(), "expert_math") != cuda::Math::kFfma) {
    cuda::ScopedExpertLoads registers(cuda::ExpertLoads::kRegisters);
    register_loads = {{"forward_ms", time_forward()}, {"backward_ms", time_backward()}};
  }
  // Dense: C (M, F) = xp · w1ᵀ; C (M, d) = h · w2ᵀ;  backward: dh = dy · w2; dx = dh · w1; dw2 = dyᵀ h; dw1 = dhᵀ x.
  const float* w1 = w.w1.get();
  const float* w2 = w.w2.get();
  double dense_fwd_ms = median_ms([&] {
    gemm<GPU>(false, true, M, s.F, s.d, 1.0f, L.xp.get(), s.d, 0, w1, s.d, 0, 0.0f, L.h.get(), s.F, 0);
    gemm<GPU>(false, true, M, s.d, s.F, 1.0f, L.h.get(), s.F, 0, w2, s.F, 0, 0.0f, L.yp.get(), s.d, 0);
  });
  double dense_bwd_ms = median_ms([&] {
    gemm<GPU>(false, false, M, s.F, s.d, 1.0f, L.yp.get(), s.d, 0, w2, s.F, 0, 0.0f, L.dh.get(), s.F, 0);
    gemm<GPU>(false, false, M, s.d, s.F, 1.0f, L.dh.get(), s.F, 0, w1, s.d, 0, 0.0f, L.dxp.get(), s.d, 0);
    gemm<GPU>(true, false, s.d, s.F, M, 1.0f, L.yp.get(), s.d, 0, L.h.get(), s.F, 0, 1.0f, w.dw2.get(), s.F, 0);
    gemm<GPU>(true, false, s.F, s.d, M, 1.0f, L.dh.get(), s.F, 0, L.xp.get(), s.d, 0, 1.0f, w.dw1.get(), s.d, 0);
  });
  const double fwd_flops = 4.0 * M * s.d * s.F, bwd_flops = 8.0 * M * s.d * s.F;
  auto tflops = [](double flops, double ms) { return flops / (ms * 1e9); };
  return {{"rows", M},
          {"forward_ms", fwd_ms},
          {"forward_tflops", tflops(fwd_flops, fwd_ms)},
          {"dense_forward_ms", dense_fwd_ms},
          {"dense_forward_tflops", tflops(fwd_flops, dense_fwd_ms)},
          {"forward_fraction_of_dense", dense_fwd_ms / fwd_ms},
          {"backward_ms", bwd_ms},
          {"backward_tflops", tflops(bwd_flops, bwd_ms)},
          {"dense_backward_ms", dense_bwd_ms},
          {"dense_backward_tflops", tflops(bwd_flops, dense_bwd_ms)},
          {"backward_fraction_of_dense", dense_bwd_ms / bwd_ms},
          {"forced_tiles", tiles},
          {"register_loads", register_loads}};
}

}  // namespace

std::vector<MoeBenchShape> moe_bench_shapes_cuda() {
  // Tokens = one training batch of 8 sequences at each config's context length.
  return {{"small", 8 * 128, 256, 1024, 4, 2, 1},
          {"default", 8 * 256, 512, 2048, 8, 2, 1},
          {"large", 8 * 512, 1024, 4096, 16, 4, 2}};
}

nlohmann::json bench_moe_cuda(const std::vector<MoeBenchShape>& shapes) {
  DSK_CHECK(cuda_unavailable_reason().empty(), "no GPU: {}", cuda_unavailable_reason());
  cuda::ScopedTf32 fp32(false);  // the caller's setting comes back at the end
  nlohmann::json results = nlohmann::json::array();
  for (const auto& s : shapes) {
    DSK_CHECK(s.N > 0 && s.d > 0 && s.F > 0 && s.E > 0 && s.k > 0 && s.k <= s.E && s.S >= 0,
              "bench_moe_cuda: bad shape {}", s.name);
    Layer grouped(s), looped(s);
    double grouped_ms = median_ms([&] { grouped_layer(grouped); });
    double loop_ms = median_ms([&] { loop_layer(looped); });
    nlohmann::json r = moe_shape_json(s);
    r["grouped_ms"] = grouped_ms;
    r["expert_loop_ms"] = loop_ms;
    r["loop_over_grouped"] = loop_ms / grouped_ms;
    // Both paths compute the same function on the same inputs (their parameter gradients accumulate over
    // different run counts, so only outputs and input gradients are compared).
    const size_t Nd = size_t(s.N) * s.d, NE = size_t(s.N) * s.E;
    r["max_rel_diff_y"] = max_rel_diff(grouped.y.get(), looped.y.get(), Nd);
    r["max_rel_diff_dx"] = max_rel_diff(grouped.dx.get(), looped.dx.get(), Nd);
    r["max_rel_diff_dlogits"] = max_rel_diff(grouped.dlogits.get(), looped.dlogits.get(), NE);
    r["dx_rows_differing"] = rows_differing(grouped.dx.get(), looped.dx.get(), s.N, s.d);
    // Each record with its arithmetic pinned (a forced cuda::expert_math would otherwise override the tf32 switch).
    {
      cuda::ScopedExpertMath ffma(cuda::Math::kFfma);
      r["grouped_gemm"] = grouped_vs_dense(grouped);
    }
    if (cuda::tf32_tensor_cores()) {  // compute capability 8.0+
      {
        cuda::ScopedExpertMath tf32(cuda::Math::kTf32);
        cuda::ScopedTf32 dense_tf32(true);  // the dense side: cuBLAS TF32
        r["grouped_gemm_tf32"] = grouped_vs_dense(grouped);
      }
      {
        // Near-fp32 accuracy on the tensor cores, against the same fp32 cuBLAS GEMMs as grouped_gemm.
        cuda::ScopedExpertMath x3(cuda::Math::kTf32x3);
        r["grouped_gemm_3xtf32"] = grouped_vs_dense(grouped);
      }
    }
    results.push_back(r);
  }
  cuda::synchronize();
  auto gpus = cuda_devices();
  return {{"bench", "moe"},
          {"backend", "cuda"},
          {"gpu", gpus.empty() ? "" : gpus[0].name},
          {"what", "one MoE layer forward+backward (router, routed + shared experts, combine, aux loss), fp32: median "
                   "ms of the grouped path (no host sync) vs a loop over experts with a host sync per expert and "
                   "cuBLAS linears; grouped expert GEMMs vs dense cuBLAS SGEMMs of the same shapes, fp32 "
                   "(grouped_gemm) and TF32 (grouped_gemm_tf32: the tensor-core tiles vs cuBLAS TF32), and the grouped GEMMs in "
                   "3xTF32 (near-fp32 accuracy on the tensor cores) vs fp32 cuBLAS (grouped_gemm_3xtf32); "
                   "forced_tiles: the grouped GEMMs with each tile size forced; register_loads (tensor-core "
                   "records): the tiles loading their operands through registers instead of by cp.async"},
          {"warmup", kWarmups},
          {"reps", kReps},
          {"results", results}};
}

}  // namespace dsk
#endif  // DSK_HAVE_CUDA
