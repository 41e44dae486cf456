#pragma once
// Tensor: a non-owning view (shape ≤ 4 dims, dtype, device, pointer). Storage always comes from an Arena.
#include "kernels/backend.h"

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace dsk {

enum class DType : uint8_t { F32, BF16, I32, U16 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Backend device = Backend::CPU;
  int ndim = 0;
  int64_t shape[4] = {0, 0, 0, 0};

  Tensor() = default;
  Tensor(void* ptr, std::initializer_list<int64_t> dims, DType t = DType::F32, Backend dev = Backend::CPU);
  Tensor(void* ptr, const std::vector<int64_t>& dims, DType t = DType::F32, Backend dev = Backend::CPU);

  bool defined() const { return data != nullptr || numel() == 0; }
  int64_t numel() const;
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  std::vector<int64_t> dims() const { return std::vector<int64_t>(shape, shape + ndim); }
  std::string shape_str() const;  // "(8, 128, 256)"

  // Typed access; throws on a dtype mismatch so a wrong cast is an error, not garbage.
  float* f32() const;
  int32_t* i32() const;
  uint16_t* u16() const;

  // The same memory with another shape of equal element count.
  Tensor view(std::initializer_list<int64_t> dims) const;
};

}  // namespace dsk
