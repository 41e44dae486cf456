#include "engine/pretokenize.h"

#include "engine/unicode_tables.h"
#include "engine/utf8.h"

namespace dsk {

namespace {

using unicode::CharClass;

// ASCII classes without a table lookup; the hot path for English text.
struct AsciiClasses {
  CharClass cls[128];
  AsciiClasses() {
    for (int c = 0; c < 128; ++c) {
      cls[c] = unicode::kOther;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) cls[c] = unicode::kLetter;
      if (c >= '0' && c <= '9') cls[c] = unicode::kNumber;
      if (c == ' ' || (c >= 0x09 && c <= 0x0D)) cls[c] = unicode::kSpace;  // White_Space in ASCII
    }
  }
};
const AsciiClasses kAscii;

// Class and byte length of the character at p[i] (valid UTF-8).
inline CharClass class_at(const unsigned char* p, size_t i, int* len) {
  if (p[i] < 0x80) {
    *len = 1;
    return kAscii.cls[p[i]];
  }
  uint32_t cp = utf8::decode(p + i, len);
  return unicode::char_class(cp);
}

// End of the run of characters of class `cls` starting at i.
inline size_t run_end(const unsigned char* p, size_t i, size_t n, CharClass cls) {
  while (i < n) {
    int len;
    if (class_at(p, i, &len) != cls) break;
    i += len;
  }
  return i;
}

}  // namespace

bool PreTokenizer::next(std::string_view* piece) {
  const auto* p = reinterpret_cast<const unsigned char*>(text_.data());
  const size_t n = text_.size();
  const size_t i = pos_;
  if (i >= n) return false;
  size_t end;
  int len;

  if (p[i] == '\'' && i + 1 < n) {  // 's 't 're 've 'm 'll 'd — case-sensitive, as in GPT-2
    unsigned char a = p[i + 1], b = i + 2 < n ? p[i + 2] : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
      end = i + 2;
      goto done;
    }
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
      end = i + 3;
      goto done;
    }
  }
  if (p[i] == ' ' && i + 1 < n) {  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+" with their optional space
    CharClass c1 = class_at(p, i + 1, &len);
    if (c1 != unicode::kSpace) {
      end = run_end(p, i + 1 + len, n, c1);
      goto done;
    }
  }
  {
    CharClass c0 = class_at(p, i, &len);
    if (c0 != unicode::kSpace) {  // the same three alternatives without the space
      end = run_end(p, i + len, n, c0);
      goto done;
    }
  }
  {
    // A whitespace run [i, j). "\s+(?!\S)": when a non-space follows, the match backtracks by one character,
    // which then starts the next piece (so "   word" gives "  " and " word"); a single whitespace
    // character before a non-space falls through to "\s+" and stands alone.
    size_t j = i, last = i;
    while (j < n) {
      if (class_at(p, j, &len) != unicode::kSpace) break;
      last = j;
      j += len;
    }
    end = (j < n && last > i) ? last : j;
  }
done:
  *piece = text_.substr(i, end - i);
  pos_ = end;
  return true;
}

std::vector<std::string> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string> out;
  PreTokenizer pt(text);
  std::string_view piece;
  while (pt.next(&piece)) out.emplace_back(piece);
  return out;
}

}  // namespace dsk
