#include "engine/metrics_log.h"

#include "kernels/common.h"  // Error

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

namespace fs = std::filesystem;

namespace dsk {
namespace {

// Whether one line (without its newline) is a record of a step at most `step`.
bool kept(const std::string& line, int64_t step) {
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= step;
}

}  // namespace

void truncate_metrics_after(const std::string& path, int64_t step) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return;
  const std::streamoff size = in.tellg();
  std::streamoff keep = 0;  // bytes kept: up to the end of the last kept record
  // Back from the end, one window at a time: the records to drop are the last few of a long log.
  for (std::streamoff window = 1 << 16;; window *= 4) {
    const std::streamoff start = std::max<std::streamoff>(0, size - window);
    std::string tail(static_cast<size_t>(size - start), '\0');
    in.seekg(start);
    in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
    bool found = false;
    // Complete lines from the last: [begin, end) with tail[end] == '\n'.
    size_t end = tail.rfind('\n');
    while (end != std::string::npos) {
      const size_t prev = end == 0 ? std::string::npos : tail.rfind('\n', end - 1);
      if (prev == std::string::npos && start > 0) break;  // this line may begin before the window: widen it
      const size_t begin = prev == std::string::npos ? 0 : prev + 1;
      if (kept(tail.substr(begin, end - begin), step)) {
        keep = start + static_cast<std::streamoff>(end) + 1;
        found = true;
        break;
      }
      end = prev;
    }
    if (found || start == 0) break;
  }
  if (keep == size) return;
  in.close();
  std::error_code ec;
  fs::resize_file(path, static_cast<uintmax_t>(keep), ec);
  if (ec) throw Error(fmt::format("cannot drop the records after step {} from {}: {}", step, path, ec.message()));
}

MetricsLog::MetricsLog(const std::string& path, int64_t resume_step) {
  truncate_metrics_after(path, resume_step);
  out_.open(path, std::ios::app);
  if (!out_) throw Error(fmt::format("cannot open {}", path));
}

void MetricsLog::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
}

}  // namespace dsk
