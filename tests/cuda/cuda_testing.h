#pragma once
// Helpers for [cuda] tests: skip without a GPU, device buffers, poisoned outputs.
#include "kernels/device.h"
#include "tests/testing.h"

#include <cstring>
#include <vector>

namespace dsk::testing {

// Returns false (and emits a Catch2 WARN) when no usable GPU is present: tests then return early.
inline bool gpu_available() {
  std::string why = dsk::cuda_unavailable_reason();
  if (!why.empty()) {
    WARN("[cuda] test skipped: " << why);
    return false;
  }
  return true;
}

// A device buffer holding a copy of host data (or poison), freed on scope exit.
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) { ptr = static_cast<T*>(dsk::cuda::malloc_device(count * sizeof(T) + 1)); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { dsk::cuda::free_device(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& host) { dsk::cuda::copy_to_device(ptr, host.data(), host.size() * sizeof(T)); }
  // Fills with NaN bytes (0xFF) so that any element a kernel forgot to write shows up.
  void poison() { dsk::cuda::memset_device(ptr, 0xFF, n * sizeof(T)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    dsk::cuda::copy_to_host(h.data(), ptr, n * sizeof(T));
    return h;
  }
};

// True when every element is finite (a poisoned, unwritten float is NaN).
inline bool all_written(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace dsk::testing
