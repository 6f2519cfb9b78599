// dynrnn: mean squared error, for regression with one target vector per sample (a
// many-to-one model: the last valid output through a Dense layer).
//
// Dimensions: N samples, D outputs.
//
//   loss  = s · Σ_n Σ_d (p_nd - y_nd)²,     s = 1/(N·D) for Reduction::mean, 1 for sum
//   dloss/dp_nd = 2·s·(p_nd - y_nd)
//
// Reduction::mean averages over every element, as torch.nn.MSELoss and Keras'
// MeanSquaredError (mean over the outputs, then over the batch) do.
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"
#include "reduction.hpp"

namespace dynrnn {

/// \brief Loss and gradient of mean_squared_error().
/// \tparam Scalar element type.
template <class Scalar>
struct MeanSquaredError {
  Scalar loss = Scalar(0);        ///< Reduced loss.
  Matrix<Scalar> d_predictions;   ///< (N, D) dloss/dpredictions for the reduced loss.
};

/// \brief mean_squared_error() into `result`, reusing its storage.
template <class Scalar>
void mean_squared_error(const Matrix<Scalar>& predictions, const Matrix<Scalar>& targets, Reduction reduction,
                        MeanSquaredError<Scalar>& result) {
  constexpr const char* fn = "mean_squared_error";
  const Index N = predictions.rows(), D = predictions.cols();
  if (N == 0 || D == 0) detail::throw_argument(fn, "predictions", "non-empty", "shape " + detail::shape_string({N, D}));
  detail::check_shape(fn, "targets", targets, N, D);
  result.d_predictions.resize(N, D);
  result.d_predictions = predictions - targets;
  // Sum in double: the squares of a large float batch would otherwise round.
  double total = 0;
  for (Index n = 0; n < N; ++n) total += double(result.d_predictions.row(n).squaredNorm());
  const Scalar scale = reduction == Reduction::mean ? Scalar(1) / Scalar(N * D) : Scalar(1);
  result.d_predictions *= Scalar(2) * scale;
  result.loss = Scalar(total * double(scale));
}

/// \brief Mean squared error of predictions against targets, with its gradient.
///
/// \param predictions (N, D), N, D >= 1.
/// \param targets (N, D).
/// \param reduction Reduction::mean (default): mean over all N·D elements; Reduction::sum: their sum.
/// \throws std::invalid_argument for an empty `predictions` or `targets` of another shape.
///
/// \code
/// auto mse = dynrnn::mean_squared_error(dense_out, targets);
/// // mse.loss; mse.d_predictions: feed to Dense::backward
/// \endcode
template <class Scalar>
MeanSquaredError<Scalar> mean_squared_error(const Matrix<Scalar>& predictions, const Matrix<Scalar>& targets,
                                            Reduction reduction = Reduction::mean) {
  MeanSquaredError<Scalar> r;
  mean_squared_error(predictions, targets, reduction, r);
  return r;
}

}  // namespace dynrnn
