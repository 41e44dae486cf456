#include "bench/bench_tokenizer.h"

#include "engine/paths.h"
#include "engine/read_file.h"
#include "engine/tokenizer.h"
#include "kernels/common.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

namespace dsk {

namespace {

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown";
}

// The 1-minute load average: on a shared machine, other work slows the parallel numbers most.
double load_average() {
  std::ifstream f("/proc/loadavg");
  double l = -1;
  f >> l;
  return l;
}

template <class F>
double median_seconds(int reps, F&& f) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

nlohmann::json bench_tokenizer(const std::string& corpus_path, int threads) {
  std::string path = corpus_path.empty() ? data_dir() + "/tinyshakespeare.txt" : corpus_path;
  const std::string text = read_file(path, "corpus");
  // Nothing to time: the speed would print as 0 MB/s (or a division by zero), which reads like a result.
  if (text.empty()) throw Error(fmt::format("{} is empty: the tokenizer benchmark needs a corpus with text", path));
  const Tokenizer& tok = Tokenizer::gpt2();  // loaded before timing
  int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (threads <= 0) threads = hw;

  size_t n_tokens = 0;
  try {
    n_tokens = tok.encode(text).size();  // warm-up (page cache, allocator)
  } catch (const Error& e) {  // (invalid UTF-8: name the file, as dsk tokenize does)
    throw Error(fmt::format("{}: {}", path, e.what()));
  }
  const int reps = 5;
  double single = median_seconds(reps, [&] {
    if (tok.encode(text).size() != n_tokens) throw Error("tokenizer bench: token count changed between runs");
  });
  double parallel = median_seconds(reps, [&] {
    if (tok.encode_parallel(text, true, false, threads).size() != n_tokens)
      throw Error("tokenizer bench: the parallel encoder disagrees with the serial one");
  });
  double mb = static_cast<double>(text.size()) / 1e6;

  std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return {
      {"bench", "tokenizer"},
      {"corpus", path},
      {"bytes", text.size()},
      {"tokens", n_tokens},
      {"repetitions", reps},
      {"dsk_single_thread_mb_per_s", mb / single},
      {"dsk_parallel_mb_per_s", mb / parallel},
      {"parallel_threads", threads},
      {"machine", {{"cpu", cpu_model()}, {"cores", hw}, {"load_average_1min", load_average()}}},
      {"date", date},
      {"dsk_version", DSK_VERSION},
  };
}

}  // namespace dsk
