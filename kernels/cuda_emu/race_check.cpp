// The emulator's race check (see emulator.h): the first launches of each kernel shape run twice from the same
// device memory in different block and thread orders; launch() compares the two results with these snapshots.
#include "kernels/cuda_emu/race_check.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <tuple>

namespace dsk_emu {

namespace {

int launches_from_environment() {
  const char* v = std::getenv("DSK_EMU_RACE_CHECK");
  if (!v || !*v) return 1;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 0)
    throw std::runtime_error(std::string("CUDA emulator: DSK_EMU_RACE_CHECK must be a count of launches (0 turns "
                                         "the race check off), not '") + v + "'");
  return static_cast<int>(n);
}

int g_launches = -1;  // -1: not read from the environment yet

using Shape = std::tuple<const void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, size_t>;
std::map<Shape, int> g_checked;

}  // namespace

int set_race_check_launches(int launches) {
  const int previous = g_launches < 0 ? launches_from_environment() : g_launches;
  g_launches = launches;
  g_checked.clear();
  return previous;
}

bool race_check_this_launch(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes) {
  if (g_launches < 0) g_launches = launches_from_environment();
  if (g_launches == 0) return false;
  int& n = g_checked[Shape{kernel, grid.x, grid.y, grid.z, block.x, block.y, block.z, dynamic_shared_bytes}];
  if (n >= g_launches) return false;
  ++n;
  return true;
}

void DeviceSnapshot::take() {
  spans_ = device_allocations();
  size_t total = 0;
  for (const Span& sp : spans_) total += sp.bytes;
  bytes_.resize(total);
  size_t at = 0;
  for (const Span& sp : spans_) {
    std::memcpy(bytes_.data() + at, sp.data, sp.bytes);
    at += sp.bytes;
  }
}

void DeviceSnapshot::restore() const {
  size_t at = 0;
  for (const Span& sp : spans_) {
    std::memcpy(sp.data, bytes_.data() + at, sp.bytes);
    at += sp.bytes;
  }
}

std::string DeviceSnapshot::first_difference() const {
  size_t at = 0;
  for (size_t a = 0; a < spans_.size(); ++a) {
    const Span& sp = spans_[a];
    const unsigned char* was = bytes_.data() + at;
    at += sp.bytes;
    if (std::memcmp(was, sp.data, sp.bytes) == 0) continue;
    size_t i = 0;
    while (was[i] == sp.data[i]) ++i;
    // The aligned 4-byte word around it, also read as a float (most of dsk's buffers are float).
    const size_t word = i / 4 * 4;
    uint32_t wa = 0, wb = 0;
    std::memcpy(&wa, was + word, 4);
    std::memcpy(&wb, sp.data + word, 4);
    float fa, fb;
    std::memcpy(&fa, &wa, 4);
    std::memcpy(&fb, &wb, 4);
    char msg[320];
    std::snprintf(msg, sizeof msg,
                  "byte %zu of a %zu-byte device allocation at %p (the %zu-th live one by address): word 0x%08x (%g "
                  "as float) in one run, 0x%08x (%g) in the other",
                  i, sp.bytes, static_cast<void*>(sp.data), a + 1, wa, static_cast<double>(fa), wb,
                  static_cast<double>(fb));
    return msg;
  }
  return "";
}

}  // namespace dsk_emu
