#pragma once
// Helpers for [cuda] tests: skip without a GPU, device buffers, poisoned outputs.
#include "kernels/device.h"
#include "tests/testing.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <random>
#include <vector>

#ifdef DSK_CUDA_EMULATOR
namespace dsk_emu {
void set_schedule_seed(uint64_t seed);  // kernels/cuda_emu/emulator.h (not included here: it defines CUDA keywords)
}
#endif

namespace dsk::testing {

// Returns false (and emits a Catch2 WARN) when no usable GPU is present: tests then return early.
// With DSK_REQUIRE_GPU=1 in the environment (scripts/gpu_check.sh sets it) a missing GPU fails the test instead:
// on the GPU machine a silent skip would read as a pass.
inline bool gpu_available() {
#ifdef DSK_CUDA_EMULATOR
  // The emulator's block and thread orders follow the test seed: each run tries other orders, a failure's seed
  // (printed by require_close) reproduces it.
  static const bool seeded = (dsk_emu::set_schedule_seed(test_seed()), true);
  (void)seeded;
#endif
  std::string why = dsk::cuda_unavailable_reason();
  if (!why.empty()) {
    const char* require = std::getenv("DSK_REQUIRE_GPU");
    if (require && std::string(require) == "1") FAIL("[cuda] no usable GPU but DSK_REQUIRE_GPU=1: " << why);
    WARN("[cuda] test skipped: " << why);
    return false;
  }
  return true;
}

// A device buffer holding a copy of host data (or poison), freed on scope exit.
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  // One spare element so that a zero-sized buffer still has a valid pointer.
  explicit DeviceBuffer(size_t count) : n(count) {
    ptr = static_cast<T*>(dsk::cuda::malloc_device((count + 1) * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { dsk::cuda::free_device(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& host) { dsk::cuda::copy_to_device(ptr, host.data(), host.size() * sizeof(T)); }
  // Fills with NaN bytes (0xFF) so that any element a kernel forgot to write shows up.
  void poison() { dsk::cuda::memset_device(ptr, 0xFF, n * sizeof(T)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    dsk::cuda::copy_to_host(h.data(), ptr, n * sizeof(T));
    return h;
  }
};

// True when every element is finite (a poisoned, unwritten float is NaN).
inline bool all_written(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

// How many elements are not finite (a poisoned, unwritten float is NaN); reported by the tests.
inline size_t count_unwritten(const std::vector<float>& v) {
  size_t bad = 0;
  for (float x : v) bad += std::isfinite(x) ? 0 : 1;
  return bad;
}

// Bit-for-bit equality (determinism checks): NaN == NaN, and +0 != -0.
inline bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// The grouped expert GEMMs' tiles, for tests that force each in turn (dsk::cuda::ScopedExpertTile), so that both
// are covered on any device.
struct NamedExpertTile {
  const char* name;
  dsk::cuda::ExpertTile tile;
};
inline const NamedExpertTile kExpertTiles[] = {{"64 x 64", dsk::cuda::ExpertTile::kSmall},
                                               {"128 x 128", dsk::cuda::ExpertTile::kBig}};

// TF32 keeps 10 mantissa bits: GEMM results against the fp32 CPU spec (simulated worst case ~8e-4 relative).
constexpr double kTf32Tol = 3e-3;

// A generator for one test: fresh every run (test_seed), distinct per test through `salt`.
inline std::mt19937_64 test_rng(uint64_t salt) { return std::mt19937_64(test_seed() ^ (salt * 0x9E3779B97F4A7C15ull)); }

// Compares a GPU result with the CPU specification: every element written and the relative error (tests/testing.h
// rel_err) under tol. `what` names the tensor in the failure message, with the seed.
inline void require_close(const std::vector<float>& gpu, const std::vector<float>& cpu, double tol, const char* what) {
  INFO(what << " (seed " << test_seed() << ")");
  REQUIRE(gpu.size() == cpu.size());
  REQUIRE(count_unwritten(gpu) == count_unwritten(cpu));  // NaN where the CPU has none = an unwritten element
  double err = rel_err(gpu, cpu);
  INFO("relative error " << err << " (threshold " << tol << ")");
  REQUIRE(err < tol);
}

}  // namespace dsk::testing
