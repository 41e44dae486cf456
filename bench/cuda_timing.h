#pragma once
// CUDA-event timing shared by the GPU benchmarks (CUDA builds only).
#include <functional>

namespace dsk {

// Median milliseconds of one launch: each of `reps` repetitions runs launch(k) for every k in [0, sets) between
// two events on dsk's stream and divides by `sets` (rotating buffer sets keep L2 from serving the data);
// `warmups` untimed rounds first.
double cuda_median_ms(int warmups, int reps, int sets, const std::function<void(int)>& launch);

inline double cuda_median_ms(int warmups, int reps, const std::function<void()>& launch) {
  return cuda_median_ms(warmups, reps, 1, [&](int) { launch(); });
}

}  // namespace dsk
