#pragma once
// Arena: one allocation made up front, handed out by bumping a pointer. The parameter arena lives for the
// model's lifetime; the activation arena is reset every step. No per-op malloc anywhere in a step.
#include "engine/tensor.h"

#include <string>

namespace dsk {

class Arena {
 public:
  static constexpr size_t kAlign = 256;  // bytes; enough for any vector load and cuBLAS

  Arena() = default;
  Arena(Backend device, size_t capacity_bytes, std::string name);
  ~Arena();
  Arena(Arena&& o) noexcept;
  Arena& operator=(Arena&& o) noexcept;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // A counting arena hands out fake, never-dereferenced addresses and only measures: the memory plan runs
  // the real forward/backward code against it with kernels switched off (Tape::run).
  static Arena counting(std::string name);
  bool is_counting() const { return counting_; }

  // A tensor of this shape; throws when the arena is full (naming the arena, its size and the request).
  Tensor alloc(const std::vector<int64_t>& shape, DType dtype = DType::F32);
  Tensor alloc(std::initializer_list<int64_t> shape, DType dtype = DType::F32) {
    return alloc(std::vector<int64_t>(shape), dtype);
  }
  // Same, with every byte zero.
  Tensor alloc_zeroed(const std::vector<int64_t>& shape, DType dtype = DType::F32);

  void reset() { used_ = 0; }
  size_t mark() const { return used_; }
  void release(size_t mark) { used_ = mark; }

  Backend device() const { return device_; }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }
  size_t capacity() const { return capacity_; }
  const std::string& name() const { return name_; }
  void* base() const { return base_; }

 private:
  void free_memory();
  Backend device_ = Backend::CPU;
  void* base_ = nullptr;
  size_t capacity_ = 0, used_ = 0, peak_ = 0;
  bool counting_ = false;
  std::string name_;
};

// Zeroes `bytes` bytes at p on the given device.
void zero_memory(Backend device, void* p, size_t bytes);

}  // namespace dsk
