// Kernels for the emulator's own tests (tests/cuda/test_cuda_emulator.cpp): small launches with a known race, and
// correct twins of them, written exactly as dsk's kernels are (DSK_LAUNCH, DSK_SHARED). Built only into the
// emulator's test binary: on a GPU these races would be undefined behaviour, not a test.
#ifdef DSK_CUDA_EMULATOR
#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/runtime.cuh"
#include "tests/cuda/emulator_test_kernels.h"

namespace dsk::testing::emu {

namespace {

constexpr int kThreads = 64;

// out[t] = in[(t + 1) % 64] through shared memory; without the barrier a thread may read its neighbour's slot
// before the neighbour wrote it.
__global__ void rotate_through_shared(const float* in, float* out, bool barrier) {
  DSK_SHARED(float, tile, [kThreads]);
  const int t = static_cast<int>(threadIdx.x);
  tile[t] = in[t];
  if (barrier) __syncthreads();
  out[t] = tile[(t + 1) % kThreads];
}

// Every block writes element 0: the last block to run wins.
__global__ void blocks_write_one_element(float* out) {
  if (threadIdx.x == 0) out[0] = static_cast<float>(blockIdx.x);
}

// Block 0 writes buf[0]; block 1 reads it in the same launch.
__global__ void block_reads_another_blocks_output(float* buf) {
  if (threadIdx.x != 0) return;
  if (blockIdx.x == 0)
    buf[0] = 1.0f;
  else
    buf[1] = buf[0] + 1.0f;
}

__global__ void add_one_in_place(float* x, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) x[i] += 1.0f;
}

// out[t] = in[(t + 1) % 64] (0 where that index is >= n) through a shared tile filled with cp.async; `wait`: the
// copies are waited for before the barrier (right), else only after the reads (wrong: they read undefined data).
__global__ void rotate_through_async_copies(const float* in, float* out, int n, bool wait) {
  DSK_DYNAMIC_SHARED(float, tile);
  const int t = static_cast<int>(threadIdx.x);
  copy_async_zfill<4>(tile + t, t < n ? in + t : in, t < n);
  if (wait) copies_wait_all();
  __syncthreads();
  out[t] = tile[(t + 1) % kThreads];
  if (!wait) {
    __syncthreads();  // every thread has read (so all of them read before any wait)
    copies_wait_all();
  }
}

// Misuses of cp.async, one per `how`: 0 never waits; 1 copies 16 bytes from a source 4 bytes past 16-byte
// alignment; 2 copies into device memory instead of shared memory.
__global__ void misuse_async_copy(const float* in, float* out, int how) {
  DSK_DYNAMIC_SHARED(float, tile);
  if (how == 0) copy_async_zfill<4>(tile, in, true);
  if (how == 1) copy_async_zfill<16>(tile, in + 1, true);
  if (how == 2) copy_async_zfill<4>(out, in, true);
  if (how != 0) copies_wait_all();
}

// cp.async groups, each of 32 threads on its own three elements: in[t] and in[32 + t] as two committed groups,
// in[64 + t] left uncommitted; out[0..32) after waiting for all but the newest group, out[32..96) the rest then
// (still in flight), out[96..160) after waiting for every committed group, out[160..192) after wait_all.
__global__ void async_copy_groups(const float* in, float* out) {
  DSK_DYNAMIC_SHARED(float, tile);
  const int t = static_cast<int>(threadIdx.x);
  copy_async_zfill<4>(tile + t, in + t, true);
  copies_commit();
  copy_async_zfill<4>(tile + 32 + t, in + 32 + t, true);
  copies_commit();
  copy_async_zfill<4>(tile + 64 + t, in + 64 + t, true);
  copies_wait_pending<1>();
  out[t] = tile[t];
  out[32 + t] = tile[32 + t];
  out[64 + t] = tile[64 + t];
  copies_wait_pending<0>();
  out[96 + t] = tile[32 + t];
  out[128 + t] = tile[64 + t];
  copies_wait_all();
  out[160 + t] = tile[64 + t];
}

// Two warps: warp 1 reads a shared cell after 8 warp-level steps, warp 0 overwrites it after 9. Only a __syncthreads
// between the read and the write (`barrier`) orders them; without it the result depends on how far apart the warps
// drift, as on a GPU.
__global__ void warps_out_of_step(float* out, bool barrier) {
  DSK_SHARED(float, cell, [1]);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (threadIdx.x == 0) cell[0] = 1.0f;
  __syncthreads();
  for (int i = 0; i < 8; ++i) __syncwarp();  // steps each warp takes at its own pace
  const float seen = cell[0];
  __syncwarp();
  if (barrier) __syncthreads();
  if (warp == 0 && lane == 0) cell[0] = 2.0f;
  if (warp == 1 && lane == 0) out[0] = seen;
}

}  // namespace

void out_of_step(float* out, bool barrier) { DSK_LAUNCH(1, 64, 0, warps_out_of_step)(out, barrier); }

void rotate_async(const float* in, float* out, int n, bool wait) {
  DSK_LAUNCH(1, kThreads, kThreads * sizeof(float), rotate_through_async_copies)(in, out, n, wait);
}
void misuse_async(const float* in, float* out, int how) {
  DSK_LAUNCH(1, 32, 64 * sizeof(float), misuse_async_copy)(in, out, how);
}

void async_groups(const float* in, float* out) {
  DSK_LAUNCH(1, 32, 96 * sizeof(float), async_copy_groups)(in, out);
}

void rotate(const float* in, float* out, bool barrier) {
  DSK_LAUNCH(1, kThreads, 0, rotate_through_shared)(in, out, barrier);
}
void write_one_element(float* out, int blocks) { DSK_LAUNCH(blocks, 32, 0, blocks_write_one_element)(out); }
void read_another_block(float* buf) { DSK_LAUNCH(2, 32, 0, block_reads_another_blocks_output)(buf); }
void add_one(float* x, int n) { DSK_LAUNCH((n + 31) / 32, 32, 0, add_one_in_place)(x, n); }

ScopedRaceCheck::ScopedRaceCheck(int launches) : previous_(dsk_emu::set_race_check_launches(launches)) {}
ScopedRaceCheck::~ScopedRaceCheck() { dsk_emu::set_race_check_launches(previous_); }

}  // namespace dsk::testing::emu
#endif
