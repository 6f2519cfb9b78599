// dynrnn: dynamic_rnn and its backward pass, TensorFlow 1.x semantics, strictly.
//
// Dimensions: T max_time, B batch, I input features, H cell output width.
//
// For each batch row b with length L_b (0 <= L_b <= T):
//   - outputs(t, b, :) is the cell output at step t for t < L_b, and exactly 0 after;
//   - final_state row b is the state after step L_b - 1 (the initial state if L_b == 0);
//   - inputs at padded steps (t >= L_b) are never read, so they may hold anything,
//     NaN and Inf included, and gradients arriving at padded outputs are ignored.
// Rows are independent of each other and of T.
//
// The work happens in the cell on a packed batch (packed_schedule.hpp). This file
// validates arguments and moves data between the caller's padded time-major
// layout and the packed layout. When every row runs every step, the two layouts are
// the same; an inference pass over such a batch (one that keeps nothing for backward)
// then moves nothing: the cell reads x and writes the outputs where they are.
//
// A Cell type provides: Scalar, State, Cache (with a member x, the packed
// inputs), Gradients, BackwardWorkspace; input_size(), output_size(),
// zero_state(B), make_gradients(), check_parameters(fn), check_gradients(fn, g),
// check_state(fn, arg, state, B); forward(schedule, sorted s0, cache, sorted final, mode);
// packed_outputs(cache); backward(schedule, cache, packed dh, sorted dstate, grads, packed
// dx or null, ws). State provides zip(other, f). Optionally, precision() (float32 without
// it), and packed_outputs of a non-const cache, giving the matrix forward() writes the
// packed outputs into and sizes (P, output_size()) itself: a cell that has it also never
// writes cache.x, and dynamic_rnn then lets its inference passes over full batches read x
// and write the outputs in place. LSTMCell, GRUCell and RNNCell are such cells; StackedCell
// of them is a cell.
//
// The overloads that take the result or gradient object by reference reuse its
// buffers: called again with a batch of the same batch size and max_time, they allocate
// nothing once they have seen a batch with at least that sum of lengths (the packed
// buffers are ReusableMatrix objects, whose storage only grows).
#pragma once

#include "../core/buffer_cache.hpp"
#include "../core/check.hpp"
#include "../core/reusable_matrix.hpp"
#include "../core/types.hpp"
#include "packed_schedule.hpp"
#include "time_loop.hpp"

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dynrnn {

/// \brief Result of dynamic_rnn: the outputs, the final state, and what the backward pass needs.
/// \tparam Cell the recurrent cell type, e.g. LSTMCell<float>.
template <class Cell>
struct DynamicRNNResult {
  using Scalar = typename Cell::Scalar;  ///< Element type.
  using State = typename Cell::State;    ///< The cell's state type.

  Tensor3<Scalar> outputs;        ///< [T, B, H] cell outputs, exactly 0 at padded steps.
  State final_state;              ///< (B, H) per member: state after each row's last valid step.
  PackedSchedule schedule;        ///< The packed layout the cell ran on.
  typename Cell::Cache cache;     ///< Activations kept for dynamic_rnn_backward.
  State sorted_initial;           ///< Scratch: the initial state in packed row order.
  State sorted_final;             ///< Scratch: the final state in packed row order.
  ForwardMode mode = ForwardMode::training;  ///< The pass's mode: after ForwardMode::inference, `cache` holds nothing for backward.

  DynamicRNNResult() = default;  ///< An empty result, for the overload that fills one.
  DynamicRNNResult(const DynamicRNNResult&) = default;             ///< Copies every member.
  DynamicRNNResult(DynamicRNNResult&&) = default;                  ///< Moves every member.
  DynamicRNNResult& operator=(const DynamicRNNResult&) = default;  ///< Copies every member.
  DynamicRNNResult& operator=(DynamicRNNResult&&) = default;       ///< Moves every member.
  /// \brief Gives `outputs`' memory to the next result of its size (core/buffer_cache.hpp).
  ~DynamicRNNResult() { detail::TensorPool<Scalar>::instance().give(outputs); }
};

/// \brief Whether dynamic_rnn_backward computes dLoss/d inputs.
///
/// A model's first layer, whose inputs are data, needs no input gradient; skipping it saves
/// the product dgates · W_xᵀ over every valid (row, step), which is I / (3·(I + H)) of an
/// LSTM's training work (a sixth when I = H). PyTorch likewise leaves it out when its
/// inputs do not require a gradient.
enum class InputGradients {
  compute,  ///< Fill `inputs` with dLoss/dx (the default).
  skip,     ///< Leave `inputs` empty, [0, 0, 0], and skip the product.
};

namespace detail {
// Throws when `value` is neither InputGradients::compute nor InputGradients::skip.
inline void check_input_gradients(const char* function, InputGradients value) {
  if (value != InputGradients::compute && value != InputGradients::skip)
    throw_argument(function, "input_gradients", "InputGradients::compute or InputGradients::skip",
                   std::to_string(static_cast<int>(value)));
}

// Whether a pass of `cell` in `mode` keeps what backward needs (keeps_for_backward()), for a
// cell that says so itself (FrozenCell), one with precision(), or another. Called with 0.
template <class Cell>
auto pass_keeps_for_backward(const Cell& cell, ForwardMode mode, int) -> decltype(cell.keeps_for_backward(mode)) {
  return cell.keeps_for_backward(mode);
}
template <class Cell>
auto pass_keeps_for_backward(const Cell& cell, ForwardMode mode, long) -> decltype(cell.precision(), bool()) {
  return keeps_for_backward(mode, cell.precision());
}
template <class Cell>
bool pass_keeps_for_backward(const Cell&, ForwardMode mode, ...) {
  return keeps_for_backward(mode, Precision::float32);
}

// Whether `data` may be viewed by a ReusableMatrix, an Eigen::Map aligned as Eigen's own
// allocations are (an Eigen::Tensor's data always is).
inline bool viewable(const void* data) {
  return reinterpret_cast<std::uintptr_t>(data) % EIGEN_MAX_ALIGN_BYTES == 0;
}

// The views of one dynamic_rnn call (ReusableMatrix::view()), ended when the call ends,
// however it ends, so that no cache is left pointing at the caller's tensors.
template <class Scalar>
class CallViews {
 public:
  void add(ReusableMatrix<Scalar>& m, Scalar* data, Index rows, Index cols) {
    eigen_assert(count_ < 2);
    m.view(data, rows, cols);
    views_[count_++] = &m;
  }
  // Back to the caches' own storage, in the views' shapes (end_view()).
  void end() {
    for (; count_ > 0; --count_) views_[count_ - 1]->end_view();
  }
  ~CallViews() {  // after an exception: own storage again, empty, allocating nothing
    for (; count_ > 0; --count_) views_[count_ - 1]->drop_view();
  }

 private:
  ReusableMatrix<Scalar>* views_[2] = {};
  int count_ = 0;
};

}  // namespace detail

/// \brief Gradients from dynamic_rnn_backward: the cell's parameter gradients (as members of
/// Cell::Gradients, e.g. `kernel` and `bias` for an LSTM), plus the inputs and initial state.
/// \tparam Cell the recurrent cell type.
template <class Cell>
struct DynamicRNNGradients : Cell::Gradients {
  using Scalar = typename Cell::Scalar;  ///< Element type.

  /// [T, B, I] dLoss/dx, exactly 0 at padded steps; [0, 0, 0] after a call with
  /// InputGradients::skip.
  Tensor3<typename Cell::Scalar> inputs;
  typename Cell::State initial_state;     ///< (B, H) per member: dLoss/d initial state.

  /// \brief Scratch space reused by dynamic_rnn_backward; not part of the result.
  struct Workspace {
    ReusableMatrix<Scalar> d_outputs;        ///< (P, H) packed dLoss/d outputs.
    ReusableMatrix<Scalar> d_inputs;         ///< (P, I) packed dLoss/d inputs.
    typename Cell::State d_state;    ///< Sorted-order state gradient carried through time.
    typename Cell::BackwardWorkspace cell;  ///< The cell's own scratch.
  } workspace;  ///< \copybrief Workspace

  DynamicRNNGradients() = default;
  /// \brief Zero parameter gradients for `cell`; inputs and initial_state are left empty.
  explicit DynamicRNNGradients(const Cell& cell) : Cell::Gradients(cell.make_gradients()) {}
  DynamicRNNGradients(const DynamicRNNGradients&) = default;             ///< Copies every member.
  DynamicRNNGradients(DynamicRNNGradients&&) = default;                  ///< Moves every member.
  DynamicRNNGradients& operator=(const DynamicRNNGradients&) = default;  ///< Copies every member.
  DynamicRNNGradients& operator=(DynamicRNNGradients&&) = default;       ///< Moves every member.
  /// \brief Gives `inputs`' memory to the next result of its size (core/buffer_cache.hpp).
  ~DynamicRNNGradients() { detail::TensorPool<Scalar>::instance().give(inputs); }
};

/// \brief Runs `cell` over a batch of variable-length sequences from an initial state.
///
/// \tparam Cell a recurrent cell such as LSTMCell<float>.
/// \param cell     the cell; its parameters must not change before dynamic_rnn_backward.
/// \param x        [T, B, I] time-major inputs; values at padded steps are never read.
/// \param lengths  B lengths, each in [0, T].
/// \param initial_state (B, H) per member.
/// \param mode     ForwardMode::inference when no dynamic_rnn_backward will follow: the same
///                 outputs and final state, without writing what backward would read.
/// \return outputs, final state and the cache for dynamic_rnn_backward.
/// \throws std::invalid_argument naming the argument, the expected and the actual shape or value.
///
/// \code
/// dynrnn::LSTMCell<float> cell(2, 64);
/// dynrnn::Tensor3<float> x(15, 50, 2);            // fill with data
/// std::vector<int> lengths(50, 15);
/// auto fwd = dynrnn::dynamic_rnn(cell, x, lengths);
/// float y = fwd.outputs(3, 0, 7);                 // output unit 7 of row 0 at step 3
/// auto out = dynrnn::dynamic_rnn(cell, x, lengths, dynrnn::ForwardMode::inference);  // prediction only
/// \endcode
template <class Cell>
DynamicRNNResult<Cell> dynamic_rnn(const Cell& cell, const Tensor3<typename Cell::Scalar>& x,
                                   const std::vector<int>& lengths, const typename Cell::State& initial_state,
                                   ForwardMode mode = ForwardMode::training) {
  DynamicRNNResult<Cell> r;
  dynamic_rnn(cell, x, lengths, initial_state, r, mode);
  return r;
}

/// \brief dynamic_rnn into an existing result, reusing its buffers: repeated calls with
/// batches of the same batch size and max_time allocate nothing once the result has held a
/// batch with at least their sum of lengths. Arguments as for the overload that returns
/// the result.
template <class Cell>
void dynamic_rnn(const Cell& cell, const Tensor3<typename Cell::Scalar>& x, const std::vector<int>& lengths,
                 const typename Cell::State& initial_state, DynamicRNNResult<Cell>& result,
                 ForwardMode mode = ForwardMode::training) {
  using Scalar = typename Cell::Scalar;
  constexpr const char* fn = "dynamic_rnn";
  cell.check_parameters(fn);
  const Index T = x.dimension(0), B = x.dimension(1), H = cell.output_size();
  detail::check_shape(fn, "x", x, T, B, cell.input_size());
  detail::check_lengths(fn, lengths, B, T);
  cell.check_state(fn, "initial_state", initial_state, B);
  detail::check_forward_mode(fn, mode);

  PackedSchedule& s = result.schedule;
  s.assign(lengths, T);
  detail::TensorPool<Scalar>::instance().resize(result.outputs, T, B, H);  // allocates only when the size changes
  // Every row runs every step (the packed layout is then the padded one) and the pass keeps
  // nothing for backward: a cell that gives its outputs' matrix (and so never writes
  // cache.x) reads x where it is and writes the outputs in place.
  detail::CallViews<Scalar> views;
  bool in_place = false;
  if constexpr (detail::has_writable_outputs<Cell>::value) {
    in_place = s.total() == T * B && !detail::pass_keeps_for_backward(cell, mode, 0) &&
               detail::viewable(x.data()) && detail::viewable(result.outputs.data());
    if (in_place) {
      views.add(result.cache.x, const_cast<Scalar*>(x.data()), T * B, x.dimension(2));
      views.add(Cell::packed_outputs(result.cache), result.outputs.data(), T * B, H);
    }
  }
  if (!in_place) detail::pack_rows(s, detail::as_matrix(x), result.cache.x);
  result.sorted_initial.zip(initial_state, [&](Matrix<Scalar>& dst, const Matrix<Scalar>& src) {
    detail::sort_rows(s, src, dst);
  });
  result.mode = mode;
  cell.forward(s, result.sorted_initial, result.cache, result.sorted_final, mode);

  auto out = detail::as_matrix(result.outputs);
  const ReusableMatrix<Scalar>& packed = Cell::packed_outputs(result.cache);
  if (packed.data() != out.data()) detail::unpack_rows(s, packed, out);  // not written in place
  views.end();
  result.final_state.zip(result.sorted_final, [&](Matrix<Scalar>& dst, const Matrix<Scalar>& src) {
    detail::unsort_rows(s, src, dst);
  });
}

/// \brief Runs `cell` over a batch from the zero state; see the overload with an initial state.
template <class Cell>
DynamicRNNResult<Cell> dynamic_rnn(const Cell& cell, const Tensor3<typename Cell::Scalar>& x,
                                   const std::vector<int>& lengths, ForwardMode mode = ForwardMode::training) {
  return dynamic_rnn(cell, x, lengths, cell.zero_state(x.dimension(1)), mode);
}

/// \brief Backpropagation through time for a dynamic_rnn call, accumulating into `grads`.
///
/// Parameter gradients are added to `grads` (zero them with setZero() between batches, or
/// leave them to sum over several batches); `grads.inputs` and `grads.initial_state` are
/// overwritten with this call's values.
///
/// \param cell       the cell dynamic_rnn ran, with unchanged parameters.
/// \param forward    dynamic_rnn's result, from a pass in ForwardMode::training.
/// \param d_outputs  [T, B, H] dLoss/d outputs; entries at padded steps are ignored.
/// \param d_final    (B, H) per member: dLoss/d final state.
/// \param grads      receives the gradients.
/// \param input_gradients InputGradients::skip when nothing needs dLoss/d inputs: the
///                   parameter and initial-state gradients are the same, and `grads.inputs`
///                   is left empty.
/// \throws std::invalid_argument naming the argument, the expected and the actual shape or value.
///
/// \code
/// // A training step whose LSTM reads the data directly: no gradient for the data.
/// dynrnn::dynamic_rnn_backward(cell, fwd, d_outputs, d_final, grads, dynrnn::InputGradients::skip);
/// \endcode
template <class Cell>
void dynamic_rnn_backward(const Cell& cell, const DynamicRNNResult<Cell>& forward,
                          const Tensor3<typename Cell::Scalar>& d_outputs,
                          const typename Cell::State& d_final, DynamicRNNGradients<Cell>& grads,
                          InputGradients input_gradients = InputGradients::compute) {
  using Scalar = typename Cell::Scalar;
  constexpr const char* fn = "dynamic_rnn_backward";
  cell.check_parameters(fn);
  if (forward.mode != ForwardMode::training)
    detail::throw_argument(fn, "forward", "the result of a pass in ForwardMode::training",
                           "the result of a pass in ForwardMode::inference, which keeps nothing for backward");
  const PackedSchedule& s = forward.schedule;
  const Index T = s.max_time, B = s.batch, H = cell.output_size(), I = cell.input_size();
  detail::check_shape(fn, "forward.outputs", forward.outputs, T, B, H);
  detail::check_shape(fn, "forward.cache.x", forward.cache.x, s.total(), I);
  detail::check_shape(fn, "d_outputs", d_outputs, T, B, H);
  cell.check_state(fn, "d_final", d_final, B);
  cell.check_gradients(fn, grads);
  detail::check_input_gradients(fn, input_gradients);
  const bool want_inputs = input_gradients == InputGradients::compute;

  auto& ws = grads.workspace;
  detail::pack_rows(s, detail::as_matrix(d_outputs), ws.d_outputs);
  ws.d_state.zip(d_final, [&](Matrix<Scalar>& dst, const Matrix<Scalar>& src) { detail::sort_rows(s, src, dst); });
  cell.backward(s, forward.cache, ws.d_outputs, ws.d_state, grads, want_inputs ? &ws.d_inputs : nullptr, ws.cell);

  if (want_inputs) {
    detail::TensorPool<Scalar>::instance().resize(grads.inputs, T, B, I);  // allocates only when the size changes
    auto dx = detail::as_matrix(grads.inputs);
    detail::unpack_rows(s, ws.d_inputs, dx);
  } else {
    detail::TensorPool<Scalar>::instance().resize(grads.inputs, 0, 0, 0);
  }
  grads.initial_state.zip(ws.d_state, [&](Matrix<Scalar>& dst, const Matrix<Scalar>& src) {
    detail::unsort_rows(s, src, dst);
  });
}

/// \brief Backpropagation through time for a dynamic_rnn call; returns fresh gradients.
///
/// \code
/// auto fwd = dynrnn::dynamic_rnn(cell, x, lengths);
/// auto g = dynrnn::dynamic_rnn_backward(cell, fwd, d_outputs, d_final);
/// // g.kernel, g.bias: parameter gradients; g.inputs: [T, B, I]; g.initial_state.c / .h
/// \endcode
template <class Cell>
DynamicRNNGradients<Cell> dynamic_rnn_backward(const Cell& cell, const DynamicRNNResult<Cell>& forward,
                                               const Tensor3<typename Cell::Scalar>& d_outputs,
                                               const typename Cell::State& d_final,
                                               InputGradients input_gradients = InputGradients::compute) {
  DynamicRNNGradients<Cell> g(cell);
  dynamic_rnn_backward(cell, forward, d_outputs, d_final, g, input_gradients);
  return g;
}

/// \brief Backpropagation through time when the loss does not depend on the final state.
template <class Cell>
DynamicRNNGradients<Cell> dynamic_rnn_backward(const Cell& cell, const DynamicRNNResult<Cell>& forward,
                                               const Tensor3<typename Cell::Scalar>& d_outputs,
                                               InputGradients input_gradients = InputGradients::compute) {
  return dynamic_rnn_backward(cell, forward, d_outputs, cell.zero_state(forward.schedule.batch), input_gradients);
}

}  // namespace dynrnn
