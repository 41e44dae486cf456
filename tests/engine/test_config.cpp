#include "engine/config.h"
#include "engine/train_config.h"
#include "kernels/device.h"
#include "engine/memory_plan.h"
#include "engine/model.h"

#include <catch2/catch.hpp>

#include <fstream>

using namespace dsk;

TEST_CASE("config: built-in configs reproduce the original parameter counts", "[config]") {
  ParamCounts small = count_parameters(load_model_config("small"));
  CHECK(small.total == 24144128);
  CHECK(small.active == 19939584);
  ParamCounts def = count_parameters(load_model_config("default"));
  CHECK(def.total == 143636480);
  CHECK(def.active == 68046848);
  ParamCounts large = count_parameters(load_model_config("large"));
  CHECK(large.total > def.total);
}

TEST_CASE("config: the registry holds exactly the counted parameters with checkpoint names", "[config]") {
  ModelConfig c = load_model_config("small");
  Model m(c, Backend::CPU, /*plan_only=*/true);
  int64_t sum = 0;
  for (const auto& p : m.params().infos()) sum += p.numel;
  CHECK(sum == count_parameters(c).total);
  const auto& ps = m.params();
  CHECK(ps.infos().front().name == "tok_emb.weight");
  CHECK(ps.infos()[ps.index("blocks.3.attn.w_dkv.weight")].shape == std::vector<int64_t>{64, 256});
  CHECK(ps.infos()[ps.index("blocks.0.moe.experts.w1.weight")].shape == std::vector<int64_t>{4, 1024, 256});
  CHECK(ps.infos()[ps.index("blocks.0.moe.experts.w2.weight")].shape == std::vector<int64_t>{4, 256, 1024});
  CHECK(ps.infos()[ps.index("blocks.1.moe.shared.w2.bias")].shape == std::vector<int64_t>{1, 256});
  CHECK(ps.contains("final_norm.bias"));
  CHECK_FALSE(ps.contains("lm_head.weight"));  // tied to tok_emb
  CHECK_THROWS_WITH(ps.index("nope"), Catch::Contains("unknown parameter 'nope'"));
  // every parameter starts 256-byte aligned inside each section
  for (const auto& p : ps.infos()) CHECK(p.offset % 64 == 0);
}

TEST_CASE("config: bad keys and values are rejected naming the key", "[config]") {
  ModelConfig c;
  CHECK_THROWS_WITH(c.set("emb_dimm", "3"), Catch::Contains("unknown model config key 'emb_dimm'"));
  CHECK_THROWS_WITH(c.set("n_heads", "2.5"), Catch::Contains("'n_heads' must be an integer"));
  // Out of the field's range: an error, not a value wrapped to a negative int.
  CHECK_THROWS_WITH(c.set("n_heads", "2147483648"), Catch::Contains("'n_heads' must be an integer from -2147483648 to 2147483647"));
  CHECK_THROWS_WITH(c.set("n_heads", "-99999999999"), Catch::Contains("must be an integer from"));
  TrainConfig t;
  CHECK_THROWS_WITH(t.set("seed", "-1"), Catch::Contains("'seed' must be an integer from 0 to"));
  t.set("seed", "18446744073709551615");
  CHECK(t.seed == 18446744073709551615ULL);
  auto invalid = [](auto mutate, const std::string& needle) {
    ModelConfig x;
    mutate(x);
    CHECK_THROWS_WITH(x.validate(), Catch::Contains(needle));
  };
  invalid([](ModelConfig& x) { x.n_heads = 3; }, "'emb_dim' (256) must be divisible by n_heads (3)");
  invalid([](ModelConfig& x) { x.top_k = 5; }, "'top_k' (5) must not exceed num_experts (4)");
  invalid([](ModelConfig& x) { x.kv_latent_dim = 0; }, "'kv_latent_dim' must be positive");
  invalid([](ModelConfig& x) { x.n_layers = 1000000; }, "'n_layers' must be at most 4096, got 1000000");
  invalid([](ModelConfig& x) { x.drop_rate = 1.0f; }, "'drop_rate'");
  invalid([](ModelConfig& x) { x.vocab_size = 70000; }, "'vocab_size'");
  invalid([](ModelConfig& x) { x.attention = "fast"; }, "'attention'");
  CHECK_THROWS_WITH(load_model_config("/nonexistent.json"), Catch::Contains("neither small, default, large"));
  std::string path = "/tmp/dsk_test_bad_config.json";
  std::ofstream(path) << R"({"emb_dim": 128, "colour": 1})";
  CHECK_THROWS_WITH(load_model_config(path), Catch::Contains("unknown model config key 'colour'"));
  std::ofstream(path) << "[]";
  CHECK_THROWS_WITH(load_model_config(path), Catch::EndsWith("must hold a JSON object of model keys, not array"));
  std::ofstream(path) << R"({"emb_dim": 128,)";
  CHECK_THROWS_WITH(load_model_config(path), Catch::Contains("not valid JSON"));
}

TEST_CASE("config: a warmup as long as max_steps is refused (the schedule would never reach lr)", "[config]") {
  TrainConfig t;
  t.max_steps = 2;
  t.warmup_steps = 100;
  CHECK_THROWS_WITH(t.validate(), Catch::Contains("'warmup_steps' must be less than max_steps (2), got 100"));
  t.warmup_steps = 2;
  CHECK_THROWS(t.validate());
  t.warmup_steps = 1;
  CHECK_NOTHROW(t.validate());
  // With epochs the step count depends on the data: the trainer checks it once the data is open.
  t.max_steps = 0;
  t.epochs = 1;
  t.warmup_steps = 100000;
  CHECK_NOTHROW(t.validate());
}

TEST_CASE("config: the expert_math and attention_math training keys take the four names and reject others",
          "[config]") {
  for (const char* key : {"expert_math", "attention_math"}) {
    INFO(key);
    for (const char* name : {"auto", "ffma", "tf32", "3xtf32"}) {
      TrainConfig t;
      t.max_steps = 1;
      t.set(key, name);
      CHECK_NOTHROW(t.validate());
      CHECK(t.to_json()[key] == name);
    }
    TrainConfig t;
    t.max_steps = 1;
    t.set(key, "fp16");
    CHECK_THROWS_WITH(t.validate(), Catch::Contains(std::string("training key '") + key + "' must be") &&
                                        Catch::Contains("fp16"));
  }
  CHECK(cuda::math_named("3xTF32") == std::nullopt);  // names are exact
}

TEST_CASE("config: set() parses JSON values and bare words; to_json round trips", "[config]") {
  ModelConfig c;
  c.set("drop_rate", "0.25");
  c.set("attention", "absorbed");
  c.set("n_layers", "2");
  ModelConfig d;
  d.update_from_json(c.to_json());
  CHECK(d.drop_rate == 0.25f);
  CHECK(d.attention == "absorbed");
  CHECK(d.n_layers == 2);
}

TEST_CASE("memory plan: grows with the batch and training needs more than inference", "[config][plan]") {
  ModelConfig c = load_model_config("small");
  MemoryPlan p1 = plan_memory(c, 1, 128);
  MemoryPlan p8 = plan_memory(c, 8, 128);
  MemoryPlan inf = plan_memory(c, 8, 128, /*training=*/false);
  CHECK(p8.activation_bytes > 7 * p1.activation_bytes);
  CHECK(p8.activation_bytes < 9 * p1.activation_bytes);
  CHECK(inf.activation_bytes < p8.activation_bytes);
  // the logits alone are B*T*V floats and must be inside the plan
  CHECK(inf.activation_bytes > size_t(8) * 128 * 50257 * 4);
  // four fp32 copies (params, grads, m, v), each parameter padded to 64 elements at most
  const size_t exact = size_t(count_parameters(c).total) * 16;
  CHECK(p8.parameter_bytes >= exact);
  CHECK(p8.parameter_bytes < exact + 16 * 64 * 100 * 4);
}

TEST_CASE("memory plan: a real training step uses exactly the planned activation bytes", "[config][plan]") {
  ModelConfig c = load_model_config("small");
  c.vocab_size = 512;
  c.n_layers = 2;
  c.context_length = 32;
  const int B = 3, T = 32;
  MemoryPlan plan = plan_memory(c, B, T);
  Model m(c, Backend::CPU);
  m.init_weights(3);
  Arena arena(Backend::CPU, plan.activation_bytes, "activation");  // throws if a step needs one byte more
  std::vector<int32_t> tok(B * T), tgt(B * T);
  for (int i = 0; i < B * T; ++i) tok[i] = (i * 7) % 512, tgt[i] = (i * 13) % 512;
  Tensor tokens(tok.data(), {B, T}, DType::I32), targets(tgt.data(), {B, T}, DType::I32);
  Tape tape(arena, Backend::CPU);
  tape.training = true;
  ForwardResult r = m.forward(tape, tokens, targets);
  CHECK(arena.peak() == plan.forward_bytes);
  tape.backward(r.loss_terms);
  CHECK(arena.peak() == plan.activation_bytes);
}

TEST_CASE("config: the arithmetic a tile runs: auto follows tf32, and without tensor cores falls back or errors",
          "[config]") {
  using cuda::Math;
  // On a GPU with TF32 tensor cores (compute capability 8.0+).
  CHECK(cuda::effective_math(Math::kAuto, false, true, "attention_math") == Math::kFfma);
  CHECK(cuda::effective_math(Math::kAuto, true, true, "attention_math") == Math::kTf32);
  for (Math m : {Math::kFfma, Math::kTf32, Math::kTf32x3}) {
    CHECK(cuda::effective_math(m, false, true, "expert_math") == m);  // a forced choice wins over tf32
    CHECK(cuda::effective_math(m, true, true, "expert_math") == m);
  }
  // Without them: auto runs FFMA even with tf32 on; a forced tensor-core choice is a one-line error naming the key.
  CHECK(cuda::effective_math(Math::kAuto, true, false, "attention_math") == Math::kFfma);
  CHECK(cuda::effective_math(Math::kFfma, true, false, "attention_math") == Math::kFfma);
  CHECK_THROWS_WITH(cuda::effective_math(Math::kTf32x3, false, false, "attention_math"),
                    Catch::StartsWith("attention_math=3xtf32 needs TF32 tensor cores (compute capability 8.0 or "
                                      "newer); use attention_math=ffma"));
  CHECK_THROWS_WITH(cuda::effective_math(Math::kTf32, false, false, "expert_math"),
                    Catch::StartsWith("expert_math=tf32 needs TF32 tensor cores"));
}
