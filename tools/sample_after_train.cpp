#include "tools/sample_after_train.h"

#include <cstdio>

namespace dsk::cli {

// Placeholder until the generation engine (engine/sampler) lands: says where the checkpoint is.
void print_sample_after_training(const std::string& checkpoint, Backend, int) {
  std::fprintf(stderr, "sample with: dsk sample --model %s\n", checkpoint.c_str());
}

}  // namespace dsk::cli
