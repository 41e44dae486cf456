#pragma once
// Evaluation: mean cross-entropy and perplexity over a token sequence, no dropout, no router noise.
// Convention (so results compare across tools): tokens t[0..N-1] are cut into non-overlapping windows of
// seq_len; window i feeds t[i·T .. min((i+1)·T, N−1)) and predicts the next token at each position; the loss is
// the mean over all N−1 predictions.
#include "engine/arena.h"
#include "engine/model.h"

#include <cstdint>
#include <vector>

namespace dsk {

struct EvalResult {
  double loss = 0;          // mean cross-entropy per predicted token
  double perplexity = 0;    // exp(loss)
  int64_t tokens = 0;       // predictions made
  int64_t windows = 0;
  std::vector<std::vector<double>> expert_load;  // per layer, per expert: fraction of token slots (mean)
};

// max_windows > 0 evaluates only the first max_windows windows. `arena` must hold a batch × seq_len
// inference forward (plan_memory(..., training = false)).
// Bytes an evaluation arena needs for this batch and window: the inference plan plus the batch itself.
size_t eval_arena_bytes(const ModelConfig& c, int batch, int seq_len);

EvalResult evaluate(Model& m, const uint16_t* tokens, size_t n_tokens, int seq_len, int batch, int64_t max_windows,
                    Arena& arena);

}  // namespace dsk
