// CPU noisy top-k router and Switch load-balancing loss (kernels/moe.h): the specification for CUDA.
#include "kernels/moe.h"
#include "kernels/rng.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dsk {

namespace {

// softplus(x) = log(1 + e^x), written so that large |x| neither overflows nor loses the linear part.
inline float softplus(float x) { return std::max(x, 0.0f) + std::log1p(std::exp(-std::abs(x))); }

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Is expert e already among the first j choices of this token?
inline bool already_chosen(const int32_t* chosen, int j, int e) {
  for (int i = 0; i < j; ++i)
    if (chosen[i] == e) return true;
  return false;
}

}  // namespace

template <>
void moe_router_forward<Backend::CPU>(int32_t* expert_idx, float* gate, float* noisy, float* probs,
                                      const float* logits, const float* noise_logits, int N, int E, int k,
                                      uint64_t seed, uint64_t site) {
  check_router_forward(N, E, k);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* l = logits + static_cast<size_t>(n) * E;
    float* z = noisy + static_cast<size_t>(n) * E;  // (E) this token's noisy logits
    float* p = probs + static_cast<size_t>(n) * E;  // (E) clean softmax
    int32_t* idx = expert_idx + static_cast<size_t>(n) * k;
    float* g = gate + static_cast<size_t>(n) * k;

    for (int e = 0; e < E; ++e) {
      float v = l[e];
      if (noise_logits) {
        uint64_t i = static_cast<uint64_t>(n) * E + e;
        v += rng::normal(seed, site, i) * softplus(noise_logits[i]);
      }
      z[e] = v;
    }

    // Clean probabilities (for the aux loss): max-subtracted softmax.
    float lmax = l[0];
    for (int e = 1; e < E; ++e) lmax = std::max(lmax, l[e]);
    float lsum = 0;
    for (int e = 0; e < E; ++e) lsum += (p[e] = std::exp(l[e] - lmax));
    for (int e = 0; e < E; ++e) p[e] /= lsum;

    // Top-k by k selection passes (k and E are small). Strict '>' keeps the lower expert id on ties,
    // and the picks come out in descending order.
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int e = 0; e < E; ++e) {
        if (already_chosen(idx, j, e)) continue;
        if (best < 0 || z[e] > z[best]) best = e;
      }
      idx[j] = best;
    }

    // Softmax over the k selected noisy values; the first is the largest.
    float zmax = z[idx[0]], gsum = 0;
    for (int j = 0; j < k; ++j) gsum += (g[j] = std::exp(z[idx[j]] - zmax));
    for (int j = 0; j < k; ++j) g[j] /= gsum;
  }
}

template <>
void moe_router_backward<Backend::CPU>(float* dlogits, float* dnoise_logits, const float* dgate, const float* gate,
                                       const int32_t* expert_idx, const float* noise_logits, int N, int E, int k,
                                       uint64_t seed, uint64_t site) {
  check_router_backward(N, E, k, dnoise_logits, noise_logits);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* g = gate + static_cast<size_t>(n) * k;
    const float* dg = dgate + static_cast<size_t>(n) * k;
    const int32_t* idx = expert_idx + static_cast<size_t>(n) * k;
    float* dl = dlogits + static_cast<size_t>(n) * E;
    float* dnl = dnoise_logits ? dnoise_logits + static_cast<size_t>(n) * E : nullptr;
    for (int e = 0; e < E; ++e) dl[e] = 0.0f;
    if (dnl)
      for (int e = 0; e < E; ++e) dnl[e] = 0.0f;

    // Softmax Jacobian over the selected values: dz_j = g_j (dg_j - Σ_i g_i dg_i). The top-k choice is
    // piecewise constant, so unselected experts get no gradient.
    float gdg = 0;
    for (int j = 0; j < k; ++j) gdg += g[j] * dg[j];
    for (int j = 0; j < k; ++j) {
      int e = idx[j];
      float dz = g[j] * (dg[j] - gdg);
      dl[e] = dz;  // noisy = logits + ...: d logits = d noisy
      if (dnl) {
        uint64_t i = static_cast<uint64_t>(n) * E + e;
        dnl[e] = dz * rng::normal(seed, site, i) * sigmoid(noise_logits[i]);
      }
    }
  }
}

template <>
void moe_aux_loss_forward<Backend::CPU>(float* aux, float* load, float* importance, const float* probs,
                                        const int32_t* expert_idx, int N, int E, int k, float coef) {
  check_aux_loss_forward(N, E, k);
  // Slot counts per expert (N*k is small; serial keeps it simple and exact).
  std::vector<long long> count(E, 0);
  for (long long s = 0; s < static_cast<long long>(N) * k; ++s) {
    int e = expert_idx[s];
    DSK_CHECK(e >= 0 && e < E, "moe_aux_loss_forward: expert id {} out of range [0, {})", e, E);
    ++count[e];
  }
  double total = 0;
  // Column means in double, one expert per iteration: deterministic whatever the thread count.
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int e = 0; e < E; ++e) {
    double sum = 0;
    for (int n = 0; n < N; ++n) sum += probs[static_cast<size_t>(n) * E + e];
    double f = static_cast<double>(count[e]) / (static_cast<double>(N) * k);
    double P = sum / N;
    load[e] = static_cast<float>(f);
    importance[e] = static_cast<float>(P);
    total += f * P;
  }
  aux[0] = static_cast<float>(coef * E * total);
}

template <>
void moe_aux_loss_backward<Backend::CPU>(float* dlogits, float daux, const float* probs, const float* load, int N,
                                         int E, float coef) {
  check_aux_loss_backward(N, E);
  // d aux / d probs[n, i] = coef * E * f_i / N  (the same for every token); then through the softmax:
  // dlogits[n, e] = p_e (g_e - Σ_i p_i g_i).
  std::vector<float> g(E);
  for (int e = 0; e < E; ++e) g[e] = daux * coef * E * load[e] / N;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* p = probs + static_cast<size_t>(n) * E;
    float* dl = dlogits + static_cast<size_t>(n) * E;
    float pg = 0;
    for (int e = 0; e < E; ++e) pg += p[e] * g[e];
    for (int e = 0; e < E; ++e) dl[e] = p[e] * (g[e] - pg);
  }
}

}  // namespace dsk
