// `dsk prepare`: readers (CSV RFC 4180, JSONL, folder), document split, outputs, and every error of issue 3.
#include "engine/data.h"
#include "engine/documents.h"
#include "engine/tokenizer.h"
#include "kernels/common.h"

#include "tests/test_env.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {

using dsk::testing::TempDir;

// 10 records: quoted multi-line fields, embedded commas and doubled quotes, CRLF line ends.
const char* kTinyCsv =
    "id,title,text\r\n"
    "1,One,\"Hello, world.\nSecond line of one.\"\r\n"
    "2,\"Two, with comma\",\"She said \"\"hi\"\".\"\r\n"
    "3,Three,plain text three\r\n"
    "4,Four,\"multi\n\nparagraph\n\"\r\n"
    "5,Five,five\r\n"
    "6,Six,six\r\n"
    "7,Seven,seven\r\n"
    "8,Eight,\"eight, \"\"quoted\"\", done\"\r\n"
    "9,Nine,nine\r\n"
    "10,Ten,ten\r\n";

std::vector<uint16_t> shard_tokens(const std::string& path) {
  dsk::TokenShard s(path);
  return std::vector<uint16_t>(s.tokens(), s.tokens() + s.size());
}

}  // namespace

TEST_CASE("csv: quoted fields with commas, quotes and newlines; line numbers", "[prepare]") {
  auto recs = dsk::parse_csv(kTinyCsv, "tiny.csv");
  REQUIRE(recs.size() == 11);
  CHECK(recs[1].fields[2] == "Hello, world.\nSecond line of one.");
  CHECK(recs[2].fields[1] == "Two, with comma");
  CHECK(recs[2].fields[2] == "She said \"hi\".");
  CHECK(recs[4].fields[2] == "multi\n\nparagraph\n");
  CHECK(recs[2].line == 4);  // record 1 spans lines 2-3
  CHECK(recs[5].line == 10);  // record 4 spans lines 6-9
  CHECK(recs[10].fields == std::vector<std::string>{"10", "Ten", "ten"});
  CHECK_THROWS_WITH(dsk::parse_csv("a,b\n1,\"open\n2,x\n", "m.csv"), Catch::Contains("m.csv:2") && Catch::Contains("never closed"));
  CHECK_THROWS_WITH(dsk::parse_csv("a,b\n1,2\n3,\"x\"y\n", "m.csv"), Catch::Contains("m.csv:3"));
  CHECK_THROWS_WITH(dsk::parse_csv("a,b\n1,x\"y\n", "m.csv"), Catch::Contains("m.csv:2"));
}

TEST_CASE("prepare: tiny CSV splits by document with the right counts", "[prepare]") {
  TempDir d("csv");
  dsk::PrepareOptions o;
  o.input = d.file("tiny.csv", kTinyCsv);
  o.out_dir = d / "out";
  o.val_fraction = 0.2;
  nlohmann::json m = dsk::prepare_dataset(o);
  CHECK(m["documents"]["train"] == 8);
  CHECK(m["documents"]["val"] == 2);
  CHECK(m["input_format"] == "csv");
  auto train = shard_tokens(d / "out/train.bin"), val = shard_tokens(d / "out/val.bin");
  CHECK(m["tokens"]["train"] == train.size());
  CHECK(m["tokens"]["val"] == val.size());
  // Documents are joined by <|endoftext|>: 7 separators in train, 1 in val.
  CHECK(std::count(train.begin(), train.end(), dsk::Tokenizer::kEndOfText) == 7);
  CHECK(std::count(val.begin(), val.end(), dsk::Tokenizer::kEndOfText) == 1);
  // Every document's text is in exactly one split, and the total token count adds up.
  const auto& tok = dsk::Tokenizer::gpt2();
  auto recs = dsk::parse_csv(kTinyCsv, "tiny.csv");
  size_t doc_tokens = 0;
  for (size_t r = 1; r < recs.size(); ++r) doc_tokens += tok.encode(recs[r].fields[2]).size();
  CHECK(train.size() + val.size() == doc_tokens + 8);
  std::vector<int32_t> all(train.begin(), train.end());
  all.insert(all.end(), val.begin(), val.end());
  std::string text = tok.decode(all);
  CHECK(text.find("Hello, world.\nSecond line of one.") != std::string::npos);
  CHECK(text.find("She said \"hi\".") != std::string::npos);
  // Same seed, same split; the manifest opens.
  auto p = dsk::open_prepared(d / "out");
  CHECK(p.manifest["tokens"]["train"] == train.size());
  o.force = true;
  o.seed = 1337;
  CHECK(dsk::prepare_dataset(o)["tokens"] == m["tokens"]);
  // "out/" (a shell's completion) is the same folder: replaced in place, nothing left inside or beside it.
  o.out_dir = (d / "out") + "/";
  CHECK(dsk::prepare_dataset(o)["tokens"] == m["tokens"]);
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(d / "out")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"manifest.json", "train.bin", "val.bin"});
  CHECK(std::filesystem::exists(d / "tiny.csv"));
  CHECK(std::distance(std::filesystem::directory_iterator(d.path), std::filesystem::directory_iterator()) == 2);
  o.out_dir = (d / "fresh") + "/";
  o.force = false;
  CHECK(dsk::prepare_dataset(o)["tokens"] == m["tokens"]);
  CHECK(std::filesystem::is_regular_file(d / "fresh/train.bin"));
  CHECK(std::distance(std::filesystem::directory_iterator(d.path), std::filesystem::directory_iterator()) == 3);
}

TEST_CASE("prepare: one text file is split at a line break, validation is its tail", "[prepare]") {
  TempDir d("txt");
  std::string text;
  for (int i = 0; i < 100; ++i) text += fmt::format("Line {} of the play.\n", i);
  dsk::PrepareOptions o;
  o.input = d.file("play.txt", text);
  o.out_dir = d / "out";
  nlohmann::json m = dsk::prepare_dataset(o);
  auto train = shard_tokens(d / "out/train.bin"), val = shard_tokens(d / "out/val.bin");
  REQUIRE(!val.empty());
  const auto& tok = dsk::Tokenizer::gpt2();
  std::string val_text = tok.decode(std::vector<int32_t>(val.begin(), val.end()));
  size_t cut = text.find('\n', text.size() * 9 / 10) + 1;  // the line break at/after 90% of the bytes
  CHECK(val_text == text.substr(cut));
  CHECK(m["tokens"]["val"] == val.size());
  CHECK(tok.decode(std::vector<int32_t>(train.begin(), train.end())) + val_text == text);
}

TEST_CASE("prepare: a folder of .txt files and JSONL", "[prepare]") {
  TempDir d("dir");
  fs::create_directories(d.path / "docs");
  for (int i = 0; i < 10; ++i) d.file(fmt::format("docs/{:02}.txt", i), fmt::format("document number {}", i));
  d.file("docs/ignored.md", "not a txt");
  dsk::PrepareOptions o;
  o.input = d / "docs";
  o.out_dir = d / "out";
  auto m = dsk::prepare_dataset(o);
  CHECK(m["input_format"] == "dir");
  CHECK(m["documents"]["train"] == 9);
  CHECK(m["documents"]["val"] == 1);

  std::string jl;
  for (int i = 0; i < 20; ++i) jl += fmt::format("{{\"id\": {}, \"body\": \"row {}\"}}\n", i, i);
  o.input = d.file("rows.jsonl", jl);
  o.out_dir = d / "out2";
  o.field = "body";
  m = dsk::prepare_dataset(o);
  CHECK(m["documents"]["train"] == 18);
  CHECK(m["documents"]["val"] == 2);
}

TEST_CASE("prepare: errors name the problem and leave existing output alone", "[prepare]") {
  TempDir d("err");
  dsk::PrepareOptions o;
  o.out_dir = d / "out";

  o.input = d / "missing.txt";
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("missing.txt") && Catch::Contains("does not exist"));

  o.input = d.file("empty.txt", "");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("holds no text"));

  o.input = d.file("nocol.csv", "id,body\n1,hello\n");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("no column 'text'") && Catch::Contains("id, body"));

  o.input = d.file("bad.csv", "id,text\n1,ok\n2,\"never closed\n3,x\n");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("bad.csv:3"));

  o.input = d.file("short.csv", "id,text\n1,ok\n2\n");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("short.csv:3") && Catch::Contains("1 fields"));

  o.input = d.file("bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": oops}\n");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("bad.jsonl:3") && Catch::Contains("invalid JSON"));

  o.input = d.file("nofield.jsonl", "{\"text\": \"a\"}\n{\"body\": \"b\"}\n");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("nofield.jsonl:2") && Catch::Contains("'text'"));

  o.input = d.file("three.csv", "text\na\nb\nc\n");  // round(0.1 * 3) = 0 validation documents
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("leaves validation empty"));

  o.input = d.file("oneline.txt", "a single line without a break");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("validation would be empty"));

  o.input = d.file("ok.csv", "text\na\nb\nc\nd\ne\nf\ng\nh\ni\nj\n");
  o.val_fraction = 0.0;
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("--val-fraction"));
  o.val_fraction = 0.1;

  o.input = d.file("badutf8.csv", "text\nfine\n\"caf\xC3\"\nc\nd\ne\nf\ng\nh\ni\nj\n");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("badutf8.csv:3") && Catch::Contains("byte offset 3"));

  // An existing output folder is refused without --force and left untouched.
  fs::create_directories(d.path / "out");
  std::string keep = d.file("out/keep.txt", "mine");
  o.input = d / "ok.csv";
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("exists") && Catch::Contains("--force"));
  // --force does not delete a folder that dsk did not make.
  o.force = true;
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("not a folder made by dsk prepare"));
  CHECK(fs::exists(keep));

  CHECK_THROWS_WITH(dsk::open_prepared(d / "nowhere"), Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(dsk::open_prepared(d / "out"), Catch::Contains("manifest.json"));
}

TEST_CASE("prepare: the CLI exits 1 on bad input and 2 on a bad command line", "[prepare]") {
  TempDir d("cli");
  std::string dsk = DSK_BINARY;
  auto code = [](const std::string& cmd) {
    int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
    return WEXITSTATUS(rc);
  };
  CHECK(code(dsk + " prepare --input " + (d / "missing.csv") + " --out " + (d / "o")) == 1);
  CHECK(code(dsk + " prepare --out " + (d / "o")) == 2);
  CHECK(code(dsk + " prepare --input x --out y --bogus") == 2);
  std::string csv = d.file("t.csv", kTinyCsv);
  CHECK(code(dsk + " prepare --input " + csv + " --out " + (d / "o") + " --val-fraction 0.2") == 0);
  CHECK(code(dsk + " prepare --input " + csv + " --out " + (d / "o")) == 1);  // exists, no --force
  CHECK(code(dsk + " tokenize decode " + d.file("ids.txt", "1 2 50257")) == 1);
}
