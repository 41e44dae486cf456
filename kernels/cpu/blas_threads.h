#pragma once
// OpenBLAS on one thread inside dsk's own OpenMP work, without touching OpenMP's thread count.
//
// The CPU kernels split their work over OpenMP threads themselves (GEMM bands in matmul.cpp, heads in
// attention.cpp); an OpenBLAS thread pool of its own would fight that team for the cores (measured on 2 cores: a
// 1024x256x256 linear went from 1.1 ms to 8.9 ms right after an OpenMP region). But the OpenMP build of OpenBLAS
// (Debian's libopenblas-openmp, which dsk links) implements openblas_set_num_threads(n) as omp_set_num_threads(n):
// called with 1, it left every later parallel region of dsk on one thread, so the whole CPU backend ran on one core
// (found 2026-11-30; 1.75x on the 2-core VM once fixed). OpenMP's count is therefore put back. That build then
// runs a BLAS call inside a parallel region on its calling thread by itself (it checks omp_in_parallel()).
#include <cblas.h>
#include <omp.h>

#include <mutex>

namespace dsk::cpu {

inline void use_single_threaded_blas() {
  static std::once_flag once;
  std::call_once(once, [] {
    const int omp_threads = omp_get_max_threads();
    openblas_set_num_threads(1);
    omp_set_num_threads(omp_threads);
  });
}

}  // namespace dsk::cpu
