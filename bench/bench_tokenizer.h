#pragma once
// `dsk bench tokenizer`: GPT-2 encode speed on a corpus (default: Tiny Shakespeare), single-threaded and parallel.
#include <nlohmann/json.hpp>

#include <string>

namespace dsk {

// Encodes the corpus 5 times single-threaded and 5 times with `threads` threads (0: all cores) after one
// warm-up; reports the median MB/s of each (MB = 1e6 bytes), the token count, and the machine (CPU model, cores,
// date). An empty corpus_path means data_dir()/tinyshakespeare.txt.
nlohmann::json bench_tokenizer(const std::string& corpus_path, int threads);

}  // namespace dsk
