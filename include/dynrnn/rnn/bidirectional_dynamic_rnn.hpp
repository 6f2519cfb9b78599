// dynrnn: bidirectional_dynamic_rnn and its backward pass, TensorFlow 1.x semantics.
//
// Dimensions: T max_time, B batch, I input features, R_fw and R_bw the two cells' output widths.
//
// The forward cell runs as dynamic_rnn does. The backward cell runs over each row's own
// valid steps in reverse, as tf.reverse_sequence(x, lengths) feeds it: row b of length L_b
// sees x(L_b - 1), ..., x(0), so its first step is the row's last valid input, whatever the
// padding; the padding is never reversed into the data. Its outputs are reversed back, so
// output (t, b) of either direction belongs to input step t, and both are 0 past L_b.
// The final states are each direction's state after its last step: for the backward
// direction, after reading x(0).
#pragma once

#include "../core/buffer_cache.hpp"
#include "../core/check.hpp"
#include "../core/types.hpp"
#include "dynamic_rnn.hpp"

#include <algorithm>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dynrnn {

/// \brief Reverses the first lengths[b] steps of each row b of `x` in place, as
/// tf.reverse_sequence(x, lengths, seq_axis=0, batch_axis=1) does; padded steps stay where
/// they are. Applying it twice restores `x`.
/// \throws std::invalid_argument for a length count other than B or a length outside [0, T].
template <class Scalar>
void reverse_sequences(Tensor3<Scalar>& x, const std::vector<int>& lengths) {
  const Index T = x.dimension(0), B = x.dimension(1);
  detail::check_lengths("reverse_sequences", lengths, B, T);
  auto m = detail::as_matrix(x);  // row t·B + b
  for (Index b = 0; b < B; ++b)
    for (Index t = 0, u = lengths[b] - 1; t < u; ++t, --u) m.row(t * B + b).swap(m.row(u * B + b));
}

/// \brief Result of bidirectional_dynamic_rnn: each direction's dynamic_rnn result, both with
/// outputs in input order.
/// \tparam CellFw, CellBw the two directions' cell types.
template <class CellFw, class CellBw>
struct BidirectionalResult {
  using Scalar = typename CellFw::Scalar;  ///< Element type.
  DynamicRNNResult<CellFw> fw;  ///< Forward direction: outputs [T, B, R_fw], final state, cache.
  DynamicRNNResult<CellBw> bw;  ///< Backward direction: outputs [T, B, R_bw] in input order, final state, cache.
  Tensor3<Scalar> reversed;     ///< Scratch: the inputs as the backward cell reads them.

  BidirectionalResult() = default;  ///< An empty result, for the overload that fills one.
  BidirectionalResult(const BidirectionalResult&) = default;             ///< Copies every member.
  BidirectionalResult(BidirectionalResult&&) = default;                  ///< Moves every member.
  BidirectionalResult& operator=(const BidirectionalResult&) = default;  ///< Copies every member.
  BidirectionalResult& operator=(BidirectionalResult&&) = default;       ///< Moves every member.
  /// \brief Gives the padded tensors' memory to the next result of their size (core/buffer_cache.hpp).
  ~BidirectionalResult() { detail::TensorPool<Scalar>::instance().give(reversed); }
};

/// \brief Gradients from bidirectional_dynamic_rnn_backward.
/// \tparam CellFw, CellBw the two directions' cell types.
template <class CellFw, class CellBw>
struct BidirectionalGradients {
  using Scalar = typename CellFw::Scalar;  ///< Element type.
  DynamicRNNGradients<CellFw> fw;  ///< Forward cell's parameter and initial-state gradients.
  DynamicRNNGradients<CellBw> bw;  ///< Backward cell's parameter and initial-state gradients.
  /// [T, B, I] dLoss/dx through both directions, 0 at padded steps; [0, 0, 0] after a call
  /// with InputGradients::skip.
  Tensor3<Scalar> inputs;
  Tensor3<Scalar> reversed;        ///< Scratch: the backward direction's output gradient, reversed.

  BidirectionalGradients() = default;
  /// \brief Zero parameter gradients for both cells.
  BidirectionalGradients(const CellFw& fw_cell, const CellBw& bw_cell) : fw(fw_cell), bw(bw_cell) {}
  BidirectionalGradients(const BidirectionalGradients&) = default;             ///< Copies every member.
  BidirectionalGradients(BidirectionalGradients&&) = default;                  ///< Moves every member.
  BidirectionalGradients& operator=(const BidirectionalGradients&) = default;  ///< Copies every member.
  BidirectionalGradients& operator=(BidirectionalGradients&&) = default;       ///< Moves every member.
  /// \brief Gives the padded tensors' memory to the next result of their size (core/buffer_cache.hpp).
  ~BidirectionalGradients() {
    detail::TensorPool<Scalar>::instance().give(inputs);
    detail::TensorPool<Scalar>::instance().give(reversed);
  }
};

/// \brief Runs `cell_fw` forward and `cell_bw` backward in time over each row's valid steps,
/// into an existing result, reusing its buffers.
///
/// \param x        [T, B, I] time-major inputs; values at padded steps are never read.
/// \param lengths  B lengths, each in [0, T].
/// \param initial_fw, initial_bw each direction's initial state.
/// \param mode     ForwardMode::inference when no backward pass will follow (dynamic_rnn).
/// \throws std::invalid_argument naming the argument, the expected and the actual shape or value.
template <class CellFw, class CellBw>
void bidirectional_dynamic_rnn(const CellFw& cell_fw, const CellBw& cell_bw, const Tensor3<typename CellFw::Scalar>& x,
                               const std::vector<int>& lengths, const typename CellFw::State& initial_fw,
                               const typename CellBw::State& initial_bw, BidirectionalResult<CellFw, CellBw>& result,
                               ForwardMode mode = ForwardMode::training) {
  static_assert(std::is_same_v<typename CellFw::Scalar, typename CellBw::Scalar>,
                "bidirectional_dynamic_rnn: both cells must have the same Scalar");
  dynamic_rnn(cell_fw, x, lengths, initial_fw, result.fw, mode);  // checks x, lengths and mode
  // The copy allocates only when the size changes; a dropped result's tensor is reused.
  detail::TensorPool<typename CellFw::Scalar>::instance().resize(result.reversed, x.dimension(0), x.dimension(1),
                                                                x.dimension(2));
  result.reversed = x;
  reverse_sequences(result.reversed, lengths);
  dynamic_rnn(cell_bw, result.reversed, lengths, initial_bw, result.bw, mode);
  reverse_sequences(result.bw.outputs, lengths);
}

/// \brief bidirectional_dynamic_rnn from given initial states; returns a new result.
template <class CellFw, class CellBw>
BidirectionalResult<CellFw, CellBw> bidirectional_dynamic_rnn(const CellFw& cell_fw, const CellBw& cell_bw,
                                                              const Tensor3<typename CellFw::Scalar>& x,
                                                              const std::vector<int>& lengths,
                                                              const typename CellFw::State& initial_fw,
                                                              const typename CellBw::State& initial_bw,
                                                              ForwardMode mode = ForwardMode::training) {
  BidirectionalResult<CellFw, CellBw> r;
  bidirectional_dynamic_rnn(cell_fw, cell_bw, x, lengths, initial_fw, initial_bw, r, mode);
  return r;
}

/// \brief bidirectional_dynamic_rnn from both cells' zero states.
///
/// \code
/// dynrnn::LSTMCell<float> fw(8, 32), bw(8, 32);
/// auto r = dynrnn::bidirectional_dynamic_rnn(fw, bw, x, lengths);
/// dynrnn::Tensor3<float> both = dynrnn::concat_outputs(r);   // [T, B, 64]
/// \endcode
template <class CellFw, class CellBw>
BidirectionalResult<CellFw, CellBw> bidirectional_dynamic_rnn(const CellFw& cell_fw, const CellBw& cell_bw,
                                                              const Tensor3<typename CellFw::Scalar>& x,
                                                              const std::vector<int>& lengths,
                                                              ForwardMode mode = ForwardMode::training) {
  const Index B = x.dimension(1);
  return bidirectional_dynamic_rnn(cell_fw, cell_bw, x, lengths, cell_fw.zero_state(B), cell_bw.zero_state(B), mode);
}

/// \brief The two directions' outputs side by side, [T, B, R_fw + R_bw], into `out` (forward
/// features first, as tf.concat(outputs, 2)).
template <class CellFw, class CellBw>
void concat_outputs(const BidirectionalResult<CellFw, CellBw>& r, Tensor3<typename CellFw::Scalar>& out) {
  const auto fw = detail::as_matrix(r.fw.outputs), bw = detail::as_matrix(r.bw.outputs);
  out.resize(r.fw.outputs.dimension(0), r.fw.outputs.dimension(1), fw.cols() + bw.cols());
  auto m = detail::as_matrix(out);
  m.leftCols(fw.cols()) = fw;
  m.rightCols(bw.cols()) = bw;
}

/// \brief The two directions' outputs side by side, [T, B, R_fw + R_bw].
template <class CellFw, class CellBw>
Tensor3<typename CellFw::Scalar> concat_outputs(const BidirectionalResult<CellFw, CellBw>& r) {
  Tensor3<typename CellFw::Scalar> out;
  concat_outputs(r, out);
  return out;
}

/// \brief Splits a gradient of concat_outputs' result, [T, B, R_fw + R_bw], into the two
/// directions' output gradients.
/// \throws std::invalid_argument unless `d_concat` has R_fw + R_bw features.
template <class Scalar>
void split_outputs(const Tensor3<Scalar>& d_concat, Index fw_width, Index bw_width, Tensor3<Scalar>& d_fw,
                   Tensor3<Scalar>& d_bw) {
  const Index T = d_concat.dimension(0), B = d_concat.dimension(1);
  detail::check_shape("split_outputs", "d_concat", d_concat, T, B, fw_width + bw_width);
  d_fw.resize(T, B, fw_width);
  d_bw.resize(T, B, bw_width);
  const auto m = detail::as_matrix(d_concat);
  detail::as_matrix(d_fw) = m.leftCols(fw_width);
  detail::as_matrix(d_bw) = m.rightCols(bw_width);
}

/// \brief Backpropagation through both directions, accumulating parameter gradients into
/// `grads.fw` and `grads.bw`; `grads.inputs` and the initial-state gradients are overwritten.
///
/// \param forward  bidirectional_dynamic_rnn's result.
/// \param d_fw, d_bw  [T, B, R] dLoss/d each direction's outputs (in input order); entries at
///                    padded steps are ignored.
/// \param d_final_fw, d_final_bw dLoss/d each direction's final state.
/// \param input_gradients InputGradients::skip leaves `grads.inputs` (and each direction's)
///                   empty and skips their products, as for dynamic_rnn_backward.
/// \throws std::invalid_argument naming the argument, the expected and the actual shape or value.
template <class CellFw, class CellBw>
void bidirectional_dynamic_rnn_backward(const CellFw& cell_fw, const CellBw& cell_bw,
                                        const BidirectionalResult<CellFw, CellBw>& forward,
                                        const Tensor3<typename CellFw::Scalar>& d_fw,
                                        const Tensor3<typename CellFw::Scalar>& d_bw,
                                        const typename CellFw::State& d_final_fw,
                                        const typename CellBw::State& d_final_bw,
                                        BidirectionalGradients<CellFw, CellBw>& grads,
                                        InputGradients input_gradients = InputGradients::compute) {
  const std::vector<int>& lengths = forward.fw.schedule.lengths;
  dynamic_rnn_backward(cell_fw, forward.fw, d_fw, d_final_fw, grads.fw, input_gradients);
  detail::check_shape("bidirectional_dynamic_rnn_backward", "d_bw", d_bw, forward.bw.outputs.dimension(0),
                      forward.bw.outputs.dimension(1), forward.bw.outputs.dimension(2));
  auto& pool = detail::TensorPool<typename CellFw::Scalar>::instance();
  pool.resize(grads.reversed, d_bw.dimension(0), d_bw.dimension(1), d_bw.dimension(2));  // as in the forward pass
  grads.reversed = d_bw;
  reverse_sequences(grads.reversed, lengths);
  dynamic_rnn_backward(cell_bw, forward.bw, grads.reversed, d_final_bw, grads.bw, input_gradients);
  if (input_gradients == InputGradients::skip) {
    pool.resize(grads.inputs, 0, 0, 0);
    return;
  }
  reverse_sequences(grads.bw.inputs, lengths);  // now in input order
  pool.resize(grads.inputs, grads.fw.inputs.dimension(0), grads.fw.inputs.dimension(1), grads.fw.inputs.dimension(2));
  grads.inputs = grads.fw.inputs + grads.bw.inputs;
}

/// \brief bidirectional_dynamic_rnn_backward into fresh gradients, with the gradients of both
/// directions' final states (as dynamic_rnn_backward's returning overload takes one).
///
/// \code
/// auto g = dynrnn::bidirectional_dynamic_rnn_backward(fw, bw, r, d_fw, d_bw, d_final_fw, d_final_bw);
/// \endcode
template <class CellFw, class CellBw>
BidirectionalGradients<CellFw, CellBw> bidirectional_dynamic_rnn_backward(
    const CellFw& cell_fw, const CellBw& cell_bw, const BidirectionalResult<CellFw, CellBw>& forward,
    const Tensor3<typename CellFw::Scalar>& d_fw, const Tensor3<typename CellFw::Scalar>& d_bw,
    const typename CellFw::State& d_final_fw, const typename CellBw::State& d_final_bw,
    InputGradients input_gradients = InputGradients::compute) {
  BidirectionalGradients<CellFw, CellBw> g(cell_fw, cell_bw);
  bidirectional_dynamic_rnn_backward(cell_fw, cell_bw, forward, d_fw, d_bw, d_final_fw, d_final_bw, g,
                                     input_gradients);
  return g;
}

/// \brief bidirectional_dynamic_rnn_backward into fresh gradients, when the loss does not
/// depend on the final states.
template <class CellFw, class CellBw>
BidirectionalGradients<CellFw, CellBw> bidirectional_dynamic_rnn_backward(
    const CellFw& cell_fw, const CellBw& cell_bw, const BidirectionalResult<CellFw, CellBw>& forward,
    const Tensor3<typename CellFw::Scalar>& d_fw, const Tensor3<typename CellFw::Scalar>& d_bw,
    InputGradients input_gradients = InputGradients::compute) {
  const Index B = forward.fw.schedule.batch;
  return bidirectional_dynamic_rnn_backward(cell_fw, cell_bw, forward, d_fw, d_bw, cell_fw.zero_state(B),
                                            cell_bw.zero_state(B), input_gradients);
}

/// \brief Calls f(gradient) for each parameter gradient of both cells (not the input or
/// initial-state gradients); clip_by_global_norm() and clip_by_value() use this.
template <class CellFw, class CellBw, class F>
void for_each_gradient(BidirectionalGradients<CellFw, CellBw>& g, F&& f) {
  for_each_gradient(static_cast<typename CellFw::Gradients&>(g.fw), f);
  for_each_gradient(static_cast<typename CellBw::Gradients&>(g.bw), f);
}

}  // namespace dynrnn
