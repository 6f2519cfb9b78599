// dynrnn: loading vanilla RNN weights trained in PyTorch, Keras or TensorFlow 1.x.
//
// Each reads a safetensors file and converts to RNNCell's layout: kernel (I+H, H), rows
// [x; h]; bias (H). The nonlinearity is not stored in any of these formats: build the cell
// with the activation the source used (nn.RNN's nonlinearity, SimpleRNN's activation).
//
//   PyTorch nn.RNN       weight_ih_l{k} (H, I), weight_hh_l{k} (H, H), bias_ih_l{k} (H),
//                        bias_hh_l{k} (H).
//     kernel = [weight_ihᵀ; weight_hhᵀ],  bias = bias_ih + bias_hh
//
//   Keras SimpleRNN      kernel (I, H), recurrent_kernel (H, H), bias (H).
//     kernel = [kernel; recurrent_kernel]
//
//   TensorFlow 1.x       kernel (I+H, H), bias (H): copied as they are.
//   BasicRNNCell
//
// A missing bias (bias=False, use_bias=False) imports as zeros, except in TensorFlow's cell,
// which always has one.
#pragma once

#include "../cells/rnn_cell.hpp"
#include "../core/check.hpp"
#include "read_tensors.hpp"
#include "safetensors.hpp"

#include <string>

namespace dynrnn {

/// \brief Loads a PyTorch `nn.RNN` layer's weights (a state dict saved as safetensors) into `cell`.
/// \param cell   receives the weights; its sizes must match the file's.
/// \param file   the parsed file.
/// \param prefix prepended to every tensor name, e.g. "encoder.rnn." for a submodule.
/// \param layer  which layer k of a multi-layer nn.RNN (names end in `_l{k}`).
/// \param reverse  the reverse direction of a bidirectional layer (names end in `_l{k}_reverse`).
/// \throws CheckpointError naming the file and the problem (missing tensor, wrong shape or
/// dtype); `cell` is then unchanged. std::invalid_argument for layer < 0 or a cell whose
/// parameters were resized.
template <class Scalar>
void import_pytorch_rnn(RNNCell<Scalar>& cell, const safetensors::File& file, const std::string& prefix = "",
                        int layer = 0, bool reverse = false) {
  constexpr const char* fn = "import_pytorch_rnn";
  detail::check_non_negative(fn, "layer", layer);
  cell.check_parameters(fn);
  const Index I = cell.input_size(), H = cell.hidden_size();
  const std::string k = "_l" + std::to_string(layer) + (reverse ? "_reverse" : "");
  const auto w_ih = detail::read_matrix<Scalar>(file, prefix + "weight_ih" + k, H, I);
  const auto w_hh = detail::read_matrix<Scalar>(file, prefix + "weight_hh" + k, H, H);
  const auto [b_ih, b_hh] = detail::read_pytorch_biases<Scalar>(file, prefix, k, H);
  cell.kernel().topRows(I) = w_ih.transpose();
  cell.kernel().bottomRows(H) = w_hh.transpose();
  cell.bias() = b_ih + b_hh;
}

/// \brief import_pytorch_rnn() from the file at `path`.
template <class Scalar>
void import_pytorch_rnn(RNNCell<Scalar>& cell, const std::string& path, const std::string& prefix = "",
                        int layer = 0, bool reverse = false) {
  import_pytorch_rnn(cell, safetensors::File::read(path), prefix, layer, reverse);
}

/// \brief Loads a Keras `SimpleRNN` layer's weights (`kernel`, `recurrent_kernel`, `bias`, saved
/// as safetensors) into `cell`.
/// \param prefix prepended to every tensor name, e.g. "simple_rnn/simple_rnn_cell/".
/// \throws CheckpointError naming the file and the problem; `cell` is then unchanged.
/// std::invalid_argument when the cell's parameters were resized.
template <class Scalar>
void import_keras_rnn(RNNCell<Scalar>& cell, const safetensors::File& file, const std::string& prefix = "") {
  cell.check_parameters("import_keras_rnn");
  const Index I = cell.input_size(), H = cell.hidden_size();
  const auto w = detail::read_matrix<Scalar>(file, prefix + "kernel", I, H);
  const auto u = detail::read_matrix<Scalar>(file, prefix + "recurrent_kernel", H, H);
  auto b = detail::read_optional_bias<Scalar>(file, prefix + "bias", H);
  cell.kernel() << w, u;
  cell.bias() = b;
}

/// \brief import_keras_rnn() from the file at `path`.
template <class Scalar>
void import_keras_rnn(RNNCell<Scalar>& cell, const std::string& path, const std::string& prefix = "") {
  import_keras_rnn(cell, safetensors::File::read(path), prefix);
}

/// \brief Loads a TensorFlow 1.x `BasicRNNCell`'s `kernel` and `bias` (saved as safetensors)
/// into `cell`.
/// \param prefix prepended to both names, e.g. "rnn/basic_rnn_cell/".
/// \throws CheckpointError naming the file and the problem; `cell` is then unchanged.
/// std::invalid_argument when the cell's parameters were resized.
template <class Scalar>
void import_tensorflow_rnn(RNNCell<Scalar>& cell, const safetensors::File& file, const std::string& prefix = "") {
  cell.check_parameters("import_tensorflow_rnn");
  const Index I = cell.input_size(), H = cell.hidden_size();
  auto kernel = detail::read_matrix<Scalar>(file, prefix + "kernel", I + H, H);
  auto bias = detail::read_vector<Scalar>(file, prefix + "bias", H);
  cell.kernel() = kernel;
  cell.bias() = bias;
}

/// \brief import_tensorflow_rnn() from the file at `path`.
template <class Scalar>
void import_tensorflow_rnn(RNNCell<Scalar>& cell, const std::string& path, const std::string& prefix = "") {
  import_tensorflow_rnn(cell, safetensors::File::read(path), prefix);
}

}  // namespace dynrnn
