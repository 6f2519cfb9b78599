// dynrnn: the GRU cell in both of its variants, forward and backward through time over a
// packed batch.
//
// Dimensions: T time, B batch, I input features, H hidden units,
//             P valid (row, step) pairs = sum of lengths (see packed_schedule.hpp).
//
// Both variants compute a reset gate r, an update gate u and a candidate c, then
//
//   h_t = u ⊙ h_{t-1} + (1 - u) ⊙ c                        (output = h_t)
//
// and differ in where the reset gate meets the candidate's recurrent product:
//
//   GRUVariant::reset_before  (TensorFlow 1.x GRUCell)
//     [r u] = sigmoid(x_t · W_x[r u] + h_{t-1} · W_h[r u] + bias[r u])
//     c     = tanh(x_t · W_x[c] + (r ⊙ h_{t-1}) · W_h[c] + bias[c])
//
//   GRUVariant::reset_after   (PyTorch nn.GRU, cuDNN, Keras reset_after=True)
//     [r u] = sigmoid(x_t · W_x[r u] + bias[r u] + h_{t-1} · W_h[r u] + recurrent_bias[r u])
//     c     = tanh(x_t · W_x[c] + bias[c] + r ⊙ (h_{t-1} · W_h[c] + recurrent_bias[c]))
//
// Weight layout: one kernel, columns in three H-wide blocks r, u, c.
//
//                  0      H      2H     3H
//                  +------+------+------+
//    rows 0..I-1   |  r   |  u   |  c   |   input weights W_x
//    rows I..I+H-1 |  r   |  u   |  c   |   recurrent weights W_h
//                  +------+------+------+
//    bias (3H)             r, u, c
//    recurrent_bias (3H)   r, u, c; reset_after only (empty for reset_before)
//
// TensorFlow's gates/kernel (I+H, 2H) and candidate/kernel (I+H, H) are the kernel's
// first two blocks and its last one. PyTorch names the gates r, z(= u), n(= c) in the same
// order, and stores weight_ih = W_xᵀ, weight_hh = W_hᵀ, bias_ih = bias and
// bias_hh = recurrent_bias (io/gru_import.hpp converts).
//
// In reset_before the candidate's recurrent product waits for r, so a step makes two
// recurrent products (h_{t-1} · W_h[r u], then (r ⊙ h_{t-1}) · W_h[c]); reset_after makes one.
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

/// \brief Where a GRU applies its reset gate; there is no default, since the two variants
/// compute different functions with the same weights.
enum class GRUVariant {
  reset_before,  ///< TensorFlow 1.x GRUCell: r multiplies h_{t-1} before the product.
  reset_after,   ///< PyTorch, cuDNN, Keras reset_after=True: r multiplies the product.
};

/// \brief "reset_before" or "reset_after".
inline const char* to_string(GRUVariant v) { return v == GRUVariant::reset_before ? "reset_before" : "reset_after"; }

/// \brief Gradients of a GRUCell's parameters, shaped like the parameters.
/// \tparam Scalar element type.
template <class Scalar>
struct GRUGradients {
  Matrix<Scalar> kernel;          ///< (I+H, 3H) dLoss/dkernel.
  Vector<Scalar> bias;            ///< (3H) dLoss/dbias.
  Vector<Scalar> recurrent_bias;  ///< (3H) dLoss/drecurrent_bias for reset_after; empty for reset_before.

  GRUGradients() = default;
  /// \brief Zero gradients for a cell of the given sizes and variant.
  GRUGradients(Index input_size, Index hidden_size, GRUVariant variant)
      : kernel(Matrix<Scalar>::Zero(input_size + hidden_size, 3 * hidden_size)),
        bias(Vector<Scalar>::Zero(3 * hidden_size)),
        recurrent_bias(Vector<Scalar>::Zero(variant == GRUVariant::reset_after ? 3 * hidden_size : 0)) {}

  /// \brief Sets every gradient to zero, keeping the shapes.
  void setZero() {
    kernel.setZero();
    bias.setZero();
    recurrent_bias.setZero();
  }
};

/// \brief What GRUCell::forward keeps for GRUCell::backward, packed (`P` rows, step after
/// step, longest sequence first within a step). Reusing it for a batch of the same shape
/// allocates nothing.
/// \tparam Scalar element type.
template <class Scalar>
struct GRUCache {
  ReusableMatrix<Scalar> x;        ///< (P, I)  inputs x_t, filled by dynamic_rnn before forward().
  ReusableMatrix<Scalar> h_prev;   ///< (P, H)  h_{t-1} fed into each step (the initial h at step 0); 0 rows after an inference pass.
  ReusableMatrix<Scalar> gates;    ///< (P, 3H) r, u, c after their nonlinearities.
  ReusableMatrix<Scalar> h;        ///< (P, H)  h_t, the outputs.
  ReusableMatrix<Scalar> reset_h;  ///< (P, H)  reset_before: r ⊙ h_{t-1}, the candidate's recurrent input.
  ReusableMatrix<Scalar> hc;       ///< (P, H)  reset_after: h_{t-1} · W_h[c] + recurrent_bias[c].
  Matrix<Scalar> hh;       ///< (B, 3H) reset_after scratch: one step's h_{t-1} · W_h.
  MixedRightGemm<Scalar> input_gemm;      ///< W_x, packed once per pass for the input projection.
  MixedRightGemm<Scalar> recurrent_gemm;  ///< W_h[r u] (reset_before) or W_h (reset_after).
  MixedRightGemm<Scalar> candidate_gemm;  ///< reset_before: W_h[c].
};

/// \brief Scratch space of GRUCell::backward, kept between calls so that they allocate nothing.
/// \tparam Scalar element type.
template <class Scalar>
struct GRUBackwardWorkspace {
  ReusableMatrix<Scalar> dgates;    ///< (P, 3H) dLoss/d gate pre-activations on the input side.
  ReusableMatrix<Scalar> dgates_h;  ///< (P, 3H) reset_after: dLoss/d(h_{t-1} · W_h + recurrent_bias).
  Matrix<Scalar> d_reset_h; ///< (B, H)  reset_before scratch: one step's dLoss/d(r ⊙ h_{t-1}).
  MixedRightGemm<Scalar> recurrent_gemm;  ///< W_h[r u]ᵀ (reset_before) or W_hᵀ (reset_after).
  MixedRightGemm<Scalar> candidate_gemm;  ///< reset_before: W_h[c]ᵀ.
  MixedWeightGemm<Scalar> weight_gemm;    ///< Weight gradients after the loop.
  MixedRightGemm<Scalar> input_gemm;      ///< W_xᵀ, packed once per pass for dgates · W_xᵀ after the loop.
};

/// \brief Gated recurrent unit, in TensorFlow 1.x's (reset_before) or PyTorch's (reset_after) form.
///
/// \tparam Scalar `float` or `double`.
///
/// \code
/// dynrnn::GRUCell<float> cell(/*input_size=*/8, /*hidden_size=*/32, dynrnn::GRUVariant::reset_after);
/// auto fwd = dynrnn::dynamic_rnn(cell, x, lengths);   // x: Tensor3<float> [T, B, 8]
/// \endcode
template <class Scalar_>
class GRUCell : public PrecisionSetting<Scalar_> {
 public:
  using Scalar = Scalar_;                                  ///< Element type.
  using State = HiddenState<Scalar>;                       ///< Recurrent state type.
  using Cache = GRUCache<Scalar>;                          ///< Forward cache type.
  using Gradients = GRUGradients<Scalar>;                  ///< Parameter gradient type.
  using BackwardWorkspace = GRUBackwardWorkspace<Scalar>;  ///< Scratch of backward().
  using PrecisionSetting<Scalar_>::precision;      ///< \copydoc PrecisionSetting::precision()
  using PrecisionSetting<Scalar_>::set_precision;  ///< \copydoc PrecisionSetting::set_precision()

  /// \brief Seed used by the constructor's initialisation, so that a program is reproducible.
  static constexpr std::uint64_t default_seed = 0x5eed;

  /// \brief Creates a cell initialised as reset_parameters() describes, from Rng(default_seed).
  /// \param input_size  I, features per step (> 0).
  /// \param hidden_size H, hidden units (> 0).
  /// \param variant     where the reset gate applies (no default: the variants differ).
  /// \throws std::invalid_argument when a size is not positive.
  GRUCell(Index input_size, Index hidden_size, GRUVariant variant)
      : input_size_(input_size), hidden_size_(hidden_size), variant_(variant) {
    detail::check_positive("GRUCell", "input_size", input_size);
    detail::check_positive("GRUCell", "hidden_size", hidden_size);
    kernel_.resize(input_size + hidden_size, 3 * hidden_size);
    bias_.resize(3 * hidden_size);
    recurrent_bias_.resize(variant == GRUVariant::reset_after ? 3 * hidden_size : 0);
    Rng rng(default_seed);
    reset_parameters(rng);
  }

  /// \brief Redraws the weights as TensorFlow 1.x's GRUCell does: the gate columns [r u]
  /// Glorot-uniform with limit sqrt(6 / (I + H + 2H)), the candidate columns with
  /// sqrt(6 / (I + H + H)); bias 1 for r and u in reset_before (TensorFlow's default, which
  /// starts with the reset gate open), 0 elsewhere; recurrent_bias 0.
  void reset_parameters(Rng& rng) {
    const Index H = hidden_size_, rows = kernel_.rows();
    auto gates = kernel_.leftCols(2 * H);
    auto candidate = kernel_.rightCols(H);
    fill_uniform(gates, rng, std::sqrt(6.0 / double(rows + 2 * H)));
    fill_uniform(candidate, rng, std::sqrt(6.0 / double(rows + H)));
    bias_.setZero();
    if (variant_ == GRUVariant::reset_before) bias_.head(2 * H).setOnes();
    recurrent_bias_.setZero();
  }

  Index input_size() const { return input_size_; }    ///< I.
  Index hidden_size() const { return hidden_size_; }  ///< H.
  Index output_size() const { return hidden_size_; }  ///< Width of the outputs, H.
  GRUVariant variant() const { return variant_; }     ///< Where the reset gate applies.

  /// \brief The fused weights, `(I+H, 3H)`; see the layout diagram at the top of this header.
  Matrix<Scalar>& kernel() { return kernel_; }
  const Matrix<Scalar>& kernel() const { return kernel_; }  ///< \copydoc kernel()
  /// \brief The input-side bias, `(3H)`, gates r, u, c.
  Vector<Scalar>& bias() { return bias_; }
  const Vector<Scalar>& bias() const { return bias_; }  ///< \copydoc bias()
  /// \brief The recurrent-side bias, `(3H)`, for reset_after; empty for reset_before.
  Vector<Scalar>& recurrent_bias() { return recurrent_bias_; }
  const Vector<Scalar>& recurrent_bias() const { return recurrent_bias_; }  ///< \copydoc recurrent_bias()

  /// \brief Calls `f(name, parameter)` for "kernel", "bias" and, for reset_after,
  /// "recurrent_bias"; checkpoints use this.
  template <class F>
  void for_each_parameter(F&& f) {
    f("kernel", kernel_);
    f("bias", bias_);
    if (variant_ == GRUVariant::reset_after) f("recurrent_bias", recurrent_bias_);
  }
  /// \brief The cell's kind, sizes and variant, e.g.
  /// "GRUCell(input_size=2, hidden_size=64, variant=reset_after)".
  std::string description() const {
    return "GRUCell(input_size=" + std::to_string(input_size_) + ", hidden_size=" + std::to_string(hidden_size_) +
           ", variant=" + to_string(variant_) + ")";
  }

  /// \brief Zero gradients shaped like this cell's parameters.
  Gradients make_gradients() const { return Gradients(input_size_, hidden_size_, variant_); }
  /// \brief The zero state for `batch` rows.
  State zero_state(Index batch) const { return State::zeros(batch, hidden_size_); }
  /// \brief Throws std::invalid_argument unless `s` is a state of this cell for `batch` rows.
  void check_state(const char* function, const char* argument, const State& s, Index batch) const {
    s.check(function, argument, batch, hidden_size_);
  }

  /// \brief Throws std::invalid_argument unless the parameters still have their constructed shapes.
  void check_parameters(const char* function) const {
    check_like_parameters(function, "cell.kernel()", kernel_, "cell.bias()", bias_, "cell.recurrent_bias()",
                          recurrent_bias_);
  }
  /// \brief Throws std::invalid_argument unless `g` is shaped like this cell's parameters.
  void check_gradients(const char* function, const Gradients& g) const {
    check_like_parameters(function, "grads.kernel", g.kernel, "grads.bias", g.bias, "grads.recurrent_bias",
                          g.recurrent_bias);
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
    constexpr const char* fn = "GRUCell::forward";
    detail::check_forward_arguments(fn, *this, s, s0, cache.x);
    detail::check_forward_mode(fn, mode);
    const bool after = variant_ == GRUVariant::reset_after;
    cache.gates.resize(P, 3 * H);
    cache.h.resize(P, H);
    cache.reset_h.resize(after ? 0 : P, H);
    cache.hc.resize(after ? P : 0, H);
    cache.hh.resize(after ? s.batch : 0, 3 * H);

    // Input projection for every valid (row, step) pair at once, the bias added as it is written.
    this->observe_int8(cache.x);
    const Index rows = s.steps > 0 ? s.active[0] : 0;
    detail::ForwardShares<Scalar> shares;  // ends the shares of `packing` when the pass ends
    pack_products(cache.input_gemm, cache.recurrent_gemm, cache.candidate_gemm, rows, packing, shares);
    cache.input_gemm(cache.gates, cache.x, Scalar(1), Scalar(0), bias_.data());

    const detail::LoopTeam team = detail::loop_team<Scalar>(rows, double(H) * double(3 * H));
    detail::start_h_prev(s, detail::keeps_for_backward(mode, precision()), s0.h, cache.h_prev);
    detail::for_each_step(s, team, /*reverse=*/false, [&](Index t, Index o, Index r0, Index r1) {
      const Index n = r1 - r0;
      const auto h_prev = detail::step_h_prev(s, t, r0, r1, s0.h, cache.h, cache.h_prev);
      auto gates = cache.gates.middleRows(o + r0, n);
      if (after) {
        auto hh = cache.hh.middleRows(r0, n);
        cache.recurrent_gemm.rows(hh, h_prev, Scalar(1), Scalar(0), r0);
        for (Index r = 0; r < n; ++r) {
          Scalar* g = gates.row(r).data();
          const Scalar* a = hh.row(r).data();
          const Scalar* rb = recurrent_bias_.data();
          Array rg(g, H), u(g + H, H), c(g + 2 * H, H), hc(cache.hc.row(o + r0 + r).data(), H);
          rg = (rg + ConstArray(a, H) + ConstArray(rb, H)).logistic();
          u = (u + ConstArray(a + H, H) + ConstArray(rb + H, H)).logistic();
          hc = ConstArray(a + 2 * H, H) + ConstArray(rb + 2 * H, H);
          c = (c + rg * hc).tanh();
        }
      } else {
        cache.recurrent_gemm.rows(gates.leftCols(2 * H), h_prev, Scalar(1), Scalar(1), r0);
        auto reset_h = cache.reset_h.middleRows(o + r0, n);
        for (Index r = 0; r < n; ++r) {
          Scalar* g = gates.row(r).data();
          Array rg(g, H), u(g + H, H);
          rg = rg.logistic();
          u = u.logistic();
          Array(reset_h.row(r).data(), H) = rg * ConstArray(h_prev.row(r).data(), H);
        }
        cache.candidate_gemm.rows(gates.rightCols(H), reset_h, Scalar(1), Scalar(1), r0);
        gates.rightCols(H) = gates.rightCols(H).array().tanh().matrix();
      }
      // h_t = u ⊙ h_{t-1} + (1 - u) ⊙ c = c + u ⊙ (h_{t-1} - c)
      const auto u = gates.middleCols(H, H).array();
      const auto c = gates.rightCols(H).array();
      cache.h.middleRows(o + r0, n).array() = c + u * (h_prev.array() - c);
      detail::feed_next_step(s, t, r0, r1, cache.h, cache.h_prev);
    });
    detail::gather_final(s, cache.h, s0.h, final.h);
  }

  /// \brief Packs the weights of forward()'s products as every pass packs its own: W_x into
  /// `packing.input`, W_h into `packing.recurrent` (reset_after), or its r and u columns
  /// there and its candidate columns into `packing.extra` (reset_before), in precision()
  /// (with the int8 bounds). FrozenCell packs them once so.
  void pack_forward(ForwardPacking<Scalar>& packing) const {
    detail::ForwardShares<Scalar> none;
    pack_products(packing.input, packing.recurrent, packing.extra, 0, nullptr, none);
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
    constexpr const char* fn = "GRUCell::backward";
    detail::check_backward_arguments(fn, *this, s, cache.h, cache.x, dh, dstate, grads);
    detail::check_h_prev(fn, cache.h_prev, P, H);
    const bool after = variant_ == GRUVariant::reset_after;
    detail::check_shape(fn, after ? "cache.hc" : "cache.reset_h", after ? cache.hc : cache.reset_h, P, H);
    ws.dgates.resize(P, 3 * H);
    ws.dgates_h.resize(after ? P : 0, 3 * H);
    ws.d_reset_h.resize(after ? 0 : s.batch, H);
    // dstate.h carries dLoss/dh_t of each sorted row back through time; a row joins the
    // recursion at its last step, carrying its final-state gradient.
    auto& dh_next = dstate.h;
    const Index rows = s.steps > 0 ? s.active[0] : 0;
    const detail::LoopTeam team = detail::loop_team<Scalar>(rows, double(H) * double(3 * H));
    const auto W_h = kernel_.bottomRows(H);  // (H, 3H)
    if (after) {
      ws.recurrent_gemm.pack(W_h, Op::T, precision(), rows);
    } else {
      ws.recurrent_gemm.pack(W_h.leftCols(2 * H), Op::T, precision(), rows);
      ws.candidate_gemm.pack(W_h.rightCols(H), Op::T, precision(), rows);
    }

    detail::for_each_step(s, team, /*reverse=*/true, [&](Index, Index o, Index r0, Index r1) {
      const Index n = r1 - r0;
      for (Index r = r0; r < r1; ++r) {
        const Scalar* g = cache.gates.row(o + r).data();
        const ConstArray rg(g, H), u(g + H, H), c(g + 2 * H, H), h_prev(cache.h_prev.row(o + r).data(), H);
        Array dh_t(dh_next.row(r).data(), H);  // becomes the total, then dLoss/dh_{t-1}'s direct part
        Scalar* dg = ws.dgates.row(o + r).data();
        Array dr(dg, H), du(dg + H, H), dc(dg + 2 * H, H);

        dh_t += ConstArray(dh.row(o + r).data(), H);
        dc = dh_t * (Scalar(1) - u) * (Scalar(1) - c.square());
        du = dh_t * (h_prev - c) * u * (Scalar(1) - u);
        if (after) {
          const ConstArray hc(cache.hc.row(o + r).data(), H);
          dr = dc * hc * rg * (Scalar(1) - rg);
          Scalar* dgh = ws.dgates_h.row(o + r).data();
          Array(dgh, H) = dr;
          Array(dgh + H, H) = du;
          Array(dgh + 2 * H, H) = dc * rg;
        }
        dh_t *= u;  // h_t = u ⊙ h_{t-1} + ...
      }
      if (after) {
        // dh flows into h_{t-1} through W_h.
        ws.recurrent_gemm.rows(dh_next.middleRows(r0, n), ws.dgates_h.middleRows(o + r0, n), Scalar(1), Scalar(1),
                               r0);
        return;
      }
      // reset_before: through the candidate's product into r ⊙ h_{t-1}, then through W_h[r u].
      auto dgates = ws.dgates.middleRows(o + r0, n);
      auto d_reset_h = ws.d_reset_h.middleRows(r0, n);
      ws.candidate_gemm.rows(d_reset_h, dgates.rightCols(H), Scalar(1), Scalar(0), r0);
      for (Index r = 0; r < n; ++r) {
        const auto rg = cache.gates.row(o + r0 + r).head(H).array();
        const auto h_prev = cache.h_prev.row(o + r0 + r).array();
        const auto drh = d_reset_h.row(r).array();
        dgates.row(r).head(H).array() = drh * h_prev * rg * (Scalar(1) - rg);
        dh_next.row(r0 + r).array() += drh * rg;
      }
      ws.recurrent_gemm.rows(dh_next.middleRows(r0, n), dgates.leftCols(2 * H), Scalar(1), Scalar(1), r0);
    });

    // Weight gradients: one GEMM per block over all valid (row, step) pairs.
    auto& gemm = ws.weight_gemm;
    gemm(grads.kernel.topRows(input_size_), cache.x, ws.dgates, Scalar(1), Scalar(1), precision());
    auto dW_h = grads.kernel.bottomRows(H);
    if (after) {
      gemm(dW_h, cache.h_prev, ws.dgates_h, Scalar(1), Scalar(1), precision());
      detail::add_column_sums<Scalar>(ws.dgates_h, grads.recurrent_bias);
    } else {
      gemm(dW_h.leftCols(2 * H), cache.h_prev, ws.dgates.leftCols(2 * H), Scalar(1), Scalar(1), precision());
      gemm(dW_h.rightCols(H), cache.reset_h, ws.dgates.rightCols(H), Scalar(1), Scalar(1), precision());
    }
    detail::add_column_sums<Scalar>(ws.dgates, grads.bias);
    if (dx == nullptr) return;
    dx->resize(P, input_size_);
    ws.input_gemm.pack(kernel_.topRows(input_size_), Op::T, precision());  // W_xᵀ
    ws.input_gemm(*dx, ws.dgates);
  }

 private:
  // Packs the forward products' weights into input, recurrent and candidate (room for
  // `loop_rows` rows in the loop's products), or makes them share `packing`'s for as long
  // as `shares` lasts. In int8, h_{t-1} and r ⊙ h_{t-1} are taken to lie in [-1, 1].
  void pack_products(MixedRightGemm<Scalar>& input, MixedRightGemm<Scalar>& recurrent,
                     MixedRightGemm<Scalar>& candidate, Index loop_rows, const ForwardPacking<Scalar>* packing,
                     detail::ForwardShares<Scalar>& shares) const {
    const Index H = hidden_size_;
    shares.pack(input, packing ? &packing->input : nullptr, kernel_.topRows(input_size_), Op::N, precision(), 0,
                this->input_bound_);  // W_x, (I, 3H)
    const auto W_h = kernel_.bottomRows(H);  // (H, 3H)
    const MixedRightGemm<Scalar>* packed_recurrent = packing ? &packing->recurrent : nullptr;
    if (variant_ == GRUVariant::reset_after) {
      shares.pack(recurrent, packed_recurrent, W_h, Op::N, precision(), loop_rows);
    } else {
      shares.pack(recurrent, packed_recurrent, W_h.leftCols(2 * H), Op::N, precision(), loop_rows);
      shares.pack(candidate, packing ? &packing->extra : nullptr, W_h.rightCols(H), Op::N, precision(), loop_rows);
    }
  }

  using Array = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;  // one gate of one row
  using ConstArray = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;

  void check_like_parameters(const char* function, const char* kernel_name, const Matrix<Scalar>& kernel,
                             const char* bias_name, const Vector<Scalar>& bias, const char* recurrent_name,
                             const Vector<Scalar>& recurrent_bias) const {
    const Index H = hidden_size_;
    detail::check_shape(function, kernel_name, kernel, input_size_ + H, 3 * H);
    detail::check_shape(function, bias_name, bias, 3 * H, 1);
    detail::check_shape(function, recurrent_name, recurrent_bias, variant_ == GRUVariant::reset_after ? 3 * H : 0, 1);
  }

  Index input_size_;
  Index hidden_size_;
  GRUVariant variant_;
  Matrix<Scalar> kernel_;          // (I+H, 3H)
  Vector<Scalar> bias_;            // (3H)
  Vector<Scalar> recurrent_bias_;  // (3H) reset_after, (0) reset_before
};

/// \brief Visits each (parameter, gradient) pair of a GRUCell; optimisers use this.
template <class Scalar, class F>
void visit_parameters(GRUCell<Scalar>& cell, const GRUGradients<Scalar>& g, F&& f) {
  f(cell.kernel(), g.kernel);
  f(cell.bias(), g.bias);
  if (cell.variant() == GRUVariant::reset_after) f(cell.recurrent_bias(), g.recurrent_bias);
}

/// \brief Calls f(gradient) for each parameter gradient of a GRUCell (empty ones included);
/// clip_by_global_norm() and clip_by_value() use this.
template <class Scalar, class F>
void for_each_gradient(GRUGradients<Scalar>& g, F&& f) {
  f(g.kernel);
  f(g.bias);
  f(g.recurrent_bias);
}

}  // namespace dynrnn
