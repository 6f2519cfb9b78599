// dynrnn: the vanilla (Elman) RNN cell, forward and backward through time over a packed batch.
//
// Dimensions: T time, B batch, I input features, H hidden units,
//             P valid (row, step) pairs = sum of lengths (see packed_schedule.hpp).
//
// The cell is TensorFlow 1.x's BasicRNNCell, and PyTorch's nn.RNN with one bias:
//
//   h_t = act([x_t, h_{t-1}] · kernel + bias)      act = tanh or relu; output = h_t
//
// Weight layout, identical to TensorFlow's `kernel` and `bias`:
//
//    rows 0..I-1     W_x   (I, H)
//    rows I..I+H-1   W_h   (H, H)
//    bias            (H)
//
// PyTorch's weight_ih (H, I) and weight_hh (H, H) are W_xᵀ and W_hᵀ, and its two biases
// add up to this one (io/rnn_import.hpp converts).
#pragma once

#include "../core/check.hpp"
#include "../core/gemm.hpp"
#include "../core/random.hpp"
#include "../core/reusable_matrix.hpp"
#include "../core/types.hpp"
#include "../precision/mixed_gemm.hpp"
#include "../rnn/packed_schedule.hpp"
#include "../rnn/time_loop.hpp"
#include "hidden_state.hpp"

#include <cmath>
#include <cstdint>
#include <string>

namespace dynrnn {

/// \brief The nonlinearity of an RNNCell.
enum class RNNActivation {
  tanh,  ///< tanh, the default of TensorFlow and PyTorch
  relu,  ///< max(0, ·); its derivative at 0 is taken as 0, as PyTorch does
};

/// \brief "tanh" or "relu".
inline const char* to_string(RNNActivation a) { return a == RNNActivation::tanh ? "tanh" : "relu"; }

/// \brief Gradients of an RNNCell's parameters, shaped like the parameters.
/// \tparam Scalar element type.
template <class Scalar>
struct RNNGradients {
  Matrix<Scalar> kernel;  ///< (I+H, H) dLoss/dkernel.
  Vector<Scalar> bias;    ///< (H) dLoss/dbias.

  RNNGradients() = default;
  /// \brief Zero gradients for a cell of the given sizes.
  RNNGradients(Index input_size, Index hidden_size)
      : kernel(Matrix<Scalar>::Zero(input_size + hidden_size, hidden_size)), bias(Vector<Scalar>::Zero(hidden_size)) {}

  /// \brief Sets every gradient to zero, keeping the shapes.
  void setZero() {
    kernel.setZero();
    bias.setZero();
  }
};

/// \brief What RNNCell::forward keeps for RNNCell::backward, packed (`P` rows, step after
/// step, longest sequence first within a step). Reusing it for a batch of the same shape
/// allocates nothing.
/// \tparam Scalar element type.
template <class Scalar>
struct RNNCache {
  ReusableMatrix<Scalar> x;       ///< (P, I) inputs x_t, filled by dynamic_rnn before forward().
  ReusableMatrix<Scalar> h_prev;  ///< (P, H) h_{t-1} fed into each step (the initial h at step 0); 0 rows after an inference pass.
  ReusableMatrix<Scalar> h;       ///< (P, H) h_t, the outputs.
  MixedRightGemm<Scalar> input_gemm;      ///< W_x, packed once per pass for the input projection.
  MixedRightGemm<Scalar> recurrent_gemm;  ///< W_h, packed once per pass.
};

/// \brief Scratch space of RNNCell::backward, kept between calls so that they allocate nothing.
/// \tparam Scalar element type.
template <class Scalar>
struct RNNBackwardWorkspace {
  ReusableMatrix<Scalar> d_pre;                    ///< (P, H) dLoss/d pre-activation.
  MixedRightGemm<Scalar> recurrent_gemm;  ///< W_hᵀ, packed once per pass.
  MixedWeightGemm<Scalar> weight_gemm;    ///< [x, h_prev]ᵀ · d_pre after the loop.
  MixedRightGemm<Scalar> input_gemm;      ///< W_xᵀ, packed once per pass for d_pre · W_xᵀ after the loop.
};

/// \brief Vanilla RNN cell, `h_t = act([x_t, h_{t-1}] · kernel + bias)`, as TensorFlow 1.x's
/// BasicRNNCell (tanh) or PyTorch's nn.RNN (tanh or relu).
///
/// \tparam Scalar `float` or `double`.
///
/// \code
/// dynrnn::RNNCell<float> cell(/*input_size=*/8, /*hidden_size=*/32, dynrnn::RNNActivation::relu);
/// auto fwd = dynrnn::dynamic_rnn(cell, x, lengths);   // x: Tensor3<float> [T, B, 8]
/// \endcode
template <class Scalar_>
class RNNCell : public PrecisionSetting<Scalar_> {
 public:
  using Scalar = Scalar_;                                   ///< Element type.
  using State = HiddenState<Scalar>;                        ///< Recurrent state type.
  using Cache = RNNCache<Scalar>;                           ///< Forward cache type.
  using Gradients = RNNGradients<Scalar>;                   ///< Parameter gradient type.
  using BackwardWorkspace = RNNBackwardWorkspace<Scalar>;   ///< Scratch of backward().
  using PrecisionSetting<Scalar_>::precision;      ///< \copydoc PrecisionSetting::precision()
  using PrecisionSetting<Scalar_>::set_precision;  ///< \copydoc PrecisionSetting::set_precision()

  /// \brief Seed used by the constructor's initialisation, so that a program is reproducible.
  static constexpr std::uint64_t default_seed = 0x5eed;

  /// \brief Creates a cell with a Glorot-uniform kernel drawn from Rng(default_seed) and zero
  /// bias (TensorFlow's defaults). Call reset_parameters() to draw other weights.
  /// \param input_size  I, features per step (> 0).
  /// \param hidden_size H, hidden units (> 0).
  /// \param activation  tanh (default) or relu.
  /// \throws std::invalid_argument when a size is not positive.
  RNNCell(Index input_size, Index hidden_size, RNNActivation activation = RNNActivation::tanh)
      : input_size_(input_size), hidden_size_(hidden_size), activation_(activation) {
    detail::check_positive("RNNCell", "input_size", input_size);
    detail::check_positive("RNNCell", "hidden_size", hidden_size);
    kernel_.resize(input_size + hidden_size, hidden_size);
    bias_.resize(hidden_size);
    Rng rng(default_seed);
    reset_parameters(rng);
  }

  /// \brief Redraws the kernel Glorot-uniform, limit sqrt(6 / (I + H + H)), and zeroes the bias.
  void reset_parameters(Rng& rng) {
    fill_uniform(kernel_, rng, std::sqrt(6.0 / double(kernel_.rows() + kernel_.cols())));
    bias_.setZero();
  }

  Index input_size() const { return input_size_; }          ///< I.
  Index hidden_size() const { return hidden_size_; }        ///< H.
  Index output_size() const { return hidden_size_; }        ///< Width of the outputs, H.
  RNNActivation activation() const { return activation_; }  ///< tanh or relu.

  /// \brief The fused weights `[W_x; W_h]`, `(I+H, H)`.
  Matrix<Scalar>& kernel() { return kernel_; }
  const Matrix<Scalar>& kernel() const { return kernel_; }  ///< \copydoc kernel()
  /// \brief The bias, `(H)`.
  Vector<Scalar>& bias() { return bias_; }
  const Vector<Scalar>& bias() const { return bias_; }  ///< \copydoc bias()

  /// \brief Calls `f(name, parameter)` for "kernel" and "bias"; checkpoints use this.
  template <class F>
  void for_each_parameter(F&& f) {
    f("kernel", kernel_);
    f("bias", bias_);
  }
  /// \brief The cell's kind and sizes, e.g. "RNNCell(input_size=2, hidden_size=64, activation=tanh)";
  /// checkpoints refuse to load into a cell of another description.
  std::string description() const {
    return "RNNCell(input_size=" + std::to_string(input_size_) + ", hidden_size=" + std::to_string(hidden_size_) +
           ", activation=" + to_string(activation_) + ")";
  }

  /// \brief Zero gradients shaped like this cell's parameters.
  Gradients make_gradients() const { return Gradients(input_size_, hidden_size_); }
  /// \brief The zero state for `batch` rows.
  State zero_state(Index batch) const { return State::zeros(batch, hidden_size_); }
  /// \brief Throws std::invalid_argument unless `s` is a state of this cell for `batch` rows.
  void check_state(const char* function, const char* argument, const State& s, Index batch) const {
    s.check(function, argument, batch, hidden_size_);
  }

  /// \brief Throws std::invalid_argument unless the parameters still have their constructed shapes.
  void check_parameters(const char* function) const {
    detail::check_shape(function, "cell.kernel()", kernel_, input_size_ + hidden_size_, hidden_size_);
    detail::check_shape(function, "cell.bias()", bias_, hidden_size_, 1);
  }
  /// \brief Throws std::invalid_argument unless `g` is shaped like this cell's parameters.
  void check_gradients(const char* function, const Gradients& g) const {
    detail::check_shape(function, "grads.kernel", g.kernel, input_size_ + hidden_size_, hidden_size_);
    detail::check_shape(function, "grads.bias", g.bias, hidden_size_, 1);
  }

  /// \brief Runs the cell over a packed batch. Used by dynamic_rnn; call that instead.
  /// \param s      the batch's packed schedule.
  /// \param s0     initial state, rows in sorted order, (B, H).
  /// \param cache  holds the packed inputs `cache.x` (P, I); receives everything backward() needs.
  /// \param final  receives the state after each row's last valid step, sorted order.
  /// \param mode   ForwardMode::inference keeps no h_{t-1} for backward().
  /// \param packing null, or this cell's weights packed by pack_forward() in its current
  ///               precision, which the products then read instead of packing their own
  ///               (FrozenCell); the cache does not read it after the call.
  /// \throws std::invalid_argument when `s0` or `cache.x` does not fit the schedule and cell.
  void forward(const PackedSchedule& s, const State& s0, Cache& cache, State& final,
               ForwardMode mode = ForwardMode::training, const ForwardPacking<Scalar>* packing = nullptr) const {
    const Index H = hidden_size_, P = s.total();
    constexpr const char* fn = "RNNCell::forward";
    detail::check_forward_arguments(fn, *this, s, s0, cache.x);
    detail::check_forward_mode(fn, mode);
    cache.h.resize(P, H);

    // h holds the pre-activations until its step runs: bias + x·W_x for all steps at once.
    const Index rows = s.steps > 0 ? s.active[0] : 0;
    detail::ForwardShares<Scalar> shares;  // ends the shares of `packing` when the pass ends
    pack_products(cache.input_gemm, cache.recurrent_gemm, rows, packing, shares);
    cache.input_gemm(cache.h, cache.x, Scalar(1), Scalar(0), bias_.data());

    const detail::LoopTeam team = detail::loop_team<Scalar>(rows, double(H) * double(H));
    const bool relu = activation_ == RNNActivation::relu;
    detail::start_h_prev(s, detail::keeps_for_backward(mode, precision()), s0.h, cache.h_prev);
    detail::for_each_step(s, team, /*reverse=*/false, [&](Index t, Index o, Index r0, Index r1) {
      auto h = cache.h.middleRows(o + r0, r1 - r0);  // (n, H) pre-activations, then h_t
      cache.recurrent_gemm.rows(h, detail::step_h_prev(s, t, r0, r1, s0.h, cache.h, cache.h_prev), Scalar(1),
                                Scalar(1), r0);
      if (relu)
        h = h.cwiseMax(Scalar(0));
      else
        h = h.array().tanh().matrix();
      detail::feed_next_step(s, t, r0, r1, cache.h, cache.h_prev);
    });
    this->observe_int8(cache.x, relu ? &cache.h : nullptr);
    detail::gather_final(s, cache.h, s0.h, final.h);
  }

  /// \brief Packs the weights of forward()'s products as every pass packs its own: W_x into
  /// `packing.input` and W_h into `packing.recurrent`, in precision()
  /// (with the int8 bounds). FrozenCell packs them once so.
  void pack_forward(ForwardPacking<Scalar>& packing) const {
    detail::ForwardShares<Scalar> none;
    pack_products(packing.input, packing.recurrent, 0, nullptr, none);
  }

  /// \brief The packed outputs of a forward pass, `(P, H)`.
  static const ReusableMatrix<Scalar>& packed_outputs(const Cache& cache) { return cache.h; }
  /// \brief The matrix forward() writes the packed outputs into, sized by forward() itself:
  /// dynamic_rnn may make it a view of the result's outputs (ReusableMatrix::view()).
  static ReusableMatrix<Scalar>& packed_outputs(Cache& cache) { return cache.h; }

  /// \brief Backpropagates through time over a packed batch. Used by dynamic_rnn_backward.
  /// \param s      the schedule forward() ran with.
  /// \param cache  forward()'s cache.
  /// \param dh     (P, H) dLoss/d outputs, packed.
  /// \param dstate in: dLoss/d final state, sorted rows; out: dLoss/d initial state, sorted rows.
  /// \param grads  parameter gradients, added to.
  /// \param dx     receives (P, I) dLoss/d inputs, packed; null when they are not wanted (a
  ///               model's first layer), which skips their product with W_xᵀ.
  /// \param ws     scratch space, reused between calls.
  /// \throws std::invalid_argument when a shape does not fit the schedule and cell.
  void backward(const PackedSchedule& s, const Cache& cache, const ReusableMatrix<Scalar>& dh, State& dstate,
                Gradients& grads, ReusableMatrix<Scalar>* dx, BackwardWorkspace& ws) const {
    const Index H = hidden_size_, P = s.total();
    constexpr const char* fn = "RNNCell::backward";
    detail::check_backward_arguments(fn, *this, s, cache.h, cache.x, dh, dstate, grads);
    detail::check_h_prev(fn, cache.h_prev, P, H);
    ws.d_pre.resize(P, H);
    // dstate.h carries dLoss/dh_t of each sorted row back through time; a row joins the
    // recursion at its last step, carrying its final-state gradient.
    auto& dh_next = dstate.h;
    const Index rows = s.steps > 0 ? s.active[0] : 0;
    const detail::LoopTeam team = detail::loop_team<Scalar>(rows, double(H) * double(H));
    ws.recurrent_gemm.pack(kernel_.bottomRows(H), Op::T, precision(), rows);  // W_hᵀ, (H, H)
    const bool relu = activation_ == RNNActivation::relu;

    detail::for_each_step(s, team, /*reverse=*/true, [&](Index, Index o, Index r0, Index r1) {
      const Index n = r1 - r0;
      const auto h = cache.h.middleRows(o + r0, n).array();
      const auto dh_t = dh_next.middleRows(r0, n).array() + dh.middleRows(o + r0, n).array();
      auto d_pre = ws.d_pre.middleRows(o + r0, n);
      if (relu)
        d_pre = (h > Scalar(0)).select(dh_t, Scalar(0)).matrix();
      else
        d_pre = (dh_t * (Scalar(1) - h.square())).matrix();
      // dh flows into h_{t-1} through W_h.
      ws.recurrent_gemm.rows(dh_next.middleRows(r0, n), d_pre, Scalar(1), Scalar(0), r0);
    });

    // Weight gradients: one GEMM each over all valid (row, step) pairs, and the bias gradient
    // (the column sums), from the same packed slices in float32 (MixedWeightGemm::transposed_pair).
    ws.weight_gemm.transposed_pair(grads.kernel.topRows(input_size_), cache.x, grads.kernel.bottomRows(H),
                                   cache.h_prev, ws.d_pre, Scalar(1), Scalar(1), grads.bias.data(), precision());
    if (dx == nullptr) return;
    dx->resize(P, input_size_);
    ws.input_gemm.pack(kernel_.topRows(input_size_), Op::T, precision());  // W_xᵀ
    ws.input_gemm(*dx, ws.d_pre);
  }

 private:
  // Packs the forward products' weights into input and recurrent (room for `loop_rows` rows
  // in the loop's product), or makes them share `packing`'s for as long as `shares` lasts.
  // In int8, h_{t-1} lies in [-1, 1] under tanh; under relu its bound is calibrated.
  void pack_products(MixedRightGemm<Scalar>& input, MixedRightGemm<Scalar>& recurrent, Index loop_rows,
                     const ForwardPacking<Scalar>* packing, detail::ForwardShares<Scalar>& shares) const {
    const Index H = hidden_size_;
    shares.pack(input, packing ? &packing->input : nullptr, kernel_.topRows(input_size_), Op::N, precision(), 0,
                this->input_bound_);  // W_x, (I, H)
    shares.pack(recurrent, packing ? &packing->recurrent : nullptr, kernel_.bottomRows(H), Op::N, precision(),
                loop_rows, activation_ == RNNActivation::relu ? this->state_bound_ : 1.0f);  // W_h, (H, H)
  }

  Index input_size_;
  Index hidden_size_;
  RNNActivation activation_;
  Matrix<Scalar> kernel_;  // (I+H, H)
  Vector<Scalar> bias_;    // (H)
};

/// \brief Visits each (parameter, gradient) pair of an RNNCell; optimisers use this.
template <class Scalar, class F>
void visit_parameters(RNNCell<Scalar>& cell, const RNNGradients<Scalar>& g, F&& f) {
  f(cell.kernel(), g.kernel);
  f(cell.bias(), g.bias);
}

/// \brief Calls f(gradient) for each parameter gradient of an RNNCell (empty ones included);
/// clip_by_global_norm() and clip_by_value() use this.
template <class Scalar, class F>
void for_each_gradient(RNNGradients<Scalar>& g, F&& f) {
  f(g.kernel);
  f(g.bias);
}

}  // namespace dynrnn
