#pragma once
// Token data: shard files, the training batch loader, evaluation windows, and prepared dataset folders.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace dsk {

// Token shard file: fixed 64-byte header {magic "DSKTOKNS", u32 version=1, u32 dtype (1 = uint16),
// u64 token_count, u32 vocab_size, zero padding} then token_count little-endian uint16 tokens.
constexpr char kShardMagic[8] = {'D', 'S', 'K', 'T', 'O', 'K', 'N', 'S'};
constexpr uint32_t kShardVersion = 1;
constexpr uint32_t kShardDtypeU16 = 1;
constexpr size_t kShardHeaderBytes = 64;

// Writes to PATH.tmp-<pid> and renames, so an existing shard is never left half-written.
void write_token_shard(const std::string& path, const std::vector<uint16_t>& tokens, int vocab_size);

// A memory-mapped shard. The constructor validates the header (magic, version, dtype, file size = header +
// 2 * token_count) and that every token is < vocab_size; any mismatch is a dsk::Error naming the file.
class TokenShard {
 public:
  explicit TokenShard(const std::string& path);
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const uint16_t* tokens() const { return tokens_; }
  size_t size() const { return size_; }
  int vocab_size() const { return vocab_size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* map_ = nullptr;  // the whole file
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  size_t size_ = 0;
  int vocab_size_ = 0;
};

// Everything needed to resume the exact batch sequence (part of the trainer's saved state).
struct LoaderState {
  uint64_t seed = 0;
  uint64_t cursor = 0;  // windows handed out so far
};

class DataLoader {
 public:
  // stride == 0: random window starts drawn by a counter-based generator keyed by (seed, cursor), uniform over
  // [0, size() - seq_len); stride s > 0: every window start 0, s, 2s, ... in order, wrapping around (one pass =
  // one epoch; s = 1 gives the original project's sliding windows). Throws if the shard has < seq_len + 1 tokens.
  DataLoader(const TokenShard& shard, int batch, int seq_len, uint64_t seed, int64_t stride = 0);

  // inputs, targets: (batch, seq_len) int32, row-major; targets[b][t] = inputs[b][t + 1] within the shard.
  void next_batch(int32_t* inputs, int32_t* targets);

  LoaderState state() const { return {seed_, cursor_}; }
  void restore(const LoaderState& s);

  int64_t windows_per_epoch() const { return windows_; }  // random: size() - seq_len; stride: distinct starts
  double epoch() const { return static_cast<double>(cursor_) / static_cast<double>(windows_); }
  // The start of window number `index` (the cursor value when it is drawn); exposed for tests.
  int64_t window_start(uint64_t index) const;

 private:
  const TokenShard* shard_;
  int batch_, seq_len_;
  uint64_t seed_;
  int64_t stride_;
  int64_t windows_;
  uint64_t cursor_ = 0;
};

// Deterministic non-overlapping evaluation windows (the `dsk eval` convention): window i covers tokens
// [i*T, min((i+1)*T, N-1)) as inputs and the next tokens as targets; the last window may be shorter. The windows
// make exactly N-1 predictions (none when N < 2).
struct EvalWindow {
  int64_t start;
  int length;
};
std::vector<EvalWindow> eval_windows(size_t n_tokens, int seq_len);

// A prepared dataset folder (output of `dsk prepare`): train.bin, val.bin, manifest.json.
struct PreparedData {
  std::string dir;
  std::string train_path, val_path;
  nlohmann::json manifest;
};
// Validates that the folder, both shards and a readable manifest of this format are there (clear error otherwise).
PreparedData open_prepared(const std::string& dir);

// The engine function behind `dsk prepare` (the trainer also uses it to prepare Tiny Shakespeare on first use).
struct PrepareOptions {
  std::string input;
  std::string out_dir;
  std::string format = "auto";  // txt | dir | csv | jsonl | auto (by extension; a folder is dir)
  std::string column = "text";  // CSV column
  std::string field = "text";   // JSONL field
  double val_fraction = 0.1;
  uint64_t seed = 1337;
  bool force = false;  // replace an existing out_dir
  bool allow_special = true;  // the literal <|endoftext|> in a document is token 50256 (else plain text)
};
nlohmann::json prepare_dataset(const PrepareOptions& opt);  // returns the manifest written

}  // namespace dsk
