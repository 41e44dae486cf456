#pragma once
// `dsk bench attention`, decode part: what MLA's latent cache saves in memory and what absorption costs or saves
// in time, on the same weights run three ways (engine/kv_cache.h): absorbed (latent cache), explicit (latent
// cache, per-head K/V rebuilt every step) and an MHA baseline (full per-head K/V cache).
#include "engine/config.h"
#include "kernels/backend.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace dsk {

struct DecodeSweep {
  std::vector<int> contexts;  // kv lengths reached at the end of the timed decode steps
  std::vector<int> batches;
  int steps = 12;             // timed decode steps per point (after one untimed warm-up step)
  int layers = 0;             // 0: the config's n_layers; else run with this many (the JSON says so)
  std::string note;
};

// The default sweep for a configuration on a device: short on the CPU (the whole `dsk bench attention` runs in
// about two minutes on 2 cores; `large` runs one layer there), wider on a GPU.
DecodeSweep default_decode_sweep(const ModelConfig& c, const std::string& name, Backend device);

// Cache sizes (always for the full model) and, for every sweep point and mode: prefill ms and tokens/s,
// decode ms per step and tokens/s, cache bytes.
nlohmann::json bench_decode(const ModelConfig& c, const std::string& name, Backend device, const DecodeSweep& sweep);

}  // namespace dsk
