// Attention ops: the latent-KV projection, causal attention and the per-head latent projections of absorbed MLA.
#include "autograd/ops.h"
#include "kernels/attention.h"
#include "kernels/latent.h"
#include "kernels/matmul.h"
#include "kernels/rng.h"

namespace dsk::ops {

Var* latent_projection(Tape& t, Var* x, const Param& w_dkv, const Param& ln_w, const Param& ln_b) {
  const int d = static_cast<int>(w_dkv.value.dim(1)), dc = static_cast<int>(w_dkv.value.dim(0));
  DSK_CHECK(x->value.dim(-1) == d, "latent_projection: input {} does not match weight {}", x->value.shape_str(),
            w_dkv.value.shape_str());
  const int N = static_cast<int>(x->value.numel() / d);
  std::vector<int64_t> dims = x->value.dims();
  dims.back() = dc;
  Var* c = t.new_var(dims, "latent");
  // Saved for backward: the pre-norm latent and the row statistics.
  Var* c_raw = t.new_var(dims, "latent.raw", DType::F32, false);
  Var* mean = t.new_var({N}, "latent.mean", DType::F32, false);
  Var* rstd = t.new_var({N}, "latent.rstd", DType::F32, false);
  t.run([&]<Backend B>() {
    latent_projection_forward<B>(c->value.f32(), c_raw->value.f32(), mean->value.f32(), rstd->value.f32(),
                                 x->value.f32(), w_dkv.value.f32(), ln_w.value.f32(), ln_b.value.f32(), N, d, dc);
  });
  t.push("latent_projection", {x}, {c}, [=, &t] {
    const bool want_dx = x->requires_grad;
    Tensor dx = want_dx ? t.grad_target(x) : Tensor{};
    Tensor d_raw = t.arena().alloc(dims);  // dLoss/dc_raw: the weight gradient's input
    t.run([&]<Backend B>() {
      latent_projection_backward<B>(want_dx ? dx.f32() : nullptr, d_raw.f32(), w_dkv.grad.f32(), ln_w.grad.f32(), ln_b.grad.f32(),
                                    t.grad_of(c).f32(), x->value.f32(), w_dkv.value.f32(), c_raw->value.f32(),
                                    ln_w.value.f32(), mean->value.f32(), rstd->value.f32(), N, d, dc);
    });
    if (want_dx) t.grad_commit(x, dx);
  });
  return c;
}

Var* attention(Tape& t, Var* q, Var* k, Var* v, const AttentionShape& shape, float dropout_p, uint32_t layer) {
  AttentionShape s = shape;
  s.kv_capacity = s.kv_len;
  AttentionDropout drop;
  if (t.training && dropout_p > 0.0f) drop = {dropout_p, t.seed, rng::make_site(t.step, layer, 1)};
  Var* out = t.new_var({s.batch, s.q_len, s.heads * s.v_dim}, "attention");  // heads concatenated
  Var* lse = t.new_var({s.batch, s.heads, s.q_len}, "attention.lse", DType::F32, false);
  t.run([&]<Backend B>() {
    attention_forward<B>(out->value.f32(), lse->value.f32(), q->value.f32(), k->value.f32(), v->value.f32(), nullptr,
                         s, drop);
  });
  t.push("attention", {q, k, v}, {out}, [=, &t] {
    Tensor dq = t.grad_target(q);
    Tensor dk = t.grad_target(k);
    // With k == v (the shared latent) the second target is scratch and grad_commit adds it.
    Tensor dv = (k == v) ? t.arena().alloc(v->value.dims()) : t.grad_target(v);
    t.run([&]<Backend B>() {
      attention_backward<B>(dq.f32(), dk.f32(), dv.f32(), t.grad_of(out).f32(), q->value.f32(), k->value.f32(),
                            v->value.f32(), out->value.f32(), lse->value.f32(), s, drop);
    });
    t.grad_commit(q, dq);
    t.grad_commit(k, dk);
    t.grad_commit(v, dv);
  });
  return out;
}

Var* head_project(Tape& t, Var* x, const Param& w, int heads, bool to_latent) {
  // w (H*hd, dc); block h is rows [h*hd, (h+1)*hd): a (hd, dc) matrix at offset h*hd*dc.
  const int hd = static_cast<int>(w.value.dim(0)) / heads, dc = static_cast<int>(w.value.dim(1));
  const int in_w = to_latent ? hd : dc, out_w = to_latent ? dc : hd;
  DSK_CHECK(x->value.numel() % (static_cast<int64_t>(heads) * in_w) == 0,
            "head_project: input {} does not match weight {}", x->value.shape_str(), w.value.shape_str());
  const int N = static_cast<int>(x->value.numel() / (static_cast<int64_t>(heads) * in_w));
  const long long ws = static_cast<long long>(hd) * dc;
  const int ld_in = heads * in_w, ld_out = heads * out_w;
  Var* out = t.new_var({N, heads * out_w}, to_latent ? "q_latent" : "o_heads");  // heads concatenated
  // Batched over heads: for head h, rows are tokens (stride H*width), columns the head's slice.
  t.run([&]<Backend B>() {
    // to_latent: Y_h (N, dc) = X_h (N, hd) · W_h (hd, dc);  from_latent: Y_h (N, hd) = X_h (N, dc) · W_hᵀ
    gemm<B>(false, !to_latent, N, out_w, in_w, 1.0f, x->value.f32(), ld_in, in_w, w.value.f32(), dc, ws, 0.0f,
            out->value.f32(), ld_out, out_w, heads);
  });
  t.push("head_project", {x}, {out}, [=, &t] {
    Tensor dx = t.grad_target(x);
    const float* dy = t.grad_of(out).f32();
    t.run([&]<Backend B>() {
      if (to_latent) {
        // dX_h = dY_h · W_hᵀ ;  dW_h += X_hᵀ · dY_h
        gemm<B>(false, true, N, hd, dc, 1.0f, dy, ld_out, dc, w.value.f32(), dc, ws, 0.0f, dx.f32(), ld_in, hd, heads);
        gemm<B>(true, false, hd, dc, N, 1.0f, x->value.f32(), ld_in, hd, dy, ld_out, dc, 1.0f, w.grad.f32(), dc, ws,
                heads);
      } else {
        // Y_h = X_h · W_hᵀ:  dX_h = dY_h · W_h ;  dW_h += dY_hᵀ · X_h
        gemm<B>(false, false, N, dc, hd, 1.0f, dy, ld_out, hd, w.value.f32(), dc, ws, 0.0f, dx.f32(), ld_in, dc, heads);
        gemm<B>(true, false, hd, dc, N, 1.0f, dy, ld_out, hd, x->value.f32(), ld_in, dc, 1.0f, w.grad.f32(), dc, ws,
                heads);
      }
    });
    t.grad_commit(x, dx);
  });
  return out;
}

}  // namespace dsk::ops
