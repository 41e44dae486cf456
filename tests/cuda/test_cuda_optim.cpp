// [cuda] the squared gradient norm (deterministic) and fused AdamW vs the CPU specification.
#ifdef DSK_HAVE_CUDA
#include "kernels/optim.h"

#include "tests/cuda/cuda_testing.h"

#include <cstring>

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("cuda sum_squares vs CPU, bit-identical across runs", "[cuda][optim]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(51);
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(1000), int64_t(3) * 1000 * 1000 + 7}) {
    INFO("n " << n);
    auto g = randn(n, rng);
    float cpu = -1.0f;
    sum_squares<Backend::CPU>(&cpu, g.data(), n);
    DeviceBuffer<float> d_g(g), d_out(1);
    float first = 0.0f;
    for (int run = 0; run < 2; ++run) {
      d_out.poison();
      sum_squares<Backend::CUDA>(d_out.ptr, d_g.ptr, n);
      float got = d_out.download()[0];
      REQUIRE(std::isfinite(got));
      INFO("gpu " << got << " cpu " << cpu << " seed " << test_seed());
      REQUIRE(std::abs(double(got) - cpu) <= 1e-5 * std::abs(double(cpu)) + 1e-30);
      if (run == 0)
        first = got;
      else
        REQUIRE(std::memcmp(&got, &first, sizeof(float)) == 0);
    }
  }
}

TEST_CASE("cuda adamw_update vs CPU over several steps", "[cuda][optim]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(52);
  const int64_t n = 100003;
  auto p = randn(n, rng, 0.02f), m = randn(n, rng, 0.01f), v = randn(n, rng, 0.01f);
  for (auto& x : v) x = x * x;  // second moments are non-negative
  DeviceBuffer<float> d_p(p), d_m(m), d_v(v), d_g(n);
  AdamWHyper h;
  h.lr = 1e-3f;
  h.grad_scale = 0.5f;
  for (int step = 1; step <= 3; ++step) {
    INFO("step " << step);
    h.step = step;
    auto g = randn(n, rng);
    d_g.upload(g);
    adamw_update<Backend::CPU>(p.data(), g.data(), m.data(), v.data(), n, h);
    adamw_update<Backend::CUDA>(d_p.ptr, d_g.ptr, d_m.ptr, d_v.ptr, n, h);
    require_close(d_p.download(), p, 1e-5, "p");
    require_close(d_m.download(), m, 1e-5, "m");
    require_close(d_v.download(), v, 1e-5, "v");
  }
}
#endif  // DSK_HAVE_CUDA
