// dynrnn: the threads that run dynrnn's parallel loops, built to stay fast on a shared machine.
//
// A parallel loop is a job of `parts` independent parts. The calling thread publishes it and
// then takes parts itself, one at a time, from a shared counter; helper threads take parts
// from the same counter as they arrive. Two rules follow:
//   - The caller never waits for a helper that has not started. A part that no helper has
//     claimed is the caller's to run, so a helper that the kernel has descheduled, or that is
//     still waking up, costs nothing: it finds no part left and goes back to waiting.
//   - The caller waits only for parts a helper has already started, first spinning briefly
//     and then blocking, so that a helper preempted in mid-part can have the caller's core.
// A fork-join runtime (OpenMP's parallel regions) instead hands every thread its share up
// front and ends each region at a barrier: next to one busy process on two cores, the caller
// then waited at every region for a helper that the kernel had set aside, and two threads
// ran two to four times as slow as one.
//
// Between jobs a helper spins for a short while (kSpin), so that the next job of a busy loop
// finds it running, and then sleeps. Spinning pays only while every thread has a core of its
// own, and so does waking a helper for a short job. So the pool watches for other work on
// its cores: a thread of the pool that the kernel preempted (its count of involuntary context
// switches went up) and kept off its core for a while (kPreempted, or a quarter of the time
// since the caller last looked) is the sign, and two such signs within kConfirmWindow make
// the cores contended (contended()). Then the threads spin no longer than a part takes to
// finish, and dynrnn's loops use helpers only for work large enough to pay for waking one
// that may have to share a core (parallel.hpp): the shorter loops run as fast as one thread
// runs them. The cores stay contended for kContendedFor; one sign while they are, or soon
// after, makes that four times as long (up to kMaxContendedFor), so a long-lived neighbour
// costs few and short probes, and a neighbour that leaves costs at most kMaxContendedFor at
// one thread.
//
// One job runs at a time. A caller that finds the pool busy (another thread of the program
// calling dynrnn at the same time), and a part that itself calls a parallel loop, run their
// parts on their own thread. Nothing here changes process-wide state: no environment
// variables, no OpenMP or C library settings, no thread affinity.
#pragma once

#include "types.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#define DYNRNN_POSIX_THREADS 1
#endif

namespace dynrnn::detail {

/// The pool of helper threads that runs dynrnn's parallel loops (see the file comment).
class ThreadPool {
 public:
  /// One part of a job: `context` is the caller's, `slot` is the running thread's index in
  /// the job, 0 for the caller and 1 .. threads - 1 for helpers, so that per-thread
  /// workspaces may be indexed by it. Must not throw.
  using Task = void (*)(void* context, Index part, int slot);

  /// At most this many threads run one job (the counter's field for helpers is 8 bits).
  static constexpr int kMaxThreads = 256;
  /// At most this many parts make one job (the counter's field for parts is 24 bits).
  static constexpr Index kMaxParts = (Index(1) << 24) - 1;

  /// The process's pool. Its helpers start on first use. It is never destroyed, so that
  /// parallel loops still run while the program exits; idle helpers are blocked and end with
  /// the process.
  static ThreadPool& instance() {
    static ThreadPool* pool = new ThreadPool;
    return *pool;
  }

  /// Runs task(context, part, slot) for every part in [0, parts), on the calling thread and
  /// up to threads - 1 helpers, and returns when every part has run. Runs everything on the
  /// calling thread when threads is 1, when the pool is busy with another job, when called
  /// from inside a part, or when no helper thread can be started.
  void run(Index parts, int threads, Task task, void* context) {
    threads = int(std::min<Index>({Index(threads), parts, Index(kMaxThreads)}));
    bool expected = false;
    if (threads <= 1 || depth_ > 0 || parts > kMaxParts ||
        !busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      run_inline(parts, task, context);
      return;
    }
    if (forked_.load(std::memory_order_relaxed)) after_fork();
    threads = std::min(threads, start_helpers(threads - 1) + 1);
    if (threads <= 1) {
      busy_.store(false, std::memory_order_release);
      run_inline(parts, task, context);
      return;
    }

    // Publish: the descriptor first, then the counter, whose new generation makes it visible.
    task_ = task;
    context_ = context;
    parts_ = parts;
    done_.store(0, std::memory_order_relaxed);
    generation_ = (generation_ + 1) & 0xffffffffu;
    claim_.store(word(generation_, unsigned(threads - 1), std::uint64_t(parts)), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(sync_->mutex);
      sync_->work.notify_all();
    }

    // Take parts until none is left, then wait for those the helpers took.
    ++depth_;
    Index own = 0;
    for (Index part; (part = claim(generation_, false, nullptr)) >= 0; ++own) task(context, part, 0);
    --depth_;
    if (own < parts && done_.fetch_add(own, std::memory_order_seq_cst) + own < parts) wait_for_helpers();
    busy_.store(false, std::memory_order_release);
  }

  /// Starts the helpers a job of `threads` threads would use, unless the pool is busy: a
  /// loop that runs on its caller alone for now calls this, so that no thread needs to be
  /// started (and allocated for) later.
  void prepare(int threads) {
    threads = std::min(threads, kMaxThreads);
    if (threads <= 1 || started_.load(std::memory_order_relaxed) >= threads - 1) return;
    bool expected = false;
    if (depth_ > 0 || !busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return;
    if (forked_.load(std::memory_order_relaxed)) after_fork();
    start_helpers(threads - 1);
    busy_.store(false, std::memory_order_release);
  }

  /// True while other work competes for the cores (see the file comment). Also checks, at
  /// most every kCallerCheckEvery, whether the calling thread has been preempted.
  bool contended() {
    const Clock::rep now = Clock::now().time_since_epoch().count();
    Clock::rep next = next_caller_check_.load(std::memory_order_relaxed);
    if (now >= next && next_caller_check_.compare_exchange_strong(next, now + ticks_of(kCallerCheckEvery),
                                                                  std::memory_order_relaxed))
      check_caller(now);
    return contended_at(now);
  }

  /// True inside a part run by the pool (on the caller or a helper): a parallel loop there
  /// runs on its own thread.
  static bool in_part() { return depth_ > 0; }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  using Clock = std::chrono::steady_clock;

  /// How long a thread spins for the next job, or for its job's parts, before it blocks.
  static constexpr auto kSpin = std::chrono::microseconds(200);
  /// How long it spins instead while the cores are contended: enough for a part that is
  /// about to finish, not enough to take a core from anyone.
  static constexpr auto kContendedSpin = std::chrono::microseconds(10);
  /// A thread off its core this long was preempted by other work, not by a passing kernel
  /// thread.
  static constexpr auto kPreempted = std::chrono::microseconds(200);
  /// How often a caller checks whether it was preempted, at most; a check looks back no
  /// further than kMaxCallerInterval.
  static constexpr auto kCallerCheckEvery = std::chrono::milliseconds(2);
  static constexpr auto kMaxCallerInterval = std::chrono::milliseconds(50);
  /// Two preemptions this close make the cores contended.
  static constexpr auto kConfirmWindow = std::chrono::milliseconds(20);
  /// How long the cores stay contended after the first confirmation, and at most after
  /// repeated ones (note_preempted()).
  static constexpr auto kContendedFor = std::chrono::milliseconds(100);
  static constexpr auto kMaxContendedFor = std::chrono::milliseconds(1000);

  // What the helpers wait on, and the helpers. On the heap, so that a child of fork() can
  // leave its copy (whose mutex a helper of the parent may have held) and take a new one.
  struct Sync {
    std::mutex mutex;
    std::condition_variable work;      // helpers wait here for a job
    std::condition_variable finished;  // the caller waits here for the helpers' parts
    std::vector<std::thread> helpers;
    bool cannot_start = false;  // the system refused a thread: run with those there are
    Sync* parent = nullptr;     // in a child of fork(): the parent's, kept reachable
  };

  ThreadPool() {
#ifdef DYNRNN_POSIX_THREADS
    // After fork() the child has only the forking thread: the helpers are gone.
    pthread_atfork(nullptr, nullptr, [] { instance().forked_.store(true); });
#endif
  }

  template <class Duration>
  static constexpr Clock::rep ticks_of(Duration d) {
    return std::chrono::duration_cast<Clock::duration>(d).count();
  }

  // What the kernel counts of the calling thread: involuntary context switches, and CPU time
  // in steady_clock ticks. Zeros where it does not count them per thread: then the cores
  // never count as contended.
  struct ThreadTimes {
    long switches = 0;
    Clock::rep cpu = 0;
  };
  static ThreadTimes thread_times() {
#if defined(DYNRNN_POSIX_THREADS) && defined(RUSAGE_THREAD)
    rusage usage{};
    if (getrusage(RUSAGE_THREAD, &usage) == 0) {
      const auto us = [](const timeval& t) {
        return std::chrono::seconds(t.tv_sec) + std::chrono::microseconds(t.tv_usec);
      };
      return {long(usage.ru_nivcsw), ticks_of(us(usage.ru_utime) + us(usage.ru_stime))};
    }
#endif
    return {};
  }

  // The caller's check: since its last one (if that was recent), was the thread preempted
  // (its involuntary switches went up) and off its core for a good share of the time, not
  // counting its own waits for helpers? A kernel thread that runs for a moment does not
  // count; a process that takes turns with it on the core does.
  void check_caller(Clock::rep now) {
    thread_local ThreadTimes last;
    thread_local Clock::rep last_at = 0, blocked_at_last = 0;
    const ThreadTimes times = thread_times();
    const Clock::rep blocked_now = blocked_.load(std::memory_order_relaxed);
    const Clock::rep wall = now - last_at, blocked = blocked_now - blocked_at_last;
    if (wall < ticks_of(kMaxCallerInterval) && times.switches > last.switches &&
        wall - (times.cpu - last.cpu) - blocked > std::max(ticks_of(kPreempted), wall / 4))
      note_preempted(now);
    last = times;
    last_at = now;
    blocked_at_last = blocked_now;
  }

  bool contended_at(Clock::rep ticks) const { return ticks < contended_until_.load(std::memory_order_relaxed); }

  // A thread of the pool was preempted at `now`: a second time within kConfirmWindow makes
  // the cores contended; while they are, or were until recently, once is enough, and they
  // stay contended four times as long.
  void note_preempted(Clock::rep now) {
    const Clock::rep previous = last_preempted_.exchange(now, std::memory_order_relaxed);
    const Clock::rep until = contended_until_.load(std::memory_order_relaxed);
    Clock::rep length = contended_for_.load(std::memory_order_relaxed);
    const bool recently = now < until + length;  // contended now, or until a moment ago
    if (!recently && now - previous >= ticks_of(kConfirmWindow)) return;
    length = recently ? std::min(4 * length, ticks_of(kMaxContendedFor)) : ticks_of(kContendedFor);
    contended_for_.store(length, std::memory_order_relaxed);
    contended_until_.store(std::max(until, now + length), std::memory_order_relaxed);
  }

  // The claim counter: generation (32 bits) | helper slots left (8 bits) | parts left (24 bits).
  static std::uint64_t word(std::uint64_t generation, std::uint64_t slots, std::uint64_t parts) {
    return generation << 32 | slots << 24 | parts;
  }

  // Claims a part of job `generation`: the part's index, or -1 when none is left or the job
  // is over. A helper's first claim (`join`) also takes a slot, stored in *slot; it fails
  // when the job's slots are taken. Parts are handed out from the last one down.
  Index claim(std::uint64_t generation, bool join, int* slot) {
    std::uint64_t w = claim_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t slots = (w >> 24) & 0xff, left = w & 0xffffff;
      if ((w >> 32) != generation || left == 0 || (join && slots == 0)) return -1;
      const std::uint64_t next = word(generation, join ? slots - 1 : slots, left - 1);
      if (claim_.compare_exchange_weak(w, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
        if (join) *slot = int(slots);
        return Index(left - 1);
      }
    }
  }

  static void run_inline(Index parts, Task task, void* context) {
    ++depth_;
    for (Index part = 0; part < parts; ++part) task(context, part, 0);
    --depth_;
  }

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  // Spins until done() or the spin time is up; returns done(). A helper (`watch`) that finds
  // a gap of kPreempted between two looks at the clock, and more involuntary switches than
  // before, was preempted (a gap alone may be the hypervisor's, which fewer threads would not
  // help).
  template <class Done>
  bool spin(Done&& done, bool watch) {
    auto now = Clock::now();
    const auto until = now + (contended_at(now.time_since_epoch().count()) ? kContendedSpin : kSpin);
    long switches = watch ? thread_times().switches : 0;
    for (;;) {
      for (int k = 0; k < 64; ++k) {
        if (done()) return true;
        pause();
      }
      const auto last = now;
      now = Clock::now();
      if (watch && now - last > kPreempted) {
        const long s = thread_times().switches;
        if (s > switches) note_preempted(now.time_since_epoch().count());
        switches = s;
      }
      if (now >= until) return done();
    }
  }

  // The caller's wait for the parts the helpers took.
  void wait_for_helpers() {
    const auto finished = [&] { return done_.load(std::memory_order_seq_cst) == parts_; };
    if (spin(finished, false)) return;
    const auto start = Clock::now();
    std::unique_lock<std::mutex> lock(sync_->mutex);
    caller_sleeping_.store(true, std::memory_order_seq_cst);
    sync_->finished.wait(lock, finished);
    caller_sleeping_.store(false, std::memory_order_relaxed);
    blocked_.fetch_add((Clock::now() - start).count(), std::memory_order_relaxed);
  }

  // Makes sure `count` helpers run, as far as the system lets threads start; returns how many
  // run. Called with busy_ held.
  int start_helpers(int count) {
    Sync& sync = *sync_;
    while (int(sync.helpers.size()) < count && !sync.cannot_start) {
      const std::uint64_t seen = claim_.load(std::memory_order_relaxed) >> 32;
      try {
        sync.helpers.emplace_back([this, seen, &sync] { helper_loop(sync, seen); });
      } catch (const std::system_error&) {
        sync.cannot_start = true;
      }
    }
    started_.store(int(sync.helpers.size()), std::memory_order_relaxed);
    return std::min(count, int(sync.helpers.size()));
  }

  // In a child of fork(): the parent's helpers do not exist here. Their Sync is left as it is
  // (destroying a joinable std::thread would end the program, and the mutex may be locked)
  // and new helpers start on a new one. Called with busy_ held, so no other caller is in a job.
  void after_fork() {
    Sync* fresh = new Sync;
    fresh->parent = sync_;
    sync_ = fresh;
    started_.store(0);
    sleepers_.store(0);
    caller_sleeping_.store(false);
    forked_.store(false);
  }

  void helper_loop(Sync& sync, std::uint64_t seen) {
#ifdef DYNRNN_POSIX_THREADS
    sigset_t all;  // signals go to the program's own threads, not to dynrnn's helpers
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
#endif
    ++depth_;  // a helper's own parallel loops run on the helper
    for (;;) {
      const auto fresh = [&] { return (claim_.load(std::memory_order_seq_cst) >> 32) != seen; };
      if (!spin(fresh, true)) {
        std::unique_lock<std::mutex> lock(sync.mutex);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        sync.work.wait(lock, fresh);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      seen = claim_.load(std::memory_order_acquire) >> 32;
      int slot = 0;
      Index part = claim(seen, true, &slot);
      if (part < 0) continue;  // the job is over, or has all the helpers it asked for
      const Task task = task_;
      void* const context = context_;
      const Index parts = parts_;
      Index ran = 0;
      do {
        task(context, part, slot);
        ++ran;
      } while ((part = claim(seen, false, nullptr)) >= 0);
      // The job lives until every part is counted: nothing of it may be read after this.
      if (done_.fetch_add(ran, std::memory_order_seq_cst) + ran == parts &&
          caller_sleeping_.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lock(sync.mutex);
        sync.finished.notify_one();
      }
    }
  }

  // The job: written by its caller before the counter publishes it, read by a helper only
  // after it has claimed a part, and so only while the job runs.
  Task task_ = nullptr;
  void* context_ = nullptr;
  Index parts_ = 0;
  std::uint64_t generation_ = 0;  // the caller's copy of the counter's generation

  std::atomic<std::uint64_t> claim_{0};
  std::atomic<Index> done_{0};  // parts finished
  std::atomic<bool> busy_{false};
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<int> sleepers_{0};
  std::atomic<int> started_{0};  // helpers started (prepare()'s quick check)
  std::atomic<bool> forked_{false};

  // Contention, in steady_clock ticks (note_preempted(), contended()).
  std::atomic<Clock::rep> last_preempted_{std::numeric_limits<Clock::rep>::min() / 2};
  std::atomic<Clock::rep> contended_until_{std::numeric_limits<Clock::rep>::min() / 2};
  std::atomic<Clock::rep> contended_for_{ticks_of(kContendedFor)};
  std::atomic<Clock::rep> next_caller_check_{0};
  std::atomic<Clock::rep> blocked_{0};  // the callers' time blocked in wait_for_helpers()

  Sync* sync_ = new Sync;  // never destroyed (see instance() and after_fork())
  static inline thread_local int depth_ = 0;  // > 0 inside a part
};

}  // namespace dynrnn::detail
