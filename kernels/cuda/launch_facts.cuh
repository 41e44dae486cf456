#pragma once
// What kernel launches ask the CUDA runtime about a kernel, asked once per kernel and kept (each query costs
// microseconds, next to a decode step of a few tens of microseconds per layer): the device's shared-memory limit per
// block, each kernel's raised dynamic shared-memory limit, and the resident blocks per multiprocessor. Used by the
// attention kernels (attention_common.cuh) and the grouped expert GEMMs (expert_ffn.cu).
#include "kernels/cuda/runtime.cuh"

#include <algorithm>
#include <cstddef>
#include <map>
#include <mutex>
#include <tuple>

namespace dsk::cuda {

// The shared memory one block may opt into on the current device (H100 / H200: 227 KB).
inline int max_shared_bytes() {
  static int bytes = [] {
    int dev = 0, v = 0;
    DSK_CUDA_CHECK(cudaGetDevice(&dev));
    DSK_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return v;
  }();
  return bytes;
}

struct LaunchFacts {
  std::mutex mutex;
  std::map<const void*, size_t> allowed;                         // kernel -> shared bytes allowed so far
  std::map<std::tuple<const void*, int, size_t>, int> resident;  // (kernel, threads, bytes) -> blocks per SM
};
inline LaunchFacts& launch_facts() {
  static LaunchFacts* facts = new LaunchFacts();  // never destroyed: launches may run during static destruction
  return *facts;
}

// Raises a kernel's dynamic shared-memory limit (needed above 48 KB) and checks the device has that much.
template <class Kernel>
inline void allow_shared(Kernel kernel, size_t bytes, const char* what) {
  DSK_CHECK(bytes <= static_cast<size_t>(max_shared_bytes()),
            "{}: needs {} bytes of shared memory per block, the device allows {} (widths too large)", what, bytes,
            max_shared_bytes());
  LaunchFacts& facts = launch_facts();
  std::lock_guard<std::mutex> lock(facts.mutex);
  size_t& allowed = facts.allowed[reinterpret_cast<const void*>(kernel)];
  if (bytes <= allowed) return;
  DSK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  allowed = bytes;
}

// How many blocks of `kernel` (threads each, `bytes` of dynamic shared memory) one multiprocessor holds at once, by
// the CUDA occupancy calculator (shared memory, registers, threads); at least 1.
template <class Kernel>
inline int resident_blocks(Kernel kernel, int threads, size_t bytes) {
  LaunchFacts& facts = launch_facts();
  std::lock_guard<std::mutex> lock(facts.mutex);
  const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), threads, bytes);
  const auto found = facts.resident.find(key);
  if (found != facts.resident.end()) return found->second;
  int n = 0;
  DSK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, bytes));
  return facts.resident[key] = std::max(n, 1);
}

}  // namespace dsk::cuda
