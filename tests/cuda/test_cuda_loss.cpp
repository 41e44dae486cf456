// [cuda] fused softmax cross-entropy vs the CPU specification: losses, the gradient written separately or in
// place over the logits, ignored targets, short and long rows (different block sizes).
#ifdef DSK_HAVE_CUDA
#include "kernels/loss.h"

#include "tests/cuda/cuda_testing.h"

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("cuda cross_entropy vs CPU: separate and in-place gradient, ignored targets", "[cuda][loss]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(41);
  for (int V : {37, 1000, 3000, 20000}) {
    const int N = 13;
    INFO("V " << V);
    auto logits = randn(size_t(N) * V, rng, 3.0f);
    auto targets = randint(N, 0, V, rng);
    targets[4] = -1;  // ignored
    const float scale = 1.0f / N;
    std::vector<float> losses(N), dlogits(size_t(N) * V);
    cross_entropy_forward_backward<Backend::CPU>(losses.data(), dlogits.data(), logits.data(), targets.data(), N, V,
                                                 scale);
    REQUIRE(losses[4] == 0.0f);

    DeviceBuffer<float> d_logits(logits), d_losses(N), d_dlogits(size_t(N) * V);
    DeviceBuffer<int32_t> d_targets(targets);
    // Separate gradient buffer.
    d_losses.poison();
    d_dlogits.poison();
    cross_entropy_forward_backward<Backend::CUDA>(d_losses.ptr, d_dlogits.ptr, d_logits.ptr, d_targets.ptr, N, V,
                                                  scale);
    require_close(d_losses.download(), losses, 1e-5, "losses");
    require_close(d_dlogits.download(), dlogits, 1e-5, "dlogits");
    REQUIRE(bits_equal(d_logits.download(), logits));  // the input is left alone

    // Loss only.
    d_losses.poison();
    cross_entropy_forward_backward<Backend::CUDA>(d_losses.ptr, nullptr, d_logits.ptr, d_targets.ptr, N, V, scale);
    require_close(d_losses.download(), losses, 1e-5, "losses (no gradient)");

    // In place: the gradient overwrites the logits.
    d_losses.poison();
    cross_entropy_forward_backward<Backend::CUDA>(d_losses.ptr, d_logits.ptr, d_logits.ptr, d_targets.ptr, N, V,
                                                  scale);
    require_close(d_losses.download(), losses, 1e-5, "losses (in place)");
    require_close(d_logits.download(), dlogits, 1e-5, "dlogits (in place)");
  }
}
#endif  // DSK_HAVE_CUDA
