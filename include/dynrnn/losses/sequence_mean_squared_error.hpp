// dynrnn: mean squared error at every valid step of a batch of sequences, for
// many-to-many regression.
//
// Dimensions: T max_time, B batch, D outputs.
//
// For each row b with length L_b, the steps t < L_b each contribute Σ_d (p - y)² of
// predictions(t, b, :) against targets(t, b, :). Padded steps (t >= L_b) contribute neither
// loss nor gradient, and neither their predictions nor their targets are read. With
// Reduction::mean the loss is the mean over the D outputs of every valid step of the batch
// (divided by D·Σ_b L_b), so every step weighs the same whatever its row's length.
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"
#include "reduction.hpp"

#include <string>
#include <vector>

namespace dynrnn {

/// \brief Loss and gradient of sequence_mean_squared_error().
/// \tparam Scalar element type.
template <class Scalar>
struct SequenceMeanSquaredError {
  Scalar loss = Scalar(0);        ///< Reduced loss over the valid steps (0 when there are none).
  Index steps = 0;                ///< Number of valid steps, the sum of the lengths.
  Tensor3<Scalar> d_predictions;  ///< [T, B, D] dloss/dpredictions for the reduced loss; exactly 0 at padded steps.
};

/// \brief sequence_mean_squared_error() into `result`, reusing its storage.
template <class Scalar>
void sequence_mean_squared_error(const Tensor3<Scalar>& predictions, const Tensor3<Scalar>& targets,
                                 const std::vector<int>& lengths, Reduction reduction,
                                 SequenceMeanSquaredError<Scalar>& result) {
  constexpr const char* fn = "sequence_mean_squared_error";
  const Index T = predictions.dimension(0), B = predictions.dimension(1), D = predictions.dimension(2);
  if (D == 0) detail::throw_argument(fn, "predictions", "of at least one output", detail::shape_string({T, B, D}));
  detail::check_shape(fn, "targets", targets, T, B, D);
  detail::check_lengths(fn, lengths, B, T);
  result.d_predictions.resize(T, B, D);  // reallocates only when the size changes
  result.d_predictions.setZero();
  const auto p = detail::as_matrix(predictions);  // row t·B + b
  const auto y = detail::as_matrix(targets);
  auto d = detail::as_matrix(result.d_predictions);
  Index steps = 0;
  // Sum in double: the squares of many float steps would otherwise round.
  double total = 0;
  for (Index b = 0; b < B; ++b) {
    steps += lengths[b];
    for (Index t = 0; t < lengths[b]; ++t) {
      const Index r = t * B + b;
      d.row(r) = p.row(r) - y.row(r);
      total += double(d.row(r).squaredNorm());
    }
  }
  result.steps = steps;
  const Scalar scale = reduction == Reduction::mean && steps > 0 ? Scalar(1) / Scalar(steps * D) : Scalar(1);
  d *= Scalar(2) * scale;
  result.loss = Scalar(total * double(scale));
}

/// \brief Mean squared error of per-step predictions against per-step targets, masked by length.
///
/// \param predictions [T, B, D]; values at padded steps are never read.
/// \param targets [T, B, D]; values at padded steps are never read.
/// \param lengths B lengths, each in [0, T].
/// \param reduction Reduction::mean (default): mean over the outputs of the valid steps;
///                  Reduction::sum: their sum.
/// \throws std::invalid_argument naming the argument for D = 0, targets of another shape or a
/// length outside [0, T].
///
/// \code
/// auto mse = dynrnn::sequence_mean_squared_error(per_step_outputs, targets, lengths);
/// \endcode
template <class Scalar>
SequenceMeanSquaredError<Scalar> sequence_mean_squared_error(const Tensor3<Scalar>& predictions,
                                                             const Tensor3<Scalar>& targets,
                                                             const std::vector<int>& lengths,
                                                             Reduction reduction = Reduction::mean) {
  SequenceMeanSquaredError<Scalar> r;
  sequence_mean_squared_error(predictions, targets, lengths, reduction, r);
  return r;
}

}  // namespace dynrnn
