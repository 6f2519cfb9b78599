// dynrnn: the one place that decides whether a loop runs on several threads.
//
// dynrnn runs its loops on several threads when the program that includes it is compiled
// with OpenMP (-fopenmp; in CMake, link OpenMP::OpenMP_CXX). The number of threads is
// OpenMP's: OMP_NUM_THREADS, or omp_set_num_threads() / dynrnn::set_num_threads(). The
// threads themselves are dynrnn's own (thread_pool.hpp), not OpenMP's teams: a loop's parts
// are claimed as threads arrive, so a thread that another process holds up delays nobody.
#pragma once

#include "check.hpp"
#include "thread_pool.hpp"
#include "types.hpp"

#include <algorithm>
#include <memory>
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

/// \brief How many threads dynrnn may use: 1 without OpenMP, inside an OpenMP parallel region
/// or inside one of dynrnn's own parallel loops.
inline int max_threads() {
#ifdef _OPENMP
  return omp_in_parallel() || detail::ThreadPool::in_part() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

namespace detail {

/// Below this many multiply-adds a product, or a time step's products, runs on one thread.
inline constexpr double kParallelWork = 1 << 18;
/// The same while other work competes for the cores (cores_contended()): then a helper must
/// first be woken, and may share its core, so only longer work pays for it.
inline constexpr double kContendedParallelWork = 1 << 25;

/// Whether other work competes for dynrnn's cores (ThreadPool::contended()); false without
/// OpenMP, where every loop runs on one thread anyway.
inline bool cores_contended() {
#ifdef _OPENMP
  return ThreadPool::instance().contended();
#else
  return false;
#endif
}

/// Threads to split `work` multiply-adds between, in at most `parts` pieces: one below
/// kParallelWork, else as many as are allowed and there are pieces. Per-thread workspaces are
/// sized for this count, whatever threads_for() decides at the moment, so that a change in
/// the cores' contention never makes a loop allocate.
inline int split_threads(double work, Index parts) {
  const int max = max_threads();
  if (max <= 1 || work < kParallelWork) return 1;
  return int(std::max<Index>(1, std::min<Index>(max, parts)));
}

/// `threads`, or one while the cores are contended. The pool's helpers are started all the
/// same, so that they exist (and need no allocation) when the contention ends.
inline int unless_contended(int threads) {
  if (threads <= 1 || !cores_contended()) return threads;
#ifdef _OPENMP
  ThreadPool::instance().prepare(threads);
#endif
  return 1;
}

/// Threads to run `work` multiply-adds on, in at most `parts` pieces: split_threads(), or
/// unless_contended() of it when the work is below kContendedParallelWork.
inline int threads_for(double work, Index parts) {
  const int threads = split_threads(work, parts);
  return work >= kContendedParallelWork ? threads : unless_contended(threads);
}

/// Runs f(part, slot) for every part in [0, parts), on up to `threads` threads of dynrnn's
/// pool (thread_pool.hpp), and returns when all have run. `slot` is the running thread's
/// index in [0, threads), for per-thread workspaces. The parts may run in any order and on
/// any thread, so each must compute the same whoever runs it. On the calling thread alone when
/// threads or parts is 1, or without OpenMP. f must not throw.
template <class F>
void parallel_parts(Index parts, int threads, F&& f) {
#ifdef _OPENMP
  if (threads > 1 && parts > 1) {
    using Fn = std::remove_reference_t<F>;
    ThreadPool::instance().run(
        parts, threads, [](void* context, Index part, int slot) { (*static_cast<Fn*>(context))(part, slot); },
        const_cast<void*>(static_cast<const void*>(std::addressof(f))));
    return;
  }
#else
  (void)threads;
#endif
  for (Index part = 0; part < parts; ++part) f(part, 0);
}

/// Threads for a loop that is `worth_it` on several threads: as many as are allowed, or one
/// while the cores are contended (the loops this serves are short and bound by memory).
inline int threads_if(bool worth_it) { return unless_contended(worth_it ? max_threads() : 1); }

/// Runs f(r) for r in [0, n): on all threads when `worth_it` (threads_if()), else in a plain
/// loop. The rows go out in up to kRowParts parts of consecutive rows.
template <class F>
void for_each_row(Index n, bool worth_it, F&& f) {
  constexpr Index kRowParts = 256;
  const int threads = threads_if(worth_it);
  if (threads <= 1 || n <= 1) {
    for (Index r = 0; r < n; ++r) f(r);
    return;
  }
  const Index parts = std::min(n, kRowParts);
  parallel_parts(parts, threads, [&](Index part, int) {
    const Index begin = n * part / parts, end = n * (part + 1) / parts;
    for (Index r = begin; r < end; ++r) f(r);
  });
}

/// Part `part`'s share [begin, end) of `n` items split into `parts` parts, in whole multiples
/// of `granule` (the last share takes the remainder; trailing shares may be empty).
struct Share {
  Index begin, end;
};
inline Share share_of(Index n, Index part, Index parts, Index granule) {
  const Index per = ((n + parts - 1) / parts + granule - 1) / granule * granule;
  const Index begin = std::min(n, per * part);
  return {begin, std::min(n, begin + per)};
}

/// Runs rows(begin, end) over shares of n rows (multiples of `granule`) on as many threads
/// as `work` multiply-adds are worth (threads_for()); on one thread, rows(0, n) on the caller.
/// Nothing runs when n is 0.
template <class Rows>
void for_row_shares(Index n, double work, Index granule, Rows&& rows) {
  const int threads = threads_for(work, n / granule);
  parallel_parts(threads, threads, [&](Index part, int) {
    const auto [begin, end] = share_of(n, part, threads, granule);
    if (begin < end) rows(begin, end);
  });
}

}  // namespace detail
}  // namespace dynrnn
