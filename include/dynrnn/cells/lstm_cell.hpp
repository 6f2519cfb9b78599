// dynrnn: the LSTM cell, forward and backward through time over a packed batch.
//
// Dimensions: T time, B batch, I input features, H hidden units,
//             P valid (row, step) pairs = sum of lengths (see packed_schedule.hpp).
//
// The cell is TensorFlow 1.x's LSTMCell without peepholes or projection:
//
//   [i j f o] = [x_t, h_{t-1}] · kernel + bias            (1, 4H) pre-activations
//   c_t = sigmoid(f + forget_bias) ⊙ c_{t-1} + sigmoid(i) ⊙ tanh(j)
//   h_t = sigmoid(o) ⊙ tanh(c_t)                           (output = h_t)
//
// Fused weight layout, identical to TensorFlow's `kernel` and `bias`:
//
//                  0      H      2H     3H     4H
//                  +------+------+------+------+
//    rows 0..I-1   |  i   |  j   |  f   |  o   |   input weights W_x
//    rows I..I+H-1 |  i   |  j   |  f   |  o   |   recurrent weights W_h
//                  +------+------+------+------+
//    bias (4H)     |  i   |  j   |  f   |  o   |
//
// PyTorch orders the gates i, f, g(=j), o and stores W_x, W_h transposed, so
// its weights must be reordered and transposed before they are copied in.
#pragma once

#include "../core/check.hpp"
#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "../core/random.hpp"
#include "../core/types.hpp"
#include "../rnn/packed_schedule.hpp"
#include "../rnn/time_loop.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>

namespace dynrnn {

/// \brief Recurrent state of an LSTM: cell state `c` and hidden state `h`, each `(B, H)`.
/// \tparam Scalar element type.
template <class Scalar>
struct LSTMState {
  Matrix<Scalar> c;  ///< (B, H) cell state.
  Matrix<Scalar> h;  ///< (B, H) hidden state, which is also the cell's output.

  /// \brief A state of zeros for `batch` rows of `hidden` units.
  /// \throws std::invalid_argument when either is negative.
  static LSTMState zeros(Index batch, Index hidden) {
    detail::check_non_negative("LSTMState::zeros", "batch", batch);
    detail::check_non_negative("LSTMState::zeros", "hidden", hidden);
    return {Matrix<Scalar>::Zero(batch, hidden), Matrix<Scalar>::Zero(batch, hidden)};
  }

  /// \brief Calls `f(mine, theirs)` for each member matrix of this state and of `other`,
  /// e.g. to copy or reorder a state member by member without allocating.
  template <class F>
  void zip(const LSTMState& other, F&& f) {
    f(c, other.c);
    f(h, other.h);
  }

  /// \brief Throws std::invalid_argument unless both members are `(batch, hidden)`.
  void check(const char* function, const char* argument, Index batch, Index hidden) const {
    const std::string name(argument);
    detail::check_shape(function, (name + ".c").c_str(), c, batch, hidden);
    detail::check_shape(function, (name + ".h").c_str(), h, batch, hidden);
  }
};

/// \brief Gradients of an LSTMCell's parameters, shaped like the parameters.
/// \tparam Scalar element type.
template <class Scalar>
struct LSTMGradients {
  Matrix<Scalar> kernel;  ///< (I+H, 4H) dLoss/dkernel.
  Vector<Scalar> bias;    ///< (4H) dLoss/dbias.

  LSTMGradients() = default;
  /// \brief Zero gradients for a cell of the given sizes.
  LSTMGradients(Index input_size, Index hidden_size)
      : kernel(Matrix<Scalar>::Zero(input_size + hidden_size, 4 * hidden_size)),
        bias(Vector<Scalar>::Zero(4 * hidden_size)) {}

  /// \brief Sets every gradient to zero, keeping the shapes.
  void setZero() {
    kernel.setZero();
    bias.setZero();
  }
};

/// \brief What LSTMCell::forward keeps for LSTMCell::backward. All packed, `P` rows,
/// step after step; within a step the rows are sorted longest sequence first. Reusing a
/// cache for a batch of the same shape allocates nothing.
/// \tparam Scalar element type.
template <class Scalar>
struct LSTMCache {
  Matrix<Scalar> x;       ///< (P, I)  inputs x_t, filled by dynamic_rnn before forward().
  Matrix<Scalar> h_prev;  ///< (P, H)  h_{t-1} fed into each step (the initial h at step 0).
  Matrix<Scalar> gates;   ///< (P, 4H) gate activations after the nonlinearity:
                          ///<         sigmoid(i), tanh(j), sigmoid(f + forget_bias), sigmoid(o).
  Matrix<Scalar> c;       ///< (P, H)  c_t.
  Matrix<Scalar> tanh_c;  ///< (P, H)  tanh(c_t).
  Matrix<Scalar> h;       ///< (P, H)  h_t, the outputs.
  Matrix<Scalar> c0;      ///< (B, H)  initial c, sorted order.
  Gemm<Scalar> input_gemm;      ///< Packing buffers of the input projection.
  PackedRightGemm<Scalar> recurrent_gemm;  ///< W_h, packed once per pass for h_{t-1} · W_h.
};

/// \brief Scratch space of LSTMCell::backward, kept between calls so that they allocate nothing.
/// \tparam Scalar element type.
template <class Scalar>
struct LSTMBackwardWorkspace {
  Matrix<Scalar> dgates;        ///< (P, 4H) dLoss/d gate pre-activations.
  PackedRightGemm<Scalar> recurrent_gemm;  ///< W_hᵀ, packed once per pass for dgates_t · W_hᵀ.
  Gemm<Scalar> weight_gemm;     ///< [x, h_prev]ᵀ · dgates after the loop.
  Gemm<Scalar> input_gemm;      ///< dgates · W_xᵀ after the loop.
};

/// \brief Long short-term memory cell with TensorFlow 1.x LSTMCell semantics.
///
/// \tparam Scalar `float` or `double`.
///
/// \code
/// dynrnn::LSTMCell<float> cell(/*input_size=*/8, /*hidden_size=*/32);
/// auto fwd = dynrnn::dynamic_rnn(cell, x, lengths);   // x: Tensor3<float> [T, B, 8]
/// \endcode
template <class Scalar_>
class LSTMCell {
 public:
  using Scalar = Scalar_;                     ///< Element type.
  using State = LSTMState<Scalar>;            ///< Recurrent state type.
  using Cache = LSTMCache<Scalar>;            ///< Forward cache type.
  using Gradients = LSTMGradients<Scalar>;    ///< Parameter gradient type.
  using BackwardWorkspace = LSTMBackwardWorkspace<Scalar>;  ///< Scratch of backward().

  /// \brief Seed used by the constructor's initialisation, so that a program is reproducible.
  static constexpr std::uint64_t default_seed = 0x5eed;

  /// \brief Creates a cell with Glorot-uniform kernel (TensorFlow's default initialiser, drawn
  /// from Rng(default_seed)) and zero bias. Call reset_parameters() to draw other weights.
  /// \param input_size I, features per step (> 0).
  /// \param hidden_size H, hidden units (> 0).
  /// \param forget_bias added to the forget gate's pre-activation (TensorFlow's default 1).
  LSTMCell(Index input_size, Index hidden_size, Scalar forget_bias = Scalar(1))
      : input_size_(input_size), hidden_size_(hidden_size), forget_bias_(forget_bias) {
    detail::check_positive("LSTMCell", "input_size", input_size);
    detail::check_positive("LSTMCell", "hidden_size", hidden_size);
    kernel_.resize(input_size + hidden_size, 4 * hidden_size);
    bias_.resize(4 * hidden_size);
    Rng rng(default_seed);
    reset_parameters(rng);
  }

  /// \brief Redraws the kernel Glorot-uniform, limit sqrt(6 / (I + H + 4H)), and zeroes the bias.
  void reset_parameters(Rng& rng) {
    fill_uniform(kernel_, rng, std::sqrt(6.0 / double(kernel_.rows() + kernel_.cols())));
    bias_.setZero();
  }

  Index input_size() const { return input_size_; }    ///< I.
  Index hidden_size() const { return hidden_size_; }  ///< H.
  Index output_size() const { return hidden_size_; }  ///< Width of the outputs, H.
  Scalar forget_bias() const { return forget_bias_; } ///< Constant added to the forget gate.

  /// \brief The fused weights, `(I+H, 4H)`; see the layout diagram at the top of this header.
  Matrix<Scalar>& kernel() { return kernel_; }
  const Matrix<Scalar>& kernel() const { return kernel_; }  ///< \copydoc kernel()
  /// \brief The fused bias, `(4H)`, gates i, j, f, o.
  Vector<Scalar>& bias() { return bias_; }
  const Vector<Scalar>& bias() const { return bias_; }  ///< \copydoc bias()

  /// \brief Calls `f(name, parameter)` for "kernel" and "bias"; checkpoints use this.
  template <class F>
  void for_each_parameter(F&& f) {
    f("kernel", kernel_);
    f("bias", bias_);
  }
  /// \brief The cell's kind and sizes, e.g. "LSTMCell(input_size=2, hidden_size=64)"; checkpoints
  /// store it and refuse to load into a cell of another description.
  std::string description() const {
    return "LSTMCell(input_size=" + std::to_string(input_size_) + ", hidden_size=" + std::to_string(hidden_size_) + ")";
  }

  /// \brief Zero gradients shaped like this cell's parameters.
  Gradients make_gradients() const { return Gradients(input_size_, hidden_size_); }
  /// \brief The zero state for `batch` rows.
  State zero_state(Index batch) const { return State::zeros(batch, hidden_size_); }

  /// \brief Throws std::invalid_argument unless the parameters still have their constructed shapes.
  void check_parameters(const char* function) const {
    check_like_parameters(function, "cell.kernel()", kernel_, "cell.bias()", bias_);
  }
  /// \brief Throws std::invalid_argument unless `g` is shaped like this cell's parameters.
  void check_gradients(const char* function, const Gradients& g) const {
    check_like_parameters(function, "grads.kernel", g.kernel, "grads.bias", g.bias);
  }

  /// \brief Runs the cell over a packed batch. Used by dynamic_rnn; call that instead.
  /// \param s      the batch's packed schedule.
  /// \param s0     initial state, rows in sorted order, (B, H) each.
  /// \param cache  holds the packed inputs `cache.x` (P, I); receives everything backward() needs.
  /// \param final  receives the state after each row's last valid step, sorted order.
  /// \throws std::invalid_argument when `s0` or `cache.x` does not fit the schedule and cell.
  void forward(const PackedSchedule& s, const State& s0, Cache& cache, State& final) const {
    const Index H = hidden_size_, P = s.total();
    check_parameters("LSTMCell::forward");
    s0.check("LSTMCell::forward", "s0", s.batch, H);
    detail::check_shape("LSTMCell::forward", "cache.x", cache.x, P, input_size_);
    cache.c0 = s0.c;
    cache.h_prev.resize(P, H);
    cache.gates.resize(P, 4 * H);
    cache.c.resize(P, H);
    cache.tanh_c.resize(P, H);
    cache.h.resize(P, H);

    // Input projection for every valid (row, step) pair at once, added onto the bias.
    detail::fill_rows(cache.gates, bias_);
    cache.input_gemm(cache.gates, cache.x, Op::N, kernel_.topRows(input_size_), Op::N, Scalar(1), Scalar(1));

    const Index rows = s.steps > 0 ? s.active[0] : 0;
    const int threads = detail::loop_threads(rows, double(H) * double(4 * H));
    cache.recurrent_gemm.pack(kernel_.bottomRows(H), Op::N, rows, threads);  // W_h, (H, 4H)
    detail::seed_first_step(s, s0.h, cache.h_prev);
    detail::for_each_step<Scalar>(s, threads, /*reverse=*/false, [&](Index t, Index o, Index r0, Index r1, int thread) {
      cache.recurrent_gemm.rows(cache.gates.middleRows(o + r0, r1 - r0), cache.h_prev.middleRows(o + r0, r1 - r0),
                                Scalar(1), Scalar(1), thread);
      // c_{t-1} of the continuing rows: the first rows of the previous step's block.
      const Scalar* c_prev = t == 0 ? cache.c0.data() : cache.c.row(s.offset[t - 1]).data();
      for (Index r = r0; r < r1; ++r) {  // one pass over the four gates of each row
        Scalar* g = cache.gates.row(o + r).data();
        Array i(g, H), j(g + H, H), f(g + 2 * H, H), og(g + 3 * H, H);
        Array c(cache.c.row(o + r).data(), H), tc(cache.tanh_c.row(o + r).data(), H);
        i = i.logistic();
        j = j.tanh();
        f = (f + forget_bias_).logistic();
        og = og.logistic();
        c = f * ConstArray(c_prev + r * H, H) + i * j;
        tc = c.tanh();
        Array(cache.h.row(o + r).data(), H) = og * tc;
      }
      detail::feed_next_step(s, t, r0, r1, cache.h, cache.h_prev);
    });

    // A row's final state is its state at its last valid step; rows of length 0 keep s0.
    detail::gather_final(s, cache.c, s0.c, final.c);
    detail::gather_final(s, cache.h, s0.h, final.h);
  }

  /// \brief The packed outputs of a forward pass, `(P, H)`.
  static const Matrix<Scalar>& packed_outputs(const Cache& cache) { return cache.h; }

  /// \brief Backpropagates through time over a packed batch. Used by dynamic_rnn_backward.
  /// \param s      the schedule forward() ran with.
  /// \param cache  forward()'s cache.
  /// \param dh     (P, H) dLoss/d outputs, packed.
  /// \param dstate in: dLoss/d final state, sorted rows; out: dLoss/d initial state, sorted rows.
  /// \param grads  parameter gradients, added to.
  /// \param dx     receives (P, I) dLoss/d inputs, packed.
  /// \param ws     scratch space, reused between calls.
  /// \throws std::invalid_argument when a shape does not fit the schedule and cell.
  void backward(const PackedSchedule& s, const Cache& cache, const Matrix<Scalar>& dh, State& dstate,
                Gradients& grads, Matrix<Scalar>& dx, BackwardWorkspace& ws) const {
    const Index H = hidden_size_, P = s.total();
    constexpr const char* fn = "LSTMCell::backward";
    check_parameters(fn);
    check_gradients(fn, grads);
    detail::check_shape(fn, "cache.h", cache.h, P, H);
    detail::check_shape(fn, "cache.x", cache.x, P, input_size_);
    detail::check_shape(fn, "dh", dh, P, H);
    dstate.check(fn, "dstate", s.batch, H);
    ws.dgates.resize(P, 4 * H);
    // dstate.h, dstate.c carry dLoss/dh_t and dLoss/dc_t of each sorted row back through
    // time. A row joins the recursion at its last step, carrying its final-state gradient.
    auto& dh_next = dstate.h;
    auto& dc_next = dstate.c;
    const Index rows = s.steps > 0 ? s.active[0] : 0;
    const int threads = detail::loop_threads(rows, double(H) * double(4 * H));
    ws.recurrent_gemm.pack(kernel_.bottomRows(H), Op::T, rows, threads);  // W_hᵀ, (4H, H)

    detail::for_each_step<Scalar>(s, threads, /*reverse=*/true, [&](Index t, Index o, Index r0, Index r1, int thread) {
      const Scalar* c_prev = t == 0 ? cache.c0.data() : cache.c.row(s.offset[t - 1]).data();
      for (Index r = r0; r < r1; ++r) {
        const Scalar* g = cache.gates.row(o + r).data();
        const ConstArray i(g, H), j(g + H, H), f(g + 2 * H, H), og(g + 3 * H, H);
        const ConstArray tc(cache.tanh_c.row(o + r).data(), H);
        Array dh_t(dh_next.row(r).data(), H), dc_t(dc_next.row(r).data(), H);  // become totals
        Scalar* dg = ws.dgates.row(o + r).data();

        dh_t += ConstArray(dh.row(o + r).data(), H);
        // h = o ⊙ tanh(c): dh reaches c through tanh and o directly.
        dc_t += dh_t * og * (Scalar(1) - tc.square());
        Array(dg, H) = dc_t * j * i * (Scalar(1) - i);
        Array(dg + H, H) = dc_t * i * (Scalar(1) - j.square());
        Array(dg + 2 * H, H) = dc_t * ConstArray(c_prev + r * H, H) * f * (Scalar(1) - f);
        Array(dg + 3 * H, H) = dh_t * tc * og * (Scalar(1) - og);
        // dc flows into c_{t-1} through the forget gate.
        dc_t *= f;
      }
      // dh flows into h_{t-1} through W_h.
      ws.recurrent_gemm.rows(dh_next.middleRows(r0, r1 - r0), ws.dgates.middleRows(o + r0, r1 - r0), Scalar(1),
                             Scalar(0), thread);
    });

    // Weight gradients: one GEMM each over all valid (row, step) pairs.
    ws.weight_gemm(grads.kernel.topRows(input_size_), cache.x, Op::T, ws.dgates, Op::N, Scalar(1), Scalar(1));
    ws.weight_gemm(grads.kernel.bottomRows(H), cache.h_prev, Op::T, ws.dgates, Op::N, Scalar(1), Scalar(1));
    detail::add_column_sums<Scalar>(ws.dgates, grads.bias);
    dx.resize(P, input_size_);
    ws.input_gemm(dx, ws.dgates, Op::N, kernel_.topRows(input_size_), Op::T);
  }

 private:
  using Array = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;             // one gate of one row
  using ConstArray = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;

  void check_like_parameters(const char* function, const char* kernel_name, const Matrix<Scalar>& kernel,
                             const char* bias_name, const Vector<Scalar>& bias) const {
    detail::check_shape(function, kernel_name, kernel, input_size_ + hidden_size_, 4 * hidden_size_);
    detail::check_shape(function, bias_name, bias, 4 * hidden_size_, 1);
  }

  Index input_size_;
  Index hidden_size_;
  Scalar forget_bias_;
  Matrix<Scalar> kernel_;  // (I+H, 4H)
  Vector<Scalar> bias_;    // (4H)
};

/// \brief Visits each (parameter, gradient) pair of an LSTMCell; optimisers use this.
template <class Scalar, class F>
void visit_parameters(LSTMCell<Scalar>& cell, const LSTMGradients<Scalar>& g, F&& f) {
  f(cell.kernel(), g.kernel);
  f(cell.bias(), g.bias);
}

}  // namespace dynrnn
