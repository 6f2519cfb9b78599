// dynrnn: softmax cross-entropy on logits, numerically stable.
//
// Dimensions: N samples, C classes.
//
//   loss_n = logsumexp(z_n) - z_n[y_n],   logsumexp(z) = m + log Σ_k exp(z_k - m), m = max_k z_k
//   dloss_n/dz_n = softmax(z_n) - onehot(y_n)
//
// The input is raw logits. Passing probabilities (softmax applied first) would
// compute a different, wrong loss whose gradient vanishes as training
// progresses; there is no softmax to apply before calling this.
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"
#include "reduction.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace dynrnn {

/// \brief Loss and gradient of softmax_cross_entropy().
/// \tparam Scalar element type.
template <class Scalar>
struct SoftmaxCrossEntropy {
  Scalar loss = Scalar(0);   ///< Reduced loss.
  Matrix<Scalar> d_logits;   ///< (N, C) dloss/dlogits for the reduced loss.
};

namespace detail {

/// One sample: writes softmax(z) - onehot(label) into `d` and returns the loss
/// logsumexp(z) - z[label], both computed from the same shifted exponentials.
template <class Z, class D>
double cross_entropy_row(const Z& z, int label, D&& d) {
  const auto m = z.maxCoeff();
  d = (z.array() - m).exp().matrix();
  const auto sum = d.sum();
  d /= sum;
  d(label) -= 1;
  return double(m + std::log(sum) - z(label));
}

}  // namespace detail

/// \brief softmax() into `p`, reusing its storage.
template <class Scalar>
void softmax(const Matrix<Scalar>& logits, Matrix<Scalar>& p) {
  if (logits.cols() == 0)
    detail::throw_argument("softmax", "logits", "of at least one column", detail::shape_string({logits.rows(), 0}));
  p.resize(logits.rows(), logits.cols());
  for (Index n = 0; n < logits.rows(); ++n) {
    p.row(n) = (logits.row(n).array() - logits.row(n).maxCoeff()).exp().matrix();
    p.row(n) /= p.row(n).sum();
  }
}

/// \brief Row-wise softmax, computed stably.
/// \param logits (N, C).
/// \return (N, C) probabilities; each row sums to 1.
/// \throws std::invalid_argument when C = 0.
template <class Scalar>
Matrix<Scalar> softmax(const Matrix<Scalar>& logits) {
  Matrix<Scalar> p;
  softmax(logits, p);
  return p;
}

/// \brief softmax_cross_entropy() into `result`, reusing its storage.
template <class Scalar>
void softmax_cross_entropy(const Matrix<Scalar>& logits, const std::vector<int>& labels, Reduction reduction,
                           SoftmaxCrossEntropy<Scalar>& result) {
  constexpr const char* fn = "softmax_cross_entropy";
  const Index N = logits.rows(), C = logits.cols();
  if (N == 0 || C == 0)
    detail::throw_argument(fn, "logits", "non-empty", "shape " + detail::shape_string({N, C}));
  if (static_cast<Index>(labels.size()) != N)
    detail::throw_argument(fn, "labels", "of size " + std::to_string(N) + " (rows of logits)",
                           "size " + std::to_string(labels.size()));
  for (Index n = 0; n < N; ++n)
    if (labels[n] < 0 || labels[n] >= C)
      detail::throw_argument(fn, "labels", "in [0, " + std::to_string(C) + ") (columns of logits)",
                             "labels[" + std::to_string(n) + "] = " + std::to_string(labels[n]));

  result.d_logits.resize(N, C);
  const Scalar scale = reduction == Reduction::mean ? Scalar(1) / Scalar(N) : Scalar(1);
  // Sum in double: the per-sample losses of a large float batch would otherwise round.
  double total = 0;
  for (Index n = 0; n < N; ++n) total += detail::cross_entropy_row(logits.row(n), labels[n], result.d_logits.row(n));
  result.d_logits *= scale;
  result.loss = Scalar(total) * scale;
}

/// \brief Sparse softmax cross-entropy of logits against integer labels, with its gradient.
///
/// \param logits (N, C) unnormalised scores; N >= 1.
/// \param labels N class indices, each in [0, C).
/// \param reduction Reduction::mean (default) or Reduction::sum.
/// \throws std::invalid_argument for a label count other than N, a label outside [0, C), or N == 0.
///
/// \code
/// auto ce = dynrnn::softmax_cross_entropy(logits, labels);
/// // ce.loss: mean loss; ce.d_logits: feed to Dense::backward
/// \endcode
template <class Scalar>
SoftmaxCrossEntropy<Scalar> softmax_cross_entropy(const Matrix<Scalar>& logits, const std::vector<int>& labels,
                                                  Reduction reduction = Reduction::mean) {
  SoftmaxCrossEntropy<Scalar> r;
  softmax_cross_entropy(logits, labels, reduction, r);
  return r;
}

}  // namespace dynrnn
