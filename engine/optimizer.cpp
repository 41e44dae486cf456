#include "engine/optimizer.h"

#include "kernels/device.h"
#include "kernels/optim.h"

#include <algorithm>
#include <cmath>

namespace dsk {

float learning_rate(const TrainConfig& c, int step, int total_steps) {
  if (c.warmup_steps > 0 && step < c.warmup_steps)
    return c.lr * static_cast<float>(step + 1) / static_cast<float>(c.warmup_steps);
  // Cosine from lr (first step after warmup) to min_lr (the last step), like CosineAnnealingLR with
  // T_max = the real number of decay steps (the original's T_max ignored max_steps).
  const int decay_steps = std::max(1, total_steps - c.warmup_steps - 1);
  const double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) / decay_steps);
  return static_cast<float>(c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * progress)));
}

float clip_scale(float grad_norm, float max_norm) {
  if (max_norm <= 0.0f) return 1.0f;
  return std::min(1.0f, max_norm / (grad_norm + 1e-6f));
}

AdamW::AdamW(ParamStore& params, const TrainConfig& c)
    : params_(params), config_(c), scratch_(params.device(), Arena::kAlign, "optimizer scratch") {
  norm_scratch_ = scratch_.alloc({1}).f32();
}

float AdamW::grad_norm() {
  float sum = 0.0f;
  dispatch(params_.device(), [&]<Backend B>() { sum_squares<B>(norm_scratch_, params_.grads(), params_.total()); });
  if (params_.device() == Backend::CPU)
    sum = *norm_scratch_;
  else
    cuda::copy_to_host(&sum, norm_scratch_, sizeof(float));
  return std::sqrt(sum);
}

float AdamW::step(int step, float lr) {
  const float norm = grad_norm();
  AdamWHyper h;
  h.lr = lr;
  h.beta1 = config_.beta1;
  h.beta2 = config_.beta2;
  h.eps = config_.eps;
  h.step = step;
  h.grad_scale = clip_scale(norm, config_.grad_clip);
  auto update = [&](int64_t offset, int64_t n, float wd) {
    h.weight_decay = wd;
    dispatch(params_.device(), [&]<Backend B>() {
      adamw_update<B>(params_.values() + offset, params_.grads() + offset, params_.adam_m() + offset,
                      params_.adam_v() + offset, n, h);
    });
  };
  if (config_.decay_all) {
    update(0, params_.total(), config_.weight_decay);  // one flat pass over the whole arena
  } else {
    for (const ParamInfo& p : params_.infos()) update(p.offset, p.numel, p.decay ? config_.weight_decay : 0.0f);
  }
  return norm;
}

}  // namespace dsk
