#include "autograd/tape.h"

#include "autograd/profile.h"
#include "kernels/elementwise.h"

namespace dsk {

Var* Tape::new_var(const std::vector<int64_t>& shape, const std::string& name, DType dtype, bool requires_grad) {
  vars_.push_back(Var{arena_.alloc(shape, dtype), Tensor{}, false, requires_grad, name});
  return &vars_.back();
}

Var* Tape::wrap(Tensor t, const std::string& name, bool requires_grad) {
  vars_.push_back(Var{t, Tensor{}, false, requires_grad, name});
  return &vars_.back();
}

void Tape::push(std::string op, std::vector<Var*> inputs, std::vector<Var*> outputs, std::function<void()> backward) {
  std::string label;
  if (profiler) {
    label = outputs.empty() ? op : op + " " + outputs[0]->value.shape_str();
    profiler->mark(label, false);
  }
  if (!record) return;
  nodes_.push_back(
      Node{std::move(op), std::move(inputs), std::move(outputs), std::move(backward), std::move(label)});
}

Tensor Tape::grad_target(Var* v) {
  DSK_CHECK(v->requires_grad, "internal: gradient written into non-differentiable {}", v->name);
  if (!v->grad_written) {
    if (v->grad.data == nullptr) v->grad = arena_.alloc(v->value.dims(), DType::F32);
    return v->grad;
  }
  return arena_.alloc(v->value.dims(), DType::F32);  // scratch, added by grad_commit
}

void Tape::grad_commit(Var* v, const Tensor& written) {
  if (!v->grad_written) {
    DSK_CHECK(written.data == v->grad.data, "internal: first gradient of {} not written in place", v->name);
    v->grad_written = true;
    return;
  }
  DSK_CHECK(written.data != v->grad.data, "internal: gradient of {} committed twice in place", v->name);
  run([&]<Backend B>() { accumulate<B>(v->grad.f32(), written.f32(), written.numel()); });
}

void Tape::grad_pass(Var* v, const Tensor& g) {
  DSK_CHECK(v->requires_grad, "internal: gradient passed into non-differentiable {}", v->name);
  if (!v->grad_written) {
    v->grad = g;
    v->grad_written = true;
    return;
  }
  run([&]<Backend B>() { accumulate<B>(v->grad.f32(), g.f32(), g.numel()); });
}

Tensor Tape::grad_of(Var* v) const {
  DSK_CHECK(v->grad_written, "internal: gradient of {} read before it was written", v->name);
  return v->grad;
}

void Tape::backward(const std::vector<Var*>& roots) {
  for (Var* root : roots) {
    if (root->grad_written) continue;
    DSK_CHECK(root->value.numel() == 1, "backward from a non-scalar {} needs its gradient set first", root->name);
    Tensor g = grad_target(root);
    run([&]<Backend B>() { fill<B>(g.f32(), 1.0f, 1); });
    grad_commit(root, g);
  }
  if (profiler) profiler->start();
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    bool needed = false;
    for (Var* out : it->outputs) needed = needed || out->grad_written;
    if (!needed) continue;  // nothing downstream of this node reached the loss
    if (!it->backward) throw Error(fmt::format("op '{}' has no backward", it->op));
    it->backward();
    if (profiler) profiler->mark(it->label, true);
  }
}

void Tape::clear() {
  nodes_.clear();
  vars_.clear();
}

std::vector<std::string> Tape::node_ops() const {
  std::vector<std::string> ops;
  for (const auto& n : nodes_) ops.push_back(n.op);
  return ops;
}

}  // namespace dsk
