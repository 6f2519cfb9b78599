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

#include "../core/check.hpp"
#include "../core/parallel.hpp"
#include "../core/types.hpp"

#include <algorithm>
#include <string>
#include <type_traits>
#include <unordered_map>

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

/// \brief RMSProp optimiser. Keeps one set of slots per parameter, keyed by the address of the
/// parameter's first element, so a parameter must stay where it is between calls (moving or
/// resizing it needs reset()).
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
class RMSProp {
 public:
  /// \brief TensorFlow 1.x RMSProp with its defaults and the given learning rate.
  explicit RMSProp(Scalar learning_rate) : RMSProp(RMSPropOptions<Scalar>::tensorflow(learning_rate)) {}

  /// \brief RMSProp with explicit options.
  /// \throws std::invalid_argument for a negative learning rate, momentum or epsilon, or a decay
  /// outside [0, 1).
  explicit RMSProp(const RMSPropOptions<Scalar>& options) : options_(options) {
    constexpr const char* fn = "RMSProp";
    if (!(options.learning_rate >= 0))
      detail::throw_argument(fn, "learning_rate", ">= 0", std::to_string(options.learning_rate));
    if (!(options.decay >= 0 && options.decay < 1))
      detail::throw_argument(fn, "decay", "in [0, 1)", std::to_string(options.decay));
    if (!(options.momentum >= 0))
      detail::throw_argument(fn, "momentum", ">= 0", std::to_string(options.momentum));
    if (!(options.epsilon >= 0))
      detail::throw_argument(fn, "epsilon", ">= 0", std::to_string(options.epsilon));
  }

  /// \brief The options in force.
  const RMSPropOptions<Scalar>& options() const { return options_; }
  /// \brief Changes the learning rate from the next update on (for schedules).
  /// \throws std::invalid_argument unless lr >= 0.
  void set_learning_rate(Scalar lr) {
    if (!(lr >= 0)) detail::throw_argument("RMSProp::set_learning_rate", "lr", ">= 0", std::to_string(lr));
    options_.learning_rate = lr;
  }

  /// \brief Updates one parameter in place from its gradient.
  /// \param param any writable Eigen dense object (matrix, vector, array or block).
  /// \param grad  same shape as `param`.
  /// \throws std::invalid_argument when the shapes differ, or when `param`'s address was last
  /// updated with another shape.
  template <class P, class G>
  void apply(Eigen::DenseBase<P>& param, const Eigen::DenseBase<G>& grad) {
    static_assert(std::is_same_v<typename P::Scalar, Scalar>, "parameter scalar differs from RMSProp's");
    constexpr const char* fn = "RMSProp::apply";
    detail::check_shape(fn, "grad", grad, param.rows(), param.cols());
    if (param.size() == 0) return;
    Slots& slot = slots_for(param);

    constexpr int order = P::IsRowMajor ? Eigen::RowMajor : Eigen::ColMajor;
    using Map = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic, order>>;
    const Index rows = param.rows(), cols = param.cols();
    Map ms(slot.ms.data(), rows, cols), mom(slot.mom.data(), rows, cols), mg(slot.mg.data(), rows, cols);
    // Elementwise, so large parameters are updated a block of rows per thread.
    const Index chunk = std::max<Index>(1, kParallelChunk / std::max<Index>(cols, 1));
    const Index chunks = (rows + chunk - 1) / chunk;
    detail::for_each_row(chunks, chunks > 1, [&](Index k) {
      const Index r0 = k * chunk, n = std::min(chunk, rows - r0);
      update(param.derived().middleRows(r0, n).array(), grad.derived().middleRows(r0, n).array(),
             ms.middleRows(r0, n), mom.middleRows(r0, n), mg.middleRows(r0, n));
    });
  }

  /// \brief Updates every parameter of a layer or cell from a matching gradient struct, e.g.
  /// an LSTMCell with dynamic_rnn_backward's result, or a Dense with DenseGradients.
  template <class Layer, class Grads,
            class = std::enable_if_t<!std::is_base_of_v<Eigen::EigenBase<Layer>, Layer>>>
  void apply(Layer& layer, const Grads& grads) {
    visit_parameters(layer, grads, [this](auto& param, const auto& grad) { this->apply(param, grad); });
  }

  /// \brief Per-parameter state: flat arrays in the parameter's storage order.
  struct Slots {
    Index rows, cols;                            ///< Shape of the parameter.
    Eigen::Array<Scalar, Eigen::Dynamic, 1> ms;   ///< Mean square of the gradient (PyTorch's v).
    Eigen::Array<Scalar, Eigen::Dynamic, 1> mom;  ///< Momentum buffer (PyTorch's buf).
    Eigen::Array<Scalar, Eigen::Dynamic, 1> mg;   ///< Mean gradient (centered only; PyTorch's g_avg).
  };

  /// \brief The slots of `param`, created with their starting values if it has none yet.
  /// Checkpoints save and restore the optimiser through this.
  /// \throws std::invalid_argument when `param`'s address has slots of another shape.
  template <class P>
  Slots& slots(Eigen::DenseBase<P>& param) {
    return slots_for(param);
  }
  /// \brief Whether `mom` carries state from one update to the next (momentum > 0); when it
  /// does not, checkpoints leave it out.
  bool momentum_is_state() const { return options_.momentum > 0; }
  /// \brief Whether `mg` carries state (centered).
  bool mean_gradient_is_state() const { return options_.centered; }

  /// \brief Forgets all slots, as for a fresh optimiser.
  void reset() { slots_.clear(); }
  /// \brief Number of parameters with slots.
  std::size_t slot_count() const { return slots_.size(); }

 private:
  static constexpr Index kParallelChunk = 1 << 16;  // entries per thread's block of rows

  // One RMSProp update on matching blocks of parameter, gradient and slots.
  template <class Theta, class G, class S>
  void update(Theta theta, const G& g, S ms, S mom, S mg) const {
    const RMSPropOptions<Scalar>& o = options_;
    ms = o.decay * ms + (Scalar(1) - o.decay) * g.square();
    if (o.centered) mg = o.decay * mg + (Scalar(1) - o.decay) * g;
    if (o.variant == RMSPropVariant::tensorflow) {
      const auto step = [&](const auto& denominator) {
        mom = o.momentum * mom + o.learning_rate * g / denominator.sqrt();
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
          theta -= o.learning_rate * mom;
        } else {
          theta -= o.learning_rate * g / avg;
        }
      };
      if (o.centered)
        step((ms - mg.square()).sqrt() + o.epsilon);
      else
        step(ms.sqrt() + o.epsilon);
    }
  }

  template <class P>
  Slots& slots_for(Eigen::DenseBase<P>& param) {
    const void* key = &param.derived().coeffRef(0, 0);
    auto it = slots_.find(key);
    if (it == slots_.end()) {
      const Index n = param.size();
      const Scalar ms0 = options_.variant == RMSPropVariant::tensorflow ? Scalar(1) : Scalar(0);
      Slots s{param.rows(), param.cols(), Eigen::Array<Scalar, Eigen::Dynamic, 1>::Constant(n, ms0),
              Eigen::Array<Scalar, Eigen::Dynamic, 1>::Zero(n), Eigen::Array<Scalar, Eigen::Dynamic, 1>::Zero(n)};
      it = slots_.emplace(key, std::move(s)).first;
    } else if (it->second.rows != param.rows() || it->second.cols != param.cols()) {
      detail::throw_argument("RMSProp::apply", "param",
                             "of shape " + detail::shape_string({it->second.rows, it->second.cols}) +
                                 " as when it was first updated at this address (call reset() after "
                                 "resizing parameters)",
                             detail::shape_string({param.rows(), param.cols()}));
    }
    return it->second;
  }

  RMSPropOptions<Scalar> options_;
  std::unordered_map<const void*, Slots> slots_;
};

}  // namespace dynrnn
