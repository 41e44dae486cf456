// The device runtime of a build without the CUDA backend: no GPU, and every CUDA call is an error.
#ifndef DSK_HAVE_CUDA
#include "kernels/common.h"
#include "kernels/device.h"

namespace dsk {

bool cuda_compiled() { return false; }
std::vector<GpuInfo> cuda_devices() { return {}; }
std::string cuda_unavailable_reason() { return "this dsk was built without the CUDA backend (nvcc not found)"; }

namespace cuda {
[[noreturn]] static void no_cuda() { DSK_FAIL("this dsk was built without the CUDA backend"); }
void* malloc_device(size_t) { no_cuda(); }
void free_device(void*) { no_cuda(); }
void copy_to_device(void*, const void*, size_t) { no_cuda(); }
void copy_to_host(void*, const void*, size_t) { no_cuda(); }
void copy_device(void*, const void*, size_t) { no_cuda(); }
void memset_device(void*, int, size_t) { no_cuda(); }
void synchronize() { no_cuda(); }
void* record_marker() { no_cuda(); }
float marker_elapsed_ms(void*, void*) { no_cuda(); }
void destroy_marker(void*) { no_cuda(); }
// Precision and tuning settings, not device calls: harmless (and ignored) on a CPU-only build.
void set_tf32(bool) {}
bool tf32_enabled() { return false; }
bool tf32_tensor_cores() { return false; }
void set_expert_tile(ExpertTile) {}
ExpertTile expert_tile() { return ExpertTile::kAuto; }
void set_expert_loads(ExpertLoads) {}
ExpertLoads expert_loads() { return ExpertLoads::kAsync; }
void set_expert_math(Math) {}
Math expert_math() { return Math::kAuto; }
void set_attention_math(Math) {}
Math attention_math() { return Math::kAuto; }
void set_decode_block(DecodeBlock) {}
DecodeBlock decode_block() { return DecodeBlock::kAuto; }
void set_backward_dq(BackwardDq) {}
BackwardDq backward_dq() { return BackwardDq::kFused; }
}  // namespace cuda

}  // namespace dsk
#endif
