// [cuda] element-wise ops vs the CPU specification. Sizes exceed one grid-stride sweep; dropout's mask (and
// values) must be exactly the CPU's for the same seed and site.
#ifdef DSK_HAVE_CUDA
#include "kernels/elementwise.h"
#include "kernels/rng.h"

#include "tests/cuda/cuda_testing.h"

using namespace dsk;
using namespace dsk::testing;

namespace {
// Larger than the grid-stride launch covers in one sweep (sm_count * 16 blocks of 256 threads), and odd.
constexpr int64_t kN = (int64_t(1) << 21) + 3;
}  // namespace

TEST_CASE("cuda relu forward and backward vs CPU", "[cuda][elementwise]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(31);
  auto x = randn(kN, rng), dy = randn(kN, rng);
  std::vector<float> y(kN), dx(kN);
  relu_forward<Backend::CPU>(y.data(), x.data(), kN);
  relu_backward<Backend::CPU>(dx.data(), dy.data(), y.data(), kN);
  DeviceBuffer<float> d_x(x), d_dy(dy), d_y(kN), d_dx(kN);
  d_y.poison();
  d_dx.poison();
  relu_forward<Backend::CUDA>(d_y.ptr, d_x.ptr, kN);
  relu_backward<Backend::CUDA>(d_dx.ptr, d_dy.ptr, d_y.ptr, kN);
  auto gy = d_y.download(), gdx = d_dx.download();
  REQUIRE(count_unwritten(gy) == 0);
  REQUIRE(count_unwritten(gdx) == 0);
  REQUIRE(bits_equal(gy, y));
  REQUIRE(bits_equal(gdx, dx));
}

TEST_CASE("cuda dropout: the CPU's mask and values, forward and backward", "[cuda][elementwise]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(32);
  auto x = randn(kN, rng), dy = randn(kN, rng);
  const uint64_t seed = rng(), site = dsk::rng::make_site(7, 3, 0);
  DeviceBuffer<float> d_x(x), d_dy(dy), d_y(kN), d_dx(kN);
  for (float p : {0.0f, 0.1f, 0.5f, 1.0f}) {
    INFO("p " << p);
    std::vector<float> y(kN), dx(kN);
    dropout_forward<Backend::CPU>(y.data(), x.data(), kN, p, seed, site);
    dropout_backward<Backend::CPU>(dx.data(), dy.data(), kN, p, seed, site);
    d_y.poison();
    d_dx.poison();
    dropout_forward<Backend::CUDA>(d_y.ptr, d_x.ptr, kN, p, seed, site);
    dropout_backward<Backend::CUDA>(d_dx.ptr, d_dy.ptr, kN, p, seed, site);
    auto gy = d_y.download(), gdx = d_dx.download();
    REQUIRE(count_unwritten(gy) == 0);
    REQUIRE(count_unwritten(gdx) == 0);
    // The mask from the generator itself (an input can be exactly 0: the emulator run found that comparing zeros
    // of y alone is flaky).
    size_t dropped = 0, mask_mismatch = 0;
    for (int64_t i = 0; i < kN; ++i) {
      const bool kept = p == 0.0f || dsk::rng::keep(seed, site, static_cast<uint64_t>(i), p);
      dropped += !kept;
      mask_mismatch += kept ? (x[i] != 0.0f && gy[i] == 0.0f) : (gy[i] != 0.0f);
      mask_mismatch += kept ? (dy[i] != 0.0f && gdx[i] == 0.0f) : (gdx[i] != 0.0f);  // backward: the same mask
    }
    REQUIRE(mask_mismatch == 0);
    REQUIRE(bits_equal(gy, y));
    REQUIRE(bits_equal(gdx, dx));
    // The mask really drops about p of the elements (so the test can fail).
    CHECK(std::abs(static_cast<double>(dropped) / kN - p) < 0.01);
  }
  // In place (y == x) is allowed.
  std::vector<float> y(kN);
  dropout_forward<Backend::CPU>(y.data(), x.data(), kN, 0.3f, seed, site);
  dropout_forward<Backend::CUDA>(d_x.ptr, d_x.ptr, kN, 0.3f, seed, site);
  REQUIRE(bits_equal(d_x.download(), y));
}

TEST_CASE("cuda add, accumulate, fill vs CPU", "[cuda][elementwise]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(33);
  auto a = randn(kN, rng), b = randn(kN, rng), y0 = randn(kN, rng);
  DeviceBuffer<float> d_a(a), d_b(b), d_out(kN), d_y(y0);

  std::vector<float> out(kN);
  add<Backend::CPU>(out.data(), a.data(), b.data(), kN);
  d_out.poison();
  add<Backend::CUDA>(d_out.ptr, d_a.ptr, d_b.ptr, kN);
  auto g = d_out.download();
  REQUIRE(count_unwritten(g) == 0);
  REQUIRE(bits_equal(g, out));

  auto y = y0;  // accumulate twice: y += 0.5 a, y += b
  accumulate<Backend::CPU>(y.data(), a.data(), kN, 0.5f);
  accumulate<Backend::CPU>(y.data(), b.data(), kN);
  accumulate<Backend::CUDA>(d_y.ptr, d_a.ptr, kN, 0.5f);
  accumulate<Backend::CUDA>(d_y.ptr, d_b.ptr, kN);
  require_close(d_y.download(), y, 1e-6, "accumulated y");  // an FMA on the GPU may round once less

  d_out.poison();
  fill<Backend::CUDA>(d_out.ptr, -2.5f, kN);
  g = d_out.download();
  for (int64_t i = 0; i < kN; ++i) REQUIRE(g[i] == -2.5f);
}
#endif  // DSK_HAVE_CUDA
