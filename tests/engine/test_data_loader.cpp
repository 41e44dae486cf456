// Token shards and the batch loader: header round trip, corruption, windows, determinism, resume, stride, eval.
#include "engine/data.h"
#include "kernels/common.h"

#include <algorithm>
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / fmt::format("dsk_test_{}_{}", getpid(), name)).string();
}

// Tokens 0..n-1 (mod vocab) so a token's value tells its position.
std::vector<uint16_t> ramp(size_t n, int vocab = 50257) {
  std::vector<uint16_t> t(n);
  for (size_t k = 0; k < n; ++k) t[k] = static_cast<uint16_t>(k % vocab);
  return t;
}

void patch_bytes(const std::string& path, size_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(offset);
  f.write(bytes.data(), bytes.size());
}

}  // namespace

TEST_CASE("shard: header round trip", "[data]") {
  std::string p = temp_path("rt.bin");
  auto toks = ramp(1000);
  dsk::write_token_shard(p, toks, 50257);
  CHECK(fs::file_size(p) == 64 + 2 * 1000);
  dsk::TokenShard s(p);
  CHECK(s.size() == 1000);
  CHECK(s.vocab_size() == 50257);
  CHECK(s.path() == p);
  CHECK(std::equal(toks.begin(), toks.end(), s.tokens()));
  dsk::TokenShard moved(std::move(s));
  CHECK(moved.size() == 1000);
  CHECK(moved.tokens()[999] == 999);
  fs::remove(p);
}

TEST_CASE("shard: corruption is detected and names the file", "[data]") {
  std::string p = temp_path("bad.bin");
  auto fresh = [&] { dsk::write_token_shard(p, ramp(100), 50257); };

  fresh();
  patch_bytes(p, 0, "NOTTOKNS");
  CHECK_THROWS_WITH(dsk::TokenShard(p), Catch::Contains(p) && Catch::Contains("bad magic"));

  fresh();
  patch_bytes(p, 8, std::string("\x02\x00\x00\x00", 4));  // version 2
  CHECK_THROWS_WITH(dsk::TokenShard(p), Catch::Contains("version 2"));

  fresh();
  patch_bytes(p, 12, std::string("\x07\x00\x00\x00", 4));  // dtype 7
  CHECK_THROWS_WITH(dsk::TokenShard(p), Catch::Contains("dtype 7"));

  fresh();
  fs::resize_file(p, 64 + 2 * 100 - 2);  // truncated by one token
  CHECK_THROWS_WITH(dsk::TokenShard(p), Catch::Contains(p) && Catch::Contains("truncated"));

  fs::resize_file(p, 10);  // not even a header
  CHECK_THROWS_WITH(dsk::TokenShard(p), Catch::Contains("truncated"));

  dsk::write_token_shard(p, ramp(100, 65535), 50);  // tokens >= vocab size
  CHECK_THROWS_WITH(dsk::TokenShard(p), Catch::Contains("token 50 at index 50"));

  fs::remove(p);
  CHECK_THROWS_WITH(dsk::TokenShard(p), Catch::Contains(p));
}

TEST_CASE("loader: random windows stay in bounds and targets shift by one", "[data]") {
  std::string p = temp_path("win.bin");
  const int N = 500, T = 16, B = 8;
  dsk::write_token_shard(p, ramp(N), 50257);
  dsk::TokenShard s(p);
  dsk::DataLoader dl(s, B, T, 42);
  CHECK(dl.windows_per_epoch() == N - T);
  std::vector<int32_t> x(B * T), y(B * T);
  std::set<int32_t> starts;
  for (int it = 0; it < 200; ++it) {
    dl.next_batch(x.data(), y.data());
    for (int b = 0; b < B; ++b) {
      int32_t s0 = x[b * T];
      starts.insert(s0);
      REQUIRE(s0 >= 0);
      REQUIRE(s0 + T + 1 <= N);  // the last target is inside the shard
      for (int t = 0; t < T; ++t) {
        REQUIRE(x[b * T + t] == s0 + t);
        REQUIRE(y[b * T + t] == s0 + t + 1);
      }
    }
  }
  CHECK(starts.count(0) == 1);          // 1600 draws over 484 starts reach both ends
  CHECK(starts.count(N - T - 1) == 1);
  CHECK(dl.epoch() == Approx(200.0 * B / (N - T)));
  // Too short a shard.
  CHECK_THROWS_WITH(dsk::DataLoader(s, 1, N, 1), Catch::Contains("too few"));
  fs::remove(p);
}

TEST_CASE("loader: same seed, same batches; other seed, other batches; restore resumes", "[data]") {
  std::string p = temp_path("det.bin");
  const int T = 8, B = 4;
  dsk::write_token_shard(p, ramp(10000), 50257);
  dsk::TokenShard s(p);
  auto run = [&](dsk::DataLoader& dl, int steps) {
    std::vector<int32_t> all, x(B * T), y(B * T);
    for (int i = 0; i < steps; ++i) {
      dl.next_batch(x.data(), y.data());
      all.insert(all.end(), x.begin(), x.end());
    }
    return all;
  };
  dsk::DataLoader a(s, B, T, 7), b(s, B, T, 7), c(s, B, T, 8);
  auto ra = run(a, 10);
  CHECK(ra == run(b, 10));
  CHECK(ra != run(c, 10));

  // Stop after 4 steps, save the state, resume in a fresh loader: steps 5..10 are the same.
  dsk::DataLoader first(s, B, T, 7);
  run(first, 4);
  dsk::LoaderState st = first.state();
  CHECK(st.seed == 7);
  CHECK(st.cursor == 4u * B);
  dsk::DataLoader resumed(s, B, T, 999);
  resumed.restore(st);
  auto tail = run(resumed, 6);
  CHECK(std::equal(tail.begin(), tail.end(), ra.begin() + 4 * B * T));
  fs::remove(p);
}

TEST_CASE("loader: stride mode visits every start in order and wraps", "[data]") {
  std::string p = temp_path("stride.bin");
  const int N = 50, T = 10;
  dsk::write_token_shard(p, ramp(N), 50257);
  dsk::TokenShard s(p);
  dsk::DataLoader dl(s, 1, T, 0, 10);  // starts 0, 10, 20, 30 (30 + 10 + 1 <= 50); 40 would need token 50
  CHECK(dl.windows_per_epoch() == 4);
  std::vector<int32_t> x(T), y(T), seen;
  for (int i = 0; i < 6; ++i) {
    dl.next_batch(x.data(), y.data());
    seen.push_back(x[0]);
  }
  CHECK(seen == std::vector<int32_t>{0, 10, 20, 30, 0, 10});
  CHECK(dl.epoch() == Approx(1.5));
  dsk::DataLoader slide(s, 1, T, 0, 1);  // stride 1: the original project's sliding windows
  CHECK(slide.windows_per_epoch() == N - T);
  fs::remove(p);
}

TEST_CASE("eval windows cover exactly N-1 predictions without overlap", "[data]") {
  for (size_t n : {0, 1, 2, 10, 11, 12, 100, 1001}) {
    for (int T : {1, 3, 10}) {
      auto w = dsk::eval_windows(n, T);
      int64_t next = 0, total = 0;
      for (const auto& win : w) {
        REQUIRE(win.start == next);
        REQUIRE(win.length >= 1);
        REQUIRE(win.length <= T);
        REQUIRE(win.start + win.length + 1 <= static_cast<int64_t>(n));  // the last target exists
        next = win.start + win.length;
        total += win.length;
      }
      INFO("n=" << n << " T=" << T);
      CHECK(total == (n < 2 ? 0 : static_cast<int64_t>(n) - 1));
    }
  }
  auto w = dsk::eval_windows(12, 5);  // 11 predictions: 5 + 5 + 1
  REQUIRE(w.size() == 3);
  CHECK(w[2].start == 10);
  CHECK(w[2].length == 1);
}
