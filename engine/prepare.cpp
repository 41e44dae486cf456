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
  if (!(opt.val_fraction > 0.0 && opt.val_fraction < 1.0))
    throw Error(fmt::format("--val-fraction {} leaves a split empty; it must be in (0, 1)", opt.val_fraction));
  const fs::path out = absolute_path(opt.out_dir);
  std::error_code ec;
  // Check the output first: nothing is read or written when it would be refused at the end.
  if (fs::exists(out, ec)) {
    if (!opt.force) throw Error(fmt::format("output folder {} exists; use --force to replace it", out.string()));
    if (!fs::is_directory(out) || (!fs::is_empty(out) && !is_prepared_folder(out)))
      throw Error(fmt::format("refusing to replace {}: it is not a folder made by dsk prepare", out.string()));
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
    const std::string& text = docs[0].text;
    size_t target = static_cast<size_t>(std::floor(text.size() * (1.0 - opt.val_fraction)));
    size_t nl = text.find('\n', target);
    if (nl == std::string::npos || nl + 1 >= text.size()) nl = target > 0 ? text.rfind('\n', target - 1) : std::string::npos;
    if (nl == std::string::npos || nl == 0 || nl + 1 >= text.size())
      throw Error(fmt::format("{} is one document without a line break to split at; validation would be empty",
                              docs[0].origin));
    split_docs.push_back({text.substr(0, nl + 1), docs[0].origin});
    split_docs.push_back({text.substr(nl + 1), docs[0].origin});
    train_idx = {0};
    val_idx = {1};
    split_rule = "single document: validation is the text after the line break nearest (1 - val_fraction)";
  } else {
    size_t n = docs.size();
    size_t n_val = static_cast<size_t>(std::llround(opt.val_fraction * static_cast<double>(n)));
    if (n_val == 0)
      throw Error(fmt::format("--val-fraction {} of {} documents leaves validation empty; raise it to at least {:.3g}",
                              opt.val_fraction, n, 0.5 / static_cast<double>(n) + 1e-9));
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
  m << manifest.dump(2) << "\n";
  if (!m.flush()) throw Error(fmt::format("cannot write {}", (tmp / "manifest.json").string()));
  m.close();
  written.commit();
  return manifest;
}

PreparedData open_prepared(const std::string& dir) {
  fs::path d(dir);
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
