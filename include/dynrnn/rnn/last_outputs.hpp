// dynrnn: each row's last valid output, for many-to-one models.
//
// Dimensions: T max_time, B batch, H output width.
//
//   last(b, :) = outputs(lengths[b] - 1, b, :)    (zeros where lengths[b] == 0)
//
// This is the gather_nd(outputs, [b, lengths[b] - 1]) of TensorFlow programs.
// Reading outputs(T - 1, b, :) instead would read padding for every shorter row.
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"

#include <string>
#include <vector>

namespace dynrnn {

/// \brief gather_last_outputs() into `last`, reusing its storage.
template <class Scalar>
void gather_last_outputs(const Tensor3<Scalar>& outputs, const std::vector<int>& lengths, Matrix<Scalar>& last) {
  const Index T = outputs.dimension(0), B = outputs.dimension(1), H = outputs.dimension(2);
  detail::check_lengths("gather_last_outputs", lengths, B, T);
  const auto flat = detail::as_matrix(outputs);
  last.setZero(B, H);
  for (Index b = 0; b < B; ++b)
    if (lengths[b] > 0) last.row(b) = flat.row((lengths[b] - 1) * B + b);
}

/// \brief Gathers each row's output at its last valid step.
/// \param outputs [T, B, H], e.g. dynamic_rnn's outputs.
/// \param lengths B lengths, each in [0, T].
/// \return (B, H); rows of length 0 are zero.
/// \throws std::invalid_argument for a bad count of lengths or a length outside [0, T].
template <class Scalar>
Matrix<Scalar> gather_last_outputs(const Tensor3<Scalar>& outputs, const std::vector<int>& lengths) {
  Matrix<Scalar> last;
  gather_last_outputs(outputs, lengths, last);
  return last;
}

/// \brief gather_last_outputs_backward() into `d_outputs`, reusing its storage.
template <class Scalar>
void gather_last_outputs_backward(const Matrix<Scalar>& d_last, const std::vector<int>& lengths, Index max_time,
                                  Tensor3<Scalar>& d_outputs) {
  const Index B = d_last.rows(), H = d_last.cols();
  detail::check_non_negative("gather_last_outputs_backward", "max_time", max_time);
  detail::check_lengths("gather_last_outputs_backward", lengths, B, max_time);
  d_outputs.resize(max_time, B, H);  // reallocates only when the size changes
  d_outputs.setZero();
  auto flat = detail::as_matrix(d_outputs);
  for (Index b = 0; b < B; ++b)
    if (lengths[b] > 0) flat.row((lengths[b] - 1) * B + b) = d_last.row(b);
}

/// \brief Backward of gather_last_outputs: scatters `d_last` to each row's last valid step.
/// \param d_last (B, H) dLoss/d last outputs.
/// \param lengths the lengths given to gather_last_outputs.
/// \param max_time T.
/// \return [T, B, H] dLoss/d outputs, zero everywhere but the last valid steps.
template <class Scalar>
Tensor3<Scalar> gather_last_outputs_backward(const Matrix<Scalar>& d_last, const std::vector<int>& lengths,
                                             Index max_time) {
  Tensor3<Scalar> d;
  gather_last_outputs_backward(d_last, lengths, max_time, d);
  return d;
}

}  // namespace dynrnn
