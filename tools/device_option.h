#pragma once
// Resolving --device cpu|cuda|auto and the CUDA arithmetic options (--expert-math, --attention-math), shared by
// every subcommand that runs a model.
#include "kernels/backend.h"
#include "kernels/device.h"

#include <string>

namespace dsk::cli {

// cpu → CPU; cuda → CUDA or a one-line error saying why no GPU is usable; auto → CUDA when usable, else CPU
// with a note on stderr.
Backend resolve_device(const std::string& choice);

// The arithmetic named by an option's value (kernels/device.h cuda::Math: auto, ffma, tf32, 3xtf32), or a one-line
// usage error naming the option ("--attention-math must be auto, ffma, tf32 or 3xtf32, got 'x'").
cuda::Math parse_math(const std::string& option, const std::string& value);

}  // namespace dsk::cli
