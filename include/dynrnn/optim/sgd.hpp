// dynrnn: stochastic gradient descent with momentum, as torch.optim.SGD.
//
//   g   <- g + weight_decay·θ                          (weight_decay > 0)
//   buf <- g                                            (first update of this parameter)
//   buf <- momentum·buf + (1 - dampening)·g             (later updates; momentum > 0)
//   d   =  g + momentum·buf  (nesterov)  or  buf  (momentum > 0)  or  g
//   θ   <- θ - lr·d
#pragma once

#include "optimizer.hpp"

#include <string>

namespace dynrnn {

/// \brief Hyper-parameters of SGD, with PyTorch's defaults.
/// \tparam Scalar element type.
template <class Scalar>
struct SGDOptions {
  Scalar learning_rate = Scalar(0.01);  ///< lr.
  Scalar momentum = Scalar(0);          ///< Momentum coefficient; 0 disables the buffer.
  Scalar dampening = Scalar(0);         ///< Share of the gradient held back from the buffer, in [0, 1].
  Scalar weight_decay = Scalar(0);      ///< L2 penalty added to the gradient.
  bool nesterov = false;                ///< Nesterov momentum (needs momentum > 0 and dampening 0).
};

/// \brief SGD as torch.optim.SGD. Slot: 0 "momentum" (momentum > 0 only).
///
/// \tparam Scalar element type of the parameters.
///
/// \code
/// dynrnn::SGD<float> sgd(0.1f);                       // plain
/// dynrnn::SGDOptions<float> o;
/// o.learning_rate = 0.1f; o.momentum = 0.9f; o.nesterov = true;
/// dynrnn::SGD<float> nesterov(o);
/// \endcode
template <class Scalar>
class SGD : public OptimizerBase<SGD<Scalar>, Scalar, SGDOptions<Scalar>> {
  using Base = OptimizerBase<SGD<Scalar>, Scalar, SGDOptions<Scalar>>;

 public:
  /// \brief Name used in error messages.
  static constexpr const char* name = "SGD";
  /// \brief The first update fills the momentum buffer, so checkpoints keep the update count.
  static constexpr bool counts_updates = true;

  /// \brief Plain SGD with the given learning rate.
  explicit SGD(Scalar learning_rate = Scalar(0.01)) : SGD(SGD::with_learning_rate(learning_rate)) {}
  /// \brief SGD with explicit options.
  /// \throws std::invalid_argument for a negative or non-finite learning rate, momentum or
  /// weight decay, a dampening outside [0, 1], or nesterov without momentum or with dampening.
  explicit SGD(const SGDOptions<Scalar>& options) : Base(options) {
    Base::check_non_negative("momentum", options.momentum);
    Base::check_range("dampening", options.dampening, Scalar(0), Scalar(1), true);
    Base::check_non_negative("weight_decay", options.weight_decay);
    if (options.nesterov && !(options.momentum > 0 && options.dampening == 0))
      detail::throw_argument(name, "nesterov", "false unless momentum > 0 and dampening = 0",
                             "true with momentum " + detail::number_string(options.momentum) + " and dampening " +
                                 detail::number_string(options.dampening));
  }

  /// \brief Slot names: "momentum" when momentum > 0.
  SlotNames slot_names() const { return {this->options().momentum > 0 ? "momentum" : nullptr, nullptr, nullptr}; }
  /// \brief The momentum buffer carries state when it exists.
  bool slot_is_state(int k) const { return k == 0 && this->options().momentum > 0; }
  /// \brief The buffer starts at 0 (the first update overwrites it with the gradient).
  Scalar slot_start(int) const { return Scalar(0); }

  /// \brief One SGD update on matching blocks of parameter, gradient and slots.
  template <class Theta, class G, class S>
  void update(Theta theta, const G& g, S& s, std::int64_t step) const {
    const SGDOptions<Scalar>& o = this->options();
    const Scalar lr = o.learning_rate;
    const auto run = [&](const auto& grad) {
      if (o.momentum == 0) {
        theta -= lr * grad;
        return;
      }
      auto& buf = s[0];
      if (step == 1)
        buf = grad;
      else
        buf = o.momentum * buf + (Scalar(1) - o.dampening) * grad;
      if (o.nesterov)
        theta -= lr * (grad + o.momentum * buf);
      else
        theta -= lr * buf;
    };
    if (o.weight_decay != 0)
      run(g + o.weight_decay * theta);
    else
      run(g);
  }
};

}  // namespace dynrnn
