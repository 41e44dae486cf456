#pragma once
// Reading the documents of a corpus for `dsk prepare`: one .txt, a folder of .txt, CSV (RFC 4180) or JSONL.
#include <string>
#include <string_view>
#include <vector>

namespace dsk {

struct Document {
  std::string text;
  std::string origin;  // "FILE", "FILE:LINE" (CSV record / JSONL line start) — for error messages
};

// "auto" resolves to dir (a folder), csv (.csv), jsonl (.jsonl, .ndjson) or txt (anything else).
std::string resolve_format(const std::string& path, const std::string& format);

// Reads all documents. Errors (dsk::Error, one line): missing or unreadable input, unknown format, a CSV without
// the column or malformed (with the line number), malformed JSONL or a line without the string field, invalid
// UTF-8 in a .txt or JSONL file ("FILE:LINE: invalid UTF-8 at byte offset N", N counted in the file on disk), a
// .txt entry of a folder that cannot be followed. (CSV text is checked by the tokenizer, per record.)
std::vector<Document> read_documents(const std::string& path, const std::string& format, const std::string& column,
                                     const std::string& field);

// Input quoted in an error message: at most `max` bytes, then "...", with control characters (\n, \x01) and bytes
// that are not UTF-8 escaped, so that a message stays one short line whatever the file holds.
std::string echo_input(std::string_view s, size_t max = 80);

// RFC 4180 CSV: records of fields; quoted fields may hold commas, doubled quotes and newlines; LF or CRLF.
// `name` is used in errors, which give the 1-based line where the bad record or field starts.
struct CsvRecord {
  std::vector<std::string> fields;
  int line;  // line where the record starts
};
std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& name);

}  // namespace dsk
