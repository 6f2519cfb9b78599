// dynrnn: loading LSTM weights trained in PyTorch, Keras or TensorFlow 1.x.
//
// All three read a safetensors file and convert to LSTMCell's layout: kernel (I+R, 4H),
// rows [x; h], gate columns i, j, f, o; bias (4H); forget_bias added to f at run time
// (R = H, or the projection's width).
// Gate blocks are H wide; "block g of W" below means rows (or columns) g·H .. g·H+H-1.
//
//   PyTorch nn.LSTM      weight_ih_l{k} (4H, I), weight_hh_l{k} (4H, R),
//                        bias_ih_l{k} (4H), bias_hh_l{k} (4H); gates i, f, g, o;
//                        with proj_size = R: weight_hr_l{k} (R, H), projection = weight_hrᵀ.
//     kernel[0:I, block j] = weight_ih[block p]ᵀ,   kernel[I:, block j] = weight_hh[block p]ᵀ
//     bias[block j]        = bias_ih[block p] + bias_hh[block p]
//     with (j ← p) = (i ← i, j ← g, f ← f, o ← o).
//
//   Keras LSTM           kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H); gates i, f, c, o.
//     kernel[0:I, block j] = kernel[:, block p],  kernel[I:, block j] = recurrent_kernel[:, block p]
//     bias[block j]        = bias[block p],       with (j ← p) = (i ← i, j ← c, f ← f, o ← o).
//     Keras must have used its defaults activation="tanh", recurrent_activation="sigmoid".
//
//   TensorFlow 1.x       kernel (I+R, 4H), bias (4H); gates i, j, f, o: copied as they are,
//   LSTMCell             with w_i_diag, w_f_diag, w_o_diag (use_peepholes) and
//                        projection/kernel (num_proj) when the cell has those options.
//                        TensorFlow's forget_bias (default 1) is an argument of the import.
//
// PyTorch and Keras have no peepholes, cell_clip or proj_clip (nor Keras a projection):
// their imports refuse a cell with those options, which would compute another function.
//
// Neither PyTorch nor Keras has a forget_bias, and TensorFlow's may differ from the
// cell's, so every import subtracts the cell's forget_bias (and adds TensorFlow's) in
// the f block of the bias: the cell then computes exactly what the source framework did,
// whatever forget_bias it was constructed with. A missing bias (bias=False,
// use_bias=False) imports as zeros.
#pragma once

#include "../cells/lstm_cell.hpp"
#include "../core/check.hpp"
#include "read_tensors.hpp"
#include "safetensors.hpp"

#include <array>
#include <string>

namespace dynrnn {

namespace detail {

// Source gate block of each of LSTMCell's gates i, j, f, o, for sources ordered i, f, g, o.
inline constexpr std::array<Index, 4> kIfgoToIjfo = {0, 2, 1, 3};

// Assigns a converted kernel and bias, moving forget_bias from the source's convention
// (source_forget_bias) to the cell's.
template <class Scalar>
void assign_lstm(LSTMCell<Scalar>& cell, Matrix<Scalar>&& kernel, Vector<Scalar>&& bias, Scalar source_forget_bias) {
  const Index H = cell.hidden_size();
  bias.segment(2 * H, H).array() += source_forget_bias - cell.forget_bias();
  cell.kernel() = kernel;
  cell.bias() = bias;
}

// Throws std::invalid_argument unless `cell` has none of the options the source lacks.
template <class Scalar>
void require_plain_options(const char* function, const LSTMCell<Scalar>& cell, bool source_projects) {
  const LSTMOptions& o = cell.options();
  if (o.use_peepholes || o.cell_clip > 0 || o.proj_clip > 0 || (!source_projects && o.num_proj > 0))
    throw_argument(function, "cell", std::string("a cell without use_peepholes, cell_clip, proj_clip") +
                                         (source_projects ? "" : " or num_proj") + " (the source has none)",
                   cell.description());
}

}  // namespace detail

/// \brief Loads a PyTorch `nn.LSTM` layer's weights (a state dict saved as safetensors, e.g. with
/// `safetensors.torch.save_file(lstm.state_dict(), path)`) into `cell`.
/// \param cell   receives the weights; its sizes must match the file's.
/// \param file   the parsed file.
/// \param prefix prepended to every tensor name, e.g. "encoder.lstm." for a submodule.
/// \param layer  which layer k of a multi-layer nn.LSTM (names end in `_l{k}`).
/// \param reverse  the reverse direction of a bidirectional layer (names end in `_l{k}_reverse`).
/// \throws CheckpointError naming the file and the problem (missing tensor, wrong shape or
/// dtype, a proj_size LSTM for a cell without num_proj); `cell` is then unchanged.
/// std::invalid_argument for layer < 0 or a cell with peepholes or clips.
template <class Scalar>
void import_pytorch_lstm(LSTMCell<Scalar>& cell, const safetensors::File& file, const std::string& prefix = "",
                         int layer = 0, bool reverse = false) {
  constexpr const char* fn = "import_pytorch_lstm";
  detail::check_non_negative(fn, "layer", layer);
  detail::require_plain_options(fn, cell, /*source_projects=*/true);
  cell.check_parameters(fn);
  const Index I = cell.input_size(), H = cell.hidden_size(), R = cell.output_size();
  const std::string k = "_l" + std::to_string(layer) + (reverse ? "_reverse" : "");
  const bool projects = cell.options().num_proj > 0;
  if (file.contains(prefix + "weight_hr" + k) && !projects)
    file.fail("holds '" + prefix + "weight_hr" + k +
              "': an LSTM with proj_size; build the cell with LSTMOptions::num_proj = proj_size");
  const auto w_ih = detail::read_matrix<Scalar>(file, prefix + "weight_ih" + k, 4 * H, I);
  const auto w_hh = detail::read_matrix<Scalar>(file, prefix + "weight_hh" + k, 4 * H, R);
  const auto [b_ih, b_hh] = detail::read_pytorch_biases<Scalar>(file, prefix, k, 4 * H);
  Matrix<Scalar> w_hr;
  if (projects) w_hr = detail::read_matrix<Scalar>(file, prefix + "weight_hr" + k, R, H);

  Matrix<Scalar> kernel(I + R, 4 * H);
  Vector<Scalar> bias(4 * H);
  for (Index g = 0; g < 4; ++g) {
    const Index p = detail::kIfgoToIjfo[g];
    kernel.block(0, g * H, I, H) = w_ih.middleRows(p * H, H).transpose();
    kernel.block(I, g * H, R, H) = w_hh.middleRows(p * H, H).transpose();
    bias.segment(g * H, H) = b_ih.segment(p * H, H) + b_hh.segment(p * H, H);
  }
  detail::assign_lstm(cell, std::move(kernel), std::move(bias), Scalar(0));
  if (projects) cell.projection() = w_hr.transpose();
}

/// \brief import_pytorch_lstm() from the file at `path`.
template <class Scalar>
void import_pytorch_lstm(LSTMCell<Scalar>& cell, const std::string& path, const std::string& prefix = "",
                         int layer = 0, bool reverse = false) {
  import_pytorch_lstm(cell, safetensors::File::read(path), prefix, layer, reverse);
}

/// \brief Loads a Keras `LSTM` layer's weights (`kernel`, `recurrent_kernel`, `bias`, saved as
/// safetensors) into `cell`. The Keras layer must use activation "tanh" and
/// recurrent_activation "sigmoid" (its defaults).
/// \param prefix prepended to every tensor name, e.g. "lstm/lstm_cell/".
/// \throws CheckpointError naming the file and the problem; `cell` is then unchanged.
/// std::invalid_argument for a cell with options Keras's LSTM does not have.
template <class Scalar>
void import_keras_lstm(LSTMCell<Scalar>& cell, const safetensors::File& file, const std::string& prefix = "") {
  detail::require_plain_options("import_keras_lstm", cell, /*source_projects=*/false);
  cell.check_parameters("import_keras_lstm");
  const Index I = cell.input_size(), H = cell.hidden_size();
  const auto w = detail::read_matrix<Scalar>(file, prefix + "kernel", I, 4 * H);
  const auto u = detail::read_matrix<Scalar>(file, prefix + "recurrent_kernel", H, 4 * H);
  const auto b = detail::read_optional_bias<Scalar>(file, prefix + "bias", 4 * H);

  Matrix<Scalar> kernel(I + H, 4 * H);
  Vector<Scalar> bias(4 * H);
  for (Index g = 0; g < 4; ++g) {
    const Index p = detail::kIfgoToIjfo[g];
    kernel.block(0, g * H, I, H) = w.middleCols(p * H, H);
    kernel.block(I, g * H, H, H) = u.middleCols(p * H, H);
    bias.segment(g * H, H) = b.segment(p * H, H);
  }
  detail::assign_lstm(cell, std::move(kernel), std::move(bias), Scalar(0));
}

/// \brief import_keras_lstm() from the file at `path`.
template <class Scalar>
void import_keras_lstm(LSTMCell<Scalar>& cell, const std::string& path, const std::string& prefix = "") {
  import_keras_lstm(cell, safetensors::File::read(path), prefix);
}

/// \brief Loads a TensorFlow 1.x `LSTMCell`'s `kernel` and `bias` (saved as safetensors) into
/// `cell`, with `w_i_diag`, `w_f_diag`, `w_o_diag` and `projection/kernel` when the cell has
/// peepholes and a projection. The cell's cell_clip and proj_clip must be the TensorFlow cell's
/// (they are not variables).
/// \param tf_forget_bias the forget_bias the TensorFlow cell was built with (its default is 1).
/// \param prefix prepended to every name, e.g. "rnn/lstm_cell/".
/// \throws CheckpointError naming the file and the problem; `cell` is then unchanged.
template <class Scalar>
void import_tensorflow_lstm(LSTMCell<Scalar>& cell, const safetensors::File& file, typename LSTMCell<Scalar>::Scalar tf_forget_bias = Scalar(1),
                            const std::string& prefix = "") {
  cell.check_parameters("import_tensorflow_lstm");
  const Index I = cell.input_size(), H = cell.hidden_size(), R = cell.output_size();
  auto kernel = detail::read_matrix<Scalar>(file, prefix + "kernel", I + R, 4 * H);
  auto bias = detail::read_vector<Scalar>(file, prefix + "bias", 4 * H);
  Vector<Scalar> w_i, w_f, w_o;
  if (cell.options().use_peepholes) {
    w_i = detail::read_vector<Scalar>(file, prefix + "w_i_diag", H);
    w_f = detail::read_vector<Scalar>(file, prefix + "w_f_diag", H);
    w_o = detail::read_vector<Scalar>(file, prefix + "w_o_diag", H);
  }
  Matrix<Scalar> projection;
  if (cell.options().num_proj > 0) projection = detail::read_matrix<Scalar>(file, prefix + "projection/kernel", H, R);
  detail::assign_lstm(cell, std::move(kernel), std::move(bias), tf_forget_bias);
  if (cell.options().use_peepholes) {
    cell.w_i_diag() = w_i;
    cell.w_f_diag() = w_f;
    cell.w_o_diag() = w_o;
  }
  if (cell.options().num_proj > 0) cell.projection() = projection;
}

/// \brief import_tensorflow_lstm() from the file at `path`.
template <class Scalar>
void import_tensorflow_lstm(LSTMCell<Scalar>& cell, const std::string& path, typename LSTMCell<Scalar>::Scalar tf_forget_bias = Scalar(1),
                            const std::string& prefix = "") {
  import_tensorflow_lstm(cell, safetensors::File::read(path), tf_forget_bias, prefix);
}

}  // namespace dynrnn
