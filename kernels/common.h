#pragma once
// The lowest layer every other one may include: the error type and the check macros.
// Kernels never include engine headers, so this lives here and the engine reuses it.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace dsk {

// Every failure the engine reports is a dsk::Error with a one-line message; `dsk` prints it and exits non-zero.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail_at(const char* file, int line, const std::string& msg) {
  // Strip the directory so messages stay one short line.
  std::string f(file);
  auto slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  throw Error(fmt::format("{} ({}:{})", msg, f, line));
}

}  // namespace dsk

// DSK_CHECK(cond, "format {}", args...): throw dsk::Error naming file and line when cond is false.
#define DSK_CHECK(cond, ...)                                              \
  do {                                                                    \
    if (!(cond)) ::dsk::fail_at(__FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
  } while (0)

// DSK_FAIL("format {}", args...): throw unconditionally.
#define DSK_FAIL(...) ::dsk::fail_at(__FILE__, __LINE__, fmt::format(__VA_ARGS__))
