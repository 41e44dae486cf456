// `dsk info`, `dsk --help`, `--version`, unknown commands: what a user sees first.
#include "kernels/device.h"
#include "tests/test_env.h"

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using dsk::testing::run_dsk;

TEST_CASE("dsk info prints the exact parameter counts and the KV-cache saving", "[info_cli]") {
  auto r = run_dsk("info --config small");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("24,144,128 total, 19,939,584 active"));
  CHECK_THAT(r.output, Catch::Contains("8.0× smaller"));
  auto j = run_dsk("info --config default --json");
  REQUIRE(j.exit_code == 0);
  auto info = nlohmann::json::parse(j.output.substr(j.output.find('{')));
  CHECK(info["parameters"]["total"] == 143636480);
  CHECK(info["parameters"]["active"] == 68046848);
  CHECK(info["kv_cache_bytes_per_token"]["mla_latent"] == 6 * 128 * 4);
  CHECK(info["kv_cache_bytes_per_token"]["mha_equivalent"] == 6 * 2 * 8 * 64 * 4);
  CHECK(info["memory_plan"]["training_activation_bytes"] > info["memory_plan"]["inference_activation_bytes"]);
}

TEST_CASE("dsk: help, version, unknown command and unknown flag", "[info_cli]") {
  CHECK(run_dsk("--version").output.find("dsk 0.") == 0);
  auto help = run_dsk("--help");
  CHECK(help.exit_code == 0);
  for (const char* cmd : {"train", "sample", "eval", "prepare", "bench", "info", "tokenize"}) CHECK_THAT(help.output, Catch::Contains(cmd));
  CHECK(run_dsk("").exit_code == 2);
  auto unknown = run_dsk("frobnicate");
  CHECK(unknown.exit_code == 2);
  CHECK_THAT(unknown.output, Catch::Contains("unknown command 'frobnicate'"));
  auto flag = run_dsk("info --colour");
  CHECK(flag.exit_code == 2);
  CHECK_THAT(flag.output, Catch::Contains("unknown flag --colour"));
  CHECK(run_dsk("info --help").exit_code == 0);
  // `dsk bench` without a benchmark is a mistake: its usage goes to stderr (exit 2); `dsk bench --help` to stdout.
  dsk::testing::TempDir d("bench_usage");
  const std::string out = d / "out", err = d / "err";
  const int status = std::system((std::string(DSK_BINARY) + " bench > " + out + " 2> " + err).c_str());
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(std::filesystem::file_size(out) == 0);
  CHECK(std::filesystem::file_size(err) > 0);
  CHECK(run_dsk("bench --help").exit_code == 0);
  CHECK(run_dsk("info --config nowhere.json").exit_code == 1);
}

TEST_CASE("dsk --device cuda without a usable GPU is a one-line error; auto falls back to the CPU", "[info_cli]") {
  if (dsk::cuda_unavailable_reason().empty()) return;  // a GPU is here: nothing to check
  auto cuda = run_dsk("bench train --device cuda --steps 1 --warmup 0 --set n_layers=1");
  CHECK(cuda.exit_code == 1);
  CHECK_THAT(cuda.output, Catch::Contains("--device cuda:"));
  CHECK(std::count(cuda.output.begin(), cuda.output.end(), '\n') == 1);
  // A machine without the NVIDIA driver is told so, not that its driver is too old (the runtime's words).
  if (dsk::cuda_compiled() && !std::filesystem::exists("/proc/driver/nvidia/version"))
    CHECK_THAT(cuda.output, Catch::Contains("no NVIDIA driver found"));
  auto info = run_dsk("info");
  CHECK_THAT(info.output, Catch::Contains("GPUs            none ("));
}

TEST_CASE("dsk: a bad --expert-math / --attention-math is a one-line usage error naming the choices", "[info_cli]") {
  for (const char* cmd : {"bench train --expert-math fp16", "bench train --attention-math fp16",
                          "sample --model nowhere --attention-math fp16"}) {
    INFO(cmd);
    auto r = run_dsk(cmd);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains("must be auto, ffma, tf32 or 3xtf32, got 'fp16'"));
    CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
  }
}

TEST_CASE("dsk: output that cannot be written (a full disk) is an error, not a silent exit 0", "[info_cli]") {
  dsk::testing::TempDir d("full");
  const std::string err = d / "stderr.txt";
  const int status = std::system((std::string(DSK_BINARY) + " info --json > /dev/full 2> " + err).c_str());
  CHECK(WEXITSTATUS(status) == 1);
  std::ifstream in(err);
  std::string line;
  std::getline(in, line);
  CHECK_THAT(line, Catch::Contains("dsk info: error: cannot write the output: No space left on device"));
  CHECK(WEXITSTATUS(std::system((std::string(DSK_BINARY) + " --help > /dev/full 2>/dev/null").c_str())) == 1);
}

TEST_CASE("dsk bench train on the CPU keeps OpenMP's thread count (OpenBLAS's OpenMP build set it to 1)",
          "[info_cli]") {
  auto r = [] {
    dsk::testing::ScopedEnv threads("OMP_NUM_THREADS", "2");  // (run_dsk's process inherits it)
    return run_dsk("bench train --device cpu --steps 1 --warmup 0 --profile-steps 0 --batch 1 --set n_layers=1 "
                   "--set emb_dim=64 --set n_heads=2 --set kv_latent_dim=16 --set expert_hidden_dim=64 "
                   "--set context_length=16");
  }();
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("\"omp_threads\": 2"));  // read after the training step ran its GEMMs
}

TEST_CASE("dsk info --model describes a trained model: a run folder or a checkpoint", "[info_cli]") {
  dsk::testing::TempDir d("info_model");
  // A model of its own shape (not a built-in one), trained one step on a little text.
  const std::string config = d.file("m.json", R"({"emb_dim": 32, "n_heads": 4, "n_layers": 1, "context_length": 16,
      "kv_latent_dim": 8, "num_experts": 4, "num_shared_experts": 1, "top_k": 2, "expert_hidden_dim": 24})");
  std::string text;
  for (int i = 0; i < 40; ++i) text += "A little text to train on, one line after another.\n";
  const std::string corpus = d.file("corpus.txt", text);
  REQUIRE(run_dsk("prepare --input " + corpus + " --out " + (d / "data")).exit_code == 0);
  auto t = run_dsk("train --config " + config + " --data " + (d / "data") + " --out " + (d / "run") +
                   " --device cpu --sample-tokens 0 --set max_steps=1 --set batch_size=2 --set eval_batches=1");
  INFO(t.output);
  REQUIRE(t.exit_code == 0);
  for (const std::string& model : {d / "run", d / "run/best"}) {
    auto r = run_dsk("info --model " + model + " --json");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto info = nlohmann::json::parse(r.output.substr(r.output.find('{')));
    CHECK(info["config"]["kv_latent_dim"] == 8);
    CHECK(info["config"]["expert_hidden_dim"] == 24);
    CHECK(info["kv_cache_bytes_per_token"]["mla_latent"] == 1 * 8 * 4);
  }
  CHECK(run_dsk("info --model " + (d / "missing")).exit_code == 1);
  auto both = run_dsk("info --model " + (d / "run") + " --config small");
  CHECK(both.exit_code == 2);
  CHECK_THAT(both.output, Catch::Contains("--config or --model, not both"));
}
