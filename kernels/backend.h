#pragma once
// How kernels are named and called.
//
// Every op family has one header kernels/<family>.h that declares its functions once, as templates on the
// backend:   template <Backend B> void layernorm_forward(...);
// kernels/cpu/<family>.cpp defines the Backend::CPU specializations (fp32, OpenMP, CBLAS: the specification);
// kernels/cuda/<family>.cu defines the Backend::CUDA ones (tested against the CPU), compiled when nvcc exists.
//
// Conventions shared by all families:
// - Pointers are in the backend's memory (host for CPU, device for CUDA). CUDA functions are asynchronous on
//   the current stream (kernels/device.h); they check every launch.
// - Row-major, shapes in the comments: x (N, C) means x[n*C + c].
// - Forward functions write (set) their outputs.
// - Backward functions SET the gradients of their inputs (dx = ...), and ACCUMULATE the gradients of
//   parameters (dw += ..., db += ...), which are zeroed once per optimizer step.
// - Index arrays (token ids, expert ids, permutation maps) are int32 and never differentiated.
#include "kernels/common.h"

#include <cstdint>

namespace dsk {

enum class Backend { CPU, CUDA };

inline const char* backend_name(Backend b) { return b == Backend::CPU ? "cpu" : "cuda"; }

// Calls f.template operator()<B>() for the runtime backend b: dispatch(b, [&]<Backend B>() { op<B>(...); });
// In a build without CUDA only the CPU branch is instantiated and asking for CUDA throws.
template <class F>
void dispatch(Backend b, F&& f) {
  if (b == Backend::CPU) {
    f.template operator()<Backend::CPU>();
    return;
  }
#ifdef DSK_HAVE_CUDA
  f.template operator()<Backend::CUDA>();
#else
  DSK_FAIL("this dsk was built without the CUDA backend");
#endif
}

}  // namespace dsk
