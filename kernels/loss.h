#pragma once
// Fused softmax cross-entropy: one pass per row, never the whole probability tensor at once.
#include "kernels/backend.h"

namespace dsk {

// losses (N): logsumexp(logits[n]) - logits[n, targets[n]]; a target < 0 is ignored (loss 0, gradient 0).
// When dlogits is given: dlogits (N, V) = (softmax(logits[n]) - onehot(targets[n])) * dloss_scale, set;
// dlogits may alias logits (the gradient then overwrites the logits in place).
template <Backend B>
void cross_entropy_forward_backward(float* losses, float* dlogits, const float* logits, const int32_t* targets,
                                    int N, int V, float dloss_scale);

}  // namespace dsk
