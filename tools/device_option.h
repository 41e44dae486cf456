#pragma once
// Resolving --device cpu|cuda|auto, shared by every subcommand that runs a model.
#include "kernels/backend.h"

#include <string>

namespace dsk::cli {

// cpu → CPU; cuda → CUDA or a one-line error saying why no GPU is usable; auto → CUDA when usable, else CPU
// with a note on stderr.
Backend resolve_device(const std::string& choice);

}  // namespace dsk::cli
