// `dsk sample` end to end through the built binary: streaming, bad input, and the --interactive REPL fed by
// piped stdin (commands, line continuation, Ctrl-C, Ctrl-D). Uses a tiny checkpoint written by save_checkpoint.
#include "engine/checkpoint.h"
#include "engine/model.h"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / fmt::format("dsk_sample_test_{}_{}", getpid(), std::random_device{}());
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name, const std::string& content) const {
    std::ofstream(path / name, std::ios::binary) << content;
    return (path / name).string();
  }
};

// A tiny model with the GPT-2 vocabulary (the CLI's tokenizer), context 16, saved as a checkpoint.
std::string tiny_checkpoint(const TempDir& d) {
  dsk::ModelConfig c;
  c.context_length = 16;
  c.emb_dim = 16;
  c.n_heads = 2;
  c.n_layers = 1;
  c.kv_latent_dim = 4;
  c.num_experts = 2;
  c.num_shared_experts = 1;
  c.top_k = 1;
  c.expert_hidden_dim = 16;
  dsk::Model m(c, dsk::Backend::CPU);
  m.init_weights(3);
  const std::string dir = (d.path / "ckpt").string();
  dsk::save_checkpoint(dir, m, nlohmann::json::object(), nullptr);
  return dir;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs a shell command with stdout and stderr into one file; returns the exit code.
int run(const std::string& cmd, const std::string& out_file) {
  int rc = std::system((cmd + " > " + out_file + " 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

const std::string kDsk = DSK_BINARY;

}  // namespace

TEST_CASE("dsk sample: streams text, reports speed, is reproducible, rejects bad input", "[sampler][cli]") {
  TempDir d;
  const std::string ckpt = tiny_checkpoint(d), out = (d.path / "out.txt").string();
  const std::string base = kDsk + " sample --device cpu --model " + ckpt;

  REQUIRE(run(base + " --prompt 'Hello there' --max-new-tokens 6 --temperature 1 --seed 5", out) == 0);
  const std::string first = slurp(out);
  CHECK_THAT(first, Catch::Contains("Hello there"));
  CHECK_THAT(first, Catch::Contains("prefill:") && Catch::Contains("decode:") && Catch::Contains("tok/s"));
  REQUIRE(run(base + " --prompt 'Hello there' --max-new-tokens 6 --temperature 1 --seed 5", out) == 0);
  CHECK(slurp(out) .substr(0, slurp(out).find("[prefill")) == first.substr(0, first.find("[prefill")));

  // Several samples as one batch; the window slides past the context of 16 (--verbose says so).
  REQUIRE(run(base + " --prompt 'a b c' --max-new-tokens 20 --num-samples 3 --verbose", out) == 0);
  const std::string many = slurp(out);
  CHECK_THAT(many, Catch::Contains("sample 3 of 3") && Catch::Contains("sliding"));

  // A prompt longer than the context is cut from the left with a warning.
  std::string long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt += "word ";
  REQUIRE(run(base + " --max-new-tokens 2 --prompt-file " + d.file("p.txt", long_prompt), out) == 0);
  CHECK_THAT(slurp(out), Catch::Contains("warning") && Catch::Contains("keeping the last 16"));

  CHECK(run(base + " --temperature -1", out) == 2);
  CHECK_THAT(slurp(out), Catch::Contains("-1"));
  CHECK(run(base + " --top-p 1.5", out) == 2);
  CHECK_THAT(slurp(out), Catch::Contains("1.5"));
  CHECK(run(kDsk + " sample --prompt hi", out) == 2);
  CHECK_THAT(slurp(out), Catch::Contains("--model"));
  CHECK(run(kDsk + " sample --device cpu --model " + (d.path / "missing").string(), out) == 1);
}

TEST_CASE("dsk sample --interactive: commands, continuation, bad input, Ctrl-D", "[sampler][cli]") {
  TempDir d;
  const std::string ckpt = tiny_checkpoint(d), out = (d.path / "out.txt").string();
  const std::string in = d.file("in.txt",
                                "/temp 0\n/max 3\n/settings\n/bogus\n/topk abc\n/topp 2\n/temp\n"
                                "Hello \\\nworld\n/seed 9\n/settings\n/quit\nnever read\n");
  REQUIRE(run(kDsk + " sample --interactive --device cpu --model " + ckpt + " < " + in, out) == 0);
  const std::string o = slurp(out);
  CHECK_THAT(o, Catch::Contains("temperature 0 | top-k 40 | top-p 1 | max new tokens 3 | seed 1337"));
  CHECK_THAT(o, Catch::Contains("unknown command '/bogus'"));
  CHECK_THAT(o, Catch::Contains("invalid value 'abc' for /topk"));
  CHECK_THAT(o, Catch::Contains("invalid value '2' for /topp"));
  CHECK_THAT(o, Catch::Contains("/temp takes one value"));
  CHECK_THAT(o, Catch::Contains("seed 9"));
  // Exactly one generation ran (the continued line was one prompt), and /quit stopped before "never read".
  size_t gens = 0;
  for (size_t p = o.find("[prefill"); p != std::string::npos; p = o.find("[prefill", p + 1)) ++gens;
  CHECK(gens == 1);

  // End of input (Ctrl-D) after a prompt: it is answered, then dsk leaves cleanly.
  REQUIRE(run(kDsk + " sample --interactive --device cpu --model " + ckpt + " < " + d.file("in2.txt", "/max 2\nHi"),
              out) == 0);
  CHECK_THAT(slurp(out), Catch::Contains("decode:"));
}

TEST_CASE("dsk sample --interactive: Ctrl-C stops the generation, not the REPL", "[sampler][cli]") {
  TempDir d;
  const std::string ckpt = tiny_checkpoint(d), out = (d.path / "out.txt").string();
  int to_child[2];
  REQUIRE(pipe(to_child) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(to_child[0], STDIN_FILENO);
    close(to_child[1]);
    const std::string cmd = "exec " + kDsk + " sample --interactive --device cpu --model " + ckpt + " > " + out + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(to_child[0]);
  auto say = [&](const std::string& s) { REQUIRE(write(to_child[1], s.data(), s.size()) == static_cast<ssize_t>(s.size())); };
  auto wait_for = [&](auto pred) {
    for (int i = 0; i < 400; ++i) {
      if (pred(slurp(out))) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  REQUIRE(wait_for([](const std::string& o) { return o.find("/quit     leave") != std::string::npos; }));
  const size_t banner = slurp(out).size();
  say("/max 1000000\nOnce upon a time\n");  // would run for a long time (the window slides every step)
  REQUIRE(wait_for([&](const std::string& o) { return o.size() > banner + 40; }));
  kill(pid, SIGINT);
  REQUIRE(wait_for([](const std::string& o) { return o.find("[stopped]") != std::string::npos; }));
  say("/settings\n/quit\n");
  close(to_child[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(slurp(out), Catch::Contains("max new tokens 1000000"));
}

TEST_CASE("dsk sample: a BOM is not part of a prompt file; ignored repeats and options are refused", "[sampler][cli]") {
  TempDir d;
  const std::string ckpt = tiny_checkpoint(d), out = (d.path / "out.txt").string();
  const std::string base = kDsk + " sample --device cpu --temperature 0 --max-new-tokens 3 --model " + ckpt;
  // The same prompt with and without a byte order mark: the same tokens prefilled, the same text printed.
  auto prefill = [](const std::string& o) { return o.substr(o.find("[prefill"), o.find(" tokens in") - o.find("[prefill")); };
  REQUIRE(run(base + " --prompt-file " + d.file("plain.txt", "Hello there"), out) == 0);
  const std::string plain = slurp(out);
  REQUIRE(run(base + " --prompt-file " + d.file("bom.txt", "\xEF\xBB\xBFHello there"), out) == 0);
  const std::string bom = slurp(out);
  CHECK(prefill(bom) == prefill(plain));
  CHECK(bom.substr(0, bom.find("[prefill")) == plain.substr(0, plain.find("[prefill")));
  CHECK(bom.find("\xEF\xBB\xBF") == std::string::npos);
  // A prompt file that is not UTF-8 is echoed as it was encoded (U+FFFD), not as raw bytes.
  REQUIRE(run(base + " --prompt-file " + d.file("bad.txt", "caf\xE9 au lait"), out) == 0);
  const std::string echoed = slurp(out);
  CHECK(echoed.find("caf\xEF\xBF\xBD au lait") != std::string::npos);
  CHECK(echoed.find('\xE9') == std::string::npos);

  // Each of these kept one value and dropped the rest without a word: now a usage error naming the option.
  const std::vector<std::pair<std::string, std::string>> refused = {
      {" --prompt a --prompt b", "--prompt takes one prompt"},
      {" --prompt-file " + d.path.string() + "/plain.txt --prompt-file x", "--prompt-file takes one prompt"},
      {" --interactive --num-samples 3", "--num-samples"},
  };
  for (const auto& [args, message] : refused) {
    INFO(args);
    CHECK(run(base + args + " < /dev/null", out) == 2);
    const std::string o = slurp(out);
    CHECK_THAT(o, Catch::Contains(message));
    CHECK(std::count(o.begin(), o.end(), '\n') == 1);
  }
}
