#ifdef DSK_HAVE_CUDA
#include "bench/cuda_timing.h"

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.cuh"

#include <algorithm>
#include <vector>

namespace dsk {

namespace {
struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
  Events() {
    DSK_CUDA_CHECK(cudaEventCreate(&start));
    DSK_CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~Events() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
};
}  // namespace

double cuda_median_ms(int warmups, int reps, int sets, const std::function<void(int)>& launch) {
  Events ev;
  cudaStream_t s = cuda::stream();
  for (int w = 0; w < warmups; ++w)
    for (int k = 0; k < sets; ++k) launch(k);
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    DSK_CUDA_CHECK(cudaEventRecord(ev.start, s));
    for (int k = 0; k < sets; ++k) launch(k);
    DSK_CUDA_CHECK(cudaEventRecord(ev.stop, s));
    DSK_CUDA_CHECK(cudaEventSynchronize(ev.stop));
    float t = 0;
    DSK_CUDA_CHECK(cudaEventElapsedTime(&t, ev.start, ev.stop));
    ms.push_back(static_cast<double>(t) / sets);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace dsk
#endif
