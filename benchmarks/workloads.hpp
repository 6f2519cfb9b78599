// The benchmark workloads, shared by dynrnn's benchmarks and the oneDNN peer benchmark.
//
//   name   I    H    B   T    lengths
//   S      2    64   50  15   uniform in [3, 14]
//   M      128  256  64  50   all 50
//   M-var  128  256  64  50   uniform in [10, 50]
//   L      512  512  64  100  all 100
//   L-one  512  512  1   20   all 20     one sequence: a program answering requests one at a time
//
// GEMM work: forward 2·(I+H)·4H flops per valid (row, step); training counts 3× that.
#pragma once

#include <dynrnn/core/random.hpp>

#include <cstdint>
#include <vector>

namespace bench {

struct Workload {
  const char* name;
  std::int64_t input, hidden, batch, max_time;
  int min_length, max_length;  // lengths uniform in [min_length, max_length]
};

inline const Workload kWorkloads[] = {
    {"S", 2, 64, 50, 15, 3, 14},
    {"M", 128, 256, 64, 50, 50, 50},
    {"M-var", 128, 256, 64, 50, 10, 50},
    {"L", 512, 512, 64, 100, 100, 100},
    {"L-one", 512, 512, 1, 20, 20, 20},
};

/// The lengths of a workload's batch, the same in every program (fixed seed, portable draw).
inline std::vector<int> lengths_of(const Workload& w) {
  dynrnn::Rng rng(2024);
  std::vector<int> lengths(static_cast<std::size_t>(w.batch));
  for (int& len : lengths) len = int(dynrnn::uniform_int(rng, w.min_length, w.max_length + 1));
  return lengths;
}

/// Forward GEMM flops over the valid (row, step) pairs of `lengths`.
inline double forward_flops(const Workload& w, const std::vector<int>& lengths) {
  double steps = 0;
  for (int len : lengths) steps += len;
  return 2.0 * double(w.input + w.hidden) * 4.0 * double(w.hidden) * steps;
}

}  // namespace bench
