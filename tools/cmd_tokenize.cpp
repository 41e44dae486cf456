// `dsk tokenize encode|decode [FILE|-]`: the GPT-2 tokenizer on the command line.
#include "engine/read_file.h"
#include "engine/tokenizer.h"
#include "tools/cli.h"

#include <algorithm>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace {

std::string read_input(const std::string& path) {
  if (path.empty() || path == "-") {
    // A folder on stdin (`< somedir`) reads as nothing through iostreams; refuse it as a folder argument is.
    struct stat st;
    if (fstat(STDIN_FILENO, &st) == 0 && S_ISDIR(st.st_mode))
      throw dsk::Error("the input <stdin> is a folder, not a file");
    std::string text;
    char buf[1 << 16];
    for (ssize_t n; (n = read(STDIN_FILENO, buf, sizeof buf)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw dsk::Error(fmt::format("cannot read the input <stdin>: {}", std::strerror(errno)));
      text.append(buf, static_cast<size_t>(n));
    }
    return text;
  }
  return dsk::read_file(path, "input");
}

// The way past invalid UTF-8 that only this command offers (the tokenizer's message names the offset only).
std::string replace_hint(const dsk::cli::Args& args, const std::string& error) {
  const bool utf8 = error.find("invalid UTF-8") != std::string::npos;
  return utf8 && !args.has("replace-invalid") ? "; --replace-invalid encodes U+FFFD instead" : "";
}

// Whitespace-separated decimal ids; anything else is an error naming its position.
std::vector<int32_t> parse_ids(const std::string& text, const std::string& name) {
  std::vector<int32_t> ids;
  size_t i = 0, n = text.size();
  while (i < n) {
    while (i < n && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i >= n) break;
    size_t start = i;
    long long v = 0;
    while (i < n && std::isdigit(static_cast<unsigned char>(text[i])) && v < (1LL << 40)) v = v * 10 + (text[i++] - '0');
    if (i == start || (i < n && !std::isspace(static_cast<unsigned char>(text[i])))) {
      size_t end = start;
      while (end < n && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
      throw dsk::Error(fmt::format("{}: '{}' at byte offset {} is not a token id", name,
                                   text.substr(start, std::min<size_t>(end - start, 20)), start));
    }
    if (v > INT32_MAX) throw dsk::Error(fmt::format("{}: token id {} at byte offset {} is out of range", name, v, start));
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

int run_tokenize(const std::vector<std::string>& argv) {
  dsk::cli::Args args("tokenize", "GPT-2 BPE encode/decode",
                      "dsk tokenize encode [FILE|-]   text -> whitespace-separated ids\n"
                      "       dsk tokenize decode [FILE|-]   ids -> text");
  args.flag("count", "print only the number of tokens")
      .flag("no-special", "encode the literal <|endoftext|> as plain text instead of token 50256")
      .flag("replace-invalid", "encode invalid UTF-8 as U+FFFD instead of failing")
      .flag("lines", "encode each input line alone (without its newline, \\n or \\r\\n) and print one line of ids per line")
      .option("threads", "N", "encode with N threads (0: all cores)", "1")
      .positionals(2);
  if (!args.parse(argv)) return 0;
  const auto& pos = args.positional();
  if (pos.empty() || (pos[0] != "encode" && pos[0] != "decode"))
    throw dsk::cli::UsageError("dsk tokenize: expected 'encode' or 'decode' (see dsk tokenize --help)");
  // Every option is checked before any input is read, whatever the mode uses.
  const int threads = args.get_int32("threads", 0, 1024);
  std::string path = pos.size() > 1 ? pos[1] : "-";
  std::string name = path == "-" ? "<stdin>" : path;
  std::string input = read_input(path);
  const dsk::Tokenizer& tok = dsk::Tokenizer::gpt2();

  if (pos[0] == "encode" && args.has("lines")) {
    std::string out;
    size_t start = 0, line_no = 1;
    while (start < input.size()) {
      size_t nl = input.find('\n', start);
      if (nl == std::string::npos) nl = input.size();
      // "\r\n" is a newline too (a Windows file): its \r is not part of the line.
      const size_t end = nl < input.size() && nl > start && input[nl - 1] == '\r' ? nl - 1 : nl;
      std::vector<int32_t> ids;
      try {
        ids = tok.encode(std::string_view(input).substr(start, end - start), !args.has("no-special"),
                         args.has("replace-invalid"));
      } catch (const dsk::Error& e) {
        throw dsk::Error(fmt::format("{}:{}: {}{}", name, line_no, e.what(), replace_hint(args, e.what())));
      }
      if (args.has("count")) {
        out += std::to_string(ids.size());
      } else {
        for (size_t k = 0; k < ids.size(); ++k) (k ? out += ' ' : out) += std::to_string(ids[k]);
      }
      out += '\n';
      start = nl + 1;
      ++line_no;
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  }
  if (pos[0] == "encode") {
    std::vector<int32_t> ids;
    try {
      ids = tok.encode_parallel(input, !args.has("no-special"), args.has("replace-invalid"), threads);
    } catch (const dsk::Error& e) {
      throw dsk::Error(fmt::format("{}: {}{}", name, e.what(), replace_hint(args, e.what())));
    }
    if (args.has("count")) {
      std::printf("%zu\n", ids.size());
      return 0;
    }
    std::string out;
    out.reserve(ids.size() * 6);
    for (size_t k = 0; k < ids.size(); ++k) {
      if (k) out += ' ';
      out += std::to_string(ids[k]);
    }
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  }
  std::vector<int32_t> ids = parse_ids(input, name);
  std::string text;
  try {
    text = tok.decode(ids);  // also for --count: an id that does not decode is an error either way
  } catch (const dsk::Error& e) {
    throw dsk::Error(fmt::format("{}: {}", name, e.what()));
  }
  if (args.has("count")) {
    std::printf("%zu\n", ids.size());
    return 0;
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace

DSK_COMMAND("tokenize", "GPT-2 tokenizer: encode text to ids, decode ids to text", run_tokenize);
