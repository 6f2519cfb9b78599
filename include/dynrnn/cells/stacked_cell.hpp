// dynrnn: a stack of recurrent layers run as one cell, like TensorFlow's MultiRNNCell or
// PyTorch's num_layers, with optional dropout between layers during training.
//
// Dimensions: B batch, P valid (row, step) pairs; layer k maps width I_k to R_k, and
// I_{k+1} = R_k.
//
// StackedCell<Cell> is itself a cell: dynamic_rnn, dynamic_rnn_backward and
// bidirectional_dynamic_rnn take it as they take any cell. It runs layer after layer over
// the whole packed batch (which computes exactly what a step-by-step MultiRNNCell computes,
// since layer k at step t reads only layer k-1's output at step t and its own state), so
// every layer keeps its hoisted input product and stays in the packed layout: nothing is
// unpacked between layers. Nor copied, for layers that never write their inputs (LSTMCell,
// GRUCell, RNNCell): each reads the packed outputs of the layer below where they are, and
// the bottom one the stack's packed inputs, as views into the same cache.
//
// Dropout (training only): the output of every layer but the last is multiplied by a mask
// of 0 and 1/(1 - p) before it feeds the next layer (inverted dropout, as PyTorch's
// nn.LSTM(dropout=p)). The masks come from the stack's own generator, seeded by the caller,
// are kept in the forward cache, and backward applies the same masks. In inference mode
// (the default) nothing is dropped and nothing is drawn.
#pragma once

#include "../core/check.hpp"
#include "../core/random.hpp"
#include "../core/reusable_matrix.hpp"
#include "../core/types.hpp"
#include "../rnn/packed_schedule.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dynrnn {

/// \brief State of a StackedCell: one state per layer, bottom layer first.
/// \tparam Cell the layers' cell type.
template <class Cell>
struct StackedState {
  std::vector<typename Cell::State> layers;  ///< State of each layer.

  /// \brief Calls `f(mine, theirs)` for each member matrix of each layer, after giving this
  /// state as many layers as `other` (which allocates only when the count changes).
  template <class F>
  void zip(const StackedState& other, F&& f) {
    layers.resize(other.layers.size());
    for (std::size_t k = 0; k < layers.size(); ++k) layers[k].zip(other.layers[k], f);
  }
};

/// \brief Parameter gradients of a StackedCell: one per layer.
/// \tparam Cell the layers' cell type.
template <class Cell>
struct StackedGradients {
  std::vector<typename Cell::Gradients> layers;  ///< Gradients of each layer's parameters.

  /// \brief Sets every gradient to zero, keeping the shapes.
  void setZero() {
    for (auto& g : layers) g.setZero();
  }
};

/// \brief What StackedCell::forward keeps for backward: each layer's cache and the dropout masks.
/// \tparam Cell the layers' cell type.
template <class Cell>
struct StackedCache {
  using Scalar = typename Cell::Scalar;       ///< Element type.
  ReusableMatrix<Scalar> x;                   ///< (P, I) packed inputs, filled by dynamic_rnn before forward().
  /// Each layer's cache; layers[k].x is its packed input. For layers that never write their
  /// inputs (LSTMCell, GRUCell, RNNCell), layers[0].x views x, and layers[k + 1].x views
  /// layers[k]'s packed outputs when no dropout was drawn (ReusableMatrix::view()); a copy of
  /// the cache copies them.
  std::vector<typename Cell::Cache> layers;
  std::vector<ReusableMatrix<Scalar>> masks;  ///< masks[k] (P, R_k): dropout after layer k (training only).
};

/// \brief Scratch space of StackedCell::backward.
/// \tparam Cell the layers' cell type.
template <class Cell>
struct StackedBackwardWorkspace {
  using Scalar = typename Cell::Scalar;                  ///< Element type.
  std::vector<typename Cell::BackwardWorkspace> layers;  ///< Each layer's scratch.
  std::vector<ReusableMatrix<Scalar>> dx;                ///< dx[k] (P, I_k): dLoss/d packed input of layer k, k >= 1.
};

/// \brief A stack of recurrent layers of one cell type (sizes and options may differ per
/// layer), usable wherever a cell is.
///
/// \tparam Cell the layers' cell type, e.g. LSTMCell<float>.
///
/// \code
/// std::vector<dynrnn::LSTMCell<float>> layers = {{16, 128}, {128, 128}};
/// dynrnn::StackedCell<dynrnn::LSTMCell<float>> stack(std::move(layers), /*dropout=*/0.2, /*seed=*/7);
/// stack.set_training(true);                       // masks are drawn in training mode only
/// auto fwd = dynrnn::dynamic_rnn(stack, x, lengths);
/// \endcode
template <class Cell_>
class StackedCell {
 public:
  using Cell = Cell_;                                     ///< The layers' cell type.
  using Scalar = typename Cell::Scalar;                   ///< Element type.
  using State = StackedState<Cell>;                       ///< One state per layer.
  using Cache = StackedCache<Cell>;                       ///< Forward cache type.
  using Gradients = StackedGradients<Cell>;               ///< Parameter gradient type.
  using BackwardWorkspace = StackedBackwardWorkspace<Cell>;  ///< Scratch of backward().

  /// \brief A stack of `layers`, bottom first.
  /// \param layers  at least one; each layer's input_size must equal the previous output_size.
  /// \param dropout probability in [0, 1) of dropping each output of every layer but the last,
  ///                in training mode.
  /// \param seed    seeds the generator the dropout masks are drawn from.
  /// \throws std::invalid_argument for no layers, mismatched sizes or dropout outside [0, 1).
  explicit StackedCell(std::vector<Cell> layers, double dropout = 0, std::uint64_t seed = 0x5eed)
      : layers_(std::move(layers)), dropout_(dropout), rng_(seed) {
    constexpr const char* fn = "StackedCell";
    if (layers_.empty()) detail::throw_argument(fn, "layers", "at least one layer", "none");
    for (std::size_t k = 1; k < layers_.size(); ++k)
      if (layers_[k].input_size() != layers_[k - 1].output_size())
        detail::throw_argument(fn, "layers",
                               "layers whose input_size is the previous layer's output_size",
                               "layers[" + std::to_string(k) + "].input_size() = " +
                                   std::to_string(layers_[k].input_size()) + " after output_size " +
                                   std::to_string(layers_[k - 1].output_size()));
    if (!(dropout >= 0 && dropout < 1)) detail::throw_argument(fn, "dropout", "in [0, 1)", std::to_string(dropout));
  }

  /// \brief The layers, bottom first. Their parameters may be changed, not their sizes.
  std::vector<Cell>& layers() { return layers_; }
  const std::vector<Cell>& layers() const { return layers_; }  ///< \copydoc layers()
  /// \brief Layer k.
  Cell& layer(std::size_t k) { return layers_.at(k); }
  const Cell& layer(std::size_t k) const { return layers_.at(k); }  ///< \copydoc layer()
  /// \brief Redraws every layer's weights from `rng`, bottom layer first (each as its cell's
  /// reset_parameters does).
  void reset_parameters(Rng& rng) {
    for (Cell& layer : layers_) layer.reset_parameters(rng);
  }

  double dropout() const { return dropout_; }  ///< The dropout probability between layers.
  /// \brief Training mode draws dropout masks in forward(); inference mode (the default) does not.
  void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }  ///< Whether forward() drops.
  /// \brief The generator of the dropout masks (to reseed it, or to save its state).
  Rng& rng() { return rng_; }

  /// \brief The precision of the layers' matrix products (PrecisionSetting): the bottom
  /// layer's, which set_precision() gives every layer.
  Precision precision() const { return layers_.front().precision(); }
  /// \brief Sets every layer's precision (PrecisionSetting::set_precision()), or none.
  /// \throws std::invalid_argument as a layer's set_precision() does; nothing changes then.
  void set_precision(Precision precision) { detail::set_every_precision(precision, layers_); }
  /// \brief Starts recording the int8 bounds of every layer, each from its own input
  /// (PrecisionSetting::begin_int8_calibration()).
  void begin_int8_calibration() {
    for (Cell& layer : layers_) layer.begin_int8_calibration();
  }
  /// \brief Makes every layer's records its int8 bounds (PrecisionSetting::end_int8_calibration()).
  /// \throws std::logic_error when no forward pass ran since begin_int8_calibration().
  void end_int8_calibration() {
    for (Cell& layer : layers_) layer.end_int8_calibration();
  }

  Index input_size() const { return layers_.front().input_size(); }    ///< The bottom layer's input width.
  Index output_size() const { return layers_.back().output_size(); }   ///< The top layer's output width.

  /// \brief Calls `f(name, parameter)` for every parameter of every layer, named
  /// "layer<k>/<name>"; checkpoints use this.
  template <class F>
  void for_each_parameter(F&& f) {
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const std::string prefix = "layer" + std::to_string(k) + "/";
      layers_[k].for_each_parameter([&](const char* name, auto& p) { f((prefix + name).c_str(), p); });
    }
  }
  /// \brief "StackedCell[<layer 0>; <layer 1>; ...]"; the dropout rate is not part of it.
  std::string description() const {
    std::string d = "StackedCell[";
    for (std::size_t k = 0; k < layers_.size(); ++k) d += (k ? "; " : "") + layers_[k].description();
    return d + "]";
  }

  /// \brief Zero gradients for every layer.
  Gradients make_gradients() const {
    Gradients g;
    for (const Cell& c : layers_) g.layers.push_back(c.make_gradients());
    return g;
  }
  /// \brief The zero state of every layer for `batch` rows.
  State zero_state(Index batch) const {
    State s;
    for (const Cell& c : layers_) s.layers.push_back(c.zero_state(batch));
    return s;
  }
  /// \brief Throws std::invalid_argument unless `s` holds a state of each layer for `batch` rows.
  void check_state(const char* function, const char* argument, const State& s, Index batch) const {
    check_count(function, argument, "layers", s.layers.size());
    for (std::size_t k = 0; k < layers_.size(); ++k)
      with_layer(k, [&] { layers_[k].check_state(function, argument, s.layers[k], batch); });
  }
  /// \brief Throws std::invalid_argument unless every layer's parameters keep their shapes.
  void check_parameters(const char* function) const {
    for (std::size_t k = 0; k < layers_.size(); ++k) with_layer(k, [&] { layers_[k].check_parameters(function); });
  }
  /// \brief Throws std::invalid_argument unless `g` holds gradients shaped like each layer's.
  void check_gradients(const char* function, const Gradients& g) const {
    check_count(function, "grads", "layers", g.layers.size());
    for (std::size_t k = 0; k < layers_.size(); ++k)
      with_layer(k, [&] { layers_[k].check_gradients(function, g.layers[k]); });
  }

  /// \brief Runs every layer over a packed batch, each in `mode`. Used by dynamic_rnn; call
  /// that instead.
  /// \throws std::invalid_argument when `s0` or `cache.x` does not fit the schedule and stack.
  void forward(const PackedSchedule& s, const State& s0, Cache& cache, State& final,
               ForwardMode mode = ForwardMode::training) const {
    constexpr const char* fn = "StackedCell::forward";
    // The last pass's views of the layers' inputs (below) end first: a pass that throws
    // leaves no layer pointing at storage that may since have been replaced.
    for (auto& layer : cache.layers) layer.x.drop_view();
    check_state(fn, "s0", s0, s.batch);
    detail::check_shape(fn, "cache.x", cache.x, s.total(), input_size());
    const std::size_t n = layers_.size();
    cache.layers.resize(n);
    cache.masks.resize(n - 1);
    final.layers.resize(n);
    const bool drop = training_ && dropout_ > 0;
    const Scalar keep_scale = Scalar(1 / (1 - dropout_));
    // Layers that never write cache.x (detail::has_writable_outputs) read the stack's inputs,
    // and without dropout the outputs of the layer below, where they are in this cache.
    constexpr bool views = detail::has_writable_outputs<Cell>::value;
    if constexpr (views)
      cache.layers[0].x.view(cache.x.data(), cache.x.rows(), cache.x.cols());
    else
      cache.layers[0].x = cache.x;
    for (std::size_t k = 0; k < n; ++k) {
      layers_[k].forward(s, s0.layers[k], cache.layers[k], final.layers[k], mode);
      if (k + 1 == n) break;
      ReusableMatrix<Scalar>& next = cache.layers[k + 1].x;
      ReusableMatrix<Scalar>& mask = cache.masks[k];
      if (!drop) {
        if constexpr (views) {
          ReusableMatrix<Scalar>& below = Cell::packed_outputs(cache.layers[k]);
          next.view(below.data(), below.rows(), below.cols());
        } else {
          next = Cell::packed_outputs(cache.layers[k]);
        }
        mask.resize(0, 0);
        continue;
      }
      next = Cell::packed_outputs(cache.layers[k]);  // a copy of its own, masked below
      mask.resize(next.rows(), next.cols());
      for (Index e = 0; e < mask.size(); ++e)
        mask.data()[e] = uniform(rng_, 0, 1) < dropout_ ? Scalar(0) : keep_scale;
      next.array() *= mask.array();
    }
  }

  /// \brief The top layer's packed outputs, `(P, R)`.
  static const ReusableMatrix<Scalar>& packed_outputs(const Cache& cache) { return Cell::packed_outputs(cache.layers.back()); }

  /// \brief Backpropagates through every layer, top first. Used by dynamic_rnn_backward.
  /// Arguments as for LSTMCell::backward: `dx` receives the bottom layer's input gradient, or
  /// is null to skip it (the layers above always pass theirs down).
  /// \throws std::invalid_argument when a shape does not fit the schedule and stack.
  void backward(const PackedSchedule& s, const Cache& cache, const ReusableMatrix<Scalar>& dh, State& dstate,
                Gradients& grads, ReusableMatrix<Scalar>* dx, BackwardWorkspace& ws) const {
    constexpr const char* fn = "StackedCell::backward";
    check_gradients(fn, grads);
    check_state(fn, "dstate", dstate, s.batch);
    const std::size_t n = layers_.size();
    check_count(fn, "cache", "layers", cache.layers.size());
    ws.layers.resize(n);
    ws.dx.resize(n);
    const ReusableMatrix<Scalar>* d_out = &dh;  // dLoss/d packed outputs of the current layer
    for (std::size_t k = n; k-- > 0;) {
      ReusableMatrix<Scalar>* d_in = k == 0 ? dx : &ws.dx[k];
      layers_[k].backward(s, cache.layers[k], *d_out, dstate.layers[k], grads.layers[k], d_in, ws.layers[k]);
      if (k > 0 && cache.masks[k - 1].size() > 0) d_in->array() *= cache.masks[k - 1].array();
      d_out = d_in;
    }
  }

 private:
  void check_count(const char* function, const char* argument, const char* member, std::size_t count) const {
    if (count != layers_.size())
      detail::throw_argument(function, argument,
                             std::string("with ") + std::to_string(layers_.size()) + " " + member + " (one per layer)",
                             std::to_string(count));
  }
  // Runs a check on layer k, adding "(layer k)" to the message of what it throws.
  template <class F>
  static void with_layer(std::size_t k, F&& check) {
    try {
      check();
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(e.what()) + " (layer " + std::to_string(k) + ")");
    }
  }

  std::vector<Cell> layers_;
  double dropout_;
  bool training_ = false;
  mutable Rng rng_;  // forward() draws masks in training mode: one training forward at a time
};

/// \brief Visits each (parameter, gradient) pair of every layer; optimisers use this.
template <class Cell, class F>
void visit_parameters(StackedCell<Cell>& stack, const StackedGradients<Cell>& g, F&& f) {
  for (std::size_t k = 0; k < stack.layers().size(); ++k) visit_parameters(stack.layers()[k], g.layers[k], f);
}

/// \brief Calls f(gradient) for each parameter gradient of every layer of a StackedCell (empty ones included);
/// clip_by_global_norm() and clip_by_value() use this.
template <class Cell, class F>
void for_each_gradient(StackedGradients<Cell>& g, F&& f) {
  for (auto& layer : g.layers) for_each_gradient(layer, f);
}

}  // namespace dynrnn
