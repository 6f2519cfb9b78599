// dynrnn: a whole PyTorch recurrent module in one call: nn.LSTM, nn.GRU or nn.RNN with any
// num_layers, either direction setting.
//
//   nn.LSTM(I, H)                                   -> LSTMCell<S>(I, H)
//   nn.LSTM(I, H, num_layers=k)                     -> StackedCell<LSTMCell<S>> of k layers
//   nn.LSTM(I, H, num_layers=k, bidirectional=True) -> BidirectionalStack<LSTMCell<S>>(k, I, H)
//
// and the same for nn.GRU (GRUCell with GRUVariant::reset_after) and nn.RNN (RNNCell). Each
// cell's tensors are converted as import_pytorch_lstm / _gru / _rnn do (the layer k of the
// module is `_l{k}`, its reverse direction `_l{k}_reverse`). The file must hold exactly the
// target's layers and directions: a module with more layers, or with a reverse direction the
// target lacks, is refused rather than partly imported. Nothing changes unless every tensor
// fits; the parameters are written in place, so an optimiser's state keyed by them stays.
#pragma once

#include "../cells/gru_cell.hpp"
#include "../cells/lstm_cell.hpp"
#include "../cells/rnn_cell.hpp"
#include "../cells/stacked_cell.hpp"
#include "../rnn/bidirectional_stack.hpp"
#include "gru_import.hpp"
#include "lstm_import.hpp"
#include "rnn_import.hpp"
#include "safetensors.hpp"

#include <string>
#include <vector>

namespace dynrnn {
namespace detail {

// One direction of one layer of a PyTorch module into a cell of the matching type.
template <class Scalar>
void import_pytorch_layer(LSTMCell<Scalar>& cell, const safetensors::File& f, const std::string& prefix, int layer,
                          bool reverse) {
  import_pytorch_lstm(cell, f, prefix, layer, reverse);
}
template <class Scalar>
void import_pytorch_layer(GRUCell<Scalar>& cell, const safetensors::File& f, const std::string& prefix, int layer,
                          bool reverse) {
  import_pytorch_gru(cell, f, prefix, layer, reverse);
}
template <class Scalar>
void import_pytorch_layer(RNNCell<Scalar>& cell, const safetensors::File& f, const std::string& prefix, int layer,
                          bool reverse) {
  import_pytorch_rnn(cell, f, prefix, layer, reverse);
}

// Refuses a file whose module has more layers than `layers`, or a reverse direction when
// `bidirectional` is false.
inline void check_module_shape(const safetensors::File& f, const std::string& prefix, int layers, bool bidirectional) {
  const std::string extra = prefix + "weight_ih_l" + std::to_string(layers);
  if (f.contains(extra))
    f.fail("holds '" + extra + "': a module of more than the " + std::to_string(layers) + " layers of the target");
  if (!bidirectional && f.contains(prefix + "weight_ih_l0_reverse"))
    f.fail("holds '" + prefix + "weight_ih_l0_reverse': a bidirectional module; import it into a BidirectionalStack");
}

// Imports every (layer, direction) into copies first, then assigns them in place.
template <class Cell>
void import_pytorch_cells(std::vector<Cell*> cells, bool bidirectional, const safetensors::File& f,
                          const std::string& prefix) {
  const int layers = int(bidirectional ? cells.size() / 2 : cells.size());
  check_module_shape(f, prefix, layers, bidirectional);
  std::vector<Cell> imported;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    imported.push_back(*cells[i]);
    const int layer = int(bidirectional ? i / 2 : i);
    import_pytorch_layer(imported.back(), f, prefix, layer, bidirectional && i % 2 == 1);
  }
  for (std::size_t i = 0; i < cells.size(); ++i)
    imported[i].for_each_parameter([&](const char* name, auto& from) {
      cells[i]->for_each_parameter([&](const char* other, auto& to) {
        if (std::string(name) == other) {
          if constexpr (std::is_same_v<std::decay_t<decltype(from)>, std::decay_t<decltype(to)>>) to = from;
        }
      });
    });
}

}  // namespace detail

/// \brief Loads a one-layer, one-direction PyTorch nn.LSTM, nn.GRU or nn.RNN into `cell`.
/// \param prefix prepended to every tensor name, e.g. "encoder.lstm." for a submodule.
/// \throws CheckpointError naming the file and the problem (a missing tensor, a wrong shape,
/// a module of more layers or with two directions); `cell` is then unchanged.
template <class Cell>
void import_pytorch_module(Cell& cell, const safetensors::File& file, const std::string& prefix = "") {
  detail::import_pytorch_cells<Cell>({&cell}, false, file, prefix);
}

/// \brief Loads a PyTorch module with num_layers = stack.layers().size() into a StackedCell.
template <class Cell>
void import_pytorch_module(StackedCell<Cell>& stack, const safetensors::File& file, const std::string& prefix = "") {
  std::vector<Cell*> cells;
  for (Cell& c : stack.layers()) cells.push_back(&c);
  detail::import_pytorch_cells(cells, false, file, prefix);
}

/// \brief Loads a bidirectional PyTorch module with num_layers = stack.num_layers() into a
/// BidirectionalStack.
///
/// \code
/// // torch: safetensors.torch.save_file(nn.LSTM(8, 32, num_layers=2, bidirectional=True).state_dict(), "m.safetensors")
/// dynrnn::BidirectionalStack<dynrnn::LSTMCell<float>> stack(2, 8, 32);
/// dynrnn::import_pytorch_module(stack, "m.safetensors");
/// \endcode
template <class Cell>
void import_pytorch_module(BidirectionalStack<Cell>& stack, const safetensors::File& file,
                           const std::string& prefix = "") {
  std::vector<Cell*> cells;
  for (std::size_t k = 0; k < stack.num_layers(); ++k) {
    cells.push_back(&stack.forward_cell(k));
    cells.push_back(&stack.backward_cell(k));
  }
  detail::import_pytorch_cells(cells, true, file, prefix);
}

/// \brief import_pytorch_module() from the file at `path`.
template <class Target>
void import_pytorch_module(Target& target, const std::string& path, const std::string& prefix = "") {
  import_pytorch_module(target, safetensors::File::read(path), prefix);
}

}  // namespace dynrnn
