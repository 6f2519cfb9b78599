// dynrnn's thread pool (core/thread_pool.hpp) and the loops built on it (core/parallel.hpp):
// every part runs once, on a slot of its own; parts that no helper has claimed are the
// caller's; nested loops, concurrent callers, signals and fork(); and the cores count as
// contended while other threads take them.
#include "busy_cores.hpp"

#include <dynrnn/core/parallel.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#if defined(__unix__)
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace {

using dynrnn::Index;
using dynrnn::detail::parallel_parts;
using Clock = std::chrono::steady_clock;

#ifdef _OPENMP
#define SKIP_WITHOUT_THREADS()
#else
#define SKIP_WITHOUT_THREADS() GTEST_SKIP() << "built without OpenMP: dynrnn's loops run on one thread"
#endif

// Waits until pred() or `seconds` have passed; returns pred().
template <class Pred>
bool wait_until(Pred pred, double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (!pred() && Clock::now() < end) std::this_thread::yield();
  return pred();
}

// Runs a job of two parts on two threads, each part waiting up to 10 s for the other to
// start; true when both met, which proves that a helper ran a part beside the caller.
bool two_parts_meet() {
  std::atomic<int> started{0}, met{0};
  parallel_parts(2, 2, [&](Index, int) {
    started.fetch_add(1);
    if (wait_until([&] { return started.load() == 2; }, 10.0)) met.fetch_add(1);
  });
  return met.load() == 2;
}

// Runs a job and checks that every part ran exactly once, each slot in [0, threads) and on
// one thread only.
void check_job(Index parts, int threads) {
  std::vector<std::atomic<int>> runs(static_cast<std::size_t>(parts));
  std::vector<std::atomic<std::thread::id>> slot_threads(static_cast<std::size_t>(threads));
  std::atomic<int> bad_slots{0};
  parallel_parts(parts, threads, [&](Index part, int slot) {
    runs[std::size_t(part)].fetch_add(1);
    if (slot < 0 || slot >= threads) {
      bad_slots.fetch_add(1);
      return;
    }
    std::thread::id none{};
    const auto self = std::this_thread::get_id();
    if (!slot_threads[std::size_t(slot)].compare_exchange_strong(none, self) && none != self) bad_slots.fetch_add(1);
  });
  for (Index p = 0; p < parts; ++p) ASSERT_EQ(runs[std::size_t(p)].load(), 1) << "part " << p << " of " << parts;
  EXPECT_EQ(bad_slots.load(), 0) << "a slot out of range, or held by two threads in one job";
}

TEST(ThreadPool, EveryPartRunsOnceOnASlotOfItsOwn) {
  for (int threads : {1, 2, 3, 4})
    for (Index parts : {1, 2, 7, 1000}) check_job(parts, threads);
}

// A helper takes part of the job while the caller works: each part waits for the other to
// start, which one thread alone could never satisfy.
TEST(ThreadPool, HelpersRunPartsAtTheSameTime) {
  SKIP_WITHOUT_THREADS();
  EXPECT_TRUE(two_parts_meet());
}

// A part that no helper has claimed is the caller's: while the helper is held up in its
// first part, the caller runs every other part instead of waiting for the helper's share (a
// fork-join split would leave half of them to the helper, which waits here for the caller to
// run all the others first).
TEST(ThreadPool, TheCallerRunsEveryPartNoHelperHasClaimed) {
  SKIP_WITHOUT_THREADS();
  constexpr int kParts = 100;
  std::atomic<int> by_caller{0}, by_helpers{0};
  parallel_parts(kParts, 2, [&](Index, int slot) {
    if (slot == 0) {
      if (by_caller.fetch_add(1) == 0) wait_until([&] { return by_helpers.load() == 1; }, 10.0);
    } else if (by_helpers.fetch_add(1) == 0) {
      wait_until([&] { return by_caller.load() == kParts - 1; }, 10.0);
    }
  });
  EXPECT_EQ(by_helpers.load(), 1);
  EXPECT_EQ(by_caller.load(), kParts - 1);
}

// Inside a part dynrnn sees one thread, and a nested loop runs on the part's own thread.
TEST(ThreadPool, NestedLoopsRunOnTheirOwnThread) {
  SKIP_WITHOUT_THREADS();
  std::atomic<int> bad{0};
  parallel_parts(4, 2, [&](Index, int) {
    if (dynrnn::max_threads() != 1) bad.fetch_add(1);
    const auto self = std::this_thread::get_id();
    parallel_parts(8, 2, [&](Index, int slot) {
      if (slot != 0 || std::this_thread::get_id() != self) bad.fetch_add(1);
    });
  });
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GE(dynrnn::max_threads(), 1);
}

// Threads of the program calling dynrnn at the same time: one gets the pool, the others run
// their jobs themselves; every job is complete.
TEST(ThreadPool, ConcurrentCallersEachGetTheirWholeJob) {
  std::vector<std::thread> callers;
  std::atomic<int> failures{0};
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&failures, c] {
      for (int job = 0; job < 200; ++job) {
        const Index parts = 1 + (job * 7 + c) % 33;
        std::vector<std::atomic<int>> runs(static_cast<std::size_t>(parts));
        parallel_parts(parts, 2, [&](Index part, int) { runs[std::size_t(part)].fetch_add(1); });
        for (auto& r : runs)
          if (r.load() != 1) failures.fetch_add(1);
      }
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(failures.load(), 0);
}

// for_each_row splits rows into parts of consecutive rows and covers each once.
TEST(ThreadPool, ForEachRowCoversEveryRowOnce) {
  for (Index n : {0, 1, 5, 300, 5000}) {
    std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
    dynrnn::detail::for_each_row(n, true, [&](Index r) { runs[std::size_t(r)].fetch_add(1); });
    for (Index r = 0; r < n; ++r) ASSERT_EQ(runs[std::size_t(r)].load(), 1) << "row " << r << " of " << n;
  }
}

#if defined(__unix__)
// Signals sent to the process go to the program's threads: dynrnn's helpers block them all.
TEST(ThreadPool, HelpersBlockSignals) {
  SKIP_WITHOUT_THREADS();
  std::atomic<int> started{0}, helper_parts{0}, unblocked{0};
  parallel_parts(2, 2, [&](Index, int slot) {
    started.fetch_add(1);
    wait_until([&] { return started.load() == 2; }, 10.0);
    if (slot == 0) return;
    helper_parts.fetch_add(1);
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR1})
      if (!sigismember(&mask, sig)) unblocked.fetch_add(1);
  });
  ASSERT_EQ(helper_parts.load(), 1);
  EXPECT_EQ(unblocked.load(), 0);
}

// A child of fork() has none of the parent's helpers: its loops start their own, and run
// every part, instead of hanging on threads that do not exist there.
TEST(ThreadPool, AForkedChildRunsItsOwnLoops) {
  SKIP_WITHOUT_THREADS();
  // The parent's helper has run a part, so it exists and has finished starting. (A fork
  // while a thread is still starting is unsafe under AddressSanitizer, whose allocator in
  // GCC 12 is not locked across fork(): the child can inherit one of its locks held, and
  // its first new thread then waits on it forever.)
  ASSERT_TRUE(two_parts_meet());
  const pid_t child = fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    alarm(20);  // a hang ends the child with SIGALRM
    std::atomic<int> runs{0};
    for (int job = 0; job < 50; ++job)
      parallel_parts(16, 2, [&](Index, int) { runs.fetch_add(1); });
    const bool met = two_parts_meet();  // and the new helpers do run parts
    _exit(runs.load() == 50 * 16 && met ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child did not exit (signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
                                 << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  check_job(64, 2);  // and the parent's pool still works
}

#if defined(__linux__)  // the kernel counts involuntary context switches per thread
// While other threads take the cores, the pool notices it was preempted and the cores count
// as contended: then short loops run on the caller alone and long ones still share.
TEST(ThreadPool, OtherWorkOnTheCoresMakesThemContended) {
  SKIP_WITHOUT_THREADS();
  bool contended = false, still = false;
  int small = 0, large = 0;
  {
    dynrnn::test::BusyCores busy;
    contended = dynrnn::test::BusyCores::wait_until_contended();
    small = dynrnn::detail::threads_for(double(1 << 20), 64);
    large = dynrnn::detail::threads_for(double(1 << 27), 64);
    still = dynrnn::detail::cores_contended();
  }
  ASSERT_TRUE(contended) << "2 busy threads per core for 20 s, and the cores never counted as contended";
  if (still && dynrnn::max_threads() > 1) {
    EXPECT_EQ(small, 1);
    EXPECT_EQ(large, std::min(dynrnn::max_threads(), 64));
  }
}
#endif  // __linux__
#endif  // __unix__

}  // namespace
