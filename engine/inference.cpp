// The inference engine (see inference.h): prefill and cached decode by direct kernel calls.
#include "engine/inference.h"

#include "kernels/attention.h"
#include "kernels/device.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/moe.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

namespace dsk {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

template <class F>
void InferenceSession::run(F&& f) {
  if (!work_.is_counting()) dispatch(device_, std::forward<F>(f));
}

void InferenceSession::upload(void* dst, const void* src, size_t bytes) {
  if (work_.is_counting() || bytes == 0) return;
  if (device_ == Backend::CPU)
    std::memcpy(dst, src, bytes);
  else
    cuda::copy_to_device(dst, src, bytes);
}

void InferenceSession::copy(void* dst, const void* src, size_t bytes) {
  if (work_.is_counting() || bytes == 0) return;
  if (device_ == Backend::CPU)
    std::memcpy(dst, src, bytes);
  else
    cuda::copy_device(dst, src, bytes);
}

InferenceSession::InferenceSession(const Model& model, DecodeMode mode, int max_batch)
    : model_(model),
      config_(model.config()),
      mode_(mode),
      device_(model.device()),
      max_batch_(max_batch),
      cache_(model.config(), mode, max_batch, model.config().context_length, model.device()) {
  DSK_CHECK(max_batch > 0, "InferenceSession: max_batch must be positive, got {}", max_batch);
  tok_emb_ = model.tok_emb().value.f32();
  pos_emb_ = model.pos_emb().value.f32();
  final_w_ = model.final_norm_weight().value.f32();
  final_b_ = model.final_norm_bias().value.f32();
  // Plan the scratch by running the largest chunk (a full-context prefill of every row) on a counting
  // workspace: the same code measures what it allocates, kernels switched off.
  work_ = Arena::counting("inference.plan");
  const int B = max_batch, T = config_.context_length;
  const std::vector<int32_t> zeros(static_cast<size_t>(B) * T, 0);
  batch_ = B;
  forward_chunk(zeros, zeros, B, T, 0);
  const size_t need = work_.peak();
  work_ = Arena(device_, need, "inference workspace");
  batch_ = 0;
}

const std::vector<float>& InferenceSession::prefill(const std::vector<std::vector<int32_t>>& prompts) {
  const int B = static_cast<int>(prompts.size());
  DSK_CHECK(B >= 1 && B <= max_batch_, "prefill: {} prompts for a session of at most {} rows", B, max_batch_);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> rows(B);
  for (int b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    DSK_CHECK(!p.empty(), "prefill: prompt {} is empty (give at least one token, e.g. <|endoftext|>)", b);
    for (int32_t t : p)
      DSK_CHECK(t >= 0 && t < config_.vocab_size, "prefill: token {} is outside the vocabulary [0, {})", t,
                config_.vocab_size);
    const size_t keep = std::min(p.size(), static_cast<size_t>(config_.context_length));
    rows[b].assign(p.end() - static_cast<std::ptrdiff_t>(keep), p.end());
    stats.prefill_tokens += static_cast<int64_t>(keep);
  }
  prefill_rows(rows);
  last_slid_ = false;
  stats.prefill_s += seconds_since(t0);
  return logits_;
}

void InferenceSession::prefill_rows(const std::vector<std::vector<int32_t>>& rows) {
  const int B = static_cast<int>(rows.size());
  int T = 0;
  for (const auto& r : rows) T = std::max(T, static_cast<int>(r.size()));
  batch_ = B;
  pad_.assign(B, 0);
  history_ = rows;
  // Left padding: row b's tokens occupy slots [pad_b, T); padding slots hold token 0 at position 0 and are
  // never attended (kv_start) — their outputs are computed and ignored.
  std::vector<int32_t> tokens(static_cast<size_t>(B) * T, 0), positions(static_cast<size_t>(B) * T, 0);
  for (int b = 0; b < B; ++b) {
    pad_[b] = T - static_cast<int>(rows[b].size());
    for (int t = pad_[b]; t < T; ++t) {
      tokens[static_cast<size_t>(b) * T + t] = rows[b][t - pad_[b]];
      positions[static_cast<size_t>(b) * T + t] = t - pad_[b];
    }
  }
  forward_chunk(tokens, positions, B, T, 0);
  cached_ = T;
}

const std::vector<float>& InferenceSession::decode(const std::vector<int32_t>& next) {
  DSK_CHECK(batch_ > 0, "decode: call prefill first");
  DSK_CHECK(static_cast<int>(next.size()) == batch_, "decode: {} tokens for a batch of {} rows", next.size(), batch_);
  for (int32_t t : next)
    DSK_CHECK(t >= 0 && t < config_.vocab_size, "decode: token {} is outside the vocabulary [0, {})", t,
              config_.vocab_size);
  const auto t0 = std::chrono::steady_clock::now();
  const int ctx = config_.context_length;
  for (int b = 0; b < batch_; ++b) history_[b].push_back(next[b]);
  if (cached_ < ctx) {
    // The new token goes into slot cached_; row b's position is its count of real tokens before it.
    std::vector<int32_t> positions(batch_);
    for (int b = 0; b < batch_; ++b) positions[b] = cached_ - pad_[b];
    forward_chunk(next, positions, batch_, 1, cached_);
    ++cached_;
    last_slid_ = false;
  } else {
    // Slot `ctx` does not exist (no position embedding for it): slide every row's window to its last ctx tokens
    // (rows that are shorter keep all of theirs) and rebuild the cache.
    const auto s0 = std::chrono::steady_clock::now();
    std::vector<std::vector<int32_t>> rows(batch_);
    for (int b = 0; b < batch_; ++b) {
      const auto& h = history_[b];
      const size_t keep = std::min(h.size(), static_cast<size_t>(ctx));
      rows[b].assign(h.end() - static_cast<std::ptrdiff_t>(keep), h.end());
    }
    if (log && stats.slides == 0)  // once: from here on every step slides (the stats line counts them)
      log(fmt::format("context window full ({} tokens): sliding it, re-prefilling the last {} tokens of each row "
                      "every step from now on",
                      ctx, ctx));
    prefill_rows(rows);
    ++stats.slides;
    stats.slide_s += seconds_since(s0);
    last_slid_ = true;
  }
  ++stats.decode_steps;
  stats.decode_tokens += batch_;
  stats.decode_s += seconds_since(t0);
  return logits_;
}

void InferenceSession::forward_chunk(const std::vector<int32_t>& tokens_host, const std::vector<int32_t>& pos_host,
                                     int B, int T, int start) {
  const ModelConfig& c = config_;
  const int d = c.emb_dim, N = B * T, V = c.vocab_size;
  work_.reset();
  Tensor tokens = work_.alloc({N}, DType::I32), positions = work_.alloc({N}, DType::I32);
  Tensor kv_start = work_.alloc({B}, DType::I32);
  upload(tokens.data, tokens_host.data(), static_cast<size_t>(N) * sizeof(int32_t));
  upload(positions.data, pos_host.data(), static_cast<size_t>(N) * sizeof(int32_t));
  std::vector<int32_t> starts(pad_.begin(), pad_.end());
  starts.resize(B, 0);
  upload(kv_start.data, starts.data(), static_cast<size_t>(B) * sizeof(int32_t));

  Tensor x = work_.alloc({N, d});  // (B, T, d) residual stream
  run([&]<Backend Bk>() {
    embedding_forward<Bk>(x.f32(), tokens.i32(), positions.i32(), tok_emb_, pos_emb_, B, T, d);
  });
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = model_.layer(l);
    const size_t mark = work_.mark();
    Tensor h = work_.alloc({N, d}), y = work_.alloc({N, d});
    Tensor mean = work_.alloc({N}), rstd = work_.alloc({N});
    // x += MLA(LN1(x))
    run([&]<Backend Bk>() { layernorm_forward<Bk>(h.f32(), mean.f32(), rstd.f32(), x.f32(), L.norm1_w.value.f32(), L.norm1_b.value.f32(), N, d); });
    attention(y.f32(), h.f32(), L, l, kv_start.i32(), B, T, start);
    run([&]<Backend Bk>() { add<Bk>(x.f32(), x.f32(), y.f32(), static_cast<int64_t>(N) * d); });
    // x += MoE(LN2(x))
    run([&]<Backend Bk>() { layernorm_forward<Bk>(h.f32(), mean.f32(), rstd.f32(), x.f32(), L.norm2_w.value.f32(), L.norm2_b.value.f32(), N, d); });
    moe(y.f32(), h.f32(), L, N);
    run([&]<Backend Bk>() { add<Bk>(x.f32(), x.f32(), y.f32(), static_cast<int64_t>(N) * d); });
    work_.release(mark);
  }
  // Only each row's last position is needed: final LN and the tied head on B rows.
  Tensor last = work_.alloc({B, d}), normed = work_.alloc({B, d}), logits = work_.alloc({B, V});
  Tensor mean = work_.alloc({B}), rstd = work_.alloc({B});
  for (int b = 0; b < B; ++b)
    copy(last.f32() + static_cast<size_t>(b) * d, x.f32() + (static_cast<size_t>(b) * T + T - 1) * d,
         d * sizeof(float));
  run([&]<Backend Bk>() {
    layernorm_forward<Bk>(normed.f32(), mean.f32(), rstd.f32(), last.f32(), final_w_, final_b_, B, d);
    linear_forward<Bk>(logits.f32(), normed.f32(), tok_emb_, nullptr, B, d, V);
  });
  if (work_.is_counting()) return;
  logits_.resize(static_cast<size_t>(B) * V);
  if (device_ == Backend::CPU)
    std::memcpy(logits_.data(), logits.f32(), logits_.size() * sizeof(float));
  else
    cuda::copy_to_host(logits_.data(), logits.f32(), logits_.size() * sizeof(float));
}

// y (B*T, d) = W_o · MLA(h) for T new tokens per row in cache slots [start, start + T).
void InferenceSession::attention(float* y, const float* h, const LayerWeights& L, int layer, const int32_t* kv_start,
                                 int B, int T, int start) {
  const ModelConfig& c = config_;
  const int d = c.emb_dim, H = c.n_heads, hd = c.head_dim(), dc = c.kv_latent_dim, N = B * T;
  const int cap = cache_.capacity();
  const size_t mark = work_.mark();
  Tensor q = work_.alloc({N, d}), c_raw = work_.alloc({N, dc}), heads = work_.alloc({N, d});
  Tensor mean = work_.alloc({N}), rstd = work_.alloc({N});
  run([&]<Backend Bk>() {
    linear_forward<Bk>(q.f32(), h, L.w_q.value.f32(), nullptr, N, d, d);        // (B, T, H*hd)
    linear_forward<Bk>(c_raw.f32(), h, L.w_dkv.value.f32(), nullptr, N, d, dc);  // (B, T, dc)
  });
  AttentionShape s;
  s.batch = B;
  s.q_len = T;
  s.kv_len = start + T;
  s.kv_capacity = cap;
  s.heads = H;
  s.scale = 1.0f / std::sqrt(static_cast<float>(hd));  // the head width, never the latent's
  const long long ws = static_cast<long long>(hd) * dc;   // one head's (hd, dc) block of W_uk / W_uv

  if (mode_ == DecodeMode::MHA) {
    // The new tokens' latents are transient; their per-head K and V go into the cache.
    Tensor latent = work_.alloc({N, dc});
    float* kc = cache_.keys(layer);
    float* vc = cache_.values(layer);
    run([&]<Backend Bk>() {
      layernorm_forward<Bk>(latent.f32(), mean.f32(), rstd.f32(), c_raw.f32(), L.latent_w.value.f32(), L.latent_b.value.f32(), N, dc);
      for (int b = 0; b < B; ++b) {
        const size_t slot = static_cast<size_t>(b) * cap + start;
        const float* lat_b = latent.f32() + static_cast<size_t>(b) * T * dc;
        linear_forward<Bk>(kc + slot * d, lat_b, L.w_uk.value.f32(), nullptr, T, dc, d);
        linear_forward<Bk>(vc + slot * d, lat_b, L.w_uv.value.f32(), nullptr, T, dc, d);
      }
    });
    s.kv_heads = H;
    s.qk_dim = s.v_dim = hd;
    run([&]<Backend Bk>() {
      attention_forward<Bk>(heads.f32(), nullptr, q.f32(), kc, vc, kv_start, s, AttentionDropout{});
    });
  } else {
    // The normalized latent of the new tokens goes straight into the cache: the only thing MLA keeps.
    float* lc = cache_.latent(layer);
    run([&]<Backend Bk>() {
      for (int b = 0; b < B; ++b)
        layernorm_forward<Bk>(lc + (static_cast<size_t>(b) * cap + start) * dc, mean.f32(), rstd.f32(),
                              c_raw.f32() + static_cast<size_t>(b) * T * dc, L.latent_w.value.f32(), L.latent_b.value.f32(), T, dc);
    });
    if (mode_ == DecodeMode::Absorbed) {
      Tensor q_lat = work_.alloc({N, H * dc}), o_lat = work_.alloc({N, H * dc});
      run([&]<Backend Bk>() {
        // q_lat,h (N, dc) = q_h (N, hd) · W_uk,h (hd, dc), all heads in one strided-batched GEMM
        gemm<Bk>(false, false, N, dc, hd, 1.0f, q.f32(), d, hd, L.w_uk.value.f32(), dc, ws, 0.0f, q_lat.f32(), H * dc, dc, H);
      });
      s.kv_heads = 1;
      s.qk_dim = s.v_dim = dc;
      run([&]<Backend Bk>() {
        // Every head attends the one shared latent: K = V = c.
        attention_forward<Bk>(o_lat.f32(), nullptr, q_lat.f32(), lc, lc, kv_start, s, AttentionDropout{});
        // o_h (N, hd) = o_lat,h (N, dc) · W_uv,hᵀ
        gemm<Bk>(false, true, N, hd, dc, 1.0f, o_lat.f32(), H * dc, dc, L.w_uv.value.f32(), dc, ws, 0.0f, heads.f32(), d, hd, H);
      });
    } else {
      // Explicit: rebuild every cached position's per-head K and V from the latents, each step.
      const int kv_len = start + T;
      Tensor k = work_.alloc({B, cap, d}), v = work_.alloc({B, cap, d});
      run([&]<Backend Bk>() {
        for (int b = 0; b < B; ++b) {
          const float* lat_b = lc + static_cast<size_t>(b) * cap * dc;
          linear_forward<Bk>(k.f32() + static_cast<size_t>(b) * cap * d, lat_b, L.w_uk.value.f32(), nullptr, kv_len, dc, d);
          linear_forward<Bk>(v.f32() + static_cast<size_t>(b) * cap * d, lat_b, L.w_uv.value.f32(), nullptr, kv_len, dc, d);
        }
      });
      s.kv_heads = H;
      s.qk_dim = s.v_dim = hd;
      run([&]<Backend Bk>() {
        attention_forward<Bk>(heads.f32(), nullptr, q.f32(), k.f32(), v.f32(), kv_start, s, AttentionDropout{});
      });
    }
  }
  run([&]<Backend Bk>() { linear_forward<Bk>(y, heads.f32(), L.w_o.value.f32(), nullptr, N, d, d); });
  work_.release(mark);
}

// y (N, d) = MoE(h) at inference: clean router (no noise), top-k, permute, gather, expert FFN, combine; plus the
// shared experts' average. The same kernels and the same order of sums as Model::forward.
void InferenceSession::moe(float* y, const float* h, const LayerWeights& L, int N) {
  const ModelConfig& c = config_;
  const int d = c.emb_dim, E = c.num_experts, k = c.top_k, F = c.expert_hidden_dim, S = c.num_shared_experts;
  const size_t mark = work_.mark();
  Tensor logits = work_.alloc({N, E}), noisy = work_.alloc({N, E}), probs = work_.alloc({N, E});
  Tensor idx = work_.alloc({N, k}, DType::I32), gate = work_.alloc({N, k});
  Tensor sorted = work_.alloc({N * k}, DType::I32), slot_row = work_.alloc({N * k}, DType::I32);
  Tensor offsets = work_.alloc({E + 1}, DType::I32);
  Tensor xp = work_.alloc({N * k, d}), hidden = work_.alloc({N * k, F}), yp = work_.alloc({N * k, d});
  run([&]<Backend Bk>() {
    linear_forward<Bk>(logits.f32(), h, L.router.value.f32(), nullptr, N, d, E);
    moe_router_forward<Bk>(idx.i32(), gate.f32(), noisy.f32(), probs.f32(), logits.f32(), nullptr, N, E, k, 0, 0);
    moe_permute<Bk>(sorted.i32(), slot_row.i32(), offsets.i32(), idx.i32(), N, E, k);
    moe_gather<Bk>(xp.f32(), h, sorted.i32(), N, k, d);
    expert_ffn_forward<Bk>(hidden.f32(), yp.f32(), xp.f32(), L.e_w1.value.f32(), L.e_b1.value.f32(), L.e_w2.value.f32(), L.e_b2.value.f32(), offsets.i32(), E, N * k,
                           d, F);
    moe_combine<Bk>(y, yp.f32(), gate.f32(), slot_row.i32(), N, k, d);
  });
  if (S > 0) {
    // Every token to each shared expert (expert_idx[n, j] = j), outputs averaged (gate 1/S).
    Tensor sidx = work_.alloc({N, S}, DType::I32), sgate = work_.alloc({N * S});
    Tensor ssorted = work_.alloc({N * S}, DType::I32), sslot = work_.alloc({N * S}, DType::I32);
    Tensor soff = work_.alloc({S + 1}, DType::I32);
    Tensor xs = work_.alloc({N * S, d}), hs = work_.alloc({N * S, F}), ys = work_.alloc({N * S, d});
    Tensor yshared = work_.alloc({N, d});
    std::vector<int32_t> host(static_cast<size_t>(N) * S);
    for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<int32_t>(i % S);
    upload(sidx.data, host.data(), host.size() * sizeof(int32_t));
    run([&]<Backend Bk>() {
      fill<Bk>(sgate.f32(), 1.0f / static_cast<float>(S), static_cast<int64_t>(N) * S);
      moe_permute<Bk>(ssorted.i32(), sslot.i32(), soff.i32(), sidx.i32(), N, S, S);
      moe_gather<Bk>(xs.f32(), h, ssorted.i32(), N, S, d);
      expert_ffn_forward<Bk>(hs.f32(), ys.f32(), xs.f32(), L.s_w1.value.f32(), L.s_b1.value.f32(), L.s_w2.value.f32(), L.s_b2.value.f32(), soff.i32(), S, N * S, d, F);
      moe_combine<Bk>(yshared.f32(), ys.f32(), sgate.f32(), sslot.i32(), N, S, d);
      add<Bk>(y, y, yshared.f32(), static_cast<int64_t>(N) * d);
    });
  }
  work_.release(mark);
}

}  // namespace dsk
