#include "engine/params.h"

namespace dsk {

int ParamStore::add(const std::string& name, std::vector<int64_t> shape, bool decay) {
  DSK_CHECK(!allocated(), "parameter {} registered after allocation", name);
  DSK_CHECK(!by_name_.count(name), "parameter {} registered twice", name);
  ParamInfo p{name, std::move(shape), decay, total_, 1};
  for (int64_t s : p.shape) p.numel *= s;
  // Keep every parameter 64-element aligned so each slice starts on a 256-byte boundary (vector loads, cuBLAS).
  total_ += (p.numel + 63) / 64 * 64;
  by_name_[name] = static_cast<int>(infos_.size());
  infos_.push_back(std::move(p));
  return static_cast<int>(infos_.size()) - 1;
}

void ParamStore::allocate(Backend device, bool plan_only) {
  const size_t bytes = static_cast<size_t>(total_) * 4 * sizeof(float);
  if (plan_only) {
    arena_ = Arena::counting("parameter");
    arena_.alloc({static_cast<int64_t>(bytes)}, DType::U16);  // reserve the fake address range
    return;
  }
  arena_ = Arena(device, bytes, "parameter");
  zero_memory(device, arena_.base(), arena_.capacity());
}

int ParamStore::index(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) throw Error(fmt::format("unknown parameter '{}'", name));
  return it->second;
}

float* ParamStore::section(int s) const {
  DSK_CHECK(allocated(), "parameters are not allocated");
  char* base = arena_.is_counting() ? reinterpret_cast<char*>(Arena::kAlign) : static_cast<char*>(arena_.base());
  return reinterpret_cast<float*>(base) + static_cast<int64_t>(s) * total_;
}

Tensor ParamStore::slice(int s, int i) const {
  const ParamInfo& p = infos_.at(i);
  return Tensor(section(s) + p.offset, p.shape, DType::F32, arena_.device());
}

void ParamStore::zero_grad() {
  if (arena_.is_counting()) return;
  zero_memory(device(), grads(), static_cast<size_t>(total_) * sizeof(float));
}

}  // namespace dsk
