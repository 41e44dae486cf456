// `dsk prepare`: readers (CSV RFC 4180, JSONL, folder), document split, outputs, and every error of issue 3.
#include "engine/data.h"
#include "engine/documents.h"
#include "engine/tokenizer.h"
#include "kernels/common.h"

#include "tests/test_env.h"

#include <algorithm>
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
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("keep.txt was not written by dsk prepare"));
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

namespace {

using dsk::testing::run_dsk;

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

dsk::PrepareOptions lines_input(const TempDir& d, const std::string& out) {
  std::string text;
  for (int i = 0; i < 20; ++i) text += fmt::format("line {} of the text\n", i);
  dsk::PrepareOptions o;
  o.input = d.file("a.txt", text);
  o.out_dir = out;
  return o;
}

}  // namespace

TEST_CASE("prepare --force replaces only a folder holding nothing but what dsk prepare wrote", "[prepare]") {
  TempDir d("force");
  dsk::PrepareOptions o = lines_input(d, d / "data");
  dsk::prepare_dataset(o);
  const std::vector<std::string> ours{"manifest.json", "train.bin", "val.bin"};
  o.force = true;
  // A file of the user's beside the shards: refused, naming it, before anything is read; nothing is lost.
  d.file("data/notes.txt", "notes");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("refusing to replace " + (d / "data") + ": " +
                                                             (d / "data/notes.txt") + " was not written by dsk prepare"));
  CHECK(entries(d / "data") == std::vector<std::string>{"manifest.json", "notes.txt", "train.bin", "val.bin"});
  fs::remove(d / "data/notes.txt");
  // The input itself inside the folder (the tester's repro): refused, the input kept.
  fs::copy_file(o.input, d / "data/corpus.txt");
  dsk::PrepareOptions inside = o;
  inside.input = d / "data/corpus.txt";
  CHECK_THROWS_WITH(dsk::prepare_dataset(inside), Catch::Contains("the input " + inside.input + " is inside it"));
  CHECK(fs::exists(d / "data/corpus.txt"));
  fs::remove(d / "data/corpus.txt");
  // ...even when it has one of dsk's names.
  inside.input = d / "data/val.bin";
  inside.format = "txt";
  CHECK_THROWS_WITH(dsk::prepare_dataset(inside), Catch::Contains("is inside it"));
  // A folder named like a shard is not dsk's.
  fs::create_directories(d.path / "data/extra");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("extra was not written"));
  fs::remove(d / "data/extra");
  // Leftovers of an interrupted write of dsk's files are replaced with the rest.
  d.file("data/train.bin.tmp-4242", "partial");
  CHECK_NOTHROW(dsk::prepare_dataset(o));
  CHECK(entries(d / "data") == ours);
  // The exact command line of the report: exit 1, one line, the notes kept.
  d.file("data/notes.txt", "notes");
  auto r = run_dsk("prepare --input " + o.input + " --out " + (d / "data") + " --force");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("data/notes.txt was not written by dsk prepare"));
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
  CHECK(fs::exists(d / "data/notes.txt"));
}

TEST_CASE("prepare --out LINK: a link to a folder replaces the target, a dangling link is refused", "[prepare]") {
  TempDir d("outlink");
  dsk::PrepareOptions o = lines_input(d, d / "link");
  // A link to a prepared folder: --force is needed, then the target gets the new data and the link stays.
  dsk::PrepareOptions first = lines_input(d, d / "target");
  dsk::prepare_dataset(first);
  fs::create_directory_symlink(d / "target", d / "link");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("--force"));
  o.force = true;
  o.seed = 7;
  dsk::prepare_dataset(o);
  CHECK(fs::is_symlink(d / "link"));
  CHECK(dsk::open_prepared(d / "target").manifest["seed"] == 7);
  CHECK(entries(d.path) == std::vector<std::string>{"a.txt", "link", "target"});
  // The target is held to the same rule as any folder.
  d.file("target/notes.txt", "mine");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("notes.txt was not written by dsk prepare"));
  CHECK(fs::exists(d / "target/notes.txt"));
  // Dangling: refused with and without --force; the link stays a link.
  fs::remove_all(d / "link");
  fs::create_directory_symlink(d / "nowhere", d / "link");
  for (bool force : {false, true}) {
    o.force = force;
    CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("symbolic link") && Catch::Contains("nowhere"));
    CHECK(fs::is_symlink(d / "link"));
    CHECK(!fs::exists(d / "nowhere"));
  }
  auto r = run_dsk("prepare --input " + o.input + " --out " + (d / "link"));
  CHECK(r.exit_code == 1);
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}

TEST_CASE("prepare: invalid UTF-8 names the file's own line and byte offset", "[prepare]") {
  TempDir d("utf8");
  std::string body;
  for (int i = 0; i < 20; ++i) body += "line one is here\n";
  body += "tail \xff bad\n";  // the 0xFF is at byte 20 * 17 + 5 = 345, on line 21
  dsk::PrepareOptions o;
  o.out_dir = d / "out";
  o.input = d.file("c.txt", body);
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("c.txt:21: invalid UTF-8 at byte offset 345"));
  o.input = d.file("bom.txt", "\xEF\xBB\xBF" + body);  // offsets count the byte order mark, as on disk
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("bom.txt:21: invalid UTF-8 at byte offset 348"));
  // JSONL: checked before parsing, so the raw byte is not echoed.
  o.input = d.file("inv.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\xff\"}\n");
  try {
    dsk::prepare_dataset(o);
    FAIL("no error");
  } catch (const dsk::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("inv.jsonl:2: invalid UTF-8 at byte offset 25"));
    CHECK(std::string(e.what()).find('\xff') == std::string::npos);
  }
}

TEST_CASE("prepare: echoed input in messages is short and one line", "[prepare]") {
  TempDir d("echo");
  dsk::PrepareOptions o;
  o.out_dir = d / "out";
  o.input = d.file("long.jsonl", "{\"text\": \"a\"}\n{\"text\": \"" + std::string(100000, 'x') + "\n");  // unclosed
  try {
    dsk::prepare_dataset(o);
    FAIL("no error");
  } catch (const dsk::Error& e) {
    std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("long.jsonl:2: invalid JSON") && Catch::Contains("..."));
    CHECK(what.size() < 400);
  }
  o.input = d.file("nl.csv", "\"first\nname\",other\x01\n1,2\n");
  try {
    dsk::prepare_dataset(o);
    FAIL("no error");
  } catch (const dsk::Error& e) {
    std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("first\\nname, other\\x01"));
    CHECK(what.find('\n') == std::string::npos);
  }
}

TEST_CASE("prepare: file names that are not UTF-8 are kept in the manifest", "[prepare]") {
  TempDir d("latin1");
  fs::create_directories(d.path / "caf\xe9");
  std::string text;
  for (int i = 0; i < 10; ++i) text += fmt::format("line {}\n", i);
  dsk::PrepareOptions o;
  o.input = d.file("caf\xe9/r\xe9sum\xe9.txt", text);
  o.out_dir = d / "out";
  CHECK_NOTHROW(dsk::prepare_dataset(o));
  auto p = dsk::open_prepared(d / "out");  // the manifest is valid JSON (U+FFFD for the bad bytes)
  CHECK_THAT(p.manifest["source"].get<std::string>(), Catch::Contains("caf\xEF\xBF\xBD"));
}

TEST_CASE("prepare: a folder input ignores non-.txt entries, even link loops; a broken .txt is an error", "[prepare]") {
  TempDir d("loops");
  fs::create_directories(d.path / "docs");
  for (int i = 0; i < 10; ++i) d.file(fmt::format("docs/{:02}.txt", i), fmt::format("document number {}", i));
  fs::create_symlink("loop", d.path / "docs/loop");  // a link to itself
  dsk::PrepareOptions o;
  o.input = d / "docs";
  o.out_dir = d / "out";
  CHECK(dsk::prepare_dataset(o)["documents"]["train"] == 9);
  // Hidden .txt entries (macOS's AppleDouble "._" files, binary) are not documents; an upper-case .TXT is one.
  d.file("docs/._00.txt", std::string("\0\5\x16\7Mac OS X", 12));
  d.file("docs/.notes.txt", "not a document");
  d.file("docs/10.TXT", "document number 10");
  o.force = true;
  const auto with_hidden = dsk::prepare_dataset(o);
  CHECK(with_hidden["documents"]["train"].get<int>() + with_hidden["documents"]["val"].get<int>() == 11);
  fs::create_symlink("self.txt", d.path / "docs/self.txt");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("cannot read the input") && Catch::Contains("self.txt"));
  fs::remove(d.path / "docs/self.txt");
  fs::create_symlink("missing", d.path / "docs/gone.txt");
  CHECK_THROWS_WITH(dsk::prepare_dataset(o), Catch::Contains("cannot read the input") && Catch::Contains("gone.txt"));
}

TEST_CASE("prepare: a single document is cut between lines of text, not at a leading blank line", "[prepare]") {
  TempDir d("lead");
  const std::string text = "\nfirst line of text\nsecond line of text\nthird\n";
  dsk::PrepareOptions o;
  o.input = d.file("lead.txt", text);
  o.out_dir = d / "out";
  o.val_fraction = 0.99;
  dsk::prepare_dataset(o);
  const auto& tok = dsk::Tokenizer::gpt2();
  auto val = shard_tokens(d / "out/val.bin");
  CHECK(tok.decode(std::vector<int32_t>(val.begin(), val.end())) == "second line of text\nthird\n");
  // Trailing blank lines are not a validation split either: the cut falls before the last line of text.
  o.input = d.file("trail.txt", "one\ntwo\n\n\n\n");
  o.out_dir = d / "out2";
  o.val_fraction = 0.1;
  dsk::prepare_dataset(o);
  val = shard_tokens(d / "out2/val.bin");
  CHECK(tok.decode(std::vector<int32_t>(val.begin(), val.end())) == "two\n\n\n\n");
}

TEST_CASE("prepare: the --val-fraction hint is a value that works", "[prepare]") {
  TempDir d("hint");
  fs::create_directories(d.path / "d7");
  for (int i = 1; i <= 7; ++i) d.file(fmt::format("d7/f{}.txt", i), fmt::format("doc {}", i));
  dsk::PrepareOptions o;
  o.input = d / "d7";
  o.out_dir = d / "p7";
  o.val_fraction = 0.01;
  std::string hint;
  try {
    dsk::prepare_dataset(o);
    FAIL("no error");
  } catch (const dsk::Error& e) {
    std::string what = e.what();
    const size_t at = what.find("at least ");
    REQUIRE(at != std::string::npos);
    hint = what.substr(at + 9);
  }
  CHECK(hint == "0.0715");
  o.val_fraction = std::stod(hint);
  CHECK(dsk::prepare_dataset(o)["documents"]["val"] == 1);
}

TEST_CASE("prepare: a bad --val-fraction or --format is a usage error (exit 2) stating the range", "[prepare][cli]") {
  TempDir d("usage");
  std::string in = d.file("t.csv", kTinyCsv);
  for (const char* f : {"1.5", "-0.5", "0", "1", "nan", "inf"}) {
    INFO(f);
    auto r = run_dsk("prepare --input " + in + " --out " + (d / "o") + " --val-fraction " + f);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains("greater than 0 and less than 1"));
    CHECK_THAT(r.output, !Catch::Contains("leaves"));
  }
  auto r = run_dsk("prepare --input " + in + " --out " + (d / "o") + " --format bogus");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--format"));
  // --column and --field only mean something for CSV and JSONL: given for other input they are errors, not ignored.
  const std::string txt = d.file("t.txt", "some text");
  r = run_dsk("prepare --input " + txt + " --out " + (d / "o") + " --column body");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--column applies to CSV input") && Catch::Contains("read as txt"));
  r = run_dsk("prepare --input " + in + " --out " + (d / "o") + " --field body");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--field applies to JSONL input") && Catch::Contains("read as csv"));
  CHECK_FALSE(fs::exists(d / "o"));
  CHECK(!fs::exists(d / "o"));
}
