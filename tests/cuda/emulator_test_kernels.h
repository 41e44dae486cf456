#pragma once
// Launchers of the emulator tests' kernels (tests/cuda/emulator_test_kernels.cpp); emulator builds only. Pointers
// are device memory.
namespace dsk::testing::emu {

// out[t] = in[(t + 1) % 64] for t < 64, through shared memory, with or without the __syncthreads it needs.
void rotate(const float* in, float* out, bool barrier);
// Each of `blocks` blocks writes its index into out[0] (a race between blocks).
void write_one_element(float* out, int blocks);
// Two blocks: block 0 sets buf[0] = 1, block 1 sets buf[1] = buf[0] + 1 (reads another block's output).
void read_another_block(float* buf);
// out[t] = in[(t + 1) % 64] for t < 64, zero where that index is >= n, through a shared tile filled with cp.async
// (async_copy.cuh); `wait` false reads the tile before waiting for the copies.
void rotate_async(const float* in, float* out, int n, bool wait);
// One misuse of cp.async (a thread of a 32-thread block): how 0 never waits, 1 copies 16 bytes from a misaligned
// source, 2 copies into device memory (in, out: at least 8 floats).
void misuse_async(const float* in, float* out, int how);
// cp.async commit / wait_group on one 32-thread block (in: 96 floats, out: 192; see the kernel for the layout).
void async_groups(const float* in, float* out);
// A 2-warp block in which warp 0 overwrites a shared cell (1 -> 2) one warp-level step after warp 1 read it into
// out[0]; `barrier` puts a __syncthreads between the read and the write.
void out_of_step(float* out, bool barrier);
// x[i] += 1 for i < n (race-free, in place).
void add_one(float* x, int n);

// Sets how many launches per kernel shape the emulator runs twice (0: none) and starts counting afresh; restores
// the previous setting on scope exit.
class ScopedRaceCheck {
 public:
  explicit ScopedRaceCheck(int launches);
  ~ScopedRaceCheck();
  ScopedRaceCheck(const ScopedRaceCheck&) = delete;
  ScopedRaceCheck& operator=(const ScopedRaceCheck&) = delete;

 private:
  int previous_;
};

}  // namespace dsk::testing::emu
