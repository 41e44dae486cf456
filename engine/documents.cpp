#include "engine/documents.h"

#include "engine/read_file.h"
#include "engine/utf8.h"
#include "kernels/common.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace dsk {

namespace {

// The file's text; *bom receives the length of the UTF-8 byte order mark removed (it is not text), so that
// offsets in messages can count the bytes as they are on disk.
std::string read_whole(const fs::path& p, size_t* bom = nullptr) {
  std::string s = read_file(p.string(), "input");
  const size_t skip = s.size() - utf8::strip_bom(s).size();
  s.erase(0, skip);
  if (bom) *bom = skip;
  return s;
}

// Invalid UTF-8 in `text`, which is line `line` of `name` from the file's byte `base` on, as
// "NAME:LINE: invalid UTF-8 at byte offset N" with the line and offset of the bad byte in the file. (Checked
// before a text is cut or parsed: the tokenizer could only name an offset in the piece it was given.)
void check_utf8(std::string_view text, const std::string& name, size_t base, int line) {
  const size_t bad = utf8::first_invalid(text);
  if (bad == std::string_view::npos) return;
  line += static_cast<int>(std::count(text.begin(), text.begin() + bad, '\n'));
  throw Error(fmt::format("{}:{}: invalid UTF-8 at byte offset {} (byte 0x{:02X})", name, line, base + bad,
                          static_cast<unsigned char>(text[bad])));
}

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e;
}

}  // namespace

std::string echo_input(std::string_view s, size_t max) {
  std::string out;
  size_t i = 0;
  for (; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : utf8::sequence_length(s, i);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F || len == 0) {
      out += fmt::format("\\x{:02X}", c);
    } else {
      out.append(s.substr(i, len));
      i += len - 1;
    }
  }
  if (i < s.size()) out += "...";
  return out;
}

std::string resolve_format(const std::string& path, const std::string& format) {
  if (format != "auto") {
    if (format != "txt" && format != "dir" && format != "csv" && format != "jsonl")
      throw Error(fmt::format("unknown input format '{}' (expected txt, dir, csv, jsonl or auto)", format));
    return format;
  }
  std::error_code ec;  // (a link loop is reported by the reader, not thrown here)
  if (fs::is_directory(path, ec)) return "dir";
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

// One .txt file: one document, checked to be UTF-8 (the message names the file's own line and byte offset).
static Document read_txt(const fs::path& path) {
  size_t bom = 0;
  std::string text = read_whole(path, &bom);
  check_utf8(text, path.string(), bom, 1);
  return {std::move(text), path.string()};
}

static std::vector<Document> read_csv(const std::string& path, const std::string& column) {
  std::vector<CsvRecord> recs = parse_csv(read_whole(path), path);
  if (recs.empty()) return {};
  const auto& header = recs[0].fields;
  auto it = std::find(header.begin(), header.end(), column);
  if (it == header.end()) {
    // Names are echoed escaped and the list is cut short: a file that is not CSV has one huge "header".
    std::string cols;
    for (size_t k = 0; k < header.size() && k < 20; ++k) cols += (k ? ", " : "") + echo_input(header[k]);
    if (header.size() > 20) cols += fmt::format(", ... ({} in all)", header.size());
    throw Error(fmt::format("{}: no column '{}' in the header (columns: {}); choose one with --column", path,
                            echo_input(column), cols));
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
  size_t bom = 0;
  std::string text = read_whole(path, &bom);
  std::vector<Document> docs;
  size_t start = 0;
  int line = 0;
  while (start < text.size()) {
    ++line;
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    std::string_view row(text.data() + start, nl - start);
    check_utf8(row, path, bom + start, line);  // before parsing: the parser's message would echo the raw byte
    start = nl + 1;
    if (row.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(row);
    } catch (const nlohmann::json::exception& e) {
      // "[json.exception.parse_error.101] ... last read: '<the line so far>'": the echoed line is cut short.
      std::string what = e.what();
      what = what.substr(what.find(']') + 2);
      const size_t echoed = what.find("last read: '");
      if (echoed != std::string::npos) {
        std::string_view read = std::string_view(what).substr(echoed + 12);
        if (!read.empty() && read.back() == '\'') read.remove_suffix(1);
        what = what.substr(0, echoed + 12) + echo_input(read) + "'";
      }
      throw Error(fmt::format("{}:{}: invalid JSON ({})", path, line, echo_input(what, 200)));
    }
    if (!j.is_object() || !j.contains(field) || !j[field].is_string())
      throw Error(fmt::format("{}:{}: no string field '{}' (choose one with --field)", path, line, echo_input(field)));
    docs.push_back({j[field].get<std::string>(), fmt::format("{}:{}", path, line)});
  }
  return docs;
}

std::vector<Document> read_documents(const std::string& path, const std::string& format, const std::string& column,
                                     const std::string& field) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) {
    if (ec && ec != std::errc::no_such_file_or_directory)  // e.g. a link loop
      throw Error(fmt::format("cannot read the input {}: {}", path, ec.message()));
    throw Error(fmt::format("input {} does not exist", path));
  }
  std::string fmt_ = resolve_format(path, format);
  if (fmt_ == "dir") {
    if (!fs::is_directory(st)) throw Error(fmt::format("input {} is not a folder", path));
    std::vector<fs::path> files;
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      // Only .txt entries are looked at (a link loop among other files is no concern); a .txt folder is skipped
      // (not recursive), and a .txt that cannot be followed (dangling link, link loop) is an error, not a
      // document silently left out.
      const fs::path& p = it->path();
      if (lower_ext(p) != ".txt") continue;
      // Hidden entries are not documents: macOS's "._name.txt" companions hold binary metadata, editors keep
      // ".name.txt.swp"-style state, and a user does not see them in the folder either.
      if (p.filename().string().front() == '.') continue;
      std::error_code entry_ec;
      const fs::file_status entry = fs::status(p, entry_ec);
      if (!fs::exists(entry))
        throw Error(fmt::format("cannot read the input {}: {}", p.string(),
                                (entry_ec ? entry_ec : std::make_error_code(std::errc::no_such_file_or_directory)).message()));
      if (fs::is_regular_file(entry)) files.push_back(p);
    }
    if (ec) throw Error(fmt::format("cannot list the input folder {}: {}", path, ec.message()));
    std::sort(files.begin(), files.end());
    if (files.empty()) throw Error(fmt::format("input folder {} holds no .txt files", path));
    std::vector<Document> docs;
    for (const auto& f : files) docs.push_back(read_txt(f));
    return docs;
  }
  if (fs::is_directory(st)) throw Error(fmt::format("input {} is a folder, not a {} file", path, fmt_));
  if (fmt_ == "csv") return read_csv(path, column);
  if (fmt_ == "jsonl") return read_jsonl(path, field);
  return {read_txt(path)};
}

}  // namespace dsk
