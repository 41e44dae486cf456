// engine/paths: where dsk looks for its data and keeps its cache.
#include "engine/paths.h"
#include "tests/test_env.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <optional>
#include <string>

using dsk::testing::ScopedEnv;

TEST_CASE("cache_dir: DSK_CACHE_DIR, then an absolute XDG_CACHE_HOME, then ~/.cache; empty means unset", "[paths]") {
  ScopedEnv home("HOME", "/home/someone");
  {
    ScopedEnv dsk("DSK_CACHE_DIR", "/tmp/my-cache");
    ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
    CHECK(dsk::cache_dir() == "/tmp/my-cache");
  }
  {
    ScopedEnv dsk("DSK_CACHE_DIR", std::nullopt);
    ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
    CHECK(dsk::cache_dir() == "/xdg/dsk");
  }
  {
    // Empty values were taken as paths: the prepared data landed in the working directory.
    ScopedEnv dsk("DSK_CACHE_DIR", "");
    ScopedEnv xdg("XDG_CACHE_HOME", "");
    CHECK(dsk::cache_dir() == "/home/someone/.cache/dsk");
  }
  {
    ScopedEnv dsk("DSK_CACHE_DIR", std::nullopt);
    ScopedEnv xdg("XDG_CACHE_HOME", "relative/cache");  // invalid by the XDG specification: ignored
    CHECK(dsk::cache_dir() == "/home/someone/.cache/dsk");
  }
}
