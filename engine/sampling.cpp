#include "engine/sampling.h"

#include "kernels/common.h"
#include "kernels/rng.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace dsk {

void validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    throw Error(fmt::format("temperature must be a number >= 0, got {}", p.temperature));
  if (p.top_k < 0) throw Error(fmt::format("top-k must be >= 0 (0 = off), got {}", p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) throw Error(fmt::format("top-p must be in (0, 1], got {}", p.top_p));
}

int32_t argmax_token(const float* logits, int vocab) {
  int32_t best = 0;
  for (int i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

Candidates sampling_candidates(const float* logits, int vocab, const SamplingParams& p) {
  validate(p);
  DSK_CHECK(vocab > 0, "sampling: empty vocabulary");
  // 1. top-k on the raw logits (ties with the k-th largest kept).
  std::vector<int32_t> ids;
  if (p.top_k > 0 && p.top_k < vocab) {
    std::vector<float> sorted(logits, logits + vocab);
    std::nth_element(sorted.begin(), sorted.begin() + (p.top_k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[p.top_k - 1];
    for (int i = 0; i < vocab; ++i)
      if (logits[i] >= kth) ids.push_back(i);
  } else {
    ids.resize(vocab);
    std::iota(ids.begin(), ids.end(), 0);
  }
  Candidates c;
  if (p.temperature == 0.0f) {  // greedy: one candidate
    int32_t best = ids[0];
    for (int32_t i : ids)
      if (logits[i] > logits[best]) best = i;
    c.ids = {best};
    c.probs = {1.0f};
    return c;
  }
  // 2-3. temperature, softmax (in double: 50k terms).
  float mx = -INFINITY;
  for (int32_t i : ids) mx = std::max(mx, logits[i]);
  std::vector<double> prob(ids.size());
  double sum = 0;
  for (size_t j = 0; j < ids.size(); ++j) {
    prob[j] = std::exp((static_cast<double>(logits[ids[j]]) - mx) / p.temperature);
    sum += prob[j];
  }
  for (double& q : prob) q /= sum;
  // 4. top-p over the tokens sorted by probability, descending (lower id first on ties).
  std::vector<size_t> order(ids.size());
  std::iota(order.begin(), order.end(), 0);
  size_t keep = order.size();
  if (p.top_p < 1.0f) {
    // (Sorting 50k probabilities costs ~ms per token, so it is done only when top-p needs it.)
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return prob[a] > prob[b]; });
    double cum = 0;
    for (size_t j = 0; j < order.size(); ++j) {
      cum += prob[order[j]];
      if (cum >= p.top_p) {
        keep = j + 1;
        break;
      }
    }
  }
  double kept_sum = 0;
  for (size_t j = 0; j < keep; ++j) kept_sum += prob[order[j]];
  for (size_t j = 0; j < keep; ++j) {
    c.ids.push_back(ids[order[j]]);
    c.probs.push_back(static_cast<float>(prob[order[j]] / kept_sum));
  }
  return c;
}

int32_t sample_token(const float* logits, int vocab, const SamplingParams& p, float u) {
  if (p.temperature == 0.0f) {
    validate(p);
    return argmax_token(logits, vocab);  // top-k cannot change the argmax
  }
  const Candidates c = sampling_candidates(logits, vocab, p);
  // 5. inverse CDF; the last candidate absorbs rounding.
  double cum = 0;
  for (size_t j = 0; j + 1 < c.ids.size(); ++j) {
    cum += c.probs[j];
    if (u < cum) return c.ids[j];
  }
  return c.ids.back();
}

float sampling_uniform(uint64_t seed, uint64_t step, uint32_t row) {
  return rng::uniform(seed, rng::make_site(step, row, /*kind: sampling*/ 6), 0);
}

}  // namespace dsk
