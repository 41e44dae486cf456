// Mixture-of-experts ops: router, aux loss, permute, gather, expert FFN, combine.
#include "autograd/ops.h"
#include "kernels/moe.h"
#include "kernels/rng.h"

#include <vector>

namespace dsk::ops {

RouterOut router(Tape& t, Var* logits, Var* noise_logits, int k, uint32_t layer) {
  const int E = static_cast<int>(logits->value.dim(-1));
  const int N = static_cast<int>(logits->value.numel() / E);
  const bool noisy = t.training && noise_logits != nullptr;
  const uint64_t seed = t.seed, site = rng::make_site(t.step, layer, 4);
  RouterOut r;
  r.expert_idx = t.new_var({N, k}, "router.expert_idx", DType::I32, false);
  r.gate = t.new_var({N, k}, "router.gate");
  r.probs = t.new_var({N, E}, "router.probs", DType::F32, false);
  Var* noisy_logits = t.new_var({N, E}, "router.noisy", DType::F32, false);
  const float* nl = noisy ? noise_logits->value.f32() : nullptr;
  t.run([&]<Backend B>() {
    moe_router_forward<B>(r.expert_idx->value.i32(), r.gate->value.f32(), noisy_logits->value.f32(),
                          r.probs->value.f32(), logits->value.f32(), nl, N, E, k, seed, site);
  });
  std::vector<Var*> inputs = {logits};
  if (noisy) inputs.push_back(noise_logits);
  Var* gate = r.gate;
  Var* idx = r.expert_idx;
  t.push("moe_router", inputs, {gate}, [=, &t] {
    Tensor dl = t.grad_target(logits);
    Tensor dn = noisy ? t.grad_target(noise_logits) : Tensor{};
    t.run([&]<Backend B>() {
      moe_router_backward<B>(dl.f32(), noisy ? dn.f32() : nullptr, t.grad_of(gate).f32(), gate->value.f32(),
                             idx->value.i32(), nl, N, E, k, seed, site);
    });
    t.grad_commit(logits, dl);
    if (noisy) t.grad_commit(noise_logits, dn);
  });
  return r;
}

AuxOut aux_loss(Tape& t, Var* logits, const RouterOut& r, float coef, float grad_weight) {
  const int E = static_cast<int>(r.probs->value.dim(-1));
  const int N = static_cast<int>(r.probs->value.dim(0)), k = static_cast<int>(r.expert_idx->value.dim(1));
  AuxOut a;
  a.aux = t.new_var({1}, "aux_loss");
  a.load = t.new_var({E}, "aux_loss.load", DType::F32, false);
  Var* importance = t.new_var({E}, "aux_loss.importance", DType::F32, false);
  t.run([&]<Backend B>() {
    moe_aux_loss_forward<B>(a.aux->value.f32(), a.load->value.f32(), importance->value.f32(), r.probs->value.f32(),
                            r.expert_idx->value.i32(), N, E, k, coef);
  });
  Var* probs = r.probs;
  Var* load = a.load;
  t.push("moe_aux_loss", {logits}, {a.aux}, [=, &t] {
    // Terminal loss: its gradient weight was fixed at forward time.
    Tensor dl = t.grad_target(logits);
    t.run([&]<Backend B>() {
      moe_aux_loss_backward<B>(dl.f32(), grad_weight, probs->value.f32(), load->value.f32(), N, E, coef);
    });
    t.grad_commit(logits, dl);
  });
  return a;
}

Permutation permute(Tape& t, Var* expert_idx, int num_experts) {
  const int N = static_cast<int>(expert_idx->value.dim(0)), k = static_cast<int>(expert_idx->value.dim(1));
  Permutation p;
  p.k = k;
  p.num_experts = num_experts;
  p.sorted_slots = t.new_var({N * k}, "permute.sorted_slots", DType::I32, false);
  p.slot_row = t.new_var({N * k}, "permute.slot_row", DType::I32, false);
  p.offsets = t.new_var({num_experts + 1}, "permute.offsets", DType::I32, false);
  t.run([&]<Backend B>() {
    moe_permute<B>(p.sorted_slots->value.i32(), p.slot_row->value.i32(), p.offsets->value.i32(),
                   expert_idx->value.i32(), N, num_experts, k);
  });
  return p;
}

Permutation permute_all(Tape& t, int tokens, int num_experts) {
  // expert_idx[n, j] = j: every token goes to every expert, in the same kernels as routed tokens.
  Var* idx = t.new_var({tokens, num_experts}, "shared.expert_idx", DType::I32, false);
  t.run([&]<Backend B>() { moe_all_experts_index<B>(idx->value.i32(), tokens, num_experts); });
  return permute(t, idx, num_experts);
}

Var* gather(Tape& t, Var* x, const Permutation& p) {
  const int d = static_cast<int>(x->value.dim(-1));
  const int N = static_cast<int>(x->value.numel() / d), k = p.k;
  Var* xp = t.new_var({N * k, d}, "moe.gather");
  Var* sorted = p.sorted_slots;
  Var* slot_row = p.slot_row;
  t.run([&]<Backend B>() {
    moe_gather<B>(xp->value.f32(), x->value.f32(), sorted->value.i32(), N, k, d);
  });
  t.push("moe_gather", {x}, {xp}, [=, &t] {
    Tensor dx = t.grad_target(x);
    t.run([&]<Backend B>() {
      moe_gather_backward<B>(dx.f32(), t.grad_of(xp).f32(), slot_row->value.i32(), N, k, d);
    });
    t.grad_commit(x, dx);
  });
  return xp;
}

Var* expert_ffn(Tape& t, Var* xp, const Permutation& p, const Param& w1, const Param& b1, const Param& w2,
                const Param& b2) {
  const int M = static_cast<int>(xp->value.dim(0)), d = static_cast<int>(xp->value.dim(1));
  const int E = p.num_experts, F = static_cast<int>(w1.value.dim(1));
  Var* h = t.new_var({M, F}, "expert_ffn.hidden", DType::F32, false);
  Var* y = t.new_var({M, d}, "expert_ffn");
  Var* offsets = p.offsets;
  t.run([&]<Backend B>() {
    expert_ffn_forward<B>(h->value.f32(), y->value.f32(), xp->value.f32(), w1.value.f32(), b1.value.f32(),
                          w2.value.f32(), b2.value.f32(), offsets->value.i32(), E, M, d, F);
  });
  t.push("expert_ffn", {xp}, {y}, [=, &t] {
    Tensor dxp = t.grad_target(xp);
    Tensor dh = t.arena().alloc({M, F});
    t.run([&]<Backend B>() {
      expert_ffn_backward<B>(dxp.f32(), w1.grad.f32(), b1.grad.f32(), w2.grad.f32(), b2.grad.f32(), dh.f32(),
                             t.grad_of(y).f32(), xp->value.f32(), h->value.f32(), w1.value.f32(), w2.value.f32(),
                             offsets->value.i32(), E, M, d, F);
    });
    t.grad_commit(xp, dxp);
  });
  return y;
}

Var* combine(Tape& t, Var* yp, Var* gate, const Permutation& p) {
  const int d = static_cast<int>(yp->value.dim(-1)), k = p.k;
  const int N = static_cast<int>(yp->value.dim(0)) / k;
  Var* y = t.new_var({N, d}, "moe.combine");
  Var* slot_row = p.slot_row;
  t.run([&]<Backend B>() {
    moe_combine<B>(y->value.f32(), yp->value.f32(), gate->value.f32(), slot_row->value.i32(), N, k, d);
  });
  t.push("moe_combine", {yp, gate}, {y}, [=, &t] {
    Tensor dyp = t.grad_target(yp);
    const bool want_dgate = gate->requires_grad;
    Tensor dgate = want_dgate ? t.grad_target(gate) : t.arena().alloc({N * k});
    t.run([&]<Backend B>() {
      moe_combine_backward<B>(dyp.f32(), dgate.f32(), t.grad_of(y).f32(), yp->value.f32(), gate->value.f32(),
                              slot_row->value.i32(), N, k, d);
    });
    t.grad_commit(yp, dyp);
    if (want_dgate) t.grad_commit(gate, dgate);
  });
  return y;
}

}  // namespace dsk::ops
