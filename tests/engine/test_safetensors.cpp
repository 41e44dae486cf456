// safetensors reader/writer: round trip, layout details of the spec, and clear errors for broken files.
#include "engine/safetensors.h"

#include "tests/test_env.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "kernels/common.h"

namespace fs = std::filesystem;
using dsk::SafeTensor;
using dsk::SafeTensorsFile;
using Catch::Matchers::Contains;

namespace {

// A fresh scratch folder per test case, removed afterwards.
// TempDir with the path(name) spelling these tests use.
struct TempDir : dsk::testing::TempDir {
  TempDir() : dsk::testing::TempDir("safetensors") {}
  std::string path(const std::string& name) const { return (*this) / name; }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A hand-made file: length prefix, the given header text, then `data_bytes` zero bytes.
std::string raw_file(const std::string& header, size_t data_bytes) {
  return u64_le(header.size()) + header + std::string(data_bytes, '\0');
}

SafeTensorsFile sample_file() {
  SafeTensorsFile f;
  f.tensors["b.weight"] = dsk::f32_tensor({2, 3}, {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f});
  f.tensors["a.scalar"] = dsk::f32_tensor({}, {42.0f});
  f.tensors["empty"] = dsk::f32_tensor({0, 4}, {});
  SafeTensor ids{"I32", {3}, {}};
  ids.data.resize(12);
  int32_t vals[3] = {-1, 7, 2147483647};
  std::memcpy(ids.data.data(), vals, 12);
  f.tensors["ids"] = ids;
  f.tensors["half"] = SafeTensor{"BF16", {1, 3}, {0x80, 0x3f, 0x00, 0xc0, 0x49, 0x40}};   // 1, -2, 3.14 as bf16
  f.metadata["format"] = "pt";
  f.metadata["config"] = R"({"emb_dim": 32})";
  return f;
}

}  // namespace

TEST_CASE("safetensors: write then read gives back every tensor and the metadata", "[engine][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.path("model.safetensors");
  const SafeTensorsFile f = sample_file();
  dsk::write_safetensors(path, f);
  CHECK_FALSE(fs::exists(path + ".tmp"));

  const SafeTensorsFile g = dsk::read_safetensors(path);
  REQUIRE(g.tensors.size() == f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    INFO(name);
    REQUIRE(g.tensors.count(name));
    CHECK(g.tensors.at(name).dtype == t.dtype);
    CHECK(g.tensors.at(name).shape == t.shape);
    CHECK(g.tensors.at(name).data == t.data);
  }
  CHECK(g.metadata == f.metadata);
  CHECK(dsk::as_floats(g.tensors.at("b.weight")) == std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f});
  CHECK(dsk::as_int32s(g.tensors.at("ids")) == std::vector<int32_t>{-1, 7, 2147483647});
  CHECK(dsk::as_floats(g.tensors.at("a.scalar")) == std::vector<float>{42.0f});
}

TEST_CASE("safetensors: layout follows the spec (aligned, space-padded, name order)", "[engine][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.path("m.safetensors");
  dsk::write_safetensors(path, sample_file());
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  CHECK((8 + n) % 8 == 0);
  const std::string header = bytes.substr(8, n);
  CHECK(header.front() == '{');
  CHECK(header.find_last_not_of(' ') == header.rfind('}'));   // only spaces after the JSON
  auto j = nlohmann::json::parse(header);
  uint64_t prev_end = 0;
  std::string prev_name;
  for (const auto& [name, info] : j.items()) {   // nlohmann's object iterates in name order
    if (name == "__metadata__") continue;
    CHECK(name > prev_name);
    CHECK(info["data_offsets"][0].get<uint64_t>() == prev_end);   // packed in name order
    prev_end = info["data_offsets"][1].get<uint64_t>();
    prev_name = name;
  }
  CHECK(8 + n + prev_end == bytes.size());
}

TEST_CASE("safetensors: rewriting replaces the file; a rejected write leaves it intact", "[engine][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.path("m.safetensors");
  dsk::write_safetensors(path, sample_file());
  SafeTensorsFile small;
  small.tensors["x"] = dsk::f32_tensor({1}, {5.0f});
  dsk::write_safetensors(path, small);
  CHECK(dsk::read_safetensors(path).tensors.size() == 1);

  const std::string before = read_bytes(path);
  SafeTensorsFile bad;
  bad.tensors["y"] = SafeTensor{"F32", {2}, std::vector<uint8_t>(4)};   // 4 bytes for 2 floats
  CHECK_THROWS_WITH(dsk::write_safetensors(path, bad), Contains("'y'") && Contains("need 8"));
  bad.tensors["y"] = SafeTensor{"F33", {1}, std::vector<uint8_t>(4)};
  CHECK_THROWS_WITH(dsk::write_safetensors(path, bad), Contains("unknown safetensors dtype"));
  CHECK(read_bytes(path) == before);
  CHECK_THROWS_WITH(dsk::write_safetensors(tmp.path("no/such/dir/m.safetensors"), small), Contains("cannot create"));
}

TEST_CASE("safetensors: missing, truncated and bad-length files are clear errors", "[engine][safetensors]") {
  TempDir tmp;
  CHECK_THROWS_WITH(dsk::read_safetensors(tmp.path("absent.safetensors")),
                    Contains("cannot open") && Contains("absent.safetensors"));

  const std::string path = tmp.path("m.safetensors");
  dsk::write_safetensors(path, sample_file());
  const std::string good = read_bytes(path);

  write_bytes(path, good.substr(0, 5));
  CHECK_THROWS_WITH(dsk::read_safetensors(path), Contains("truncated") && Contains("m.safetensors"));

  write_bytes(path, good.substr(0, good.size() - 3));   // data cut short
  CHECK_THROWS_WITH(dsk::read_safetensors(path), Contains("m.safetensors") && Contains("truncated"));

  write_bytes(path, good.substr(0, 40));   // header cut short
  CHECK_THROWS_WITH(dsk::read_safetensors(path), Contains("bad header length"));

  write_bytes(path, u64_le(1ull << 40) + good.substr(8));
  CHECK_THROWS_WITH(dsk::read_safetensors(path), Contains("bad header length"));
  write_bytes(path, u64_le(0) + good.substr(8));
  CHECK_THROWS_WITH(dsk::read_safetensors(path), Contains("bad header length"));
}

TEST_CASE("safetensors: malformed headers are rejected with the problem named", "[engine][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.path("h.safetensors");
  auto expect_error = [&](const std::string& header, size_t data_bytes, const std::string& needle) {
    INFO(header);
    write_bytes(path, raw_file(header, data_bytes));
    CHECK_THROWS_WITH(dsk::read_safetensors(path), Contains(needle) && Contains("h.safetensors"));
  };
  const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  expect_error(R"({"a":{"dtype":"F32","shape":[2],)", 8, "not valid JSON");
  expect_error(R"(["a"])", 0, "does not start with '{'");
  expect_error("{" + a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12, "overlapping");
  expect_error("{" + a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", 16, "unindexed bytes");
  expect_error("{" + a + "}", 12, "follow the last tensor");
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8, "run past the data region");
  expect_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "needs 12");
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "backwards");
  expect_error(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8, "unknown dtype");
  expect_error(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "non-negative");
  expect_error(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8, "\"shape\"");
  expect_error("{" + a + R"(,"__metadata__":{"n":3}})", 8, "not a string");

  // The well-formed variant of the same file reads, so the cases above fail for the reason they name.
  write_bytes(path, raw_file("{" + a + R"(,"__metadata__":{"n":"3"}}    )", 8));
  CHECK(dsk::read_safetensors(path).tensors.at("a").shape == std::vector<int64_t>{2});
}

TEST_CASE("safetensors: typed accessors check the dtype", "[engine][safetensors]") {
  SafeTensor ids{"I32", {1}, std::vector<uint8_t>(4)};
  CHECK_THROWS_WITH(dsk::as_floats(ids), Contains("expected an F32 tensor, got I32"));
  CHECK_THROWS_WITH(dsk::as_int32s(dsk::f32_tensor({1}, {1.0f})), Contains("expected an I32 tensor, got F32"));
  CHECK_THROWS_WITH(dsk::f32_tensor({2, 2}, {1.0f}), Contains("1 values"));
  CHECK(dsk::dtype_size("BF16") == 2);
  CHECK(dsk::shape_numel({}) == 1);
  CHECK(dsk::shape_numel({3, 0, 2}) == 0);
}
