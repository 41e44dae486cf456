#pragma once
// Choosing the next token from logits: temperature, top-k, top-p (nucleus), seeded.
//
// The order is the original project's, kept on purpose:
//   1. top-k on the RAW logits: every logit below the k-th largest is dropped (ties with the k-th are kept, as
//      the original's `logits < min_val → -inf` did);
//   2. temperature: the kept logits are divided by T (T = 0 means greedy: the argmax, lowest id on ties);
//   3. softmax over the kept logits;
//   4. top-p: tokens sorted by probability (descending, lower id first on ties); the smallest prefix whose
//      probability sums to at least p is kept (always at least one token); p = 1 keeps all;
//   5. the kept probabilities are renormalized and one token is drawn by inverse CDF (over the sorted order when
//      top-p is on, over token ids in increasing order when it is off) with
//      a 24-bit uniform from the counter-based generator (kernels/rng.h) keyed by (seed, step, row): the same
//      seed gives the same tokens on every machine and backend (sampling runs on the host).
// Because top-k runs before the temperature, the temperature changes how the kept tokens share probability
// but never which tokens top-k keeps.
#include <cstdint>
#include <vector>

namespace dsk {

struct SamplingParams {
  float temperature = 0.8f;  // 0 = greedy
  int top_k = 40;            // 0 = off
  float top_p = 1.0f;        // 1 = off
};

// Throws dsk::Error naming the bad value: temperature >= 0 and finite, top_k >= 0, 0 < top_p <= 1.
void validate(const SamplingParams& p);

// The distribution a draw is made from (steps 1-4): token ids in draw order with renormalized probabilities.
struct Candidates {
  std::vector<int32_t> ids;
  std::vector<float> probs;
};
Candidates sampling_candidates(const float* logits, int vocab, const SamplingParams& p);

// Index of the largest logit (lowest id on ties).
int32_t argmax_token(const float* logits, int vocab);

// The next token: argmax when temperature == 0, else a draw with uniform u in [0, 1).
int32_t sample_token(const float* logits, int vocab, const SamplingParams& p, float u);

// The uniform for generation step `step` of row `row` under `seed`.
float sampling_uniform(uint64_t seed, uint64_t step, uint32_t row);

}  // namespace dsk
