#include "bench/machine.h"

#include "kernels/common.h"
#include "kernels/device.h"

#include <omp.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>

namespace dsk {

namespace {
std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}
}  // namespace

nlohmann::json machine_info() {
  std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  nlohmann::json gpus = nlohmann::json::array();
  for (const GpuInfo& g : cuda_devices())
    gpus.push_back({{"name", g.name}, {"sm_count", g.sm_count}, {"compute_capability", fmt::format("{}.{}", g.cc_major, g.cc_minor)},
                    {"memory_gib", g.total_memory / 1073741824.0}, {"driver", g.driver_version}});
  return {{"date", date},
          {"dsk_version", DSK_VERSION},
          {"cpu", cpu_model()},
          {"cpu_cores", std::thread::hardware_concurrency()},
          {"omp_threads", omp_get_max_threads()},
          {"gpus", gpus}};
}

}  // namespace dsk
