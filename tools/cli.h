#pragma once
// The `dsk` command line: a registry of subcommands and a small flag parser shared by all of them.
// Each subcommand lives in its own tools/cmd_<name>.cpp and registers itself with DSK_COMMAND.
#include "kernels/common.h"

#include <limits>
#include <map>
#include <string>
#include <vector>

namespace dsk::cli {

// A bad command line (unknown flag, missing value, bad number): `dsk` prints it and exits with code 2.
struct UsageError : Error {
  using Error::Error;
};

// Declares the flags of one subcommand, then parses argv against them.
class Args {
 public:
  Args(std::string command, std::string summary, std::string usage);

  // A boolean switch: --name.
  Args& flag(const std::string& name, const std::string& help);
  // An option with a value: --name VALUE or --name=VALUE. An empty default means "not set".
  Args& option(const std::string& name, const std::string& metavar, const std::string& help,
               const std::string& default_value = "");
  // An option that may repeat (--set a=1 --set b=2).
  Args& repeated(const std::string& name, const std::string& metavar, const std::string& help);
  // Allow positional arguments (described in the usage line); without this they are an error.
  Args& positionals(int max_count);

  // Parses; returns false when --help was given (the help text has then been printed to stdout).
  bool parse(const std::vector<std::string>& argv);

  bool has(const std::string& name) const;  // flag given, or option given / has a default
  // Given on the command line, default or not: for options that only apply with others ("--split applies to --data
  // only"), where a default must not count.
  bool given(const std::string& name) const;
  std::string get(const std::string& name) const;
  // An integer option; out of [min, max] (or of long long) is a usage error naming the range.
  long long get_int(const std::string& name, long long min = std::numeric_limits<long long>::min(),
                    long long max = std::numeric_limits<long long>::max()) const;
  int get_int32(const std::string& name, int min = std::numeric_limits<int>::min(),
                int max = std::numeric_limits<int>::max()) const;  // get_int within int's range
  double get_double(const std::string& name) const;
  // Every value given, in order; get() returns the last. A non-repeatable option given twice has two here, so a
  // command can refuse what would otherwise silently keep the last one.
  const std::vector<std::string>& all(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  std::string help_text() const;

 private:
  struct Spec {
    std::string metavar, help, default_value;
    bool is_flag = false, is_repeated = false;
  };
  std::string command_, summary_, usage_;
  std::vector<std::string> order_;
  std::map<std::string, Spec> specs_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
  int max_positionals_ = 0;
};

// `word` as a shell reads it back: unchanged when it is plain (letters, digits, _ - . / : = + , @ %), else in single
// quotes. For commands dsk prints for the user to paste ("resume with: dsk train --resume 'my run'").
std::string shell_quote(const std::string& word);

struct Command {
  std::string name;
  std::string summary;
  int (*run)(const std::vector<std::string>& argv);  // argv excludes "dsk" and the command name
};

// Registry of subcommands, filled by static registrars before main runs.
std::map<std::string, Command>& commands();

struct Registrar {
  Registrar(Command c) { commands()[c.name] = c; }
};

}  // namespace dsk::cli

#define DSK_CONCAT_INNER(a, b) a##b
#define DSK_CONCAT(a, b) DSK_CONCAT_INNER(a, b)
// DSK_COMMAND("train", "train a model", run_train);
#define DSK_COMMAND(name, summary, fn) \
  static ::dsk::cli::Registrar DSK_CONCAT(dsk_cmd_registrar_, __LINE__)({name, summary, fn})
