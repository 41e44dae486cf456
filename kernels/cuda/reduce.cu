// The plain deterministic column sum (kernels/cuda/reduce.cuh), used for bias gradients.
#include "kernels/cuda/reduce.cuh"

namespace dsk::cuda {

namespace {
// acc[0] += x[r, c]
struct ColumnOf {
  const float* x;
  int C;
  __device__ void operator()(int64_t r, int c, float (&acc)[1]) const { acc[0] += x[r * C + c]; }
};
}  // namespace

void column_sum_accumulate(float* out, const float* x, int64_t R, int C) {
  column_sums_accumulate<1>(ColumnOutputs<1>{{out}}, R, C, ColumnOf{x, C});
}

}  // namespace dsk::cuda
