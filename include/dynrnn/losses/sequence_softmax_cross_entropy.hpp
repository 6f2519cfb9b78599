// dynrnn: softmax cross-entropy at every valid step of a batch of sequences, for
// many-to-many training (a language model, a tagger).
//
// Dimensions: T max_time, B batch, C classes.
//
// For each row b with length L_b, the steps t < L_b each contribute the loss of
// softmax_cross_entropy.hpp, logsumexp(z) - z[y], on logits(t, b, :) against labels[t·B + b].
// Padded steps (t >= L_b) contribute neither loss nor gradient, and neither their logits nor
// their labels are read. With Reduction::mean the loss is the mean over the valid steps of the
// whole batch (tf.contrib.seq2seq.sequence_loss's default; PyTorch's CrossEntropyLoss with the
// padding ignored), so every step weighs the same whatever its row's length.
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"
#include "softmax_cross_entropy.hpp"

#include <string>
#include <vector>

namespace dynrnn {

/// \brief Loss and gradient of sequence_softmax_cross_entropy().
/// \tparam Scalar element type.
template <class Scalar>
struct SequenceSoftmaxCrossEntropy {
  Scalar loss = Scalar(0);   ///< Reduced loss over the valid steps (0 when there are none).
  Index steps = 0;           ///< Number of valid steps, the sum of the lengths.
  Tensor3<Scalar> d_logits;  ///< [T, B, C] dloss/dlogits for the reduced loss; exactly 0 at padded steps.
};

/// \brief sequence_softmax_cross_entropy() into `result`, reusing its storage.
template <class Scalar>
void sequence_softmax_cross_entropy(const Tensor3<Scalar>& logits, const std::vector<int>& labels,
                                    const std::vector<int>& lengths, Reduction reduction,
                                    SequenceSoftmaxCrossEntropy<Scalar>& result) {
  constexpr const char* fn = "sequence_softmax_cross_entropy";
  const Index T = logits.dimension(0), B = logits.dimension(1), C = logits.dimension(2);
  if (C == 0) detail::throw_argument(fn, "logits", "of at least one class", detail::shape_string({T, B, C}));
  if (static_cast<Index>(labels.size()) != T * B)
    detail::throw_argument(fn, "labels", "of size " + std::to_string(T * B) + " (max_time x batch, time-major)",
                           "size " + std::to_string(labels.size()));
  detail::check_lengths(fn, lengths, B, T);
  Index steps = 0;
  for (Index b = 0; b < B; ++b) {
    steps += lengths[b];
    for (Index t = 0; t < lengths[b]; ++t) {
      const int y = labels[t * B + b];
      if (y < 0 || y >= C)
        detail::throw_argument(fn, "labels", "in [0, " + std::to_string(C) + ") (classes) at valid steps",
                               "labels[" + std::to_string(t * B + b) + "] = " + std::to_string(y) + " (step " +
                                   std::to_string(t) + ", row " + std::to_string(b) + ")");
    }
  }

  result.d_logits.resize(T, B, C);  // reallocates only when the size changes
  result.d_logits.setZero();
  result.steps = steps;
  const auto z = detail::as_matrix(logits);  // row t·B + b
  auto d = detail::as_matrix(result.d_logits);
  // Sum in double: the losses of many float steps would otherwise round.
  double total = 0;
  for (Index b = 0; b < B; ++b)
    for (Index t = 0; t < lengths[b]; ++t) total += detail::cross_entropy_row(z.row(t * B + b), labels[t * B + b], d.row(t * B + b));
  const Scalar scale = reduction == Reduction::mean && steps > 0 ? Scalar(1) / Scalar(steps) : Scalar(1);
  d *= scale;
  result.loss = Scalar(total) * scale;
}

/// \brief Softmax cross-entropy of per-step logits against per-step labels, masked by length.
///
/// \param logits  [T, B, C] unnormalised scores; values at padded steps are never read.
/// \param labels  T·B class indices, time-major (labels[t·B + b] for row b at step t), each
///                in [0, C) at valid steps; values at padded steps are never read.
/// \param lengths B lengths, each in [0, T].
/// \param reduction Reduction::mean (default): mean over valid steps; Reduction::sum: their sum.
/// \throws std::invalid_argument naming the argument for C = 0, a label count other than T·B, a
/// length outside [0, T] or a valid step's label outside [0, C).
///
/// \code
/// auto ce = dynrnn::sequence_softmax_cross_entropy(logits, next_chars, lengths);
/// double bits_per_char = ce.loss / std::log(2.0);
/// \endcode
template <class Scalar>
SequenceSoftmaxCrossEntropy<Scalar> sequence_softmax_cross_entropy(const Tensor3<Scalar>& logits,
                                                                   const std::vector<int>& labels,
                                                                   const std::vector<int>& lengths,
                                                                   Reduction reduction = Reduction::mean) {
  SequenceSoftmaxCrossEntropy<Scalar> r;
  sequence_softmax_cross_entropy(logits, labels, lengths, reduction, r);
  return r;
}

}  // namespace dynrnn
