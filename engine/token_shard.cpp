// Token shard files: writing (temp file + rename) and memory-mapped reading with header validation.
#include "engine/data.h"

#include "kernels/common.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace dsk {

namespace {

struct ShardHeader {  // 64 bytes, little-endian
  char magic[8];
  uint32_t version;
  uint32_t dtype;
  uint64_t token_count;
  uint32_t vocab_size;
  uint8_t padding[36];
};
static_assert(sizeof(ShardHeader) == kShardHeaderBytes);

}  // namespace

void write_token_shard(const std::string& path, const std::vector<uint16_t>& tokens, int vocab_size) {
  DSK_CHECK(vocab_size > 0 && vocab_size <= 65536, "vocab size {} does not fit uint16 tokens", vocab_size);
  ShardHeader h{};
  std::memcpy(h.magic, kShardMagic, 8);
  h.version = kShardVersion;
  h.dtype = kShardDtypeU16;
  h.token_count = tokens.size();
  h.vocab_size = static_cast<uint32_t>(vocab_size);
  std::string tmp = fmt::format("{}.tmp-{}", path, getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  bool ok = std::fwrite(&h, sizeof h, 1, f) == 1 &&
            (tokens.empty() || std::fwrite(tokens.data(), sizeof(uint16_t), tokens.size(), f) == tokens.size());
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error(fmt::format("cannot write {} (disk full?)", path));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(errno)));
  }
}

TokenShard::TokenShard(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(fmt::format("cannot open token shard {}: {}", path, std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(fmt::format("cannot stat token shard {}", path));
  }
  size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes < kShardHeaderBytes) {
    ::close(fd);
    throw Error(fmt::format("{}: not a token shard (truncated: {} bytes, the header alone is {})", path, bytes,
                            kShardHeaderBytes));
  }
  void* m = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw Error(fmt::format("cannot map token shard {}: {}", path, std::strerror(errno)));
  map_ = m;
  map_bytes_ = bytes;
  ShardHeader h;
  std::memcpy(&h, m, sizeof h);
  auto reject = [&](const std::string& why) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw Error(fmt::format("{}: {}", path, why));
  };
  if (std::memcmp(h.magic, kShardMagic, 8) != 0) reject("not a token shard (bad magic, expected DSKTOKNS)");
  if (h.version != kShardVersion)
    reject(fmt::format("token shard version {} is not supported (this dsk reads version {})", h.version, kShardVersion));
  if (h.dtype != kShardDtypeU16) reject(fmt::format("token dtype {} is not supported (1 = uint16)", h.dtype));
  if (h.vocab_size == 0 || h.vocab_size > 65536) reject(fmt::format("bad vocab size {}", h.vocab_size));
  if (h.token_count > (bytes - kShardHeaderBytes) / 2 || bytes != kShardHeaderBytes + 2 * h.token_count)
    reject(fmt::format("file is {} bytes but the header promises {} tokens ({} bytes): truncated or corrupt", bytes,
                       h.token_count, kShardHeaderBytes + 2 * h.token_count));
  tokens_ = reinterpret_cast<const uint16_t*>(static_cast<const char*>(m) + kShardHeaderBytes);
  size_ = h.token_count;
  vocab_size_ = static_cast<int>(h.vocab_size);
  // One pass over the tokens: an out-of-range id would index past the embedding table later.
  uint16_t max_id = 0;
  for (size_t k = 0; k < size_; ++k) max_id = std::max(max_id, tokens_[k]);
  if (size_ > 0 && max_id >= h.vocab_size) {
    size_t at = 0;
    while (tokens_[at] < h.vocab_size) ++at;
    reject(fmt::format("token {} at index {} is outside the vocabulary ({})", tokens_[at], at, h.vocab_size));
  }
}

TokenShard::~TokenShard() {
  if (map_) ::munmap(map_, map_bytes_);
}

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)), map_(o.map_), map_bytes_(o.map_bytes_), tokens_(o.tokens_), size_(o.size_),
      vocab_size_(o.vocab_size_) {
  o.map_ = nullptr;
  o.tokens_ = nullptr;
  o.size_ = 0;
}

TokenShard& TokenShard::operator=(TokenShard&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_bytes_);
    path_ = std::move(o.path_);
    map_ = o.map_;
    map_bytes_ = o.map_bytes_;
    tokens_ = o.tokens_;
    size_ = o.size_;
    vocab_size_ = o.vocab_size_;
    o.map_ = nullptr;
    o.tokens_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

}  // namespace dsk
