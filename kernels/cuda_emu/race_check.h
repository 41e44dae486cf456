#pragma once
// The emulator's race check (see emulator.h): which launches run twice, and the device-memory snapshots that
// compare the two runs. Internal to kernels/cuda_emu/.
#include "kernels/cuda_emu/emulator.h"

#include <string>
#include <vector>

namespace dsk_emu {

// True for the first race_check_launches() launches of each (kernel, grid, block, shared bytes); counts this one.
bool race_check_this_launch(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes);

// A copy of every device allocation's usable bytes. Kept and refilled launch after launch: its buffer's pages stay
// mapped (a fresh copy of a large arena per launch costs more in page faults than in copying).
class DeviceSnapshot {
 public:
  void take();
  // Puts the copied bytes back (the allocations must be the ones taken).
  void restore() const;
  // "" when device memory now equals the snapshot, else where the first difference is and both values.
  std::string first_difference() const;

 private:
  std::vector<Span> spans_;
  std::vector<unsigned char> bytes_;
};

}  // namespace dsk_emu
