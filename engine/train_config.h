#pragma once
// Training configuration: defaults match the original project (batch 8, AdamW 3e-4 → 3e-5 cosine, β (0.9, 0.95),
// weight decay 0.1 on every parameter, clip 1.0). Unknown keys are errors naming the key.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace dsk {

struct TrainConfig {
  int batch_size = 8;
  int seq_len = 0;  // 0 = the model's context_length
  float lr = 3e-4f;
  float min_lr = 3e-5f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  bool decay_all = true;  // like the original; false exempts norms, biases and embeddings
  float grad_clip = 1.0f;  // 0 disables clipping
  int warmup_steps = 0;
  int max_steps = 0;     // 0 = derived from epochs
  float epochs = 0.0f;   // used when max_steps is 0
  int grad_accum_steps = 1;
  int eval_every = 50;   // 0 = only at the end
  int eval_batches = 20;  // 0 = the whole validation split
  int save_every = 0;     // 0 = only at the end (and the best checkpoint)
  int keep_checkpoints = 2;
  uint64_t seed = 1337;
  float dropout = -1.0f;  // >= 0 overrides the model's drop_rate
  int log_every = 10;
  int64_t data_stride = 0;  // 0 = random windows; s > 0 = every window with stride s
  bool tf32 = false;        // CUDA only: TF32 tensor cores for fp32 GEMMs (faster, ~1e-3 relative error)
  // CUDA only: the arithmetic of the grouped expert GEMMs and of the attention kernels (kernels/device.h Math):
  // auto (follows tf32), ffma, tf32, 3xtf32 (near-fp32 accuracy on the tensor cores); a forced choice takes
  // precedence over tf32.
  std::string expert_math = "auto";
  std::string attention_math = "auto";

  // The one table of keys (engine/keyed_config.h): adding a key means adding one line here.
  template <class C, class F>
  static void visit(C& c, F&& f) {
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
    f("tf32", c.tf32);
    f("expert_math", c.expert_math);
    f("attention_math", c.attention_math);
  }

  void validate() const;
  // validate(), and the window fits the model: seq_len at most context_length.
  void validate_for(int context_length) const;
  nlohmann::json to_json() const;
  void update_from_json(const nlohmann::json& j);
  void set(const std::string& key, const std::string& value);
  bool has_key(const std::string& key) const;
};

}  // namespace dsk
