#include "tools/run_setup.h"

#include "engine/data.h"
#include "engine/paths.h"
#include "engine/sha256.h"
#include "tools/cli.h"

#include <cstdio>
#include <filesystem>

namespace fs = std::filesystem;

namespace dsk::cli {

std::vector<std::string> apply_overrides(const std::vector<std::string>& sets, ModelConfig& model, TrainConfig* train) {
  std::vector<std::string> model_keys;
  for (const std::string& kv : sets) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) throw UsageError(fmt::format("--set expects KEY=VALUE, got '{}'", kv));
    const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
    const bool model_key = model.has_key(key);
    if (!model_key && !(train && train->has_key(key)))
      throw UsageError(fmt::format("--set: unknown config key '{}'", key));
    try {
      if (model_key) {
        model.set(key, value);
        model_keys.push_back(key);
      } else {
        train->set(key, value);
      }
    } catch (const Error& e) {  // a value of the wrong type, typed on the command line
      throw UsageError(fmt::format("--set {}: {}", kv, e.what()));
    }
  }
  return model_keys;
}

void validate_after_overrides(const ModelConfig& model, const TrainConfig* train, const std::vector<std::string>& sets) {
  try {
    model.validate();
    if (train) train->validate_for(model.context_length);
  } catch (const Error& e) {
    if (sets.empty()) throw;
    throw UsageError(e.what());
  }
}

std::string default_corpus() { return (fs::path(data_dir()) / "tinyshakespeare.txt").string(); }

std::string prepared_text(const std::string& text_file, bool verbose) {
  if (fs::is_directory(text_file))
    throw Error(fmt::format("--text {} is a folder: `dsk prepare --input {} --out DIR` prepares a folder of files, "
                            "then train with --data DIR", text_file, text_file));
  if (!fs::is_regular_file(text_file)) throw Error(fmt::format("no such text file: {}", text_file));
  const std::string digest = sha256_file(text_file).substr(0, 16);
  const fs::path dir = fs::path(cache_dir()) / "prepared" / (fs::path(text_file).stem().string() + "-" + digest);
  if (fs::exists(dir / "manifest.json")) return dir.string();
  // The cache is dsk's own: a folder there without its manifest (prepare writes elsewhere and renames, so only
  // something abnormal leaves one) is made again.
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (verbose) std::fprintf(stderr, "preparing %s into %s (once)\n", text_file.c_str(), dir.string().c_str());
  fs::create_directories(dir.parent_path());
  PrepareOptions o;
  o.input = text_file;
  o.out_dir = dir.string();
  o.format = "txt";
  prepare_dataset(o);
  return dir.string();
}

}  // namespace dsk::cli
