// [cuda] gemm and linear vs the CPU specification: every transpose combination, batches, padded strides,
// beta = 0 on poisoned C, accumulation, the cuBLASLt bias epilogue and its fallback, TF32 off and on.
#ifdef DSK_HAVE_CUDA
#include "kernels/matmul.h"

#include "tests/cuda/cuda_testing.h"

#include <tuple>

using namespace dsk;
using namespace dsk::testing;

TEST_CASE("cuda gemm: transposes, batches, padded strides, beta 0 / 1 / 0.5 vs CPU", "[cuda][matmul]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(1);
  const int M = 37, N = 45, K = 29, batch = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        INFO("trans_a " << ta << " trans_b " << tb << " beta " << beta);
        const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
        const long long sa = (ta ? K : M) * lda + 5, sb = (tb ? N : K) * ldb + 7, sc = M * ldc + 1;
        auto A = randn(sa * batch, rng), B = randn(sb * batch, rng), C = randn(sc * batch, rng);
        DeviceBuffer<float> dA(A), dB(B), dC(C);
        if (beta == 0.0f) dC.poison();  // beta = 0 must not read C, and must write every element of it
        auto expect = C;
        gemm<Backend::CPU>(ta, tb, M, N, K, 0.75f, A.data(), lda, sa, B.data(), ldb, sb, beta, expect.data(), ldc,
                           sc, batch);
        gemm<Backend::CUDA>(ta, tb, M, N, K, 0.75f, dA.ptr, lda, sa, dB.ptr, ldb, sb, beta, dC.ptr, ldc, sc, batch);
        auto got = dC.download();
        // Compare only the matrices (padding stays poisoned on the GPU when beta = 0).
        std::vector<float> g, e;
        for (int b = 0; b < batch; ++b)
          for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
              g.push_back(got[b * sc + i * ldc + j]);
              e.push_back(expect[b * sc + i * ldc + j]);
            }
        require_close(g, e, 1e-5, "C");
      }
}

TEST_CASE("cuda gemm: K = 0 scales C by beta", "[cuda][matmul]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(2);
  const int M = 4, N = 9;
  auto C = randn(M * N, rng);
  DeviceBuffer<float> dA(1), dB(1), dC(C);
  gemm<Backend::CUDA>(false, false, M, N, 0, 1.0f, dA.ptr, 1, 0, dB.ptr, N, 0, 0.5f, dC.ptr, N, 0, 1);
  auto got = dC.download();
  for (int i = 0; i < M * N; ++i) REQUIRE(got[i] == 0.5f * C[i]);
  dC.poison();
  gemm<Backend::CUDA>(false, false, M, N, 0, 1.0f, dA.ptr, 1, 0, dB.ptr, N, 0, 0.0f, dC.ptr, N, 0, 1);
  got = dC.download();
  for (int i = 0; i < M * N; ++i) REQUIRE(got[i] == 0.0f);
}

// TF32 tensor cores read only the top 10 mantissa bits of each fp32 input (truncation, not rounding: PyTorch's
// numerical-accuracy notes), so every product is biased towards zero by ~2^-11 per operand. Simulated on the host
// for this shape (K = 256, N(0,1) data) truncation gives a max relative error of 7-8e-4 and round-to-nearest
// 3e-4: a 1e-3 threshold would fail now and then for no fault. A wrong GEMM is off by O(1), so 3e-3 still
// catches every real error.

TEST_CASE("cuda gemm: TF32 on stays within 3e-3 of the CPU", "[cuda][matmul]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(3);
  const int M = 128, N = 96, K = 256;
  auto A = randn(M * K, rng), B = randn(K * N, rng);
  DeviceBuffer<float> dA(A), dB(B), dC(M * N);
  dC.poison();
  std::vector<float> expect(M * N);
  gemm<Backend::CPU>(false, false, M, N, K, 1.0f, A.data(), K, 0, B.data(), N, 0, 0.0f, expect.data(), N, 0);
  {
    cuda::ScopedTf32 tf32(true);
    REQUIRE(cuda::tf32_enabled());
    gemm<Backend::CUDA>(false, false, M, N, K, 1.0f, dA.ptr, K, 0, dB.ptr, N, 0, 0.0f, dC.ptr, N, 0);
  }
  REQUIRE(!cuda::tf32_enabled());
  require_close(dC.download(), expect, kTf32Tol, "C (TF32)");

  // The linear layer's cuBLASLt path (bias epilogue) with TF32: y (M, N) = A (M, K) · wᵀ + b, w (N, K).
  auto w = randn(size_t(N) * K, rng), b = randn(N, rng);
  DeviceBuffer<float> dw(w), db(b), dy(size_t(M) * N);
  std::vector<float> y(size_t(M) * N);
  linear_forward<Backend::CPU>(y.data(), A.data(), w.data(), b.data(), M, K, N);
  dy.poison();
  {
    cuda::ScopedTf32 tf32(true);
    linear_forward<Backend::CUDA>(dy.ptr, dA.ptr, dw.ptr, db.ptr, M, K, N);
  }
  require_close(dy.download(), y, kTf32Tol, "y (TF32)");
}

TEST_CASE("cuda linear_forward: bias epilogue, misaligned bias fallback, no bias", "[cuda][matmul]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(4);
  for (auto [N, in, out] : {std::tuple{37, 29, 45}, std::tuple{64, 128, 96}}) {
    INFO("N " << N << " in " << in << " out " << out);
    auto x = randn(size_t(N) * in, rng), w = randn(size_t(out) * in, rng), b = randn(out + 4, rng);
    DeviceBuffer<float> dx(x), dw(w), db(b), dy(size_t(N) * out);
    std::vector<float> expect(size_t(N) * out);
    // Bias at offset 0 (256-byte aligned) and 4 (16-byte aligned): the cuBLASLt epilogue; offset 1 (4-byte
    // aligned): GEMM + bias kernel; offset -1: no bias.
    for (int offset : {0, 4, 1, -1}) {
      INFO("bias offset " << offset);
      const float* bias_h = offset < 0 ? nullptr : b.data() + offset;
      const float* bias_d = offset < 0 ? nullptr : db.ptr + offset;
      linear_forward<Backend::CPU>(expect.data(), x.data(), w.data(), bias_h, N, in, out);
      dy.poison();
      linear_forward<Backend::CUDA>(dy.ptr, dx.ptr, dw.ptr, bias_d, N, in, out);
      require_close(dy.download(), expect, 1e-5, "y");
    }
  }
}

TEST_CASE("cuda linear_backward: dx set, dw and db accumulate", "[cuda][matmul]") {
  if (!dsk::testing::gpu_available()) return;
  auto rng = test_rng(5);
  const int N = 300, in = 29, out = 45;  // N > 256 rows: the column sum for db uses several chunks
  auto x = randn(size_t(N) * in, rng), w = randn(size_t(out) * in, rng), dy = randn(size_t(N) * out, rng);
  auto dw0 = randn(size_t(out) * in, rng), db0 = randn(out, rng);  // earlier accumulated gradients
  DeviceBuffer<float> d_x(x), d_w(w), d_dy(dy), d_dx(size_t(N) * in), d_dw(dw0), d_db(db0);
  d_dx.poison();
  std::vector<float> dx(size_t(N) * in), dw = dw0, db = db0;
  linear_backward<Backend::CPU>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
  linear_backward<Backend::CUDA>(d_dx.ptr, d_dw.ptr, d_db.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, N, in, out);
  require_close(d_dx.download(), dx, 1e-5, "dx");
  require_close(d_dw.download(), dw, 1e-5, "dw");
  require_close(d_db.download(), db, 1e-5, "db");

  // dx = nullptr skips it; a second call accumulates again.
  linear_backward<Backend::CPU>(nullptr, dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
  linear_backward<Backend::CUDA>(nullptr, d_dw.ptr, d_db.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, N, in, out);
  require_close(d_dw.download(), dw, 1e-5, "dw after two calls");
  require_close(d_db.download(), db, 1e-5, "db after two calls");
}
#endif  // DSK_HAVE_CUDA
