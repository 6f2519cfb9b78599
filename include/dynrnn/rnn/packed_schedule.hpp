// dynrnn: the packed layout of a batch of variable-length sequences.
//
// The rows of a batch are sorted by length, longest first (a stable sort, so
// equal lengths keep their order). At step t only the first n_t sorted rows
// are still running, so the (row, step) pairs that really exist can be stored
// step after step with no gaps:
//
//   packed row  offset[t] + j   <->   step t of sorted row j   (j < n_t)
//
//   lengths 3 1 2  -> order (0 2 1), n = (3 2 1), offset = (0 3 5 6)
//
//             sorted row:  0   1   2
//   step 0  packed rows:   0   1   2
//   step 1  packed rows:   3   4
//   step 2  packed rows:   5
//
// Cells compute only on packed rows, so padding is never read and the work is
// proportional to the sum of the lengths, not to batch * max_time. Because
// n_t never grows with t, the rows that continue from step t-1 into step t are
// the first n_t rows of step t-1's block, and every per-step operand is one
// contiguous block of rows.
#pragma once

#include "../core/check.hpp"
#include "../core/parallel.hpp"
#include "../core/reusable_matrix.hpp"
#include "../core/types.hpp"

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dynrnn {

/// \brief Where each valid (row, step) pair of a batch lives in packed storage.
///
/// Built once per batch by dynamic_rnn; cells index their packed caches with it.
struct PackedSchedule {
  Index max_time = 0;           ///< T, the time extent of the padded tensors.
  Index batch = 0;              ///< B, the number of rows.
  Index steps = 0;              ///< The longest length; steps >= this have no active row.
  std::vector<int> lengths;     ///< (B) lengths in the caller's row order.
  std::vector<Index> order;     ///< (B) order[j] = caller's row at sorted position j.
  std::vector<Index> active;    ///< (steps) active[t] = n_t, rows still running at step t.
  std::vector<Index> offset;    ///< (steps + 1) first packed row of step t; offset[steps] = total.

  /// \brief Number of valid (row, step) pairs, the sum of the lengths.
  Index total() const { return offset.empty() ? 0 : offset.back(); }

  /// \brief Builds the schedule for `lengths`.
  /// \throws std::invalid_argument when max_time < 0 or a length lies outside [0, max_time].
  static PackedSchedule build(const std::vector<int>& lengths, Index max_time) {
    PackedSchedule s;
    s.assign(lengths, max_time);
    return s;
  }

  /// \brief Rebuilds this schedule in place; allocates nothing when the batch and time
  /// extents do not grow.
  /// \throws std::invalid_argument as build() does.
  void assign(const std::vector<int>& row_lengths, Index time) {
    detail::check_non_negative("PackedSchedule", "max_time", time);
    detail::check_lengths("PackedSchedule", row_lengths, static_cast<Index>(row_lengths.size()), time);
    max_time = time;
    batch = static_cast<Index>(row_lengths.size());
    lengths.assign(row_lengths.begin(), row_lengths.end());
    // Counting sort, longest first and stable, so equal lengths keep the caller's order.
    // first_[L] counts, then marks where length L starts in the sorted order.
    first_.assign(static_cast<std::size_t>(time) + 2, 0);
    for (int len : lengths) ++first_[static_cast<std::size_t>(time - len)];
    Index start = 0;
    for (auto& f : first_) {
      const Index count = f;
      f = start;
      start += count;
    }
    order.resize(lengths.size());
    for (Index b = 0; b < batch; ++b) order[first_[static_cast<std::size_t>(time - lengths[b])]++] = b;

    steps = batch == 0 ? 0 : lengths[order.front()];
    active.resize(steps);
    offset.resize(steps + 1);
    offset[0] = 0;
    // Sorted longest first, so the rows alive at step t are a prefix.
    for (Index t = 0, n = batch; t < steps; ++t) {
      while (n > 0 && lengths[order[n - 1]] <= t) --n;
      active[t] = n;
      offset[t + 1] = offset[t] + n;
    }
  }

 private:
  std::vector<Index> first_;  // counting-sort scratch, kept for reuse
};

namespace detail {

/// Whether Cell gives the matrix its forward() writes the packed outputs into (a non-const
/// packed_outputs(Cache&)), which promises too that forward() and backward() never write
/// cache.x: dynamic_rnn and StackedCell may then point cache.x and that matrix at memory
/// the cache does not own (ReusableMatrix::view()). LSTMCell, GRUCell and RNNCell do.
template <class Cell, class = void>
struct has_writable_outputs : std::false_type {};
template <class Cell>
struct has_writable_outputs<Cell, std::enable_if_t<!std::is_const_v<std::remove_reference_t<decltype(
                                      Cell::packed_outputs(std::declval<typename Cell::Cache&>()))>>>>
    : std::true_type {};

/// Copies between layouts go parallel from this many entries.
constexpr double kParallelCopy = 1 << 18;

/// Packs the valid rows of a `(T*B, K)` view (row t*B + b) into `(total, K)`.
template <class Scalar, class Src>
void pack_rows(const PackedSchedule& s, const Eigen::MatrixBase<Src>& padded, ReusableMatrix<Scalar>& packed) {
  packed.resize(s.total(), padded.cols());
  for_each_row(s.steps, double(s.total()) * double(padded.cols()) >= kParallelCopy, [&](Index t) {
    for (Index j = 0; j < s.active[t]; ++j) packed.row(s.offset[t] + j) = padded.row(t * s.batch + s.order[j]);
  });
}

/// Scatters packed rows back into a `(T*B, K)` view; rows at padded steps are set to zero.
/// Every row of the view is written once: a valid row with its packed row, a padded one
/// with zeros.
template <class Scalar, class Dst>
void unpack_rows(const PackedSchedule& s, const ReusableMatrix<Scalar>& packed, Eigen::MatrixBase<Dst>& padded) {
  const Index reached_rows = s.steps * s.batch;  // the rows of the steps any sequence reaches
  padded.bottomRows(padded.rows() - reached_rows).setZero();
  for_each_row(s.steps, double(reached_rows) * double(packed.cols()) >= kParallelCopy, [&](Index t) {
    for (Index j = 0; j < s.active[t]; ++j) padded.row(t * s.batch + s.order[j]) = packed.row(s.offset[t] + j);
    for (Index j = s.active[t]; j < s.batch; ++j) padded.row(t * s.batch + s.order[j]).setZero();
  });
}

/// Reorders the rows of a `(B, K)` matrix from caller order into sorted order.
template <class Scalar>
void sort_rows(const PackedSchedule& s, const Matrix<Scalar>& m, Matrix<Scalar>& sorted) {
  sorted.resize(m.rows(), m.cols());
  for (Index j = 0; j < s.batch; ++j) sorted.row(j) = m.row(s.order[j]);
}

/// Reorders the rows of a `(B, K)` matrix from sorted order back into caller order.
template <class Scalar>
void unsort_rows(const PackedSchedule& s, const Matrix<Scalar>& sorted, Matrix<Scalar>& m) {
  m.resize(sorted.rows(), sorted.cols());
  for (Index j = 0; j < s.batch; ++j) m.row(s.order[j]) = sorted.row(j);
}

}  // namespace detail
}  // namespace dynrnn
