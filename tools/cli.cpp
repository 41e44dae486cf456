#include "tools/cli.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace dsk::cli {

std::map<std::string, Command>& commands() {
  static std::map<std::string, Command> registry;
  return registry;
}

Args::Args(std::string command, std::string summary, std::string usage)
    : command_(std::move(command)), summary_(std::move(summary)), usage_(std::move(usage)) {}

Args& Args::flag(const std::string& name, const std::string& help) {
  order_.push_back(name);
  specs_[name] = Spec{"", help, "", true, false};
  return *this;
}

Args& Args::option(const std::string& name, const std::string& metavar, const std::string& help,
                   const std::string& default_value) {
  order_.push_back(name);
  specs_[name] = Spec{metavar, help, default_value, false, false};
  return *this;
}

Args& Args::repeated(const std::string& name, const std::string& metavar, const std::string& help) {
  order_.push_back(name);
  specs_[name] = Spec{metavar, help, "", false, true};
  return *this;
}

Args& Args::positionals(int max_count) {
  max_positionals_ = max_count;
  return *this;
}

bool Args::parse(const std::vector<std::string>& argv) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(help_text().c_str(), stdout);
      return false;
    }
    if (a.size() > 2 && a.rfind("--", 0) == 0) {
      std::string name = a.substr(2), value;
      bool inline_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        inline_value = true;
      }
      auto it = specs_.find(name);
      if (it == specs_.end())
        throw UsageError(fmt::format("dsk {}: unknown flag --{} (see dsk {} --help)", command_, name, command_));
      if (it->second.is_flag) {
        if (inline_value) throw UsageError(fmt::format("dsk {}: --{} takes no value", command_, name));
        values_[name] = {"1"};
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= argv.size())
          throw UsageError(fmt::format("dsk {}: --{} needs a value ({})", command_, name, it->second.metavar));
        value = argv[++i];
      }
      values_[name].push_back(value);  // a non-repeated option's last value wins (get), all() keeps each
      continue;
    }
    if (static_cast<int>(positional_.size()) >= max_positionals_)
      throw UsageError(fmt::format("dsk {}: unexpected argument '{}' (see dsk {} --help)", command_, a, command_));
    positional_.push_back(a);
  }
  return true;
}

bool Args::has(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end()) return true;
  auto s = specs_.find(name);
  DSK_CHECK(s != specs_.end(), "internal: flag --{} was never declared", name);
  return !s->second.default_value.empty();
}

bool Args::given(const std::string& name) const {
  DSK_CHECK(specs_.count(name), "internal: flag --{} was never declared", name);
  return values_.count(name) > 0;  // values_ holds only what parse() read; defaults live in specs_
}

std::string Args::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end() && !it->second.empty()) return it->second.back();
  auto s = specs_.find(name);
  DSK_CHECK(s != specs_.end(), "internal: flag --{} was never declared", name);
  return s->second.default_value;
}

long long Args::get_int(const std::string& name, long long min, long long max) const {
  std::string v = get(name);
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0')
    throw UsageError(fmt::format("dsk {}: --{} expects an integer, got '{}'", command_, name, v));
  if (errno == ERANGE || x < min || x > max)  // (strtoll saturates where a value does not fit)
    throw UsageError(fmt::format("dsk {}: --{} must be from {} to {}, got {}", command_, name, min, max, v));
  return x;
}

int Args::get_int32(const std::string& name, int min, int max) const {
  return static_cast<int>(get_int(name, min, max));
}

double Args::get_double(const std::string& name) const {
  std::string v = get(name);
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0')
    throw UsageError(fmt::format("dsk {}: --{} expects a number, got '{}'", command_, name, v));
  return x;
}

const std::vector<std::string>& Args::all(const std::string& name) const {
  static const std::vector<std::string> empty;
  auto it = values_.find(name);
  return it == values_.end() ? empty : it->second;
}

std::string shell_quote(const std::string& word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](unsigned char c) {
    return std::isalnum(c) || (c != 0 && std::strchr("_-./:=+,@%", c) != nullptr);
  });
  if (plain) return word;
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);  // ' ends, \' is one, ' resumes
  return out + "'";
}

std::string Args::help_text() const {
  std::string out = fmt::format("dsk {} — {}\n\nusage: {}\n\noptions:\n", command_, summary_, usage_);
  for (const auto& name : order_) {
    const Spec& s = specs_.at(name);
    std::string left = s.is_flag ? "--" + name : fmt::format("--{} {}", name, s.metavar);
    // A help text that already says what its default means ("(default: context_length)") keeps that wording.
    const bool says_default = s.help.find("(default:") != std::string::npos;
    std::string def = s.default_value.empty() || says_default ? "" : fmt::format(" (default: {})", s.default_value);
    std::string rep = s.is_repeated ? " (repeatable)" : "";
    out += fmt::format("  {:<28} {}{}{}\n", left, s.help, def, rep);
  }
  out += fmt::format("  {:<28} {}\n", "--help", "show this help");
  return out;
}

}  // namespace dsk::cli
