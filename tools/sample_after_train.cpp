#include "tools/sample_after_train.h"

#include "engine/checkpoint.h"
#include "engine/inference.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "kernels/device.h"
#include "tools/cli.h"

#include <cstdio>

namespace dsk::cli {

// A few lines from the best checkpoint with dsk sample's defaults (start from <|endoftext|>, its sampling and seed,
// absorbed decoding, fp32 arithmetic), so the command in the header prints the same text on the same device.
void print_sample_after_training(const std::string& checkpoint, Backend device, int max_new_tokens) {
  // The training's CUDA arithmetic (tf32, expert_math, attention_math) is still set; dsk sample starts from the
  // defaults, so the sample does too.
  cuda::ScopedTf32 fp32(false);
  cuda::ScopedExpertMath expert_math(cuda::Math::kAuto);
  cuda::ScopedAttentionMath attention_math(cuda::Math::kAuto);
  auto model = load_model(checkpoint, device);
  if (model->config().vocab_size != Tokenizer::gpt2().vocab_size()) return;  // not a GPT-2 vocabulary: no text
  InferenceSession session(*model, DecodeMode::Absorbed, 1);
  GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  const Tokenizer& tok = Tokenizer::gpt2();
  std::fprintf(stderr, "--- sample (dsk sample --model %s --max-new-tokens %d --device %s) ---\n",
               shell_quote(checkpoint).c_str(), max_new_tokens, backend_name(device));
  generate(session, {{Tokenizer::kEndOfText}}, o, [&](int32_t id) { return tok.token_bytes(id); },
           [](int, const std::string& piece) {
             std::fwrite(piece.data(), 1, piece.size(), stdout);  // (a piece may hold a NUL byte)
             std::fflush(stdout);
           });
  std::fputs("\n", stdout);
}

}  // namespace dsk::cli
