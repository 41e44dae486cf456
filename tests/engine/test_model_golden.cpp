// The model against the PyTorch reference (scripts/make_reference.py → tests/fixtures/golden_tiny.safetensors):
// logits, loss, aux loss, every parameter gradient, and the parameters after 3 AdamW steps with clipping.
// Both attention forms (explicit and absorbed) must match the same fixture.
#include "engine/model.h"
#include "engine/optimizer.h"
#include "engine/safetensors.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

using namespace dsk;

namespace {

struct Golden {
  SafeTensorsFile f;
  nlohmann::json tol;
  ModelConfig config;
  Golden() {
    f = read_safetensors(std::string(DSK_TEST_DIR) + "/fixtures/golden_tiny.safetensors");
    tol = nlohmann::json::parse(f.metadata.at("tolerances"));
    config.update_from_json(nlohmann::json::parse(f.metadata.at("config")));
  }
  std::vector<float> floats(const std::string& name) const { return as_floats(f.tensors.at(name)); }
};

// max |a - b| within the fixture's tolerance for `name` (10× the reference's own fp32-vs-fp64 error), or a
// relative floor of 5e-6 of the tensor's magnitude: our BLAS sums in another order than PyTorch's.
void check_close(const std::string& name, const float* a, const std::vector<float>& b, const nlohmann::json& tol) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::abs(static_cast<double>(b[i])));
  }
  const double allowed = std::max(tol.at(name).get<double>(), 5e-6 * ref);
  INFO(name << ": max |diff| " << diff << " allowed " << allowed << " (max |ref| " << ref << ")");
  CHECK(diff <= allowed);
}

void load_params(Model& m, const Golden& g) {
  for (const ParamInfo& p : m.params().infos()) {
    std::vector<float> v = g.floats("param." + p.name);
    REQUIRE(static_cast<int64_t>(v.size()) == p.numel);
    std::memcpy(m.params().value(m.params().index(p.name)).f32(), v.data(), v.size() * sizeof(float));
  }
}

}  // namespace

TEST_CASE("golden: the model matches the PyTorch reference (forward, gradients, 3 AdamW steps)", "[golden][model]") {
  Golden g;
  const std::string attention = GENERATE(as<std::string>{}, "explicit", "absorbed");
  INFO("attention = " << attention);
  ModelConfig c = g.config;
  c.attention = attention;
  Model m(c, Backend::CPU);
  load_params(m, g);
  // param., grad., step3. per parameter + tokens, logits, loss, aux_loss, losses, grad_norms
  REQUIRE(m.params().infos().size() * 3 + 6 == g.f.tensors.size());

  // tokens (B, T+1) -> inputs, targets (B, T)
  std::vector<int32_t> tok = as_int32s(g.f.tensors.at("tokens"));
  const int B = 2, T = 16;
  std::vector<int32_t> inputs(B * T), targets(B * T);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      inputs[b * T + t] = tok[b * (T + 1) + t];
      targets[b * T + t] = tok[b * (T + 1) + t + 1];
    }
  Tensor in_t(inputs.data(), {B, T}, DType::I32), tg_t(targets.data(), {B, T}, DType::I32);
  Arena arena(Backend::CPU, 64 << 20, "activation");

  SECTION("inference forward: logits") {
    Tape tape(arena, Backend::CPU);
    tape.record = false;
    ForwardResult r = m.forward(tape, in_t, Tensor{});
    check_close("logits", r.logits->value.f32(), g.floats("logits"), g.tol);
  }

  SECTION("training: loss, aux, gradients, then AdamW") {
    TrainConfig tc;
    tc.lr = 0.01f;
    tc.beta1 = 0.9f;
    tc.beta2 = 0.95f;
    tc.eps = 1e-8f;
    tc.weight_decay = 0.1f;
    tc.decay_all = true;
    tc.grad_clip = std::stof(g.f.metadata.at("max_norm"));
    tc.max_steps = 3;
    AdamW opt(m.params(), tc);
    std::vector<float> losses = g.floats("losses"), norms = g.floats("grad_norms");
    for (int step = 1; step <= 3; ++step) {
      arena.reset();
      Tape tape(arena, Backend::CPU);
      m.params().zero_grad();
      ForwardResult r = m.forward(tape, in_t, tg_t);
      const float total = r.loss->value.f32()[0] + r.aux->value.f32()[0];
      check_close("losses", &total, {losses[step - 1]}, g.tol);
      if (step == 1) {
        check_close("loss", r.loss->value.f32(), g.floats("loss"), g.tol);
        check_close("aux_loss", r.aux->value.f32(), g.floats("aux_loss"), g.tol);
      }
      tape.backward(r.loss_terms);
      if (step == 1) {
        for (const ParamInfo& p : m.params().infos())
          check_close("grad." + p.name, m.params().grad(m.params().index(p.name)).f32(), g.floats("grad." + p.name),
                      g.tol);
      }
      const float norm = opt.step(step, tc.lr);
      check_close("grad_norms", &norm, {norms[step - 1]}, g.tol);
    }
    for (const ParamInfo& p : m.params().infos())
      check_close("step3." + p.name, m.params().value(m.params().index(p.name)).f32(), g.floats("step3." + p.name),
                  g.tol);
  }
}
