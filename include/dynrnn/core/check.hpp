// dynrnn: argument validation.
//
// Every public entry point checks its arguments before doing any work and
// throws std::invalid_argument whose message names the function, the argument,
// what was expected and what was given. Messages are built only on failure, so
// a correct call costs a few integer comparisons.
#pragma once

#include "types.hpp"

#include <cmath>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace dynrnn::detail {

/// Formats a shape as "[a, b, c]".
inline std::string shape_string(std::initializer_list<Index> dims) {
  std::ostringstream s;
  s << '[';
  const char* sep = "";
  for (Index d : dims) {
    s << sep << d;
    sep = ", ";
  }
  s << ']';
  return s.str();
}

/// Formats a number as a message shows it: 0.9, 1e-08, nan, 12.
template <class T>
std::string number_string(T value) {
  std::ostringstream s;
  s << value;
  return s.str();
}

[[noreturn]] inline void throw_argument(const char* function, const char* argument,
                                        const std::string& expected, const std::string& actual) {
  throw std::invalid_argument(std::string("dynrnn::") + function + ": argument '" + argument +
                              "' must be " + expected + ", got " + actual);
}

/// Requires a matrix of exactly rows x cols.
template <class Derived>
void check_shape(const char* function, const char* argument, const Eigen::EigenBase<Derived>& m,
                 Index rows, Index cols) {
  if (m.rows() != rows || m.cols() != cols)
    throw_argument(function, argument, "of shape " + shape_string({rows, cols}),
                   shape_string({m.rows(), m.cols()}));
}

/// Checks the operands of C = A · op(W) against a W packed as (K, N): A (n, K), C (n, N).
template <class CRef, class ARef>
void check_packed_product(const char* function, Index K, Index N, const CRef& C, const ARef& A) {
  if (A.cols() != K)
    throw_argument(function, "A", "of " + std::to_string(K) + " columns (as packed)",
                   shape_string({A.rows(), A.cols()}));
  check_shape(function, "C", C, A.rows(), N);
}

/// Requires a rank-3 tensor of exactly [d0, d1, d2].
template <class Scalar>
void check_shape(const char* function, const char* argument, const Tensor3<Scalar>& x, Index d0,
                 Index d1, Index d2) {
  if (x.dimension(0) != d0 || x.dimension(1) != d1 || x.dimension(2) != d2)
    throw_argument(function, argument, "of shape " + shape_string({d0, d1, d2}),
                   shape_string({x.dimension(0), x.dimension(1), x.dimension(2)}));
}

/// Throws when `mode` is neither ForwardMode::training nor ForwardMode::inference.
inline void check_forward_mode(const char* function, ForwardMode mode) {
  if (mode != ForwardMode::training && mode != ForwardMode::inference)
    throw_argument(function, "mode", "ForwardMode::training or ForwardMode::inference",
                   std::to_string(static_cast<int>(mode)));
}

/// Requires a positive size (a layer dimension).
inline void check_positive(const char* function, const char* argument, Index value) {
  if (value <= 0) throw_argument(function, argument, "positive", std::to_string(value));
}

/// Requires a count that may be zero (rows, steps, an index).
inline void check_non_negative(const char* function, const char* argument, Index value) {
  if (value < 0) throw_argument(function, argument, ">= 0", std::to_string(value));
}

/// Whether a real hyper-parameter (a rate, a decay, an epsilon) is finite and >= 0.
template <class Scalar>
bool non_negative_finite(Scalar value) {
  return value >= 0 && std::isfinite(double(value));
}

/// Requires a real hyper-parameter that is finite and >= 0.
template <class Scalar>
void check_non_negative_finite(const char* function, const char* argument, Scalar value) {
  if (!non_negative_finite(value)) throw_argument(function, argument, ">= 0 and finite", number_string(value));
}

/// Requires one length per batch row, each in [0, max_time].
inline void check_lengths(const char* function, const std::vector<int>& lengths, Index batch,
                          Index max_time) {
  if (static_cast<Index>(lengths.size()) != batch)
    throw_argument(function, "lengths", "of size " + std::to_string(batch) + " (the batch size)",
                   "size " + std::to_string(lengths.size()));
  for (std::size_t b = 0; b < lengths.size(); ++b)
    if (lengths[b] < 0 || lengths[b] > max_time)
      throw_argument(function, "lengths",
                     "in [0, " + std::to_string(max_time) + "] (max_time) at every row",
                     "lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]));
}

}  // namespace dynrnn::detail
