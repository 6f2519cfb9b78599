// dynrnn: the one place that decides whether a loop runs on several threads.
//
// dynrnn uses OpenMP when the program that includes it is compiled with it
// (-fopenmp; in CMake, link OpenMP::OpenMP_CXX). The number of threads is
// OpenMP's: OMP_NUM_THREADS, or omp_set_num_threads() / dynrnn::set_num_threads().
#pragma once

#include "check.hpp"
#include "types.hpp"

#include <algorithm>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef DYNRNN_GEMM_OPENBLAS
#include <cblas.h>
#endif

namespace dynrnn {

/// \brief Sets how many threads dynrnn's products and elementwise loops may use (OpenMP's
/// omp_set_num_threads, and OpenBLAS's own pool under DYNRNN_GEMM_OPENBLAS). Without OpenMP
/// dynrnn's own loops run on one thread.
/// \param threads at least 1.
/// \throws std::invalid_argument when `threads` < 1.
inline void set_num_threads(int threads) {
  if (threads < 1) detail::throw_argument("set_num_threads", "threads", ">= 1", std::to_string(threads));
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
#ifdef DYNRNN_GEMM_OPENBLAS
  openblas_set_num_threads(threads);
#endif
  (void)threads;
}

/// \brief How many threads dynrnn may use: 1 without OpenMP or inside a parallel region.
inline int max_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

namespace detail {

/// Below this many multiply-adds a product, or a time step's products, runs on one thread.
inline constexpr double kParallelWork = 1 << 18;

/// Threads for `work` multiply-adds that split into at most `parts` pieces: one below
/// kParallelWork, else as many as are allowed and there are pieces.
inline int threads_for(double work, Index parts) {
  const int max = max_threads();
  if (max <= 1 || work < kParallelWork) return 1;
  return int(std::max<Index>(1, std::min<Index>(max, parts)));
}

/// Runs f(r) for r in [0, n): on all threads when `worth_it` and more than one is allowed,
/// else in a plain loop, which never touches the OpenMP runtime (an OpenMP region, even a
/// one-thread one, may allocate).
template <class F>
void for_each_row(Index n, bool worth_it, F&& f) {
#ifdef _OPENMP
  if (worth_it && max_threads() > 1) {
#pragma omp parallel for schedule(static)
    for (Index r = 0; r < n; ++r) f(r);
    return;
  }
#else
  (void)worth_it;
#endif
  for (Index r = 0; r < n; ++r) f(r);
}

/// Runs f(thread, threads) once on each of `threads` threads (on the calling thread alone
/// when threads is 1 or there is no OpenMP). f must not throw.
template <class F>
void parallel_region(int threads, F&& f) {
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    f(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  (void)threads;
  f(0, 1);
}

/// Thread `thread`'s share [begin, end) of `n` items split `threads` ways, in whole multiples
/// of `granule` (the last share takes the remainder).
struct Share {
  Index begin, end;
};
inline Share share_of(Index n, int thread, int threads, Index granule) {
  const Index per = ((n + threads - 1) / threads + granule - 1) / granule * granule;
  const Index begin = std::min(n, per * thread);
  return {begin, std::min(n, begin + per)};
}

}  // namespace detail
}  // namespace dynrnn
