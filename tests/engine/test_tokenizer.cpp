// GPT-2 tokenizer: golden ids from tiktoken, Tiny Shakespeare, round trips, error cases.
#include "engine/paths.h"
#include "engine/pretokenize.h"
#include "engine/tokenizer.h"
#include "engine/utf8.h"
#include "kernels/common.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <random>
#include <sstream>

using dsk::Tokenizer;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Random valid UTF-8 drawn from ASCII, whitespace, Latin, CJK, emoji, combining marks and any code point.
std::string random_utf8(std::mt19937_64& rng, size_t chars) {
  static const uint32_t picks[] = {' ', '\n', '\t', '\'', 's', '1', 0xA0, 0xE9, 0x301, 0x4E2D, 0x1F600, 0x200D, 0x3000};
  std::string s;
  for (size_t i = 0; i < chars; ++i) {
    uint32_t cp;
    switch (rng() % 4) {
      case 0: cp = 0x20 + rng() % 95; break;
      case 1: cp = picks[rng() % (sizeof(picks) / sizeof(picks[0]))]; break;
      case 2: cp = rng() % 0x800; break;
      default:
        cp = rng() % 0x110000;
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // surrogates are not encodable
    }
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return s;
}

}  // namespace

TEST_CASE("tokenizer: golden ids from tiktoken gpt2", "[tokenizer]") {
  const Tokenizer& tok = Tokenizer::gpt2();
  auto golden = nlohmann::json::parse(slurp(std::string(DSK_TEST_DIR) + "/fixtures/tokenizer_golden.json"));
  REQUIRE(golden["cases"].size() >= 60);
  for (const auto& c : golden["cases"]) {
    std::string text = c["text"];
    bool special = c["special"];
    std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    INFO("text: " << text << " special=" << special);
    CHECK(tok.encode(text, special) == want);
    CHECK(tok.decode(want) == text);
  }
}

TEST_CASE("tokenizer: pre-tokenizer pieces follow the GPT-2 pattern", "[tokenizer]") {
  using V = std::vector<std::string>;
  CHECK(dsk::gpt2_pretokenize("hello   world") == V{"hello", "  ", " world"});
  CHECK(dsk::gpt2_pretokenize("a \nb") == V{"a", " ", "\n", "b"});
  CHECK(dsk::gpt2_pretokenize("it's IT'S") == V{"it", "'s", " IT", "'", "S"});
  CHECK(dsk::gpt2_pretokenize("x?!'s 42") == V{"x", "?!'", "s", " 42"});
  CHECK(dsk::gpt2_pretokenize("end  ") == V{"end", "  "});
  CHECK(dsk::gpt2_pretokenize("") == V{});
}

TEST_CASE("tokenizer: Tiny Shakespeare is 338,025 tokens and decodes back", "[tokenizer]") {
  const Tokenizer& tok = Tokenizer::gpt2();
  std::string text = slurp(dsk::data_dir() + "/tinyshakespeare.txt");
  auto ids = tok.encode(text);
  CHECK(ids.size() == 338025);
  CHECK((tok.decode(ids) == text));  // (parenthesized: Catch would print 1 MB on failure)
  CHECK((tok.encode_parallel(text, true, false, 4) == ids));  // the parallel cut points change nothing
}

TEST_CASE("tokenizer: random valid UTF-8 round trips, serial and parallel agree", "[tokenizer]") {
  const Tokenizer& tok = Tokenizer::gpt2();
  std::mt19937_64 rng(12345);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s = random_utf8(rng, 1 + rng() % 200);
    REQUIRE(dsk::utf8::first_invalid(s) == std::string_view::npos);
    auto ids = tok.encode(s);
    INFO("trial " << trial);
    REQUIRE(tok.decode(ids) == s);
    // Pieces tile the text.
    std::string joined;
    for (const auto& p : dsk::gpt2_pretokenize(s)) joined += p;
    REQUIRE(joined == s);
  }
  // A large multi-line text through the parallel path.
  std::string big;
  for (int line = 0; line < 4000; ++line) big += random_utf8(rng, 40) + (line % 7 ? "\n" : "\n\n  ");
  CHECK((tok.encode_parallel(big, true, false, 3) == tok.encode(big)));
}

TEST_CASE("tokenizer: <|endoftext|> is special unless disabled", "[tokenizer]") {
  const Tokenizer& tok = Tokenizer::gpt2();
  auto ids = tok.encode("a<|endoftext|>b");
  REQUIRE(ids.size() == 3);
  CHECK(ids[1] == Tokenizer::kEndOfText);
  auto plain = tok.encode("a<|endoftext|>b", false);
  CHECK(std::find(plain.begin(), plain.end(), Tokenizer::kEndOfText) == plain.end());
  CHECK(tok.decode(plain) == "a<|endoftext|>b");
  CHECK(tok.decode({Tokenizer::kEndOfText}) == "<|endoftext|>");
}

TEST_CASE("tokenizer: invalid UTF-8 is an error naming the offset, or replaced", "[tokenizer]") {
  const Tokenizer& tok = Tokenizer::gpt2();
  std::string bad = "abc\xff" "def";
  CHECK_THROWS_WITH(tok.encode(bad), Catch::Contains("byte offset 3"));
  CHECK_THROWS_WITH(tok.encode("ok \xE2\x82"), Catch::Contains("byte offset 3"));        // truncated sequence
  CHECK_THROWS_WITH(tok.encode("\xC0\xAF"), Catch::Contains("byte offset 0"));           // overlong
  CHECK_THROWS_WITH(tok.encode("xy\xED\xA0\x80"), Catch::Contains("byte offset 2"));     // surrogate
  CHECK(tok.decode(tok.encode(bad, true, true)) == "abc\xEF\xBF\xBD" "def");
  // The truncated 3-byte sequence is one maximal subpart: one U+FFFD, then the next character.
  CHECK(dsk::utf8::replace_invalid("\xE2\x82x") == "\xEF\xBF\xBDx");
  CHECK(dsk::utf8::replace_invalid("\xF0\x9F\x98\x80") == "\xF0\x9F\x98\x80");  // valid emoji untouched
}

TEST_CASE("utf8: a leading byte order mark is stripped, nothing else", "[tokenizer]") {
  CHECK(dsk::utf8::strip_bom("\xEF\xBB\xBFtext") == "text");
  CHECK(dsk::utf8::strip_bom("text\xEF\xBB\xBF") == "text\xEF\xBB\xBF");  // only at the start
  CHECK(dsk::utf8::strip_bom("\xEF\xBB\xBF\xEF\xBB\xBFx") == "\xEF\xBB\xBFx");  // only one
  CHECK(dsk::utf8::strip_bom("\xEF\xBB") == "\xEF\xBB");
  CHECK(dsk::utf8::strip_bom("") == "");
}

TEST_CASE("tokenizer: ids out of range are errors naming the id", "[tokenizer]") {
  const Tokenizer& tok = Tokenizer::gpt2();
  CHECK(tok.vocab_size() == 50257);
  CHECK_THROWS_WITH(tok.decode({1, 50257}), Catch::Contains("50257"));
  CHECK_THROWS_WITH(tok.token_bytes(-1), Catch::Contains("-1"));
  CHECK(tok.token_bytes(464) == "The");
}

TEST_CASE("tokenizer: malformed BPE files are rejected naming the file", "[tokenizer]") {
  std::string dir = dsk::data_dir();
  CHECK_THROWS_WITH(Tokenizer::load("/nonexistent/encoder.json", dir + "/vocab.bpe"),
                    Catch::Contains("/nonexistent/encoder.json"));
  std::string tmp = "/tmp/dsk_test_bad_encoder.json";
  { std::ofstream(tmp) << "{\"a\": 0"; }
  CHECK_THROWS_WITH(Tokenizer::load(tmp, dir + "/vocab.bpe"), Catch::Contains(tmp));
  std::remove(tmp.c_str());
}
