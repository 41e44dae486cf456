#include "engine/arena.h"

#include "kernels/device.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace dsk {

Arena::Arena(Backend device, size_t capacity_bytes, std::string name)
    : device_(device), capacity_(capacity_bytes), name_(std::move(name)) {
  if (capacity_ == 0) return;
  if (device_ == Backend::CPU) {
    size_t rounded = (capacity_ + kAlign - 1) / kAlign * kAlign;
    base_ = std::aligned_alloc(kAlign, rounded);
    DSK_CHECK(base_ != nullptr, "cannot allocate {:.1f} MiB for the {} arena", capacity_ / 1048576.0, name_);
  } else {
    base_ = cuda::malloc_device(capacity_);
  }
}

Arena Arena::counting(std::string name) {
  Arena a;
  a.name_ = std::move(name);
  a.capacity_ = SIZE_MAX / 2;
  a.counting_ = true;
  return a;
}

Arena::~Arena() { free_memory(); }

void Arena::free_memory() {
  if (!base_ || counting_) return;
  if (device_ == Backend::CPU)
    std::free(base_);
  else
    cuda::free_device(base_);
  base_ = nullptr;
}

Arena::Arena(Arena&& o) noexcept { *this = std::move(o); }

Arena& Arena::operator=(Arena&& o) noexcept {
  if (this != &o) {
    free_memory();
    device_ = o.device_;
    base_ = std::exchange(o.base_, nullptr);
    capacity_ = std::exchange(o.capacity_, 0);
    used_ = std::exchange(o.used_, 0);
    peak_ = std::exchange(o.peak_, 0);
    name_ = std::move(o.name_);
    counting_ = std::exchange(o.counting_, false);
  }
  return *this;
}

Tensor Arena::alloc(const std::vector<int64_t>& shape, DType dtype) {
  Tensor t(nullptr, shape, dtype, device_);
  size_t bytes = (t.bytes() + kAlign - 1) / kAlign * kAlign;
  if (used_ + bytes > capacity_)
    throw Error(fmt::format("the {} arena is full: {:.1f} MiB used of {:.1f} MiB, {} {} needs {:.2f} MiB more",
                            name_, used_ / 1048576.0, capacity_ / 1048576.0, dtype_name(dtype), t.shape_str(),
                            bytes / 1048576.0));
  // A counting arena's addresses start at kAlign so they are non-null (defined) but never valid.
  t.data = counting_ ? reinterpret_cast<void*>(kAlign + used_) : static_cast<char*>(base_) + used_;
  used_ += bytes;
  peak_ = std::max(peak_, used_);
  return t;
}

Tensor Arena::alloc_zeroed(const std::vector<int64_t>& shape, DType dtype) {
  Tensor t = alloc(shape, dtype);
  if (counting_) return t;
  zero_memory(device_, t.data, t.bytes());
  return t;
}

void zero_memory(Backend device, void* p, size_t bytes) {
  if (bytes == 0) return;
  if (device == Backend::CPU)
    std::memset(p, 0, bytes);
  else
    cuda::memset_device(p, 0, bytes);
}

}  // namespace dsk
