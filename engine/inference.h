#pragma once
// The inference engine: runs a Model's weights by calling the kernels directly (no tape, no gradients), with a
// KV cache (engine/kv_cache.h).
//
//   prefill(prompts)  the whole batch of prompts in one pass; returns each row's next-token logits
//   decode(next)      one token per row, attending the cache; returns each row's next-token logits
//
// Prompts of different lengths are LEFT-padded: every row's newest token sits in the same cache slot, so one
// decode step appends one slot for the whole batch. Row b's padding is masked by attention's kv_start[b], and its
// positions start at 0 at its first real token (embedding_forward's positions array), so a row in a batch computes
// what it would compute alone.
//
// Positions are learned and absolute (the model knows positions 0 .. context_length−1 only). When a decode step
// would need position context_length, the window slides: every row keeps the last context_length tokens of its
// history (the newest included) and the batch is re-prefilled. The logits are then exactly those of a full
// forward over the last context_length tokens, as the original project computed every step; the price is one
// prefill per generated token once a row is at the limit (learned absolute positions leave no cheaper exact way).
#include "engine/kv_cache.h"
#include "engine/model.h"

#include <functional>
#include <string>
#include <vector>

namespace dsk {

struct InferenceStats {
  int64_t prefill_tokens = 0;  // real (non-padding) prompt tokens processed by prefill()
  double prefill_s = 0;
  int64_t decode_steps = 0;  // decode() calls
  int64_t decode_tokens = 0;  // rows × steps
  double decode_s = 0;        // includes window slides
  int64_t slides = 0;
  double slide_s = 0;
};

class InferenceSession {
 public:
  // Holds a reference to the model (it must outlive the session). max_batch: the most rows prefill accepts.
  InferenceSession(const Model& model, DecodeMode mode, int max_batch);

  DecodeMode mode() const { return mode_; }
  const ModelConfig& config() const { return config_; }
  int vocab_size() const { return config_.vocab_size; }
  int batch() const { return batch_; }
  int max_batch() const { return max_batch_; }
  // Slots of the cache in use (the longest row's length, padding included for shorter rows).
  int cached_len() const { return cached_; }
  // Tokens in row b's window (what its next logits are conditioned on).
  int row_len(int b) const { return cached_ - pad_.at(b); }
  const std::vector<int32_t>& history(int b) const { return history_.at(b); }
  bool last_step_slid() const { return last_slid_; }
  const KVCache& cache() const { return cache_; }
  // Bytes of the per-step scratch (planned at construction for the largest prefill).
  size_t workspace_bytes() const { return work_.capacity(); }

  // Starts a new batch (1 .. max_batch non-empty prompts of token ids in [0, vocab)). A prompt longer than
  // context_length keeps its last context_length tokens (the caller warns). Returns host logits (rows, vocab).
  const std::vector<float>& prefill(const std::vector<std::vector<int32_t>>& prompts);
  // Appends next[b] to every row and returns the logits after it (rows, vocab); slides the window when needed.
  const std::vector<float>& decode(const std::vector<int32_t>& next);

  InferenceStats stats;
  // Receives one-line notes when set (the first window slide since stats were reset); the CLI's --verbose.
  std::function<void(const std::string&)> log;

 private:
  using LayerWeights = Model::Layer;
  // Runs T new tokens per row (tokens/positions (B, T) host) whose cache slots are [start, start + T); writes
  // logits_ for each row's last token.
  void forward_chunk(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions, int B, int T,
                     int start);
  void attention(float* y, const float* h, const LayerWeights& L, int layer, const int32_t* kv_start, int B, int T,
                 int start);
  void moe(float* y, const float* h, const LayerWeights& L, int N);
  // Left-pads the rows into the cache from slot 0 and runs them; sets pad_, cached_.
  void prefill_rows(const std::vector<std::vector<int32_t>>& rows);
  template <class F>
  void run(F&& f);  // a kernel call on the device; skipped while the workspace only counts (planning)
  void upload(void* dst, const void* src, size_t bytes);
  void copy(void* dst, const void* src, size_t bytes);

  const Model& model_;
  ModelConfig config_;
  DecodeMode mode_;
  Backend device_;
  int max_batch_;
  KVCache cache_;
  Arena work_;  // per-chunk scratch, reset every chunk
  const float *tok_emb_, *pos_emb_, *final_w_, *final_b_;

  int batch_ = 0, cached_ = 0;
  bool last_slid_ = false;
  std::vector<int> pad_;
  std::vector<std::vector<int32_t>> history_;  // per row: the tokens of its current window, newest last
  std::vector<float> logits_;                  // (batch, vocab) host
};

}  // namespace dsk
