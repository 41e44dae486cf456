// CUDA token dispatch for the MoE (kernels/moe.h); kernels/cpu/moe_permute.cpp is the specification.
//   moe_permute: a stable sort of the N*k slots by expert id with CUB's radix sort (stable by construction: equal
//     keys keep their input order, i.e. slot order), over only the bits that expert ids use. The permutation is
//     unique, so it is bit-identical to the CPU's counting sort. offsets come from a binary search of the sorted ids.
//   gather / combine and their backwards: every output element is written by one thread that reads a fixed set of
//     inputs in slot order (no atomics), so results are deterministic.
// Rows are processed as float4 when d is a multiple of 4 and the pointers are 16-byte aligned, else as floats.
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/moe.h"

#include <cub/device/device_radix_sort.cuh>

#include <cstdint>
#include <initializer_list>

namespace dsk {

namespace {

// ---- permute --------------------------------------------------------------------------------------------------

__global__ void iota_kernel(int32_t* __restrict__ v, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v[i] = i;
}

__global__ void all_experts_kernel(int32_t* __restrict__ idx, int n, int k) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) idx[i] = i % k;
}

// slot_row is the inverse permutation of sorted_slots.
__global__ void invert_kernel(int32_t* __restrict__ slot_row, const int32_t* __restrict__ sorted_slots, int S) {
  for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < S; r += gridDim.x * blockDim.x) slot_row[sorted_slots[r]] = r;
}

// offsets[e] = number of sorted ids below e (a lower bound), e = 0..E; offsets[E] = S when all ids are < E.
__global__ void offsets_kernel(int32_t* __restrict__ offsets, const int32_t* __restrict__ sorted_ids, int S, int E) {
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e <= E; e += gridDim.x * blockDim.x) {
    int lo = 0, hi = S;  // first index with sorted_ids[index] >= e
    while (lo < hi) {
      int mid = lo + (hi - lo) / 2;
      if (sorted_ids[mid] < e) lo = mid + 1;
      else hi = mid;
    }
    offsets[e] = lo;
  }
}

// ---- row vectors ----------------------------------------------------------------------------------------------

template <int V> struct Vec;
template <> struct Vec<1> { using T = float; };
template <> struct Vec<4> { using T = float4; };

__device__ __forceinline__ float4 operator+(float4 a, float4 b) { return {a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w}; }
__device__ __forceinline__ float4 operator*(float g, float4 a) { return {g * a.x, g * a.y, g * a.z, g * a.w}; }
__device__ __forceinline__ float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }
__device__ __forceinline__ float dotv(float a, float b) { return a * b; }
__device__ __forceinline__ float dotv(float4 a, float4 b) { return dot4(a, b); }
template <class T> __device__ __forceinline__ T vzero();
template <> __device__ __forceinline__ float vzero<float>() { return 0.0f; }
template <> __device__ __forceinline__ float4 vzero<float4>() { return make_float4(0.0f, 0.0f, 0.0f, 0.0f); }

// xp (S, d): xp[r] = x[sorted_slots[r] / k]. Work item i = (row r, vector c) of dv = d / V vectors per row.
template <int V>
__global__ void gather_kernel(float* __restrict__ xp, const float* __restrict__ x,
                              const int32_t* __restrict__ sorted_slots, int64_t S, int k, int dv) {
  using T = typename Vec<V>::T;
  const int64_t total = S * dv;
  T* out = reinterpret_cast<T*>(xp);
  const T* in = reinterpret_cast<const T*>(x);
  DSK_GRID_STRIDE(i, total) {
    int64_t r = i / dv;
    int c = static_cast<int>(i % dv);
    int64_t n = sorted_slots[r] / k;
    out[i] = in[n * dv + c];
  }
}

// dx (N, d) = Σ_j dxp[slot_row[n*k + j]], summed in j order starting from the first row (as the CPU).
template <int V>
__global__ void gather_backward_kernel(float* __restrict__ dx, const float* __restrict__ dxp,
                                       const int32_t* __restrict__ slot_row, int64_t N, int k, int dv) {
  using T = typename Vec<V>::T;
  const int64_t total = N * dv;
  T* out = reinterpret_cast<T*>(dx);
  const T* in = reinterpret_cast<const T*>(dxp);
  DSK_GRID_STRIDE(i, total) {
    int64_t n = i / dv;
    int c = static_cast<int>(i % dv);
    const int32_t* rows = slot_row + n * k;
    T acc = in[static_cast<int64_t>(rows[0]) * dv + c];
    for (int j = 1; j < k; ++j) acc = acc + in[static_cast<int64_t>(rows[j]) * dv + c];
    out[i] = acc;
  }
}

// y (N, d) = Σ_j gate[n*k + j] * yp[slot_row[n*k + j]], in j order.
template <int V>
__global__ void combine_kernel(float* __restrict__ y, const float* __restrict__ yp, const float* __restrict__ gate,
                               const int32_t* __restrict__ slot_row, int64_t N, int k, int dv) {
  using T = typename Vec<V>::T;
  const int64_t total = N * dv;
  T* out = reinterpret_cast<T*>(y);
  const T* in = reinterpret_cast<const T*>(yp);
  DSK_GRID_STRIDE(i, total) {
    int64_t n = i / dv;
    int c = static_cast<int>(i % dv);
    T acc = vzero<T>();
    for (int j = 0; j < k; ++j) {
      int64_t s = n * k + j;
      acc = acc + gate[s] * in[static_cast<int64_t>(slot_row[s]) * dv + c];
    }
    out[i] = acc;
  }
}

// One warp per slot s: dyp[slot_row[s]] = gate[s] * dy[s / k] and dgate[s] = dy[s / k] · yp[slot_row[s]] (a warp
// dot product: each lane sums its vectors in order, then the fixed butterfly).
template <int V>
__global__ void combine_backward_kernel(float* __restrict__ dyp, float* __restrict__ dgate,
                                        const float* __restrict__ dy, const float* __restrict__ yp,
                                        const float* __restrict__ gate, const int32_t* __restrict__ slot_row,
                                        int64_t S, int k, int dv) {
  using T = typename Vec<V>::T;
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t s = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); s < S; s += warps) {
    const int64_t r = slot_row[s];
    const T* g_out = reinterpret_cast<const T*>(dy) + (s / k) * dv;  // the token's output gradient
    const T* row = reinterpret_cast<const T*>(yp) + r * dv;
    T* drow = reinterpret_cast<T*>(dyp) + r * dv;
    const float g = gate[s];
    float acc = 0.0f;
    for (int c = lane; c < dv; c += 32) {
      T go = g_out[c];
      drow[c] = g * go;
      acc += dotv(go, row[c]);
    }
    acc = cuda::warp_sum(acc);
    if (lane == 0) dgate[s] = acc;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Float4 rows when every row of every operand starts 16-byte aligned.
bool use_vec4(int d, std::initializer_list<const void*> ptrs) {
  if (d % 4 != 0) return false;
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  return true;
}

constexpr int kThreads = 256;

}  // namespace

// ---- launchers ------------------------------------------------------------------------------------------------

template <>
void moe_all_experts_index<Backend::CUDA>(int32_t* expert_idx, int N, int k) {
  DSK_CHECK(N > 0 && k > 0 && static_cast<int64_t>(N) * k <= INT32_MAX, "moe_all_experts_index: bad shape N={} k={}",
            N, k);
  DSK_LAUNCH(cuda::grid_for(N * k, kThreads), kThreads, 0, all_experts_kernel)(expert_idx, N * k, k);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void moe_permute<Backend::CUDA>(int32_t* sorted_slots, int32_t* slot_row, int32_t* offsets,
                                const int32_t* expert_idx, int N, int E, int k) {
  DSK_CHECK(N > 0 && E > 0 && k > 0, "moe_permute: bad shape N={} E={} k={}", N, E, k);
  DSK_CHECK(static_cast<int64_t>(N) * k <= INT32_MAX, "moe_permute: N*k = {} slots overflow int32",
            static_cast<int64_t>(N) * k);
  const int S = N * k;
  // Expert ids are not range-checked on the device (a host sync); the sort only looks at the bits ids in [0, E)
  // use, so an out-of-range id gives a wrong permutation here where the CPU specification throws.
  int bits = 1;
  while ((1 << bits) < E) ++bits;

  // Scratch: sorted ids (S), slot ids 0..S-1 (S), CUB's temporary storage; each piece 256-byte aligned.
  auto round_up = [](size_t b) { return (b + 255) / 256 * 256; };
  size_t cub_bytes = 0;
  DSK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, cub_bytes, static_cast<const int32_t*>(nullptr),
                                                 static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                 static_cast<int32_t*>(nullptr), S, 0, bits, cuda::stream()));
  const size_t ids_bytes = round_up(sizeof(int32_t) * S);
  char* base = static_cast<char*>(cuda::scratch(2 * ids_bytes + round_up(cub_bytes)));
  int32_t* sorted_ids = reinterpret_cast<int32_t*>(base);
  int32_t* slot_ids = reinterpret_cast<int32_t*>(base + ids_bytes);
  void* cub_temp = base + 2 * ids_bytes;

  DSK_LAUNCH(cuda::grid_for(S, kThreads), kThreads, 0, iota_kernel)(slot_ids, S);
  DSK_CUDA_CHECK_LAUNCH();
  DSK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_temp, cub_bytes, expert_idx, sorted_ids, slot_ids, sorted_slots, S,
                                                 0, bits, cuda::stream()));
  DSK_LAUNCH(cuda::grid_for(S, kThreads), kThreads, 0, invert_kernel)(slot_row, sorted_slots, S);
  DSK_CUDA_CHECK_LAUNCH();
  DSK_LAUNCH(cuda::grid_for(E + 1, kThreads), kThreads, 0, offsets_kernel)(offsets, sorted_ids, S, E);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void moe_gather<Backend::CUDA>(float* xp, const float* x, const int32_t* sorted_slots, int N, int k, int d) {
  DSK_CHECK(N > 0 && k > 0 && d > 0, "moe_gather: bad shape N={} k={} d={}", N, k, d);
  const int64_t S = static_cast<int64_t>(N) * k;
  if (use_vec4(d, {xp, x})) {
    DSK_LAUNCH(cuda::grid_for(S * (d / 4), kThreads), kThreads, 0, gather_kernel<4>)(xp, x, sorted_slots, S, k, d / 4);
  } else {
    DSK_LAUNCH(cuda::grid_for(S * d, kThreads), kThreads, 0, gather_kernel<1>)(xp, x, sorted_slots, S, k, d);
  }
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void moe_gather_backward<Backend::CUDA>(float* dx, const float* dxp, const int32_t* slot_row, int N, int k, int d) {
  DSK_CHECK(N > 0 && k > 0 && d > 0, "moe_gather_backward: bad shape N={} k={} d={}", N, k, d);
  const int64_t Nn = N;
  if (use_vec4(d, {dx, dxp})) {
    DSK_LAUNCH(cuda::grid_for(Nn * (d / 4), kThreads), kThreads, 0, gather_backward_kernel<4>)(
        dx, dxp, slot_row, Nn, k, d / 4);
  } else {
    DSK_LAUNCH(cuda::grid_for(Nn * d, kThreads), kThreads, 0, gather_backward_kernel<1>)(dx, dxp, slot_row, Nn, k, d);
  }
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void moe_combine<Backend::CUDA>(float* y, const float* yp, const float* gate, const int32_t* slot_row, int N, int k,
                                int d) {
  DSK_CHECK(N > 0 && k > 0 && d > 0, "moe_combine: bad shape N={} k={} d={}", N, k, d);
  const int64_t Nn = N;
  if (use_vec4(d, {y, yp})) {
    DSK_LAUNCH(cuda::grid_for(Nn * (d / 4), kThreads), kThreads, 0, combine_kernel<4>)(
        y, yp, gate, slot_row, Nn, k, d / 4);
  } else {
    DSK_LAUNCH(cuda::grid_for(Nn * d, kThreads), kThreads, 0, combine_kernel<1>)(y, yp, gate, slot_row, Nn, k, d);
  }
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void moe_combine_backward<Backend::CUDA>(float* dyp, float* dgate, const float* dy, const float* yp,
                                         const float* gate, const int32_t* slot_row, int N, int k, int d) {
  DSK_CHECK(N > 0 && k > 0 && d > 0, "moe_combine_backward: bad shape N={} k={} d={}", N, k, d);
  const int64_t S = static_cast<int64_t>(N) * k;
  constexpr int kWarps = kThreads / 32;
  const unsigned blocks = cuda::grid_for(S * 32, kThreads);  // one warp per slot, grid-stride beyond the cap
  if (use_vec4(d, {dyp, dy, yp})) {
    DSK_LAUNCH(blocks, kThreads, 0, combine_backward_kernel<4>)(dyp, dgate, dy, yp, gate, slot_row, S, k, d / 4);
  } else {
    DSK_LAUNCH(blocks, kThreads, 0, combine_backward_kernel<1>)(dyp, dgate, dy, yp, gate, slot_row, S, k, d);
  }
  static_assert(kWarps * 32 == kThreads, "whole warps per block");
  DSK_CUDA_CHECK_LAUNCH();
}

}  // namespace dsk
