#pragma once
// The activation-memory plan: how many bytes one step's activation arena needs for (config, B, T).
// It is measured, not estimated: the model's own forward (and backward) code runs against a counting arena
// with every kernel switched off, so the plan follows the code exactly.
#include "engine/config.h"

#include <cstddef>
#include <map>
#include <string>

namespace dsk {

struct MemoryPlan {
  size_t parameter_bytes = 0;   // params + grads + AdamW m, v (4 copies)
  size_t forward_bytes = 0;     // activation arena peak after a forward (inference: no gradients kept)
  size_t activation_bytes = 0;  // activation arena peak over forward + backward (training)
};

MemoryPlan plan_memory(const ModelConfig& config, int batch, int seq_len, bool training = true);

}  // namespace dsk
