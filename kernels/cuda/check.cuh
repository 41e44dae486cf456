#pragma once
// Checks for CUDA runtime and cuBLAS calls and kernel launches: throw dsk::Error with file, line and message.
#include "kernels/common.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#define DSK_CUDA_CHECK(call)                                                                       \
  do {                                                                                             \
    cudaError_t dsk_err_ = (call);                                                                 \
    if (dsk_err_ != cudaSuccess)                                                                   \
      ::dsk::fail_at(__FILE__, __LINE__,                                                           \
                     fmt::format("CUDA error {}: {} in {}", static_cast<int>(dsk_err_),            \
                                 cudaGetErrorString(dsk_err_), #call));                            \
  } while (0)

// After every <<<launch>>>: catches bad configurations at once (asynchronous faults surface at the next sync).
#define DSK_CUDA_CHECK_LAUNCH() DSK_CUDA_CHECK(cudaGetLastError())

#define DSK_CUBLAS_CHECK(call)                                                                     \
  do {                                                                                             \
    cublasStatus_t dsk_st_ = (call);                                                               \
    if (dsk_st_ != CUBLAS_STATUS_SUCCESS)                                                          \
      ::dsk::fail_at(__FILE__, __LINE__,                                                           \
                     fmt::format("cuBLAS error {} ({}) in {}", static_cast<int>(dsk_st_),          \
                                 cublasGetStatusString(dsk_st_), #call));                          \
  } while (0)
