// dynrnn: loading GRU weights trained in PyTorch, Keras or TensorFlow 1.x.
//
// Each reads a safetensors file and converts to GRUCell's layout: kernel (I+H, 3H), rows
// [x; h], gate columns r, u, c; bias (3H); recurrent_bias (3H) for reset_after. Gate blocks
// are H wide. The source's variant must be the cell's, since the two compute different
// functions with the same weights.
//
//   PyTorch nn.GRU       reset_after. weight_ih_l{k} (3H, I), weight_hh_l{k} (3H, H),
//                        bias_ih_l{k} (3H), bias_hh_l{k} (3H); gates r, z, n = r, u, c.
//     kernel = [weight_ihᵀ; weight_hhᵀ],  bias = bias_ih,  recurrent_bias = bias_hh
//
//   Keras GRU            kernel (I, 3H), recurrent_kernel (H, 3H); gates z, r, h = u, r, c.
//                        reset_after=True (Keras 2's default): bias (2, 3H), rows input and
//                        recurrent; reset_after=False: bias (3H).
//     kernel = [kernel; recurrent_kernel] with blocks reordered (r ← r, u ← z, c ← h)
//     Keras must have used its defaults activation="tanh", recurrent_activation="sigmoid".
//
//   TensorFlow 1.x       reset_before. gates/kernel (I+H, 2H), gates/bias (2H): r, u;
//   GRUCell              candidate/kernel (I+H, H), candidate/bias (H).
//     kernel = [gates/kernel, candidate/kernel],  bias = [gates/bias, candidate/bias]
//
// A missing bias (bias=False, use_bias=False) imports as zeros, except in TensorFlow's cell,
// which always has one.
#pragma once

#include "../cells/gru_cell.hpp"
#include "../core/check.hpp"
#include "read_tensors.hpp"
#include "safetensors.hpp"

#include <array>
#include <string>

namespace dynrnn {

namespace detail {

// Throws std::invalid_argument unless `cell` is of the variant the source format computes.
template <class Scalar>
void require_variant(const char* function, const GRUCell<Scalar>& cell, GRUVariant variant) {
  if (cell.variant() != variant)
    throw_argument(function, "cell", std::string("a GRUCell with variant ") + to_string(variant) +
                                         " (the source's reset-gate placement)",
                   std::string("variant ") + to_string(cell.variant()));
}

// Keras orders the gate blocks z, r, h: the source block of GRUCell's r, u, c.
inline constexpr std::array<Index, 3> kZrhToRuc = {1, 0, 2};

}  // namespace detail

/// \brief Loads a PyTorch `nn.GRU` layer's weights (a state dict saved as safetensors) into a
/// reset_after `cell`.
/// \param cell   receives the weights; its sizes must match the file's.
/// \param file   the parsed file.
/// \param prefix prepended to every tensor name, e.g. "encoder.gru." for a submodule.
/// \param layer  which layer k of a multi-layer nn.GRU (names end in `_l{k}`).
/// \param reverse  the reverse direction of a bidirectional layer (names end in `_l{k}_reverse`).
/// \throws CheckpointError naming the file and the problem (missing tensor, wrong shape or
/// dtype); `cell` is then unchanged. std::invalid_argument for layer < 0, a reset_before
/// cell or one whose parameters were resized.
template <class Scalar>
void import_pytorch_gru(GRUCell<Scalar>& cell, const safetensors::File& file, const std::string& prefix = "",
                        int layer = 0, bool reverse = false) {
  constexpr const char* fn = "import_pytorch_gru";
  detail::check_non_negative(fn, "layer", layer);
  detail::require_variant(fn, cell, GRUVariant::reset_after);
  cell.check_parameters(fn);
  const Index I = cell.input_size(), H = cell.hidden_size();
  const std::string k = "_l" + std::to_string(layer) + (reverse ? "_reverse" : "");
  const auto w_ih = detail::read_matrix<Scalar>(file, prefix + "weight_ih" + k, 3 * H, I);
  const auto w_hh = detail::read_matrix<Scalar>(file, prefix + "weight_hh" + k, 3 * H, H);
  auto [b_ih, b_hh] = detail::read_pytorch_biases<Scalar>(file, prefix, k, 3 * H);
  cell.kernel().topRows(I) = w_ih.transpose();
  cell.kernel().bottomRows(H) = w_hh.transpose();
  cell.bias() = b_ih;
  cell.recurrent_bias() = b_hh;
}

/// \brief import_pytorch_gru() from the file at `path`.
template <class Scalar>
void import_pytorch_gru(GRUCell<Scalar>& cell, const std::string& path, const std::string& prefix = "",
                        int layer = 0, bool reverse = false) {
  import_pytorch_gru(cell, safetensors::File::read(path), prefix, layer, reverse);
}

/// \brief Loads a Keras `GRU` layer's weights (`kernel`, `recurrent_kernel`, `bias`, saved as
/// safetensors) into `cell`, whose variant must match the layer's reset_after.
/// \param prefix prepended to every tensor name, e.g. "gru/gru_cell/".
/// \throws CheckpointError naming the file and the problem; `cell` is then unchanged.
/// std::invalid_argument when the cell's parameters were resized.
template <class Scalar>
void import_keras_gru(GRUCell<Scalar>& cell, const safetensors::File& file, const std::string& prefix = "") {
  cell.check_parameters("import_keras_gru");
  const Index I = cell.input_size(), H = cell.hidden_size();
  const bool after = cell.variant() == GRUVariant::reset_after;
  const auto w = detail::read_matrix<Scalar>(file, prefix + "kernel", I, 3 * H);
  const auto u = detail::read_matrix<Scalar>(file, prefix + "recurrent_kernel", H, 3 * H);
  Matrix<Scalar> b = Matrix<Scalar>::Zero(after ? 2 : 1, 3 * H);
  if (file.contains(prefix + "bias")) {
    if (after)
      b = detail::read_matrix<Scalar>(file, prefix + "bias", 2, 3 * H);
    else
      b.row(0) = detail::read_vector<Scalar>(file, prefix + "bias", 3 * H).transpose();
  }
  for (Index g = 0; g < 3; ++g) {
    const Index p = detail::kZrhToRuc[g];
    cell.kernel().block(0, g * H, I, H) = w.middleCols(p * H, H);
    cell.kernel().block(I, g * H, H, H) = u.middleCols(p * H, H);
    cell.bias().segment(g * H, H) = b.row(0).segment(p * H, H).transpose();
    if (after) cell.recurrent_bias().segment(g * H, H) = b.row(1).segment(p * H, H).transpose();
  }
}

/// \brief import_keras_gru() from the file at `path`.
template <class Scalar>
void import_keras_gru(GRUCell<Scalar>& cell, const std::string& path, const std::string& prefix = "") {
  import_keras_gru(cell, safetensors::File::read(path), prefix);
}

/// \brief Loads a TensorFlow 1.x `GRUCell`'s `gates/kernel`, `gates/bias`, `candidate/kernel`
/// and `candidate/bias` (saved as safetensors) into a reset_before `cell`.
/// \param prefix prepended to every name, e.g. "rnn/gru_cell/".
/// \throws CheckpointError naming the file and the problem; `cell` is then unchanged.
/// std::invalid_argument for a reset_after cell or one whose parameters were resized.
template <class Scalar>
void import_tensorflow_gru(GRUCell<Scalar>& cell, const safetensors::File& file, const std::string& prefix = "") {
  detail::require_variant("import_tensorflow_gru", cell, GRUVariant::reset_before);
  cell.check_parameters("import_tensorflow_gru");
  const Index I = cell.input_size(), H = cell.hidden_size();
  const auto gates = detail::read_matrix<Scalar>(file, prefix + "gates/kernel", I + H, 2 * H);
  const auto gates_bias = detail::read_vector<Scalar>(file, prefix + "gates/bias", 2 * H);
  const auto candidate = detail::read_matrix<Scalar>(file, prefix + "candidate/kernel", I + H, H);
  const auto candidate_bias = detail::read_vector<Scalar>(file, prefix + "candidate/bias", H);
  cell.kernel() << gates, candidate;
  cell.bias() << gates_bias, candidate_bias;
}

/// \brief import_tensorflow_gru() from the file at `path`.
template <class Scalar>
void import_tensorflow_gru(GRUCell<Scalar>& cell, const std::string& path, const std::string& prefix = "") {
  import_tensorflow_gru(cell, safetensors::File::read(path), prefix);
}

}  // namespace dynrnn
