// [cuda] attention forward/backward vs the CPU specification (kernels/cpu/attention.cpp), for every shape class the
// configs use (explicit: H = 4/8/16, head_dim 64; absorbed: one shared latent of 64/128 with scale 1/sqrt(64)),
// odd sizes, decode (q_len 1 and a few, split over the keys) against the CPU and against a full recompute,
// kv_capacity > kv_len, kv_start left padding, dropout (same mask), different qk and v widths, determinism and
// poisoned outputs.
#ifdef DSK_HAVE_CUDA
#include "kernels/attention.h"
#include "kernels/device.h"
#include "kernels/rng.h"

#include "tests/cuda/cuda_testing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>
#include <string>

using namespace dsk;
using namespace dsk::testing;

namespace {

constexpr double kForwardTol = 1e-4;   // online softmax sums in another order than the CPU's GEMMs
constexpr double kBackwardTol = 2e-4;  // dk/dv sum over every query row (and head) that sees a key

struct Case {
  const char* what;
  int B, Tq, Tk, cap, H, Hk, dqk, dv;
  float scale;
  float p = 0.0f;     // dropout
  bool shared = false;  // k and v are the same buffer (absorbed MLA: K = V = c)
};

AttentionShape shape_of(const Case& c) {
  AttentionShape s;
  s.batch = c.B;
  s.q_len = c.Tq;
  s.kv_len = c.Tk;
  s.kv_capacity = c.cap;
  s.heads = c.H;
  s.kv_heads = c.Hk;
  s.qk_dim = c.dqk;
  s.v_dim = c.dv;
  s.scale = c.scale;
  return s;
}

AttentionDropout dropout_of(const Case& c) { return AttentionDropout{c.p, 1234, rng::make_site(7, 2, 1)}; }

// lse may hold -inf (rows with no visible key): the positions must agree, the finite values be close.
void require_lse_close(std::vector<float> gpu, std::vector<float> cpu, double tol) {
  REQUIRE(gpu.size() == cpu.size());
  for (size_t i = 0; i < gpu.size(); ++i) {
    const bool ginf = std::isinf(gpu[i]) && gpu[i] < 0, cinf = std::isinf(cpu[i]) && cpu[i] < 0;
    INFO("lse element " << i << ": gpu " << gpu[i] << " cpu " << cpu[i]);
    REQUIRE(ginf == cinf);
    if (ginf) gpu[i] = cpu[i] = 0.0f;
  }
  require_close(gpu, cpu, tol, "lse");
}

struct Inputs {
  std::vector<float> q, k, v;
};

Inputs make_inputs(const Case& c, std::mt19937_64& rng) {
  const int cap = c.cap == 0 ? c.Tk : c.cap;
  Inputs in;
  in.q = randn(size_t(c.B) * c.Tq * c.H * c.dqk, rng);
  in.k = randn(size_t(c.B) * cap * c.Hk * c.dqk, rng);
  in.v = c.shared ? in.k : randn(size_t(c.B) * cap * c.Hk * c.dv, rng);
  return in;
}

// Runs the forward on both backends and compares out and lse within tol; returns the GPU output.
std::vector<float> check_forward(const Case& c, const Inputs& in, const std::vector<int32_t>* kv_start = nullptr,
                                 double tol = kForwardTol) {
  INFO(c.what << ": B " << c.B << " Tq " << c.Tq << " Tk " << c.Tk << " cap " << c.cap << " H " << c.H << " Hk "
                << c.Hk << " dqk " << c.dqk << " dv " << c.dv << " p " << c.p << (c.shared ? " shared" : ""));
  const AttentionShape s = shape_of(c);
  const AttentionDropout drop = dropout_of(c);
  std::vector<float> out(size_t(c.B) * c.Tq * c.H * c.dv), lse(size_t(c.B) * c.H * c.Tq);
  attention_forward<Backend::CPU>(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(),
                                  kv_start ? kv_start->data() : nullptr, s, drop);
  DeviceBuffer<float> dq(in.q), dk(in.k), dv(in.v), dout(out.size()), dlse(lse.size());
  DeviceBuffer<int32_t> dstart(kv_start ? *kv_start : std::vector<int32_t>(c.B, 0));
  dout.poison();
  dlse.poison();
  const float* vptr = c.shared ? dk.ptr : dv.ptr;
  attention_forward<Backend::CUDA>(dout.ptr, dlse.ptr, dq.ptr, dk.ptr, vptr, kv_start ? dstart.ptr : nullptr, s, drop);
  auto gout = dout.download();
  require_close(gout, out, tol, "out");
  require_lse_close(dlse.download(), lse, tol);
  return gout;
}

// Runs the backward on both backends (the GPU gets the CPU's out and lse, so only backward is under test), twice on
// the GPU with poisoned outputs: dq, dk, dv close to the CPU within tol and bit-identical across the runs. Returns
// the GPU's dq, dk, dv.
std::vector<std::vector<float>> check_backward(const Case& c, const Inputs& in, std::mt19937_64& rng,
                                               double tol = kBackwardTol) {
  INFO(c.what << ": B " << c.B << " T " << c.Tq << " H " << c.H << " Hk " << c.Hk << " dqk " << c.dqk << " dv "
                << c.dv << " p " << c.p);
  const AttentionShape s = shape_of(c);
  const AttentionDropout drop = dropout_of(c);
  const size_t n_out = size_t(c.B) * c.Tq * c.H * c.dv;
  std::vector<float> out(n_out), lse(size_t(c.B) * c.H * c.Tq);
  auto dout = randn(n_out, rng);
  attention_forward<Backend::CPU>(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), nullptr, s, drop);
  std::vector<float> dq(in.q.size()), dk(in.k.size()), dv(in.v.size());
  attention_backward<Backend::CPU>(dq.data(), dk.data(), dv.data(), dout.data(), in.q.data(), in.k.data(),
                                   in.v.data(), out.data(), lse.data(), s, drop);

  DeviceBuffer<float> g_q(in.q), g_k(in.k), g_v(in.v), g_out(out), g_lse(lse), g_dout(dout);
  DeviceBuffer<float> g_dq(dq.size()), g_dk(dk.size()), g_dv(dv.size());
  std::vector<std::vector<float>> first;
  for (int run = 0; run < 2; ++run) {
    INFO("run " << run);
    g_dq.poison();
    g_dk.poison();
    g_dv.poison();
    attention_backward<Backend::CUDA>(g_dq.ptr, g_dk.ptr, g_dv.ptr, g_dout.ptr, g_q.ptr, g_k.ptr,
                                      c.shared ? g_k.ptr : g_v.ptr, g_out.ptr, g_lse.ptr, s, drop);
    std::vector<std::vector<float>> got = {g_dq.download(), g_dk.download(), g_dv.download()};
    if (c.Tk == 1) {
      // One key: p = 1, so dS = dP - D = 0 and dq, dk are exactly zero; both sides hold rounding noise (~1e-8)
      // that a relative comparison would blow up (the CPU emulator run found this).
      for (int t = 0; t < 2; ++t) {
        REQUIRE(count_unwritten(got[t]) == 0);
        for (float x : got[t]) REQUIRE(std::abs(x) < 1e-5f);
      }
    } else {
      require_close(got[0], dq, tol, "dq");
      require_close(got[1], dk, tol, "dk");
    }
    require_close(got[2], dv, tol, "dv");
    if (run == 0)
      first = got;
    else
      for (int t = 0; t < 3; ++t) REQUIRE(bits_equal(got[t], first[t]));
  }
  return first;
}

// The backward of check_backward again with dQ in a kernel of its own (cuda::BackwardDq::kSeparate; fused into
// the dK/dV kernel is the default at qk widths up to 64): dq, dk, dv close to the CPU as well, and dk, dv bit for
// bit the default's `fused` where both forms split the dK/dV loop alike (same arithmetic; the split count follows
// the blocks per SM, which the fused form's extra shared tile can lower).
void check_separate_dq(const Case& c, const Inputs& in, const std::mt19937_64& dout_rng, double tol,
                       const std::vector<std::vector<float>>& fused) {
  const AttentionShape s = shape_of(c);
  const std::string fused_kernels = attention_backward_kernels_cuda(s, c.shared);
  cuda::ScopedBackwardDq separate(cuda::BackwardDq::kSeparate);
  const std::string separate_kernels = attention_backward_kernels_cuda(s, c.shared);
  INFO("dQ in its own kernel: " << separate_kernels << " (default: " << fused_kernels << ")");
  auto r = dout_rng;
  const auto grads = check_backward(c, in, r, tol);
  const auto splits = [](const std::string& kernels) {
    const size_t at = kernels.find(" (query loop");
    return at == std::string::npos ? std::string() : kernels.substr(at);
  };
  if (splits(fused_kernels) == splits(separate_kernels)) {
    CHECK(bits_equal(grads[1], fused[1]));
    CHECK(bits_equal(grads[2], fused[2]));
  }
}

}  // namespace

TEST_CASE("cuda attention_forward vs CPU: model shapes and odd sizes", "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(71);
  const float s64 = 1.0f / 8.0f;  // 1/sqrt(head_dim 64), also for the absorbed latent
  const Case cases[] = {
      // explicit (per-head K/V), the three configs' head counts at their context lengths
      {"explicit small", 2, 128, 128, 0, 4, 4, 64, 64, s64},
      {"explicit default", 1, 256, 256, 0, 8, 8, 64, 64, s64},
      {"explicit large (context 512)", 1, 512, 512, 0, 16, 16, 64, 64, s64},
      // absorbed (one shared latent, K = V = c)
      {"absorbed small", 2, 128, 128, 0, 4, 1, 64, 64, s64, 0.0f, true},
      {"absorbed default", 1, 256, 256, 0, 8, 1, 128, 128, s64, 0.0f, true},
      {"absorbed large", 1, 512, 512, 0, 16, 1, 128, 128, s64, 0.0f, true},
      {"absorbed, k and v separate buffers", 1, 100, 100, 0, 8, 1, 128, 128, s64},
      // odd sizes: T not a multiple of the tile, one token, odd widths
      {"T = 1", 3, 1, 1, 0, 4, 4, 64, 64, s64},
      {"T = 77", 2, 77, 77, 0, 4, 4, 64, 64, s64},
      {"T = 200 absorbed", 1, 200, 200, 0, 8, 1, 128, 128, s64, 0.0f, true},
      {"odd widths", 2, 70, 70, 0, 3, 3, 37, 21, 0.3f},
      // qk width != v width (decoupled RoPE: latent + rope dims)
      {"qk 192, v 128, shared-head", 1, 90, 90, 0, 4, 1, 192, 128, s64},
      {"qk 96, v 64, per-head", 2, 65, 65, 0, 2, 2, 96, 64, s64},
      {"widths 256", 1, 40, 40, 0, 2, 1, 256, 256, 0.05f, 0.0f, true},
  };
  for (const Case& c : cases) {
    auto in = make_inputs(c, rng);
    check_forward(c, in);
  }
}

TEST_CASE("cuda attention_forward: dropout uses the CPU's mask", "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(72);
  const Case cases[] = {
      {"explicit dropout", 2, 100, 100, 0, 4, 4, 64, 64, 0.125f, 0.1f},
      {"absorbed dropout", 1, 130, 130, 0, 8, 1, 128, 128, 0.125f, 0.1f, true},
      {"decode dropout", 2, 1, 700, 0, 16, 1, 128, 128, 0.125f, 0.3f, true},
  };
  for (const Case& c : cases) {
    auto in = make_inputs(c, rng);
    check_forward(c, in);
  }
}

TEST_CASE("cuda attention_forward: decode vs CPU and vs full recompute", "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(73);
  const Case cases[] = {
      // q_len 1 against a latent cache with spare capacity; short and long (split over the keys)
      {"decode absorbed", 3, 1, 300, 320, 16, 1, 128, 128, 0.125f, 0.0f, true},
      {"decode absorbed long (split-K)", 1, 1, 3000, 4096, 16, 1, 128, 128, 0.125f, 0.0f, true},
      {"decode absorbed small", 2, 1, 129, 130, 4, 1, 64, 64, 0.125f, 0.0f, true},
      {"decode absorbed, default's 8 heads (8-row blocks)", 2, 1, 700, 768, 8, 1, 128, 128, 0.125f, 0.0f, true},
      {"decode explicit", 2, 1, 1000, 1024, 8, 8, 64, 64, 0.125f},
      {"decode a few tokens", 2, 3, 500, 512, 8, 1, 128, 128, 0.125f, 0.0f, true},
      {"prefill chunk q_len < kv_len", 1, 40, 300, 300, 4, 4, 64, 64, 0.125f},
  };
  for (const Case& c : cases) {
    auto in = make_inputs(c, rng);
    auto gout = check_forward(c, in);

    // The same queries as the last rows of a full causal pass over the first kv_len keys (compacted to
    // capacity = kv_len, queries of earlier positions random): the decode rows must match it.
    Case full = c;
    full.Tq = c.Tk;
    full.cap = 0;
    Inputs fin;
    fin.q = randn(size_t(c.B) * c.Tk * c.H * c.dqk, rng);
    const int cap = c.cap == 0 ? c.Tk : c.cap;
    for (int b = 0; b < c.B; ++b)
      for (int i = 0; i < c.Tq; ++i)
        std::copy_n(in.q.begin() + (size_t(b) * c.Tq + i) * c.H * c.dqk, c.H * c.dqk,
                    fin.q.begin() + (size_t(b) * c.Tk + c.Tk - c.Tq + i) * c.H * c.dqk);
    fin.k.resize(size_t(c.B) * c.Tk * c.Hk * c.dqk);
    fin.v.resize(size_t(c.B) * c.Tk * c.Hk * c.dv);
    for (int b = 0; b < c.B; ++b) {
      std::copy_n(in.k.begin() + size_t(b) * cap * c.Hk * c.dqk, size_t(c.Tk) * c.Hk * c.dqk,
                  fin.k.begin() + size_t(b) * c.Tk * c.Hk * c.dqk);
      std::copy_n(in.v.begin() + size_t(b) * cap * c.Hk * c.dv, size_t(c.Tk) * c.Hk * c.dv,
                  fin.v.begin() + size_t(b) * c.Tk * c.Hk * c.dv);
    }
    DeviceBuffer<float> fq(fin.q), fk(fin.k), fv(fin.v), fout(size_t(c.B) * c.Tk * c.H * c.dv);
    fout.poison();
    attention_forward<Backend::CUDA>(fout.ptr, nullptr, fq.ptr, fk.ptr, c.shared ? fk.ptr : fv.ptr, nullptr,
                                     shape_of(full), AttentionDropout{});
    auto all = fout.download();
    std::vector<float> tail;
    for (int b = 0; b < c.B; ++b)
      tail.insert(tail.end(), all.begin() + (size_t(b) * c.Tk + c.Tk - c.Tq) * c.H * c.dv,
                  all.begin() + (size_t(b) * c.Tk + c.Tk) * c.H * c.dv);
    INFO(c.what << " vs full recompute");
    require_close(gout, tail, kForwardTol, "decode rows vs full pass");
  }
}

TEST_CASE("cuda attention_forward: kv_start left padding", "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(74);
  // Batch rows padded by 0, 5, 70 and all 90 keys: with q_len = kv_len the first rows of the padded prompts see no
  // key (out 0, lse -inf); kv_start = kv_len masks every key.
  const std::vector<int32_t> start{0, 5, 70, 90};
  const Case cases[] = {
      {"kv_start prefill explicit", 4, 90, 90, 0, 4, 4, 64, 64, 0.125f},
      {"kv_start prefill absorbed", 4, 90, 90, 96, 8, 1, 128, 128, 0.125f, 0.0f, true},
      {"kv_start decode absorbed", 4, 1, 90, 100, 16, 1, 128, 128, 0.125f, 0.0f, true},
      {"kv_start decode dropout", 4, 2, 90, 90, 8, 8, 64, 64, 0.125f, 0.2f},
  };
  for (const Case& c : cases) {
    auto in = make_inputs(c, rng);
    check_forward(c, in, &start);
  }
}

TEST_CASE("cuda attention_backward vs CPU, deterministic", "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(75);
  const Case cases[] = {
      {"explicit small", 2, 128, 128, 0, 4, 4, 64, 64, 0.125f},
      {"explicit T = 77 dropout", 2, 77, 77, 0, 4, 4, 64, 64, 0.125f, 0.1f},
      {"explicit large heads", 1, 130, 130, 0, 16, 16, 64, 64, 0.125f},
      {"absorbed shared latent", 2, 100, 100, 0, 8, 1, 128, 128, 0.125f, 0.0f, true},
      {"absorbed small dropout", 1, 128, 128, 0, 4, 1, 64, 64, 0.125f, 0.1f, true},
      {"absorbed, k and v separate", 1, 70, 70, 0, 16, 1, 128, 128, 0.125f},
      {"qk 192, v 128", 1, 66, 66, 0, 4, 1, 192, 128, 0.125f},
      {"odd widths, T = 1", 3, 1, 1, 0, 3, 3, 37, 21, 0.3f},
      {"odd widths", 2, 70, 70, 0, 3, 3, 37, 21, 0.3f},
  };
  for (const Case& c : cases) {
    auto in = make_inputs(c, rng);
    check_backward(c, in, rng);
  }
}

// Which kernels run (what the benchmark records report): for a decode of 8 heads the key-split decode block (8
// rows with FFMA, 16 on the tensor cores) or, when cuda::DecodeBlock asks, the forward kernels' own (FFMA 8-row
// blocks, the one-warp register block); 64-row blocks for training; the staged wmma forward at width 256 on a
// shared latent, and the FFMA kernel where the tensor-core block does not fit (width 256 with separate K and V).
TEST_CASE("cuda attention: the kernels each shape runs in each attention_math", "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  const AttentionShape training = shape_of({"explicit", 2, 128, 128, 0, 4, 4, 64, 64, 0.125f});
  const AttentionShape decode = shape_of({"decode", 3, 1, 200, 256, 8, 1, 128, 128, 0.125f, 0.0f, true});
  // One shared latent: 2 key tiles x batch 2 = 4 dK/dV blocks, each looping over 13 query tiles: split (4 on the
  // emulator's 4 SMs, 5 on 132 with the tensor-core kernel).
  const AttentionShape absorbed = shape_of({"absorbed", 2, 100, 100, 0, 8, 1, 128, 128, 0.125f, 0.0f, true});
  {
    cuda::ScopedAttentionMath ffma(cuda::Math::kFfma);
    CHECK(attention_forward_kernel_cuda(training, false) == "ffma, 64-row blocks");
    CHECK(attention_forward_kernel_cuda(decode, true) == "ffma key-split decode (4 warps, 2 stages), 8-row blocks");
    CHECK(attention_backward_kernels_cuda(training, false) == "dq fused, dkv ffma");
    {
      cuda::ScopedBackwardDq separate(cuda::BackwardDq::kSeparate);
      CHECK(attention_backward_kernels_cuda(training, false) == "dq ffma, dkv ffma");
    }
    CHECK_THAT(attention_backward_kernels_cuda(absorbed, true),
               Catch::Matchers::StartsWith("dq ffma, dkv ffma (query loop in "));
    cuda::ScopedDecodeBlock forward_kernel(cuda::DecodeBlock::kForwardKernel);
    CHECK(attention_forward_kernel_cuda(decode, true) == "ffma, 8-row blocks");
    CHECK(attention_forward_kernel_cuda(training, false) == "ffma, 64-row blocks");
  }
  if (!cuda::tf32_tensor_cores()) return;
  cuda::ScopedAttentionMath x3(cuda::Math::kTf32x3);
  CHECK(attention_forward_kernel_cuda(training, false) == "mma 3xtf32, 64-row blocks");
  CHECK(attention_forward_kernel_cuda(decode, true) == "mma 3xtf32 key-split decode (4 warps, 2 stages), 16-row blocks");
  {
    cuda::ScopedDecodeBlock one_warp(cuda::DecodeBlock::kForwardKernel);
    CHECK(attention_forward_kernel_cuda(decode, true) == "mma 3xtf32, 16-row blocks");
    CHECK(attention_forward_kernel_cuda(training, false) == "mma 3xtf32, 64-row blocks");
  }
  CHECK(attention_backward_kernels_cuda(training, false) == "dq fused, dkv mma 3xtf32");
  {
    cuda::ScopedBackwardDq separate(cuda::BackwardDq::kSeparate);
    CHECK(attention_backward_kernels_cuda(training, false) == "dq mma 3xtf32, dkv mma 3xtf32");
  }
  CHECK_THAT(attention_backward_kernels_cuda(absorbed, true),
             Catch::Matchers::StartsWith("dq mma 3xtf32, dkv mma 3xtf32 (query loop in ") &&
                 Catch::Matchers::EndsWith(" splits)"));
  if (dsk::cuda_devices().at(0).shared_per_block >= 227 * 1024) {
    const AttentionShape wide = shape_of({"widths 256", 1, 40, 40, 0, 2, 1, 256, 256, 0.05f});
    CHECK(attention_forward_kernel_cuda(wide, true) == "wmma-staged 3xtf32, 64-row blocks");
    CHECK(attention_forward_kernel_cuda(wide, false) == "ffma, 64-row blocks");
  }
}

// The tensor-core arithmetic of the attention kernels (cuda::attention_math): 3xTF32 at fp32's tolerances, TF32 at
// TF32's. Each must also differ from the FFMA result in some bit, or the setting did not reach the kernels. In
// every arithmetic the backward with dQ fused into the dK/dV kernel (qk widths up to 64) and in its own kernel
// (cuda::BackwardDq).
TEST_CASE("cuda attention on the tensor cores (attention_math 3xtf32 / tf32) vs CPU, deterministic",
          "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  if (!cuda::tf32_tensor_cores()) {
    WARN("this GPU has no TF32 tensor cores (compute capability below 8.0): the tensor-core attention is not run");
    return;
  }
  auto rng = test_rng(78);
  struct NamedMath {
    cuda::Math math;
    double forward_tol, backward_tol;
  };
  const NamedMath maths[] = {{cuda::Math::kTf32x3, kForwardTol, kBackwardTol}, {cuda::Math::kTf32, kTf32Tol, kTf32Tol}};
  const Case cases[] = {
      {"explicit small", 2, 128, 128, 0, 4, 4, 64, 64, 0.125f},
      {"absorbed default, dropout", 1, 130, 130, 0, 8, 1, 128, 128, 0.125f, 0.1f, true},
      {"odd widths, T = 70", 2, 70, 70, 0, 3, 3, 37, 21, 0.3f},
      {"qk 192, v 128, shared head", 1, 66, 66, 0, 4, 1, 192, 128, 0.125f},
      // Few row blocks over many keys: the forward splits the keys (2 splits on the emulator's 4 SMs, more on a GPU).
      {"one head, 300 tokens: split keys", 1, 300, 300, 0, 1, 1, 64, 64, 0.125f},
  };
  for (const Case& c : cases) {
    auto in = make_inputs(c, rng);
    const std::mt19937_64 dout_rng = rng;  // every arithmetic gets the same dout
    rng.discard(1);
    std::vector<float> ffma_out;
    std::vector<std::vector<float>> ffma_grads;
    {
      cuda::ScopedAttentionMath ffma(cuda::Math::kFfma);
      ffma_out = check_forward(c, in);
      auto r = dout_rng;
      ffma_grads = check_backward(c, in, r);
      check_separate_dq(c, in, dout_rng, kBackwardTol, ffma_grads);
    }
    for (const NamedMath& m : maths) {
      INFO("attention_math " << cuda::math_name(m.math));
      cuda::ScopedAttentionMath math(m.math);
      const auto out = check_forward(c, in, nullptr, m.forward_tol);
      auto r = dout_rng;
      const auto grads = check_backward(c, in, r, m.backward_tol);
      CHECK_FALSE(bits_equal(out, ffma_out));
      CHECK_FALSE(bits_equal(grads[0], ffma_grads[0]));
      CHECK_FALSE(bits_equal(grads[1], ffma_grads[1]));
      CHECK_FALSE(bits_equal(grads[2], ffma_grads[2]));
      check_separate_dq(c, in, dout_rng, m.backward_tol, grads);
    }
  }
  // The widest shapes (forward only: a width-256 backward needs more shared memory than the device has, a one-line
  // error): 256 with one shared latent runs the tensor-core forward (the only width-256 instantiation); with
  // separate K and V the tensor-core block does not fit 227 KB once the staging tile is added, so the FFMA kernel
  // runs (bit for bit the FFMA result). Sized for the H100/H200's 227 KB (the emulator's too).
  if (dsk::cuda_devices().at(0).shared_per_block >= 227 * 1024) {
    const Case shared256{"widths 256, shared latent", 1, 40, 40, 0, 2, 1, 256, 256, 0.05f, 0.0f, true};
    const Case separate256{"widths 256, separate K and V", 1, 40, 40, 0, 2, 1, 256, 256, 0.05f};
    auto in_shared = make_inputs(shared256, rng), in_separate = make_inputs(separate256, rng);
    std::vector<float> shared_ffma, separate_ffma;
    {
      cuda::ScopedAttentionMath ffma(cuda::Math::kFfma);
      shared_ffma = check_forward(shared256, in_shared);
      separate_ffma = check_forward(separate256, in_separate);
    }
    cuda::ScopedAttentionMath x3(cuda::Math::kTf32x3);
    CHECK_FALSE(bits_equal(check_forward(shared256, in_shared), shared_ffma));
    CHECK(bits_equal(check_forward(separate256, in_separate), separate_ffma));
  }
}

// Decode and prefill shapes with up to 16 query rows per (batch, kv head), output widths up to 128: the key-split
// decode block and the forward kernels' own small blocks (cuda::DecodeBlock), in every arithmetic, vs the CPU and
// each other, split over the keys when the grid is small. Key counts that leave a split one tile or an odd number,
// or warps of the last tile without a visible key; left-padded batch rows whose splits see no key at all; 1 to 16
// rows (8-row FFMA blocks up to 8).
TEST_CASE("cuda attention decode: the key-split block and the forward kernels' blocks vs CPU, every arithmetic",
          "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(80);
  struct NamedMath {
    cuda::Math math;
    double tol;
  };
  std::vector<NamedMath> maths{{cuda::Math::kFfma, kForwardTol}};
  if (cuda::tf32_tensor_cores())
    maths.insert(maths.end(), {{cuda::Math::kTf32x3, kForwardTol}, {cuda::Math::kTf32, kTf32Tol}});
  struct DecodeCase {
    Case c;
    std::vector<int32_t> start;  // kv_start, or empty
  };
  const DecodeCase cases[] = {
      {{"decode, 8 heads on one latent", 3, 1, 200, 256, 8, 1, 128, 128, 0.125f, 0.0f, true}, {}},
      {{"explicit decode, one row per head", 2, 1, 100, 100, 4, 4, 64, 64, 0.125f}, {}},
      {{"decode, 16 heads on one latent", 2, 1, 300, 320, 16, 1, 128, 128, 0.125f, 0.0f, true}, {}},
      {{"decode, 12 heads, dropout", 1, 1, 150, 150, 12, 1, 64, 64, 0.125f, 0.2f, true}, {}},
      {{"3 new tokens x 4 heads, per-head odd width", 2, 3, 90, 90, 4, 1, 37, 37, 0.3f}, {}},
      {{"long decode, 16 heads: many splits (12 of 4 tiles on the emulator)", 1, 1, 3000, 3072, 16, 1, 128, 128, 0.125f,
        0.0f, true},
       {}},
      {{"decode 17 keys: one tile, two warps without keys", 2, 1, 17, 20, 8, 1, 128, 128, 0.125f, 0.0f, true}, {}},
      // One row whose keys start at 900 of 1000: 2 tiles, the rest of its splits empty (zero-weight partials).
      {{"late kv_start: splits with no tile beside splits with keys", 1, 1, 1000, 1000, 1, 1, 64, 64, 0.125f},
       {900}},
      {{"decode qk 192, v 128 on one latent", 1, 1, 260, 260, 4, 1, 192, 128, 0.125f}, {}},
      {{"left-padded decode, explicit", 4, 1, 400, 400, 2, 2, 64, 64, 0.125f}, {0, 7, 390, 400}},
      {{"left-padded decode, 2 tokens on one latent", 4, 2, 333, 340, 8, 1, 128, 128, 0.125f, 0.0f, true},
       {0, 64, 200, 333}},
  };
  const std::pair<const char*, cuda::DecodeBlock> blocks[] = {
      {"key-split block", cuda::DecodeBlock::kKeySplit}, {"forward kernel's block", cuda::DecodeBlock::kForwardKernel}};
  for (const DecodeCase& d : cases) {
    const Case& c = d.c;
    const std::vector<int32_t>* start = d.start.empty() ? nullptr : &d.start;
    auto in = make_inputs(c, rng);
    std::vector<float> ffma_out;
    for (const NamedMath& m : maths) {
      cuda::ScopedAttentionMath math(m.math);
      std::vector<float> key_split_out;
      for (const auto& [name, block] : blocks) {
        INFO("attention_math " << cuda::math_name(m.math) << ", " << name);
        cuda::ScopedDecodeBlock pinned(block);
        const auto out = check_forward(c, in, start, m.tol);
        if (block == cuda::DecodeBlock::kKeySplit) {
          key_split_out = out;
        } else {
          // The two blocks sum in different orders: some bit differs, or the setting did not reach the launch.
          CHECK_FALSE(bits_equal(out, key_split_out));
        }
        if (m.math == cuda::Math::kFfma && block == cuda::DecodeBlock::kKeySplit)
          ffma_out = out;
        else if (block == cuda::DecodeBlock::kKeySplit)
          CHECK_FALSE(bits_equal(out, ffma_out));  // the arithmetic reached the decode block
      }
    }
  }
}

// Rows whose start is not 16-byte aligned (a tensor at an odd float offset in a larger buffer) load float by float;
// aligned ones with float4 (kernels/cuda/attention_common.cuh rows_aligned16). Both give the CPU's result; a float4
// load from a misaligned row would fault (the emulator checks alignment like the GPU). One tensor at a time is
// shifted, so each one's check is needed.
TEST_CASE("cuda attention: inputs at an offset that breaks 16-byte alignment", "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(79);
  const Case c{"explicit", 2, 70, 70, 0, 4, 4, 64, 64, 0.125f};
  auto in = make_inputs(c, rng);
  const AttentionShape s = shape_of(c);
  const AttentionDropout drop = dropout_of(c);
  const size_t n_out = size_t(c.B) * c.Tq * c.H * c.dv;
  std::vector<float> out(n_out), lse(size_t(c.B) * c.H * c.Tq), dout = randn(n_out, rng);
  attention_forward<Backend::CPU>(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), nullptr, s, drop);
  std::vector<float> dq(in.q.size()), dk(in.k.size()), dv(in.v.size());
  attention_backward<Backend::CPU>(dq.data(), dk.data(), dv.data(), dout.data(), in.q.data(), in.k.data(),
                                   in.v.data(), out.data(), lse.data(), s, drop);

  // Each input in a buffer one float longer, at offset `shift` (0: aligned, 1: not).
  struct Shifted {
    DeviceBuffer<float> buf;
    int shift;
    Shifted(const std::vector<float>& x, int shift_) : buf(x.size() + 1), shift(shift_) {
      std::vector<float> y(x.size() + 1, 0.0f);
      std::copy(x.begin(), x.end(), y.begin() + shift);
      buf.upload(y);
    }
    const float* ptr() const { return buf.ptr + shift; }
  };
  for (const char* which : {"q", "k", "v", "dout"}) {
    INFO(which << " one float into its buffer");
    auto at = [&](const char* name) { return std::string(which) == name ? 1 : 0; };
    Shifted g_q(in.q, at("q")), g_k(in.k, at("k")), g_v(in.v, at("v")), g_dout(dout, at("dout"));
    DeviceBuffer<float> g_out(n_out), g_lse(lse.size()), g_dq(dq.size()), g_dk(dk.size()), g_dv(dv.size());
    g_out.poison();
    g_lse.poison();
    attention_forward<Backend::CUDA>(g_out.ptr, g_lse.ptr, g_q.ptr(), g_k.ptr(), g_v.ptr(), nullptr, s, drop);
    require_close(g_out.download(), out, kForwardTol, "out");
    require_lse_close(g_lse.download(), lse, kForwardTol);
    g_dq.poison();
    g_dk.poison();
    g_dv.poison();
    attention_backward<Backend::CUDA>(g_dq.ptr, g_dk.ptr, g_dv.ptr, g_dout.ptr(), g_q.ptr(), g_k.ptr(), g_v.ptr(),
                                      g_out.ptr, g_lse.ptr, s, drop);
    require_close(g_dq.download(), dq, kBackwardTol, "dq");
    require_close(g_dk.download(), dk, kBackwardTol, "dk");
    require_close(g_dv.download(), dv, kBackwardTol, "dv");
  }
}

TEST_CASE("cuda attention_forward is deterministic (training and split decode)", "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(76);
  const Case cases[] = {
      {"training absorbed dropout", 2, 200, 200, 0, 8, 1, 128, 128, 0.125f, 0.1f, true},
      {"split decode", 1, 1, 5000, 5000, 16, 1, 128, 128, 0.125f, 0.0f, true},
  };
  std::vector<cuda::Math> maths{cuda::Math::kFfma};
  if (cuda::tf32_tensor_cores()) maths.push_back(cuda::Math::kTf32x3);  // the tensor-core decode block
  for (const Case& c : cases) {
    for (cuda::Math math : maths) {
      INFO(c.what << ", attention_math " << cuda::math_name(math));
      cuda::ScopedAttentionMath pinned(math);
      auto in = make_inputs(c, rng);
      const AttentionShape s = shape_of(c);
      DeviceBuffer<float> dq(in.q), dk(in.k), out(size_t(c.B) * c.Tq * c.H * c.dv), lse(size_t(c.B) * c.H * c.Tq);
      std::vector<float> first_out, first_lse;
      for (int run = 0; run < 2; ++run) {
        out.poison();
        lse.poison();
        attention_forward<Backend::CUDA>(out.ptr, lse.ptr, dq.ptr, dk.ptr, dk.ptr, nullptr, s, dropout_of(c));
        auto o = out.download(), l = lse.download();
        REQUIRE(all_written(o));
        REQUIRE(all_written(l));
        if (run == 0) {
          first_out = o;
          first_lse = l;
        } else {
          REQUIRE(bits_equal(o, first_out));
          REQUIRE(bits_equal(l, first_lse));
        }
      }
    }
  }
}

TEST_CASE("cuda attention argument checks", "[cuda][attention]") {
  if (!dsk::testing::gpu_available()) return;
  AttentionShape s;
  s.batch = 1;
  s.q_len = s.kv_len = 4;
  s.heads = 2;
  s.kv_heads = 1;
  s.qk_dim = 300;  // wider than the kernels' 256
  s.v_dim = 64;
  DeviceBuffer<float> buf(size_t(4) * 2 * 300);
  REQUIRE_THROWS_AS(attention_forward<Backend::CUDA>(buf.ptr, nullptr, buf.ptr, buf.ptr, buf.ptr, nullptr, s,
                                                     AttentionDropout{}),
                    dsk::Error);
  s.qk_dim = 64;
  s.kv_heads = 3;  // neither 1 nor heads
  REQUIRE_THROWS_AS(attention_forward<Backend::CUDA>(buf.ptr, nullptr, buf.ptr, buf.ptr, buf.ptr, nullptr, s,
                                                     AttentionDropout{}),
                    dsk::Error);
}
#endif  // DSK_HAVE_CUDA
