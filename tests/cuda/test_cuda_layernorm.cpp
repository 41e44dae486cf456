// [cuda] LayerNorm forward and backward vs the CPU specification; the parameter gradients accumulate and are
// bit-identical from run to run (deterministic reduction, no atomics).
#ifdef DSK_HAVE_CUDA
#include "kernels/layernorm.h"

#include "tests/cuda/cuda_testing.h"

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("cuda layernorm_forward vs CPU", "[cuda][layernorm]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(11);
  // C = 70 (not a multiple of 32), 768 (a model width); N = 33 leaves the last block partly empty.
  for (int C : {70, 768}) {
    const int N = 33;
    INFO("C " << C);
    auto x = randn(size_t(N) * C, rng, 2.0f), w = randn(C, rng), b = randn(C, rng);
    for (auto& v : x) v += 3.0f;  // a non-zero mean, as real activations have
    DeviceBuffer<float> dx(x), dw(w), db(b), dy(size_t(N) * C), dmean(N), drstd(N);
    dy.poison();
    dmean.poison();
    drstd.poison();
    std::vector<float> y(size_t(N) * C), mean(N), rstd(N);
    layernorm_forward<Backend::CPU>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    layernorm_forward<Backend::CUDA>(dy.ptr, dmean.ptr, drstd.ptr, dx.ptr, dw.ptr, db.ptr, N, C);
    require_close(dy.download(), y, 1e-5, "y");
    require_close(dmean.download(), mean, 1e-5, "mean");
    require_close(drstd.download(), rstd, 1e-5, "rstd");
  }
}

TEST_CASE("cuda layernorm_backward vs CPU, accumulating and deterministic", "[cuda][layernorm]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(12);
  for (int C : {70, 768}) {
    const int N = 300;  // > 256 rows: the dw/db reduction combines several chunks
    INFO("C " << C);
    auto x = randn(size_t(N) * C, rng), w = randn(C, rng), b = randn(C, rng), dy = randn(size_t(N) * C, rng);
    auto dw0 = randn(C, rng), db0 = randn(C, rng);
    std::vector<float> y(size_t(N) * C), mean(N), rstd(N), dx(size_t(N) * C), dw = dw0, db = db0;
    layernorm_forward<Backend::CPU>(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    layernorm_backward<Backend::CPU>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                                     rstd.data(), N, C);

    // The GPU gets the CPU's saved statistics, so only backward is under test here.
    DeviceBuffer<float> d_x(x), d_w(w), d_dy(dy), d_mean(mean), d_rstd(rstd), d_dx(size_t(N) * C), d_dw(dw0),
        d_db(db0);
    std::vector<float> first_dx, first_dw, first_db;
    for (int run = 0; run < 2; ++run) {
      INFO("run " << run);
      d_dx.poison();
      d_dw.upload(dw0);
      d_db.upload(db0);
      layernorm_backward<Backend::CUDA>(d_dx.ptr, d_dw.ptr, d_db.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_mean.ptr,
                                        d_rstd.ptr, N, C);
      auto gdx = d_dx.download(), gdw = d_dw.download(), gdb = d_db.download();
      require_close(gdx, dx, 1e-5, "dx");
      require_close(gdw, dw, 1e-5, "dw");
      require_close(gdb, db, 1e-5, "db");
      if (run == 0) {
        first_dx = gdx;
        first_dw = gdw;
        first_db = gdb;
      } else {
        REQUIRE(bits_equal(gdx, first_dx));
        REQUIRE(bits_equal(gdw, first_dw));
        REQUIRE(bits_equal(gdb, first_db));
      }
    }
  }
}
#endif  // DSK_HAVE_CUDA
