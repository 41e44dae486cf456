#pragma once
// The short sample `dsk train` prints when it finishes.
#include "kernels/backend.h"

#include <string>

namespace dsk::cli {

void print_sample_after_training(const std::string& checkpoint, Backend device, int max_new_tokens);

}  // namespace dsk::cli
