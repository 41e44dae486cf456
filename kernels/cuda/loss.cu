// Fused softmax cross-entropy on the GPU: one block per row. Pass 1 reads the row once with an online
// (running max, running sum) logsumexp; pass 2 writes the gradient over the logits. No probability tensor is
// ever stored, and the gradient may overwrite the logits in place.
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/loss.h"

namespace dsk {

namespace {

// A partial softmax normalizer: sum = Σ exp(x - max) over the elements seen. max = -inf means "none seen".
struct MaxSum {
  float max, sum;
};

__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.0f};  // both empty (or all -inf logits)
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

// Fixed butterfly over the warp, then warp results combined in warp order by warp 0: deterministic.
__device__ MaxSum block_combine(MaxSum v, MaxSum* shared) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, v.max, o), __shfl_xor_sync(0xffffffffu, v.sum, o)};
    v = combine(v, other);
  }
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    MaxSum t = shared[0];
    for (int w = 1; w < nwarps; ++w) t = combine(t, shared[w]);
    shared[0] = t;
  }
  __syncthreads();
  return shared[0];
}

// logits, dlogits (N, V) — may alias, so neither is __restrict__; losses, targets (N).
__global__ void cross_entropy_kernel(float* losses, float* dlogits, const float* logits,
                                     const int32_t* __restrict__ targets, int V, float dloss_scale) {
  DSK_SHARED(MaxSum, shared, [32]);
  DSK_SHARED(float, target_logit, );
  int64_t row = blockIdx.x;
  const float* x = logits + row * V;
  int target = targets[row];
  bool ignored = target < 0;
  bool bad = target >= V;

  // Read the target's logit before any thread may overwrite it with its gradient (the barrier in
  // block_combine orders this read before pass 2).
  if (threadIdx.x == 0) target_logit = (ignored || bad) ? 0.0f : x[target];

  MaxSum ms{-INFINITY, 0.0f};
  for (int c = threadIdx.x; c < V; c += blockDim.x) {
    float v = x[c];
    if (v == -INFINITY) continue;  // contributes exp(-inf) = 0; skipping avoids (-inf) - (-inf)
    if (v > ms.max) {
      ms.sum = ms.sum * expf(ms.max - v) + 1.0f;
      ms.max = v;
    } else {
      ms.sum += expf(v - ms.max);
    }
  }
  MaxSum total = block_combine(ms, shared);

  if (threadIdx.x == 0) {
    float loss = logf(total.sum) + total.max - target_logit;
    if (ignored) loss = 0.0f;
    if (bad) loss = __int_as_float(0x7fc00000);  // NaN: a target outside the vocabulary
    losses[row] = loss;
  }
  if (!dlogits) return;
  float* g = dlogits + row * V;
  if (ignored) {
    for (int c = threadIdx.x; c < V; c += blockDim.x) g[c] = 0.0f;
    return;
  }
  float inv_sum = 1.0f / total.sum;
  float nan_or_zero = bad ? __int_as_float(0x7fc00000) : 0.0f;
  for (int c = threadIdx.x; c < V; c += blockDim.x) {
    float p = expf(x[c] - total.max) * inv_sum;
    g[c] = ((p - (c == target ? 1.0f : 0.0f)) + nan_or_zero) * dloss_scale;
  }
}

}  // namespace

template <>
void cross_entropy_forward_backward<Backend::CUDA>(float* losses, float* dlogits, const float* logits,
                                                   const int32_t* targets, int N, int V, float dloss_scale) {
  DSK_CHECK(N > 0 && V > 0, "cross_entropy: bad shape N={} V={}", N, V);
  // Enough threads to stream a long row (GPT-2's V = 50257) with many loads in flight; fewer for short rows.
  int threads = V >= 16384 ? 1024 : (V >= 2048 ? 512 : 128);
  DSK_LAUNCH(static_cast<unsigned>(N), threads, 0, cross_entropy_kernel)(
      losses, dlogits, logits, targets, V, dloss_scale);
  DSK_CUDA_CHECK_LAUNCH();
}

}  // namespace dsk
