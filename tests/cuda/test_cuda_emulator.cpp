// The CUDA emulator's race check (kernels/cuda_emu/emulator.h): launches whose result depends on the block or
// thread order fail, naming the kernel; race-free ones pass and take effect once. Emulator builds only: these
// are tests of the emulator, not of a GPU.
#ifdef DSK_CUDA_EMULATOR
#include "tests/cuda/cuda_testing.h"
#include "tests/cuda/emulator_test_kernels.h"

#include <stdexcept>

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
#endif
