// GPT-2 byte-level BPE: file loading, BPE merging by rank (tiktoken's algorithm), encode/decode.
#include "engine/tokenizer.h"

#include "engine/paths.h"
#include "engine/pretokenize.h"
#include "engine/read_file.h"
#include "engine/utf8.h"
#include "kernels/common.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>

namespace dsk {

namespace {

constexpr std::string_view kEndOfTextText = "<|endoftext|>";

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// GPT-2's reversible byte <-> printable code point map (encoder.json and vocab.bpe spell bytes this way).
std::vector<int> unicode_to_byte_map() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b)
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  std::vector<int> u2b(512, -1);
  for (size_t k = 0; k < bs.size(); ++k) u2b[cs[k]] = bs[k];
  return u2b;
}

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> bytes_of;                                     // id -> bytes (50257 entries)
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> id_of;  // bytes -> id (ordinary tokens)
  int32_t byte_id[256];                                                  // single byte -> id
  // (left id, right id) -> id of their concatenation, whose rank is that id (rank == id in GPT-2). Open
  // addressing over a power-of-two table; key 0 is never a real pair since id 0 ("!") concatenated with id 0 is
  // "!!", which is token 3228, so the sentinel uses ~0.
  std::vector<uint64_t> pair_keys;
  std::vector<int32_t> pair_vals;
  uint64_t pair_mask = 0;
  std::string encoder_path, vocab_path;

  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
  }
  void pair_insert(int32_t a, int32_t b, int32_t id) {
    uint64_t key = pair_key(a, b);
    for (uint64_t h = mix(key) & pair_mask;; h = (h + 1) & pair_mask) {
      if (pair_keys[h] == ~0ULL || pair_keys[h] == key) {
        pair_keys[h] = key;
        pair_vals[h] = id;
        return;
      }
    }
  }
  // The merged id (== rank) of two adjacent parts, or INT_MAX when they do not merge.
  int32_t pair_rank(int32_t a, int32_t b) const {
    uint64_t key = pair_key(a, b);
    for (uint64_t h = mix(key) & pair_mask;; h = (h + 1) & pair_mask) {
      if (pair_keys[h] == key) return pair_vals[h];
      if (pair_keys[h] == ~0ULL) return INT_MAX;
    }
  }

  using Cache = std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>;

  // Byte-pair merge of one piece: repeatedly merge the adjacent pair with the lowest rank, leftmost on ties.
  void bpe(std::string_view piece, std::vector<int32_t>& out, Cache& cache) const {
    if (auto it = id_of.find(piece); it != id_of.end()) {  // most pieces are one token
      out.push_back(it->second);
      return;
    }
    if (auto it = cache.find(piece); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
    std::vector<int32_t> parts(piece.size());  // (P,) current token ids
    for (size_t k = 0; k < piece.size(); ++k) parts[k] = byte_id[static_cast<unsigned char>(piece[k])];
    std::vector<int32_t> ranks(parts.size());  // ranks[k]: rank of merging parts[k] with parts[k+1]
    for (size_t k = 0; k + 1 < parts.size(); ++k) ranks[k] = pair_rank(parts[k], parts[k + 1]);
    if (!ranks.empty()) ranks.back() = INT_MAX;
    while (parts.size() > 1) {
      size_t best = 0;
      int32_t best_rank = INT_MAX;
      for (size_t k = 0; k + 1 < parts.size(); ++k)
        if (ranks[k] < best_rank) {
          best_rank = ranks[k];
          best = k;
        }
      if (best_rank == INT_MAX) break;
      parts[best] = best_rank;  // the merged token's id is its rank
      parts.erase(parts.begin() + best + 1);
      ranks.erase(ranks.begin() + best + 1);
      ranks[best] = best + 1 < parts.size() ? pair_rank(parts[best], parts[best + 1]) : INT_MAX;
      if (best > 0) ranks[best - 1] = pair_rank(parts[best - 1], parts[best]);
    }
    out.insert(out.end(), parts.begin(), parts.end());
    if (piece.size() <= 256) cache.emplace(std::string(piece), std::move(parts));
  }

  // Ordinary text (no special tokens) of valid UTF-8.
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out, Cache& cache) const {
    PreTokenizer pt(text);
    std::string_view piece;
    while (pt.next(&piece)) bpe(piece, out, cache);
  }

  void encode_valid(std::string_view text, bool allow_special, std::vector<int32_t>& out) const {
    Cache cache;
    if (!allow_special) return encode_ordinary(text, out, cache);
    size_t pos = 0;
    while (true) {
      size_t hit = text.find(kEndOfTextText, pos);
      encode_ordinary(text.substr(pos, hit == std::string_view::npos ? std::string_view::npos : hit - pos), out,
                      cache);
      if (hit == std::string_view::npos) break;
      out.push_back(kEndOfText);
      pos = hit + kEndOfTextText.size();
    }
  }
};

Tokenizer Tokenizer::load(const std::string& encoder_json_path, const std::string& vocab_bpe_path) {
  auto impl = std::make_shared<Impl>();
  impl->encoder_path = encoder_json_path;
  impl->vocab_path = vocab_bpe_path;
  const std::vector<int> u2b = unicode_to_byte_map();
  // A key of encoder.json / a symbol of vocab.bpe -> the bytes it stands for; "" when malformed.
  auto to_bytes = [&](std::string_view s, bool* ok) {
    std::string out;
    size_t i = 0;
    *ok = utf8::first_invalid(s) == std::string_view::npos;
    while (*ok && i < s.size()) {
      int len;
      uint32_t cp = utf8::decode(reinterpret_cast<const unsigned char*>(s.data()) + i, &len);
      i += len;
      if (cp >= u2b.size() || u2b[cp] < 0) *ok = false;
      else out.push_back(static_cast<char>(u2b[cp]));
    }
    return out;
  };

  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(read_file(encoder_json_path, "GPT-2 tokenizer file"));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON ({})", encoder_json_path, e.what()));
  }
  if (!enc.is_object() || enc.size() != size_t(kEndOfText) + 1)
    throw Error(fmt::format("{}: expected an object of {} tokens, got {}", encoder_json_path, kEndOfText + 1,
                            enc.is_object() ? enc.size() : 0));
  impl->bytes_of.assign(kEndOfText + 1, std::string());
  std::vector<bool> seen(kEndOfText + 1, false);
  for (auto& [key, val] : enc.items()) {
    if (!val.is_number_integer() || val.get<int64_t>() < 0 || val.get<int64_t>() > kEndOfText)
      throw Error(fmt::format("{}: token '{}' has a bad id {}", encoder_json_path, key, val.dump()));
    int32_t id = val.get<int32_t>();
    if (seen[id]) throw Error(fmt::format("{}: id {} appears twice", encoder_json_path, id));
    seen[id] = true;
    if (id == kEndOfText) {
      if (key != kEndOfTextText)
        throw Error(fmt::format("{}: id {} is '{}', expected <|endoftext|>", encoder_json_path, id, key));
      impl->bytes_of[id] = key;
      continue;
    }
    bool ok;
    std::string bytes = to_bytes(key, &ok);
    if (!ok || bytes.empty()) throw Error(fmt::format("{}: token '{}' is not in GPT-2's byte alphabet", encoder_json_path, key));
    impl->bytes_of[id] = bytes;
    impl->id_of.emplace(std::move(bytes), id);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = impl->id_of.find(std::string(1, static_cast<char>(b)));
    if (it == impl->id_of.end()) throw Error(fmt::format("{}: no token for byte {}", encoder_json_path, b));
    impl->byte_id[b] = it->second;
  }

  // vocab.bpe: merge k (line k+2 after the version line) creates the token of rank 256 + k; tiktoken ranks
  // tokens this way and requires encoder.json to agree, and so do we.
  std::istringstream merges(read_file(vocab_bpe_path, "GPT-2 tokenizer file"));
  std::string line;
  int line_no = 0, merge_index = 0;
  while (std::getline(merges, line)) {
    ++line_no;
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    size_t sp = line.find(' ');
    bool ok1 = false, ok2 = false;
    std::string a, b;
    if (sp != std::string::npos && line.find(' ', sp + 1) == std::string::npos) {
      a = to_bytes(std::string_view(line).substr(0, sp), &ok1);
      b = to_bytes(std::string_view(line).substr(sp + 1), &ok2);
    }
    if (!ok1 || !ok2 || a.empty() || b.empty())
      throw Error(fmt::format("{}:{}: expected two GPT-2 symbols separated by one space", vocab_bpe_path, line_no));
    auto it = impl->id_of.find(a + b);
    if (it == impl->id_of.end() || it->second != 256 + merge_index)
      throw Error(fmt::format("{}:{}: merge '{}' does not match {} (expected id {})", vocab_bpe_path, line_no, line,
                              encoder_json_path, 256 + merge_index));
    ++merge_index;
  }
  if (merge_index != kEndOfText - 256)
    throw Error(fmt::format("{}: {} merges, expected {}", vocab_bpe_path, merge_index, kEndOfText - 256));

  // Every split of every token into two tokens is a mergeable pair (tiktoken merges by the rank of the
  // concatenation, not only by the listed merge).
  size_t table = 1;
  while (table < 8 * impl->id_of.size()) table <<= 1;
  impl->pair_keys.assign(table, ~0ULL);
  impl->pair_vals.assign(table, 0);
  impl->pair_mask = table - 1;
  size_t pairs = 0;
  for (int32_t id = 256; id < kEndOfText; ++id) {
    std::string_view s = impl->bytes_of[id];
    for (size_t k = 1; k < s.size(); ++k) {
      auto l = impl->id_of.find(s.substr(0, k));
      if (l == impl->id_of.end()) continue;
      auto r = impl->id_of.find(s.substr(k));
      if (r == impl->id_of.end()) continue;
      impl->pair_insert(l->second, r->second, id);
      DSK_CHECK(++pairs < table / 2, "BPE pair table overflow");
    }
  }
  Tokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

const Tokenizer& Tokenizer::gpt2() {
  static const Tokenizer tok = [] {
    std::string dir = data_dir();
    return load(dir + "/encoder.json", dir + "/vocab.bpe");
  }();
  return tok;
}

static std::string checked_text(std::string_view text, bool replace_invalid, std::string_view* view) {
  size_t bad = utf8::first_invalid(text);
  if (bad == std::string_view::npos) {
    *view = text;
    return {};
  }
  if (!replace_invalid)
    throw Error(fmt::format("invalid UTF-8 at byte offset {} (byte 0x{:02X})", bad, static_cast<unsigned char>(text[bad])));
  return utf8::replace_invalid(text);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special, bool replace_invalid) const {
  std::string_view valid;
  std::string repaired = checked_text(text, replace_invalid, &valid);
  if (!repaired.empty()) valid = repaired;
  std::vector<int32_t> out;
  out.reserve(valid.size() / 4 + 16);
  impl_->encode_valid(valid, allow_special, out);
  return out;
}

std::vector<int32_t> Tokenizer::encode_parallel(std::string_view text, bool allow_special, bool replace_invalid,
                                                int threads) const {
  std::string_view valid;
  std::string repaired = checked_text(text, replace_invalid, &valid);
  if (!repaired.empty()) valid = repaired;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const size_t min_chunk = 1 << 16;
  threads = static_cast<int>(std::min<size_t>(threads, std::max<size_t>(1, valid.size() / min_chunk)));
  if (threads <= 1) {
    std::vector<int32_t> out;
    impl_->encode_valid(valid, allow_special, out);
    return out;
  }
  // Cut points: just after the first "<a>\n<b>" at or after each even share, where a and b are non-space ASCII.
  // There the whitespace run is the lone '\n', which is a piece of its own both in the whole text ("\s+" before
  // a non-space) and at the end of a chunk ("\s+(?!\S)" at the end), and the next piece starts fresh at b either
  // way. (A longer run would differ: "\n\n" before a letter is two pieces, at the end of a chunk one.)
  // "<|endoftext|>" holds no '\n', so it is never cut.
  auto ascii_nonspace = [](unsigned char c) { return c < 0x80 && !(c == ' ' || (c >= 0x09 && c <= 0x0D)); };
  auto cut_after = [&](size_t from) {
    for (size_t i = valid.find('\n', std::max<size_t>(from, 1)); i != std::string_view::npos;
         i = valid.find('\n', i + 1)) {
      if (i + 1 >= valid.size()) return valid.size();
      if (ascii_nonspace(valid[i - 1]) && ascii_nonspace(valid[i + 1])) return i + 1;
    }
    return valid.size();
  };
  std::vector<size_t> cuts{0};
  for (int t = 1; t < threads; ++t) {
    size_t c = cut_after(std::max(cuts.back(), valid.size() * t / threads));
    if (c > cuts.back() && c < valid.size()) cuts.push_back(c);
  }
  cuts.push_back(valid.size());
  std::vector<std::vector<int32_t>> parts(cuts.size() - 1);
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(parts.size());
  for (size_t k = 0; k < parts.size(); ++k)
    pool.emplace_back([&, k] {
      try {
        impl_->encode_valid(valid.substr(cuts[k], cuts[k + 1] - cuts[k]), allow_special, parts[k]);
      } catch (...) {
        errors[k] = std::current_exception();
      }
    });
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  std::vector<int32_t> out;
  size_t total = 0;
  for (auto& p : parts) total += p.size();
  out.reserve(total);
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  out.reserve(ids.size() * 4);
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error(fmt::format("token id {} is out of range [0, {})", id, vocab_size()));
  return impl_->bytes_of[id];
}

int Tokenizer::vocab_size() const { return static_cast<int>(impl_->bytes_of.size()); }
const std::string& Tokenizer::encoder_path() const { return impl_->encoder_path; }
const std::string& Tokenizer::vocab_path() const { return impl_->vocab_path; }

}  // namespace dsk
