// The CPU emulator's engine (see emulator.h): the fiber scheduler that runs a kernel's threads, the runtime API
// stand-ins (memory, copies, streams, events, device properties) and the cuBLAS / cuBLASLt GEMMs on OpenBLAS.
#include "kernels/cuda_emu/emulator.h"

#include <cblas.h>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <numeric>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

// Fiber switch: saves the callee-saved registers and the stack pointer of the running context in *save_sp and
// resumes the context whose stack pointer is load_sp (x86-64 System V). A tenth of ucontext's cost: no signal
// mask system call per switch, and a kernel's barriers switch fibers millions of times.
extern "C" void dsk_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl dsk_emu_switch
  .type dsk_emu_switch,@function
dsk_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size dsk_emu_switch,.-dsk_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

namespace dsk_emu {

namespace {

constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = size_t(256) << 10;
constexpr size_t kMaxDynamicShared = size_t(227) << 10;  // an H100/H200's opt-in limit per block

// A group of threads that meet at one kind of barrier: the block (__syncthreads) or one warp (shuffles, votes).
struct Barrier {
  int live = 0;     // threads of the group still running
  int arrived = 0;  // threads waiting at the current barrier
  uint64_t generation = 0;
};

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
  dim3 index;
  int linear = 0;
  bool done = false;
  const Barrier* waiting = nullptr;  // the barrier it waits at (not resumed until that opens), or null
  uint64_t waiting_generation = 0;
  char* stack = nullptr;
};

// warp_once's results, per warp: call number base + i is results[i]; freed once all 32 lanes took it.
struct WarpOnce {
  std::deque<std::vector<float>> results;
  std::deque<int> taken;
  uint64_t base = 0;
  std::array<uint64_t, 32> next{};
};

// The block being run.
struct Block {
  dim3 block_index, block_dim, grid_dim;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  int current = -1;
  void* scheduler_sp = nullptr;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<std::array<uint64_t, 32>> warp_slots;
  std::vector<WarpOnce> warp_once;
  std::vector<int> order;  // the scheduling order of a round
  bool progress = false;
  std::exception_ptr fault;
  std::vector<unsigned char> dynamic_shared;
};

Block g_block;
bool g_in_kernel = false;
uint64_t g_random = 0x9E3779B97F4A7C15ull;  // xorshift64 state for the scheduling order

uint64_t next_random() {
  g_random ^= g_random << 13;
  g_random ^= g_random >> 7;
  g_random ^= g_random << 17;
  return g_random;
}
std::vector<char*> g_stacks;

Fiber& me() { return g_block.fibers[static_cast<size_t>(g_block.current)]; }

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error("CUDA emulator: " + what); }

void yield() { dsk_emu_switch(&me().sp, g_block.scheduler_sp); }

// Waits at `b` until every live thread of its group has arrived.
void arrive(Barrier& b) {
  g_block.progress = true;
  const uint64_t gen = b.generation;
  if (++b.arrived == b.live) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  Fiber& f = me();
  f.waiting = &b;
  f.waiting_generation = gen;
  while (b.generation == gen) yield();
  f.waiting = nullptr;
}

// A thread left: it no longer counts for its barriers (the hardware treats exited threads as arrived at
// __syncthreads). A lane leaving while the rest of its warp waits in a shuffle or vote is a fault.
void leave(Barrier& b, bool warp) {
  if (warp && b.arrived > 0 && !g_block.fault)
    g_block.fault = std::make_exception_ptr(std::runtime_error(
        "CUDA emulator: a lane exited while its warp waits in a shuffle, vote or __syncwarp (undefined on a GPU)"));
  --b.live;
  if (b.arrived > 0 && b.arrived == b.live) {
    b.arrived = 0;
    ++b.generation;
  }
}

void fiber_main() {
  try {
    (*g_block.body)();
  } catch (...) {
    if (!g_block.fault) g_block.fault = std::current_exception();
  }
  Fiber& f = me();
  f.done = true;
  leave(g_block.block_barrier, false);
  leave(g_block.warp_barriers[static_cast<size_t>(f.linear / 32)], true);
  g_block.progress = true;
  dsk_emu_switch(&f.sp, g_block.scheduler_sp);  // never resumed
  __builtin_unreachable();
}

char* stack_for(size_t i) {
  while (g_stacks.size() <= i) {
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) fail("cannot map a fiber stack");
    g_stacks.push_back(static_cast<char*>(p));
  }
  return g_stacks[i];
}

void run_block(dim3 bidx) {
  Block& b = g_block;
  const int n = static_cast<int>(b.block_dim.x * b.block_dim.y * b.block_dim.z);
  const int warps = (n + 31) / 32;
  b.block_index = bidx;
  b.fibers.assign(static_cast<size_t>(n), Fiber{});
  b.block_barrier = Barrier{n, 0, 0};
  b.warp_barriers.assign(static_cast<size_t>(warps), Barrier{});
  b.warp_slots.assign(static_cast<size_t>(warps), {});
  b.warp_once.assign(static_cast<size_t>(warps), WarpOnce{});
  for (int w = 0; w < warps; ++w) b.warp_barriers[static_cast<size_t>(w)].live = std::min(32, n - 32 * w);
  std::fill(b.dynamic_shared.begin(), b.dynamic_shared.end(), 0xFF);
  b.fault = nullptr;
  for (int t = 0; t < n; ++t) {
    Fiber& f = b.fibers[static_cast<size_t>(t)];
    f.linear = t;
    f.index = dim3(static_cast<unsigned>(t) % b.block_dim.x, (static_cast<unsigned>(t) / b.block_dim.x) % b.block_dim.y,
                   static_cast<unsigned>(t) / (b.block_dim.x * b.block_dim.y));
    f.stack = stack_for(static_cast<size_t>(t));
    // A fresh stack as dsk_emu_switch leaves one: six saved registers, then the address to "return" to
    // (fiber_main), placed so that fiber_main starts with the ABI's alignment (rsp = 8 mod 16).
    void** top = reinterpret_cast<void**>(f.stack + kStackBytes);
    void** sp = top - 2 - 6;
    for (int r = 0; r < 6; ++r) sp[r] = nullptr;
    sp[6] = reinterpret_cast<void*>(&fiber_main);
    sp[7] = nullptr;  // fiber_main's own "return address": it never returns
    f.sp = sp;
  }
  // Each round resumes the threads in a fresh pseudo-random order, so a missing barrier (one thread reading shared
  // memory another has not written yet) shows as a wrong or run-to-run different result whichever thread is
  // first, not only when the reader happens to come first. The order is a function of the launch count: runs of
  // a process are reproducible.
  std::vector<int>& order = b.order;
  order.resize(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  int remaining = n;
  while (remaining > 0) {
    b.progress = false;
    for (int i = n - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[next_random() % (i + 1)]);
    for (int t : order) {
      Fiber& f = b.fibers[static_cast<size_t>(t)];
      if (f.done) continue;
      if (f.waiting && f.waiting->generation == f.waiting_generation) continue;  // its barrier is still closed
      b.current = t;
      dsk_emu_switch(&b.scheduler_sp, f.sp);
      if (b.fault) std::rethrow_exception(b.fault);
      if (f.done) --remaining;
    }
    if (remaining > 0 && !b.progress)
      fail("deadlock: the block's threads wait at barriers that cannot open (a __syncthreads not reached by all "
           "threads, or threads of one warp at different collectives)");
  }
  b.current = -1;
}

}  // namespace

const dim3& thread_idx() { return me().index; }
const dim3& block_idx() { return g_block.block_index; }
const dim3& block_dim() { return g_block.block_dim; }
const dim3& grid_dim() { return g_block.grid_dim; }
int lane_id() { return me().linear % 32; }

void syncthreads() { arrive(g_block.block_barrier); }

void syncwarp() { arrive(g_block.warp_barriers[static_cast<size_t>(me().linear / 32)]); }

uint64_t warp_exchange(uint64_t value, int src_lane) {
  const int w = me().linear / 32, lane = me().linear % 32;
  Barrier& b = g_block.warp_barriers[static_cast<size_t>(w)];
  if (b.live != 32) fail("warp shuffle in a warp with exited or missing lanes (undefined on a GPU)");
  auto& slots = g_block.warp_slots[static_cast<size_t>(w)];
  slots[static_cast<size_t>(lane)] = value;
  arrive(b);  // every lane has written
  const uint64_t out = (src_lane >= 0 && src_lane < 32) ? slots[static_cast<size_t>(src_lane)] : value;
  arrive(b);  // every lane has read: the slots may be reused
  return out;
}

unsigned warp_ballot(bool predicate) {
  unsigned bits = 0;
  for (int src = 0; src < 32; ++src) {
    // One exchange per lane keeps this simple; votes are rare in dsk's kernels.
    if (warp_exchange(predicate ? 1 : 0, src)) bits |= 1u << src;
  }
  return bits;
}

const float* warp_once(size_t floats, const std::function<void(float*)>& compute) {
  WarpOnce& w = g_block.warp_once[static_cast<size_t>(me().linear / 32)];
  const uint64_t call = w.next[static_cast<size_t>(lane_id())]++;
  if (call < w.base) fail("warp_once: a lane is behind a result already freed");
  while (call >= w.base + w.results.size()) {
    w.results.emplace_back(floats);
    w.taken.push_back(0);
    compute(w.results.back().data());
  }
  const size_t i = static_cast<size_t>(call - w.base);
  const float* out = w.results[i].data();
  ++w.taken[i];
  // Free from the front what every lane has taken. The caller copies `out` at once, before any other call.
  static thread_local std::vector<float> keep;
  if (i == 0 && w.taken.front() == 32) {
    keep.swap(w.results.front());
    w.results.pop_front();
    w.taken.pop_front();
    ++w.base;
    return keep.data();
  }
  return out;
}

void* dynamic_shared() { return g_block.dynamic_shared.data(); }

void trap(const char* why) { fail(why); }

void launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const std::function<void()>& body) {
  if (g_in_kernel) fail("a kernel launched from inside a kernel");
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads) fail("block of " + std::to_string(threads) + " threads");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) fail("bad grid");
  if (dynamic_shared_bytes > kMaxDynamicShared)
    fail(std::to_string(dynamic_shared_bytes) + " bytes of dynamic shared memory");
  g_block.block_dim = block;
  g_block.grid_dim = grid;
  g_block.body = &body;
  g_block.dynamic_shared.assign(dynamic_shared_bytes + 16, 0xFF);
  g_in_kernel = true;
  try {
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) run_block(dim3(x, y, z));
  } catch (...) {
    g_in_kernel = false;
    throw;
  }
  g_in_kernel = false;
}

}  // namespace dsk_emu

// ---- runtime API -------------------------------------------------------------------------------------------------

namespace {
constexpr size_t kOptinShared = size_t(227) << 10;  // as dsk_emu's launch limit
}  // namespace

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = 4; break;  // few "SMs": split-K paths get exercised
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 << 10; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(kOptinShared); break;
    case cudaDevAttrL2CacheSize: *value = 1 << 20; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev) {
  if (dev != 0) return cudaErrorInvalidValue;
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "dsk CUDA emulator (CPU)");
  p->totalGlobalMem = size_t(16) << 30;
  p->sharedMemPerBlock = 48 << 10;
  p->multiProcessorCount = 4;
  p->major = 9;
  p->minor = 0;
  p->l2CacheSize = 1 << 20;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = *total_bytes = size_t(16) << 30;
  return cudaSuccess;
}
cudaError_t emu_func_set_max_dynamic_shared(int bytes) {
  return bytes >= 0 && static_cast<size_t>(bytes) <= kOptinShared ? cudaSuccess : cudaErrorInvalidValue;
}

// "Device" memory is host memory, 256-byte aligned like cudaMalloc's, filled with 0xFF (NaN floats): a kernel
// that reads what nobody wrote sees NaN.
cudaError_t cudaMalloc(void** p, size_t bytes) {
  const size_t rounded = (bytes + 255) / 256 * 256;
  *p = rounded ? std::aligned_alloc(256, rounded) : nullptr;
  if (rounded && !*p) return cudaErrorMemoryAllocation;
  if (*p) std::memset(*p, 0xFF, rounded);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) { return cudaMemset(p, value, bytes); }

struct CUstream_st {};
struct CUevent_st {
  std::chrono::steady_clock::time_point t;
};
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    default: return "unknown error";
  }
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->t - start->t).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}

// ---- cuBLAS -------------------------------------------------------------------------------------------------------

struct cublasContext {};
cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_NOT_INITIALIZED";
  }
}

namespace {
// A column-major (rows x cols, ld) matrix's elements rounded to TF32.
std::vector<float> tf32_copy(const float* p, int rows, int cols, int ld) {
  std::vector<float> out(static_cast<size_t>(ld) * cols);
  for (int c = 0; c < cols; ++c)
    for (int r = 0; r < rows; ++r) {
      float f = p[static_cast<size_t>(c) * ld + r];
      uint32_t b;
      std::memcpy(&b, &f, 4);
      if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x1000u) & 0xffffe000u;
      std::memcpy(&f, &b, 4);
      out[static_cast<size_t>(c) * ld + r] = f;
    }
  return out;
}
}  // namespace

void emu_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
               float beta, float* C, int ldc, bool tf32) {
  if (m <= 0 || n <= 0) return;
  if (k == 0) {  // cuBLAS: C = beta C
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        float& c = C[static_cast<size_t>(j) * ldc + i];
        c = beta == 0.0f ? 0.0f : beta * c;
      }
    return;
  }
  std::vector<float> a32, b32;
  if (tf32) {
    a32 = tf32_copy(A, ta ? k : m, ta ? m : k, lda);
    b32 = tf32_copy(B, tb ? n : k, tb ? k : n, ldb);
    A = a32.data();
    B = b32.data();
  }
  if (beta == 0.0f)  // cuBLAS never reads C then (it may hold NaN)
    for (int j = 0; j < n; ++j) std::memset(C + static_cast<size_t>(j) * ldc, 0, sizeof(float) * static_cast<size_t>(m));
  cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, A, lda, B,
              ldb, beta, C, ldc);
}

namespace {
// bf16 GEMMs (only the peak measurement uses them): widened to fp32, computed, rounded back to nearest even.
float bf16_to_float(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint16_t float_to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fffu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}
std::vector<float> widen(const void* p, size_t count) {
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) out[i] = bf16_to_float(static_cast<const uint16_t*>(p)[i]);
  return out;
}
cublasStatus_t bf16_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void* alpha,
                         const void* A, int lda, long long stride_a, const void* B, int ldb, long long stride_b,
                         const void* beta, void* C, int ldc, long long stride_c, int batch) {
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const size_t na = static_cast<size_t>(lda) * (ta == CUBLAS_OP_T ? m : k);
  const size_t nb = static_cast<size_t>(ldb) * (tb == CUBLAS_OP_T ? k : n);
  const size_t nc = static_cast<size_t>(ldc) * n;
  for (int i = 0; i < batch; ++i) {
    auto a = widen(static_cast<const uint16_t*>(A) + i * stride_a, na);
    auto b = widen(static_cast<const uint16_t*>(B) + i * stride_b, nb);
    uint16_t* c16 = static_cast<uint16_t*>(C) + i * stride_c;
    auto c = widen(c16, nc);
    emu_sgemm(ta == CUBLAS_OP_T, tb == CUBLAS_OP_T, m, n, k, al, a.data(), lda, b.data(), ldb, be, c.data(), ldc,
              false);
    for (size_t j = 0; j < nc; ++j) c16[j] = float_to_bf16(c[j]);
  }
  return CUBLAS_STATUS_SUCCESS;
}
}  // namespace

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType_t at, int lda, const void* B,
                            cudaDataType_t bt, int ldb, const void* beta, void* C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
  return cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C, ct, ldc, 0, 1,
                                    compute, algo);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void* alpha, const void* A, cudaDataType_t at, int lda,
                                          long long stride_a, const void* B, cudaDataType_t bt, int ldb,
                                          long long stride_b, const void* beta, void* C, cudaDataType_t ct, int ldc,
                                          long long stride_c, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t) {
  if (at == CUDA_R_16BF && bt == CUDA_R_16BF && ct == CUDA_R_16BF)
    return bf16_gemm(ta, tb, m, n, k, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c, batch);
  if (at != CUDA_R_32F || bt != CUDA_R_32F || ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, ta ? k : m) || ldb < std::max(1, tb ? n : k) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  for (int i = 0; i < batch; ++i)
    emu_sgemm(ta == CUBLAS_OP_T, tb == CUBLAS_OP_T, m, n, k, al, static_cast<const float*>(A) + i * stride_a, lda,
              static_cast<const float*>(B) + i * stride_b, ldb, be, static_cast<float*>(C) + i * stride_c, ldc,
              compute == CUBLAS_COMPUTE_32F_FAST_TF32);
  return CUBLAS_STATUS_SUCCESS;
}

// ---- cuBLASLt: one matmul, optional bias epilogue ------------------------------------------------------------------

struct cublasLtContext {};
struct EmuLtDesc {
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const float* bias = nullptr;
};
struct EmuLtLayout {
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
};
struct EmuLtPref {};

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  *h = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t) {
  *d = new EmuLtDesc;
  (*d)->compute = compute;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: std::memcpy(&d->ta, buf, std::min(bytes, sizeof d->ta)); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: std::memcpy(&d->tb, buf, std::min(bytes, sizeof d->tb)); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: std::memcpy(&d->epilogue, buf, std::min(bytes, sizeof d->epilogue)); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: std::memcpy(&d->bias, buf, std::min(bytes, sizeof d->bias)); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
  }
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *l = new EmuLtLayout{rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new EmuLtPref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void*, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* found) {
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t) {
  // D (m, n) = alpha op(A) op(B) + beta C (+ bias over rows m); layouts are stored (rows, cols) as given.
  const int m = static_cast<int>(dl->rows), n = static_cast<int>(dl->cols);
  const int k = static_cast<int>(d->ta == CUBLAS_OP_T ? a->rows : a->cols);
  if (C != D || c->ld != dl->ld) return CUBLAS_STATUS_NOT_SUPPORTED;  // dsk always passes C == D
  float* out = static_cast<float*>(D);
  emu_sgemm(d->ta == CUBLAS_OP_T, d->tb == CUBLAS_OP_T, m, n, k, *static_cast<const float*>(alpha),
            static_cast<const float*>(A), static_cast<int>(a->ld), static_cast<const float*>(B),
            static_cast<int>(b->ld), *static_cast<const float*>(beta), out, static_cast<int>(dl->ld),
            d->compute == CUBLAS_COMPUTE_32F_FAST_TF32);
  if (d->epilogue == CUBLASLT_EPILOGUE_BIAS)
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) out[static_cast<size_t>(j) * dl->ld + i] += d->bias[i];
  return CUBLAS_STATUS_SUCCESS;
}
