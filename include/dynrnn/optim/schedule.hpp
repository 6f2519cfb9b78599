// dynrnn: learning-rate schedules.
//
// A schedule is a function of the training step (0 for the first update) that gives the
// learning rate; set_learning_rate(optimizer, schedule, step) applies it before an update.
// It keeps no state of its own: its position is the step, which Checkpoint::save() stores
// and load() returns, so a resumed run continues the schedule where it stopped.
//
//   StepDecay          lr·γ^⌊t / step_size⌋                         (torch.optim.lr_scheduler.StepLR)
//   ExponentialDecay   lr·rate^(t / decay_steps), ⌊·⌋ with staircase  (tf.compat.v1.train.exponential_decay)
//   CosineDecay        lr·((1 - α)·½(1 + cos(π·min(t, T) / T)) + α)   (tf.compat.v1.train.cosine_decay)
//   LinearWarmup       lr_inner(0)·(t + 1) / W for t < W, then the inner schedule at t - W
#pragma once

#include "../core/check.hpp"

#include <cmath>
#include <cstdint>
#include <string>

namespace dynrnn {

/// \brief lr·γ^⌊t / step_size⌋, as torch.optim.lr_scheduler.StepLR.
/// \tparam Scalar element type.
template <class Scalar>
struct StepDecay {
  Scalar initial;           ///< Rate at step 0.
  std::int64_t step_size;   ///< Steps between decays (> 0).
  Scalar gamma;             ///< Factor at each decay.

  /// \throws std::invalid_argument for a negative rate or gamma, or step_size <= 0.
  StepDecay(Scalar initial_rate, std::int64_t steps_per_decay, Scalar factor)
      : initial(initial_rate), step_size(steps_per_decay), gamma(factor) {
    detail::check_non_negative_finite("StepDecay", "initial", initial);
    detail::check_positive("StepDecay", "step_size", step_size);
    detail::check_non_negative_finite("StepDecay", "gamma", gamma);
  }
  /// \brief The rate at `step` (>= 0).
  Scalar operator()(std::int64_t step) const {
    detail::check_non_negative("StepDecay", "step", step);
    return initial * Scalar(std::pow(double(gamma), double(step / step_size)));
  }
};

/// \brief lr·rate^(t / decay_steps), as tf.compat.v1.train.exponential_decay; with `staircase`
/// the exponent is rounded down, so the rate drops every decay_steps steps.
/// \tparam Scalar element type.
template <class Scalar>
struct ExponentialDecay {
  Scalar initial;             ///< Rate at step 0.
  std::int64_t decay_steps;   ///< Steps per factor of `rate` (> 0).
  Scalar rate;                ///< Decay rate.
  bool staircase = false;     ///< Decay in whole steps of decay_steps.

  /// \throws std::invalid_argument for a negative rate, or decay_steps <= 0.
  ExponentialDecay(Scalar initial_rate, std::int64_t steps, Scalar decay_rate, bool stairs = false)
      : initial(initial_rate), decay_steps(steps), rate(decay_rate), staircase(stairs) {
    detail::check_non_negative_finite("ExponentialDecay", "initial", initial);
    detail::check_positive("ExponentialDecay", "decay_steps", decay_steps);
    detail::check_non_negative_finite("ExponentialDecay", "rate", rate);
  }
  /// \brief The rate at `step` (>= 0).
  Scalar operator()(std::int64_t step) const {
    detail::check_non_negative("ExponentialDecay", "step", step);
    double p = double(step) / double(decay_steps);
    if (staircase) p = std::floor(p);
    return initial * Scalar(std::pow(double(rate), p));
  }
};

/// \brief Cosine decay from lr to α·lr over decay_steps, then α·lr, as
/// tf.compat.v1.train.cosine_decay (and torch's CosineAnnealingLR with eta_min = α·lr).
/// \tparam Scalar element type.
template <class Scalar>
struct CosineDecay {
  Scalar initial;             ///< Rate at step 0.
  std::int64_t decay_steps;   ///< Steps to reach the final rate (> 0).
  Scalar alpha = Scalar(0);   ///< Final rate as a fraction of `initial`, in [0, 1].

  /// \throws std::invalid_argument for a negative rate, decay_steps <= 0 or α outside [0, 1].
  CosineDecay(Scalar initial_rate, std::int64_t steps, Scalar final_fraction = Scalar(0))
      : initial(initial_rate), decay_steps(steps), alpha(final_fraction) {
    detail::check_non_negative_finite("CosineDecay", "initial", initial);
    detail::check_positive("CosineDecay", "decay_steps", decay_steps);
    if (!(alpha >= 0 && alpha <= 1)) detail::throw_argument("CosineDecay", "alpha", "in [0, 1]", detail::number_string(alpha));
  }
  /// \brief The rate at `step` (>= 0).
  Scalar operator()(std::int64_t step) const {
    detail::check_non_negative("CosineDecay", "step", step);
    const double pi = 3.14159265358979323846;
    const double t = double(std::min(step, decay_steps)) / double(decay_steps);
    const double cosine = 0.5 * (1 + std::cos(pi * t));
    return initial * Scalar((1 - double(alpha)) * cosine + double(alpha));
  }
};

/// \brief A linear warm-up in front of any schedule: the rate climbs from inner(0)/W at step 0
/// to inner(0) at step W - 1, and the inner schedule follows from its own step 0 at step W.
/// \tparam Schedule any schedule (a callable from the step to the rate).
template <class Schedule>
struct LinearWarmup {
  std::int64_t warmup_steps;  ///< W, steps of warm-up (> 0).
  Schedule inner;             ///< The schedule after the warm-up.

  /// \throws std::invalid_argument for warmup_steps <= 0.
  LinearWarmup(std::int64_t steps, Schedule after) : warmup_steps(steps), inner(std::move(after)) {
    detail::check_positive("LinearWarmup", "warmup_steps", warmup_steps);
  }
  /// \brief The rate at `step` (>= 0).
  auto operator()(std::int64_t step) const {
    detail::check_non_negative("LinearWarmup", "step", step);
    using Scalar = decltype(inner(std::int64_t(0)));
    if (step < warmup_steps) return inner(0) * Scalar(double(step + 1) / double(warmup_steps));
    return inner(step - warmup_steps);
  }
};

/// \brief Sets `optimizer`'s learning rate to `schedule(step)`; call it before each update.
///
/// \code
/// dynrnn::Adam<float> adam(1e-3f);
/// dynrnn::LinearWarmup warm(100, dynrnn::CosineDecay<float>(1e-3f, 10000));
/// for (std::int64_t step = start; step < steps; ++step) {
///   dynrnn::set_learning_rate(adam, warm, step);
///   // forward, backward, adam.apply(...)
/// }
/// \endcode
template <class Optimizer, class Schedule>
void set_learning_rate(Optimizer& optimizer, const Schedule& schedule, std::int64_t step) {
  optimizer.set_learning_rate(schedule(step));
}

}  // namespace dynrnn
