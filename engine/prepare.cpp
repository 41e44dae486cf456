// `dsk prepare`: documents -> tokens -> train/val shards + manifest.json, and opening such a folder.
#include "engine/data.h"
#include "engine/documents.h"
#include "engine/folder_replace.h"
#include "engine/paths.h"
#include "engine/sha256.h"
#include "engine/tokenizer.h"
#include "kernels/common.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

namespace fs = std::filesystem;

namespace dsk {

namespace {

constexpr const char* kManifestFormat = "dsk-prepared";
constexpr int kManifestVersion = 1;

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

bool is_prepared_folder(const fs::path& dir) {
  std::ifstream f(dir / "manifest.json");
  if (!f) return false;
  try {
    auto j = nlohmann::json::parse(f);
    return j.value("format", "") == kManifestFormat;
  } catch (...) {
    return false;
  }
}

// The folder --out names. A symbolic link stands for its target: renaming the link itself would turn the user's
// link into a folder and leave the target's old data behind. A link that leads nowhere is refused (replacing it
// by a folder would lose the link, and creating its target is a guess).
fs::path resolve_out(const std::string& out_dir) {
  const fs::path out = absolute_path(out_dir);
  std::error_code ec;
  if (!fs::is_symlink(fs::symlink_status(out, ec))) return out;
  fs::path target = fs::canonical(out, ec);
  if (ec) {
    std::error_code ignored;
    throw Error(fmt::format("output {} is a symbolic link to {}, which cannot be followed ({})", out_dir,
                            fs::read_symlink(out, ignored).string(), ec.message()));
  }
  return target;
}

bool is_inside(const fs::path& p, const fs::path& dir) {
  return std::mismatch(dir.begin(), dir.end(), p.begin(), p.end()).first == dir.end();
}

// --force replaces only what dsk prepare wrote: an empty folder, or one holding a dsk manifest and nothing but
// manifest.json, train.bin, val.bin (files) and leftovers of an interrupted write of them (NAME.tmp-PID).
// Anything else is the user's (notes, even the corpus being read), so the whole folder is refused, naming the
// first such entry. `shown` is the folder as the user spelled it.
void check_replaceable(const fs::path& out, const std::string& shown, const std::string& input) {
  std::error_code ec;
  if (!fs::is_directory(out, ec))
    throw Error(fmt::format("refusing to replace {}: it is not a folder made by dsk prepare", shown));
  fs::path in = fs::weakly_canonical(absolute_path(input), ec);
  if (!ec && is_inside(in, out))
    throw Error(fmt::format("refusing to replace {}: the input {} is inside it", shown, input));
  std::vector<std::string> names;
  for (fs::directory_iterator it(out, ec), end; !ec && it != end; it.increment(ec)) names.push_back(it->path().filename().string());
  if (ec) throw Error(fmt::format("cannot list {}: {}", shown, ec.message()));
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    const std::string stem = replace_leftover_stem(name);
    const std::string& base = stem.empty() ? name : stem;
    const bool ours = base == "manifest.json" || base == "train.bin" || base == "val.bin";
    if (!ours || fs::is_directory(fs::symlink_status(out / name, ec)))
      throw Error(fmt::format("refusing to replace {}: {} was not written by dsk prepare", shown,
                              (fs::path(shown) / name).string()));
  }
  if (!names.empty() && !is_prepared_folder(out))
    throw Error(fmt::format("refusing to replace {}: it is not a folder made by dsk prepare (no dsk manifest.json)",
                            shown));
}

// Encodes every document (in parallel over documents; one big document uses the parallel encoder instead).
std::vector<std::vector<int32_t>> encode_documents(const std::vector<Document>& docs, bool allow_special) {
  const Tokenizer& tok = Tokenizer::gpt2();
  std::vector<std::vector<int32_t>> ids(docs.size());
  auto encode_one = [&](size_t k, int threads) {
    try {
      ids[k] = threads == 1 ? tok.encode(docs[k].text, allow_special) : tok.encode_parallel(docs[k].text, allow_special, false, threads);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: {}", docs[k].origin, e.what()));
    }
  };
  int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (docs.size() == 1) {
    encode_one(0, hw);
    return ids;
  }
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> errors(hw);
  std::vector<std::thread> pool;
  for (int t = 0; t < hw; ++t)
    pool.emplace_back([&, t] {
      try {
        for (size_t k; (k = next.fetch_add(1)) < docs.size();) encode_one(k, 1);
      } catch (...) {
        errors[t] = std::current_exception();
        next = docs.size();
      }
    });
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return ids;
}

// The hint for too small a --val-fraction: the smallest value with 3 significant digits that gives
// round(f * n) >= 1, rounded up (a hint rounded down to the nearest would itself fail).
std::string smallest_val_fraction(size_t n) {
  const double need = 0.5 / static_cast<double>(n);
  double step = std::pow(10.0, std::floor(std::log10(need)) - 2);
  for (double f = std::ceil(need / step) * step;; f += step) {
    std::string s = fmt::format("{:.3g}", f);
    if (std::llround(std::strtod(s.c_str(), nullptr) * static_cast<double>(n)) >= 1) return s;
  }
}

// Documents joined by <|endoftext|> (between documents, not after the last), as uint16.
std::vector<uint16_t> join_split(const std::vector<std::vector<int32_t>>& ids, const std::vector<size_t>& which) {
  size_t total = which.empty() ? 0 : which.size() - 1;
  for (size_t k : which) total += ids[k].size();
  std::vector<uint16_t> out;
  out.reserve(total);
  for (size_t i = 0; i < which.size(); ++i) {
    if (i) out.push_back(static_cast<uint16_t>(Tokenizer::kEndOfText));
    for (int32_t t : ids[which[i]]) out.push_back(static_cast<uint16_t>(t));
  }
  return out;
}

}  // namespace

nlohmann::json prepare_dataset(const PrepareOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  if (opt.input.empty()) throw Error("no input given (--input PATH)");
  if (opt.out_dir.empty()) throw Error("no output folder given (--out DIR)");
  if (!(opt.val_fraction > 0.0 && opt.val_fraction < 1.0))  // (written so that NaN fails too)
    throw Error(fmt::format("--val-fraction must be greater than 0 and less than 1, got {}", opt.val_fraction));
  const fs::path out = resolve_out(opt.out_dir);
  std::error_code ec;
  // Check the output first: nothing is read or written when it would be refused at the end.
  if (fs::exists(fs::symlink_status(out, ec))) {
    if (!opt.force) throw Error(fmt::format("output folder {} exists; use --force to replace it", out.string()));
    std::string shown = opt.out_dir;  // as the user spelled it, without the slash a shell's completion adds
    while (shown.size() > 1 && shown.back() == '/') shown.pop_back();
    check_replaceable(out, shown, opt.input);
  }

  const std::string format = resolve_format(opt.input, opt.format);
  std::vector<Document> all = read_documents(opt.input, format, opt.column, opt.field);
  size_t input_bytes = 0, skipped = 0;
  std::vector<Document> docs;
  for (auto& d : all) {
    input_bytes += d.text.size();
    if (d.text.find_first_not_of(" \t\r\n") == std::string::npos) {
      ++skipped;
      continue;
    }
    docs.push_back(std::move(d));
  }
  if (docs.empty()) throw Error(fmt::format("input {} holds no text ({} empty documents)", opt.input, all.size()));

  // Split. Several documents: a seeded shuffle picks round(val_fraction * n) of them for validation (both splits
  // keep the source order). One document: cut at the first line break at or after (1 - val_fraction) of its
  // bytes (or the last one before it), so validation is the tail of the text.
  std::vector<Document> split_docs;
  std::vector<size_t> train_idx, val_idx;
  std::string split_rule;
  if (docs.size() == 1) {
    // A usable cut leaves text (not only whitespace) on both sides: it lies after the first non-space byte and
    // before the last one. Blank lines at the start or the end are thus never a split on their own.
    const std::string& text = docs[0].text;
    const size_t lo = text.find_first_not_of(" \t\r\n") + 1, hi = text.find_last_not_of(" \t\r\n");
    size_t target = static_cast<size_t>(std::floor(text.size() * (1.0 - opt.val_fraction)));
    size_t nl = lo < hi ? text.find('\n', std::clamp(target, lo, hi)) : std::string::npos;
    if (lo < hi && (nl == std::string::npos || nl >= hi)) nl = text.rfind('\n', hi - 1);
    if (nl == std::string::npos || nl < lo || nl >= hi)
      throw Error(fmt::format("{} is one document without a line break between lines of text to split at; "
                              "validation would be empty", docs[0].origin));
    split_docs.push_back({text.substr(0, nl + 1), docs[0].origin});
    split_docs.push_back({text.substr(nl + 1), docs[0].origin});
    train_idx = {0};
    val_idx = {1};
    split_rule = "single document: validation is the text after the line break nearest (1 - val_fraction)";
  } else {
    size_t n = docs.size();
    size_t n_val = static_cast<size_t>(std::llround(opt.val_fraction * static_cast<double>(n)));
    if (n_val == 0)
      throw Error(fmt::format("--val-fraction {} of {} documents leaves validation empty; raise it to at least {}",
                              opt.val_fraction, n, smallest_val_fraction(n)));
    if (n_val >= n)
      throw Error(fmt::format("--val-fraction {} of {} documents leaves training empty", opt.val_fraction, n));
    std::vector<size_t> order(n);
    for (size_t k = 0; k < n; ++k) order[k] = k;
    std::mt19937_64 rng(opt.seed);  // Fisher-Yates by hand: std::shuffle's sequence is implementation-defined
    for (size_t k = n - 1; k > 0; --k) std::swap(order[k], order[rng() % (k + 1)]);
    std::vector<bool> is_val(n, false);
    for (size_t k = 0; k < n_val; ++k) is_val[order[k]] = true;
    for (size_t k = 0; k < n; ++k) (is_val[k] ? val_idx : train_idx).push_back(k);
    split_docs = std::move(docs);
    split_rule = "by document: a seeded shuffle picks round(val_fraction * documents) for validation";
  }

  auto t_tok = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> ids = encode_documents(split_docs, opt.allow_special);
  double tok_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_tok).count();
  std::vector<uint16_t> train = join_split(ids, train_idx), val = join_split(ids, val_idx);
  if (val.empty()) throw Error("the validation split holds no tokens");

  const Tokenizer& tok = Tokenizer::gpt2();
  nlohmann::json manifest = {
      {"format", kManifestFormat},
      {"version", kManifestVersion},
      {"source", fs::absolute(opt.input).lexically_normal().string()},
      {"input_format", format},
      {"input_bytes", input_bytes},
      {"val_fraction", opt.val_fraction},
      {"seed", opt.seed},
      {"split", split_rule},
      {"special_tokens_in_text", opt.allow_special},
      {"documents", {{"train", train_idx.size()}, {"val", val_idx.size()}, {"skipped_empty", skipped}}},
      {"tokens", {{"train", train.size()}, {"val", val.size()}}},
      {"separator", "<|endoftext|> (50256) between documents"},
      {"shards", {{"train", "train.bin"}, {"val", "val.bin"}, {"dtype", "uint16"}, {"shard_version", kShardVersion}}},
      {"tokenizer",
       {{"name", "gpt2"},
        {"vocab_size", tok.vocab_size()},
        {"encoder_json_sha256", sha256_file(tok.encoder_path())},
        {"vocab_bpe_sha256", sha256_file(tok.vocab_path())}}},
      {"dsk_version", DSK_VERSION},
      {"created", utc_now()},
      {"tokenize_seconds", tok_seconds},
  };
  if (format == "csv") manifest["column"] = opt.column;
  if (format == "jsonl") manifest["field"] = opt.field;

  // Write everything into a temporary sibling folder, then swap it in.
  FolderReplace written(out);
  const fs::path& tmp = written.dir();
  write_token_shard((tmp / "train.bin").string(), train, tok.vocab_size());
  write_token_shard((tmp / "val.bin").string(), val, tok.vocab_size());
  manifest["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ofstream m(tmp / "manifest.json");
  // File and column names are the user's bytes, not always UTF-8: dump them with U+FFFD rather than fail.
  m << manifest.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  if (!m.flush()) throw Error(fmt::format("cannot write {}", (tmp / "manifest.json").string()));
  m.close();
  written.commit();
  return manifest;
}

PreparedData open_prepared(const std::string& dir) {
  fs::path d(dir);
  if (fs::exists(d) && !fs::is_directory(d))
    throw Error(fmt::format("{} is a file, not a folder made by dsk prepare (a text file goes in with --text)", dir));
  if (!fs::is_directory(d)) throw Error(fmt::format("prepared data folder {} does not exist (make it with dsk prepare)", dir));
  PreparedData p;
  p.dir = dir;
  p.train_path = (d / "train.bin").string();
  p.val_path = (d / "val.bin").string();
  std::ifstream f(d / "manifest.json");
  if (!f) throw Error(fmt::format("{} has no manifest.json; is it a folder made by dsk prepare?", dir));
  try {
    p.manifest = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}/manifest.json is not valid JSON", dir));
  }
  if (!p.manifest.is_object() || p.manifest.value("format", "") != kManifestFormat)
    throw Error(fmt::format("{}/manifest.json is not a dsk prepared-data manifest", dir));
  if (p.manifest.value("version", 0) != kManifestVersion)
    throw Error(fmt::format("{}/manifest.json has version {}; this dsk reads version {}", dir,
                            p.manifest.value("version", 0), kManifestVersion));
  for (const auto& path : {p.train_path, p.val_path})
    if (!fs::is_regular_file(path)) throw Error(fmt::format("{} is missing (re-run dsk prepare)", path));
  return p;
}

}  // namespace dsk
