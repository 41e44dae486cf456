// [cuda] fused latent-KV projection forward/backward vs the CPU specification (kernels/cpu/latent.cpp) at the
// configs' widths (d 256 -> dc 64, d 512/1024 -> dc 128), every lane count of the kernel (dc <= 32, 64, 128, 256),
// rows that do not fill a block; parameter gradients accumulate; every output written; dx may be skipped.
#ifdef DSK_HAVE_CUDA
#include "kernels/device.h"
#include "kernels/latent.h"

#include "tests/cuda/cuda_testing.h"

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("cuda latent_projection forward and backward vs CPU", "[cuda][latent]") {
  if (!dsk::testing::gpu_available()) return;
  cuda::set_tf32(false);  // fp32 GEMMs: the CPU comparison is at fp32 tolerance
  auto rng = test_rng(81);
  struct Dims {
    int N, d, dc;
  };
  for (Dims s : {Dims{257, 256, 64}, Dims{130, 512, 128}, Dims{64, 1024, 128}, Dims{33, 70, 37}, Dims{40, 96, 256},
                 Dims{17, 33, 20}, Dims{5, 300, 200}}) {
    const int N = s.N, d = s.d, dc = s.dc;
    INFO("N " << N << " d " << d << " dc " << dc);
    auto x = randn(size_t(N) * d, rng), w = randn(size_t(dc) * d, rng, 0.05f), lw = randn(dc, rng),
         lb = randn(dc, rng), dy = randn(size_t(N) * dc, rng);
    auto dw0 = randn(size_t(dc) * d, rng), dlw0 = randn(dc, rng), dlb0 = randn(dc, rng);
    std::vector<float> c(size_t(N) * dc), raw(size_t(N) * dc), mean(N), rstd(N);
    latent_projection_forward<Backend::CPU>(c.data(), raw.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                            lw.data(), lb.data(), N, d, dc);
    std::vector<float> dx(size_t(N) * d), d_raw(size_t(N) * dc), dw = dw0, dlw = dlw0, dlb = dlb0;
    latent_projection_backward<Backend::CPU>(dx.data(), d_raw.data(), dw.data(), dlw.data(), dlb.data(), dy.data(),
                                             x.data(), w.data(), raw.data(), lw.data(), mean.data(), rstd.data(), N,
                                             d, dc);

    DeviceBuffer<float> g_x(x), g_w(w), g_lw(lw), g_lb(lb), g_dy(dy), g_c(c.size()), g_raw(raw.size()), g_mean(N),
        g_rstd(N), g_dx(dx.size()), g_draw(d_raw.size()), g_dw(dw0), g_dlw(dlw0), g_dlb(dlb0);
    g_c.poison();
    g_raw.poison();
    g_mean.poison();
    g_rstd.poison();
    g_dx.poison();
    g_draw.poison();
    latent_projection_forward<Backend::CUDA>(g_c.ptr, g_raw.ptr, g_mean.ptr, g_rstd.ptr, g_x.ptr, g_w.ptr, g_lw.ptr,
                                             g_lb.ptr, N, d, dc);
    require_close(g_c.download(), c, 1e-4, "c");
    require_close(g_raw.download(), raw, 1e-5, "c_raw");
    require_close(g_mean.download(), mean, 1e-4, "mean");  // poisoned above: checks it is written, and right
    require_close(g_rstd.download(), rstd, 1e-4, "rstd");
    // Backward from the CPU's saved tensors, so only backward is under test.
    g_raw.upload(raw);
    g_mean.upload(mean);
    g_rstd.upload(rstd);
    latent_projection_backward<Backend::CUDA>(g_dx.ptr, g_draw.ptr, g_dw.ptr, g_dlw.ptr, g_dlb.ptr, g_dy.ptr,
                                              g_x.ptr, g_w.ptr, g_raw.ptr, g_lw.ptr, g_mean.ptr, g_rstd.ptr, N, d,
                                              dc);
    require_close(g_draw.download(), d_raw, 1e-5, "d_raw");
    require_close(g_dx.download(), dx, 1e-4, "dx");
    require_close(g_dw.download(), dw, 1e-4, "dw_dkv");
    require_close(g_dlw.download(), dlw, 1e-5, "dln_w");
    require_close(g_dlb.download(), dlb, 1e-5, "dln_b");
    // Without dx: the parameter gradients accumulate once more, by the same amounts.
    latent_projection_backward<Backend::CUDA>(nullptr, g_draw.ptr, g_dw.ptr, g_dlw.ptr, g_dlb.ptr, g_dy.ptr, g_x.ptr,
                                              g_w.ptr, g_raw.ptr, g_lw.ptr, g_mean.ptr, g_rstd.ptr, N, d, dc);
    for (size_t i = 0; i < dw.size(); ++i) dw[i] += dw[i] - dw0[i];
    for (int j = 0; j < dc; ++j) {
      dlw[j] += dlw[j] - dlw0[j];
      dlb[j] += dlb[j] - dlb0[j];
    }
    require_close(g_dw.download(), dw, 1e-4, "dw_dkv (second pass)");
    require_close(g_dlw.download(), dlw, 1e-5, "dln_w (second pass)");
  }
}
#endif  // DSK_HAVE_CUDA
