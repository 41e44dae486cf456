// The training batch loader (random or strided windows over one shard) and the evaluation windows.
#include "engine/data.h"

#include "kernels/common.h"
#include <algorithm>

namespace dsk {

namespace {

// SplitMix64 finalizer: a good 64-bit mix, so hash(seed, cursor) is a counter-based generator — any window
// can be drawn directly from its index, which is what makes resume exact.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

DataLoader::DataLoader(const TokenShard& shard, int batch, int seq_len, uint64_t seed, int64_t stride)
    : shard_(&shard), batch_(batch), seq_len_(seq_len), seed_(seed), stride_(stride) {
  if (batch <= 0 || seq_len <= 0) throw Error(fmt::format("batch ({}) and seq_len ({}) must be positive", batch, seq_len));
  if (stride < 0) throw Error(fmt::format("stride must be >= 0, got {}", stride));
  if (shard.size() < static_cast<size_t>(seq_len) + 1)
    throw Error(fmt::format("{}: {} tokens are too few for one window of seq_len {} (needs {})", shard.path(),
                            shard.size(), seq_len, seq_len + 1));
  // Window starts s with s + seq_len + 1 <= N, i.e. s in [0, N - seq_len).
  int64_t last_start = static_cast<int64_t>(shard.size()) - seq_len - 1;
  windows_ = stride == 0 ? last_start + 1 : last_start / stride + 1;
}

int64_t DataLoader::window_start(uint64_t index) const {
  if (stride_ > 0) return static_cast<int64_t>(index % static_cast<uint64_t>(windows_)) * stride_;
  uint64_t h = mix64(mix64(seed_) ^ index);
  // Multiply-shift maps the 64-bit hash onto [0, windows) without a modulo's bias toward small starts.
  return static_cast<int64_t>((static_cast<unsigned __int128>(h) * static_cast<uint64_t>(windows_)) >> 64);
}

void DataLoader::next_batch(int32_t* inputs, int32_t* targets) {
  const uint16_t* tok = shard_->tokens();
  for (int b = 0; b < batch_; ++b) {
    const uint16_t* w = tok + window_start(cursor_++);  // (seq_len + 1) tokens
    int32_t* in = inputs + static_cast<size_t>(b) * seq_len_;
    int32_t* tg = targets + static_cast<size_t>(b) * seq_len_;
    for (int t = 0; t < seq_len_; ++t) {
      in[t] = w[t];
      tg[t] = w[t + 1];
    }
  }
}

void DataLoader::restore(const LoaderState& s) {
  seed_ = s.seed;
  cursor_ = s.cursor;
}

std::vector<EvalWindow> eval_windows(size_t n_tokens, int seq_len) {
  DSK_CHECK(seq_len > 0, "seq_len must be positive, got {}", seq_len);
  std::vector<EvalWindow> out;
  if (n_tokens < 2) return out;
  const int64_t predictions = static_cast<int64_t>(n_tokens) - 1;
  for (int64_t start = 0; start < predictions; start += seq_len)
    out.push_back({start, static_cast<int>(std::min<int64_t>(seq_len, predictions - start))});
  return out;
}

}  // namespace dsk
