// dynrnn: column sums of a row-major matrix, the bias gradient of every layer.
#pragma once

#include "parallel.hpp"
#include "types.hpp"

namespace dynrnn::detail {

// Column sums go parallel from this many entries.
inline constexpr double kParallelColumnSums = 1 << 18;

/// out += alpha · the column sums of `m`. Each thread takes a block of columns and walks down
/// the rows, adding one contiguous row segment at a time (a column-wise reduction of a
/// row-major matrix would stride through memory). Every column is summed row after row into
/// `out`, whatever the split, so the result does not depend on the thread count.
template <class Scalar, class M, class V>
void add_column_sums(const M& m, V&& out, Scalar alpha = Scalar(1)) {
  const Index rows = m.rows(), cols = m.cols();
  const int threads = threads_if(double(rows) * double(cols) >= kParallelColumnSums);
  parallel_parts(threads, threads, [&](Index part, int) {
    constexpr Index granule = 16;  // whole cache lines of float
    const auto [c0, c1] = share_of(cols, part, threads, granule);
    if (c0 >= c1) return;
    auto sums = out.segment(c0, c1 - c0);
    for (Index r = 0; r < rows; ++r) sums += alpha * m.row(r).segment(c0, c1 - c0).transpose();
  });
}

}  // namespace dynrnn::detail
