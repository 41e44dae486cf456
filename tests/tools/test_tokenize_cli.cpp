// `dsk tokenize` on the command line: options checked up front, --count checks ids, stdin, CRLF lines.
#include "engine/tokenizer.h"
#include "tests/test_env.h"

#include <algorithm>
#include <catch2/catch.hpp>

#include <filesystem>

using dsk::testing::run_dsk;
using dsk::testing::TempDir;

TEST_CASE("dsk tokenize: a bad --threads is a usage error in every mode, before any input is read", "[tokenizer][cli]") {
  TempDir d("tok_threads");
  const std::string text = d.file("t.txt", "Hello world\n"), ids = d.file("ids.txt", "15496 995\n");
  for (const std::string& cmd : {"encode --lines --threads abc < " + text, "decode --threads abc < " + ids,
                                 "encode --threads abc < " + text, "encode --threads -1 " + text,
                                 // stdin is a folder: reading it would fail (exit 1); the flag is checked first
                                 "encode --threads abc < " + d.path.string()}) {
    INFO(cmd);
    auto r = run_dsk("tokenize " + cmd);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains("--threads"));
  }
}

TEST_CASE("dsk tokenize decode --count checks the ids as decode does", "[tokenizer][cli]") {
  TempDir d("tok_count");
  auto r = run_dsk("tokenize decode --count < " + d.file("ids.txt", "99999\n"));
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("99999"));
  r = run_dsk("tokenize decode --count < " + d.file("ok.txt", "15496 995\n"));
  CHECK(r.exit_code == 0);
  CHECK(r.output == "2\n");
}

TEST_CASE("dsk tokenize: a folder on stdin is refused like a folder argument", "[tokenizer][cli]") {
  TempDir d("tok_dir");
  auto arg = run_dsk("tokenize encode " + d.path.string());
  auto in = run_dsk("tokenize encode < " + d.path.string());
  CHECK(arg.exit_code == 1);
  CHECK(in.exit_code == 1);
  CHECK_THAT(in.output, Catch::Contains("is a folder, not a file"));
  CHECK(std::count(in.output.begin(), in.output.end(), '\n') == 1);
}

TEST_CASE("dsk tokenize encode --lines: \\r\\n is a newline, not part of the line", "[tokenizer][cli]") {
  TempDir d("tok_crlf");
  const auto& tok = dsk::Tokenizer::gpt2();
  auto line = [&](const std::string& s) {
    std::string out;
    for (int32_t id : tok.encode(s)) {
      if (!out.empty()) out += ' ';
      out += std::to_string(id);
    }
    return out + "\n";
  };
  auto r = run_dsk("tokenize encode --lines < " + d.file("crlf.txt", "Hello\r\nworld\r\n"));
  CHECK(r.exit_code == 0);
  CHECK(r.output == line("Hello") + line("world"));
  // A lone \r (not before \n) stays text.
  r = run_dsk("tokenize encode --lines < " + d.file("cr.txt", "a\rb\n"));
  CHECK(r.output == line("a\rb"));
}
