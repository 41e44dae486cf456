#include "engine/paths.h"

#include "kernels/common.h"

#include <cstdlib>
#include <filesystem>
#include <unistd.h>

namespace fs = std::filesystem;

namespace dsk {

static bool has_data(const fs::path& p) { return fs::exists(p / "encoder.json") && fs::exists(p / "vocab.bpe"); }

// The variable's value, or nullptr when it is unset or empty (an empty value means "not set", as the XDG base
// directory specification says; taken as a path it would put files in the working directory).
static const char* env_value(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

std::string data_dir() {
  if (const char* env = env_value("DSK_DATA_DIR")) {
    if (!has_data(env)) throw Error(fmt::format("DSK_DATA_DIR={} does not hold encoder.json and vocab.bpe", env));
    return env;
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const fs::path& cand : {exe.parent_path() / ".." / "data", exe.parent_path() / "data"})
      if (has_data(cand)) return fs::weakly_canonical(cand).string();
  }
  fs::path src = fs::path(DSK_SOURCE_DIR) / "data";
  if (has_data(src)) return src.string();
  throw Error("cannot find dsk's data folder (encoder.json, vocab.bpe); set DSK_DATA_DIR");
}

std::string cache_dir() {
  if (const char* env = env_value("DSK_CACHE_DIR")) return env;
  // (a relative XDG_CACHE_HOME is invalid by the specification and ignored)
  if (const char* xdg = env_value("XDG_CACHE_HOME"); xdg && fs::path(xdg).is_absolute())
    return (fs::path(xdg) / "dsk").string();
  if (const char* home = env_value("HOME")) return (fs::path(home) / ".cache" / "dsk").string();
  return (fs::temp_directory_path() / "dsk-cache").string();
}

fs::path absolute_path(const std::string& path) {
  fs::path p = fs::absolute(path).lexically_normal();
  return p.filename().empty() && p != p.root_path() ? p.parent_path() : p;
}

}  // namespace dsk
