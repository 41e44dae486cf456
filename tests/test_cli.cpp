#include "tools/cli.h"

#include <catch2/catch.hpp>

using dsk::cli::Args;

TEST_CASE("cli: flags, options and positionals parse", "[cli]") {
  Args a("x", "test", "dsk x [FILE]");
  a.flag("json", "json").option("batch", "N", "batch", "8").repeated("set", "K=V", "set").positionals(1);
  REQUIRE(a.parse({"--json", "--batch=4", "--set", "a=1", "--set", "b=2", "file.txt"}));
  CHECK(a.has("json"));
  CHECK(a.get_int("batch") == 4);
  CHECK(a.all("set") == std::vector<std::string>{"a=1", "b=2"});
  CHECK(a.positional() == std::vector<std::string>{"file.txt"});
}

TEST_CASE("cli: unknown flags and bad values are usage errors", "[cli]") {
  Args a("x", "test", "dsk x");
  a.option("batch", "N", "batch", "8");
  CHECK_THROWS_AS(Args(a).parse({"--nope"}), dsk::cli::UsageError);
  CHECK_THROWS_AS(Args(a).parse({"extra"}), dsk::cli::UsageError);
  CHECK_THROWS_AS(Args(a).parse({"--batch"}), dsk::cli::UsageError);
  Args b(a);
  REQUIRE(b.parse({"--batch", "4x"}));
  CHECK_THROWS_AS(b.get_int("batch"), dsk::cli::UsageError);
}

TEST_CASE("cli: integers outside their range are usage errors naming the range, not wrapped", "[cli]") {
  auto value = [](const std::string& text) {
    Args a("x", "test", "dsk x");
    a.option("n", "N", "n", "1");
    REQUIRE(a.parse({"--n", text}));
    return a;
  };
  CHECK(value("2147483647").get_int32("n") == 2147483647);
  CHECK(value("-5").get_int32("n") == -5);
  CHECK_THROWS_WITH(value("4294967298").get_int32("n"), Catch::Contains("from -2147483648 to 2147483647"));
  CHECK_THROWS_WITH(value("0").get_int32("n", 1), Catch::Contains("--n must be from 1 to"));
  CHECK_THROWS_WITH(value("300").get_int32("n", 1, 256), Catch::Contains("from 1 to 256, got 300"));
  // strtoll saturates at LLONG_MAX; that must not pass for a value.
  CHECK_THROWS_AS(value("99999999999999999999999").get_int("n"), dsk::cli::UsageError);
  CHECK_THROWS_AS(value("-99999999999999999999999").get_int("n"), dsk::cli::UsageError);
  CHECK(value("9223372036854775807").get_int("n") == 9223372036854775807LL);
}

TEST_CASE("cli: help states each option's default once", "[cli]") {
  Args a("x", "test", "dsk x");
  a.option("batch", "N", "batch size", "8").option("seq-len", "T", "sequence length (default: context_length)", "0");
  const std::string help = a.help_text();
  CHECK_THAT(help, Catch::Contains("batch size (default: 8)"));
  CHECK_THAT(help, Catch::Contains("sequence length (default: context_length)\n"));
  CHECK_THAT(help, !Catch::Contains("(default: 0)"));
}

TEST_CASE("cli: a path printed as a command to paste is quoted for the shell when it must be", "[cli]") {
  CHECK(dsk::cli::shell_quote("runs/20261130-1200") == "runs/20261130-1200");
  CHECK(dsk::cli::shell_quote("my run") == "'my run'");
  CHECK(dsk::cli::shell_quote("it's") == "'it'\\''s'");
  CHECK(dsk::cli::shell_quote("$HOME;rm") == "'$HOME;rm'");
  CHECK(dsk::cli::shell_quote("") == "''");
}

TEST_CASE("cli: given() tells an option on the command line from its default; all() keeps each value", "[cli]") {
  Args a("x", "test", "dsk x");
  a.flag("json", "json").option("split", "NAME", "split", "val").option("text", "FILE", "text");
  REQUIRE(a.parse({"--text", "a.txt", "--text", "b.txt"}));
  CHECK(a.has("split"));     // has(): a default counts
  CHECK(!a.given("split"));  // given(): only what was typed
  CHECK(!a.given("json"));
  CHECK(a.given("text"));
  CHECK(a.get("text") == "b.txt");  // the last one wins, as before
  CHECK(a.all("text") == std::vector<std::string>{"a.txt", "b.txt"});  // so a command can refuse the repeat
  Args b("x", "test", "dsk x");
  b.flag("json", "json").option("split", "NAME", "split", "val");
  REQUIRE(b.parse({"--split=val", "--json"}));
  CHECK(b.given("split"));  // even when it equals the default
  CHECK(b.given("json"));
}
