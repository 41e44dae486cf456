// Token + position embedding on the GPU. Forward is a gather. Backward is a scatter-add, made deterministic
// without float atomics: the rows are grouped by their table row with a stable radix sort (CUB), and one thread
// per (table row, column) adds that row's contributions in increasing (b, t) order — the order the CPU uses.
#include "kernels/cuda/runtime.cuh"
#include "kernels/embedding.h"

#include <cub/device/device_radix_sort.cuh>

namespace dsk {

namespace {

constexpr int kThreads = 256;

// out (Bsz*T, d) = wte[tokens[r]] + wpe[pos(r)]. An out-of-range token or position writes NaN (a kernel cannot
// throw; the NaN makes the bad input visible in the loss instead of reading out of bounds).
__global__ void embedding_forward_kernel(float* __restrict__ out, const int32_t* __restrict__ tokens,
                                         const int32_t* __restrict__ positions, const float* __restrict__ wte,
                                         const float* __restrict__ wpe, int64_t rows, int T, int d, int V) {
  int64_t total = rows * d;
  DSK_GRID_STRIDE(i, total) {
    int64_t r = i / d;
    int c = static_cast<int>(i % d);
    int32_t tok = tokens[r];
    int32_t pos = positions ? positions[r] : static_cast<int32_t>(r % T);
    if (tok < 0 || tok >= V || pos < 0) {
      out[i] = __int_as_float(0x7fc00000);  // quiet NaN
      continue;
    }
    out[i] = wte[static_cast<int64_t>(tok) * d + c] + wpe[static_cast<int64_t>(pos) * d + c];
  }
}

// The sorted (key, row) pairs: keys[j] is a table row, rows[j] the input row (b*T + t) that reads it, in
// increasing row order within one key (the sort is stable and the rows went in in order). The thread of
// (segment start j, column c) adds the whole segment to table[keys[j], c], starting from the table's value, so
// the additions happen in the same order as the CPU's loop over (b, t). Keys outside [0, nkeys) are skipped.
__global__ void segment_accumulate_kernel(float* __restrict__ table, const float* __restrict__ dout,
                                          const int32_t* __restrict__ keys, const int32_t* __restrict__ rows,
                                          int64_t n, int d, int nkeys) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  int64_t j = blockIdx.y + static_cast<int64_t>(blockIdx.z) * gridDim.y;
  if (c >= d || j >= n) return;
  int32_t key = keys[j];
  if (j > 0 && keys[j - 1] == key) return;  // not the start of a segment
  if (key < 0 || key >= nkeys) return;
  // Find the segment's end first, so the summing loop has a known trip count and its loads can be issued
  // several at a time (a frequent token has hundreds of rows); the additions stay in order.
  int64_t e = j + 1;
  while (e < n && keys[e] == key) ++e;
  float* dst = table + static_cast<int64_t>(key) * d + c;
  float acc = *dst;
#pragma unroll 4
  for (int64_t k = j; k < e; ++k) acc += dout[static_cast<int64_t>(rows[k]) * d + c];
  *dst = acc;
}

// dwpe[t, c] += Σ_b dout[b, t, c] in increasing b (positions absent: pos(b, t) = t).
__global__ void position_accumulate_kernel(float* __restrict__ dwpe, const float* __restrict__ dout, int Bsz, int T,
                                           int d) {
  int64_t total = static_cast<int64_t>(T) * d;
  DSK_GRID_STRIDE(i, total) {
    float acc = dwpe[i];
    for (int b = 0; b < Bsz; ++b) acc += dout[static_cast<int64_t>(b) * total + i];
    dwpe[i] = acc;
  }
}

__global__ void iota_kernel(int32_t* __restrict__ v, int64_t n) {
  DSK_GRID_STRIDE(i, n)
    v[i] = static_cast<int32_t>(i);
}

// table (nkeys, d) += the rows of dout (n, d) grouped by keys (n), deterministically (see above).
// The sort looks at all 32 bits: with fewer, an invalid (negative) key could tie with a valid one, split its
// segment in two, and two threads would then race on one table row.
void sorted_accumulate(float* table, const float* dout, const int32_t* keys, int64_t n, int d, int nkeys) {
  const int end_bit = 32;
  DSK_CHECK(n < (int64_t(1) << 31), "embedding_backward: {} rows overflow int32 row ids", n);
  int num = static_cast<int>(n);
  size_t temp_bytes = 0;
  DSK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, static_cast<const int32_t*>(nullptr),
                                                 static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                 static_cast<int32_t*>(nullptr), num, 0, end_bit, cuda::stream()));
  // scratch layout: sorted keys (n) | row ids (n) | sorted row ids (n) | CUB's temp storage, each 256-aligned
  auto align = [](size_t b) { return (b + 255) / 256 * 256; };
  size_t ints = align(sizeof(int32_t) * static_cast<size_t>(n));
  char* base = static_cast<char*>(cuda::scratch(3 * ints + align(temp_bytes)));
  int32_t* keys_sorted = reinterpret_cast<int32_t*>(base);
  int32_t* rows_in = reinterpret_cast<int32_t*>(base + ints);
  int32_t* rows_sorted = reinterpret_cast<int32_t*>(base + 2 * ints);
  void* temp = base + 3 * ints;

  DSK_LAUNCH(cuda::grid_for(n, kThreads), kThreads, 0, iota_kernel)(rows_in, n);
  DSK_CUDA_CHECK_LAUNCH();
  DSK_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, keys_sorted, rows_in, rows_sorted, num, 0,
                                                 end_bit, cuda::stream()));
  // grid: x over columns, (y, z) over sorted positions (y ≤ 65535, so z carries the rest)
  int threads = d < 128 ? 32 * static_cast<int>(cuda::ceil_div(d, 32)) : 128;
  unsigned gx = static_cast<unsigned>(cuda::ceil_div(d, threads));
  unsigned gy = static_cast<unsigned>(n < 65535 ? n : 65535);
  unsigned gz = static_cast<unsigned>(cuda::ceil_div(n, gy));
  DSK_LAUNCH(dim3(gx, gy, gz), threads, 0, segment_accumulate_kernel)(
      table, dout, keys_sorted, rows_sorted, n, d, nkeys);
  DSK_CUDA_CHECK_LAUNCH();
}

}  // namespace

template <>
void embedding_forward<Backend::CUDA>(float* out, const int32_t* tokens, const int32_t* positions, const float* wte,
                                      const float* wpe, int Bsz, int T, int d) {
  DSK_CHECK(Bsz > 0 && T > 0 && d > 0, "embedding_forward: bad shape Bsz={} T={} d={}", Bsz, T, d);
  int64_t rows = static_cast<int64_t>(Bsz) * T;
  // The contract passes no vocabulary size here, so only negative tokens are caught (V = INT32_MAX).
  DSK_LAUNCH(cuda::grid_for(rows * d, kThreads), kThreads, 0, embedding_forward_kernel)(
      out, tokens, positions, wte, wpe, rows, T, d, 0x7fffffff);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void embedding_backward<Backend::CUDA>(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                                       const int32_t* positions, int Bsz, int T, int d, int V) {
  DSK_CHECK(Bsz > 0 && T > 0 && d > 0 && V > 0, "embedding_backward: bad shape Bsz={} T={} d={} V={}", Bsz, T, d,
            V);
  int64_t rows = static_cast<int64_t>(Bsz) * T;
  if (dwte) sorted_accumulate(dwte, dout, tokens, rows, d, V);
  if (dwpe) {
    if (positions) {
      // Arbitrary positions: the same grouping by sort. The table size (ctx) is not passed, so every
      // non-negative position is taken as valid.
      sorted_accumulate(dwpe, dout, positions, rows, d, 0x7fffffff);
    } else {
      DSK_LAUNCH(cuda::grid_for(int64_t(T) * d, kThreads), kThreads, 0, position_accumulate_kernel)(
          dwpe, dout, Bsz, T, d);
      DSK_CUDA_CHECK_LAUNCH();
    }
  }
}

}  // namespace dsk
