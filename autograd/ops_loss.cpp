// The cross-entropy loss op: forward and the logit gradient in one fused pass.
#include "autograd/ops.h"
#include "kernels/elementwise.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"

#include <vector>

namespace dsk::ops {

Var* cross_entropy(Tape& t, Var* logits, Var* targets, float grad_weight) {
  const int V = static_cast<int>(logits->value.dim(-1));
  const int N = static_cast<int>(logits->value.numel() / V);
  DSK_CHECK(targets->value.numel() == N, "cross_entropy: {} targets for {} positions", targets->value.numel(), N);
  Var* losses = t.new_var({N}, "cross_entropy.per_position", DType::F32, false);
  Var* loss = t.new_var({1}, "cross_entropy");
  // The caller guarantees every target is valid (>= 0); the mean is over all N positions.
  const float inv_n = 1.0f / static_cast<float>(N);
  const bool fused_grad = t.record && logits->requires_grad;
  // In place: the logits become their gradient. Nothing reads the logits after the loss in this engine.
  float* dlogits = fused_grad ? logits->value.f32() : nullptr;
  Var* ones = constant(t, {N}, inv_n, "ones");  // outside run(): a planning run must see this allocation too
  t.run([&]<Backend B>() {
    cross_entropy_forward_backward<B>(losses->value.f32(), dlogits, logits->value.f32(), targets->value.i32(), N, V,
                                      grad_weight * inv_n);
    // mean = (1/N) Σ losses, as a 1×N · N×1 product so it stays on the device
    gemm<B>(false, false, 1, 1, N, 1.0f, losses->value.f32(), N, 0, ones->value.f32(), 1, 0, 0.0f, loss->value.f32(),
            1, 0);
  });
  if (fused_grad) {
    t.push("cross_entropy", {logits, targets}, {loss}, [=, &t] {
      // The gradient was written in the forward pass (weight fixed then); hand it to the logits.
      logits->grad = logits->value;
      logits->grad_written = true;
    });
  }
  return loss;
}

}  // namespace dsk::ops
