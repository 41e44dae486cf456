#pragma once
// The safetensors format (https://github.com/huggingface/safetensors), read and written by hand: checkpoints
// and the golden test fixtures use it, so any safetensors reader can open what dsk writes.
//
//   8 bytes   little-endian u64 N: the header length
//   N bytes   UTF-8 JSON: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//                          "__metadata__": {"<key>": "<string>", ...}}   (trailing spaces allowed as padding)
//   the rest  raw little-endian tensor bytes; offsets are relative to the start of this region and must tile
//             it exactly (no overlap, no holes, nothing left over)
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsk {

struct SafeTensor {
  std::string dtype;            // "F32", "I32", "BF16", "U16", ... (the format's names)
  std::vector<int64_t> shape;   // empty = a scalar (one element)
  std::vector<uint8_t> data;    // raw little-endian bytes, numel * dtype_size(dtype)
};

struct SafeTensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;   // the "__metadata__" map: strings only
};

// Reads and validates the whole file: header length, JSON, dtypes, shapes, offsets and sizes. Errors are
// dsk::Error messages naming the file and the problem (missing, truncated, bad JSON, overlapping offsets, ...).
SafeTensorsFile read_safetensors(const std::string& path);

// Writes path + ".tmp", then renames it over path, so an existing file survives any failure. Tensors are laid
// out in name order; the header is padded with spaces so the data starts 8-byte aligned.
void write_safetensors(const std::string& path, const SafeTensorsFile& f);

// Bytes per element of a format dtype name; throws for an unknown name.
size_t dtype_size(const std::string& dtype);

// Number of elements of a shape (1 for a scalar); throws on negative dimensions.
int64_t shape_numel(const std::vector<int64_t>& shape);

// The tensor's values; F32 only (I32 only for as_int32s), anything else is an error naming the dtype.
std::vector<float> as_floats(const SafeTensor& t);
std::vector<int32_t> as_int32s(const SafeTensor& t);

// An F32 tensor holding `values` (values.size() must equal the shape's element count).
SafeTensor f32_tensor(std::vector<int64_t> shape, const std::vector<float>& values);

}  // namespace dsk
