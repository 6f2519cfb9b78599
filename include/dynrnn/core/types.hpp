// dynrnn: the dense types every header speaks in.
//
// Matrices are row-major so that a block of consecutive rows (one time step of
// a packed batch, one sample of a minibatch) is a single contiguous run of
// memory. Sequence tensors are time-major: x(t, b, k) is feature k of batch row
// b at time step t.
#pragma once

#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>

#include <cstddef>

namespace dynrnn {

/// \brief Index type used for every size and position (Eigen's `Eigen::Index`).
using Index = Eigen::Index;

/// \brief Dynamic row-major matrix, the library's 2-D type.
/// \tparam Scalar `float` for speed, `double` for gradient checks.
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// \brief Dynamic column vector, used for biases.
/// \tparam Scalar element type.
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// \brief Time-major sequence tensor `[max_time, batch, features]`, row-major.
/// \tparam Scalar element type.
template <class Scalar>
using Tensor3 = Eigen::Tensor<Scalar, 3, Eigen::RowMajor>;

/// \brief What a forward pass keeps. A training pass keeps every activation the backward
/// pass reads; an inference pass keeps only what its outputs and final state need (an LSTM's
/// cache then takes about a third less memory per step), and no backward pass can follow it.
/// A pass in Precision::int8 is always an inference pass.
enum class ForwardMode {
  training,   ///< Keep what backward needs (the default).
  inference,  ///< Keep nothing for backward; the outputs and final state are the same.
};

namespace detail {

/// Views a `[T, B, K]` tensor as a `(T*B, K)` row-major matrix: row t*B + b is
/// the feature vector of batch row b at step t.
template <class Scalar>
Eigen::Map<const Matrix<Scalar>> as_matrix(const Tensor3<Scalar>& x) {
  return {x.data(), x.dimension(0) * x.dimension(1), x.dimension(2)};
}

template <class Scalar>
Eigen::Map<Matrix<Scalar>> as_matrix(Tensor3<Scalar>& x) {
  return {x.data(), x.dimension(0) * x.dimension(1), x.dimension(2)};
}

}  // namespace detail
}  // namespace dynrnn
