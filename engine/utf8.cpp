#include "engine/utf8.h"

namespace dsk::utf8 {

int sequence_length(std::string_view s, size_t i, int* bad_len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  unsigned char c = p[i];
  if (c < 0x80) return 1;
  int need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
  } else {
    if (bad_len) *bad_len = 1;  // stray continuation byte, C0/C1, F5..FF
    return 0;
  }
  for (int k = 1; k < need; ++k) {
    unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
    if (i + k >= n || p[i + k] < lo_k || p[i + k] > hi_k) {
      if (bad_len) *bad_len = k;
      return 0;
    }
  }
  return need;
}

size_t first_invalid(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    if (static_cast<unsigned char>(s[i]) < 0x80) { ++i; continue; }
    int len = sequence_length(s, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string replace_invalid(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  while (i < n) {
    int bad = 0;
    int len = sequence_length(s, i, &bad);
    if (len > 0) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

size_t unfinished_tail(std::string_view s) {
  // A lead byte (C2..F4) is never a continuation byte (80..BF), so each lead in the last 3 bytes starts a sequence
  // of its own; the one whose maximal subpart runs exactly to the end without error is the unfinished one.
  const size_t n = s.size();
  for (size_t i = n > 3 ? n - 3 : 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0xC2 || c > 0xF4) continue;
    int bad = 0;
    if (sequence_length(s, i, &bad) == 0 && i + bad == n) return n - i;
  }
  return 0;
}

std::string_view strip_bom(std::string_view s) {
  return s.substr(0, 3) == "\xEF\xBB\xBF" ? s.substr(3) : s;
}

}  // namespace dsk::utf8
