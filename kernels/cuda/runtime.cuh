#pragma once
// The CUDA runtime state every CUDA kernel file shares (CUDA-only: include it from .cu files or from C++ that is
// compiled only with DSK_HAVE_CUDA). One device (the current one), one stream, created lazily on first use:
//   stream()             the stream every dsk kernel, copy and cuBLAS call is queued on, in order
//   cublas()             a cuBLAS handle bound to stream(), default math (no TF32 unless a call asks for it)
//   cublaslt()           a cuBLASLt handle; lt_workspace() / kLtWorkspaceBytes its workspace
//   scratch(bytes)       stream-ordered temporary device memory for one op (partial sums, sort buffers)
//   sm_count()           multiprocessors of the current device, for sizing grid-stride launches
// All of it is created once and kept for the process's lifetime (destroying CUDA objects from static
// destructors races the driver's own teardown), and every call is checked (kernels/cuda/check.cuh).
#include "kernels/cuda/check.cuh"
#include "kernels/device.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#define DSK_CUBLASLT_CHECK(call) DSK_CUBLAS_CHECK(call)  // cuBLASLt reports cublasStatus_t as well

// Kernel launches and shared memory are written through these macros, so that the same source also builds for the
// CPU emulator (kernels/cuda_emu/, DSK_CUDA_EMULATOR), which runs every CUDA thread as a fiber:
//   DSK_LAUNCH(grid, block, shared_bytes, kernel)(args...)   ==  kernel<<<grid, block, shared_bytes, stream()>>>(args...)
//   DSK_DYNAMIC_SHARED(T, name);                             ==  extern __shared__ T name[];
//   DSK_SHARED(T, name, [dims]);                             ==  __shared__ T name[dims];
// (The emulator gives each block its shared memory filled with NaN bytes, as it does device memory.)
#ifdef DSK_CUDA_EMULATOR
#include "kernels/cuda_emu/emulator.h"
// The emulator's reports name a launch by its kernel expression and where it is: "kernel (kernels/cuda/x.cu:120)".
#define DSK_STRINGIFY_(x) #x
#define DSK_STRINGIFY(x) DSK_STRINGIFY_(x)
#define DSK_LAUNCH(grid, block, smem, ...)                                                                   \
  ::dsk_emu::launcher(grid, block, smem, #__VA_ARGS__ " (" __FILE__ ":" DSK_STRINGIFY(__LINE__) ")", __VA_ARGS__)
#define DSK_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::dsk_emu::dynamic_shared())
#define DSK_SHARED(T, name, dims) \
  static T name dims;             \
  ::dsk_emu::shared_here(&name, sizeof(name))
#else
#define DSK_LAUNCH(grid, block, smem, ...) __VA_ARGS__<<<grid, block, smem, ::dsk::cuda::stream()>>>
#define DSK_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#define DSK_SHARED(T, name, dims) __shared__ T name dims
#endif

namespace dsk::cuda {

cudaStream_t stream();
cublasHandle_t cublas();
cublasLtHandle_t cublaslt();

constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;  // cuBLAS's recommendation for Hopper
void* lt_workspace();

// A device buffer of at least `bytes`, valid for work queued on stream() until the next scratch() call. One op
// asks once and carves its pieces from it. Growing it frees the old buffer (cudaFree waits for the device).
void* scratch(size_t bytes);

int sm_count();

// Grid size for a grid-stride loop over n elements with `threads` threads per block: enough blocks to fill the
// GPU a few times over, never more than the work needs.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  int64_t cap = static_cast<int64_t>(sm_count()) * 16;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The grid-stride loop over [0, n) that grid_for sizes:  DSK_GRID_STRIDE(i, n) body;  (i is int64_t)
#define DSK_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

}  // namespace dsk::cuda
