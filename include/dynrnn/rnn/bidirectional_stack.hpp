// dynrnn: several bidirectional layers stacked, as nn.LSTM(num_layers=k, bidirectional=True)
// and stacked tf.nn.bidirectional_dynamic_rnn calls compute them.
//
// Dimensions: T max_time, B batch; layer k has a forward and a backward cell, both reading
// width I_k and writing R_k; I_0 is the input width and I_{k+1} = 2·R_k, since each layer
// reads the concatenated outputs of both directions of the layer below, forward features
// first. The stack's output is the top layer's [T, B, 2·R].
//
//   x ─► [fw_0 ‖ bw_0] ─► concat ─► (dropout) ─► [fw_1 ‖ bw_1] ─► concat ─► ... ─► outputs
//
// Each layer is one bidirectional_dynamic_rnn over the padded batch, so every direction runs
// on the packed time loop, reads only each row's valid steps (the backward direction from its
// last valid step to its first), and writes exact zeros at padded steps. Backward runs the
// layers top down: each layer's input gradient is the next lower layer's output gradient.
// Dropout (training only) multiplies every layer's output but the top one's by a mask of 0
// and 1/(1 - p), drawn from the stack's generator and kept for backward, as
// nn.LSTM(dropout=p) does.
//
// The stack is not a cell: dynamic_rnn does not take it. A SequenceModel does, and its own
// forward() and backward() are the calls to make directly.
#pragma once

#include "../core/check.hpp"
#include "../core/random.hpp"
#include "../core/types.hpp"
#include "bidirectional_dynamic_rnn.hpp"
#include "dynamic_rnn.hpp"

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

namespace dynrnn {

template <class Cell>
class BidirectionalStack;

/// \brief What BidirectionalStack::forward keeps for backward, and the outputs.
/// \tparam Cell the cell type of every direction.
template <class Cell>
struct BidirectionalStackResult {
  using Scalar = typename Cell::Scalar;  ///< Element type.
  std::vector<BidirectionalResult<Cell, Cell>> layers;  ///< Each layer's two dynamic_rnn results.
  /// outputs[k] [T, B, 2·R_k]: layer k's concatenated outputs after dropout, the input of
  /// layer k + 1; the last is the stack's output, exactly 0 at padded steps.
  std::vector<Tensor3<Scalar>> outputs;
  std::vector<Tensor3<Scalar>> masks;  ///< masks[k] [T, B, 2·R_k]: dropout after layer k (training only).
  /// Each layer's zero initial states (also the zero final-state gradients), for B rows.
  std::vector<typename Cell::State> zero_fw, zero_bw;

  /// \brief The stack's output, [T, B, 2·R] of the top layer.
  const Tensor3<Scalar>& top() const { return outputs.back(); }
};

/// \brief Gradients of a BidirectionalStack: each layer's, and dLoss/d inputs.
/// \tparam Cell the cell type of every direction.
template <class Cell>
struct BidirectionalStackGradients {
  using Scalar = typename Cell::Scalar;  ///< Element type.
  /// Each layer's parameter gradients (and scratch). A deque: its elements never move, and
  /// their workspaces may not be copied.
  std::deque<BidirectionalGradients<Cell, Cell>> layers;
  /// [T, B, I_0] dLoss/d inputs, 0 at padded steps; [0, 0, 0] after InputGradients::skip.
  Tensor3<Scalar> inputs;
  Tensor3<Scalar> d_fw, d_bw, d_below;  ///< Scratch: a layer's output gradient split, and the one below's.

  /// \brief Sets every parameter gradient to zero, keeping the shapes.
  void setZero() {
    for (auto& g : layers) {
      g.fw.setZero();
      g.bw.setZero();
    }
  }
};

/// \brief k bidirectional layers, each reading both directions of the layer below; see the
/// file comment.
/// \tparam Cell the cell type of every direction: LSTMCell, GRUCell or RNNCell.
///
/// \code
/// // nn.LSTM(8, 32, num_layers=2, bidirectional=True):
/// dynrnn::BidirectionalStack<dynrnn::LSTMCell<float>> stack(2, 8, 32);
/// dynrnn::BidirectionalStackResult<dynrnn::LSTMCell<float>> r;
/// stack.forward(x, lengths, r);                      // r.top(): [T, B, 64]
/// auto g = stack.make_gradients();
/// stack.backward(r, d_outputs, g);                   // g.layers[k].fw.kernel, ..., g.inputs
/// \endcode
template <class Cell>
class BidirectionalStack {
 public:
  using Scalar = typename Cell::Scalar;                ///< Element type.
  using Result = BidirectionalStackResult<Cell>;       ///< Forward result.
  using Gradients = BidirectionalStackGradients<Cell>; ///< Gradients.

  /// \brief A stack from given cells: forward[k] and backward[k] form layer k.
  /// \param dropout probability in [0, 1) of dropping each output of every layer but the top one
  ///                in training mode.
  /// \param seed    seeds the generator of the dropout masks.
  /// \throws std::invalid_argument for no layers, counts that differ, or widths that do not chain.
  BidirectionalStack(std::vector<Cell> forward, std::vector<Cell> backward, double dropout = 0,
                     std::uint64_t seed = 0x5eed)
      : fw_(std::move(forward)), bw_(std::move(backward)), dropout_(dropout), rng_(seed) {
    constexpr const char* fn = "BidirectionalStack";
    if (fw_.empty()) detail::throw_argument(fn, "forward", "at least one cell", "none");
    if (bw_.size() != fw_.size())
      detail::throw_argument(fn, "backward", std::to_string(fw_.size()) + " cells, one per forward cell",
                             std::to_string(bw_.size()));
    for (std::size_t k = 0; k < fw_.size(); ++k) {
      const Index in = k == 0 ? fw_[0].input_size() : fw_[k - 1].output_size() + bw_[k - 1].output_size();
      const std::string layer = "[" + std::to_string(k) + "]";
      if (fw_[k].input_size() != in)
        detail::throw_argument(fn, ("forward" + layer).c_str(),
                               "a cell of input size " + std::to_string(in) + " (the layer below's two outputs)",
                               std::to_string(fw_[k].input_size()));
      if (bw_[k].input_size() != in)
        detail::throw_argument(fn, ("backward" + layer).c_str(), "a cell of input size " + std::to_string(in),
                               std::to_string(bw_[k].input_size()));
    }
    if (!(dropout >= 0 && dropout < 1)) detail::throw_argument(fn, "dropout", "in [0, 1)", std::to_string(dropout));
  }

  /// \brief `layers` layers of cells Cell(width, hidden, args...), as nn.LSTM(input, hidden,
  /// num_layers=layers, bidirectional=True): layer 0 reads `input` features, the others 2·hidden.
  /// The weights of each direction are redrawn from Rng(seed), layer by layer, forward first.
  template <class... Args>
  BidirectionalStack(int layers, Index input, Index hidden, Args&&... args)
      : BidirectionalStack(make_cells(layers, input, hidden, args...), make_cells(layers, input, hidden, args...)) {
    Rng rng(0x5eed);
    reset_parameters(rng);
  }

  /// \brief The number of layers.
  std::size_t num_layers() const { return fw_.size(); }
  /// \brief Layer k's forward-direction cell.
  Cell& forward_cell(std::size_t k) { return fw_.at(k); }
  const Cell& forward_cell(std::size_t k) const { return fw_.at(k); }  ///< \copydoc forward_cell()
  /// \brief Layer k's backward-direction cell.
  Cell& backward_cell(std::size_t k) { return bw_.at(k); }
  const Cell& backward_cell(std::size_t k) const { return bw_.at(k); }  ///< \copydoc backward_cell()

  Index input_size() const { return fw_.front().input_size(); }                           ///< I_0.
  Index output_size() const { return fw_.back().output_size() + bw_.back().output_size(); }  ///< 2·R of the top layer.

  double dropout() const { return dropout_; }  ///< The dropout probability between layers.
  /// \brief Sets the dropout probability between layers.
  /// \throws std::invalid_argument unless 0 <= p < 1.
  void set_dropout(double p) {
    if (!(p >= 0 && p < 1)) detail::throw_argument("BidirectionalStack::set_dropout", "p", "in [0, 1)", std::to_string(p));
    dropout_ = p;
  }
  /// \brief Training mode draws dropout masks in forward(); inference mode (the default) does not.
  void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }  ///< Whether forward() drops.
  /// \brief The generator of the dropout masks (to reseed it, or to save its state).
  Rng& rng() { return rng_; }

  /// \brief The precision of the cells' matrix products (PrecisionSetting): layer 0's
  /// forward cell's, which set_precision() gives every cell.
  Precision precision() const { return fw_.front().precision(); }
  /// \brief Sets every cell's precision, both directions (PrecisionSetting::set_precision()),
  /// or none.
  /// \throws std::invalid_argument as a cell's set_precision() does; nothing changes then.
  void set_precision(Precision precision) { detail::set_every_precision(precision, fw_, bw_); }
  /// \brief Starts recording the int8 bounds of every cell, both directions, each from its
  /// own input (PrecisionSetting::begin_int8_calibration()).
  void begin_int8_calibration() {
    for (std::size_t k = 0; k < fw_.size(); ++k) {
      fw_[k].begin_int8_calibration();
      bw_[k].begin_int8_calibration();
    }
  }
  /// \brief Makes every cell's records its int8 bounds (PrecisionSetting::end_int8_calibration()).
  /// \throws std::logic_error when no forward pass ran since begin_int8_calibration().
  void end_int8_calibration() {
    for (std::size_t k = 0; k < fw_.size(); ++k) {
      fw_[k].end_int8_calibration();
      bw_[k].end_int8_calibration();
    }
  }

  /// \brief Redraws every cell's weights from `rng`: layer 0 forward, layer 0 backward, layer 1 ...
  void reset_parameters(Rng& rng) {
    for (std::size_t k = 0; k < fw_.size(); ++k) {
      fw_[k].reset_parameters(rng);
      bw_[k].reset_parameters(rng);
    }
  }

  /// \brief Calls `f(name, parameter)` for every parameter, named "layer<k>/fw/<name>" and
  /// "layer<k>/bw/<name>"; checkpoints use this.
  template <class F>
  void for_each_parameter(F&& f) {
    for (std::size_t k = 0; k < fw_.size(); ++k)
      for (const char* dir : {"fw", "bw"}) {
        const std::string prefix = "layer" + std::to_string(k) + "/" + dir + "/";
        cell(k, dir[0] == 'f').for_each_parameter([&](const char* name, auto& p) { f((prefix + name).c_str(), p); });
      }
  }
  /// \brief "BidirectionalStack[<fw 0> | <bw 0>; ...]"; the dropout rate is not part of it.
  std::string description() const {
    std::string d = "BidirectionalStack[";
    for (std::size_t k = 0; k < fw_.size(); ++k) d += (k ? "; " : "") + fw_[k].description() + " | " + bw_[k].description();
    return d + "]";
  }

  /// \brief Zero gradients for every layer.
  Gradients make_gradients() const {
    Gradients g;
    for (std::size_t k = 0; k < fw_.size(); ++k) g.layers.emplace_back(fw_[k], bw_[k]);
    return g;
  }

  /// \brief Runs the layers over a padded batch from zero states, into `r` (reusing its buffers).
  /// \param x        [T, B, I_0] inputs; values at padded steps are never read.
  /// \param lengths  B lengths, each in [0, T].
  /// \param mode     ForwardMode::inference when backward() will not follow (dynamic_rnn).
  /// \throws std::invalid_argument naming the argument, the expected and the actual shape or value.
  void forward(const Tensor3<Scalar>& x, const std::vector<int>& lengths, Result& r,
               ForwardMode mode = ForwardMode::training) const {
    const std::size_t n = fw_.size();
    const Index B = x.dimension(1);
    r.layers.resize(n);
    r.outputs.resize(n);
    r.masks.resize(n - 1);
    if (r.zero_fw.size() != n || r.zero_fw[0].h.rows() != B) {
      r.zero_fw.clear();
      r.zero_bw.clear();
      for (std::size_t k = 0; k < n; ++k) {
        r.zero_fw.push_back(fw_[k].zero_state(B));
        r.zero_bw.push_back(bw_[k].zero_state(B));
      }
    }
    for (std::size_t k = 0; k < n; ++k) {
      const Tensor3<Scalar>& in = k == 0 ? x : r.outputs[k - 1];
      bidirectional_dynamic_rnn(fw_[k], bw_[k], in, lengths, r.zero_fw[k], r.zero_bw[k], r.layers[k], mode);
      concat_outputs(r.layers[k], r.outputs[k]);
      if (k + 1 < n && training_ && dropout_ > 0) {
        Tensor3<Scalar>& mask = r.masks[k];
        mask.resize(r.outputs[k].dimensions());
        const Scalar keep = Scalar(1 / (1 - dropout_));
        for (Index i = 0; i < mask.size(); ++i) mask.data()[i] = uniform01(rng_) < dropout_ ? Scalar(0) : keep;
        r.outputs[k] *= mask;
      } else if (k + 1 < n) {
        r.masks[k].resize(0, 0, 0);
      }
    }
  }

  /// \brief forward() into a new result.
  Result forward(const Tensor3<Scalar>& x, const std::vector<int>& lengths,
                 ForwardMode mode = ForwardMode::training) const {
    Result r;
    forward(x, lengths, r, mode);
    return r;
  }

  /// \brief Backpropagation through every layer, top down, adding into `g`'s parameter
  /// gradients and writing g.inputs (unless `input_gradients` is InputGradients::skip).
  /// \param r          forward()'s result, with unchanged parameters.
  /// \param d_outputs  [T, B, 2·R] dLoss/d the stack's outputs; entries at padded steps are ignored.
  /// \throws std::invalid_argument naming the argument, the expected and the actual shape.
  void backward(const Result& r, const Tensor3<Scalar>& d_outputs, Gradients& g,
                InputGradients input_gradients = InputGradients::compute) const {
    constexpr const char* fn = "BidirectionalStack::backward";
    const std::size_t n = fw_.size();
    if (r.layers.size() != n || g.layers.size() != n)
      detail::throw_argument(fn, r.layers.size() != n ? "r" : "g", std::to_string(n) + " layers",
                             std::to_string(r.layers.size() != n ? r.layers.size() : g.layers.size()));
    detail::check_input_gradients(fn, input_gradients);
    const Tensor3<Scalar>& top = r.outputs.back();
    detail::check_shape(fn, "d_outputs", d_outputs, top.dimension(0), top.dimension(1), top.dimension(2));
    for (std::size_t k = n; k-- > 0;) {
      const Tensor3<Scalar>& d_out = k + 1 == n ? d_outputs : g.d_below;
      split_outputs(d_out, fw_[k].output_size(), bw_[k].output_size(), g.d_fw, g.d_bw);
      const bool want = k > 0 || input_gradients == InputGradients::compute;
      bidirectional_dynamic_rnn_backward(fw_[k], bw_[k], r.layers[k], g.d_fw, g.d_bw, r.zero_fw[k], r.zero_bw[k],
                                         g.layers[k], want ? InputGradients::compute : InputGradients::skip);
      if (k > 0) {
        g.d_below = g.layers[k].inputs;
        if (r.masks[k - 1].size() > 0) g.d_below *= r.masks[k - 1];  // dropout after layer k-1
      }
    }
    if (input_gradients == InputGradients::compute)
      g.inputs = g.layers[0].inputs;
    else
      g.inputs.resize(0, 0, 0);
  }

 private:
  template <class... Args>
  static std::vector<Cell> make_cells(int layers, Index input, Index hidden, Args&... args) {
    detail::check_positive("BidirectionalStack", "layers", layers);
    std::vector<Cell> cells;
    for (int k = 0; k < layers; ++k) cells.emplace_back(k == 0 ? input : 2 * hidden, hidden, args...);
    return cells;
  }

  Cell& cell(std::size_t k, bool forward) { return forward ? fw_[k] : bw_[k]; }

  std::vector<Cell> fw_, bw_;
  double dropout_;
  bool training_ = false;
  mutable Rng rng_;  // forward() draws dropout masks from it in training mode
};

/// \brief Visits each (parameter, gradient) pair of every cell of a BidirectionalStack;
/// optimisers use this.
template <class Cell, class F>
void visit_parameters(BidirectionalStack<Cell>& stack, const BidirectionalStackGradients<Cell>& g, F&& f) {
  for (std::size_t k = 0; k < stack.num_layers(); ++k) {
    visit_parameters(stack.forward_cell(k), g.layers[k].fw, f);
    visit_parameters(stack.backward_cell(k), g.layers[k].bw, f);
  }
}

/// \brief Calls f(gradient) for each parameter gradient of every cell (not the input
/// gradients); clip_by_global_norm() and clip_by_value() use this.
template <class Cell, class F>
void for_each_gradient(BidirectionalStackGradients<Cell>& g, F&& f) {
  for (auto& layer : g.layers) for_each_gradient(layer, f);
}

}  // namespace dynrnn
