// dynrnn: the pieces every cell's time loop shares.
//
// A cell's forward() and backward() walk a packed batch (packed_schedule.hpp) step by
// step. At step t the n_t active rows are rows offset[t] .. offset[t] + n_t - 1 of every
// packed (P, ·) matrix, and the rows of step t + 1 are the first n_{t+1} of them. These
// helpers hold what is the same for every cell: how many threads the loop gets, how the
// active rows are shared between them, how h_t reaches the next step's h_{t-1}, and how
// each row's final state is picked out.
#pragma once

#include "../core/check.hpp"
#include "../core/column_sums.hpp"
#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "../core/reusable_matrix.hpp"
#include "../core/types.hpp"
#include "../precision/mixed_gemm.hpp"
#include "packed_schedule.hpp"

#include <algorithm>
#include <string>

namespace dynrnn::detail {

/// The checks every cell's forward() starts with: its parameters, the sorted initial state
/// and the packed inputs against the schedule.
template <class Cell>
void check_forward_arguments(const char* function, const Cell& cell, const PackedSchedule& s,
                             const typename Cell::State& s0, const ReusableMatrix<typename Cell::Scalar>& x) {
  cell.check_parameters(function);
  cell.check_state(function, "s0", s0, s.batch);
  check_shape(function, "cache.x", x, s.total(), cell.input_size());
}

/// The checks every cell's backward() starts with: its parameters, the gradients, the
/// cache's packed outputs and inputs, the output gradient and the state gradient.
template <class Cell>
void check_backward_arguments(const char* function, const Cell& cell, const PackedSchedule& s,
                              const ReusableMatrix<typename Cell::Scalar>& outputs,
                              const ReusableMatrix<typename Cell::Scalar>& x,
                              const ReusableMatrix<typename Cell::Scalar>& dh, const typename Cell::State& dstate,
                              const typename Cell::Gradients& grads) {
  check_trainable(function, cell.precision());
  cell.check_parameters(function);
  cell.check_gradients(function, grads);
  check_shape(function, "cache.h", outputs, s.total(), cell.output_size());
  check_shape(function, "cache.x", x, s.total(), cell.input_size());
  check_shape(function, "dh", dh, s.total(), cell.output_size());
  cell.check_state(function, "dstate", dstate, s.batch);
}

/// How a time loop is shared: `parts` fixed blocks of rows (loop_rows()), each run whole by
/// one of `threads` threads.
struct LoopTeam {
  int parts = 1;    ///< blocks of rows
  int threads = 1;  ///< threads running them, at most `parts`
};

/// The team for a time loop over Scalar whose first step has `rows` rows, each costing
/// `macs_per_row` multiply-adds in the recurrent products: a block per thread, and one thread
/// while the cores are contended and the loop is short (threads_for()). dynrnn's kernel
/// computes a row the same way in any block, but the external GEMM libraries may not: under
/// them the blocks stay those of the uncontended split, which a lone thread then runs in turn,
/// so that the contention never changes a result.
template <class Scalar>
LoopTeam loop_team(Index rows, double macs_per_row) {
  const double work = double(rows) * macs_per_row;
  const Index pieces = rows / 8;  // a few rows for every thread
  const int threads = threads_for(work, pieces);
  return {external_gemm<Scalar>() ? split_threads(work, pieces) : threads, threads};
}

/// Thread `thread`'s rows [begin, end) of a time loop over `s` split `team` ways, fixed for
/// the whole loop: cut between the rows where the threads get about the same number of
/// valid (row, step) pairs. Rows are sorted longest first, so later threads get more rows,
/// which stop earlier.
inline Share loop_rows(const PackedSchedule& s, int thread, int team) {
  const Index rows = s.steps > 0 ? s.active[0] : 0;
  const auto cut = [&](int k) {  // the row boundary nearest to k/team of the pairs
    if (k <= 0) return Index(0);
    if (k >= team) return rows;
    const double target = double(s.total()) * double(k) / double(team);
    Index b = 0;
    double before = 0;  // pairs in the rows before b
    for (; b < rows; ++b) {
      const double pairs = s.lengths[std::size_t(s.order[std::size_t(b)])];
      if (before + pairs / 2 >= target) break;
      before += pairs;
    }
    return b;
  };
  return {cut(thread), cut(thread + 1)};
}

/// Runs step(t, o, r0, r1) for every step t of `s`, in order (or in reverse order for
/// backward passes), on `team`. Each of its parts is a fixed block of sorted rows for the
/// whole loop (loop_rows()), run by one thread, which at step t gets those of the block's rows
/// still active, [r0, r1).
/// The blocks are cut row by row, not on the recurrent kernel's tiles
/// (PackedRightGemm::kRowGranule rows): 64 rows then split 32 + 32 rather than 30 + 34
/// (AVX-512's tiles of 6), and the kernel computes a row the same way in any tile, so every
/// row is computed the same way on any thread count. A row's steps only ever read and write
/// that row, so the threads never wait for each other inside the loop.
/// o is offset[t]: the step's rows are o + r0 .. o + r1 - 1 of the packed matrices.
/// Empty shares are skipped. step must not throw (it may run on a helper thread).
template <class F>
void for_each_step(const PackedSchedule& s, LoopTeam team, bool reverse, F&& step) {
  parallel_parts(team.parts, team.threads, [&](Index part, int) {
    const auto [begin, end] = loop_rows(s, int(part), team.parts);
    for (Index k = 0; k < s.steps; ++k) {
      const Index t = reverse ? s.steps - 1 - k : k;
      const Index r1 = std::min(end, s.active[std::size_t(t)]);
      if (begin < r1) step(t, s.offset[std::size_t(t)], begin, r1);
    }
  });
}

// Where each step's h_{t-1} comes from. A pass that can be followed by backward() keeps it
// for every valid (row, step) in the cache's h_prev, (P, R), which the weight gradients read
// after the loop: seeded from the initial h before step 0 (start_h_prev) and fed from h_t
// after each step (feed_next_step). A pass that no backward pass can follow (an inference
// pass, keeps_for_backward()) keeps none (h_prev gets 0 rows) and reads h_{t-1} where it
// already is: in the first rows of step t - 1's block of h (or the initial h at step 0).
// That saves a copy of every h_t.

/// Whether a forward pass in `mode` at `precision` keeps what backward() needs: a training
/// pass does, unless it runs in int8, which only infers.
inline bool keeps_for_backward(ForwardMode mode, Precision precision) {
  return mode == ForwardMode::training && precision != Precision::int8;
}

/// Before step 0: sizes h_prev (P, R), 0 rows when the pass keeps nothing for backward
/// (`keep` false), and seeds step 0's block with the sorted initial h of its rows.
template <class Scalar>
void start_h_prev(const PackedSchedule& s, bool keep, const Matrix<Scalar>& h0, ReusableMatrix<Scalar>& h_prev) {
  h_prev.resize(keep ? s.total() : 0, h0.cols());
  if (h_prev.rows() > 0 && s.steps > 0) h_prev.topRows(s.active[0]) = h0.topRows(s.active[0]);
}

/// h_{t-1} of step t's rows [r0, r1), (r1 - r0, R): their block of h_prev, or, when the pass
/// keeps none, the rows of h (or at step 0 of the initial h, h0) that hold it.
template <class Scalar>
Eigen::Ref<const Matrix<Scalar>> step_h_prev(const PackedSchedule& s, Index t, Index r0, Index r1,
                                             const Matrix<Scalar>& h0, const ReusableMatrix<Scalar>& h,
                                             const ReusableMatrix<Scalar>& h_prev) {
  if (h_prev.rows() > 0) return h_prev.middleRows(s.offset[t] + r0, r1 - r0);
  if (t == 0) return h0.middleRows(r0, r1 - r0);
  return h.middleRows(s.offset[t - 1] + r0, r1 - r0);
}

/// After step t: copies h_t of the rows in [r0, r1) that go on to step t + 1 into that
/// step's block of h_prev, when the pass keeps one.
template <class Scalar>
void feed_next_step(const PackedSchedule& s, Index t, Index r0, Index r1, const ReusableMatrix<Scalar>& h,
                    ReusableMatrix<Scalar>& h_prev) {
  if (t + 1 >= s.steps || h_prev.rows() == 0) return;
  const Index end = std::min(r1, s.active[t + 1]);
  if (r0 < end) h_prev.middleRows(s.offset[t + 1] + r0, end - r0) = h.middleRows(s.offset[t] + r0, end - r0);
}

/// backward()'s check that its cache kept h_{t-1} (P, R): a cache filled by an inference
/// pass (ForwardMode::inference, or int8 before the cell was set back to a precision that
/// trains) did not.
template <class Scalar>
void check_h_prev(const char* function, const ReusableMatrix<Scalar>& h_prev, Index P, Index R) {
  if (h_prev.rows() == 0 && P > 0)
    throw_argument(function, "cache.h_prev",
                   "(" + std::to_string(P) + ", " + std::to_string(R) +
                       ") from a forward pass that trains (ForwardMode::training in float32 or bfloat16)",
                   "0 rows, from an inference pass (ForwardMode::inference or int8), which keeps no h_{t-1}");
  check_shape(function, "cache.h_prev", h_prev, P, R);
}

/// final.row(j) = the packed row of sorted row j at its last valid step, or initial.row(j)
/// when its length is 0 (all in sorted order).
template <class Scalar>
void gather_final(const PackedSchedule& s, const ReusableMatrix<Scalar>& packed, const Matrix<Scalar>& initial,
                  Matrix<Scalar>& final) {
  final = initial;  // reallocates only when the shape changes
  for (Index j = 0; j < s.batch; ++j) {
    const int len = s.lengths[s.order[j]];
    if (len > 0) final.row(j) = packed.row(s.offset[len - 1] + j);
  }
}

}  // namespace dynrnn::detail
