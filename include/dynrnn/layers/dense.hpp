// dynrnn: fully connected layer, y = x · W + b.
//
// Dimensions: N rows (samples), I input features, O output features.
#pragma once

#include "../core/check.hpp"
#include "../core/column_sums.hpp"
#include "../core/gemm.hpp"
#include "../core/random.hpp"
#include "../core/types.hpp"

#include <cmath>
#include <string>

namespace dynrnn {

/// \brief Gradients of a Dense layer's parameters.
/// \tparam Scalar element type.
template <class Scalar>
struct DenseGradients {
  Matrix<Scalar> weight;  ///< (I, O) dLoss/dW.
  Vector<Scalar> bias;    ///< (O) dLoss/db.

  DenseGradients() = default;
  /// \brief Zero gradients for a layer of the given sizes.
  DenseGradients(Index input_size, Index output_size)
      : weight(Matrix<Scalar>::Zero(input_size, output_size)), bias(Vector<Scalar>::Zero(output_size)) {}

  /// \brief Sets every gradient to zero, keeping the shapes.
  void setZero() {
    weight.setZero();
    bias.setZero();
  }
};

/// \brief Fully connected layer `y = x · W + b`, with `W` of shape (I, O) as in TensorFlow.
///
/// \tparam Scalar `float` or `double`.
///
/// \code
/// dynrnn::Dense<float> out(64, 15);
/// dynrnn::Matrix<float> logits = out.forward(last_outputs);         // (B, 15)
/// dynrnn::DenseGradients<float> g = out.make_gradients();
/// dynrnn::Matrix<float> d_last = out.backward(last_outputs, d_logits, g);
/// \endcode
template <class Scalar_>
class Dense {
 public:
  using Scalar = Scalar_;                   ///< Element type.
  using Gradients = DenseGradients<Scalar>; ///< Parameter gradient type.

  /// \brief Seed used by the constructor's initialisation.
  static constexpr std::uint64_t default_seed = 0xde75e;

  /// \brief Creates a layer with a Glorot-uniform weight (drawn from Rng(default_seed)) and zero bias.
  /// \param input_size I (> 0).
  /// \param output_size O (> 0).
  Dense(Index input_size, Index output_size) {
    detail::check_positive("Dense", "input_size", input_size);
    detail::check_positive("Dense", "output_size", output_size);
    weight_.resize(input_size, output_size);
    bias_.resize(output_size);
    Rng rng(default_seed);
    reset_parameters(rng);
  }

  /// \brief Redraws the weight Glorot-uniform, limit sqrt(6 / (I + O)), and zeroes the bias.
  void reset_parameters(Rng& rng) {
    fill_uniform(weight_, rng, std::sqrt(6.0 / double(weight_.rows() + weight_.cols())));
    bias_.setZero();
  }

  Index input_size() const { return weight_.rows(); }   ///< I.
  Index output_size() const { return weight_.cols(); }  ///< O.

  /// \brief The weight, (I, O).
  Matrix<Scalar>& weight() { return weight_; }
  const Matrix<Scalar>& weight() const { return weight_; }  ///< \copydoc weight()
  /// \brief The bias, (O).
  Vector<Scalar>& bias() { return bias_; }
  const Vector<Scalar>& bias() const { return bias_; }  ///< \copydoc bias()

  /// \brief Calls `f(name, parameter)` for "weight" and "bias"; checkpoints use this.
  template <class F>
  void for_each_parameter(F&& f) {
    f("weight", weight_);
    f("bias", bias_);
  }
  /// \brief The layer's kind and sizes, e.g. "Dense(input_size=64, output_size=15)".
  std::string description() const {
    return "Dense(input_size=" + std::to_string(input_size()) + ", output_size=" + std::to_string(output_size()) + ")";
  }

  /// \brief Zero gradients shaped like the parameters.
  Gradients make_gradients() const { return Gradients(input_size(), output_size()); }

  /// \brief y = x · W + b.
  /// \param x (N, I).
  /// \return (N, O).
  Matrix<Scalar> forward(const Eigen::Ref<const Matrix<Scalar>>& x) const {
    Matrix<Scalar> y;
    forward(x, y);
    return y;
  }

  /// \brief y = x · W + b into `y`, reusing its storage. The product runs on the calling
  /// thread's Gemm context (detail::thread_gemm), so repeated calls allocate nothing.
  void forward(const Eigen::Ref<const Matrix<Scalar>>& x, Matrix<Scalar>& y) const {
    detail::check_shape("Dense::forward", "x", x, x.rows(), input_size());
    y.resize(x.rows(), output_size());
    y.rowwise() = bias_.transpose();
    detail::thread_gemm<Scalar>()(y, x, Op::N, weight_, Op::N, Scalar(1), Scalar(1));
  }

  /// \brief Adds dLoss/dW and dLoss/db to `grads` and returns dLoss/dx.
  /// \param x  (N, I) the input forward() was given.
  /// \param dy (N, O) dLoss/dy.
  /// \param grads parameter gradients, added to.
  /// \return (N, I) dLoss/dx.
  Matrix<Scalar> backward(const Eigen::Ref<const Matrix<Scalar>>& x,
                          const Eigen::Ref<const Matrix<Scalar>>& dy, Gradients& grads) const {
    Matrix<Scalar> dx;
    backward(x, dy, grads, dx);
    return dx;
  }

  /// \brief backward() writing dLoss/dx into `dx`, reusing its storage; allocates nothing
  /// once `dx` and the calling thread's Gemm context have their sizes.
  void backward(const Eigen::Ref<const Matrix<Scalar>>& x, const Eigen::Ref<const Matrix<Scalar>>& dy,
                Gradients& grads, Matrix<Scalar>& dx) const {
    constexpr const char* fn = "Dense::backward";
    detail::check_shape(fn, "x", x, x.rows(), input_size());
    detail::check_shape(fn, "dy", dy, x.rows(), output_size());
    detail::check_shape(fn, "grads.weight", grads.weight, input_size(), output_size());
    detail::check_shape(fn, "grads.bias", grads.bias, output_size(), 1);
    auto& gemm = detail::thread_gemm<Scalar>();
    gemm(grads.weight, x, Op::T, dy, Op::N, Scalar(1), Scalar(1));
    detail::add_column_sums<Scalar>(dy, grads.bias);
    dx.resize(x.rows(), input_size());
    gemm(dx, dy, Op::N, weight_, Op::T);
  }

 private:
  Matrix<Scalar> weight_;  // (I, O)
  Vector<Scalar> bias_;    // (O)
};

/// \brief Visits each (parameter, gradient) pair of a Dense layer; optimisers use this.
template <class Scalar, class F>
void visit_parameters(Dense<Scalar>& layer, const DenseGradients<Scalar>& g, F&& f) {
  f(layer.weight(), g.weight);
  f(layer.bias(), g.bias);
}

/// \brief Calls f(gradient) for each parameter gradient of a Dense layer (empty ones included);
/// clip_by_global_norm() and clip_by_value() use this.
template <class Scalar, class F>
void for_each_gradient(DenseGradients<Scalar>& g, F&& f) {
  f(g.weight);
  f(g.bias);
}

}  // namespace dynrnn
