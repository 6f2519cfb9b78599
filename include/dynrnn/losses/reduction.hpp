// dynrnn: how a loss combines its per-sample (or per-step) terms.
#pragma once

namespace dynrnn {

/// \brief How per-sample losses are combined.
enum class Reduction {
  mean,  ///< Average over samples (PyTorch's and Keras' default).
  sum,   ///< Sum over samples (tf.reduce_sum of TF's per-sample loss).
};

}  // namespace dynrnn
