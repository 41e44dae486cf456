// CPU gemm vs a naive triple loop; linear forward/backward vs finite differences and accumulate semantics.
#include "kernels/matmul.h"

#include "tests/testing.h"

#include <cmath>
#include <limits>

using namespace dsk;
using namespace dsk::testing;

namespace {

// C_b = alpha op(A_b) op(B_b) + beta C_b in double, straight from the definition (reads C only when beta != 0).
void gemm_reference(bool ta, bool tb, int M, int N, int K, float alpha, const std::vector<float>& A, int lda,
                    long long sa, const std::vector<float>& B, int ldb, long long sb, float beta, std::vector<float>& C,
                    int ldc, long long sc, int batch) {
  for (int b = 0; b < batch; ++b)
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        double s = 0;
        for (int k = 0; k < K; ++k) {
          double a = ta ? A[b * sa + k * lda + i] : A[b * sa + i * lda + k];
          double bb = tb ? B[b * sb + j * ldb + k] : B[b * sb + k * ldb + j];
          s += a * bb;
        }
        float& c = C[b * sc + i * ldc + j];
        c = static_cast<float>(alpha * s + (beta == 0.0f ? 0.0 : beta * static_cast<double>(c)));
      }
}

}  // namespace

TEST_CASE("gemm: all transpose combinations, batched, padded strides, vs a naive loop", "[kernels][matmul]") {
  std::mt19937_64 rng(test_seed());
  const int M = 5, N = 7, K = 6, batch = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        INFO("trans_a " << ta << " trans_b " << tb << " beta " << beta << " seed " << test_seed());
        // Leading dimensions padded by 2 and batch strides padded by 3 so that strides are really honoured.
        const int lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 2, ldc = N + 2;
        const long long sa = (ta ? K : M) * lda + 3, sb = (tb ? N : K) * ldb + 3, sc = M * ldc + 3;
        auto A = randn(sa * batch, rng), B = randn(sb * batch, rng), C = randn(sc * batch, rng);
        auto expect = C;
        if (beta == 0.0f)  // beta = 0 must not read C: poison it, the reference ignores it
          for (int b = 0; b < batch; ++b)
            for (int i = 0; i < M; ++i)
              for (int j = 0; j < N; ++j) C[b * sc + i * ldc + j] = std::numeric_limits<float>::quiet_NaN();
        const float alpha = 0.75f;
        gemm<Backend::CPU>(ta, tb, M, N, K, alpha, A.data(), lda, sa, B.data(), ldb, sb, beta, C.data(), ldc, sc,
                           batch);
        gemm_reference(ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, expect, ldc, sc, batch);
        for (size_t i = 0; i < C.size(); ++i) REQUIRE(!std::isnan(C[i]));
        // Padding between rows and batches is untouched: compared too, since expect carries the original there.
        CHECK(rel_err(C, expect) < 1e-5);
      }
}

TEST_CASE("gemm: shapes large enough to be split over threads, every split direction", "[kernels][matmul]") {
  std::mt19937_64 rng(test_seed());
  // Above the 1 MFLOP threshold: tall (split by rows) and wide (split by columns), batch 1 and batch 3 (not a
  // multiple of 2 threads: each GEMM split), in every transpose combination.
  for (auto [M, N] : {std::pair{97, 40}, std::pair{33, 130}})
    for (int batch : {1, 3})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          const int K = 150;
          INFO("M " << M << " N " << N << " batch " << batch << " ta " << ta << " tb " << tb << " seed " << test_seed());
          const int lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
          const long long sa = static_cast<long long>(M) * K, sb = static_cast<long long>(K) * N, sc = M * N;
          auto A = randn(sa * batch, rng), B = randn(sb * batch, rng), C = randn(sc * batch, rng);
          auto expect = C;
          gemm<Backend::CPU>(ta, tb, M, N, K, 1.0f, A.data(), lda, sa, B.data(), ldb, sb, 1.0f, C.data(), ldc, sc,
                             batch);
          gemm_reference(ta, tb, M, N, K, 1.0f, A, lda, sa, B, ldb, sb, 1.0f, expect, ldc, sc, batch);
          CHECK(rel_err(C, expect) < 1e-5);
        }
}

TEST_CASE("gemm: K = 0 gives beta * C, and bad shapes are errors", "[kernels][matmul]") {
  std::vector<float> A(1), B(1), C(6, std::numeric_limits<float>::quiet_NaN());
  gemm<Backend::CPU>(false, false, 2, 3, 0, 1.0f, A.data(), 1, 0, B.data(), 3, 0, 0.0f, C.data(), 3, 0);
  for (float c : C) CHECK(c == 0.0f);
  std::vector<float> D{1, 2, 3, 4, 5, 6};
  gemm<Backend::CPU>(false, false, 2, 3, 0, 1.0f, A.data(), 1, 0, B.data(), 3, 0, 2.0f, D.data(), 3, 0);
  CHECK(D == std::vector<float>{2, 4, 6, 8, 10, 12});
  CHECK_THROWS_AS(gemm<Backend::CPU>(false, false, 0, 3, 1, 1.0f, A.data(), 1, 0, B.data(), 3, 0, 0.0f, C.data(), 3, 0),
                  Error);
  CHECK_THROWS_AS(gemm<Backend::CPU>(false, false, 2, 3, 4, 1.0f, A.data(), 3, 0, B.data(), 3, 0, 0.0f, C.data(), 3, 0),
                  Error);
}

TEST_CASE("linear: forward matches the definition", "[kernels][matmul]") {
  std::mt19937_64 rng(test_seed());
  const int N = 4, in = 5, out = 3;
  auto x = randn(N * in, rng), w = randn(out * in, rng), b = randn(out, rng);
  std::vector<float> y(N * out, std::numeric_limits<float>::quiet_NaN()), y_nob(N * out, -7.0f);
  linear_forward<Backend::CPU>(y.data(), x.data(), w.data(), b.data(), N, in, out);
  linear_forward<Backend::CPU>(y_nob.data(), x.data(), w.data(), nullptr, N, in, out);
  std::vector<float> expect(N * out), expect_nob(N * out);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < out; ++o) {
      double s = 0;
      for (int i = 0; i < in; ++i) s += static_cast<double>(x[n * in + i]) * w[o * in + i];
      expect_nob[n * out + o] = static_cast<float>(s);
      expect[n * out + o] = static_cast<float>(s + b[o]);
    }
  CHECK(rel_err(y, expect) < 1e-5);
  CHECK(rel_err(y_nob, expect_nob) < 1e-5);
}

TEST_CASE("linear: backward dx, dw, db vs finite differences; dw and db accumulate", "[kernels][matmul]") {
  std::mt19937_64 rng(test_seed());
  const int N = 6, in = 5, out = 4;
  auto x = randn(N * in, rng), w = randn(out * in, rng), b = randn(out, rng), dy = randn(N * out, rng);
  std::vector<float> y(N * out);
  auto loss = [&] {
    linear_forward<Backend::CPU>(y.data(), x.data(), w.data(), b.data(), N, in, out);
    return dot(dy, y);
  };
  std::vector<float> dx(N * in, std::numeric_limits<float>::quiet_NaN()), dw(out * in, 0.0f), db(out, 0.0f);
  linear_backward<Backend::CPU>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
  check_gradient(loss, x, dx);
  check_gradient(loss, w, dw);
  check_gradient(loss, b, db);

  // A second call sets dx again and adds to dw, db.
  auto dx1 = dx, dw1 = dw, db1 = db;
  linear_backward<Backend::CPU>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
  CHECK(dx == dx1);
  for (auto& g : dw1) g *= 2;
  for (auto& g : db1) g *= 2;
  CHECK(rel_err(dw, dw1) < 1e-6);
  CHECK(rel_err(db, db1) < 1e-6);

  // dx and db may be skipped.
  std::vector<float> dw_only(out * in, 0.0f);
  linear_backward<Backend::CPU>(nullptr, dw_only.data(), nullptr, dy.data(), x.data(), w.data(), N, in, out);
  for (auto& g : dw1) g *= 0.5f;
  CHECK(rel_err(dw_only, dw1) < 1e-6);
}
