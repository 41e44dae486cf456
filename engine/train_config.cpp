#include "engine/train_config.h"

#include "kernels/common.h"

namespace dsk {

namespace {

template <class F>
void for_each_key(TrainConfig& c, F&& f) {
  f("batch_size", c.batch_size);
  f("seq_len", c.seq_len);
  f("lr", c.lr);
  f("min_lr", c.min_lr);
  f("beta1", c.beta1);
  f("beta2", c.beta2);
  f("eps", c.eps);
  f("weight_decay", c.weight_decay);
  f("decay_all", c.decay_all);
  f("grad_clip", c.grad_clip);
  f("warmup_steps", c.warmup_steps);
  f("max_steps", c.max_steps);
  f("epochs", c.epochs);
  f("grad_accum_steps", c.grad_accum_steps);
  f("eval_every", c.eval_every);
  f("eval_batches", c.eval_batches);
  f("save_every", c.save_every);
  f("keep_checkpoints", c.keep_checkpoints);
  f("seed", c.seed);
  f("dropout", c.dropout);
  f("log_every", c.log_every);
  f("data_stride", c.data_stride);
}

template <class T>
void read_value(const nlohmann::json& v, const std::string& key, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) throw Error(fmt::format("training key '{}' must be true or false, got {}", key, v.dump()));
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) throw Error(fmt::format("training key '{}' must be an integer, got {}", key, v.dump()));
    if (std::is_unsigned_v<T> && v.get<long long>() < 0)
      throw Error(fmt::format("training key '{}' must be >= 0, got {}", key, v.dump()));
  } else {
    if (!v.is_number()) throw Error(fmt::format("training key '{}' must be a number, got {}", key, v.dump()));
  }
  out = v.get<T>();
}

}  // namespace

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
  check(grad_accum_steps > 0, "grad_accum_steps", "must be positive");
  check(eval_every >= 0, "eval_every", "must be >= 0");
  check(eval_batches >= 0, "eval_batches", "must be >= 0 (0 = whole split)");
  check(save_every >= 0, "save_every", "must be >= 0");
  check(keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1");
  check(dropout < 1, "dropout", "must be < 1 (negative = use the model's drop_rate)");
  check(log_every > 0, "log_every", "must be positive");
  check(data_stride >= 0, "data_stride", "must be >= 0 (0 = random windows)");
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j;
  TrainConfig copy = *this;
  for_each_key(copy, [&](const char* key, auto& v) {
    // Floats are written with their shortest round-trip text ("0.1", not 0.10000000149011612).
    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, float>)
      j[key] = std::stod(fmt::format("{}", v));
    else
      j[key] = v;
  });
  return j;
}

bool TrainConfig::has_key(const std::string& key) const {
  bool found = false;
  TrainConfig copy = *this;
  for_each_key(copy, [&](const char* k, auto&) { found = found || key == k; });
  return found;
}

void TrainConfig::update_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("a training config must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (!has_key(key)) throw Error(fmt::format("unknown training config key '{}'", key));
    for_each_key(*this, [&](const char* k, auto& field) {
      if (key == k) read_value(value, key, field);
    });
  }
}

void TrainConfig::set(const std::string& key, const std::string& value) {
  nlohmann::json v = nlohmann::json::parse(value, nullptr, false);
  if (v.is_discarded()) throw Error(fmt::format("training key '{}': cannot parse value '{}'", key, value));
  update_from_json(nlohmann::json{{key, v}});
}

}  // namespace dsk
