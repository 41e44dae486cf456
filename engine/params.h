#pragma once
// The parameter registry and arena. One allocation holds four equal sections in the same order:
//   [ params | grads | AdamW m | AdamW v ]
// so zero-grad is one memset and AdamW is one flat pass; every parameter is a slice at the same offset
// in each section.
#include "engine/arena.h"

#include <string>
#include <unordered_map>
#include <vector>

namespace dsk {

struct ParamInfo {
  std::string name;            // checkpoint name, e.g. "blocks.0.attn.w_q.weight"
  std::vector<int64_t> shape;  // PyTorch layout, e.g. (out, in) for a linear weight
  bool decay = true;           // weight decay applies (matrices); false for norms, biases, embeddings
  int64_t offset = 0;          // in elements, within each section
  int64_t numel = 0;
};

// A parameter as the autograd ops see it: its value and its (accumulating) gradient.
struct Param {
  Tensor value;
  Tensor grad;
};

class ParamStore {
 public:
  // Registration (before allocate): returns the parameter's index.
  int add(const std::string& name, std::vector<int64_t> shape, bool decay);
  // Allocates the arena on `device` with every section zeroed. plan_only: no memory, fake addresses, for
  // measuring a memory plan (see Arena::counting).
  void allocate(Backend device, bool plan_only = false);

  bool allocated() const { return arena_.base() != nullptr || arena_.is_counting(); }
  Backend device() const { return arena_.device(); }
  int64_t total() const { return total_; }  // elements per section
  const std::vector<ParamInfo>& infos() const { return infos_; }
  int index(const std::string& name) const;  // throws for an unknown name
  bool contains(const std::string& name) const { return by_name_.count(name) > 0; }

  Param param(int i) const { return {value(i), grad(i)}; }
  Param param(const std::string& name) const { return param(index(name)); }
  Tensor value(int i) const { return slice(0, i); }
  Tensor grad(int i) const { return slice(1, i); }
  Tensor adam_m(int i) const { return slice(2, i); }
  Tensor adam_v(int i) const { return slice(3, i); }

  // Whole sections, for flat passes (zero-grad, grad norm, AdamW, checkpoint I/O).
  float* values() const { return section(0); }
  float* grads() const { return section(1); }
  float* adam_m() const { return section(2); }
  float* adam_v() const { return section(3); }

  void zero_grad();
  size_t bytes() const { return static_cast<size_t>(total_) * 4 * sizeof(float); }

 private:
  float* section(int s) const;
  Tensor slice(int s, int i) const;
  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, int> by_name_;
  int64_t total_ = 0;
  Arena arena_;
};

}  // namespace dsk
