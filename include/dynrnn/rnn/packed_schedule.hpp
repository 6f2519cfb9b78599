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

#include "../core/types.hpp"

#include <algorithm>
#include <numeric>
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

  /// \brief Builds the schedule. Lengths must already be validated to lie in [0, max_time].
  static PackedSchedule build(const std::vector<int>& lengths, Index max_time) {
    PackedSchedule s;
    s.max_time = max_time;
    s.batch = static_cast<Index>(lengths.size());
    s.lengths = lengths;
    s.order.resize(lengths.size());
    std::iota(s.order.begin(), s.order.end(), Index{0});
    std::stable_sort(s.order.begin(), s.order.end(),
                     [&](Index a, Index b) { return lengths[a] > lengths[b]; });
    s.steps = lengths.empty() ? 0 : lengths[s.order.front()];
    s.active.assign(s.steps, 0);
    s.offset.assign(s.steps + 1, 0);
    // Sorted longest first, so the rows alive at step t are a prefix.
    for (Index t = 0, n = s.batch; t < s.steps; ++t) {
      while (n > 0 && lengths[s.order[n - 1]] <= t) --n;
      s.active[t] = n;
      s.offset[t + 1] = s.offset[t] + n;
    }
    return s;
  }
};

namespace detail {

/// Packs the valid rows of a `(T*B, K)` view (row t*B + b) into `(total, K)`.
template <class Scalar, class Src>
void pack_rows(const PackedSchedule& s, const Eigen::MatrixBase<Src>& padded, Matrix<Scalar>& packed) {
  packed.resize(s.total(), padded.cols());
  for (Index t = 0; t < s.steps; ++t)
    for (Index j = 0; j < s.active[t]; ++j)
      packed.row(s.offset[t] + j) = padded.row(t * s.batch + s.order[j]);
}

/// Scatters packed rows back into a `(T*B, K)` view; rows at padded steps are set to zero.
template <class Scalar, class Dst>
void unpack_rows(const PackedSchedule& s, const Matrix<Scalar>& packed, Eigen::MatrixBase<Dst>& padded) {
  padded.setZero();
  for (Index t = 0; t < s.steps; ++t)
    for (Index j = 0; j < s.active[t]; ++j)
      padded.row(t * s.batch + s.order[j]) = packed.row(s.offset[t] + j);
}

/// Reorders the rows of a `(B, K)` matrix from caller order into sorted order.
template <class Scalar>
Matrix<Scalar> sort_rows(const PackedSchedule& s, const Matrix<Scalar>& m) {
  Matrix<Scalar> out(m.rows(), m.cols());
  for (Index j = 0; j < s.batch; ++j) out.row(j) = m.row(s.order[j]);
  return out;
}

/// Reorders the rows of a `(B, K)` matrix from sorted order back into caller order.
template <class Scalar>
Matrix<Scalar> unsort_rows(const PackedSchedule& s, const Matrix<Scalar>& m) {
  Matrix<Scalar> out(m.rows(), m.cols());
  for (Index j = 0; j < s.batch; ++j) out.row(s.order[j]) = m.row(j);
  return out;
}

}  // namespace detail
}  // namespace dynrnn
