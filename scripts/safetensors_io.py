"""A small hand-written reader and writer of the safetensors format (no `safetensors` package needed).

Layout of a file:
    8 bytes   little-endian u64 N, the header length
    N bytes   JSON header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
                            "__metadata__": {"key": "string value", ...}}
              padded with spaces so that the data starts 8-byte aligned (the spec allows trailing spaces)
    rest      the raw little-endian tensor bytes; offsets are relative to the start of this region,
              tensors are packed without holes (here in name order)
"""
import json
import struct

import numpy as np

# dtype name -> numpy dtype (little-endian). BF16 has no numpy type; it is kept as raw uint16 words.
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
NUMPY_TO_DTYPE = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<i4"): "I32", np.dtype("<i8"): "I64",
                  np.dtype("<u2"): "U16", np.dtype("u1"): "U8"}


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: numpy array}; metadata: {str: str}. Tensors are laid out in name order."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        dtype = NUMPY_TO_DTYPE[arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype]
        raw = arr.astype(DTYPES[dtype], copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()), "metadata: str -> str"
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-(8 + len(text))) % 8)  # pad so the data region starts at a multiple of 8
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path):
    """Returns ({name: numpy array}, {metadata}); checks sizes and that the offsets tile the data region."""
    with open(path, "rb") as f:
        blob = f.read()
    assert len(blob) >= 8, f"{path}: truncated (no header length)"
    (n,) = struct.unpack("<Q", blob[:8])
    assert 8 + n <= len(blob), f"{path}: header length {n} exceeds the file"
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    tensors, end_prev = {}, 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        dt = DTYPES[info["dtype"]]
        count = int(np.prod(info["shape"], dtype=np.int64))
        assert begin == end_prev, f"{path}: {name}: offsets leave a hole or overlap"
        assert end - begin == count * dt.itemsize, f"{path}: {name}: byte size does not match shape"
        tensors[name] = np.frombuffer(data[begin:end], dtype=dt).reshape(info["shape"]).copy()
        end_prev = end
    assert end_prev == len(data), f"{path}: {len(data) - end_prev} unindexed bytes after the last tensor"
    return tensors, metadata
