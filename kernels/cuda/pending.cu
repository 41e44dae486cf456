// CUDA specializations that do not exist yet: attention (issue 7). (The MoE ones live in moe_router.cu,
// moe_permute.cu and expert_ffn.cu.)
// They throw a clear error so `--device cuda` fails loudly at the first such op instead of linking fails
// or silent wrong results. Each disappears from this file when its real kernel lands.
#include "kernels/attention.h"

namespace dsk {

namespace {
[[noreturn]] void pending(const char* op, const char* issue) {
  DSK_FAIL("{} has no CUDA implementation yet ({}); use --device cpu", op, issue);
}
}  // namespace

template <>
void attention_forward<Backend::CUDA>(float*, float*, const float*, const float*, const float*, const int32_t*,
                                      const AttentionShape&, const AttentionDropout&) {
  pending("attention_forward", "CUDA part 2");
}
template <>
void attention_backward<Backend::CUDA>(float*, float*, float*, const float*, const float*, const float*, const float*,
                                       const float*, const float*, const AttentionShape&, const AttentionDropout&) {
  pending("attention_backward", "CUDA part 2");
}

}  // namespace dsk
