// dsk sample: generate text from a checkpoint with the latent KV cache; --interactive runs a REPL.
#include "engine/checkpoint.h"
#include "engine/read_file.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "engine/utf8.h"
#include "tools/cli.h"
#include "tools/device_option.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace dsk {
namespace {

const char* kUsage =
    "dsk sample --model RUN_OR_CHECKPOINT [--prompt TEXT | --prompt-file F] [--max-new-tokens 100]\n"
    "           [--temperature 0.8] [--top-k 40] [--top-p 1.0] [--seed N] [--num-samples N] [--stop S]\n"
    "           [--device auto] [--attention absorbed|explicit|mha] [--verbose] [--interactive]\n"
    "Sampling order (the original project's): top-k on the raw logits, then temperature, softmax, top-p.";

const char* kReplHelp =
    "Type a prompt and press Enter; end a line with \\ to continue it on the next line.\n"
    "  /temp X    temperature (0 = greedy)        /topk N   top-k (0 = off)\n"
    "  /topp P    top-p in (0, 1] (1 = off)        /max N    max new tokens\n"
    "  /seed N    seed of the next generation      /settings show the current settings\n"
    "  /help      this text                        /quit     leave (Ctrl-D too)\n"
    "Ctrl-C stops the current generation and returns to the prompt.";

// Raised by SIGINT; generation checks it before every token.
std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the SIGINT flag must be lock-free");

extern "C" void on_sigint(int) { g_interrupted.store(true); }

void install_sigint_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked read returns EINTR so the REPL sees Ctrl-C at once
  sigaction(SIGINT, &sa, nullptr);
}

struct Settings {
  SamplingParams sampling;
  int max_new_tokens = 100;
  uint64_t seed = 1337;
  std::vector<std::string> stop;
};

std::string settings_line(const Settings& s) {
  return fmt::format("temperature {} | top-k {} | top-p {} | max new tokens {} | seed {}", s.sampling.temperature,
                     s.sampling.top_k, s.sampling.top_p, s.max_new_tokens, s.seed);
}

void print_stats(const InferenceStats& st) {
  auto rate = [](double n, double s) { return s > 0 ? n / s : 0.0; };
  std::fprintf(stderr, "[prefill: %lld tokens in %.3f s, %.1f tok/s | decode: %lld tokens in %.3f s, %.1f tok/s",
               static_cast<long long>(st.prefill_tokens), st.prefill_s, rate(st.prefill_tokens, st.prefill_s),
               static_cast<long long>(st.decode_tokens), st.decode_s, rate(st.decode_tokens, st.decode_s));
  if (st.slides > 0) std::fprintf(stderr, " | %lld window slides", static_cast<long long>(st.slides));
  std::fprintf(stderr, "]\n");
}

class SampleRunner {
 public:
  SampleRunner(const cli::Args& a, DecodeMode mode)
      : mode_(mode),
        device_(cli::resolve_device(a.get("device"))),
        model_(load_model(a.get("model"), device_)),
        tok_(Tokenizer::gpt2()),
        verbose_(a.has("verbose")) {
    const ModelConfig& c = model_->config();
    if (c.vocab_size != tok_.vocab_size())
      throw Error(fmt::format("the model's vocab_size {} does not match the GPT-2 tokenizer's {}", c.vocab_size,
                              tok_.vocab_size()));
    std::fprintf(stderr, "model %s: %d layers, d %d, %d heads, d_c %d, context %d, %d experts (top-%d) | %s | %s attention\n",
                 resolve_checkpoint(a.get("model")).c_str(), c.n_layers, c.emb_dim, c.n_heads, c.kv_latent_dim,
                 c.context_length, c.num_experts, c.top_k, backend_name(device_), decode_mode_name(mode_));
  }

  const ModelConfig& config() const { return model_->config(); }

  // Encodes and left-truncates a prompt to the context (with a warning); empty text starts from <|endoftext|>.
  std::vector<int32_t> encode_prompt(const std::string& text) const {
    std::vector<int32_t> ids = tok_.encode(text, /*allow_special=*/true, /*replace_invalid=*/true);
    if (ids.empty()) ids.push_back(Tokenizer::kEndOfText);
    const size_t ctx = static_cast<size_t>(config().context_length);
    if (ids.size() > ctx) {
      std::fprintf(stderr, "warning: the prompt has %zu tokens, more than the context of %zu; keeping the last %zu\n",
                   ids.size(), ctx, ctx);
      ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(ctx));
    }
    return ids;
  }

  // Generates `rows` samples of one prompt. With one row the text streams to stdout as it is produced.
  std::vector<Generated> run(const std::vector<int32_t>& prompt, int rows, const Settings& s) {
    if (!session_ || session_->max_batch() < rows) {
      session_ = std::make_unique<InferenceSession>(*model_, mode_, rows);
      if (verbose_) session_->log = [](const std::string& m) { std::fprintf(stderr, "\n[%s]\n", m.c_str()); };
    }
    session_->stats = InferenceStats{};
    GenerateOptions o;
    o.max_new_tokens = s.max_new_tokens;
    o.sampling = s.sampling;
    o.seed = s.seed;
    o.stop = s.stop;
    o.cancel = &g_interrupted;
    std::vector<std::vector<int32_t>> prompts(rows, prompt);
    auto bytes = [&](int32_t t) { return tok_.token_bytes(t); };
    auto stream = [&](int, const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
    std::vector<Generated> g = rows == 1 ? generate(*session_, prompts, o, bytes, stream)
                                         : generate(*session_, prompts, o, bytes);
    return g;
  }

  const InferenceStats& stats() const { return session_->stats; }
  bool verbose() const { return verbose_; }

 private:
  DecodeMode mode_;
  Backend device_;
  std::unique_ptr<Model> model_;
  const Tokenizer& tok_;
  bool verbose_;
  std::unique_ptr<InferenceSession> session_;
};

// Strict number parsing for the REPL: the whole word must be the number.
bool parse_double(const std::string& w, double* out) {
  if (w.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *out = std::strtod(w.c_str(), &end);
  return errno == 0 && end == w.c_str() + w.size();
}
bool parse_int(const std::string& w, long long* out) {
  if (w.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *out = std::strtoll(w.c_str(), &end, 10);
  return errno == 0 && end == w.c_str() + w.size();
}

// Handles one /command; returns false for /quit.
bool repl_command(const std::string& line, Settings& s) {
  std::istringstream in(line);
  std::string cmd, arg, extra;
  in >> cmd >> arg >> extra;
  auto bad = [&](const std::string& what) {
    std::fprintf(stderr, "invalid value '%s' for %s: %s\n", arg.c_str(), cmd.c_str(), what.c_str());
  };
  auto needs_arg = [&]() {
    if (arg.empty() || !extra.empty()) {
      std::fprintf(stderr, "%s takes one value (see /help)\n", cmd.c_str());
      return false;
    }
    return true;
  };
  double x = 0;
  long long n = 0;
  if (cmd == "/quit" || cmd == "/exit") return false;
  if (cmd == "/help") {
    std::fprintf(stderr, "%s\n", kReplHelp);
  } else if (cmd == "/settings") {
    std::fprintf(stderr, "%s\n", settings_line(s).c_str());
  } else if (cmd == "/temp") {
    if (!needs_arg()) return true;
    if (!parse_double(arg, &x) || !(x >= 0) || !std::isfinite(x)) bad("expected a number >= 0");
    else s.sampling.temperature = static_cast<float>(x);
  } else if (cmd == "/topk") {
    if (!needs_arg()) return true;
    if (!parse_int(arg, &n) || n < 0 || n > 1000000) bad("expected an integer from 0 to 1000000 (0 = off)");
    else s.sampling.top_k = static_cast<int>(n);
  } else if (cmd == "/topp") {
    if (!needs_arg()) return true;
    if (!parse_double(arg, &x) || !(x > 0 && x <= 1)) bad("expected a number in (0, 1]");
    else s.sampling.top_p = static_cast<float>(x);
  } else if (cmd == "/max") {
    if (!needs_arg()) return true;
    if (!parse_int(arg, &n) || n < 1 || n > 1000000) bad("expected an integer from 1 to 1000000");
    else s.max_new_tokens = static_cast<int>(n);
  } else if (cmd == "/seed") {
    if (!needs_arg()) return true;
    if (!parse_int(arg, &n) || n < 0) bad("expected an integer >= 0");
    else s.seed = static_cast<uint64_t>(n);
  } else {
    std::fprintf(stderr, "unknown command '%s' (type /help)\n", cmd.c_str());
  }
  return true;
}

// Reads one line from stdin without its newline. Returns 1 for a line, 0 at end of input, -1 when Ctrl-C
// interrupted the read.
int read_line(std::string* out) {
  char* buf = nullptr;
  size_t cap = 0;
  errno = 0;
  ssize_t n = ::getline(&buf, &cap, stdin);
  if (n < 0) {
    std::free(buf);
    if (errno == EINTR || g_interrupted.load()) {
      std::clearerr(stdin);
      return -1;
    }
    return 0;
  }
  out->assign(buf, static_cast<size_t>(n));
  std::free(buf);
  if (!out->empty() && out->back() == '\n') out->pop_back();
  if (!out->empty() && out->back() == '\r') out->pop_back();
  return 1;
}

int run_interactive(SampleRunner& r, Settings s) {
  const bool tty = isatty(STDIN_FILENO);
  std::fprintf(stderr, "interactive mode — %s\n%s\n", settings_line(s).c_str(), kReplHelp);
  while (true) {
    // Read one prompt: lines ending in a backslash continue.
    std::string prompt, line;
    bool first = true, eof = false, interrupted = false;
    while (true) {
      if (tty) std::fputs(first ? "> " : ". ", stderr);
      g_interrupted.store(false);
      int rc = read_line(&line);
      if (rc == 0) {
        eof = true;
        break;
      }
      if (rc < 0) {
        interrupted = true;
        break;
      }
      first = false;
      if (!line.empty() && line.back() == '\\') {
        line.pop_back();
        prompt += line + "\n";
        continue;
      }
      prompt += line;
      break;
    }
    if (interrupted) {
      std::fputs("\n", stderr);  // Ctrl-C at the prompt: a fresh prompt, not an exit
      continue;
    }
    if (eof && prompt.empty()) break;  // Ctrl-D
    if (prompt.empty()) continue;
    if (prompt[0] == '/') {
      if (!repl_command(prompt, s)) break;
      continue;
    }
    g_interrupted.store(false);
    std::vector<Generated> g = r.run(r.encode_prompt(prompt), 1, s);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    if (g[0].reason == StopReason::Cancelled) std::fputs("[stopped]\n", stderr);
    print_stats(r.stats());
    ++s.seed;  // the next generation draws fresh numbers; /seed sets it explicitly
    if (eof) break;
  }
  return 0;
}

int run_sample(const std::vector<std::string>& argv) {
  cli::Args a("sample", "generate text from a checkpoint", kUsage);
  a.option("model", "RUN_OR_CHECKPOINT", "a run folder (its best or newest checkpoint) or a checkpoint folder")
      .option("prompt", "TEXT", "the prompt (default: start from <|endoftext|>)")
      .option("prompt-file", "FILE", "read the prompt from a file")
      .option("max-new-tokens", "N", "tokens to generate", "100")
      .option("temperature", "T", "softmax temperature, 0 = greedy", "0.8")
      .option("top-k", "K", "keep the K most likely tokens (0 = off)", "40")
      .option("top-p", "P", "nucleus: keep the most likely tokens up to probability P (1 = off)", "1.0")
      .option("seed", "N", "random seed (same seed, same text)", "1337")
      .option("num-samples", "N", "independent samples of the prompt, decoded as one batch", "1")
      .repeated("stop", "TEXT", "stop when the text contains TEXT (may repeat)")
      .option("device", "DEV", "cpu, cuda or auto", "auto")
      .option("attention", "MODE", "absorbed (latent cache), explicit (K/V rebuilt per step) or mha", "absorbed")
      .option("attention-math", "NAME",
              "CUDA: attention kernels in ffma, tf32 or 3xtf32 (tensor cores; auto = ffma: sampling runs fp32)", "auto")
      .flag("verbose", "report window slides")
      .flag("interactive", "read prompts from stdin in a loop");
  if (!a.parse(argv)) return 0;
  if (!a.has("model") || a.get("model").empty()) throw cli::UsageError("dsk sample: --model is required");
  if (a.has("prompt") && a.has("prompt-file"))
    throw cli::UsageError("dsk sample: give --prompt or --prompt-file, not both");
  if (a.has("interactive") && (a.has("prompt") || a.has("prompt-file")))
    throw cli::UsageError("dsk sample: --interactive reads prompts from stdin; drop --prompt/--prompt-file");
  // Each of these would otherwise keep only one value silently: one prompt per run, one sample per REPL prompt.
  for (const char* one : {"prompt", "prompt-file"})
    if (a.all(one).size() > 1)
      throw cli::UsageError(fmt::format("dsk sample: --{} takes one prompt; give it once (--num-samples N draws N "
                                        "samples of it)", one));
  if (a.has("interactive") && a.given("num-samples"))
    throw cli::UsageError("dsk sample: --interactive generates one sample per prompt; drop --num-samples");

  Settings s;
  s.sampling.temperature = static_cast<float>(a.get_double("temperature"));
  s.sampling.top_k = a.get_int32("top-k", 0);
  s.sampling.top_p = static_cast<float>(a.get_double("top-p"));
  const int rows = a.get_int32("num-samples", 1, 256);
  s.max_new_tokens = a.get_int32("max-new-tokens", 1);
  s.seed = static_cast<uint64_t>(a.get_int("seed", 0));
  s.stop = a.all("stop");
  for (const std::string& stop : s.stop)  // (an empty text is contained everywhere: it would stop at once)
    if (stop.empty()) throw cli::UsageError("dsk sample: --stop needs a non-empty text");
  try {
    validate(s.sampling);
  } catch (const Error& e) {
    throw cli::UsageError(fmt::format("dsk sample: {}", e.what()));
  }

  std::string text = a.has("prompt") ? a.get("prompt") : "";
  if (a.has("prompt-file")) {
    // A byte order mark is not part of the prompt (editors add one); `dsk prepare` drops it from training text too.
    text = std::string(utf8::strip_bom(read_file(a.get("prompt-file"), "prompt file")));
  }

  DecodeMode mode;
  try {
    mode = parse_decode_mode(a.get("attention"));
  } catch (const Error& e) {
    throw cli::UsageError(fmt::format("dsk sample: {}", e.what()));
  }
  cuda::set_attention_math(cli::parse_math("attention-math", a.get("attention-math")));
  SampleRunner r(a, mode);
  install_sigint_handler();
  if (a.has("interactive")) return run_interactive(r, s);

  const std::vector<int32_t> prompt = r.encode_prompt(text);
  // The prompt as it was encoded: invalid bytes (a --prompt-file that is not UTF-8) print as U+FFFD, like the
  // generated text, so stdout is valid UTF-8 throughout.
  const std::string shown = utf8::replace_invalid(text);
  if (rows == 1) {
    std::fwrite(shown.data(), 1, shown.size(), stdout);  // the prompt, then the continuation as it streams
    std::fflush(stdout);
  }
  std::vector<Generated> g = r.run(prompt, rows, s);
  if (rows == 1) {
    std::fputs("\n", stdout);
  } else {
    for (size_t i = 0; i < g.size(); ++i)
      std::printf("--- sample %zu of %zu ---\n%s%s\n", i + 1, g.size(), shown.c_str(), g[i].text.c_str());
  }
  std::fflush(stdout);
  if (r.verbose())
    for (size_t i = 0; i < g.size(); ++i)
      std::fprintf(stderr, "[sample %zu: %zu tokens, stopped by %s]\n", i + 1, g[i].tokens.size(),
                   stop_reason_name(g[i].reason));
  print_stats(r.stats());
  return g[0].reason == StopReason::Cancelled ? 130 : 0;
}

}  // namespace
}  // namespace dsk

DSK_COMMAND("sample", "generate text from a checkpoint (latent KV cache), --interactive REPL", dsk::run_sample);
