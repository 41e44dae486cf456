#pragma once
// The GPT-2 pre-tokenizer, written by hand: it splits text into the pieces that the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// finds (leftmost-first alternation, as tiktoken's fancy-regex). BPE then runs inside each piece.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace dsk {

// Iterates over the pieces of valid UTF-8 text (the caller validates; see engine/utf8.h).
class PreTokenizer {
 public:
  explicit PreTokenizer(std::string_view text) : text_(text) {}
  // The next piece, or false at the end. Pieces are never empty and tile the text exactly.
  bool next(std::string_view* piece);

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

// All pieces at once (tests, tools).
std::vector<std::string> gpt2_pretokenize(std::string_view text);

}  // namespace dsk
