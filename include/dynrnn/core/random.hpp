// dynrnn: portable random numbers.
//
// std::uniform_real_distribution and friends are implementation-defined, so the
// same seed gives different numbers under libstdc++ and libc++. These helpers
// turn the bits of a fully specified engine (std::mt19937_64) into numbers the
// same way everywhere, which makes initialisation and examples reproducible
// across compilers.
#pragma once

#include "check.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>

namespace dynrnn {

/// \brief The engine used for initialisation and data generation.
using Rng = std::mt19937_64;

/// \brief Uniform number in [0, 1) with 53 random bits.
/// \param rng engine to draw from.
inline double uniform01(Rng& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

/// \brief Uniform number in [lo, hi).
/// \throws std::invalid_argument unless lo <= hi, both finite.
inline double uniform(Rng& rng, double lo, double hi) {
  if (!(std::isfinite(lo) && std::isfinite(hi) && lo <= hi))
    detail::throw_argument("uniform", "hi", "finite and >= lo = " + std::to_string(lo), std::to_string(hi));
  return lo + (hi - lo) * uniform01(rng);
}

/// \brief Uniform integer in [lo, hi). Uses rejection, so it is unbiased.
/// \throws std::invalid_argument unless lo < hi.
inline std::int64_t uniform_int(Rng& rng, std::int64_t lo, std::int64_t hi) {
  if (!(lo < hi)) detail::throw_argument("uniform_int", "hi", "> lo = " + std::to_string(lo), std::to_string(hi));
  const auto span = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
  const std::uint64_t limit = UINT64_MAX - UINT64_MAX % span;
  std::uint64_t r = rng();
  while (r >= limit) r = rng();
  return lo + static_cast<std::int64_t>(r % span);
}

/// \brief Fills an Eigen object with values uniform in [-limit, limit).
/// \throws std::invalid_argument unless limit is finite and >= 0.
template <class Derived>
void fill_uniform(Eigen::DenseBase<Derived>& m, Rng& rng, double limit) {
  if (!(std::isfinite(limit) && limit >= 0))
    detail::throw_argument("fill_uniform", "limit", "finite and >= 0", std::to_string(limit));
  using Scalar = typename Derived::Scalar;
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    for (Eigen::Index c = 0; c < m.cols(); ++c)
      m(r, c) = static_cast<Scalar>(uniform(rng, -limit, limit));
}

}  // namespace dynrnn
