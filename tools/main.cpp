// dsk: train, sample, prepare, bench and inspect DeepSeek-style (MLA + MoE) models.
#include "tools/cli.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

namespace {

void print_usage() {
  std::fputs("dsk " DSK_VERSION " — a from-scratch C++/CUDA engine for DeepSeek-style (MLA + MoE) models\n\n"
             "usage: dsk <command> [options]\n\ncommands:\n", stdout);
  for (const auto& [name, cmd] : dsk::cli::commands()) std::printf("  %-10s %s\n", name.c_str(), cmd.summary.c_str());
  std::fputs("\n`dsk <command> --help` describes each command's options.\n", stdout);
}

// Output into a full disk fails at a write or at this last flush, silently unless asked: a command whose output
// was lost must not exit 0 (`dsk tokenize encode big.txt > ids.txt` would leave a cut file and "succeed").
int flushed(int rc, const std::string& who) {
  errno = 0;
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return rc;
  std::fprintf(stderr, "%s: error: cannot write the output: %s\n", who.c_str(), errno ? std::strerror(errno) : "write error");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_usage();
    return flushed(args.empty() ? 2 : 0, "dsk");
  }
  if (args[0] == "--version") {
    std::puts("dsk " DSK_VERSION);
    return flushed(0, "dsk");
  }
  auto& registry = dsk::cli::commands();
  auto it = registry.find(args[0]);
  if (it == registry.end()) {
    std::fprintf(stderr, "dsk: unknown command '%s' (see dsk --help)\n", args[0].c_str());
    return 2;
  }
  try {
    return flushed(it->second.run(std::vector<std::string>(args.begin() + 1, args.end())), "dsk " + args[0]);
  } catch (const dsk::cli::UsageError& e) {
    // Most usage errors name their command already; those from shared helpers (--set, --device) get it here.
    const std::string msg = e.what(), prefix = msg.rfind("dsk", 0) == 0 ? "" : "dsk " + args[0] + ": ";
    std::fprintf(stderr, "%s%s\n", prefix.c_str(), msg.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsk %s: error: %s\n", args[0].c_str(), e.what());
    return 1;
  }
}
