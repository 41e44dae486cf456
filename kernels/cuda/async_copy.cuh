#pragma once
// Asynchronous global -> shared copies (cp.async, sm_80+), used to fill the attention kernels' tiles.
//
// Why: a tile loaded through registers ("x = src[i]; tile[i] = x;" in a loop over rows) keeps one load per thread
// in flight, since each store waits for its load and the row loop is not unrolled: a 64 x 128 K tile then takes
// 16 round trips to memory per warp, and a memory-bound decode step reads the latent cache at a fraction of the
// HBM bandwidth. cp.async hands every copy of the tile to the memory system at once, without registers, and the
// thread waits once, before the barrier that publishes the tile.
//
// Use: each thread issues its copies (copy_async_zfill), then copies_wait_all(), then __syncthreads(). Until the
// wait, the destination holds undefined data; the CPU emulator writes NaN there at issue and the data only at the
// wait (dsk_emu::cp_async), so a kernel that reads a tile without waiting computes garbage in the [cuda] tests.
#include "kernels/cuda/runtime.cuh"

#include <cstdint>
#include <initializer_list>
#include <type_traits>

namespace dsk {

// Whether every row of these operands starts 16-byte aligned, as 16-byte copies of their rows (cp.async, float4)
// need: row widths (floats) multiples of 4 and base pointers aligned (null pointers, absent operands, pass).
inline bool rows_aligned16(std::initializer_list<int> widths, std::initializer_list<const void*> operands) {
  for (int w : widths)
    if (w % 4 != 0) return false;
  for (const void* p : operands)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// dst[0 .. kBytes) = src[0 .. kBytes) when `valid`, else zeros (cp.async's zero fill: src-size 0 reads nothing;
// src must still be an address in global memory, so callers pass one they own). dst in shared memory, src in
// global memory, both aligned to kBytes (4, 8 or 16).
template <int kBytes>
__device__ __forceinline__ void copy_async_zfill(void* dst, const void* src, bool valid) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(DSK_CUDA_EMULATOR)
  dsk_emu::cp_async(dst, src, kBytes, valid ? kBytes : 0);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // ("memory": the compiler must not move this thread's own shared reads of the old tile past the copy)
  const unsigned shared = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int src_bytes = valid ? kBytes : 0;
  if constexpr (kBytes == 16)  // .cg: through L2 only (a tile is read once per block)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(src), "r"(src_bytes) : "memory");
  else if constexpr (kBytes == 8)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(shared), "l"(src), "r"(src_bytes) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared), "l"(src), "r"(src_bytes) : "memory");
#else
  // Below sm_80 (not a dsk target, kept compiling): a plain copy.
  if constexpr (kBytes == 4) {
    *static_cast<float*>(dst) = valid ? *static_cast<const float*>(src) : 0.0f;
  } else {
    using Word = std::conditional_t<kBytes == 8, float2, float4>;
    *static_cast<Word*>(dst) = valid ? *static_cast<const Word*>(src) : Word{};
  }
#endif
}

// Waits until every copy_async_zfill this thread issued has landed (its own copies only: a __syncthreads after it
// makes the whole block's visible).
__device__ __forceinline__ void copies_wait_all() {
#if defined(DSK_CUDA_EMULATOR)
  dsk_emu::cp_async_wait_all();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Pipelined tiles (a tile's copies land while the block computes on the one before): copies_commit() closes the
// copies this thread issued since its last commit into a group; copies_wait_pending<N>() waits until at most the N
// most recently committed groups are still in flight (every older group has landed). Copies not yet committed are
// not waited for. As with copies_wait_all, a __syncthreads after the wait publishes the block's copies.
__device__ __forceinline__ void copies_commit() {
#if defined(DSK_CUDA_EMULATOR)
  dsk_emu::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void copies_wait_pending() {
  static_assert(N >= 0 && N <= 7, "cp.async.wait_group takes 0 to 7");
#if defined(DSK_CUDA_EMULATOR)
  dsk_emu::cp_async_wait_pending(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

}  // namespace dsk
