// [cuda] token + position embedding vs the CPU specification. Backward with many repeated tokens must
// accumulate, match the CPU, and be bit-identical from run to run (no order-dependent float atomics).
#ifdef DSK_HAVE_CUDA
#include "kernels/embedding.h"

#include "tests/cuda/cuda_testing.h"

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("cuda embedding_forward vs CPU, with and without positions", "[cuda][embedding]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(21);
  const int Bsz = 3, T = 17, d = 70, V = 11, ctx = 24;
  auto wte = randn(size_t(V) * d, rng), wpe = randn(size_t(ctx) * d, rng);
  auto tokens = randint(size_t(Bsz) * T, 0, V, rng), positions = randint(size_t(Bsz) * T, 0, ctx, rng);
  DeviceBuffer<float> d_wte(wte), d_wpe(wpe), d_out(size_t(Bsz) * T * d);
  DeviceBuffer<int32_t> d_tok(tokens), d_pos(positions);
  for (bool with_pos : {false, true}) {
    INFO("positions given: " << with_pos);
    std::vector<float> out(size_t(Bsz) * T * d);
    embedding_forward<Backend::CPU>(out.data(), tokens.data(), with_pos ? positions.data() : nullptr, wte.data(),
                                    wpe.data(), Bsz, T, d);
    d_out.poison();
    embedding_forward<Backend::CUDA>(d_out.ptr, d_tok.ptr, with_pos ? d_pos.ptr : nullptr, d_wte.ptr, d_wpe.ptr, Bsz,
                                     T, d);
    auto got = d_out.download();
    REQUIRE(count_unwritten(got) == 0);
    REQUIRE(bits_equal(got, out));  // one addition per element: exactly the CPU's
  }
}

TEST_CASE("cuda embedding_backward vs CPU, accumulating and deterministic", "[cuda][embedding]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(22);
  // V = 7 with 4 x 100 tokens: every token repeats ~57 times. d = 150: more than one block of columns.
  const int Bsz = 4, T = 100, d = 150, V = 7, ctx = 128;
  auto dout = randn(size_t(Bsz) * T * d, rng);
  auto tokens = randint(size_t(Bsz) * T, 0, V, rng), positions = randint(size_t(Bsz) * T, 0, ctx, rng);
  auto dwte0 = randn(size_t(V) * d, rng), dwpe0 = randn(size_t(ctx) * d, rng);
  DeviceBuffer<float> d_dout(dout), d_dwte(dwte0), d_dwpe(dwpe0);
  DeviceBuffer<int32_t> d_tok(tokens), d_pos(positions);
  for (bool with_pos : {false, true}) {
    INFO("positions given: " << with_pos);
    auto dwte = dwte0, dwpe = dwpe0;
    embedding_backward<Backend::CPU>(dwte.data(), dwpe.data(), dout.data(), tokens.data(),
                                     with_pos ? positions.data() : nullptr, Bsz, T, d, V);
    std::vector<float> first_wte, first_wpe;
    for (int run = 0; run < 2; ++run) {
      INFO("run " << run);
      d_dwte.upload(dwte0);
      d_dwpe.upload(dwpe0);
      embedding_backward<Backend::CUDA>(d_dwte.ptr, d_dwpe.ptr, d_dout.ptr, d_tok.ptr, with_pos ? d_pos.ptr : nullptr,
                                        Bsz, T, d, V);
      auto gwte = d_dwte.download(), gwpe = d_dwpe.download();
      require_close(gwte, dwte, 1e-5, "dwte");
      require_close(gwpe, dwpe, 1e-5, "dwpe");
      // The GPU adds each row's contributions in (b, t) order starting from the old value, as the CPU does.
      CHECK(bits_equal(gwte, dwte));
      CHECK(bits_equal(gwpe, dwpe));
      if (run == 0) {
        first_wte = gwte;
        first_wpe = gwpe;
      } else {
        REQUIRE(bits_equal(gwte, first_wte));
        REQUIRE(bits_equal(gwpe, first_wpe));
      }
    }
  }
  // Only one of the two tables.
  auto dwte = dwte0;
  embedding_backward<Backend::CPU>(dwte.data(), nullptr, dout.data(), tokens.data(), nullptr, Bsz, T, d, V);
  d_dwte.upload(dwte0);
  embedding_backward<Backend::CUDA>(d_dwte.ptr, nullptr, d_dout.ptr, d_tok.ptr, nullptr, Bsz, T, d, V);
  require_close(d_dwte.download(), dwte, 1e-5, "dwte alone");
}
#endif  // DSK_HAVE_CUDA
