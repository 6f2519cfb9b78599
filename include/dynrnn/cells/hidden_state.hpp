// dynrnn: the recurrent state of cells whose state is their output h (RNNCell, GRUCell).
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"

#include <string>

namespace dynrnn {

/// \brief Recurrent state made of the hidden state alone, `(B, H)`.
/// \tparam Scalar element type.
template <class Scalar>
struct HiddenState {
  Matrix<Scalar> h;  ///< (B, H) hidden state, which is also the cell's output.

  /// \brief A state of zeros for `batch` rows of `hidden` units.
  /// \throws std::invalid_argument when either is negative.
  static HiddenState zeros(Index batch, Index hidden) {
    detail::check_non_negative("HiddenState::zeros", "batch", batch);
    detail::check_non_negative("HiddenState::zeros", "hidden", hidden);
    return {Matrix<Scalar>::Zero(batch, hidden)};
  }

  /// \brief Calls `f(mine, theirs)` for the member matrix of this state and of `other`.
  template <class F>
  void zip(const HiddenState& other, F&& f) {
    f(h, other.h);
  }

  /// \brief Throws std::invalid_argument unless `h` is `(batch, hidden)`.
  void check(const char* function, const char* argument, Index batch, Index hidden) const {
    detail::check_shape(function, (std::string(argument) + ".h").c_str(), h, batch, hidden);
  }
};

}  // namespace dynrnn
