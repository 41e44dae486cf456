// CPU token + position embedding: forward vs the definition, backward vs finite differences with repeated tokens.
#include "kernels/embedding.h"

#include "tests/testing.h"

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("embedding: forward gathers token and position rows", "[kernels][embedding]") {
  std::mt19937_64 rng(test_seed());
  const int Bsz = 2, T = 3, d = 4, V = 5, ctx = 6;
  auto wte = randn(V * d, rng), wpe = randn(ctx * d, rng);
  std::vector<int32_t> tokens{4, 0, 4, 1, 2, 3}, positions{5, 0, 2, 1, 1, 3};
  std::vector<float> out(Bsz * T * d), out_pos(Bsz * T * d);
  embedding_forward<Backend::CPU>(out.data(), tokens.data(), nullptr, wte.data(), wpe.data(), Bsz, T, d);
  embedding_forward<Backend::CPU>(out_pos.data(), tokens.data(), positions.data(), wte.data(), wpe.data(), Bsz, T, d);
  for (int b = 0; b < Bsz; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < d; ++c) {
        const int i = b * T + t;
        CHECK(out[i * d + c] == wte[tokens[i] * d + c] + wpe[t * d + c]);
        CHECK(out_pos[i * d + c] == wte[tokens[i] * d + c] + wpe[positions[i] * d + c]);
      }
  std::vector<int32_t> bad{0, -1, 0, 0, 0, 0};
  CHECK_THROWS_AS(
      embedding_forward<Backend::CPU>(out.data(), bad.data(), nullptr, wte.data(), wpe.data(), Bsz, T, d), Error);
}

TEST_CASE("embedding: backward dwte, dwpe vs finite differences, repeated tokens, accumulate", "[kernels][embedding]") {
  std::mt19937_64 rng(test_seed());
  const int Bsz = 3, T = 4, d = 40, V = 5, ctx = 6;  // d > 32: several column blocks
  auto wte = randn(V * d, rng), wpe = randn(ctx * d, rng);
  // Token 2 appears four times, 4 never; positions given explicitly with repeats too.
  std::vector<int32_t> tokens{2, 0, 2, 1, 3, 2, 0, 1, 2, 3, 0, 1};
  std::vector<int32_t> positions{0, 1, 2, 3, 0, 1, 2, 3, 5, 5, 5, 0};
  for (const int32_t* pos : {static_cast<const int32_t*>(nullptr), static_cast<const int32_t*>(positions.data())}) {
    INFO("explicit positions " << (pos != nullptr));
    auto dout = randn(Bsz * T * d, rng);
    std::vector<float> out(Bsz * T * d);
    auto loss = [&] {
      embedding_forward<Backend::CPU>(out.data(), tokens.data(), pos, wte.data(), wpe.data(), Bsz, T, d);
      return dot(dout, out);
    };
    std::vector<float> dwte(V * d, 0.0f), dwpe(ctx * d, 0.0f);
    embedding_backward<Backend::CPU>(dwte.data(), dwpe.data(), dout.data(), tokens.data(), pos, Bsz, T, d, V);
    check_gradient(loss, wte, dwte, 1e-2, 2e-2, 2e-3, 1000);
    check_gradient(loss, wpe, dwpe, 1e-2, 2e-2, 2e-3, 1000);
    for (int c = 0; c < d; ++c) CHECK(dwte[4 * d + c] == 0.0f);  // unused token: no gradient

    auto dwte2 = dwte, dwpe2 = dwpe;
    for (auto& g : dwte2) g *= 2;
    for (auto& g : dwpe2) g *= 2;
    embedding_backward<Backend::CPU>(dwte.data(), dwpe.data(), dout.data(), tokens.data(), pos, Bsz, T, d, V);
    CHECK(rel_err(dwte, dwte2) < 1e-6);
    CHECK(rel_err(dwpe, dwpe2) < 1e-6);
  }
  std::vector<float> dwte(V * d), dwpe(ctx * d), dout(Bsz * T * d);
  auto bad = tokens;
  bad[7] = V;
  CHECK_THROWS_AS(
      embedding_backward<Backend::CPU>(dwte.data(), dwpe.data(), dout.data(), bad.data(), nullptr, Bsz, T, d, V),
      Error);
}
