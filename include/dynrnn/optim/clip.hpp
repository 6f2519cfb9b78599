// dynrnn: gradient clipping.
//
// clip_by_global_norm scales a set of gradients together so that their joint L2 norm
//   N = sqrt(Σ_tensors ||g||²)
// is at most max_norm, as PyTorch's torch.nn.utils.clip_grad_norm_:
//   coef = max_norm / (N + ε)   (ε = 1e-6; ε = 0 gives tf.clip_by_global_norm's scale)
//   g   <- g·coef when coef < 1, unchanged otherwise
// and returns N as measured before clipping. clip_by_value clamps every element.
//
// Gradients are given as any mix of Eigen dense objects and gradient structs of the
// library's layers and cells (LSTMGradients, DynamicRNNGradients, DenseGradients, ...),
// whose parameter gradients are visited through for_each_gradient().
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace dynrnn {

/// \brief What clip_by_global_norm() does when the norm is infinite or NaN.
enum class NonFiniteNorm {
  propagate,  ///< As PyTorch's default: scale by max_norm / (N + ε) all the same (0 for an infinite N, NaN for NaN).
  error,      ///< As PyTorch's error_if_nonfinite=True: throw std::domain_error; the gradients are unchanged.
  leave,      ///< Leave the gradients unchanged and return N, so that the caller can skip the update.
};

/// \brief Options of clip_by_global_norm().
/// \tparam Scalar element type.
template <class Scalar>
struct GlobalNormClip {
  Scalar max_norm;                                    ///< Largest joint L2 norm let through (>= 0).
  NonFiniteNorm non_finite = NonFiniteNorm::propagate;  ///< What a non-finite norm does.
  Scalar epsilon = Scalar(1e-6);                      ///< PyTorch's ε in max_norm / (N + ε); 0 for TensorFlow's scale.
};

namespace detail {

// Calls f(tensor) for an Eigen object, or for each parameter gradient of a gradient struct:
// how clipping and GradientBuckets take their mix of gradients.
template <class G, class F>
void for_each_gradient_tensor(G& g, F&& f) {
  if constexpr (std::is_base_of_v<Eigen::EigenBase<G>, G>)
    f(g);
  else
    for_each_gradient(g, f);
}

}  // namespace detail

/// \brief Scales `grads` together so that their joint L2 norm is at most `options.max_norm`.
///
/// \param options max_norm (>= 0), the handling of a non-finite norm and ε.
/// \param grads any number of Eigen dense objects and gradient structs, all of one scalar type.
/// \return the joint norm before clipping.
/// \throws std::invalid_argument for a negative or NaN max_norm or a negative ε.
/// \throws std::domain_error for a non-finite norm with NonFiniteNorm::error (nothing changed).
///
/// \code
/// auto norm = dynrnn::clip_by_global_norm(dynrnn::GlobalNormClip<float>{5.0f}, cell_grads, dense_grads);
/// \endcode
template <class Scalar, class... Grads>
Scalar clip_by_global_norm(const GlobalNormClip<Scalar>& options, Grads&... grads) {
  constexpr const char* fn = "clip_by_global_norm";
  if (!(options.max_norm >= 0)) detail::throw_argument(fn, "max_norm", ">= 0", detail::number_string(options.max_norm));
  if (!(options.epsilon >= 0)) detail::throw_argument(fn, "epsilon", ">= 0", detail::number_string(options.epsilon));
  // Σ ||g||² over the tensors, each tensor's norm first as PyTorch forms it; in double so that
  // many float tensors do not lose the small ones.
  double sum = 0;
  const auto add = [&](auto& g) {
    static_assert(std::is_same_v<typename std::decay_t<decltype(g)>::Scalar, Scalar>,
                  "gradient scalar differs from max_norm's");
    const double n = double(g.norm());
    sum += n * n;
  };
  (detail::for_each_gradient_tensor(grads, add), ...);
  const Scalar norm = Scalar(std::sqrt(sum));
  if (!std::isfinite(double(norm))) {
    if (options.non_finite == NonFiniteNorm::error)
      throw std::domain_error(std::string("dynrnn::") + fn + ": the global norm of the gradients is " +
                              detail::number_string(norm) + ", not finite");
    if (options.non_finite == NonFiniteNorm::leave) return norm;
  }
  const Scalar coef = options.max_norm / (norm + options.epsilon);
  if (!(coef >= Scalar(1))) {  // NaN too, as PyTorch's clamp lets it through
    const auto scale = [&](auto& g) { g *= coef; };
    (detail::for_each_gradient_tensor(grads, scale), ...);
  }
  return norm;
}

/// \brief clip_by_global_norm() with PyTorch's defaults (ε = 1e-6, a non-finite norm propagates).
template <class Scalar, class... Grads,
          class = std::enable_if_t<std::is_floating_point_v<Scalar>>>
Scalar clip_by_global_norm(Scalar max_norm, Grads&... grads) {
  return clip_by_global_norm(GlobalNormClip<Scalar>{max_norm}, grads...);
}

/// \brief Clamps every element of `grads` to [min_value, max_value], as tf.clip_by_value and
/// torch.nn.utils.clip_grad_value_ (with min_value = -clip_value). NaN elements stay NaN.
/// \throws std::invalid_argument unless min_value <= max_value.
///
/// \code
/// dynrnn::clip_by_value(-1.0f, 1.0f, cell_grads, dense_grads);
/// \endcode
template <class Scalar, class... Grads>
void clip_by_value(Scalar min_value, Scalar max_value, Grads&... grads) {
  if (!(min_value <= max_value))
    detail::throw_argument("clip_by_value", "max_value", ">= min_value (" + detail::number_string(min_value) + ")",
                           detail::number_string(max_value));
  const auto clamp = [&](auto& g) {
    static_assert(std::is_same_v<typename std::decay_t<decltype(g)>::Scalar, Scalar>,
                  "gradient scalar differs from the bounds'");
    // Comparisons with NaN are false, so a NaN element passes through unchanged.
    g = g.unaryExpr([&](Scalar x) { return x < min_value ? min_value : (x > max_value ? max_value : x); });
  };
  (detail::for_each_gradient_tensor(grads, clamp), ...);
}

}  // namespace dynrnn
