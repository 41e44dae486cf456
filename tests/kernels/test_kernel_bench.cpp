// The kernel benchmark harness runs on tiny shapes and reports every kernel with a time and a rate.
#include "bench/kernel_bench.h"

#include <catch2/catch.hpp>

TEST_CASE("bench_kernels_cpu: every kernel reports a positive time and rate", "[kernels][bench]") {
  dsk::KernelBenchShapes s = dsk::KernelBenchShapes::tiny();
  const auto j = dsk::bench_kernels_cpu(s);
  CHECK(j.at("backend") == "cpu");
  REQUIRE(j.at("kernels").size() >= 20);
  for (const auto& k : j.at("kernels")) {
    INFO(k.dump());
    CHECK(!k.at("name").get<std::string>().empty());
    CHECK(!k.at("shape").get<std::string>().empty());
    CHECK(k.at("ms").get<double>() >= 0.0);
    CHECK((k.contains("gflops") || k.contains("gbps")));
  }
  s.runs = 0;
  CHECK_THROWS_AS(dsk::bench_kernels_cpu(s), dsk::Error);
}
