#include "engine/train_config.h"

#include "engine/keyed_config.h"

#include "kernels/common.h"
#include "kernels/device.h"

namespace dsk {

void TrainConfig::validate() const {
  auto check = [](bool ok, const char* key, const std::string& why) {
    if (!ok) throw Error(fmt::format("training key '{}' {}", key, why));
  };
  check(batch_size > 0, "batch_size", "must be positive");
  check(seq_len >= 0, "seq_len", "must be >= 0 (0 = context_length)");
  check(lr > 0, "lr", "must be positive");
  check(min_lr >= 0 && min_lr <= lr, "min_lr", "must be in [0, lr]");
  check(beta1 >= 0 && beta1 < 1, "beta1", "must be in [0, 1)");
  check(beta2 >= 0 && beta2 < 1, "beta2", "must be in [0, 1)");
  check(eps > 0, "eps", "must be positive");
  check(weight_decay >= 0, "weight_decay", "must be >= 0");
  check(grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables clipping)");
  check(warmup_steps >= 0, "warmup_steps", "must be >= 0");
  check(max_steps >= 0, "max_steps", "must be >= 0");
  check(epochs >= 0, "epochs", "must be >= 0");
  check(max_steps > 0 || epochs > 0, "max_steps", "or epochs must be set");
  // A warmup as long as the run never reaches lr, and the cosine never decays to min_lr.
  check(max_steps == 0 || warmup_steps < max_steps, "warmup_steps",
        fmt::format("must be less than max_steps ({}), got {}", max_steps, warmup_steps));
  check(grad_accum_steps > 0, "grad_accum_steps", "must be positive");
  check(eval_every >= 0, "eval_every", "must be >= 0");
  check(eval_batches >= 0, "eval_batches", "must be >= 0 (0 = whole split)");
  check(save_every >= 0, "save_every", "must be >= 0");
  check(keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1");
  check(dropout < 1, "dropout", "must be < 1 (negative = use the model's drop_rate)");
  check(log_every > 0, "log_every", "must be positive");
  check(data_stride >= 0, "data_stride", "must be >= 0 (0 = random windows)");
  for (const auto& [key, value] : {std::pair{"expert_math", &expert_math}, std::pair{"attention_math", &attention_math}})
    check(cuda::math_named(*value).has_value(), key, "must be " + cuda::math_choices() + ", got \"" + *value + "\"");
}

void TrainConfig::validate_for(int context_length) const {
  validate();
  if (seq_len > context_length)
    throw Error(fmt::format("seq_len {} exceeds the model's context_length {}", seq_len, context_length));
}

nlohmann::json TrainConfig::to_json() const { return keyed::to_json(*this); }

bool TrainConfig::has_key(const std::string& key) const { return keyed::has_key(*this, key); }

void TrainConfig::update_from_json(const nlohmann::json& j) { keyed::update_from_json(*this, j, "training key"); }

void TrainConfig::set(const std::string& key, const std::string& value) {
  keyed::set(*this, key, value, "training key");
}

}  // namespace dsk
