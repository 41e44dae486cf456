// CUDA specializations that do not exist yet: mixture of experts (issue 8).
// They throw a clear error so `--device cuda` fails loudly at the first such op instead of linking fails
// or silent wrong results. Each disappears from this file when its real kernel lands.
#include "kernels/moe.h"

namespace dsk {

namespace {
[[noreturn]] void pending(const char* op, const char* issue) {
  DSK_FAIL("{} has no CUDA implementation yet ({}); use --device cpu", op, issue);
}
}  // namespace

template <>
void moe_router_forward<Backend::CUDA>(int32_t*, float*, float*, float*, const float*, const float*, int, int, int,
                                       uint64_t, uint64_t) {
  pending("moe_router_forward", "CUDA part 3");
}
template <>
void moe_router_backward<Backend::CUDA>(float*, float*, const float*, const float*, const int32_t*, const float*, int,
                                        int, int, uint64_t, uint64_t) {
  pending("moe_router_backward", "CUDA part 3");
}
template <>
void moe_aux_loss_forward<Backend::CUDA>(float*, float*, float*, const float*, const int32_t*, int, int, int, float) {
  pending("moe_aux_loss_forward", "CUDA part 3");
}
template <>
void moe_aux_loss_backward<Backend::CUDA>(float*, float, const float*, const float*, int, int, float) {
  pending("moe_aux_loss_backward", "CUDA part 3");
}
template <>
void moe_permute<Backend::CUDA>(int32_t*, int32_t*, int32_t*, const int32_t*, int, int, int) {
  pending("moe_permute", "CUDA part 3");
}
template <>
void moe_gather<Backend::CUDA>(float*, const float*, const int32_t*, int, int, int) {
  pending("moe_gather", "CUDA part 3");
}
template <>
void moe_gather_backward<Backend::CUDA>(float*, const float*, const int32_t*, int, int, int) {
  pending("moe_gather_backward", "CUDA part 3");
}
template <>
void moe_combine<Backend::CUDA>(float*, const float*, const float*, const int32_t*, int, int, int) {
  pending("moe_combine", "CUDA part 3");
}
template <>
void moe_combine_backward<Backend::CUDA>(float*, float*, const float*, const float*, const float*, const int32_t*, int,
                                         int, int) {
  pending("moe_combine_backward", "CUDA part 3");
}
template <>
void expert_ffn_forward<Backend::CUDA>(float*, float*, const float*, const float*, const float*, const float*,
                                       const float*, const int32_t*, int, int, int, int) {
  pending("expert_ffn_forward", "CUDA part 3");
}
template <>
void expert_ffn_backward<Backend::CUDA>(float*, float*, float*, float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, const int32_t*, int, int, int, int) {
  pending("expert_ffn_backward", "CUDA part 3");
}

}  // namespace dsk
