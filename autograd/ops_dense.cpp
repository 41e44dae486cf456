// Dense ops: embedding, dropout, layernorm, linear, add.
#include "autograd/ops.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/rng.h"

namespace dsk::ops {

namespace {
// Rows of a (..., C) tensor: the product of all but the last dimension.
int rows_of(const Tensor& x) { return static_cast<int>(x.numel() / x.dim(-1)); }

std::vector<int64_t> with_last(const Tensor& x, int64_t last) {
  std::vector<int64_t> s = x.dims();
  s.back() = last;
  return s;
}
}  // namespace

Var* embedding(Tape& t, Var* tokens, const Param& wte, const Param& wpe) {
  const int B = static_cast<int>(tokens->value.dim(0)), T = static_cast<int>(tokens->value.dim(1));
  const int d = static_cast<int>(wte.value.dim(1)), V = static_cast<int>(wte.value.dim(0));
  DSK_CHECK(T <= wpe.value.dim(0), "sequence of {} tokens exceeds the context length {}", T, wpe.value.dim(0));
  Var* out = t.new_var({B, T, d}, "embedding");
  t.run([&]<Backend Bk>() {
    embedding_forward<Bk>(out->value.f32(), tokens->value.i32(), nullptr, wte.value.f32(), wpe.value.f32(), B, T, d);
  });
  t.push("embedding", {tokens}, {out}, [=, &t] {
    t.run([&]<Backend Bk>() {
      embedding_backward<Bk>(wte.grad.f32(), wpe.grad.f32(), t.grad_of(out).f32(), tokens->value.i32(), nullptr, B,
                             T, d, V);
    });
  });
  return out;
}

Var* dropout(Tape& t, Var* x, float p, uint32_t layer, uint32_t kind) {
  if (!t.training || p <= 0.0f) return x;
  const uint64_t seed = t.seed, site = rng::make_site(t.step, layer, kind);
  const int64_t n = x->value.numel();
  Var* out = t.new_var(x->value.dims(), "dropout");
  t.run([&]<Backend B>() { dropout_forward<B>(out->value.f32(), x->value.f32(), n, p, seed, site); });
  t.push("dropout", {x}, {out}, [=, &t] {
    Tensor dx = t.grad_target(x);
    t.run([&]<Backend B>() { dropout_backward<B>(dx.f32(), t.grad_of(out).f32(), n, p, seed, site); });
    t.grad_commit(x, dx);
  });
  return out;
}

Var* layernorm(Tape& t, Var* x, const Param& w, const Param& b) {
  const int C = static_cast<int>(x->value.dim(-1)), N = rows_of(x->value);
  Var* out = t.new_var(x->value.dims(), "layernorm");
  Var* mean = t.new_var({N}, "layernorm.mean", DType::F32, false);
  Var* rstd = t.new_var({N}, "layernorm.rstd", DType::F32, false);
  t.run([&]<Backend B>() {
    layernorm_forward<B>(out->value.f32(), mean->value.f32(), rstd->value.f32(), x->value.f32(), w.value.f32(),
                         b.value.f32(), N, C);
  });
  t.push("layernorm", {x}, {out}, [=, &t] {
    Tensor dx = t.grad_target(x);
    t.run([&]<Backend B>() {
      layernorm_backward<B>(dx.f32(), w.grad.f32(), b.grad.f32(), t.grad_of(out).f32(), x->value.f32(), w.value.f32(),
                            mean->value.f32(), rstd->value.f32(), N, C);
    });
    t.grad_commit(x, dx);
  });
  return out;
}

Var* linear(Tape& t, Var* x, const Param& w, const Param* b) {
  const int in = static_cast<int>(w.value.dim(1)), out_dim = static_cast<int>(w.value.dim(0));
  DSK_CHECK(x->value.dim(-1) == in, "linear: input {} does not match weight {}", x->value.shape_str(),
            w.value.shape_str());
  const int N = rows_of(x->value);
  Var* out = t.new_var(with_last(x->value, out_dim), "linear");
  const float* bias = b ? b->value.f32() : nullptr;
  t.run([&]<Backend B>() {
    linear_forward<B>(out->value.f32(), x->value.f32(), w.value.f32(), bias, N, in, out_dim);
  });
  Param bp = b ? *b : Param{};
  t.push("linear", {x}, {out}, [=, &t] {
    const bool want_dx = x->requires_grad;
    Tensor dx = want_dx ? t.grad_target(x) : Tensor{};
    t.run([&]<Backend B>() {
      linear_backward<B>(want_dx ? dx.f32() : nullptr, w.grad.f32(), bp.grad.data ? bp.grad.f32() : nullptr,
                         t.grad_of(out).f32(), x->value.f32(), w.value.f32(), N, in, out_dim);
    });
    if (want_dx) t.grad_commit(x, dx);
  });
  return out;
}

Var* add(Tape& t, Var* a, Var* b) {
  DSK_CHECK(a->value.numel() == b->value.numel(), "add: {} vs {}", a->value.shape_str(), b->value.shape_str());
  const int64_t n = a->value.numel();
  Var* out = t.new_var(a->value.dims(), "add");
  t.run([&]<Backend B>() { dsk::add<B>(out->value.f32(), a->value.f32(), b->value.f32(), n); });
  t.push("add", {a, b}, {out}, [=, &t] {
    // The sum passes its gradient unchanged to both inputs: b gets a copy, a may share the buffer (sharing
    // with both would let a's later contributions leak into b's gradient).
    Tensor db = t.grad_target(b);
    t.run([&]<Backend B>() {
      fill<B>(db.f32(), 0.0f, n);
      accumulate<B>(db.f32(), t.grad_of(out).f32(), n);
    });
    t.grad_commit(b, db);
    t.grad_pass(a, t.grad_of(out));
  });
  return out;
}

Var* constant(Tape& t, const std::vector<int64_t>& shape, float value, const std::string& name) {
  Var* c = t.new_var(shape, name, DType::F32, false);
  t.run([&]<Backend B>() { fill<B>(c->value.f32(), value, c->value.numel()); });
  return c;
}

}  // namespace dsk::ops
