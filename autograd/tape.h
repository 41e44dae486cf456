#pragma once
// A small reverse-mode tape. Forward ops are coarse (layer-level) and each records one Node holding a
// hand-written backward closure; backward() walks the nodes in reverse.
//
// Gradient rules (one for each kind of tensor):
// - parameter gradients always accumulate (+=) into the parameter arena, zeroed once per optimizer step;
// - an activation's gradient is written through grad_target()/grad_commit(): the first contribution is
//   written straight into the gradient buffer, later ones go to scratch and are added (set-or-add);
// - index tensors (tokens, expert ids, permutations) are Vars with requires_grad = false.
#include "engine/arena.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

namespace dsk {

class OpProfiler;  // autograd/profile.h

struct Var {
  Tensor value;
  Tensor grad;  // allocated on first use in backward
  bool grad_written = false;
  bool requires_grad = true;
  std::string name;  // for error messages: the op that produced it
};

class Tape {
 public:
  Tape(Arena& activations, Backend device) : arena_(activations), device_(device) {}

  // Training mode turns on dropout and router noise; `record` on means backward will be needed.
  bool training = false;
  bool record = true;
  uint64_t seed = 0;  // run seed, for dropout / noise sites
  uint64_t step = 0;  // optimizer step, part of every random site
  OpProfiler* profiler = nullptr;  // when set, every node's forward and backward time is charged to it

  Backend device() const { return device_; }
  Arena& arena() { return arena_; }
  // Runs a kernel call on the tape's backend: run([&]<Backend B>() { op<B>(...); }). Skipped when the
  // arena only counts (memory planning), so every op's allocations are measured by its own code.
  template <class F>
  void run(F&& f) {
    if (!arena_.is_counting()) dispatch(device_, std::forward<F>(f));
  }

  // A new activation of this shape in the activation arena.
  Var* new_var(const std::vector<int64_t>& shape, const std::string& name, DType dtype = DType::F32,
               bool requires_grad = true);
  // Wraps existing memory (e.g. a batch of token ids) as a Var.
  Var* wrap(Tensor t, const std::string& name, bool requires_grad = false);

  // Records a node: `backward` reads its outputs' gradients and writes its inputs' gradients.
  void push(std::string op, std::vector<Var*> inputs, std::vector<Var*> outputs, std::function<void()> backward);

  // The gradient buffer a backward should write v's gradient into; pass it to grad_commit afterwards.
  Tensor grad_target(Var* v);
  void grad_commit(Var* v, const Tensor& written);
  // Adds `g` to v's gradient; when it is v's first gradient, v shares g's buffer instead of copying it.
  // Safe for a producer's output gradient: every consumer of that output has already run its backward.
  void grad_pass(Var* v, const Tensor& g);
  // The gradient flowing into v (a node's output). Throws if v's gradient was never written.
  Tensor grad_of(Var* v) const;
  bool has_grad(const Var* v) const { return v->grad_written; }

  // Seeds d(root)/d(root) = 1 for each root (one-element F32 Vars) unless a gradient was already committed
  // into it, then runs every node's backward in reverse order. Loss ops (cross_entropy, aux_loss) are
  // terminal: their gradient weight was fixed at forward time and they ignore the seed.
  void backward(const std::vector<Var*>& roots);
  void backward(Var* root) { backward(std::vector<Var*>{root}); }

  // Forgets every node and Var (the arena is reset by its owner).
  void clear();

  size_t num_nodes() const { return nodes_.size(); }
  std::vector<std::string> node_ops() const;

 private:
  struct Node {
    std::string op;
    std::vector<Var*> inputs, outputs;
    std::function<void()> backward;
    std::string label;  // the profiler's: op and output shape (only with a profiler)
  };
  Arena& arena_;
  Backend device_;
  std::deque<Var> vars_;  // stable addresses
  std::vector<Node> nodes_;
};

}  // namespace dsk
