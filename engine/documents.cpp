#include "engine/documents.h"

#include "engine/read_file.h"
#include "kernels/common.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace dsk {

namespace {

std::string read_whole(const fs::path& p) {
  std::string s = read_file(p.string(), "input");
  if (s.rfind("\xEF\xBB\xBF", 0) == 0) s.erase(0, 3);  // a UTF-8 byte order mark is not text
  return s;
}

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e;
}

}  // namespace

std::string resolve_format(const std::string& path, const std::string& format) {
  if (format != "auto") {
    if (format != "txt" && format != "dir" && format != "csv" && format != "jsonl")
      throw Error(fmt::format("unknown input format '{}' (expected txt, dir, csv, jsonl or auto)", format));
    return format;
  }
  if (fs::is_directory(path)) return "dir";
  std::string e = lower_ext(path);
  if (e == ".csv") return "csv";
  if (e == ".jsonl" || e == ".ndjson") return "jsonl";
  return "txt";
}

std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& name) {
  std::vector<CsvRecord> records;
  size_t i = 0, n = text.size();
  int line = 1;
  while (i < n) {
    CsvRecord rec{{}, line};
    while (true) {  // one field per iteration
      std::string field;
      if (i < n && text[i] == '"') {
        int field_line = line;
        ++i;
        while (true) {
          if (i >= n) throw Error(fmt::format("{}:{}: quoted field is never closed", name, field_line));
          char c = text[i++];
          if (c == '"') {
            if (i < n && text[i] == '"') {
              field += '"';
              ++i;
            } else {
              break;
            }
          } else {
            if (c == '\n') ++line;
            field += c;
          }
        }
        if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
          throw Error(fmt::format("{}:{}: unexpected character after a closing quote", name, line));
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          if (text[i] == '"')
            throw Error(fmt::format("{}:{}: quote inside an unquoted field (RFC 4180 needs the field quoted)", name, line));
          field += text[i++];
        }
      }
      rec.fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      // End of record: LF, CRLF, lone CR, or end of text.
      if (i < n && text[i] == '\r') ++i;
      if (i < n && text[i] == '\n') ++i;
      ++line;
      break;
    }
    records.push_back(std::move(rec));
  }
  return records;
}

static std::vector<Document> read_csv(const std::string& path, const std::string& column) {
  std::vector<CsvRecord> recs = parse_csv(read_whole(path), path);
  if (recs.empty()) return {};
  const auto& header = recs[0].fields;
  auto it = std::find(header.begin(), header.end(), column);
  if (it == header.end()) {
    std::string cols;
    for (const auto& h : header) cols += (cols.empty() ? "" : ", ") + h;
    throw Error(fmt::format("{}: no column '{}' in the header (columns: {}); choose one with --column", path, column,
                            cols));
  }
  size_t col = it - header.begin();
  std::vector<Document> docs;
  for (size_t r = 1; r < recs.size(); ++r) {
    const auto& rec = recs[r];
    if (rec.fields.size() == 1 && rec.fields[0].empty()) continue;  // blank line
    if (rec.fields.size() != header.size())
      throw Error(fmt::format("{}:{}: record has {} fields, the header has {}", path, rec.line, rec.fields.size(),
                              header.size()));
    docs.push_back({rec.fields[col], fmt::format("{}:{}", path, rec.line)});
  }
  return docs;
}

static std::vector<Document> read_jsonl(const std::string& path, const std::string& field) {
  std::string text = read_whole(path);
  std::vector<Document> docs;
  size_t start = 0;
  int line = 0;
  while (start < text.size()) {
    ++line;
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    std::string_view row(text.data() + start, nl - start);
    start = nl + 1;
    if (row.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(row);
    } catch (const nlohmann::json::exception& e) {
      std::string what = e.what();
      throw Error(fmt::format("{}:{}: invalid JSON ({})", path, line, what.substr(what.find(']') + 2)));
    }
    if (!j.is_object() || !j.contains(field) || !j[field].is_string())
      throw Error(fmt::format("{}:{}: no string field '{}' (choose one with --field)", path, line, field));
    docs.push_back({j[field].get<std::string>(), fmt::format("{}:{}", path, line)});
  }
  return docs;
}

std::vector<Document> read_documents(const std::string& path, const std::string& format, const std::string& column,
                                     const std::string& field) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(fmt::format("input {} does not exist", path));
  std::string fmt_ = resolve_format(path, format);
  if (fmt_ == "dir") {
    if (!fs::is_directory(path)) throw Error(fmt::format("input {} is not a folder", path));
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && lower_ext(e.path()) == ".txt") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw Error(fmt::format("input folder {} holds no .txt files", path));
    std::vector<Document> docs;
    for (const auto& f : files) docs.push_back({read_whole(f), f.string()});
    return docs;
  }
  if (fs::is_directory(path)) throw Error(fmt::format("input {} is a folder, not a {} file", path, fmt_));
  if (fmt_ == "csv") return read_csv(path, column);
  if (fmt_ == "jsonl") return read_jsonl(path, field);
  return {{read_whole(path), path}};
}

}  // namespace dsk
