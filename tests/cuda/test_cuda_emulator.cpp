// The CUDA emulator's own checks (kernels/cuda_emu/emulator.h). The race check: launches whose result depends on
// the block or thread order fail, naming the kernel; race-free ones pass and take effect once. Device memory and
// host code: host code touching device memory faults with a message, a kernel given a host pointer, a cudaMemcpy
// whose kind contradicts its pointers and a GEMM on host memory fail. cp.async: its copies land at the wait (NaN
// before), zero-fill, and misuses fail. Emulator builds only: these are tests of the emulator, not of a GPU.
#ifdef DSK_CUDA_EMULATOR
#include "tests/cuda/cuda_testing.h"
#include "tests/cuda/emulator_test_kernels.h"

#include <cublas_v2.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <stdexcept>
#include <string>

using namespace dsk::testing;

namespace {

// Runs f and returns the message of the std::runtime_error it throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

std::vector<float> iota_floats(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

}  // namespace

TEST_CASE("cuda emulator: the race check fails launches whose result depends on the schedule",
          "[cuda][emulator]") {
  if (!gpu_available()) return;
  emu::ScopedRaceCheck check(2);
  DeviceBuffer<float> in(iota_floats(64, 1.0f)), out(64);

  SECTION("a missing __syncthreads") {
    out.poison();
    const std::string why = error_of([&] { emu::rotate(in.ptr, out.ptr, false); });
    INFO(why);
    REQUIRE(why.find("race: kernel rotate_through_shared") != std::string::npos);
    REQUIRE(why.find("device allocation") != std::string::npos);
  }
  SECTION("blocks writing one element") {
    const std::string why = error_of([&] { emu::write_one_element(out.ptr, 8); });
    INFO(why);
    REQUIRE(why.find("race: kernel blocks_write_one_element") != std::string::npos);
  }
  SECTION("a block reading another block's output") {
    in.upload(iota_floats(64, 5.0f));
    const std::string why = error_of([&] { emu::read_another_block(in.ptr); });
    INFO(why);
    REQUIRE(why.find("race: kernel block_reads_another_blocks_output") != std::string::npos);
  }
}

// Warps drift apart on a GPU: a write one warp-level step after another warp's read races unless a __syncthreads
// orders them. Warps that moved in step (one barrier step per round each) would always read first.
TEST_CASE("cuda emulator: warps drift apart between block barriers", "[cuda][emulator]") {
  if (!gpu_available()) return;
  DeviceBuffer<float> out(1);
  {
    emu::ScopedRaceCheck check(40);
    REQUIRE_THROWS_WITH(
        [&] {
          for (int i = 0; i < 40; ++i) emu::out_of_step(out.ptr, false);
        }(),
        Catch::Contains("race: kernel warps_out_of_step"));
  }
  emu::ScopedRaceCheck check(40);
  for (int i = 0; i < 40; ++i) {
    out.poison();
    REQUIRE_NOTHROW(emu::out_of_step(out.ptr, true));
    REQUIRE(out.download()[0] == 1.0f);
  }
}

TEST_CASE("cuda emulator: race-free launches pass the race check and take effect once", "[cuda][emulator]") {
  if (!gpu_available()) return;
  emu::ScopedRaceCheck check(2);
  DeviceBuffer<float> in(iota_floats(64, 1.0f)), out(64), x(iota_floats(1000, 0.0f));
  out.poison();
  REQUIRE_NOTHROW(emu::rotate(in.ptr, out.ptr, true));
  const auto rotated = out.download();
  for (int t = 0; t < 64; ++t) REQUIRE(rotated[static_cast<size_t>(t)] == static_cast<float>((t + 1) % 64 + 1));

  // Three launches, the first two checked (each run twice from a restored copy): in place, x + 3, not more.
  for (int i = 0; i < 3; ++i) REQUIRE_NOTHROW(emu::add_one(x.ptr, 1000));
  const auto added = x.download();
  for (size_t i = 0; i < added.size(); ++i) REQUIRE(added[i] == static_cast<float>(i) + 3.0f);

  // A single block writing one element has one schedule: no race.
  REQUIRE_NOTHROW(emu::write_one_element(out.ptr, 1));
  REQUIRE(out.download()[0] == 0.0f);
}

TEST_CASE("cuda emulator: the race check is off with 0 launches and counts per kernel shape", "[cuda][emulator]") {
  if (!gpu_available()) return;
  DeviceBuffer<float> out(64);
  {
    emu::ScopedRaceCheck off(0);
    REQUIRE_NOTHROW(emu::write_one_element(out.ptr, 8));
  }
  emu::ScopedRaceCheck once(1);
  REQUIRE_THROWS_WITH(emu::write_one_element(out.ptr, 8), Catch::Contains("race"));
  // That shape had its one checked launch; another shape (grid of 4) has its own.
  REQUIRE_NOTHROW(emu::write_one_element(out.ptr, 8));
  REQUIRE_THROWS_WITH(emu::write_one_element(out.ptr, 4), Catch::Contains("race"));
}

TEST_CASE("cuda emulator: host code that touches device memory faults, naming the allocation", "[cuda][emulator]") {
  if (!gpu_available()) return;
  DeviceBuffer<float> buf(iota_floats(16, 1.0f));
  // Copies and kernels may touch it (and leave it untouchable again afterwards).
  emu::add_one(buf.ptr, 16);
  REQUIRE(buf.download()[3] == 5.0f);

  // The fault kills the process: a child makes it, the parent reads its stderr.
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    dup2(fds[1], STDERR_FILENO);
    freopen("/dev/null", "w", stdout);  // whatever the test framework's handler prints
    const volatile float x = buf.ptr[3];  // host code dereferencing a device pointer
    (void)x;
    _exit(0);
  }
  close(fds[1]);
  std::string said;
  char chunk[256];
  for (ssize_t got; (got = read(fds[0], chunk, sizeof chunk)) > 0;) said.append(chunk, static_cast<size_t>(got));
  close(fds[0]);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  INFO(said);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGSEGV);
  // buf has 17 floats (one spare): byte 12 of a 68-byte allocation.
  REQUIRE(said.find("host code touched device memory (byte 12 of a 68-byte cudaMalloc allocation)") !=
          std::string::npos);
}

TEST_CASE("cuda emulator: a kernel given a host pointer fails, naming the kernel and the argument",
          "[cuda][emulator]") {
  if (!gpu_available()) return;
  std::vector<float> host(64, 1.0f);
  const std::string why = error_of([&] { emu::add_one(host.data(), 64); });
  INFO(why);
  REQUIRE(why.find("kernel add_one_in_place") != std::string::npos);
  REQUIRE(why.find("argument 0") != std::string::npos);
  REQUIRE(why.find("is a host pointer") != std::string::npos);
  REQUIRE(host[0] == 1.0f);  // nothing ran
  DeviceBuffer<float> device(std::vector<float>(64, 1.0f));
  REQUIRE_NOTHROW(emu::add_one(device.ptr, 64));
  REQUIRE(device.download()[63] == 2.0f);
}

TEST_CASE("cuda emulator: cudaMemcpy and cudaMemset check their pointers against their kind", "[cuda][emulator]") {
  if (!gpu_available()) return;
  DeviceBuffer<float> a(8), b(8);
  std::vector<float> h(8, 2.0f), h2(8, 0.0f);
  REQUIRE(cudaMemcpy(a.ptr, h.data(), 32, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(b.ptr, a.ptr, 32, cudaMemcpyDeviceToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(h2.data(), b.ptr, 32, cudaMemcpyDeviceToHost) == cudaSuccess);
  REQUIRE(h2 == h);
  REQUIRE(cudaMemcpy(h2.data(), a.ptr, 32, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // reversed
  REQUIRE(cudaMemcpy(a.ptr, h.data(), 32, cudaMemcpyDeviceToDevice) == cudaErrorInvalidValue);
  REQUIRE(cudaMemcpy(h2.data(), h.data(), 32, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  REQUIRE(cudaMemset(h2.data(), 0, 32) == cudaErrorInvalidValue);
  REQUIRE(cudaMemset(a.ptr, 0, 32) == cudaSuccess);
}

TEST_CASE("cuda emulator: a cuBLAS GEMM on host memory fails", "[cuda][emulator]") {
  if (!gpu_available()) return;
  cublasHandle_t handle;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  DeviceBuffer<float> a(iota_floats(4, 1.0f)), b(iota_floats(4, 1.0f)), c(4);
  std::vector<float> host(4, 1.0f);
  const float one = 1.0f, zero = 0.0f;
  auto gemm = [&](const float* A, float* C) {
    return cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, A, CUDA_R_32F, 2, b.ptr, CUDA_R_32F, 2,
                        &zero, C, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  };
  REQUIRE(gemm(a.ptr, c.ptr) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(c.download() == std::vector<float>{7.0f, 10.0f, 15.0f, 22.0f});
  REQUIRE_THROWS_WITH(gemm(host.data(), c.ptr), Catch::Contains("A operand is a host pointer"));
  REQUIRE_THROWS_WITH(gemm(a.ptr, host.data()), Catch::Contains("C operand is a host pointer"));
}

TEST_CASE("cuda emulator: cp.async lands at the wait, zero-fills, and is checked", "[cuda][emulator]") {
  if (!gpu_available()) return;
  DeviceBuffer<float> in(iota_floats(64, 1.0f)), out(64);

  // Waited for before the barrier: the rotation, with zeros where the copy was told to read nothing (index >= 50).
  out.poison();
  emu::rotate_async(in.ptr, out.ptr, 50, true);
  const auto rotated = out.download();
  for (int t = 0; t < 64; ++t) {
    const int from = (t + 1) % 64;
    REQUIRE(rotated[static_cast<size_t>(t)] == (from < 50 ? static_cast<float>(from + 1) : 0.0f));
  }

  // Read before the wait: the tile is undefined until then, and the emulator makes that NaN everywhere.
  out.upload(std::vector<float>(64, 0.0f));
  emu::rotate_async(in.ptr, out.ptr, 64, false);
  for (float v : out.download()) REQUIRE(std::isnan(v));

  REQUIRE_THROWS_WITH(emu::misuse_async(in.ptr, out.ptr, 0), Catch::Contains("never waited for"));
  REQUIRE_THROWS_WITH(emu::misuse_async(in.ptr, out.ptr, 1), Catch::Contains("misaligned address: a cp.async"));
  REQUIRE_THROWS_WITH(emu::misuse_async(in.ptr, out.ptr, 2),
                      Catch::Contains("not in the launch's dynamic shared memory"));
}

// PTX's cp.async.wait_group N: every committed group but the N newest has landed; copies not committed are not
// waited for (only wait_all lands them). The pipelined kernels (attention_decode.cuh) rely on exactly this.
TEST_CASE("cuda emulator: cp.async groups land at wait_group as PTX says", "[cuda][emulator]") {
  if (!gpu_available()) return;
  DeviceBuffer<float> in(iota_floats(96, 1.0f)), out(192);
  out.poison();
  emu::async_groups(in.ptr, out.ptr);
  const auto got = out.download();
  auto at = [&](size_t i) { return got[i]; };
  for (size_t t = 0; t < 32; ++t) {
    INFO("thread " << t);
    REQUIRE(at(t) == static_cast<float>(t + 1));   // group 0, landed at wait_group 1
    REQUIRE(std::isnan(at(32 + t)));               // group 1, the newest: still in flight
    REQUIRE(std::isnan(at(64 + t)));               // not committed
    REQUIRE(at(96 + t) == static_cast<float>(t + 33));  // group 1 at wait_group 0
    REQUIRE(std::isnan(at(128 + t)));              // not committed: wait_group 0 does not wait for it
    REQUIRE(at(160 + t) == static_cast<float>(t + 65));  // wait_all lands it
  }
}
#endif
