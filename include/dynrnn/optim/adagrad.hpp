// dynrnn: Adagrad, as torch.optim.Adagrad.
//
//   g   <- g + weight_decay·θ                             (weight_decay > 0)
//   clr =  lr / (1 + (t - 1)·lr_decay)                     (t = 1, 2, ... updates of θ)
//   sum <- sum + g²                                        (starts at initial_accumulator_value)
//   θ   <- θ - clr·g / (sqrt(sum) + ε)
//
// TensorFlow 1.x's tf.compat.v1.train.AdagradOptimizer is the same rule with the sum
// starting at 0.1 and no ε: AdagradOptions::tensorflow().
#pragma once

#include "optimizer.hpp"

namespace dynrnn {

/// \brief Hyper-parameters of Adagrad, with PyTorch's defaults.
/// \tparam Scalar element type.
template <class Scalar>
struct AdagradOptions {
  Scalar learning_rate = Scalar(0.01);            ///< lr.
  Scalar lr_decay = Scalar(0);                    ///< Decay of the rate with the update count.
  Scalar weight_decay = Scalar(0);                ///< L2 penalty added to the gradient.
  Scalar initial_accumulator_value = Scalar(0);   ///< Where the sum of squares starts.
  Scalar epsilon = Scalar(1e-10);                 ///< Added to the root for stability.

  /// \brief TensorFlow 1.x AdagradOptimizer: the sum starts at 0.1, no ε.
  static AdagradOptions tensorflow(Scalar learning_rate) {
    AdagradOptions o;
    o.learning_rate = learning_rate;
    o.initial_accumulator_value = Scalar(0.1);
    o.epsilon = Scalar(0);
    return o;
  }
};

/// \brief Adagrad (Duchi et al., 2011) as torch.optim.Adagrad. Slot: 0 "sum".
///
/// \tparam Scalar element type of the parameters.
///
/// \code
/// dynrnn::Adagrad<float> opt(0.01f);                                          // PyTorch
/// dynrnn::Adagrad<float> tf(dynrnn::AdagradOptions<float>::tensorflow(0.1f));   // TF 1.x
/// \endcode
template <class Scalar>
class Adagrad : public OptimizerBase<Adagrad<Scalar>, Scalar, AdagradOptions<Scalar>> {
  using Base = OptimizerBase<Adagrad<Scalar>, Scalar, AdagradOptions<Scalar>>;

 public:
  /// \brief Name used in error messages.
  static constexpr const char* name = "Adagrad";
  /// \brief lr_decay depends on the update count, so checkpoints keep it.
  static constexpr bool counts_updates = true;

  /// \brief PyTorch's defaults with the given learning rate.
  explicit Adagrad(Scalar learning_rate = Scalar(0.01)) : Adagrad(Adagrad::with_learning_rate(learning_rate)) {}
  /// \brief Adagrad with explicit options.
  /// \throws std::invalid_argument for a negative or non-finite learning rate, lr_decay,
  /// weight decay, initial accumulator value or epsilon.
  explicit Adagrad(const AdagradOptions<Scalar>& options) : Base(options) {
    Base::check_non_negative("lr_decay", options.lr_decay);
    Base::check_non_negative("weight_decay", options.weight_decay);
    Base::check_non_negative("initial_accumulator_value", options.initial_accumulator_value);
    Base::check_non_negative("epsilon", options.epsilon);
  }

  /// \brief Slot names: "sum".
  SlotNames slot_names() const { return {"sum", nullptr, nullptr}; }
  /// \brief The sum of squares carries state.
  bool slot_is_state(int k) const { return k == 0; }
  /// \brief The sum starts at initial_accumulator_value.
  Scalar slot_start(int) const { return this->options().initial_accumulator_value; }

  /// \brief One Adagrad update on matching blocks of parameter, gradient and slots.
  template <class Theta, class G, class S>
  void update(Theta theta, const G& g, S& s, std::int64_t step) const {
    const AdagradOptions<Scalar>& o = this->options();
    const Scalar clr = o.learning_rate / (Scalar(1) + Scalar(step - 1) * o.lr_decay);
    auto& sum = s[0];
    const auto run = [&](const auto& grad) {
      sum += grad.square();
      theta -= clr * (grad / (sum.sqrt() + o.epsilon));
    };
    if (o.weight_decay != 0)
      run(g + o.weight_decay * theta);
    else
      run(g);
  }
};

}  // namespace dynrnn
