#pragma once
// What every benchmark result names: the machine (CPU model, cores, GPUs), the date, the dsk version.
#include <nlohmann/json.hpp>

namespace dsk {

nlohmann::json machine_info();

}  // namespace dsk
