#pragma once
// Stand-in for cub::DeviceRadixSort::SortPairs in emulator builds: a stable sort by the key bits
// [begin_bit, end_bit), which is what CUB's LSD radix sort computes.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <vector>

namespace cub {

struct DeviceRadixSort {
  template <class K, class V>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out, const V* values_in,
                               V* values_out, int64_t num_items, int begin_bit = 0, int end_bit = sizeof(K) * 8,
                               cudaStream_t = nullptr) {
    if (temp == nullptr) {
      temp_bytes = 16;
      return cudaSuccess;
    }
    for (const void* p : {static_cast<const void*>(temp), static_cast<const void*>(keys_in),
                          static_cast<const void*>(keys_out), static_cast<const void*>(values_in),
                          static_cast<const void*>(values_out)})
      dsk_emu::require_device_pointer(p, "a cub::DeviceRadixSort::SortPairs buffer");
    dsk_emu::DeviceWork work;
    using U = std::make_unsigned_t<K>;
    const U mask = end_bit - begin_bit >= static_cast<int>(sizeof(K) * 8)
                       ? static_cast<U>(~U(0))
                       : static_cast<U>((U(1) << (end_bit - begin_bit)) - 1);
    // CUB sorts signed keys by their two's-complement bits flipped at the sign; dsk's keys are never negative.
    auto bits = [&](K k) { return static_cast<U>(static_cast<U>(k) >> begin_bit) & mask; };
    std::vector<int64_t> order(static_cast<size_t>(num_items));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return bits(keys_in[a]) < bits(keys_in[b]); });
    std::vector<K> k(order.size());
    std::vector<V> v(order.size());
    for (size_t i = 0; i < order.size(); ++i) {
      k[i] = keys_in[order[i]];
      v[i] = values_in[order[i]];
    }
    std::copy(k.begin(), k.end(), keys_out);
    std::copy(v.begin(), v.end(), values_out);
    return cudaSuccess;
  }
};

}  // namespace cub
