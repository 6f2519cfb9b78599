// Shared helpers for the dynrnn tests: finite differences, random fills, comparisons.
#pragma once

#include <dynrnn/dynrnn.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dynrnn::test {

/// The logistic function 1 / (1 + e^-v) in double: the reference the cells' gates are checked
/// against.
inline double sigmoid(double v) { return 1 / (1 + std::exp(-v)); }

/// Relative error |a - b| / max(|a|, |b|, floor): near zero it becomes an absolute error, so
/// an analytic 0 against a numeric 1e-12 does not count as a 100% miss.
inline double relative_error(double a, double b, double floor = 1e-4) {
  return std::abs(a - b) / std::max({std::abs(a), std::abs(b), floor});
}

/// Largest relative error between `analytic[k]` and the central difference of `loss` with
/// respect to `param[k]`, over k in [0, n). `param` is perturbed in place and restored.
inline double max_gradient_error(double* param, const double* analytic, Index n,
                                 const std::function<double()>& loss, double eps = 1e-6) {
  double worst = 0;
  for (Index k = 0; k < n; ++k) {
    const double saved = param[k];
    param[k] = saved + eps;
    const double up = loss();
    param[k] = saved - eps;
    const double down = loss();
    param[k] = saved;
    worst = std::max(worst, relative_error(analytic[k], (up - down) / (2 * eps)));
  }
  return worst;
}

/// Gradient check for an Eigen matrix or vector parameter of the same layout as its gradient.
template <class P, class G>
double max_gradient_error(P& param, const G& analytic, const std::function<double()>& loss, double eps = 1e-6) {
  EXPECT_EQ(param.size(), analytic.size());
  return max_gradient_error(param.data(), analytic.data(), param.size(), loss, eps);
}

/// Gradient check for a [T, B, K] tensor parameter.
inline double max_gradient_error(Tensor3<double>& param, const Tensor3<double>& analytic,
                                 const std::function<double()>& loss, double eps = 1e-6) {
  EXPECT_EQ(param.size(), analytic.size());
  return max_gradient_error(param.data(), analytic.data(), param.size(), loss, eps);
}

/// Tensor with entries uniform in [-1, 1).
template <class Scalar>
Tensor3<Scalar> random_tensor(Index d0, Index d1, Index d2, Rng& rng) {
  Tensor3<Scalar> x(d0, d1, d2);
  for (Index k = 0; k < x.size(); ++k) x.data()[k] = Scalar(uniform(rng, -1, 1));
  return x;
}

/// Matrix with entries uniform in [-limit, limit).
template <class Scalar>
Matrix<Scalar> random_matrix(Index rows, Index cols, Rng& rng, double limit = 1) {
  Matrix<Scalar> m(rows, cols);
  fill_uniform(m, rng, limit);
  return m;
}

/// Sets every padded entry (step t >= lengths[b] of row b) of a [T, B, K] tensor to `value`.
template <class Scalar>
void fill_padding(Tensor3<Scalar>& x, const std::vector<int>& lengths, Scalar value) {
  for (Index t = 0; t < x.dimension(0); ++t)
    for (Index b = 0; b < x.dimension(1); ++b)
      if (t >= lengths[static_cast<std::size_t>(b)])
        for (Index k = 0; k < x.dimension(2); ++k) x(t, b, k) = value;
}

/// Largest |entry| of a tensor (0 for an empty one).
template <class Scalar>
double max_abs(const Tensor3<Scalar>& t) {
  double m = 0;
  for (Index k = 0; k < t.size(); ++k) m = std::max(m, double(std::abs(t.data()[k])));
  return m;
}

/// Sum of a ⊙ b over all entries of two tensors of the same shape.
template <class Scalar>
double dot(const Tensor3<Scalar>& a, const Tensor3<Scalar>& b) {
  double s = 0;
  for (Index k = 0; k < a.size(); ++k) s += double(a.data()[k]) * double(b.data()[k]);
  return s;
}

/// Sum of a ⊙ b over all entries of two matrices of the same shape.
template <class Scalar>
double dot(const Matrix<Scalar>& a, const Matrix<Scalar>& b) {
  return (a.template cast<double>().array() * b.template cast<double>().array()).sum();
}

/// True when the two tensors are equal bit for bit (NaN compares equal to NaN).
template <class Scalar>
bool identical(const Tensor3<Scalar>& a, const Tensor3<Scalar>& b) {
  if (a.dimensions() != b.dimensions()) return false;
  return std::equal(a.data(), a.data() + a.size(), b.data(),
                    [](Scalar x, Scalar y) { return x == y || (std::isnan(x) && std::isnan(y)); });
}

/// True when the two matrices have the same shape and are equal bit for bit.
template <class A, class B>
bool identical(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && a == b;
}

/// Expects `call` to throw an Exception whose message contains every fragment.
template <class Exception, class F>
void expect_throw(F&& call, const std::vector<std::string>& fragments) {
  try {
    call();
    ADD_FAILURE() << "no exception of the expected type was thrown";
  } catch (const Exception& e) {
    const std::string what = e.what();
    for (const auto& f : fragments) EXPECT_NE(what.find(f), std::string::npos) << "'" << f << "' not in: " << what;
  }
}

/// Expects `call` to throw std::invalid_argument whose message contains every fragment.
template <class F>
void expect_invalid_argument(F&& call, const std::vector<std::string>& fragments) {
  expect_throw<std::invalid_argument>(std::forward<F>(call), fragments);
}

/// B lengths for a batch of max_time T: row b has length b % (T + 1), so 0 and T both occur
/// once B > T.
inline std::vector<int> cyclic_lengths(Index T, Index B) {
  std::vector<int> lengths(static_cast<std::size_t>(B));
  for (Index b = 0; b < B; ++b) lengths[static_cast<std::size_t>(b)] = int(b % (T + 1));
  return lengths;
}

/// Runs `cell` forward and backward over a [T, B] batch of random inputs and output gradients
/// (row lengths cyclic_lengths(T, B), drawn from `rng`) at 1 and at 2 threads, and expects the two
/// runs to agree on the outputs and on the kernel, bias, input and initial-h gradients: bit
/// for bit with dynrnn's own GEMM, which sums every element in the same order on any number
/// of threads; to float rounding (1e-5 of the largest magnitude) with OpenBLAS or oneDNN,
/// which split their products per thread count.
template <class Cell>
void expect_same_across_thread_counts(const Cell& cell, Index T, Index B, Rng& rng) {
  const auto x = random_tensor<float>(T, B, cell.input_size(), rng);
  const auto d_out = random_tensor<float>(T, B, cell.output_size(), rng);
  const auto lengths = cyclic_lengths(T, B);
  const auto run = [&](int threads) {
    set_num_threads(threads);
    auto fwd = dynamic_rnn(cell, x, lengths);
    auto g = dynamic_rnn_backward(cell, fwd, d_out);
    set_num_threads(1);
    return std::make_pair(std::move(fwd), std::move(g));
  };
  const auto one = run(1);
  const auto two = run(2);
#if defined(DYNRNN_GEMM_OPENBLAS) || defined(DYNRNN_GEMM_ONEDNN)
  const auto close = [](const auto& a, const auto& b) {
    const double scale = std::max(1.0, double(a.cwiseAbs().maxCoeff()));
    return double((a - b).cwiseAbs().maxCoeff()) <= 1e-5 * scale;
  };
  const auto flat = [](const auto& t) {
    using S = std::remove_const_t<std::remove_reference_t<decltype(*t.data())>>;
    return Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, 1>>(t.data(), t.size());
  };
  EXPECT_TRUE(close(flat(one.first.outputs), flat(two.first.outputs)));
  EXPECT_TRUE(close(one.second.kernel, two.second.kernel));
  EXPECT_TRUE(close(one.second.bias, two.second.bias));
  EXPECT_TRUE(close(flat(one.second.inputs), flat(two.second.inputs)));
  EXPECT_TRUE(close(one.second.initial_state.h, two.second.initial_state.h));
#else
  EXPECT_TRUE(identical(one.first.outputs, two.first.outputs));
  EXPECT_TRUE(identical(one.second.kernel, two.second.kernel));
  EXPECT_TRUE(identical(one.second.bias, two.second.bias));
  EXPECT_TRUE(identical(one.second.inputs, two.second.inputs));
  EXPECT_TRUE(identical(one.second.initial_state.h, two.second.initial_state.h));
#endif
}

/// Every parameter gradient in `g`, in visit_parameters() order, as matrices.
template <class Cell, class Gradients>
std::vector<Matrix<typename Cell::Scalar>> parameter_gradients(Cell cell, const Gradients& g) {
  std::vector<Matrix<typename Cell::Scalar>> all;
  visit_parameters(cell, g, [&](const auto&, const auto& grad) { all.emplace_back(grad); });
  return all;
}

/// Backpropagates one forward pass of `cell` over a [T, B] batch (row lengths
/// cyclic_lengths(T, B); inputs and output gradients drawn from `rng`) with
/// InputGradients::compute, then, into a gradient object that has just held those input
/// gradients, with InputGradients::skip. Expects the skipping call to leave `inputs` empty,
/// [0, 0, 0], and to agree bit for bit on every parameter gradient and on the initial-state
/// gradients. In double, also checks the skipping call's parameter and initial-state
/// gradients against central differences (step 1e-5) of the loss Σ outputs ⊙ d_out; the
/// cell must then compute the same function at every call (no dropout in training mode).
template <class Cell>
void expect_skipping_input_gradients_changes_nothing_else(const Cell& cell, Index T, Index B, Rng& rng) {
  using Scalar = typename Cell::Scalar;
  const auto x = random_tensor<Scalar>(T, B, cell.input_size(), rng);
  const auto d_out = random_tensor<Scalar>(T, B, cell.output_size(), rng);
  const auto lengths = cyclic_lengths(T, B);
  const auto fwd = dynamic_rnn(cell, x, lengths);
  const auto d_final = cell.zero_state(B);

  DynamicRNNGradients<Cell> computed(cell), skipped(cell);
  dynamic_rnn_backward(cell, fwd, d_out, d_final, computed);
  ASSERT_EQ(computed.inputs.dimension(2), cell.input_size());
  dynamic_rnn_backward(cell, fwd, d_out, d_final, skipped);  // fills inputs, as a reused object would hold
  skipped.setZero();
  dynamic_rnn_backward(cell, fwd, d_out, d_final, skipped, InputGradients::skip);

  EXPECT_EQ(skipped.inputs.size(), 0);
  EXPECT_EQ(skipped.inputs.dimension(0), 0);
  const auto want = parameter_gradients(cell, computed), got = parameter_gradients(cell, skipped);
  ASSERT_EQ(want.size(), got.size());
  for (std::size_t k = 0; k < want.size(); ++k) {
    EXPECT_GT(want[k].cwiseAbs().maxCoeff(), Scalar(0)) << "parameter " << k << " has no gradient to compare";
    EXPECT_TRUE(identical(want[k], got[k])) << "parameter " << k;
  }
  auto initial = computed.initial_state;
  initial.zip(skipped.initial_state, [](const Matrix<Scalar>& a, const Matrix<Scalar>& b) {
    EXPECT_TRUE(identical(a, b));
  });

  if constexpr (std::is_same_v<Scalar, double>) {
    Cell probe = cell;  // perturbed in place, one parameter at a time
    auto s0 = cell.zero_state(B);
    const auto loss = [&] { return dot(dynamic_rnn(probe, x, lengths, s0).outputs, d_out); };
    int k = 0;
    visit_parameters(probe, skipped, [&](auto& param, const auto& grad) {
      const int index = k++;  // counted here: the message below is built only on failure
      EXPECT_LE(max_gradient_error(param, grad, loss, 1e-5), 1e-6) << "parameter " << index;
    });
    s0.zip(skipped.initial_state, [&](Matrix<double>& state, const Matrix<double>& grad) {
      EXPECT_LE(max_gradient_error(state, grad, loss, 1e-5), 1e-6) << "initial state";
    });
  }
}

/// The precision-dependent tolerance for comparing float or double results.
template <class Scalar>
constexpr double tolerance() {
  return std::is_same_v<Scalar, float> ? 2e-5 : 1e-12;
}

/// The scalar types every typed test runs with, and their names in test output.
using ScalarTypes = ::testing::Types<float, double>;
struct ScalarNames {
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, float> ? "float" : "double";
  }
};

}  // namespace dynrnn::test
