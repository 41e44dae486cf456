// Guarded memory for the CUDA emulator: device allocations (cudaMalloc), dynamic shared memory and fiber stacks
// sit between two inaccessible (PROT_NONE) pages, their usable bytes ending exactly at the upper one. A kernel that
// reads or writes past the end of a buffer (or far enough before its start) faults at once, and the SIGSEGV
// handler names the buffer and the CUDA thread, where on an unguarded heap it would read or overwrite a
// neighbour's bytes, unnoticed unless a result happened to change. On a GPU the same access is an "illegal
// address" that poisons the context (every later [cuda] test of the process fails), or, inside cudaMalloc's
// granularity, a silent wrong read that only compute-sanitizer reports.
#include "kernels/cuda_emu/emulator.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

namespace dsk_emu {

namespace {

struct Region {
  char* base = nullptr;   // the lower guard page
  size_t mapped = 0;      // guard + data pages + guard
  char* user = nullptr;   // what the caller got
  size_t bytes = 0;       // what it asked for
  size_t usable = 0;      // bytes up to the upper guard (bytes rounded up to the alignment)
  const char* kind = "";  // "device allocation", "dynamic shared memory", "fiber stack"
  bool open = false;      // a device allocation made accessible by the current device work (on_fault)
};

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

std::mutex g_mutex;
// Depth of DeviceWork scopes (any thread). Device allocations' data pages are PROT_NONE; while the depth is above 0,
// the first access to one (from any thread: OpenBLAS's workers compute the cuBLAS stand-ins) faults, and the handler
// opens that allocation and lets the access retry; the end of the outermost scope closes what was opened. Opening
// lazily keeps the cost to the allocations a launch touches: mprotect's cost grows with the pages it changes, and
// closing everything after every launch (the 32 MB cuBLAS workspaces included) made the suite several times slower.
std::atomic<int> g_device_work{0};
// Keyed by the lower guard's address; read by the signal handler without the lock (it only runs on a fault,
// when the faulting kernel is not allocating).
std::map<char*, Region>& regions() {
  static auto* m = new std::map<char*, Region>();
  return *m;
}

void say(const char* text) {
  ssize_t ignored = write(STDERR_FILENO, text, __builtin_strlen(text));
  (void)ignored;
}

// Finds the region whose guard pages contain addr; null if none.
const Region* guard_hit(const char* addr) {
  auto& m = regions();
  auto it = m.upper_bound(const_cast<char*>(addr));
  if (it == m.begin()) return nullptr;
  const Region& r = std::prev(it)->second;
  const bool in_lower = addr >= r.base && addr < r.base + page_size();
  const bool in_upper = addr >= r.user + r.usable && addr < r.base + r.mapped;
  return in_lower || in_upper ? &r : nullptr;
}

// The region whose data pages (between the guards) hold addr, if it is a device allocation; null otherwise.
Region* device_hit(const char* addr) {
  auto& m = regions();
  auto it = m.upper_bound(const_cast<char*>(addr));
  if (it == m.begin()) return nullptr;
  Region& r = std::prev(it)->second;
  const bool in_data = addr >= r.base + page_size() && addr < r.base + r.mapped - page_size();
  return in_data && r.kind == kDeviceAllocation ? &r : nullptr;
}

// Makes a device allocation's data pages accessible or not (under g_mutex).
// Returns whether mprotect succeeded.
bool set_access(const Region& r, bool accessible) {
  const size_t page = page_size();
  return r.mapped <= 2 * page ||
         mprotect(r.base + page, r.mapped - 2 * page, accessible ? PROT_READ | PROT_WRITE : PROT_NONE) == 0;
}

struct sigaction g_previous[2];  // the SIGSEGV and SIGBUS handlers ours replaced (a test framework's)

void on_fault(int sig, siginfo_t* info, void* context) {
  // Device work's first access to a device allocation: open it (mprotect is async-signal-safe) and retry. Even if
  // it is marked open: another thread (two OpenBLAS workers) may have faulted on it at the same time.
  if (sig == SIGSEGV && g_device_work.load() > 0) {
    Region* d = device_hit(static_cast<const char*>(info->si_addr));
    if (d != nullptr && set_access(*d, true)) {
      d->open = true;
      return;
    }
  }
  static volatile sig_atomic_t entered = 0;
  if (!entered) {
    entered = 1;
    const char* addr = static_cast<const char*>(info->si_addr);
    if (const Region* r = guard_hit(addr)) {
      char msg[512], where[160];
      describe_current_thread(where, sizeof where);
      const long long offset = static_cast<long long>(addr - r->user);
      if (offset >= 0)
        std::snprintf(msg, sizeof msg,
                      "CUDA emulator: out-of-bounds access %lld bytes past the end of a %zu-byte %s%s\n",
                      offset - static_cast<long long>(r->bytes), r->bytes, r->kind, where);
      else
        std::snprintf(msg, sizeof msg, "CUDA emulator: out-of-bounds access %lld bytes before a %zu-byte %s%s\n",
                      -offset, r->bytes, r->kind, where);
      say(msg);
    } else if (const Region* d = device_hit(addr)) {
      char msg[512];
      std::snprintf(msg, sizeof msg,
                    "CUDA emulator: host code touched device memory (byte %lld of a %zu-byte cudaMalloc allocation) "
                    "outside a kernel, copy or library call: on a GPU that is a crash; copy it with cudaMemcpy\n",
                    static_cast<long long>(addr - d->user), d->bytes);
      say(msg);
    }
    // Then whatever handled the signal before (Catch2 names the failing test), then die of the signal.
    const struct sigaction& prev = g_previous[sig == SIGSEGV ? 0 : 1];
    if (prev.sa_flags & SA_SIGINFO) {
      if (prev.sa_sigaction) prev.sa_sigaction(sig, info, context);
    } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
      prev.sa_handler(sig);
    }
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

void ensure_fault_handler() {
  // The handler runs on its own stack: a fiber's may be the one that overflowed. (Per thread; the emulator runs
  // kernels on the thread that launches them.)
  static thread_local bool alt_stack = false;
  if (!alt_stack) {
    static thread_local char alt[64 << 10];
    stack_t ss{};
    ss.ss_sp = alt;
    ss.ss_size = sizeof alt;
    sigaltstack(&ss, nullptr);
    alt_stack = true;
  }
  // A test framework may install its own handler per test case: put ours back on top, keeping theirs to chain to.
  const int signals[2] = {SIGSEGV, SIGBUS};
  for (int i = 0; i < 2; ++i) {
    struct sigaction current {};
    sigaction(signals[i], nullptr, &current);
    if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_fault) continue;
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(signals[i], &sa, &g_previous[i]);
  }
}

void* guarded_alloc(size_t bytes, size_t alignment, const char* kind) {
  ensure_fault_handler();
  const size_t page = page_size();
  const size_t usable = (bytes + alignment - 1) / alignment * alignment;
  const size_t data_pages = (usable + page - 1) / page * page;
  const size_t mapped = data_pages + 2 * page;
  void* p = mmap(nullptr, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  char* base = static_cast<char*>(p);
  if (data_pages && mprotect(base + page, data_pages, PROT_READ | PROT_WRITE) != 0) {
    munmap(p, mapped);
    return nullptr;
  }
  Region r{base, mapped, base + page + data_pages - usable, bytes, usable, kind};
  std::lock_guard<std::mutex> lock(g_mutex);
  regions()[base] = r;
  if (kind == kDeviceAllocation) set_access(regions()[base], false);  // opened by the first access (on_fault)
  return r.user;
}

void begin_device_work() {
  ensure_fault_handler();  // it opens what the work touches
  ++g_device_work;
}

void end_device_work() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (--g_device_work == 0)
    for (auto& [base, r] : regions())
      if (r.open) {
        set_access(r, false);
        r.open = false;
      }
}

bool is_device_pointer(const void* p) {
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& m = regions();
  auto it = m.upper_bound(const_cast<char*>(c));
  if (it == m.begin()) return false;
  const Region& r = std::prev(it)->second;
  return r.kind == kDeviceAllocation && c >= r.user && c <= r.user + r.usable;
}

void require_device_pointer(const void* p, const char* what) {
  if (p != nullptr && !is_device_pointer(p))
    throw std::runtime_error(std::string("CUDA emulator: ") + what +
                             " is a host pointer, not in any cudaMalloc allocation (a GPU faults on it)");
}

const char kDeviceAllocation[] = "device allocation";

std::vector<Span> device_allocations() {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<Span> out;
  for (const auto& [base, r] : regions())
    if (r.kind == kDeviceAllocation) out.push_back({reinterpret_cast<unsigned char*>(r.user), r.usable});
  return out;
}

bool guarded_free(void* user) {
  if (!user) return true;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& m = regions();
  // The region is the last one starting below the pointer; it must be that region's start.
  auto it = m.upper_bound(static_cast<char*>(user));
  if (it == m.begin() || std::prev(it)->second.user != user) return false;
  --it;
  munmap(it->second.base, it->second.mapped);
  m.erase(it);
  return true;
}

}  // namespace dsk_emu
