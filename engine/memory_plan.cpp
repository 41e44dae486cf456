#include "engine/memory_plan.h"

#include "engine/model.h"

namespace dsk {

MemoryPlan plan_memory(const ModelConfig& config, int batch, int seq_len, bool training) {
  Model model(config, Backend::CPU, /*plan_only=*/true);
  Arena arena = Arena::counting("activation");
  Tape tape(arena, Backend::CPU);
  tape.training = training;
  tape.record = training;
  // The batch itself lives outside the activation arena (the trainer's input buffers): fake, never-read addresses.
  void* fake = reinterpret_cast<void*>(Arena::kAlign);
  Tensor tokens(fake, {batch, seq_len}, DType::I32), targets(fake, {batch, seq_len}, DType::I32);
  // Inference is planned with the loss (evaluation); generation without it needs slightly less.
  ForwardResult r = model.forward(tape, tokens, targets);
  MemoryPlan plan;
  plan.parameter_bytes = model.params().bytes();
  plan.forward_bytes = arena.peak();
  if (training) tape.backward(r.loss_terms);
  plan.activation_bytes = arena.peak();
  return plan;
}

}  // namespace dsk
