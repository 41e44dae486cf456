// CUDA noisy top-k router and Switch load-balancing loss (kernels/moe.h); the CPU file kernels/cpu/moe_router.cpp
// is the specification. One warp per token for the router: E and k are small (4..64 experts), so a warp holds a
// token's E logits in shared memory and picks the top k by k warp arg-max passes. Every reduction has a fixed
// combination order, so results are bit-identical from run to run.
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/moe.h"
#include "kernels/rng.h"

namespace dsk {

namespace {

constexpr int kRouterWarps = 4;  // tokens per block in the router kernels (one warp each)
constexpr int kMaxRouterExperts = 1024;  // keeps the router's shared memory under 48 KB (4 warps x (2E + k) x 4 B)

__device__ __forceinline__ float softplus_f(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// The better of two (value, id) candidates: the larger value, ties to the lower id; id < 0 means "none".
// Comparing (value, id) pairs this way is a total order on non-NaN values, so the butterfly below gives every lane
// the same winner, and it is the one the CPU's "first strict maximum in id order" scan picks.
__device__ __forceinline__ void better(float& v, int& id, float ov, int oid) {
  if (oid < 0) return;
  if (id < 0 || ov > v || (ov == v && oid < id)) {
    v = ov;
    id = oid;
  }
}

// ---- router forward -------------------------------------------------------------------------------------------
// Block: kRouterWarps warps, one token each. Shared memory per warp: z (E) noisy logits, taken (E) flags, pick (k).
__global__ void router_forward_kernel(int32_t* __restrict__ expert_idx, float* __restrict__ gate,
                                      float* __restrict__ noisy, float* __restrict__ probs,
                                      const float* __restrict__ logits, const float* __restrict__ noise_logits, int N,
                                      int E, int k, uint64_t seed, uint64_t site) {
  DSK_DYNAMIC_SHARED(float, router_smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * kRouterWarps + warp;
  float* z = router_smem + static_cast<size_t>(warp) * (2 * E + k);  // (E)
  int* taken = reinterpret_cast<int*>(z + E);                         // (E)
  int* pick = taken + E;                                              // (k)
  if (n >= N) return;  // whole warp leaves together; no block-wide barrier follows

  const size_t row = static_cast<size_t>(n) * E;
  // Noisy logits (written out for backward) and the clean logits' max.
  float lmax = -INFINITY;
  for (int e = lane; e < E; e += 32) {
    float l = logits[row + e];
    float v = l;
    if (noise_logits) {
      uint64_t i = static_cast<uint64_t>(row) + e;
      v += rng::normal(seed, site, i) * softplus_f(noise_logits[i]);
    }
    z[e] = v;
    taken[e] = 0;
    noisy[row + e] = v;
    lmax = fmaxf(lmax, l);
  }
  lmax = cuda::warp_max(lmax);

  // Clean softmax for the aux loss.
  float lsum = 0.0f;
  for (int e = lane; e < E; e += 32) lsum += expf(logits[row + e] - lmax);
  lsum = cuda::warp_sum(lsum);
  for (int e = lane; e < E; e += 32) probs[row + e] = expf(logits[row + e] - lmax) / lsum;
  __syncwarp();  // z and taken written by other lanes are read below

  // Top-k: k arg-max passes over the experts not yet taken; picks come out in descending order.
  for (int j = 0; j < k; ++j) {
    float bv = 0.0f;
    int bid = -1;
    for (int e = lane; e < E; e += 32)  // ascending e with strict '>' inside better(): lowest id on ties
      if (!taken[e]) better(bv, bid, z[e], e);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      int oid = __shfl_xor_sync(0xffffffffu, bid, o);
      better(bv, bid, ov, oid);
    }
    if (lane == 0) {
      taken[bid] = 1;
      pick[j] = bid;
    }
    __syncwarp();
  }

  // Softmax over the k selected noisy values; the first pick is the largest.
  const float zmax = z[pick[0]];
  float gsum = 0.0f;
  for (int j = lane; j < k; j += 32) gsum += expf(z[pick[j]] - zmax);
  gsum = cuda::warp_sum(gsum);
  for (int j = lane; j < k; j += 32) {
    size_t s = static_cast<size_t>(n) * k + j;
    expert_idx[s] = pick[j];
    gate[s] = expf(z[pick[j]] - zmax) / gsum;
  }
}

// ---- router backward ------------------------------------------------------------------------------------------
// One thread per (token, expert): zero unless the expert is among the token's k picks (k is small, so each
// thread scans them), then dz_j = g_j (dg_j - Σ_i g_i dg_i) with the sum in pick order, as the CPU.
__global__ void router_backward_kernel(float* __restrict__ dlogits, float* __restrict__ dnoise_logits,
                                       const float* __restrict__ dgate, const float* __restrict__ gate,
                                       const int32_t* __restrict__ expert_idx, const float* __restrict__ noise_logits,
                                       int N, int E, int k, uint64_t seed, uint64_t site) {
  const int64_t total = static_cast<int64_t>(N) * E;
  DSK_GRID_STRIDE(i, total) {
    const int64_t n = i / E;
    const int e = static_cast<int>(i % E);
    const float* g = gate + n * k;
    const float* dg = dgate + n * k;
    const int32_t* idx = expert_idx + n * k;
    int j_sel = -1;
    for (int j = 0; j < k; ++j)
      if (idx[j] == e) j_sel = j;
    float dz = 0.0f;
    if (j_sel >= 0) {
      float gdg = 0.0f;
      for (int j = 0; j < k; ++j) gdg += g[j] * dg[j];
      dz = g[j_sel] * (dg[j_sel] - gdg);
    }
    dlogits[i] = dz;
    if (dnoise_logits)
      dnoise_logits[i] =
          j_sel >= 0 ? dz * rng::normal(seed, site, static_cast<uint64_t>(i)) * sigmoid_f(noise_logits[i]) : 0.0f;
  }
}

// ---- aux loss -------------------------------------------------------------------------------------------------
// Block e: the slot count of expert e (integer, exact) and Σ_n probs[n, e] in double, each thread summing a fixed
// stride of tokens, then a fixed-order block sum. Writes load[e], importance[e] and f_e * P_e for the finalize.
constexpr int kAuxThreads = 256;

__global__ void aux_stats_kernel(float* __restrict__ load, float* __restrict__ importance,
                                 double* __restrict__ fp, const float* __restrict__ probs,
                                 const int32_t* __restrict__ expert_idx, int N, int E, int k) {
  DSK_SHARED(double, shared_d, [32]);
  DSK_SHARED(long long, shared_c, [32]);
  const int e = blockIdx.x;
  const int64_t S = static_cast<int64_t>(N) * k;
  long long count = 0;
  for (int64_t s = threadIdx.x; s < S; s += blockDim.x) count += expert_idx[s] == e ? 1 : 0;
  double sum = 0.0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) sum += probs[n * E + e];
  count = cuda::block_sum(count, shared_c);
  sum = cuda::block_sum(sum, shared_d);
  if (threadIdx.x == 0) {
    double f = static_cast<double>(count) / (static_cast<double>(N) * k);
    double P = sum / N;
    load[e] = static_cast<float>(f);
    importance[e] = static_cast<float>(P);
    fp[e] = f * P;
  }
}

// aux = coef * E * Σ_e f_e P_e, summed in expert order by one thread (E is small).
__global__ void aux_finalize_kernel(float* __restrict__ aux, const double* __restrict__ fp, int E, float coef) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double total = 0.0;
  for (int e = 0; e < E; ++e) total += fp[e];
  aux[0] = static_cast<float>(coef * E * total);
}

// One warp per token: dlogits[n, e] = p_e (g_e - Σ_i p_i g_i) with g_e = daux * coef * E * load[e] / N.
__global__ void aux_backward_kernel(float* __restrict__ dlogits, float daux, const float* __restrict__ probs,
                                    const float* __restrict__ load, int N, int E, float coef) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + warp;
  if (n >= N) return;
  const float* p = probs + n * E;
  float* dl = dlogits + n * E;
  auto g = [&](int e) { return daux * coef * E * load[e] / N; };  // the CPU's float expression, same order
  float pg = 0.0f;
  for (int e = lane; e < E; e += 32) pg += p[e] * g(e);
  pg = cuda::warp_sum(pg);
  for (int e = lane; e < E; e += 32) dl[e] = p[e] * (g(e) - pg);
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------------------------------

template <>
void moe_router_forward<Backend::CUDA>(int32_t* expert_idx, float* gate, float* noisy, float* probs,
                                       const float* logits, const float* noise_logits, int N, int E, int k,
                                       uint64_t seed, uint64_t site) {
  check_router_forward(N, E, k);
  DSK_CHECK(E <= kMaxRouterExperts, "moe_router_forward: E={} experts is more than the CUDA router handles ({})", E,
            kMaxRouterExperts);
  const size_t smem = sizeof(float) * kRouterWarps * (2 * static_cast<size_t>(E) + k);
  const unsigned blocks = static_cast<unsigned>(cuda::ceil_div(N, kRouterWarps));
  DSK_LAUNCH(blocks, 32 * kRouterWarps, smem, router_forward_kernel)(
      expert_idx, gate, noisy, probs, logits, noise_logits, N, E, k, seed, site);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void moe_router_backward<Backend::CUDA>(float* dlogits, float* dnoise_logits, const float* dgate, const float* gate,
                                        const int32_t* expert_idx, const float* noise_logits, int N, int E, int k,
                                        uint64_t seed, uint64_t site) {
  check_router_backward(N, E, k, dnoise_logits, noise_logits);
  const int64_t total = static_cast<int64_t>(N) * E;
  DSK_LAUNCH(cuda::grid_for(total, 256), 256, 0, router_backward_kernel)(
      dlogits, dnoise_logits, dgate, gate, expert_idx, noise_logits, N, E, k, seed, site);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void moe_aux_loss_forward<Backend::CUDA>(float* aux, float* load, float* importance, const float* probs,
                                         const int32_t* expert_idx, int N, int E, int k, float coef) {
  check_aux_loss_forward(N, E, k);
  // Expert ids are not range-checked on the device (that would need a host sync); an id outside [0, E) is simply
  // not counted, so the loads then sum to less than 1. The CPU specification throws instead.
  double* fp = static_cast<double*>(cuda::scratch(sizeof(double) * static_cast<size_t>(E)));
  DSK_LAUNCH(E, kAuxThreads, 0, aux_stats_kernel)(load, importance, fp, probs, expert_idx, N, E, k);
  DSK_CUDA_CHECK_LAUNCH();
  DSK_LAUNCH(1, 32, 0, aux_finalize_kernel)(aux, fp, E, coef);
  DSK_CUDA_CHECK_LAUNCH();
}

template <>
void moe_aux_loss_backward<Backend::CUDA>(float* dlogits, float daux, const float* probs, const float* load, int N,
                                          int E, float coef) {
  check_aux_loss_backward(N, E);
  constexpr int kWarps = 8;
  DSK_LAUNCH(static_cast<unsigned>(cuda::ceil_div(N, kWarps)), 32 * kWarps, 0, aux_backward_kernel)(
      dlogits, daux, probs, load, N, E, coef);
  DSK_CUDA_CHECK_LAUNCH();
}

}  // namespace dsk
