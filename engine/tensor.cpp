#include "engine/tensor.h"

namespace dsk {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::I32: return 4;
    case DType::BF16: return 2;
    case DType::U16: return 2;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::I32: return "I32";
    case DType::BF16: return "BF16";
    case DType::U16: return "U16";
  }
  return "?";
}

Tensor::Tensor(void* ptr, std::initializer_list<int64_t> dims, DType t, Backend dev)
    : Tensor(ptr, std::vector<int64_t>(dims), t, dev) {}

Tensor::Tensor(void* ptr, const std::vector<int64_t>& dims, DType t, Backend dev) : data(ptr), dtype(t), device(dev) {
  DSK_CHECK(dims.size() <= 4, "tensors have at most 4 dimensions, got {}", dims.size());
  ndim = static_cast<int>(dims.size());
  for (int i = 0; i < ndim; ++i) {
    DSK_CHECK(dims[i] >= 0, "negative tensor dimension {}", dims[i]);
    shape[i] = dims[i];
  }
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

std::string Tensor::shape_str() const {
  std::string s = "(";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

float* Tensor::f32() const {
  DSK_CHECK(dtype == DType::F32, "tensor is {}, not F32", dtype_name(dtype));
  return static_cast<float*>(data);
}
int32_t* Tensor::i32() const {
  DSK_CHECK(dtype == DType::I32, "tensor is {}, not I32", dtype_name(dtype));
  return static_cast<int32_t*>(data);
}
uint16_t* Tensor::u16() const {
  DSK_CHECK(dtype == DType::U16, "tensor is {}, not U16", dtype_name(dtype));
  return static_cast<uint16_t*>(data);
}

Tensor Tensor::view(std::initializer_list<int64_t> dims) const {
  Tensor t(data, dims, dtype, device);
  DSK_CHECK(t.numel() == numel(), "cannot view {} as {}", shape_str(), t.shape_str());
  return t;
}

}  // namespace dsk
