// dynrnn: RMSProp, in TensorFlow 1.x's form (the default) or PyTorch's.
//
// TensorFlow 1.x RMSPropOptimizer, slots ms = 1, mom = 0, mg = 0 at the start:
//   ms  <- decay·ms + (1 - decay)·g²
//   mg  <- decay·mg + (1 - decay)·g                      (centered only)
//   mom <- momentum·mom + lr·g / sqrt(ms + eps)           (ms - mg² + eps when centered)
//   θ   <- θ - mom
//
// PyTorch torch.optim.RMSprop (alpha = decay), slots start at 0:
//   v   <- decay·v + (1 - decay)·g²
//   ga  <- decay·ga + (1 - decay)·g                       (centered only)
//   a   =  sqrt(v) + eps                                  (sqrt(v - ga²) + eps when centered)
//   buf <- momentum·buf + g / a;  θ <- θ - lr·buf         (momentum > 0)
//   θ   <- θ - lr·g / a                                   (momentum = 0)
//
// The two differ in where eps sits, in the starting mean square (1 makes
// TensorFlow's first steps small) and in whether lr is inside the momentum.
#pragma once

#include "optimizer.hpp"

namespace dynrnn {

/// \brief Which framework's RMSProp update to follow.
enum class RMSPropVariant {
  tensorflow,  ///< tf.compat.v1.train.RMSPropOptimizer.
  pytorch,     ///< torch.optim.RMSprop.
};

/// \brief Hyper-parameters of RMSProp. Start from tensorflow() or pytorch() to get that
/// framework's defaults, then change fields as needed.
/// \tparam Scalar element type.
template <class Scalar>
struct RMSPropOptions {
  Scalar learning_rate = Scalar(0.001);  ///< lr.
  Scalar decay = Scalar(0.9);            ///< Discount of the mean square (PyTorch's alpha).
  Scalar momentum = Scalar(0);           ///< Momentum coefficient; 0 disables it.
  Scalar epsilon = Scalar(1e-10);        ///< Added for stability; see the header comment.
  bool centered = false;                 ///< Normalise by the variance instead of the mean square.
  RMSPropVariant variant = RMSPropVariant::tensorflow;  ///< Update rule.

  /// \brief TensorFlow 1.x defaults: decay 0.9, momentum 0, epsilon 1e-10.
  static RMSPropOptions tensorflow(Scalar learning_rate) {
    return {learning_rate, Scalar(0.9), Scalar(0), Scalar(1e-10), false, RMSPropVariant::tensorflow};
  }
  /// \brief PyTorch defaults: lr 0.01, alpha 0.99, momentum 0, eps 1e-8.
  static RMSPropOptions pytorch(Scalar learning_rate = Scalar(0.01)) {
    return {learning_rate, Scalar(0.99), Scalar(0), Scalar(1e-8), false, RMSPropVariant::pytorch};
  }
};

/// \brief RMSProp optimiser (see optimizer.hpp for how its state follows each parameter).
/// Slots: 0 "ms" (mean square, PyTorch's v), 1 "mom" (momentum buffer, stored when
/// momentum > 0), 2 "mg" (mean gradient, stored when centered).
///
/// \tparam Scalar element type of the parameters.
///
/// \code
/// dynrnn::RMSProp<float> opt(0.01f);               // TensorFlow 1.x semantics
/// opt.apply(cell, grads);                          // every parameter of a layer
/// opt.apply(dense.weight(), dense_grads.weight);   // or one parameter
/// auto torch_like = dynrnn::RMSProp<float>(dynrnn::RMSPropOptions<float>::pytorch(0.01f));
/// \endcode
template <class Scalar>
class RMSProp : public OptimizerBase<RMSProp<Scalar>, Scalar, RMSPropOptions<Scalar>> {
  using Base = OptimizerBase<RMSProp<Scalar>, Scalar, RMSPropOptions<Scalar>>;

 public:
  /// \brief Name used in error messages.
  static constexpr const char* name = "RMSProp";
  /// \brief RMSProp's rule does not depend on the update count, so checkpoints leave it out.
  static constexpr bool counts_updates = false;

  /// \brief TensorFlow 1.x RMSProp with its defaults and the given learning rate.
  explicit RMSProp(Scalar learning_rate) : RMSProp(RMSPropOptions<Scalar>::tensorflow(learning_rate)) {}

  /// \brief RMSProp with explicit options.
  /// \throws std::invalid_argument for a negative learning rate, momentum or epsilon, or a decay
  /// outside [0, 1).
  explicit RMSProp(const RMSPropOptions<Scalar>& options) : Base(options) {
    Base::check_range("decay", options.decay, Scalar(0), Scalar(1));
    Base::check_non_negative("momentum", options.momentum);
    Base::check_non_negative("epsilon", options.epsilon);
  }

  /// \brief Slot names: "ms", "mom" and, when centered, "mg".
  SlotNames slot_names() const { return {"ms", "mom", this->options().centered ? "mg" : nullptr}; }
  /// \brief The mean square always carries state; the momentum buffer only with momentum > 0,
  /// the mean gradient only when centered.
  bool slot_is_state(int k) const { return k == 0 || (k == 1 && this->options().momentum > 0) || (k == 2 && this->options().centered); }
  /// \brief TensorFlow starts the mean square at 1, PyTorch at 0; the other slots start at 0.
  Scalar slot_start(int k) const {
    return k == 0 && this->options().variant == RMSPropVariant::tensorflow ? Scalar(1) : Scalar(0);
  }

  /// \brief One RMSProp update on matching blocks of parameter, gradient and slots.
  template <class Theta, class G, class S>
  void update(Theta theta, const G& g, S& s, std::int64_t /*step*/) const {
    const RMSPropOptions<Scalar>& o = this->options();
    const Scalar lr = o.learning_rate;
    auto& ms = s[0];
    auto& mom = s[1];
    auto& mg = s[2];
    ms = o.decay * ms + (Scalar(1) - o.decay) * g.square();
    if (o.centered) mg = o.decay * mg + (Scalar(1) - o.decay) * g;
    if (o.variant == RMSPropVariant::tensorflow) {
      const auto step = [&](const auto& denominator) {
        mom = o.momentum * mom + lr * g / denominator.sqrt();
        theta -= mom;
      };
      if (o.centered)
        step(ms - mg.square() + o.epsilon);
      else
        step(ms + o.epsilon);
    } else {
      const auto step = [&](const auto& avg) {
        if (o.momentum > 0) {
          mom = o.momentum * mom + g / avg;
          theta -= lr * mom;
        } else {
          theta -= lr * g / avg;
        }
      };
      if (o.centered)
        step((ms - mg.square()).sqrt() + o.epsilon);
      else
        step(ms.sqrt() + o.epsilon);
    }
  }

};

}  // namespace dynrnn
