#pragma once
// GPT-2 byte-level BPE, identical to tiktoken's `gpt2` encoding (vocab 50257, <|endoftext|> = 50256).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dsk {

class Tokenizer {
 public:
  static constexpr int32_t kEndOfText = 50256;

  // The GPT-2 tokenizer from data_dir() (loaded once, then shared).
  static const Tokenizer& gpt2();
  // Loads encoder.json + vocab.bpe; throws dsk::Error naming the file on a missing or malformed file.
  static Tokenizer load(const std::string& encoder_json_path, const std::string& vocab_bpe_path);

  // Encodes UTF-8 text. allow_special: the literal "<|endoftext|>" becomes token 50256 (else it is plain text).
  // Invalid UTF-8 throws dsk::Error naming the byte offset, unless replace_invalid (then U+FFFD is encoded).
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true, bool replace_invalid = false) const;
  // Same result as encode(), computed on `threads` threads (0: hardware concurrency) for large inputs. The text is
  // cut only after a lone '\n' between two non-space ASCII characters, where the pre-tokenizer's pieces are the
  // same whether or not the text is cut, so the ids are identical to the single-threaded ones.
  std::vector<int32_t> encode_parallel(std::string_view text, bool allow_special = true,
                                       bool replace_invalid = false, int threads = 0) const;
  // Decodes to bytes (which may be invalid UTF-8 when a multi-byte character is split across tokens).
  std::string decode(const std::vector<int32_t>& ids) const;
  // The bytes of one token; an id outside [0, vocab_size) throws dsk::Error naming the id.
  const std::string& token_bytes(int32_t id) const;

  int vocab_size() const;

  // Paths the tokenizer was loaded from (the manifest of `dsk prepare` records their hashes).
  const std::string& encoder_path() const;
  const std::string& vocab_path() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;  // immutable after load, so copies share it and encode is thread-safe
};

}  // namespace dsk
