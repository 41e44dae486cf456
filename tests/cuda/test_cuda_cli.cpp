// [cuda] the command line with --device cuda, end to end through the binary: `dsk info` lists the GPU, `dsk train`
// trains a tiny model on the GPU (its post-training sample included), `dsk eval` and `dsk sample` read the result
// on the GPU, and the run resumes on the CPU. (In the emulator build DSK_BINARY is dsk_emu: the same commands on
// the emulated kernels.)
#ifdef DSK_HAVE_CUDA
#include "engine/data.h"
#include "kernels/device.h"

#include "tests/cuda/cuda_testing.h"
#include "tests/test_env.h"
#include "tests/train_testing.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <sstream>

using dsk::testing::run_dsk;
using dsk::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// The generated text: the output line that starts with the prompt (the others name the device and timings).
std::string generated_line(const std::string& output) {
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("Now is", 0) == 0) return line;
  return "(no generated line)";
}

}  // namespace

TEST_CASE("cuda cli: info, train, eval, sample and resume with --device cuda", "[cuda][cli]") {
  if (!dsk::testing::gpu_available()) return;
  TempDir d("cuda_cli");
  const std::string config = dsk::testing::tiny_config_file(d, 0.1f);
  const std::string data = dsk::testing::prepare_repeated_line(
      d, "Now is the winter of our discontent made glorious summer by this sun of York.", 50);

  auto info = run_dsk("info --config small --json");
  INFO(info.output);
  REQUIRE(info.exit_code == 0);
  const auto ij = nlohmann::json::parse(info.output);
  REQUIRE(ij.at("gpus").size() >= 1);
  CHECK(!ij.at("gpus")[0].at("name").get<std::string>().empty());
  CHECK(ij.at("gpus")[0].at("shared_per_block_bytes").get<int>() >= 48 * 1024);  // every CUDA GPU allows 48 KB
  auto info_text = run_dsk("info --config small");
  CHECK_THAT(info_text.output, Catch::Contains("KiB shared memory per block"));

  const std::string run = d / "run";
  auto train = run_dsk(fmt::format("train --config {} --data {} --out {} --device cuda --sample-tokens 8 "
                                   "--set max_steps=4 --set batch_size=2 --set eval_batches=0 --set eval_every=2 "
                                   "--set attention_math=3xtf32",
                                   config, data, run));
  INFO(train.output);
  REQUIRE(train.exit_code == 0);
  CHECK_THAT(train.output, Catch::Contains("CUDA arithmetic: cuBLAS GEMMs fp32, expert GEMMs ffma, attention 3xtf32"));
  CHECK_THAT(train.output, Catch::Contains("done: 4 steps"));
  CHECK_THAT(train.output, Catch::Contains("--- sample"));
  REQUIRE(fs::exists(fs::path(run) / "best/model.safetensors"));
  const auto losses = dsk::testing::train_losses(run);
  REQUIRE(losses.size() == 4);
  for (double l : losses) CHECK(std::isfinite(l));

  // The closing sample is what the dsk sample command in its header prints, although the training ran its
  // attention in 3xTF32 (the sample resets the arithmetic to dsk sample's defaults).
  {
    const size_t at = train.output.find("--- sample (dsk ");
    REQUIRE(at != std::string::npos);
    const size_t args = at + std::string("--- sample (dsk ").size(), text = train.output.find('\n', at) + 1;
    const std::string command = train.output.substr(args, train.output.find(") ---", args) - args);
    CHECK_THAT(command, Catch::Contains("--device cuda"));
    const std::string out = d / "sample.out";
    REQUIRE(std::system(fmt::format("{} {} > {} 2> /dev/null", DSK_BINARY, command, out).c_str()) == 0);
    std::stringstream printed;
    printed << std::ifstream(out).rdbuf();
    CHECK(printed.str() == train.output.substr(text));
  }

  auto eval_gpu = run_dsk(fmt::format("eval --model {} --data {} --json --device cuda", run, data));
  auto eval_cpu = run_dsk(fmt::format("eval --model {} --data {} --json --device cpu", run, data));
  INFO(eval_gpu.output << eval_cpu.output);
  REQUIRE(eval_gpu.exit_code == 0);
  REQUIRE(eval_cpu.exit_code == 0);
  const double lg = nlohmann::json::parse(eval_gpu.output).at("loss"),
               lc = nlohmann::json::parse(eval_cpu.output).at("loss");
  CHECK(lg == Approx(lc).epsilon(1e-4));  // a model trained on the GPU evaluates the same on both devices

  auto sample = run_dsk(fmt::format("sample --model {} --device cuda --prompt 'Now is' --max-new-tokens 12 "
                                    "--temperature 0",
                                    run));
  auto sample_cpu = run_dsk(fmt::format("sample --model {} --device cpu --prompt 'Now is' --max-new-tokens 12 "
                                        "--temperature 0",
                                        run));
  INFO(sample.output << sample_cpu.output);
  REQUIRE(sample.exit_code == 0);
  REQUIRE(sample_cpu.exit_code == 0);
  CHECK(generated_line(sample.output) == generated_line(sample_cpu.output));  // greedy: the same text

  auto resume = run_dsk(fmt::format("train --resume {} --device cpu --sample-tokens 0 --set max_steps=6", run));
  INFO(resume.output);
  CHECK(resume.exit_code == 0);
  CHECK(dsk::testing::train_losses(run).size() == 6);
}
#endif  // DSK_HAVE_CUDA
