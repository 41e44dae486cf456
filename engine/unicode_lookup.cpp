// Code point -> pre-tokenizer class, over the generated range table (engine/unicode_tables.cpp).
#include "engine/unicode_tables.h"

#include <algorithm>
#include <array>

namespace dsk::unicode {

namespace {

// The BMP as a flat 64 KiB table: nearly all text stays in it, so most lookups are one load.
const std::array<uint8_t, 0x10000>& bmp_table() {
  static const std::array<uint8_t, 0x10000> table = [] {
    std::array<uint8_t, 0x10000> t{};
    for (size_t r = 0; r < kRangeCount; ++r)
      for (uint32_t cp = kRanges[r].first; cp <= kRanges[r].last && cp < 0x10000; ++cp) t[cp] = kRanges[r].cls;
    return t;
  }();
  return table;
}

}  // namespace

CharClass char_class(uint32_t cp) {
  if (cp < 0x10000) return static_cast<CharClass>(bmp_table()[cp]);
  const CharRange* end = kRanges + kRangeCount;
  const CharRange* it = std::upper_bound(kRanges, end, cp, [](uint32_t c, const CharRange& r) { return c < r.first; });
  if (it == kRanges) return kOther;
  --it;
  return cp <= it->last ? it->cls : kOther;
}

}  // namespace dsk::unicode
