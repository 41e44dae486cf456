// Device discovery, memory and transfers on the CUDA runtime.
#include "kernels/cuda/check.cuh"
#include "kernels/device.h"

namespace dsk {

bool cuda_compiled() { return true; }

std::string cuda_unavailable_reason() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not poisoned
    return fmt::format("no usable CUDA device ({})", cudaGetErrorString(err));
  }
  if (n == 0) return "no CUDA device found";
  return "";
}

std::vector<GpuInfo> cuda_devices() {
  std::vector<GpuInfo> out;
  if (!cuda_unavailable_reason().empty()) return out;
  int n = 0, driver = 0;
  DSK_CUDA_CHECK(cudaGetDeviceCount(&n));
  DSK_CUDA_CHECK(cudaDriverGetVersion(&driver));
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    DSK_CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    out.push_back(GpuInfo{i, p.name, p.multiProcessorCount, p.major, p.minor, p.totalGlobalMem, driver});
  }
  return out;
}

namespace cuda {

void* malloc_device(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  DSK_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}
void free_device(void* p) {
  if (p) DSK_CUDA_CHECK(cudaFree(p));
}
void copy_to_device(void* dst, const void* src, size_t bytes) {
  DSK_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
  DSK_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void copy_device(void* dst, const void* src, size_t bytes) {
  DSK_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}
void memset_device(void* p, int value, size_t bytes) { DSK_CUDA_CHECK(cudaMemset(p, value, bytes)); }
void synchronize() { DSK_CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace cuda
}  // namespace dsk
