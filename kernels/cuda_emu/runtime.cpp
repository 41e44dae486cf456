// The CUDA runtime API stand-ins of the emulator (kernels/cuda_emu/include/cuda_runtime.h): "device" memory is
// host memory, the stream is in order and complete at once, events read the host clock, the device is a small
// Hopper-like GPU (4 SMs, 227 KB opt-in shared memory).
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = dsk_emu::kMultiprocessors; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 << 10; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(dsk_emu::kMaxDynamicSharedBytes); break;
    case cudaDevAttrL2CacheSize: *value = 1 << 20; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev) {
  if (dev != 0) return cudaErrorInvalidValue;
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "dsk CUDA emulator (CPU)");
  p->totalGlobalMem = size_t(16) << 30;
  p->sharedMemPerBlock = 48 << 10;
  p->multiProcessorCount = dsk_emu::kMultiprocessors;
  p->major = 9;
  p->minor = 0;
  p->l2CacheSize = 1 << 20;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = *total_bytes = size_t(16) << 30;
  return cudaSuccess;
}
// "Device" memory is host memory, 256-byte aligned like cudaMalloc's, filled with 0xFF (NaN floats): a kernel
// that reads what nobody wrote sees NaN. Each allocation ends at a guard page: reading or writing past it faults.
// Host code cannot touch it outside the emulator's own device work (emulator.h, DeviceWork).
cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (bytes == 0) {
    *p = nullptr;
    return cudaSuccess;
  }
  dsk_emu::DeviceWork work;
  *p = dsk_emu::guarded_alloc(bytes, 256, dsk_emu::kDeviceAllocation);
  if (!*p) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xFF, (bytes + 255) / 256 * 256);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) { return dsk_emu::guarded_free(p) ? cudaSuccess : cudaErrorInvalidValue; }

namespace {
// Whether a copy's pointers are where its kind says: on a GPU a device pointer passed as host memory (or the
// reverse) is undefined behaviour, here a one-line message and cudaErrorInvalidValue.
bool copy_direction_ok(void* dst, const void* src, cudaMemcpyKind kind) {
  if (kind == cudaMemcpyDefault) return true;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool ok = dsk_emu::is_device_pointer(src) == src_device && dsk_emu::is_device_pointer(dst) == dst_device;
  if (!ok)
    std::fprintf(stderr, "CUDA emulator: cudaMemcpy from %s memory to %s memory declared as %s\n",
                 dsk_emu::is_device_pointer(src) ? "device" : "host", dsk_emu::is_device_pointer(dst) ? "device" : "host",
                 kind == cudaMemcpyHostToDevice   ? "host to device"
                 : kind == cudaMemcpyDeviceToHost ? "device to host"
                 : kind == cudaMemcpyHostToHost   ? "host to host"
                                                  : "device to device");
  return ok;
}
}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  if (!copy_direction_ok(dst, src, kind)) return cudaErrorInvalidValue;
  dsk_emu::DeviceWork work;
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  if (!dsk_emu::is_device_pointer(p)) {
    std::fprintf(stderr, "CUDA emulator: cudaMemset of host memory\n");
    return cudaErrorInvalidValue;
  }
  dsk_emu::DeviceWork work;
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) { return cudaMemset(p, value, bytes); }

struct CUstream_st {};
struct CUevent_st {
  std::chrono::steady_clock::time_point t;
};
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    default: return "unknown error";
  }
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->t - start->t).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}

