#pragma once
// A CPU emulator for dsk's CUDA kernels: the kernel files of kernels/cuda/ compile unchanged with g++ against
// this header (and the stand-in CUDA headers in kernels/cuda_emu/include/), and the [cuda] tests run them on a
// machine without a GPU. It checks the kernels' logic (indexing, tiling, barriers, warp shuffles, reductions),
// not their speed or their behaviour under the real scheduler.
//
// How it runs a launch: blocks one after another, in a pseudo-random order (a kernel whose blocks depend on each
// other's order races on a GPU, and fails here); inside a block, every CUDA thread is a
// fiber and the fibers take turns, in a fresh pseudo-random order each round, each running until it reaches a
// barrier (__syncthreads, a warp shuffle or vote, __syncwarp) or ends. A barrier opens when every live thread of
// its block (or warp) has arrived. Each round also holds back a random half of the warps, so warps drift apart
// between block barriers as they do on a GPU (one may be several shuffles or mma steps ahead of another). So:
//   - DSK_SHARED (static __shared__) variables are `static`: one copy, shared by the block's fibers (blocks never
//     overlap), filled with 0xFF bytes when the block's first thread declares it (shared_here);
//   - a thread reading shared memory another thread has not yet written without a barrier in between sees the
//     old contents, which makes a missing __syncthreads show as a wrong (or run-to-run different) result; with
//     the warps out of step, so does one warp overwriting (or cp.async-ing into) a tile another may still read;
//   - a warp shuffle or vote with lanes that have exited, or threads of one block waiting at different kinds of
//     barrier, is reported as an error (a hang or undefined behaviour on a GPU);
//   - device memory from cudaMalloc and dynamic shared memory start filled with 0xFF bytes (NaN as floats), so
//     reading what nobody wrote shows up;
//   - device allocations, dynamic shared memory and fiber stacks end at an inaccessible page (guarded_memory.cpp),
//     so an out-of-bounds access faults and is reported with the buffer and the thread;
//   - a launch with more than 48 KB of dynamic shared memory fails unless cudaFuncSetAttribute raised that
//     kernel's limit, as on a GPU;
//   - device memory is off limits to host code: its pages are inaccessible outside launches, copies and the
//     library stand-ins, so a host dereference of a device pointer faults (and is reported) as it crashes on a
//     GPU; a kernel's pointer arguments, cuBLAS operands and cudaMemcpy directions are checked (DeviceWork below);
//   - the first launches of each kernel and shape run twice (race check, below), and a result that depends on the
//     schedule is reported as a race.
// Not emulated: concurrency between blocks, atomics (dsk's kernels use none), memory-model subtleties, timing.
//
// Race check: a launch whose result depends on the order its blocks or threads ran in has a race on a GPU (two
// blocks writing one element, a block reading what another writes in the same launch, a thread reading shared
// memory before the barrier that publishes it). One schedule shows a race only if it happens to corrupt a value
// the test then compares, so the emulator runs the first launches of each kernel shape (kernel, grid, block,
// shared bytes) twice from the same device memory: once in one order, then again, restored, with the blocks
// reversed and fresh thread orders, and fails the launch, naming the kernel and the first differing byte, if the
// two leave different device memory. How many launches per shape: DSK_EMU_RACE_CHECK in the environment (default
// 1; 0 turns it off), or set_race_check_launches (which also starts the counts afresh). What it snapshots is the
// memory cudaMalloc returned (the emulator has no managed, host-mapped or __device__ global memory; adding any
// would need it snapshotted too, or a checked launch would update it twice); the two snapshots are kept for the
// process (about twice the device memory in use, host RAM) and each checked launch copies it three times: cheap in
// the tests, noticeable in a long `dsk_emu train`. A thread that reads a local variable before writing it also
// shows as a difference (fiber stacks are reused), and is reported the same way.
// wmma (tensor cores): every lane holds the whole fragment; one lane computes each mma_sync for the warp
// (warp_once); TF32 rounding is applied by __float_to_tf32 as on the GPU (to nearest, ties away), and mma_sync
// reads TF32 operands truncated to their top 19 bits (include/mma.h).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

// ---- CUDA C++ keywords as plain C++ ---------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Kernels declare static shared memory with DSK_SHARED (kernels/cuda/runtime.cuh), which the emulator poisons per
// block (shared_here); a bare __shared__ does not compile here, so none escapes that.
#define __shared__ __shared__is_written_DSK_SHARED_in_dsk_kernels
#define __align__(n) __attribute__((aligned(n)))

// ---- vector types ---------------------------------------------------------------------------------------------
namespace dsk_emu {
[[noreturn]] void misaligned(const void* p, const char* type, size_t alignment);
// A vector load or store on the GPU needs an address aligned to the vector's size ("misaligned address" error
// otherwise). The asm hides the address's origin so the compiler cannot assume the type's alignment and drop the
// test.
template <size_t Alignment>
inline void check_aligned(const void* p, const char* type) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  asm("" : "+r"(a));
  if (a % Alignment != 0) misaligned(p, type, Alignment);
}

// The vector types check the alignment of every access through memory: copying one from a reference (a load:
// *reinterpret_cast<const float4*>(p)) and assigning one (a store). The checks live in an empty base class whose
// copy operations the vector's implicit ones call with the same addresses.
template <size_t Alignment>
struct AlignedAccess {
  AlignedAccess() = default;
  AlignedAccess(const AlignedAccess& o) { check_aligned<Alignment>(&o, "vector"); }
  AlignedAccess& operator=(const AlignedAccess& o) {
    check_aligned<Alignment>(&o, "vector");
    check_aligned<Alignment>(this, "vector");
    return *this;
  }
};
}  // namespace dsk_emu

struct alignas(16) float4 : dsk_emu::AlignedAccess<16> {
  float x, y, z, w;
  float4() = default;
  constexpr float4(float x_, float y_, float z_, float w_) : x(x_), y(y_), z(z_), w(w_) {}
};
struct alignas(16) int4 : dsk_emu::AlignedAccess<16> {
  int x, y, z, w;
  int4() = default;
  constexpr int4(int x_, int y_, int z_, int w_) : x(x_), y(y_), z(z_), w(w_) {}
};
struct alignas(8) float2 : dsk_emu::AlignedAccess<8> {
  float x, y;
  float2() = default;
  constexpr float2(float x_, float y_) : x(x_), y(y_) {}
};
struct alignas(8) int2 : dsk_emu::AlignedAccess<8> {
  int x, y;
  int2() = default;
  constexpr int2(int x_, int y_) : x(x_), y(y_) {}
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

namespace dsk_emu {

// The emulated device: a Hopper-like GPU with few multiprocessors (so that split-K paths run) and its opt-in
// dynamic shared memory limit per block.
constexpr int kMultiprocessors = 4;
constexpr size_t kMaxDynamicSharedBytes = size_t(227) << 10;

// The running thread's coordinates (valid inside a kernel only).
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();

void syncthreads();
void syncwarp();
// All lanes of the warp exchange a 64-bit value: returns lane src's value (src outside 0..31: own value).
uint64_t warp_exchange(uint64_t value, int src_lane);
unsigned warp_ballot(bool predicate);
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (d += a b), warp-collective, with PTX's fragment layout (see
// emulator.cpp) and TF32 operands read as the hardware does (tf32_operand).
void mma_m16n8k8_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]);
// What the tensor cores use of a TF32 operand: its top 19 bits. The CUDA guide asks kernels to round with
// __float_to_tf32 / cvt.rna.tf32 first (dsk's do; then this changes nothing); one that forgets gets truncated
// operands here (what the hardware is observed to do with the low 13 bits; the guide leaves it unspecified) instead
// of a silently exact fp32 product. (A NaN whose payload is only in those bits would read as inf; none is fed.)
inline float tf32_operand(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b &= 0xffffe000u;
  std::memcpy(&f, &b, 4);
  return f;
}
int lane_id();
// cp.async (kernels/cuda/async_copy.cuh): queues a copy of `bytes` (4, 8 or 16) into dst, the launch's dynamic
// shared memory: src_bytes of them from src (device memory, even when src_bytes is 0, as dsk's kernels promise),
// zeros after. Both addresses must be aligned to `bytes`. Until the issuing thread's cp_async_wait_all the
// destination holds NaN bytes (its contents are undefined on a GPU), so a read before the wait shows in results;
// a thread that ends with copies it never waited for is reported.
void cp_async(void* dst, const void* src, int bytes, int src_bytes);
void cp_async_wait_all();
// cp.async.commit_group: this thread's copies issued since its last commit form a group. cp.async.wait_group n:
// every committed group but the n newest lands (copies not committed yet stay in flight).
void cp_async_commit();
void cp_async_wait_pending(int n);
// For warp-collective stand-ins (wmma::mma_sync): the n-th call by each lane of a warp returns the same buffer of
// `floats` floats; the first lane to make that call fills it with compute(buffer). Lanes run one after another
// between barriers, so one lane's computation serves the warp without a barrier.
const float* warp_once(size_t floats, const std::function<void(float*)>& compute);
void* dynamic_shared();
// A thread reached the declaration of a static shared variable: the block's first to get there poisons it.
void shared_here(void* p, size_t bytes);
[[noreturn]] void trap(const char* why);

// Seeds the pseudo-random order of blocks and of threads within a round (the [cuda] tests seed it with their
// DSK_TEST_SEED, so every run explores other orders and a failing one is reproduced by its seed).
void set_schedule_seed(uint64_t seed);

// Runs body() as every thread of every block of the grid (kernel: the function, for its shared-memory limit and
// the race check's count; name: how reports name it). Throws std::runtime_error on a kernel fault or a race.
void launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const void* kernel, const char* name,
            const std::function<void()>& body);
// How many launches of each kernel shape the race check runs twice (see above); returns the previous value.
int set_race_check_launches(int launches);
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes): false above the device's limit.
bool set_max_dynamic_shared(const void* kernel, size_t bytes);

// Memory between two inaccessible pages, its usable bytes (`bytes` rounded up to `alignment`) ending at the upper
// one; `kind` names it in the fault report. Null when the system refuses the mapping. guarded_free: false for a
// pointer guarded_alloc did not return.
void* guarded_alloc(size_t bytes, size_t alignment, const char* kind);
bool guarded_free(void* p);
// The kind cudaMalloc passes to guarded_alloc; device_allocations lists those regions' usable bytes (what a kernel
// may write), in address order.
extern const char kDeviceAllocation[];
struct Span {
  unsigned char* data;
  size_t bytes;
};
std::vector<Span> device_allocations();
// Whether p points into a cudaMalloc allocation (or one past its end: an empty view at a buffer's end).
bool is_device_pointer(const void* p);
// Fails (std::runtime_error naming `what`) unless p is null or a device pointer.
void require_device_pointer(const void* p, const char* what);

// Device memory and host code. On a GPU a cudaMalloc pointer is not host memory: host code that dereferences one
// crashes, a kernel given a host pointer faults, cuBLAS given one fails. Here device memory is host memory, so each
// of those bugs would pass. Instead the device allocations' pages are inaccessible (PROT_NONE) except during the
// emulator's own device work (a DeviceWork scope: a launch, a copy or memset, a cuBLAS, cuBLASLt or CUB stand-in):
// a host access outside one faults and the fault handler says so; kernel pointer arguments (Launch below), cuBLAS
// operands and the directions of cudaMemcpy are checked against the allocations. Scopes nest.
void begin_device_work();
void end_device_work();
class DeviceWork {
 public:
  DeviceWork() { begin_device_work(); }
  ~DeviceWork() { end_device_work(); }
  DeviceWork(const DeviceWork&) = delete;
  DeviceWork& operator=(const DeviceWork&) = delete;
};

// Installs (again, if something replaced it) the handler that reports a guard-page fault, chaining to the
// previous one; called at every launch.
void ensure_fault_handler();
// " in block (x,y,z) thread (x,y,z) of a kernel" while a kernel runs, else "" (for fault reports; no allocation).
void describe_current_thread(char* out, size_t size);

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp exchange of a value wider than 64 bits");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

[[noreturn]] void host_pointer_argument(const char* kernel, int index, const void* p);

// DSK_LAUNCH(grid, block, smem, kernel)(args...) in emulator builds (kernels/cuda/runtime.cuh).
template <class K>
struct Launch {
  dim3 grid, block;
  size_t smem;
  const char* name;
  K* kernel;
  Launch(dim3 g, dim3 b, size_t s, const char* n, K* k) : grid(g), block(b), smem(s), name(n), kernel(k) {}
  template <class... A>
  void operator()(A&&... args) const {
    int index = 0;
    (check_argument(args, index++), ...);
    K* k = kernel;
    // Every thread gets its own copies of the arguments, as kernel parameters are on a GPU.
    launch(grid, block, smem, reinterpret_cast<const void*>(k), name, [k, args...] { k(args...); });
  }

 private:
  // A pointer argument must be null or device memory: a host pointer faults on a GPU.
  template <class T>
  void check_argument(const T& arg, int index) const {
    if constexpr (std::is_pointer_v<T>) {
      if (arg != nullptr && !is_device_pointer(arg)) host_pointer_argument(name, index, arg);
    }
  }
};
// A function, not the class: `Launch(...)(...)` could parse as a declaration.
template <class K>
Launch<K> launcher(dim3 grid, dim3 block, size_t smem, const char* name, K* kernel) {
  return Launch<K>(grid, block, smem, name, kernel);
}

}  // namespace dsk_emu

#define threadIdx (::dsk_emu::thread_idx())
#define blockIdx (::dsk_emu::block_idx())
#define blockDim (::dsk_emu::block_dim())
#define gridDim (::dsk_emu::grid_dim())
#define warpSize 32

// ---- synchronization and warp intrinsics ----------------------------------------------------------------------
inline void __syncthreads() { dsk_emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { dsk_emu::syncwarp(); }
inline void __threadfence() {}

template <class T>
T __shfl_sync(unsigned, T v, int src, int width = 32) {
  const int lane = dsk_emu::lane_id();
  const int base = lane - lane % width;
  return dsk_emu::from_bits<T>(dsk_emu::warp_exchange(dsk_emu::to_bits(v), base + (src % width)));
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  const int lane = dsk_emu::lane_id();
  const int src = lane ^ mask;
  // Outside the lane's width segment: the lane keeps its own value (as on the GPU).
  const bool same_segment = (src / width) == (lane / width);
  return dsk_emu::from_bits<T>(dsk_emu::warp_exchange(dsk_emu::to_bits(v), same_segment ? src : -1));
}
template <class T>
T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = dsk_emu::lane_id();
  const int src = lane - static_cast<int>(delta);
  const bool ok = src >= lane - lane % width;
  return dsk_emu::from_bits<T>(dsk_emu::warp_exchange(dsk_emu::to_bits(v), ok ? src : -1));
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = dsk_emu::lane_id();
  const int src = lane + static_cast<int>(delta);
  const bool ok = src < lane - lane % width + width;
  return dsk_emu::from_bits<T>(dsk_emu::warp_exchange(dsk_emu::to_bits(v), ok ? src : -1));
}
inline unsigned __ballot_sync(unsigned, int predicate) { return dsk_emu::warp_ballot(predicate != 0); }
inline int __any_sync(unsigned, int predicate) { return dsk_emu::warp_ballot(predicate != 0) != 0; }
inline int __all_sync(unsigned, int predicate) { return dsk_emu::warp_ballot(predicate != 0) == 0xffffffffu; }
[[noreturn]] inline void __trap() { dsk_emu::trap("__trap() in a kernel"); }

// ---- math and bit intrinsics ----------------------------------------------------------------------------------
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline float __int_as_float(int x) { return dsk_emu::from_bits<float>(static_cast<uint32_t>(x)); }
inline int __float_as_int(float x) { return static_cast<int>(static_cast<uint32_t>(dsk_emu::to_bits(x))); }
inline float __uint_as_float(unsigned x) { return dsk_emu::from_bits<float>(x); }
inline unsigned __float_as_uint(float x) { return static_cast<uint32_t>(dsk_emu::to_bits(x)); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
template <class T>
T __ldg(const T* p) {
  return *p;
}

// CUDA's global min/max for mixed integer and floating types.
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
