#include "engine/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <tuple>

#include "kernels/common.h"

namespace dsk {

// The format is little-endian; we copy bytes straight into host values.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

// The spec caps the header at 100 MB; a larger length is a corrupt file, not a big model.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr const char* kMetadataKey = "__metadata__";

const std::map<std::string, size_t>& dtype_sizes() {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"U16", 2}, {"I16", 2}, {"F16", 2},
      {"BF16", 2}, {"U32", 4}, {"I32", 4}, {"F32", 4},     {"U64", 8},     {"I64", 8}, {"F64", 8}};
  return sizes;
}

// One header entry, checked against the data region of `data_bytes` bytes.
struct Entry {
  std::string name;
  SafeTensor meta;     // dtype and shape; data filled later
  uint64_t begin, end;
};

Entry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& j, uint64_t data_bytes) {
  auto bad = [&](const std::string& what) { DSK_FAIL("safetensors file '{}': tensor '{}': {}", path, name, what); };
  if (!j.is_object()) bad("header entry is not a JSON object");
  if (!j.contains("dtype") || !j["dtype"].is_string()) bad("missing or non-string \"dtype\"");
  if (!j.contains("shape") || !j["shape"].is_array()) bad("missing or non-array \"shape\"");
  if (!j.contains("data_offsets") || !j["data_offsets"].is_array() || j["data_offsets"].size() != 2)
    bad("\"data_offsets\" must be an array [begin, end]");

  Entry e{name, {}, 0, 0};
  e.meta.dtype = j["dtype"].get<std::string>();
  if (!dtype_sizes().count(e.meta.dtype)) bad(fmt::format("unknown dtype \"{}\"", e.meta.dtype));
  uint64_t numel = 1;
  for (const auto& d : j["shape"]) {
    if (!d.is_number_unsigned()) bad("shape entries must be non-negative integers");
    uint64_t v = d.get<uint64_t>();
    if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v) bad("shape overflows");
    numel *= v;
    e.meta.shape.push_back(static_cast<int64_t>(v));
  }
  for (const auto& o : j["data_offsets"])
    if (!o.is_number_unsigned()) bad("data_offsets must be non-negative integers");
  e.begin = j["data_offsets"][0].get<uint64_t>();
  e.end = j["data_offsets"][1].get<uint64_t>();
  if (e.begin > e.end) bad(fmt::format("data_offsets [{}, {}] run backwards", e.begin, e.end));
  if (e.end > data_bytes)
    bad(fmt::format("data_offsets [{}, {}] run past the data region ({} bytes): file truncated or offsets wrong",
                    e.begin, e.end, data_bytes));
  size_t elem = dtype_sizes().at(e.meta.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / elem || e.end - e.begin != numel * elem)
    bad(fmt::format("data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}", e.begin, e.end,
                    e.end - e.begin, j["shape"].dump(), e.meta.dtype, numel * elem));
  return e;
}

}  // namespace

size_t dtype_size(const std::string& dtype) {
  auto it = dtype_sizes().find(dtype);
  DSK_CHECK(it != dtype_sizes().end(), "unknown safetensors dtype \"{}\"", dtype);
  return it->second;
}

int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    DSK_CHECK(d >= 0, "negative dimension {} in a tensor shape", d);
    n *= d;
  }
  return n;
}

SafeTensorsFile read_safetensors(const std::string& path) {
  // (A folder opens as a stream of "9223372036854775807" bytes and fails later with a confusing length.)
  DSK_CHECK(!std::filesystem::is_directory(path), "safetensors file '{}' is a folder, not a file", path);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  DSK_CHECK(in, "cannot open safetensors file '{}'", path);
  const uint64_t file_bytes = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  DSK_CHECK(file_bytes >= 8, "safetensors file '{}' is truncated: {} bytes, not even the 8-byte header length",
            path, file_bytes);

  uint8_t len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | len_bytes[i];
  DSK_CHECK(header_bytes >= 2 && header_bytes <= kMaxHeaderBytes && header_bytes <= file_bytes - 8,
            "safetensors file '{}' has a bad header length {} (file is {} bytes): truncated or not safetensors",
            path, header_bytes, file_bytes);

  std::string header(header_bytes, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_bytes));
  DSK_CHECK(in, "safetensors file '{}': cannot read its {}-byte header", path, header_bytes);
  DSK_CHECK(header[0] == '{', "safetensors file '{}': the header does not start with '{{'", path);
  nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  DSK_CHECK(!j.is_discarded(), "safetensors file '{}': the header is not valid JSON", path);
  DSK_CHECK(j.is_object(), "safetensors file '{}': the header is not a JSON object", path);

  const uint64_t data_bytes = file_bytes - 8 - header_bytes;
  SafeTensorsFile f;
  std::vector<Entry> entries;
  for (const auto& [name, value] : j.items()) {
    if (name == kMetadataKey) {
      DSK_CHECK(value.is_object(), "safetensors file '{}': \"{}\" is not a JSON object", path, kMetadataKey);
      for (const auto& [k, v] : value.items()) {
        DSK_CHECK(v.is_string(), "safetensors file '{}': metadata value of \"{}\" is not a string", path, k);
        f.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, name, value, data_bytes));
  }

  // The offsets must tile [0, data_bytes) exactly: sorted by begin, each tensor starts where the last ended.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  uint64_t covered = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    DSK_CHECK(e.begin >= covered, "safetensors file '{}': tensors '{}' and '{}' have overlapping data_offsets",
              path, prev ? prev->name : "", e.name);
    DSK_CHECK(e.begin == covered, "safetensors file '{}': {} unindexed bytes before tensor '{}' (offsets wrong)",
              path, e.begin - covered, e.name);
    covered = e.end;
    prev = &e;
  }
  DSK_CHECK(covered == data_bytes,
            "safetensors file '{}': {} bytes of data follow the last tensor (offsets wrong or file corrupt)", path,
            data_bytes - covered);

  for (Entry& e : entries) {
    e.meta.data.resize(e.end - e.begin);
    in.seekg(static_cast<std::streamoff>(8 + header_bytes + e.begin));
    in.read(reinterpret_cast<char*>(e.meta.data.data()), static_cast<std::streamsize>(e.meta.data.size()));
    DSK_CHECK(in, "safetensors file '{}': cannot read the data of tensor '{}' (truncated?)", path, e.name);
    f.tensors[e.name] = std::move(e.meta);
  }
  return f;
}

void write_safetensors(const std::string& path, const SafeTensorsFile& f) {
  // Validate everything and build the header before touching the disk.
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : f.tensors) {   // std::map: name order
    DSK_CHECK(!name.empty() && name != kMetadataKey, "cannot write tensor named '{}' to '{}'", name, path);
    uint64_t bytes = static_cast<uint64_t>(shape_numel(t.shape)) * dtype_size(t.dtype);
    DSK_CHECK(t.data.size() == bytes, "tensor '{}' for '{}': {} data bytes but shape and {} need {}", name, path,
              t.data.size(), t.dtype, bytes);
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!f.metadata.empty()) header[kMetadataKey] = f.metadata;
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');   // data region starts 8-byte aligned

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    DSK_CHECK(out, "cannot create '{}' (writing '{}')", tmp, path);
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, t] : f.tensors)
      out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      DSK_FAIL("cannot write '{}' (disk full?); '{}' is unchanged", tmp, path);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  DSK_CHECK(!ec, "cannot rename '{}' to '{}': {}", tmp, path, ec.message());
}

std::vector<float> as_floats(const SafeTensor& t) {
  DSK_CHECK(t.dtype == "F32", "expected an F32 tensor, got {}", t.dtype);
  DSK_CHECK(t.data.size() == static_cast<size_t>(shape_numel(t.shape)) * 4, "F32 tensor: {} bytes do not match its shape",
            t.data.size());
  std::vector<float> v(t.data.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

std::vector<int32_t> as_int32s(const SafeTensor& t) {
  DSK_CHECK(t.dtype == "I32", "expected an I32 tensor, got {}", t.dtype);
  DSK_CHECK(t.data.size() == static_cast<size_t>(shape_numel(t.shape)) * 4, "I32 tensor: {} bytes do not match its shape",
            t.data.size());
  std::vector<int32_t> v(t.data.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

SafeTensor f32_tensor(std::vector<int64_t> shape, const std::vector<float>& values) {
  DSK_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "f32_tensor: {} values for a shape of {} elements",
            values.size(), shape_numel(shape));
  SafeTensor t{"F32", std::move(shape), std::vector<uint8_t>(values.size() * 4)};
  if (!values.empty()) std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

}  // namespace dsk
