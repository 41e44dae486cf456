#pragma once
// Device runtime: discovery, memory and transfers. The CPU side always exists; the CUDA side is compiled
// when nvcc is found (DSK_HAVE_CUDA) and answers "no device" at run time on machines without a usable GPU.
#include "kernels/common.h"

#include <cstddef>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsk {

struct GpuInfo {
  int index = 0;
  std::string name;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
  size_t total_memory = 0;  // bytes
  int driver_version = 0;   // e.g. 13000
  int shared_per_block = 0;  // bytes of shared memory a block may opt into (H100/H200: 227 KB)
};

// True when this binary was built with the CUDA backend.
bool cuda_compiled();
// The GPUs the CUDA runtime can use (empty without a driver or device, or without the CUDA backend).
std::vector<GpuInfo> cuda_devices();
// A one-line reason why no GPU is usable ("built without CUDA", "no CUDA driver", ...), empty when one is.
std::string cuda_unavailable_reason();

namespace cuda {
// Raw device memory and transfers; every call is checked and throws dsk::Error on failure.
void* malloc_device(size_t bytes);
void free_device(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_device(void* dst, const void* src, size_t bytes);
void memset_device(void* p, int value, size_t bytes);
// Waits for all work queued on the current stream (kernels/cuda/runtime.cuh) and checks for faults.
void synchronize();
// Time markers on that stream (CUDA events), for profiling: record_marker() queues one after the work queued so
// far; marker_elapsed_ms(a, b) is the GPU time between two that have completed (after synchronize()).
void* record_marker();
float marker_elapsed_ms(void* from, void* to);
void destroy_marker(void* marker);

// TF32 tensor cores for fp32 GEMMs (cuBLAS / cuBLASLt). Off by default, so fp32 results match the CPU
// specification to ~1e-5; on, GEMMs run several times faster at ~1e-3 relative error.
// Without the CUDA backend set_tf32 is a no-op and tf32_enabled() is false.
void set_tf32(bool on);
bool tf32_enabled();
// Whether the current GPU has TF32 tensor cores (compute capability 8.0+): what the kTf32 / kTf32x3 tiles below need.
// False without the CUDA backend.
bool tf32_tensor_cores();

// The grouped expert GEMMs' tile (kernels/cuda/expert_ffn.cu): kAuto takes 128 x 128 when a launch has enough of
// them to give every multiprocessor two, else 64 x 64; kSmall / kBig force one (tests cover both tiles whatever
// the device's size; `dsk bench moe` times both). Without the CUDA backend a no-op.
enum class ExpertTile { kAuto, kSmall, kBig };
void set_expert_tile(ExpertTile tile);
ExpertTile expert_tile();

// How the grouped expert GEMMs' tensor-core tiles (expert_math tf32 / 3xtf32) load their operands. kAsync (the
// default): cp.async copies straight from global memory into a ring of shared tiles several K-steps ahead of the
// products (no registers on the way), wherever every operand row starts 16-byte aligned (widths multiples of 4);
// kRegisters: through registers into two shared tile pairs, the form that takes any shape (and the FFMA tiles'
// only one). Kept so that tests run both and `dsk bench moe` times both. Without the CUDA backend a no-op.
enum class ExpertLoads { kAsync, kRegisters };
void set_expert_loads(ExpertLoads loads);
ExpertLoads expert_loads();

// The block the attention forward runs for decode shapes (at most 16 query rows per (batch, kv head), output widths
// up to 128): kAuto and kKeySplit take the 4-warp block that splits each key tile over its warps and double-buffers
// the tiles (kernels/cuda/attention_decode.cuh), in every attention_math; kForwardKernel the forward kernels' own
// small blocks (FFMA: 8 or 16 rows on 128 threads; tensor cores: one warp), kept so that `dsk bench attention` can
// time both on a GPU. Without the CUDA backend a no-op.
enum class DecodeBlock { kAuto, kForwardKernel, kKeySplit };
void set_decode_block(DecodeBlock block);
DecodeBlock decode_block();

// How the attention backward computes dQ. kFused (the default) where it applies: at qk widths up to 64 (the
// explicit form's heads), in FFMA or on the tensor cores, in the dK/dV kernel from the dS it already has
// (flash-attention-2's one pass; each key tile's partial dQ goes to a buffer that a second kernel sums in key-tile
// order, deterministic), while those partials fit their memory cap (kernels/cuda/attention_backward.cu).
// Elsewhere, and always with kSeparate, a kernel of its own that recomputes S and dP. Kept so that tests and
// `dsk bench attention` run both. Without the CUDA backend a no-op.
enum class BackwardDq { kFused, kSeparate };
void set_backward_dq(BackwardDq how);
BackwardDq backward_dq();

// The arithmetic of dsk's own fp32 matrix tiles, chosen separately for the grouped expert GEMMs
// (kernels/cuda/expert_ffn.cu; the `expert_math` training key) and for the attention kernels
// (kernels/cuda/attention_*.cu; the `attention_math` key). kAuto follows set_tf32 (TF32 tensor cores when on, fp32
// FFMA when off); kFfma, kTf32 and kTf32x3 force one, whatever set_tf32 says. kTf32x3 is near-fp32 on the tensor
// cores: each operand split into a TF32 high part and a TF32 remainder (x to ~2^-22), three products
// (hi·hi + hi·lo + lo·hi; the dropped lo·lo is ~2^-22 relative): CUTLASS's "3xTF32", the arithmetic of PyTorch's
// fp32 memory-efficient attention. Tensor-core tiles need compute capability 8.0+: there kAuto falls back to FFMA
// and a forced kTf32 / kTf32x3 is an error. `dsk bench moe` and `dsk bench attention` time each.
// Without the CUDA backend the setters are no-ops.
enum class Math { kAuto, kFfma, kTf32, kTf32x3 };
void set_expert_math(Math math);
Math expert_math();
void set_attention_math(Math math);
Math attention_math();
// What kAuto means: TF32 when tf32 is on, FFMA when not; any other choice stands.
inline Math resolve_math(Math math, bool tf32) {
  if (math != Math::kAuto) return math;
  return tf32 ? Math::kTf32 : Math::kFfma;
}
// The name of each choice, as the `expert_math` / `attention_math` keys and --expert-math / --attention-math take it.
inline const char* math_name(Math math) {
  switch (math) {
    case Math::kAuto: return "auto";
    case Math::kFfma: return "ffma";
    case Math::kTf32: return "tf32";
    case Math::kTf32x3: return "3xtf32";
  }
  return "?";
}
// What a tile runs for the choice `chosen` of the setting named `key`: kAuto resolved against tf32; on a GPU without
// TF32 tensor cores (compute capability below 8.0) kAuto gives FFMA and a forced tensor-core choice is a one-line
// error (the device code would trap).
inline Math effective_math(Math chosen, bool tf32, bool tensor_cores, const char* key) {
  const Math math = resolve_math(chosen, tf32);
  if (math == Math::kFfma || tensor_cores) return math;
  DSK_CHECK(chosen == Math::kAuto, "{}={} needs TF32 tensor cores (compute capability 8.0 or newer); use {}=ffma", key,
            math_name(chosen), key);
  return Math::kFfma;
}
// effective_math with this process's tf32 setting on the current GPU: what a launch runs now.
inline Math running_math(Math chosen, const char* key) {
  return effective_math(chosen, tf32_enabled(), tf32_tensor_cores(), key);
}
inline constexpr Math kMaths[] = {Math::kAuto, Math::kFfma, Math::kTf32, Math::kTf32x3};
// The choice with that name; nullopt for any other name.
inline std::optional<Math> math_named(std::string_view name) {
  for (Math m : kMaths)
    if (name == math_name(m)) return m;
  return std::nullopt;
}
// "auto, ffma, tf32 or 3xtf32": the names, for error messages.
inline std::string math_choices() {
  const size_t n = std::size(kMaths);
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) s += i + 1 == n ? " or " : ", ";
    s += math_name(kMaths[i]);
  }
  return s;
}

// Sets one of these process-wide choices for a scope and restores the previous one at its end (also when it ends
// by an exception).
template <class T, T (*Get)(), void (*Set)(T)>
class ScopedSetting {
 public:
  explicit ScopedSetting(T value) : previous_(Get()) { Set(value); }
  ~ScopedSetting() { Set(previous_); }
  ScopedSetting(const ScopedSetting&) = delete;
  ScopedSetting& operator=(const ScopedSetting&) = delete;

 private:
  T previous_;
};
using ScopedTf32 = ScopedSetting<bool, tf32_enabled, set_tf32>;
using ScopedExpertTile = ScopedSetting<ExpertTile, expert_tile, set_expert_tile>;
using ScopedExpertLoads = ScopedSetting<ExpertLoads, expert_loads, set_expert_loads>;
using ScopedExpertMath = ScopedSetting<Math, expert_math, set_expert_math>;
using ScopedAttentionMath = ScopedSetting<Math, attention_math, set_attention_math>;
using ScopedDecodeBlock = ScopedSetting<DecodeBlock, decode_block, set_decode_block>;
using ScopedBackwardDq = ScopedSetting<BackwardDq, backward_dq, set_backward_dq>;
}  // namespace cuda

}  // namespace dsk
