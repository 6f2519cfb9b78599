// dynrnn: reading checked tensors out of a safetensors file into Eigen objects, for the
// weight importers (lstm_import.hpp, gru_import.hpp, rnn_import.hpp).
#pragma once

#include "../core/types.hpp"
#include "safetensors.hpp"

#include <cstdint>
#include <string>
#include <utility>

namespace dynrnn::detail {

// Reads a (rows, cols) tensor of `f` into a new matrix, after checking dtype and shape.
template <class Scalar>
Matrix<Scalar> read_matrix(const safetensors::File& f, const std::string& name, Index rows, Index cols) {
  Matrix<Scalar> m(rows, cols);
  f.read_into(name, {std::uint64_t(rows), std::uint64_t(cols)}, m.data());
  return m;
}
template <class Scalar>
Vector<Scalar> read_vector(const safetensors::File& f, const std::string& name, Index n) {
  Vector<Scalar> v(n);
  f.read_into(name, {std::uint64_t(n)}, v.data());
  return v;
}

// The optional bias of `f` (zeros when absent), after checking dtype and shape.
template <class Scalar>
Vector<Scalar> read_optional_bias(const safetensors::File& f, const std::string& name, Index n) {
  return f.contains(name) ? read_vector<Scalar>(f, name, n) : Vector<Scalar>::Zero(n);
}

// PyTorch's bias_ih and bias_hh of an RNN layer (names prefix + "bias_ih" + suffix, suffix
// "_l{k}"), both zeros when the layer was built with bias=False; a file holding only one of
// the two is refused.
template <class Scalar>
std::pair<Vector<Scalar>, Vector<Scalar>> read_pytorch_biases(const safetensors::File& f, const std::string& prefix,
                                                              const std::string& suffix, Index n) {
  const std::string ih = prefix + "bias_ih" + suffix, hh = prefix + "bias_hh" + suffix;
  if (f.contains(ih) != f.contains(hh)) f.fail("holds only one of '" + ih + "' and '" + hh + "'");
  return {read_optional_bias<Scalar>(f, ih, n), read_optional_bias<Scalar>(f, hh, n)};
}

}  // namespace dynrnn::detail
