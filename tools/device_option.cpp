#include "tools/device_option.h"

#include "kernels/device.h"
#include "tools/cli.h"

#include <cstdio>

namespace dsk::cli {

Backend resolve_device(const std::string& choice) {
  if (choice == "cpu") return Backend::CPU;
  if (choice != "cuda" && choice != "auto")
    throw UsageError(fmt::format("--device must be cpu, cuda or auto, got '{}'", choice));
  const std::string why = cuda_unavailable_reason();
  if (why.empty()) return Backend::CUDA;
  if (choice == "cuda") throw Error(fmt::format("--device cuda: {}", why));
  std::fprintf(stderr, "note: no usable GPU (%s); running on the CPU\n", why.c_str());
  return Backend::CPU;
}

cuda::Math parse_math(const std::string& option, const std::string& value) {
  const auto math = cuda::math_named(value);
  if (!math) throw UsageError(fmt::format("--{} must be {}, got '{}'", option, cuda::math_choices(), value));
  return *math;
}

}  // namespace dsk::cli
