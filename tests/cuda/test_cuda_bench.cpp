// [cuda] smoke tests of the GPU benchmark code (bench/*_cuda.cpp) at tiny sizes: every benchmark gpu_check.sh runs
// completes and reports finite, positive times and rates in the fields scripts/gpu_report.py reads. (The real
// sizes run only on the GPU machine; a crash there would lose that part of the report.)
#ifdef DSK_HAVE_CUDA
#include "bench/attention_bench.h"
#include "bench/bench_train.h"
#include "bench/kernel_bench.h"
#include "bench/moe_bench.h"
#include "kernels/device.h"

#include "tests/cuda/cuda_testing.h"
#include "tests/train_testing.h"

#include <cmath>
#include <iterator>
#include <map>
#include <string>

using namespace dsk;

namespace {

const PeakSizes kTinyPeaks{64, 1 << 20};

// A positive, finite number at key.
void require_positive(const nlohmann::json& j, const std::string& key) {
  INFO(key << " in " << j.dump().substr(0, 400));
  REQUIRE(j.contains(key));
  const double v = j.at(key).get<double>();
  REQUIRE(std::isfinite(v));
  REQUIRE(v > 0.0);
}

}  // namespace

TEST_CASE("cuda bench: GPU peaks and every kernel benchmark at tiny sizes", "[cuda][bench]") {
  if (!dsk::testing::gpu_available()) return;
  // (one repetition: the CPU emulator runs this too, where every repetition costs seconds)
  const auto j = bench_kernels_cuda(KernelBenchShapes::tiny(), kTinyPeaks);
  for (const char* peak : {"copy_gbps", "sgemm_fp32_tflops", "sgemm_tf32_tflops", "gemm_bf16_tflops"})
    require_positive(j.at("peaks"), peak);
  REQUIRE(j.at("kernels").size() >= 20);
  for (const auto& k : j.at("kernels")) {
    require_positive(k, "ms");
    require_positive(k, k.contains("gbps") ? "gbps" : "gflops");
    require_positive(k, "fraction_of_peak");
  }
  REQUIRE(!cuda::tf32_enabled());  // restored
}

TEST_CASE("cuda bench: attention kernels (training and decode records) at tiny sizes", "[cuda][bench]") {
  if (!dsk::testing::gpu_available()) return;
  AttentionBenchSizes sizes;
  sizes.models = {{"tiny", 2, 40, 2, 16, 24}, {"tiny2", 1, 70, 4, 16, 32}};
  sizes.decode_kv = 80;
  sizes.decode_batch_absorbed = 3;
  sizes.decode_batch_explicit = 2;
  sizes.copy_bytes = 1 << 20;
  const auto j = bench_attention_kernels_cuda(sizes);
  require_positive(j, "copy_gbps");
  const auto maths = attention_bench_maths();
  const size_t n_maths = maths.size();
  CHECK(n_maths == (cuda::tf32_tensor_cores() ? 3u : 1u));
  REQUIRE(j.at("training").size() == n_maths * (2 * sizes.models.size() + 2));
  std::map<std::string, size_t> per_math;
  for (const auto& r : j.at("training")) {
    for (const char* key : {"forward_ms", "backward_ms", "forward_tflops", "backward_tflops"}) require_positive(r, key);
    ++per_math[r.at("math").get<std::string>()];
    // The kernels that ran: the 64-row training blocks, in the record's arithmetic; dQ fused into the dK/dV kernel
    // (widths up to 64 here), also timed in its own kernel. The dK/dV loop may be split (few key tiles).
    const std::string math = r.at("math"), form = math == "ffma" ? "ffma" : "mma " + math;
    const std::string splits = "( \\(query loop in [0-9]+ splits\\))?";
    CHECK(r.at("forward_kernel") == form + ", 64-row blocks");
    CHECK_THAT(r.at("backward_kernels").get<std::string>(), Catch::Matchers::Matches("dq fused, dkv " + form + splits));
    require_positive(r, "backward_ms_separate_dq");
    CHECK_THAT(r.at("backward_kernels_separate_dq").get<std::string>(),
               Catch::Matchers::Matches("dq " + form + ", dkv " + form + splits));
  }
  for (cuda::Math m : maths) CHECK(per_math[cuda::math_name(m)] == 2 * sizes.models.size() + 2);
  REQUIRE(cuda::attention_math() == cuda::Math::kAuto);  // each record's pinned choice was undone
  // Per model, form and arithmetic: one record per decode block; then batch 1 (FFMA, and 3xTF32 where there are
  // tensor cores).
  REQUIRE(j.at("decode").size() == 2 * 2 * n_maths * sizes.models.size() + (n_maths > 1 ? 2 : 1));
  std::map<std::string, size_t> per_kernel;
  for (const auto& r : j.at("decode")) {
    for (const char* key : {"ms", "gbps", "fraction_of_copy", "cache_bytes"}) require_positive(r, key);
    // Up to 4 query rows per (b, kv head): the key-split decode block (8 rows with FFMA, 16 on the tensor cores), or
    // the forward kernels' blocks (FFMA 8 rows, the one-warp 16-row register kernel).
    const std::string math = r.at("math"), kernel = r.at("kernel");
    const std::string form = math == "ffma" ? "ffma" : "mma " + math, rows = math == "ffma" ? "8" : "16";
    CHECK((kernel == form + ", " + rows + "-row blocks" ||
           kernel == form + " key-split decode (4 warps, 2 stages), " + rows + "-row blocks"));
    ++per_kernel[kernel];
  }
  // Each block timed for each model and form (the batch-1 records are key-split).
  CHECK(per_kernel["ffma, 8-row blocks"] == 2 * sizes.models.size());
  CHECK(per_kernel["ffma key-split decode (4 warps, 2 stages), 8-row blocks"] == 2 * sizes.models.size() + 1);
  if (n_maths > 1) {
    CHECK(per_kernel["mma tf32, 16-row blocks"] == 2 * sizes.models.size());
    CHECK(per_kernel["mma 3xtf32 key-split decode (4 warps, 2 stages), 16-row blocks"] ==
          2 * sizes.models.size() + 1);
  }
  REQUIRE(cuda::decode_block() == cuda::DecodeBlock::kAuto);  // each record's pinned block was undone
}

TEST_CASE("cuda bench: MoE layer (grouped vs loop, grouped GEMM vs dense, fp32 and TF32) at a tiny shape",
          "[cuda][bench]") {
  if (!dsk::testing::gpu_available()) return;
  const auto j = bench_moe_cuda({{"tiny", 64, 32, 48, 4, 2, 1}});
  REQUIRE(j.at("results").size() == 1);
  const auto& r = j.at("results")[0];
  for (const char* key : {"grouped_ms", "expert_loop_ms", "loop_over_grouped"}) require_positive(r, key);
  // Both paths compute the same layer.
  CHECK(r.at("max_rel_diff_y").get<double>() < 1e-4);
  CHECK(r.at("max_rel_diff_dx").get<double>() < 1e-4);
  CHECK(r.at("max_rel_diff_dlogits").get<double>() < 1e-4);
  CHECK(r.at("dx_rows_differing").get<int64_t>() == 0);
  // The tensor-core records exist on GPUs that have TF32 tensor cores (compute capability 8.0+; the emulator: 9.0).
  std::vector<const char*> records = {"grouped_gemm"};
  if (cuda::tf32_tensor_cores()) records.insert(records.end(), {"grouped_gemm_tf32", "grouped_gemm_3xtf32"});
  CHECK(r.contains("grouped_gemm_3xtf32") == cuda::tf32_tensor_cores());
  for (const char* g : records)
    for (const char* key : {"forward_tflops", "backward_tflops", "dense_forward_tflops", "forward_fraction_of_dense"})
      require_positive(r.at(g), key);
  for (const char* g : records)
    for (const char* tile : {"64x64", "128x128"})
      for (const char* key : {"forward_ms", "backward_ms"}) require_positive(r.at(g).at("forced_tiles").at(tile), key);
  // The register-fed tensor-core tiles, timed beside the cp.async ones; the FFMA tiles have one way of loading.
  CHECK(r.at("grouped_gemm").at("register_loads").is_null());
  for (size_t i = 1; i < records.size(); ++i)
    for (const char* key : {"forward_ms", "backward_ms"}) require_positive(r.at(records[i]).at("register_loads"), key);
  REQUIRE(!cuda::tf32_enabled());
  REQUIRE(cuda::expert_loads() == cuda::ExpertLoads::kAsync);
  REQUIRE(cuda::expert_tile() == cuda::ExpertTile::kAuto);  // the bench leaves the automatic choices behind
  REQUIRE(cuda::expert_math() == cuda::Math::kAuto);
}

TEST_CASE("cuda bench: a training step of a tiny model, with the MFU fields", "[cuda][bench]") {
  if (!dsk::testing::gpu_available()) return;
  ModelConfig c = dsk::testing::tiny_model_config();
  c.vocab_size = 300;  // the LM head's GEMM is the emulator's slowest part
  c.n_layers = 1;
  TrainBenchOptions o;
  o.batch = 2;
  o.steps = 2;
  o.warmup = 1;
  o.peaks = kTinyPeaks;
  for (bool tf32 : {false, true}) {
    INFO("tf32 " << tf32);
    cuda::set_tf32(tf32);
    const auto j = bench_train(c, Backend::CUDA, o);
    cuda::set_tf32(false);
    for (const char* key : {"tokens_per_s", "ms_per_step", "ms_forward", "ms_backward", "ms_optimizer",
                            "achieved_gflop_s", "mfu_vs_fp32_gemm"})
      require_positive(j, key);
    CHECK(j.contains("mfu_vs_tf32_gemm") == tf32);
    // The op profile from CUDA events: every row timed, the attention and expert ops among them.
    REQUIRE(!j.at("ops").empty());
    bool attention = false, experts = false;
    double sum = 0;
    for (const auto& r : j.at("ops")) {
      const double ms = r.at("total_ms").get<double>();
      CHECK((std::isfinite(ms) && ms >= 0.0));  // an op of a few tiny kernels may read 0 at the events' resolution
      sum += ms;
      const std::string op = r.at("op");
      attention = attention || op.rfind("attention", 0) == 0;
      experts = experts || op.rfind("expert_ffn", 0) == 0;
    }
    CHECK((attention && experts));
    CHECK(sum > 0.0);
  }
}
#endif  // DSK_HAVE_CUDA
