// Other work on the cores, for the tests of what dynrnn does while it competes for them.
#pragma once

#include <dynrnn/core/parallel.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace dynrnn::test {

/// Two busy threads per core for as long as the object lives.
class BusyCores {
 public:
  BusyCores() {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned k = 0; k < std::min(2 * cores, 128u); ++k)
      threads_.emplace_back([this] {
        while (!stop_.load(std::memory_order_relaxed)) {
        }
      });
  }
  BusyCores(const BusyCores&) = delete;
  BusyCores& operator=(const BusyCores&) = delete;
  ~BusyCores() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }

  /// Works on the calling thread until dynrnn counts the cores as contended, for at most
  /// `seconds`; returns whether it did.
  static bool wait_until_contended(double seconds = 20) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    volatile double sink = 0;
    while (std::chrono::steady_clock::now() < end) {
      for (int k = 0; k < 20000; ++k) sink = sink + 1e-9 * k;  // the caller works between looks
      if (detail::cores_contended()) return true;
    }
    return false;
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

}  // namespace dynrnn::test
