#include "engine/kv_cache.h"

namespace dsk {

const char* decode_mode_name(DecodeMode m) {
  switch (m) {
    case DecodeMode::Absorbed: return "absorbed";
    case DecodeMode::Explicit: return "explicit";
    case DecodeMode::MHA: return "mha";
  }
  return "?";
}

DecodeMode parse_decode_mode(const std::string& name) {
  if (name == "absorbed") return DecodeMode::Absorbed;
  if (name == "explicit") return DecodeMode::Explicit;
  if (name == "mha") return DecodeMode::MHA;
  throw Error(fmt::format("unknown attention mode '{}' (absorbed, explicit or mha)", name));
}

int64_t cache_floats_per_token_layer(const ModelConfig& c, DecodeMode m) {
  if (m == DecodeMode::MHA) return 2LL * c.n_heads * c.head_dim();
  return c.kv_latent_dim;
}

KVCache::KVCache(const ModelConfig& c, DecodeMode mode, int batch, int capacity, Backend device)
    : mode_(mode), batch_(batch), capacity_(capacity) {
  DSK_CHECK(batch > 0 && capacity > 0, "KVCache: batch {} and capacity {} must be positive", batch, capacity);
  const int64_t per_layer = static_cast<int64_t>(batch) * capacity * cache_floats_per_token_layer(c, mode);
  const size_t bytes = static_cast<size_t>(per_layer) * sizeof(float) * c.n_layers + 2 * c.n_layers * Arena::kAlign;
  arena_ = Arena(device, bytes, "kv_cache");
  const int64_t d = static_cast<int64_t>(c.n_heads) * c.head_dim();
  for (int l = 0; l < c.n_layers; ++l) {
    if (mode == DecodeMode::MHA) {
      keys_.push_back(arena_.alloc({batch, capacity, d}));
      values_.push_back(arena_.alloc({batch, capacity, d}));
    } else {
      latent_.push_back(arena_.alloc({batch, capacity, c.kv_latent_dim}));
    }
  }
}

size_t KVCache::bytes() const {
  size_t b = 0;
  for (const auto* v : {&latent_, &keys_, &values_})
    for (const Tensor& t : *v) b += t.bytes();
  return b;
}

}  // namespace dsk
