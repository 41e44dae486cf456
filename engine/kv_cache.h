#pragma once
// The inference KV cache and the three ways of running attention at decode time.
//
//   absorbed  (MLA, the default)  the cache holds only the normalized latent c: d_c floats per token per layer.
//             Each head's query is mapped into latent space once per step (q_lat,h = W_uk,hᵀ q_h), scores and the
//             weighted sum are taken directly against the cached latents, and W_uv,h is applied to the result.
//             No per-head K or V is ever materialized.
//   explicit  (MLA) the same latent cache, but every step rebuilds per-head K = W_uk c and V = W_uv c for all
//             cached positions (what a naive MLA implementation does; for `dsk bench attention` and tests).
//   mha       a baseline with a full per-head K/V cache (2·n_heads·head_dim floats per token per layer), K and V
//             computed once per token from the same weights (W_uk c, W_uv c): what MLA's cache replaces.
// All three compute the same function of the weights; they differ in memory and in work per step.
#include "engine/arena.h"
#include "engine/config.h"

#include <string>
#include <vector>

namespace dsk {

enum class DecodeMode { Absorbed, Explicit, MHA };

const char* decode_mode_name(DecodeMode m);
// "absorbed" | "explicit" | "mha"; anything else throws naming the value.
DecodeMode parse_decode_mode(const std::string& name);

// Floats cached per token per layer: d_c for the latent modes, 2·n_heads·head_dim for MHA.
int64_t cache_floats_per_token_layer(const ModelConfig& c, DecodeMode m);

class KVCache {
 public:
  // Room for `batch` rows of `capacity` tokens in every layer, on `device`.
  KVCache(const ModelConfig& c, DecodeMode mode, int batch, int capacity, Backend device);

  DecodeMode mode() const { return mode_; }
  int batch() const { return batch_; }
  int capacity() const { return capacity_; }
  // (batch, capacity, d_c) normalized latents of layer l (absorbed / explicit only)
  float* latent(int l) const { return latent_.at(l).f32(); }
  // (batch, capacity, n_heads·head_dim) per-head keys / values of layer l (mha only)
  float* keys(int l) const { return keys_.at(l).f32(); }
  float* values(int l) const { return values_.at(l).f32(); }
  // Bytes of all cache buffers (every layer, every row, full capacity).
  size_t bytes() const;

 private:
  DecodeMode mode_;
  int batch_, capacity_;
  Arena arena_;
  std::vector<Tensor> latent_, keys_, values_;
};

}  // namespace dsk
