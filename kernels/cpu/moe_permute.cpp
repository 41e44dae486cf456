// CPU token dispatch for the MoE (kernels/moe.h): stable counting sort of the slots by expert id, the gather
// into expert-contiguous rows, and the gate-weighted combine back to tokens. Every output element is written by
// exactly one loop iteration reading a fixed set of inputs, so results do not depend on the thread count.
#include "kernels/moe.h"

#include <cstring>
#include <vector>

namespace dsk {

template <>
void moe_all_experts_index<Backend::CPU>(int32_t* expert_idx, int N, int k) {
  DSK_CHECK(N > 0 && k > 0, "moe_all_experts_index: bad shape N={} k={}", N, k);
  for (int64_t s = 0; s < static_cast<int64_t>(N) * k; ++s) expert_idx[s] = static_cast<int32_t>(s % k);
}

template <>
void moe_permute<Backend::CPU>(int32_t* sorted_slots, int32_t* slot_row, int32_t* offsets,
                               const int32_t* expert_idx, int N, int E, int k) {
  DSK_CHECK(N > 0 && E > 0 && k > 0, "moe_permute: bad shape N={} E={} k={}", N, E, k);
  const int S = N * k;  // slots
  // Histogram of expert ids.
  std::vector<int32_t> count(E, 0);
  for (int s = 0; s < S; ++s) {
    int e = expert_idx[s];
    DSK_CHECK(e >= 0 && e < E, "moe_permute: expert id {} of slot {} out of range [0, {})", e, s, E);
    ++count[e];
  }
  // Exclusive scan: expert e's rows start at offsets[e].
  offsets[0] = 0;
  for (int e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + count[e];
  // Scatter in slot order, which makes the sort stable (slot order inside an expert).
  std::vector<int32_t> cursor(offsets, offsets + E);
  for (int s = 0; s < S; ++s) {
    int r = cursor[expert_idx[s]]++;
    sorted_slots[r] = s;
    slot_row[s] = r;
  }
}

template <>
void moe_gather<Backend::CPU>(float* xp, const float* x, const int32_t* sorted_slots, int N, int k, int d) {
  DSK_CHECK(N > 0 && k > 0 && d > 0, "moe_gather: bad shape N={} k={} d={}", N, k, d);
  const int S = N * k;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < S; ++r) {
    int n = sorted_slots[r] / k;
    std::memcpy(xp + static_cast<size_t>(r) * d, x + static_cast<size_t>(n) * d, sizeof(float) * d);
  }
}

template <>
void moe_gather_backward<Backend::CPU>(float* dx, const float* dxp, const int32_t* slot_row, int N, int k, int d) {
  DSK_CHECK(N > 0 && k > 0 && d > 0, "moe_gather_backward: bad shape N={} k={} d={}", N, k, d);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* out = dx + static_cast<size_t>(n) * d;
    // Sum the token's k rows in slot order: the same order on every backend.
    const float* first = dxp + static_cast<size_t>(slot_row[static_cast<size_t>(n) * k]) * d;
    for (int c = 0; c < d; ++c) out[c] = first[c];
    for (int j = 1; j < k; ++j) {
      const float* row = dxp + static_cast<size_t>(slot_row[static_cast<size_t>(n) * k + j]) * d;
      for (int c = 0; c < d; ++c) out[c] += row[c];
    }
  }
}

template <>
void moe_combine<Backend::CPU>(float* y, const float* yp, const float* gate, const int32_t* slot_row, int N, int k,
                               int d) {
  DSK_CHECK(N > 0 && k > 0 && d > 0, "moe_combine: bad shape N={} k={} d={}", N, k, d);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* out = y + static_cast<size_t>(n) * d;
    for (int c = 0; c < d; ++c) out[c] = 0.0f;
    for (int j = 0; j < k; ++j) {
      size_t s = static_cast<size_t>(n) * k + j;
      const float* row = yp + static_cast<size_t>(slot_row[s]) * d;
      float g = gate[s];
      for (int c = 0; c < d; ++c) out[c] += g * row[c];
    }
  }
}

template <>
void moe_combine_backward<Backend::CPU>(float* dyp, float* dgate, const float* dy, const float* yp, const float* gate,
                                        const int32_t* slot_row, int N, int k, int d) {
  DSK_CHECK(N > 0 && k > 0 && d > 0, "moe_combine_backward: bad shape N={} k={} d={}", N, k, d);
  const int S = N * k;
#pragma omp parallel for schedule(static)
  for (int s = 0; s < S; ++s) {
    const float* g_out = dy + static_cast<size_t>(s / k) * d;  // (d) the token's output gradient
    size_t r = static_cast<size_t>(slot_row[s]);
    const float* row = yp + r * d;
    float* drow = dyp + r * d;
    float g = gate[s], acc = 0.0f;
    for (int c = 0; c < d; ++c) {
      drow[c] = g * g_out[c];
      acc += g_out[c] * row[c];
    }
    dgate[s] = acc;
  }
}

}  // namespace dsk
