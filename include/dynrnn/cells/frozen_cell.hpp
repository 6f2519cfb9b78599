// dynrnn: a cell frozen for inference, its weights packed once instead of at every pass.
//
// Every forward pass packs the weights of its products before it runs them: W_x for the
// input projection, W_h for the recurrent product (and an LSTM's projection), in the
// layout of the kernels and in the cell's precision (rounded to bfloat16, or quantised to
// int8 with its scales). Over a large batch that is a few percent of the pass; over the
// small batches of a program that answers requests one at a time it is most of it: W is
// (I+H, 4H) whatever the batch, and a batch of one sequence of ten steps reads it ten times.
//
// A FrozenCell is a copy of a cell with those packings made once, as oneDNN reorders its
// weights once before its primitive runs and torch.jit.freeze folds a module's parameters
// into constants. It is a snapshot: changing the original cell afterwards does not change
// it, so no pass can ever read a packing that disagrees with the weights. Freeze again to
// take new weights.
//
//   auto frozen = dynrnn::freeze(cell);               // after training, calibration, set_precision
//   auto out = dynrnn::dynamic_rnn(frozen, x, lengths);   // any form, any number of times
//
// A FrozenCell is a cell for dynamic_rnn, bidirectional_dynamic_rnn and StackedCell (freeze()
// of a stack freezes each layer). Its passes are inference passes (ForwardMode::inference
// whatever the mode asked): nothing is kept for a backward pass, which a FrozenCell does not
// have. The passes only read the packings, so any number may run at once, on any threads,
// each with its own result. Each pass's products use the packings in place (they are not
// copied into its cache) and let go of them when the pass ends.
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"
#include "../precision/mixed_gemm.hpp"
#include "../rnn/packed_schedule.hpp"
#include "stacked_cell.hpp"

#include <string>
#include <utility>
#include <vector>

namespace dynrnn {

/// \brief A copy of a cell whose forward products' weights are packed once, in the cell's
/// precision, for inference (see the file comment).
/// \tparam Cell_ LSTMCell, GRUCell or RNNCell of any scalar type.
///
/// \code
/// dynrnn::LSTMCell<float> cell(8, 32);
/// // ... train it, or calibrate it and set_precision(dynrnn::Precision::int8) ...
/// const auto frozen = dynrnn::freeze(cell);
/// for (const auto& request : requests)
///   auto out = dynrnn::dynamic_rnn(frozen, request.x, request.lengths);
/// \endcode
template <class Cell_>
class FrozenCell {
 public:
  using Cell = Cell_;                           ///< The cell type frozen.
  using Scalar = typename Cell::Scalar;         ///< Element type.
  using State = typename Cell::State;           ///< Recurrent state type.
  using Cache = typename Cell::Cache;           ///< Forward cache type (the cell's).

  /// \brief Copies `cell` and packs its weights in its precision (precision(), with its
  /// int8 bounds).
  /// \throws std::invalid_argument when the cell's parameters no longer have their
  ///   constructed shapes, or (int8) a weight is not finite.
  explicit FrozenCell(const Cell& cell) : cell_(cell) {
    cell_.check_parameters("FrozenCell");
    cell_.pack_forward(packing_);
  }
  /// \brief A copy of `other`'s cell, packed anew (a packing may refer to its own cell's weights).
  FrozenCell(const FrozenCell& other) : cell_(other.cell_) { cell_.pack_forward(packing_); }
  /// \brief Takes over `other`'s cell and packings; `other` is left for destruction or assignment.
  FrozenCell(FrozenCell&& other) = default;
  /// \brief Copies `other`'s cell and packs it anew.
  FrozenCell& operator=(const FrozenCell& other) {
    if (this != &other) {
      cell_ = other.cell_;
      cell_.pack_forward(packing_);
    }
    return *this;
  }
  /// \brief Takes over `other`'s cell and packings.
  FrozenCell& operator=(FrozenCell&& other) = default;

  /// \brief The frozen copy of the cell: its weights, options and precision.
  const Cell& cell() const { return cell_; }
  /// \brief The precision the weights were packed in, the cell's.
  Precision precision() const { return cell_.precision(); }
  Index input_size() const { return cell_.input_size(); }    ///< The cell's input width.
  Index output_size() const { return cell_.output_size(); }  ///< The cell's output width.
  /// \brief The cell's zero state for `batch` rows.
  State zero_state(Index batch) const { return cell_.zero_state(batch); }
  /// \brief Throws std::invalid_argument unless `s` is a state of the cell for `batch` rows.
  void check_state(const char* function, const char* argument, const State& s, Index batch) const {
    cell_.check_state(function, argument, s, batch);
  }
  /// \brief The cell's check (its copy's parameters cannot change, so it always passes).
  void check_parameters(const char* function) const { cell_.check_parameters(function); }
  /// \brief Whether a pass in `mode` keeps what a backward pass needs: never.
  bool keeps_for_backward(ForwardMode) const { return false; }
  /// \brief "Frozen" and the cell's description.
  std::string description() const { return "Frozen" + cell_.description(); }

  /// \brief Runs the cell over a packed batch as an inference pass, on the packed weights.
  /// Used by dynamic_rnn; call that instead. Arguments as for the cell's forward(), whose
  /// `mode` is ForwardMode::inference whatever is passed.
  void forward(const PackedSchedule& s, const State& s0, Cache& cache, State& final,
               ForwardMode mode = ForwardMode::inference) const {
    detail::check_forward_mode("FrozenCell::forward", mode);
    cell_.forward(s, s0, cache, final, ForwardMode::inference, &packing_);
  }
  /// \brief The packed outputs of a forward pass (the cell's).
  static const ReusableMatrix<Scalar>& packed_outputs(const Cache& cache) { return Cell::packed_outputs(cache); }
  /// \brief The matrix forward() writes the packed outputs into (the cell's).
  static ReusableMatrix<Scalar>& packed_outputs(Cache& cache) { return Cell::packed_outputs(cache); }

 private:
  Cell cell_;
  ForwardPacking<Scalar> packing_;
};

/// \brief A FrozenCell of `cell`: a copy with its weights packed once for inference.
/// \throws std::invalid_argument as FrozenCell's constructor does.
template <class Cell>
FrozenCell<Cell> freeze(const Cell& cell) {
  return FrozenCell<Cell>(cell);
}

/// \brief A stack of FrozenCell layers, one per layer of `stack`, with its dropout (which an
/// inference pass never draws).
/// \throws std::invalid_argument as FrozenCell's constructor does.
template <class Cell>
StackedCell<FrozenCell<Cell>> freeze(const StackedCell<Cell>& stack) {
  std::vector<FrozenCell<Cell>> layers;
  layers.reserve(stack.layers().size());
  for (const Cell& layer : stack.layers()) layers.emplace_back(layer);
  return StackedCell<FrozenCell<Cell>>(std::move(layers), stack.dropout());
}

}  // namespace dynrnn
