// dynrnn: Adam and AdamW.
//
// PyTorch torch.optim.Adam (the default), slots m = v = vmax = 0, step t = 1, 2, ...:
//   g    <- g + weight_decay·θ                                  (L2 penalty, weight_decay > 0)
//   m    <- β1·m + (1 - β1)·g
//   v    <- β2·v + (1 - β2)·g²
//   vmax <- max(vmax, v)                                          (amsgrad only; v below is vmax)
//   θ    <- θ - lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + ε)
//
// TensorFlow 1.x tf.compat.v1.train.AdamOptimizer ("epsilon hat": ε is added to the root of
// the uncorrected v, so it weighs 1/sqrt(1 - β2^t) times more than in PyTorch's form):
//   m    <- m + (g - m)·(1 - β1);   v <- v + (g² - v)·(1 - β2)
//   θ    <- θ - lr·sqrt(1 - β2^t) / (1 - β1^t) · m / (sqrt(v) + ε)
// (with amsgrad, Keras' form: vmax <- max(vmax, v) takes v's place in the root).
//
// AdamW (torch.optim.AdamW) decays the weights apart from the gradient, before the step:
//   θ    <- θ·(1 - lr·weight_decay), then Adam's update without the L2 term.
#pragma once

#include "optimizer.hpp"

#include <cmath>

namespace dynrnn {

/// \brief Which framework's Adam update to follow.
enum class AdamVariant {
  pytorch,     ///< torch.optim.Adam: bias-corrected v, ε outside the root.
  tensorflow,  ///< tf.compat.v1.train.AdamOptimizer: ε ("epsilon hat") added to the uncorrected root.
};

/// \brief Hyper-parameters of Adam and AdamW. The defaults are PyTorch's.
/// \tparam Scalar element type.
template <class Scalar>
struct AdamOptions {
  Scalar learning_rate = Scalar(0.001);  ///< lr.
  Scalar beta1 = Scalar(0.9);            ///< Decay of the mean gradient m, in [0, 1).
  Scalar beta2 = Scalar(0.999);          ///< Decay of the mean square v, in [0, 1).
  Scalar epsilon = Scalar(1e-8);         ///< Added for stability; see the header comment.
  Scalar weight_decay = Scalar(0);       ///< Adam: L2 penalty added to the gradient. AdamW: decoupled decay.
  bool amsgrad = false;                  ///< Use the running maximum of v (Reddi et al., 2018).
  AdamVariant variant = AdamVariant::pytorch;  ///< Update rule.

  /// \brief TensorFlow 1.x AdamOptimizer: lr 0.001, β1 0.9, β2 0.999, ε 1e-8 (epsilon hat).
  static AdamOptions tensorflow(Scalar learning_rate = Scalar(0.001)) {
    AdamOptions o;
    o.learning_rate = learning_rate;
    o.variant = AdamVariant::tensorflow;
    return o;
  }
};

namespace detail {

// Adam's rule, shared by Adam (coupled L2 penalty) and AdamW (decoupled weight decay).
template <class Derived, class Scalar, bool Decoupled>
class AdamRule : public OptimizerBase<Derived, Scalar, AdamOptions<Scalar>> {
  using Base = OptimizerBase<Derived, Scalar, AdamOptions<Scalar>>;

 public:
  /// \brief Slot names: "m", "v" and, with amsgrad, "vmax".
  SlotNames slot_names() const { return {"m", "v", this->options().amsgrad ? "vmax" : nullptr}; }
  /// \brief Every used slot carries state.
  bool slot_is_state(int k) const { return k < 2 || this->options().amsgrad; }
  /// \brief All slots start at 0.
  Scalar slot_start(int) const { return Scalar(0); }

  /// \brief One update on matching blocks of parameter, gradient and slots; `step` >= 1 counts
  /// the updates of this parameter, this one included.
  template <class Theta, class G, class S>
  void update(Theta theta, const G& g, S& s, std::int64_t step) const {
    const AdamOptions<Scalar>& o = this->options();
    const Scalar lr = o.learning_rate;
    auto& m = s[0];
    auto& v = s[1];
    auto& vmax = s[2];
    const Scalar one(1);
    const Scalar bias1 = one - Scalar(std::pow(o.beta1, Scalar(step)));
    const Scalar bias2 = one - Scalar(std::pow(o.beta2, Scalar(step)));
    if constexpr (Decoupled) {
      if (o.weight_decay != 0) theta *= one - lr * o.weight_decay;
    }
    const auto run = [&](const auto& grad) {
      if (o.variant == AdamVariant::pytorch) {
        m = o.beta1 * m + (one - o.beta1) * grad;
        v = o.beta2 * v + (one - o.beta2) * grad.square();
      } else {
        m += (grad - m) * (one - o.beta1);
        v += (grad.square() - v) * (one - o.beta2);
      }
      if (o.amsgrad) vmax = vmax.max(v);
      const auto descend = [&](const auto& second) {
        if (o.variant == AdamVariant::pytorch) {
          const Scalar step_size = lr / bias1, root_bias2 = std::sqrt(bias2);
          theta -= step_size * (m / (second.sqrt() / root_bias2 + o.epsilon));
        } else {
          const Scalar alpha = lr * std::sqrt(bias2) / bias1;
          theta -= (m * alpha) / (second.sqrt() + o.epsilon);
        }
      };
      if (o.amsgrad)
        descend(vmax);
      else
        descend(v);
    };
    if (!Decoupled && o.weight_decay != 0)
      run(g + o.weight_decay * theta);
    else
      run(g);
  }

 protected:
  explicit AdamRule(const AdamOptions<Scalar>& options) : Base(options) {
    Base::check_range("beta1", options.beta1, Scalar(0), Scalar(1));
    Base::check_range("beta2", options.beta2, Scalar(0), Scalar(1));
    Base::check_non_negative("epsilon", options.epsilon);
    Base::check_non_negative("weight_decay", options.weight_decay);
  }
};

}  // namespace detail

/// \brief Adam (Kingma and Ba, 2015), PyTorch's torch.optim.Adam by default, TensorFlow 1.x's
/// AdamOptimizer with AdamOptions::tensorflow(). weight_decay adds an L2 penalty to the gradient.
/// Slots: 0 "m", 1 "v", 2 "vmax" (amsgrad only).
///
/// \tparam Scalar element type of the parameters.
///
/// \code
/// dynrnn::Adam<float> adam(1e-3f);                                     // torch.optim.Adam(lr=1e-3)
/// dynrnn::Adam<float> tf(dynrnn::AdamOptions<float>::tensorflow(1e-3f));  // TF 1.x AdamOptimizer
/// adam.apply(cell, grads);
/// \endcode
template <class Scalar>
class Adam : public detail::AdamRule<Adam<Scalar>, Scalar, false> {
 public:
  /// \brief Name used in error messages.
  static constexpr const char* name = "Adam";
  /// \brief The bias correction depends on the update count, so checkpoints keep it.
  static constexpr bool counts_updates = true;
  /// \brief PyTorch's defaults with the given learning rate.
  explicit Adam(Scalar learning_rate = Scalar(0.001)) : Adam(Adam::with_learning_rate(learning_rate)) {}
  /// \brief Adam with explicit options.
  /// \throws std::invalid_argument for a negative or non-finite learning rate, epsilon or
  /// weight decay, or a beta outside [0, 1).
  explicit Adam(const AdamOptions<Scalar>& options) : detail::AdamRule<Adam<Scalar>, Scalar, false>(options) {}
};

/// \brief AdamW (Loshchilov and Hutter, 2019) as torch.optim.AdamW: Adam with the weight decay
/// applied to the weights directly, θ·(1 - lr·weight_decay), instead of through the gradient.
/// Its default weight_decay is PyTorch's, 0.01.
///
/// \code
/// dynrnn::AdamW<float> opt(1e-3f);             // torch.optim.AdamW(lr=1e-3, weight_decay=0.01)
/// dynrnn::AdamW<float> opt2(1e-3f, 0.1f);      // weight_decay = 0.1
/// \endcode
template <class Scalar>
class AdamW : public detail::AdamRule<AdamW<Scalar>, Scalar, true> {
 public:
  /// \brief Name used in error messages.
  static constexpr const char* name = "AdamW";
  /// \brief The bias correction depends on the update count, so checkpoints keep it.
  static constexpr bool counts_updates = true;
  /// \brief PyTorch's defaults with the given learning rate and weight decay.
  explicit AdamW(Scalar learning_rate = Scalar(0.001), Scalar weight_decay = Scalar(0.01))
      : AdamW(with(learning_rate, weight_decay)) {}
  /// \brief AdamW with explicit options (weight_decay is the decoupled decay).
  /// \throws std::invalid_argument as Adam's constructor does.
  explicit AdamW(const AdamOptions<Scalar>& options) : detail::AdamRule<AdamW<Scalar>, Scalar, true>(options) {}

 private:
  static AdamOptions<Scalar> with(Scalar lr, Scalar weight_decay) {
    AdamOptions<Scalar> o = AdamW::with_learning_rate(lr);
    o.weight_decay = weight_decay;
    return o;
  }
};

}  // namespace dynrnn
