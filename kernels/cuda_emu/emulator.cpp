// The CPU emulator's engine (see emulator.h): the fiber scheduler that runs a kernel's threads, barriers, warp
// exchanges. The runtime API stand-ins are in runtime.cpp, cuBLAS / cuBLASLt in blas.cpp.
#include "kernels/cuda_emu/emulator.h"
#include "kernels/cuda_emu/race_check.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <map>
#include <numeric>
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

// A group of threads that meet at one kind of barrier: the block (__syncthreads) or one warp (shuffles, votes).
struct Barrier {
  int live = 0;     // threads of the group still running
  int arrived = 0;  // threads waiting at the current barrier
  uint64_t generation = 0;
};

// A cp.async issued and not yet waited for: lands at the thread's cp_async_wait_all, or at a cp_async_wait_pending
// that no longer lets its group stay in flight.
constexpr int64_t kUncommitted = INT64_MAX;
struct AsyncCopy {
  unsigned char* dst;
  const unsigned char* src;
  int bytes, src_bytes;
  int64_t group = kUncommitted;  // the thread's commit count when it was committed
};

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
  dim3 index;
  int linear = 0;
  bool done = false;
  const Barrier* waiting = nullptr;  // the barrier it waits at (not resumed until that opens), or null
  uint64_t waiting_generation = 0;
  char* stack = nullptr;
  std::vector<AsyncCopy> async_copies;  // issued, not yet waited for
  int64_t commits = 0;                   // cp_async_commit calls so far
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
  std::vector<std::vector<float>> warp_gather;  // per warp: 32 lanes' operands of an mma_m16n8k8
  std::vector<WarpOnce> warp_once;
  std::vector<int> order;  // the scheduling order of a round
  bool progress = false;
  std::exception_ptr fault;
  unsigned char* dynamic_shared = nullptr;  // this launch's, ending at a guard page (guarded_alloc)
  size_t dynamic_shared_bytes = 0;
  std::vector<void*> static_shared;  // the DSK_SHARED variables this block has declared (and poisoned)
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
  if (!f.async_copies.empty() && !g_block.fault)
    g_block.fault = std::make_exception_ptr(std::runtime_error(
        "CUDA emulator: a thread ended with " + std::to_string(f.async_copies.size()) +
        " cp.async copies it never waited for (copies_wait_all before the barrier that publishes a tile)"));
  f.done = true;
  leave(g_block.block_barrier, false);
  leave(g_block.warp_barriers[static_cast<size_t>(f.linear / 32)], true);
  g_block.progress = true;
  dsk_emu_switch(&f.sp, g_block.scheduler_sp);  // never resumed
  __builtin_unreachable();
}

// Fiber stacks are guarded: a kernel that overflows its thread's stack faults instead of writing into the next.
char* stack_for(size_t i) {
  while (g_stacks.size() <= i) {
    void* p = guarded_alloc(kStackBytes, 16, "fiber stack (a CUDA thread's stack overflowed)");
    if (!p) fail("cannot map a fiber stack");
    g_stacks.push_back(static_cast<char*>(p));
  }
  return g_stacks[i];
}

// Per kernel function: the dynamic shared-memory limit cudaFuncSetAttribute set (48 KB without it).
constexpr size_t kDefaultDynamicSharedBytes = size_t(48) << 10;
std::map<const void*, size_t> g_shared_limits;

void run_block(dim3 bidx) {
  Block& b = g_block;
  const int n = static_cast<int>(b.block_dim.x * b.block_dim.y * b.block_dim.z);
  const int warps = (n + 31) / 32;
  b.block_index = bidx;
  b.fibers.assign(static_cast<size_t>(n), Fiber{});
  b.block_barrier = Barrier{n, 0, 0};
  b.warp_barriers.assign(static_cast<size_t>(warps), Barrier{});
  b.warp_slots.assign(static_cast<size_t>(warps), {});
  b.warp_gather.assign(static_cast<size_t>(warps), std::vector<float>(32 * 6));
  b.warp_once.assign(static_cast<size_t>(warps), WarpOnce{});
  for (int w = 0; w < warps; ++w) b.warp_barriers[static_cast<size_t>(w)].live = std::min(32, n - 32 * w);
  std::memset(b.dynamic_shared, 0xFF, b.dynamic_shared_bytes);
  b.static_shared.clear();
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
  // first, not only when the reader happens to come first. The order is a function of the schedule seed
  // (set_schedule_seed) and of the launches before: a run is reproduced by its seed.
  //
  // Warps drift apart on a GPU: between two block barriers one warp may be many instructions ahead of another. So
  // each round holds every warp back with probability 1/2 (a round that holds back all but none is redrawn), and a
  // warp that keeps getting picked runs several warp-level steps (shuffles, mma) ahead of one that does not. A
  // shared-memory access that is only safe while the warps move in step (one warp overwriting a tile, or issuing a
  // cp.async into it, while another may still read it) then shows.
  std::vector<int>& order = b.order;
  order.resize(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::vector<char> held(static_cast<size_t>(warps));
  bool hold_none = false;  // after a round in which the running warps could not move: everyone runs
  int remaining = n;
  while (remaining > 0) {
    b.progress = false;
    bool any_held = false;
    for (int w = 0; w < warps; ++w) {
      held[static_cast<size_t>(w)] = !hold_none && warps > 1 && (next_random() & 1);
      any_held = any_held || held[static_cast<size_t>(w)];
    }
    if (any_held && std::all_of(held.begin(), held.end(), [](char h) { return h != 0; }))
      held[next_random() % static_cast<uint64_t>(warps)] = 0;
    for (int i = n - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[next_random() % (i + 1)]);
    for (int t : order) {
      Fiber& f = b.fibers[static_cast<size_t>(t)];
      if (f.done || held[static_cast<size_t>(t / 32)]) continue;
      if (f.waiting && f.waiting->generation == f.waiting_generation) continue;  // its barrier is still closed
      b.current = t;
      dsk_emu_switch(&b.scheduler_sp, f.sp);
      if (b.fault) std::rethrow_exception(b.fault);
      if (f.done) --remaining;
    }
    hold_none = any_held && !b.progress;
    if (remaining > 0 && !b.progress && !any_held)
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

void mma_m16n8k8_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
  const int w = me().linear / 32, lane = me().linear % 32;
  Barrier& bar = g_block.warp_barriers[static_cast<size_t>(w)];
  if (bar.live != 32) fail("mma.sync in a warp with exited or missing lanes (undefined on a GPU)");
  // Every lane posts its fragments; after the barrier each computes its own four outputs from the whole A and B.
  float* all = g_block.warp_gather[static_cast<size_t>(w)].data();
  std::copy(a, a + 4, all + 6 * lane);
  std::copy(b, b + 2, all + 6 * lane + 4);
  arrive(bar);
  // PTX's fragments (g = lane / 4, t = lane % 4): A (16x8, row) a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
  // B (8x8, col) b0 (k = t, n = g), b1 (k = t+4, n = g); C/D c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1).
  auto A = [&](int row, int k) {
    const int owner = 4 * (row % 8) + k % 4;
    return all[6 * owner + (row / 8) + 2 * (k / 4)];
  };
  auto B = [&](int k, int n) { return all[6 * (4 * n + k % 4) + 4 + k / 4]; };
  const int g = lane / 4, t = lane % 4;
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    float acc = d[i];
    for (int k = 0; k < 8; ++k) acc += tf32_operand(A(row, k)) * tf32_operand(B(k, col));
    out[i] = acc;
  }
  arrive(bar);  // every lane has read: the buffer may be reused
  std::copy(out, out + 4, d);
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

void cp_async(void* dst, const void* src, int bytes, int src_bytes) {
  auto* d = static_cast<unsigned char*>(dst);
  char msg[320], where[160];
  describe_current_thread(where, sizeof where);
  if (bytes != 4 && bytes != 8 && bytes != 16) fail("cp.async of " + std::to_string(bytes) + " bytes (4, 8 or 16)");
  if (src_bytes < 0 || src_bytes > bytes) fail("cp.async with src-size " + std::to_string(src_bytes));
  if (d < g_block.dynamic_shared || d + bytes > g_block.dynamic_shared + g_block.dynamic_shared_bytes) {
    std::snprintf(msg, sizeof msg, "cp.async destination %p is not in the launch's dynamic shared memory%s", dst,
                  where);
    fail(msg);
  }
  if (src == nullptr || !is_device_pointer(src)) {
    std::snprintf(msg, sizeof msg, "cp.async source %p is not device memory%s", src, where);
    fail(msg);
  }
  if (reinterpret_cast<uintptr_t>(dst) % static_cast<uintptr_t>(bytes) != 0) misaligned(dst, "cp.async", bytes);
  if (reinterpret_cast<uintptr_t>(src) % static_cast<uintptr_t>(bytes) != 0) misaligned(src, "cp.async", bytes);
  std::memset(d, 0xFF, static_cast<size_t>(bytes));  // undefined until the wait
  me().async_copies.push_back({d, static_cast<const unsigned char*>(src), bytes, src_bytes});
}

namespace {
void land(const AsyncCopy& c) {
  std::memcpy(c.dst, c.src, static_cast<size_t>(c.src_bytes));
  std::memset(c.dst + c.src_bytes, 0, static_cast<size_t>(c.bytes - c.src_bytes));
}
}  // namespace

void cp_async_wait_all() {
  for (const AsyncCopy& c : me().async_copies) land(c);
  me().async_copies.clear();
}

void cp_async_commit() {
  Fiber& f = me();
  for (AsyncCopy& c : f.async_copies)
    if (c.group == kUncommitted) c.group = f.commits;
  ++f.commits;
}

void cp_async_wait_pending(int n) {
  if (n < 0 || n > 7) fail("cp.async.wait_group " + std::to_string(n) + " (0 to 7)");
  Fiber& f = me();
  // Groups f.commits - n .. f.commits - 1 may stay in flight; older ones land, in issue order.
  const int64_t first_in_flight = f.commits - n;
  std::vector<AsyncCopy> keep;
  for (const AsyncCopy& c : f.async_copies) {
    if (c.group < first_in_flight)
      land(c);
    else
      keep.push_back(c);
  }
  f.async_copies.swap(keep);
}

void* dynamic_shared() { return g_block.dynamic_shared; }

void set_schedule_seed(uint64_t seed) {
  g_random = (seed ^ 0x9E3779B97F4A7C15ull) | 1;  // xorshift's state must not be 0
  next_random();
}

void shared_here(void* p, size_t bytes) {
  auto& seen = g_block.static_shared;
  if (std::find(seen.begin(), seen.end(), p) != seen.end()) return;
  seen.push_back(p);
  std::memset(p, 0xFF, bytes);
}

bool set_max_dynamic_shared(const void* kernel, size_t bytes) {
  if (bytes > kMaxDynamicSharedBytes) return false;
  g_shared_limits[kernel] = bytes;
  return true;
}

void describe_current_thread(char* out, size_t size) {
  if (!g_in_kernel || g_block.current < 0) {
    if (size) out[0] = '\0';
    return;
  }
  const dim3 b = g_block.block_index, t = g_block.fibers[static_cast<size_t>(g_block.current)].index;
  std::snprintf(out, size, " in block (%u,%u,%u) thread (%u,%u,%u) of a kernel", b.x, b.y, b.z, t.x, t.y, t.z);
}

void trap(const char* why) { fail(why); }

void misaligned(const void* p, const char* type, size_t alignment) {
  char msg[320], where[160];
  describe_current_thread(where, sizeof where);
  std::snprintf(msg, sizeof msg, "misaligned address: a %s access at %p, not a multiple of %zu bytes%s", type, p,
                alignment, where);
  fail(msg);
}

void host_pointer_argument(const char* kernel, int index, const void* p) {
  char msg[512];
  std::snprintf(msg, sizeof msg,
                "kernel %s: argument %d (%p) is a host pointer, not in any cudaMalloc allocation (a GPU faults on it)",
                kernel, index, p);
  fail(msg);
}

void launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const void* kernel, const char* name,
            const std::function<void()>& body) {
  if (g_in_kernel) fail("a kernel launched from inside a kernel");
  DeviceWork device_work;  // the kernel (and the race check's snapshots) may touch device memory; installs the
                           // fault handler
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads) fail("block of " + std::to_string(threads) + " threads");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) fail("bad grid");
  auto limit = g_shared_limits.find(kernel);
  const size_t shared_limit = limit == g_shared_limits.end() ? kDefaultDynamicSharedBytes : limit->second;
  if (dynamic_shared_bytes > shared_limit)
    fail("a launch with " + std::to_string(dynamic_shared_bytes) + " bytes of dynamic shared memory, above the " +
         std::to_string(shared_limit) + " this kernel may use (above 48 KB needs cudaFuncSetAttribute(kernel, " +
         "cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) first; the GPU refuses the launch)");

  // The blocks in a fresh pseudo-random order: on a GPU they run concurrently in no fixed order, so a block that
  // relies on another block's results (or on running after it) is a race, and shows here as a wrong result.
  std::vector<dim3> blocks;
  blocks.reserve(size_t(grid.x) * grid.y * grid.z);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.emplace_back(x, y, z);
  for (size_t i = blocks.size() - 1; i > 0; --i) std::swap(blocks[i], blocks[next_random() % (i + 1)]);

  g_block.block_dim = block;
  g_block.grid_dim = grid;
  g_block.body = &body;
  // Dynamic shared memory ends at a guard page: reading past what the launch asked for faults (32-byte granules:
  // the base has the alignment a kernel may declare for it, 32 bytes for wmma's fragment pointers, 16 for float4).
  // A launch without any gets a pointer to the guard itself.
  g_block.dynamic_shared_bytes = dynamic_shared_bytes;
  g_block.dynamic_shared =
      static_cast<unsigned char*>(guarded_alloc(dynamic_shared_bytes, 32, "dynamic shared memory"));
  if (!g_block.dynamic_shared) fail("cannot map dynamic shared memory");
  g_in_kernel = true;
  auto finish = [&] {
    g_in_kernel = false;
    guarded_free(g_block.dynamic_shared);
    g_block.dynamic_shared = nullptr;
  };
  auto run_grid = [&] {
    for (const dim3& b : blocks) run_block(b);
  };
  try {
    if (race_check_this_launch(kernel, grid, block, dynamic_shared_bytes)) {
      // Twice from the same device memory: the second run with the blocks reversed (another block is last to
      // write and first to read) and fresh thread orders. Any difference is a schedule-dependent result.
      static DeviceSnapshot before, first;
      before.take();
      run_grid();
      first.take();
      before.restore();
      std::reverse(blocks.begin(), blocks.end());
      run_grid();
      const std::string difference = first.first_difference();
      if (!difference.empty())
        fail(std::string("race: kernel ") + name + " leaves different results in two runs with other block and " +
             "thread orders (blocks writing one element, a block reading another's output, a missing " +
             "__syncthreads, or a variable read before it was written): " + difference);
    } else {
      run_grid();
    }
  } catch (...) {
    finish();
    throw;
  }
  finish();
}

}  // namespace dsk_emu
