#pragma once
// UTF-8 validation, repair and decoding for the tokenizer.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsk::utf8 {

// Length of the well-formed sequence starting at s[i] (1..4), or 0 when the bytes there are not valid UTF-8
// (overlong forms, surrogates, > U+10FFFF, truncation). *bad_len receives the length of the maximal invalid
// subpart (>= 1), the unit that is replaced by one U+FFFD (the Unicode "best practice", as WHATWG and Python).
int sequence_length(std::string_view s, size_t i, int* bad_len = nullptr);

// Offset of the first invalid byte, or std::string_view::npos when the text is valid UTF-8.
size_t first_invalid(std::string_view s);

// The text with every maximal invalid subpart replaced by U+FFFD (EF BF BD).
std::string replace_invalid(std::string_view s);

// Length (0..3) of the tail of s that is a valid sequence cut short: a lead byte and the continuation bytes it
// allows, up to the end. More bytes may still complete it, so a stream holds it back instead of replacing it.
size_t unfinished_tail(std::string_view s);

// s without a leading UTF-8 byte order mark (EF BB BF): editors add one, and it is not part of the text.
std::string_view strip_bom(std::string_view s);

// Decodes the (valid) sequence at s[i]; *len receives its byte length.
inline uint32_t decode(const unsigned char* s, int* len) {
  unsigned char c = s[0];
  if (c < 0x80) { *len = 1; return c; }
  if (c < 0xE0) { *len = 2; return ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu); }
  if (c < 0xF0) { *len = 3; return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu); }
  *len = 4;
  return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
}

}  // namespace dsk::utf8
