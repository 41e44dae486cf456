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
