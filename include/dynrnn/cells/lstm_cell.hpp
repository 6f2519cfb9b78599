// dynrnn: the LSTM cell, forward and backward through time over a packed batch.
//
// Dimensions: T time, B batch, I input features, H hidden units, R output width (H, or
//             num_proj with a projection), P valid (row, step) pairs = sum of lengths
//             (see packed_schedule.hpp).
//
// The cell is TensorFlow 1.x's LSTMCell, options included (LSTMOptions):
//
//   [i j f o] = [x_t, h_{t-1}] · kernel + bias                     (1, 4H) pre-activations
//   c_t = sigmoid(f + forget_bias + w_f ⊙ c_{t-1}) ⊙ c_{t-1} + sigmoid(i + w_i ⊙ c_{t-1}) ⊙ tanh(j)
//   c_t = clip(c_t, -cell_clip, cell_clip)                          with cell_clip
//   m_t = sigmoid(o + w_o ⊙ c_t) ⊙ tanh(c_t)
//   h_t = m_t, or clip(m_t · projection, -proj_clip, proj_clip)     with num_proj (proj_clip)
//
// The peephole terms w ⊙ c appear with use_peepholes only. The output and the recurrent
// state h_t have width R; c_t has width H. A clip passes the gradient where |x| <= clip
// (its boundary included) and stops it beyond, as TensorFlow's clip_by_value does.
//
// Fused weight layout, identical to TensorFlow's `kernel` and `bias`:
//
//                  0      H      2H     3H     4H
//                  +------+------+------+------+
//    rows 0..I-1   |  i   |  j   |  f   |  o   |   input weights W_x
//    rows I..I+R-1 |  i   |  j   |  f   |  o   |   recurrent weights W_h
//                  +------+------+------+------+
//    bias (4H)     |  i   |  j   |  f   |  o   |
//
//    w_i_diag, w_f_diag, w_o_diag (H each)      peepholes
//    projection (H, R)                           TensorFlow's projection/kernel
//
// PyTorch orders the gates i, f, g(=j), o and stores W_x, W_h transposed, so
// its weights must be reordered and transposed before they are copied in (lstm_import.hpp).
#pragma once

#include "../core/check.hpp"
#include "../core/column_sums.hpp"
#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "../core/random.hpp"
#include "../core/reusable_matrix.hpp"
#include "../core/types.hpp"
#include "../precision/mixed_gemm.hpp"
#include "../rnn/packed_schedule.hpp"
#include "../rnn/time_loop.hpp"
#include "lstm_gates.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>

namespace dynrnn {

/// \brief Recurrent state of an LSTM: cell state `c`, `(B, H)`, and hidden state `h`, `(B, R)`
/// (R = H unless the cell projects its output).
/// \tparam Scalar element type.
template <class Scalar>
struct LSTMState {
  Matrix<Scalar> c;  ///< (B, H) cell state.
  Matrix<Scalar> h;  ///< (B, R) hidden state, which is also the cell's output.

  /// \brief A state of zeros for `batch` rows of `hidden` units (and outputs of width
  /// `output`, when it differs from `hidden`).
  /// \throws std::invalid_argument when a size is negative.
  static LSTMState zeros(Index batch, Index hidden, Index output = -1) {
    if (output < 0) output = hidden;
    detail::check_non_negative("LSTMState::zeros", "batch", batch);
    detail::check_non_negative("LSTMState::zeros", "hidden", hidden);
    return {Matrix<Scalar>::Zero(batch, hidden), Matrix<Scalar>::Zero(batch, output)};
  }

  /// \brief Calls `f(mine, theirs)` for each member matrix of this state and of `other`,
  /// e.g. to copy or reorder a state member by member without allocating.
  template <class F>
  void zip(const LSTMState& other, F&& f) {
    f(c, other.c);
    f(h, other.h);
  }

  /// \brief Throws std::invalid_argument unless `c` is `(batch, hidden)` and `h` is
  /// `(batch, output)` (`output` = `hidden` when not given).
  void check(const char* function, const char* argument, Index batch, Index hidden, Index output = -1) const {
    const std::string name(argument);
    detail::check_shape(function, (name + ".c").c_str(), c, batch, hidden);
    detail::check_shape(function, (name + ".h").c_str(), h, batch, output < 0 ? hidden : output);
  }
};

/// \brief TensorFlow 1.x LSTMCell's options; the defaults give the plain cell.
struct LSTMOptions {
  bool use_peepholes = false;  ///< Diagonal connections from c into the i, f and o gates.
  double cell_clip = 0;        ///< > 0: c is clipped to [-cell_clip, cell_clip] (0: no clip).
  Index num_proj = 0;          ///< > 0: h = m · projection, of this width (0: no projection).
  double proj_clip = 0;        ///< > 0: the projected h is clipped to [-proj_clip, proj_clip]; needs num_proj.
  double forget_bias = 1;      ///< Added to the forget gate's pre-activation (TensorFlow's default 1).
};

/// \brief Gradients of an LSTMCell's parameters, shaped like the parameters.
/// \tparam Scalar element type.
template <class Scalar>
struct LSTMGradients {
  Matrix<Scalar> kernel;      ///< (I+R, 4H) dLoss/dkernel.
  Vector<Scalar> bias;        ///< (4H) dLoss/dbias.
  Vector<Scalar> w_i_diag;    ///< (H) dLoss/dw_i_diag with peepholes; empty otherwise.
  Vector<Scalar> w_f_diag;    ///< (H) dLoss/dw_f_diag with peepholes; empty otherwise.
  Vector<Scalar> w_o_diag;    ///< (H) dLoss/dw_o_diag with peepholes; empty otherwise.
  Matrix<Scalar> projection;  ///< (H, R) dLoss/dprojection with num_proj; empty otherwise.

  LSTMGradients() = default;
  /// \brief Zero gradients for a plain cell of the given sizes.
  LSTMGradients(Index input_size, Index hidden_size) : LSTMGradients(input_size, hidden_size, LSTMOptions{}) {}
  /// \brief Zero gradients for a cell of the given sizes and options.
  LSTMGradients(Index input_size, Index hidden_size, const LSTMOptions& options) {
    const Index H = hidden_size, R = options.num_proj > 0 ? options.num_proj : H, D = options.use_peepholes ? H : 0;
    kernel = Matrix<Scalar>::Zero(input_size + R, 4 * H);
    bias = Vector<Scalar>::Zero(4 * H);
    w_i_diag = w_f_diag = w_o_diag = Vector<Scalar>::Zero(D);
    projection = Matrix<Scalar>::Zero(options.num_proj > 0 ? H : 0, options.num_proj > 0 ? R : 0);
  }

  /// \brief Sets every gradient to zero, keeping the shapes.
  void setZero() {
    kernel.setZero();
    bias.setZero();
    w_i_diag.setZero();
    w_f_diag.setZero();
    w_o_diag.setZero();
    projection.setZero();
  }
};

/// \brief What LSTMCell::forward keeps for LSTMCell::backward. All packed, `P` rows,
/// step after step; within a step the rows are sorted longest sequence first. Reusing a
/// cache for a batch of the same shape allocates nothing. Members an option does not use
/// stay empty.
/// \tparam Scalar element type.
template <class Scalar>
struct LSTMCache {
  ReusableMatrix<Scalar> x;       ///< (P, I)  inputs x_t, filled by dynamic_rnn before forward().
  ReusableMatrix<Scalar> h_prev;  ///< (P, R)  h_{t-1} fed into each step (the initial h at step 0); 0 rows after an inference pass.
  ReusableMatrix<Scalar> gates;   ///< (P, 4H) gate activations after the nonlinearity:
                          ///<         sigmoid(i), tanh(j), sigmoid(f + forget_bias), sigmoid(o)
                          ///<         (peephole terms included). Scratch after an inference pass.
  ReusableMatrix<Scalar> c;       ///< (P, H)  c_t (after cell_clip); (B, H), the last c_t of each row, after an inference pass.
  ReusableMatrix<Scalar> tanh_c;  ///< (P, H)  tanh(c_t); 0 rows after an inference pass.
  ReusableMatrix<Scalar> h;       ///< (P, R)  h_t, the outputs.
  Matrix<Scalar> c0;      ///< (B, H)  initial c, sorted order.
  ReusableMatrix<Scalar> c_raw;   ///< (P, H)  cell_clip: c_t before the clip; 0 rows after an inference pass.
  ReusableMatrix<Scalar> m;       ///< (P, H)  num_proj: m_t, the output before the projection; (B, H) after an inference pass.
  ReusableMatrix<Scalar> h_raw;   ///< (P, R)  proj_clip: h_t before the clip; 0 rows after an inference pass.
  MixedRightGemm<Scalar> input_gemm;       ///< W_x, packed once per pass for the input projection.
  MixedRightGemm<Scalar> recurrent_gemm;   ///< W_h, packed once per pass for h_{t-1} · W_h.
  MixedRightGemm<Scalar> projection_gemm;  ///< num_proj: the projection, for m_t · projection.
};

/// \brief Scratch space of LSTMCell::backward, kept between calls so that they allocate nothing.
/// \tparam Scalar element type.
template <class Scalar>
struct LSTMBackwardWorkspace {
  ReusableMatrix<Scalar> dgates;        ///< (P, 4H) dLoss/d gate pre-activations; 0 rows where only dgates_bf16 holds them.
  ReusableMatrix<Scalar> d_proj;        ///< (P, R)  num_proj: dLoss/d(m_t · projection), before the clip.
  ReusableMatrix<Scalar> bias_rows;     ///< (B, 4H) bfloat16 on AVX-512 BF16: each row's sum of its dgates.
  /// (P, 4H) bfloat16 on AVX-512 BF16: dgates rounded, for dgates_t · W_hᵀ and dgates · W_xᵀ.
  ReusableMatrix<std::uint16_t> dgates_bf16;
  Matrix<Scalar> dm;            ///< (B, H)  num_proj: one step's dLoss/dm_t.
  MixedRightGemm<Scalar> recurrent_gemm;   ///< W_hᵀ, packed once per pass for dgates_t · W_hᵀ.
  MixedRightGemm<Scalar> projection_gemm;  ///< num_proj: projectionᵀ.
  MixedWeightGemm<Scalar> weight_gemm;     ///< [x, h_prev]ᵀ · dgates (and mᵀ · d_proj) after the loop.
  MixedRightGemm<Scalar> input_gemm;       ///< W_xᵀ, packed once per pass for dgates · W_xᵀ after the loop.
};

/// \brief Long short-term memory cell with TensorFlow 1.x LSTMCell semantics, including its
/// options (peepholes, cell_clip, num_proj, proj_clip, forget_bias).
///
/// \tparam Scalar `float` or `double`.
///
/// \code
/// dynrnn::LSTMCell<float> cell(/*input_size=*/8, /*hidden_size=*/32);
/// auto fwd = dynrnn::dynamic_rnn(cell, x, lengths);   // x: Tensor3<float> [T, B, 8]
///
/// dynrnn::LSTMOptions options;
/// options.use_peepholes = true;
/// options.num_proj = 16;                                // outputs and h of width 16
/// dynrnn::LSTMCell<float> projected(8, 32, options);
/// \endcode
template <class Scalar_>
class LSTMCell : public PrecisionSetting<Scalar_> {
 public:
  using Scalar = Scalar_;                     ///< Element type.
  using State = LSTMState<Scalar>;            ///< Recurrent state type.
  using Cache = LSTMCache<Scalar>;            ///< Forward cache type.
  using Gradients = LSTMGradients<Scalar>;    ///< Parameter gradient type.
  using BackwardWorkspace = LSTMBackwardWorkspace<Scalar>;  ///< Scratch of backward().
  using PrecisionSetting<Scalar_>::precision;      ///< \copydoc PrecisionSetting::precision()
  using PrecisionSetting<Scalar_>::set_precision;  ///< \copydoc PrecisionSetting::set_precision()

  /// \brief Seed used by the constructor's initialisation, so that a program is reproducible.
  static constexpr std::uint64_t default_seed = 0x5eed;

  /// \brief Creates a plain cell (no peepholes, clip or projection); see the constructor with
  /// options.
  /// \param input_size I, features per step (> 0).
  /// \param hidden_size H, hidden units (> 0).
  /// \param forget_bias added to the forget gate's pre-activation (TensorFlow's default 1).
  /// \throws std::invalid_argument when a size is not positive.
  LSTMCell(Index input_size, Index hidden_size, Scalar forget_bias = Scalar(1))
      : LSTMCell(input_size, hidden_size, with_forget_bias(forget_bias)) {}

  /// \brief Creates a cell with TensorFlow's options, its weights drawn as reset_parameters()
  /// describes from Rng(default_seed).
  /// \param input_size I, features per step (> 0).
  /// \param hidden_size H, hidden units (> 0).
  /// \param options peepholes, clips, projection and forget_bias.
  /// \throws std::invalid_argument when a size is not positive, a clip is negative or not
  /// finite, num_proj is negative, or proj_clip is set without num_proj.
  LSTMCell(Index input_size, Index hidden_size, const LSTMOptions& options)
      : input_size_(input_size), hidden_size_(hidden_size), options_(options),
        forget_bias_(Scalar(options.forget_bias)) {
    constexpr const char* fn = "LSTMCell";
    detail::check_positive(fn, "input_size", input_size);
    detail::check_positive(fn, "hidden_size", hidden_size);
    detail::check_non_negative(fn, "options.num_proj", options.num_proj);
    const std::pair<const char*, double> clips[] = {{"options.cell_clip", options.cell_clip},
                                                    {"options.proj_clip", options.proj_clip}};
    for (const auto& [name, clip] : clips)
      if (!(clip >= 0) || !std::isfinite(clip))
        detail::throw_argument(fn, name, "finite and >= 0 (0: no clip)", std::to_string(clip));
    if (options.proj_clip > 0 && options.num_proj == 0)
      detail::throw_argument(fn, "options.proj_clip", "0 when options.num_proj is 0 (it clips the projection)",
                             std::to_string(options.proj_clip));
    const Index H = hidden_size, R = output_size(), D = options.use_peepholes ? H : 0;
    kernel_.resize(input_size + R, 4 * H);
    bias_.resize(4 * H);
    w_i_diag_.resize(D);
    w_f_diag_.resize(D);
    w_o_diag_.resize(D);
    projection_.resize(projects() ? H : 0, projects() ? R : 0);
    Rng rng(default_seed);
    reset_parameters(rng);
  }

  /// \brief Redraws the weights Glorot-uniform, as TensorFlow's default initialiser does: the
  /// kernel with limit sqrt(6 / (I + R + 4H)), each peephole vector with sqrt(3 / H) (a 1-D
  /// shape's fans are both H), the projection with sqrt(6 / (H + R)); zeroes the bias.
  void reset_parameters(Rng& rng) {
    fill_uniform(kernel_, rng, std::sqrt(6.0 / double(kernel_.rows() + kernel_.cols())));
    bias_.setZero();
    const double peephole_limit = std::sqrt(3.0 / double(hidden_size_));
    for (Vector<Scalar>* w : {&w_i_diag_, &w_f_diag_, &w_o_diag_}) fill_uniform(*w, rng, peephole_limit);
    if (projects()) fill_uniform(projection_, rng, std::sqrt(6.0 / double(projection_.rows() + projection_.cols())));
  }

  Index input_size() const { return input_size_; }    ///< I.
  Index hidden_size() const { return hidden_size_; }  ///< H, the width of c.
  /// \brief R, the width of the outputs and of h: num_proj with a projection, else H.
  Index output_size() const { return projects() ? options_.num_proj : hidden_size_; }
  Scalar forget_bias() const { return forget_bias_; } ///< Constant added to the forget gate.
  const LSTMOptions& options() const { return options_; }  ///< The options the cell was built with.

  /// \brief The fused weights, `(I+R, 4H)`; see the layout diagram at the top of this header.
  Matrix<Scalar>& kernel() { return kernel_; }
  const Matrix<Scalar>& kernel() const { return kernel_; }  ///< \copydoc kernel()
  /// \brief The fused bias, `(4H)`, gates i, j, f, o.
  Vector<Scalar>& bias() { return bias_; }
  const Vector<Scalar>& bias() const { return bias_; }  ///< \copydoc bias()
  /// \brief Peephole weights into the i gate, `(H)` with use_peepholes, else empty.
  Vector<Scalar>& w_i_diag() { return w_i_diag_; }
  const Vector<Scalar>& w_i_diag() const { return w_i_diag_; }  ///< \copydoc w_i_diag()
  /// \brief Peephole weights into the f gate, `(H)` with use_peepholes, else empty.
  Vector<Scalar>& w_f_diag() { return w_f_diag_; }
  const Vector<Scalar>& w_f_diag() const { return w_f_diag_; }  ///< \copydoc w_f_diag()
  /// \brief Peephole weights into the o gate, `(H)` with use_peepholes, else empty.
  Vector<Scalar>& w_o_diag() { return w_o_diag_; }
  const Vector<Scalar>& w_o_diag() const { return w_o_diag_; }  ///< \copydoc w_o_diag()
  /// \brief The output projection, `(H, R)` with num_proj, else empty.
  Matrix<Scalar>& projection() { return projection_; }
  const Matrix<Scalar>& projection() const { return projection_; }  ///< \copydoc projection()

  /// \brief Calls `f(name, parameter)` for "kernel", "bias" and, with the options that add
  /// them, "w_i_diag", "w_f_diag", "w_o_diag" and "projection/kernel" (TensorFlow's names);
  /// checkpoints use this.
  template <class F>
  void for_each_parameter(F&& f) {
    f("kernel", kernel_);
    f("bias", bias_);
    if (options_.use_peepholes) {
      f("w_i_diag", w_i_diag_);
      f("w_f_diag", w_f_diag_);
      f("w_o_diag", w_o_diag_);
    }
    if (projects()) f("projection/kernel", projection_);
  }
  /// \brief The cell's kind, sizes and options, e.g. "LSTMCell(input_size=2, hidden_size=64)"
  /// or "LSTMCell(input_size=2, hidden_size=64, use_peepholes=true, num_proj=16)"; checkpoints
  /// store it and refuse to load into a cell of another description. forget_bias is not part
  /// of it (it is not a trained parameter).
  std::string description() const {
    std::string d = "LSTMCell(input_size=" + std::to_string(input_size_) + ", hidden_size=" + std::to_string(hidden_size_);
    const auto number = [](double v) {
      std::ostringstream s;
      s.precision(17);
      s << v;
      return s.str();
    };
    if (options_.use_peepholes) d += ", use_peepholes=true";
    if (options_.cell_clip > 0) d += ", cell_clip=" + number(options_.cell_clip);
    if (projects()) d += ", num_proj=" + std::to_string(options_.num_proj);
    if (options_.proj_clip > 0) d += ", proj_clip=" + number(options_.proj_clip);
    return d + ")";
  }

  /// \brief Zero gradients shaped like this cell's parameters.
  Gradients make_gradients() const { return Gradients(input_size_, hidden_size_, options_); }
  /// \brief The zero state for `batch` rows: c `(batch, H)`, h `(batch, R)`.
  State zero_state(Index batch) const { return State::zeros(batch, hidden_size_, output_size()); }
  /// \brief Throws std::invalid_argument unless `s` is a state of this cell for `batch` rows.
  void check_state(const char* function, const char* argument, const State& s, Index batch) const {
    s.check(function, argument, batch, hidden_size_, output_size());
  }

  /// \brief Throws std::invalid_argument unless the parameters still have their constructed shapes.
  void check_parameters(const char* function) const {
    static constexpr const char* names[] = {"cell.kernel()",   "cell.bias()",     "cell.w_i_diag()",
                                            "cell.w_f_diag()", "cell.w_o_diag()", "cell.projection()"};
    check_like_parameters(function, names, kernel_, bias_, w_i_diag_, w_f_diag_, w_o_diag_, projection_);
  }
  /// \brief Throws std::invalid_argument unless `g` is shaped like this cell's parameters.
  void check_gradients(const char* function, const Gradients& g) const {
    static constexpr const char* names[] = {"grads.kernel",   "grads.bias",     "grads.w_i_diag",
                                            "grads.w_f_diag", "grads.w_o_diag", "grads.projection"};
    check_like_parameters(function, names, g.kernel, g.bias, g.w_i_diag, g.w_f_diag, g.w_o_diag, g.projection);
  }

  /// \brief Runs the cell over a packed batch. Used by dynamic_rnn; call that instead.
  /// \param s      the batch's packed schedule.
  /// \param s0     initial state, rows in sorted order: c (B, H), h (B, R).
  /// \param cache  holds the packed inputs `cache.x` (P, I); receives everything backward() needs.
  /// \param final  receives the state after each row's last valid step, sorted order.
  /// \param mode   ForwardMode::inference (or a pass in int8) keeps only the outputs: c_t and
  ///               m_t are updated in place in (B, H) rows, and the activations, tanh(c_t),
  ///               h_{t-1} and the values before the clips are not written.
  /// \param packing null, or this cell's weights packed by pack_forward() in its current
  ///               precision, which the products then read instead of packing their own
  ///               (FrozenCell); the cache does not read it after the call.
  /// \throws std::invalid_argument when `s0` or `cache.x` does not fit the schedule and cell.
  void forward(const PackedSchedule& s, const State& s0, Cache& cache, State& final,
               ForwardMode mode = ForwardMode::training, const ForwardPacking<Scalar>* packing = nullptr) const {
    const Index H = hidden_size_, R = output_size(), P = s.total();
    constexpr const char* fn = "LSTMCell::forward";
    detail::check_forward_arguments(fn, *this, s, s0, cache.x);
    detail::check_forward_mode(fn, mode);
    const bool keep = detail::keeps_for_backward(mode, precision());
    const bool peep = options_.use_peepholes, proj = projects();
    const Scalar cell_clip = Scalar(options_.cell_clip), proj_clip = Scalar(options_.proj_clip);
    // A training pass keeps c_t, tanh(c_t), m_t and the values before the clips for every
    // (row, step). An inference pass keeps c and m in place, one row per sequence: a step's
    // rows are the first rows of the step before, so row r always holds row r's c_{t-1},
    // and the rows that have ended keep their last state.
    cache.gates.resize(P, 4 * H);
    if (keep) {
      cache.c0 = s0.c;
      cache.c.resize(P, H);
    } else {
      cache.c = s0.c;  // (B, H), updated in place
    }
    cache.tanh_c.resize(keep ? P : 0, H);
    cache.h.resize(P, R);
    cache.c_raw.resize(keep && cell_clip > 0 ? P : 0, H);
    cache.m.resize(proj ? (keep ? P : s.batch) : 0, H);
    cache.h_raw.resize(keep && proj_clip > 0 ? P : 0, R);

    const Index rows = s.steps > 0 ? s.active[0] : 0;
    detail::ForwardShares<Scalar> shares;  // ends the shares of `packing` when the pass ends
    pack_products(cache.input_gemm, cache.recurrent_gemm, cache.projection_gemm, rows, packing, shares);
    // Input projection for every valid (row, step) pair at once, the bias added as it is written.
    cache.input_gemm(cache.gates, cache.x, Scalar(1), Scalar(0), bias_.data());

    const double macs_per_row = double(R) * double(4 * H) + (proj ? double(H) * double(R) : 0.0);
    const detail::LoopTeam team = detail::loop_team<Scalar>(rows, macs_per_row);
    detail::start_h_prev(s, keep, s0.h, cache.h_prev);
    const bool fast = detail::fast_activations();
    // m_t lands in h (no projection) or in m, from where the projection takes it into h.
    ReusableMatrix<Scalar>& m_out = proj ? cache.m : cache.h;
    detail::for_each_step(s, team, /*reverse=*/false, [&](Index t, Index o, Index r0, Index r1) {
      cache.recurrent_gemm.rows(cache.gates.middleRows(o + r0, r1 - r0),
                                detail::step_h_prev(s, t, r0, r1, s0.h, cache.h, cache.h_prev), Scalar(1),
                                Scalar(1), r0);
      // Where step t's rows read c_{t-1} and write c_t (and m_t when it is kept apart from h):
      // a training pass reads the first rows of the previous step's block (c0 at step 0) and
      // writes the step's own block; an inference pass reads and writes its rows in place.
      const Index oc = keep ? o : 0, om = keep || !proj ? o : 0;
      const Scalar* c_prev = !keep ? cache.c.data() : t == 0 ? cache.c0.data() : cache.c.row(s.offset[t - 1]).data();
      for (Index r = r0; r < r1; ++r)  // one pass over the four gates of each row
        detail::lstm_gates<Scalar>({cache.gates.row(o + r).data(), c_prev + r * H, cache.c.row(oc + r).data(),
                                    keep ? cache.tanh_c.row(o + r).data() : nullptr, m_out.row(om + r).data(),
                                    keep && cell_clip > 0 ? cache.c_raw.row(o + r).data() : nullptr,
                                    peep ? w_i_diag_.data() : nullptr, peep ? w_f_diag_.data() : nullptr,
                                    peep ? w_o_diag_.data() : nullptr, forget_bias_, cell_clip, r + 1 < r1, keep},
                                   H, fast);
      if (proj) {
        auto h = cache.h.middleRows(o + r0, r1 - r0);
        cache.projection_gemm.rows(h, cache.m.middleRows(om + r0, r1 - r0), Scalar(1), Scalar(0), r0);
        if (proj_clip > 0) {
          if (keep) cache.h_raw.middleRows(o + r0, r1 - r0) = h;
          h = h.cwiseMin(proj_clip).cwiseMax(-proj_clip);
        }
      }
      detail::feed_next_step(s, t, r0, r1, cache.h, cache.h_prev);
    });

    this->observe_int8(cache.x, proj ? &cache.h : nullptr);
    // A row's final state is its state at its last valid step; rows of length 0 keep s0.
    if (keep)
      detail::gather_final(s, cache.c, s0.c, final.c);
    else
      final.c = cache.c;
    detail::gather_final(s, cache.h, s0.h, final.h);
  }

  /// \brief Packs the weights of forward()'s products as every pass packs its own: W_x into
  /// `packing.input`, W_h into `packing.recurrent` and, with num_proj, the projection into
  /// `packing.extra`, in precision() (with the int8 bounds). FrozenCell packs them once so.
  void pack_forward(ForwardPacking<Scalar>& packing) const {
    detail::ForwardShares<Scalar> none;
    pack_products(packing.input, packing.recurrent, packing.extra, 0, nullptr, none);
  }

  /// \brief The packed outputs of a forward pass, `(P, R)`.
  static const ReusableMatrix<Scalar>& packed_outputs(const Cache& cache) { return cache.h; }
  /// \brief The matrix forward() writes the packed outputs into, sized by forward() itself:
  /// dynamic_rnn may make it a view of the result's outputs (ReusableMatrix::view()).
  static ReusableMatrix<Scalar>& packed_outputs(Cache& cache) { return cache.h; }

  /// \brief Backpropagates through time over a packed batch. Used by dynamic_rnn_backward.
  /// \param s      the schedule forward() ran with.
  /// \param cache  forward()'s cache.
  /// \param dh     (P, R) dLoss/d outputs, packed.
  /// \param dstate in: dLoss/d final state, sorted rows; out: dLoss/d initial state, sorted rows.
  /// \param grads  parameter gradients, added to.
  /// \param dx     receives (P, I) dLoss/d inputs, packed; null when they are not wanted (a
  ///               model's first layer), which skips their product with W_xᵀ.
  /// \param ws     scratch space, reused between calls.
  /// \throws std::invalid_argument when a shape does not fit the schedule and cell.
  void backward(const PackedSchedule& s, const Cache& cache, const ReusableMatrix<Scalar>& dh, State& dstate,
                Gradients& grads, ReusableMatrix<Scalar>* dx, BackwardWorkspace& ws) const {
    const Index H = hidden_size_, R = output_size(), P = s.total();
    constexpr const char* fn = "LSTMCell::backward";
    detail::check_backward_arguments(fn, *this, s, cache.h, cache.x, dh, dstate, grads);
    detail::check_h_prev(fn, cache.h_prev, P, R);
    const bool peep = options_.use_peepholes, proj = projects();
    const Scalar cell_clip = Scalar(options_.cell_clip), proj_clip = Scalar(options_.proj_clip);
    if (cell_clip > 0) detail::check_shape(fn, "cache.c_raw", cache.c_raw, P, H);
    if (proj) detail::check_shape(fn, "cache.m", cache.m, P, H);
    if (proj_clip > 0) detail::check_shape(fn, "cache.h_raw", cache.h_raw, P, R);
    ws.d_proj.resize(proj ? P : 0, R);
    ws.dm.resize(proj ? s.batch : 0, H);
    // dstate.h, dstate.c carry dLoss/dh_t and dLoss/dc_t of each sorted row back through
    // time. A row joins the recursion at its last step, carrying its final-state gradient.
    auto& dh_next = dstate.h;
    auto& dc_next = dstate.c;
    const Index rows = s.steps > 0 ? s.active[0] : 0;
    const double macs_per_row = double(R) * double(4 * H) + (proj ? double(H) * double(R) : 0.0);
    const detail::LoopTeam team = detail::loop_team<Scalar>(rows, macs_per_row);
    ws.recurrent_gemm.pack(kernel_.bottomRows(R), Op::T, precision(), rows);  // W_hᵀ, (4H, R)
    const bool fast = detail::fast_activations();
    if (proj) ws.projection_gemm.pack(projection_, Op::T, precision(), rows);  // (R, H)
    // In bfloat16 on the AVX-512 BF16 kernels, the gate pass also writes each row's gate
    // gradients rounded into the weight gradients' packed right operand, and adds them to the
    // row's sums for the bias gradient, while they are in cache: the weight gradients then
    // need not read dgates back from memory and pack them after the loop.
    std::uint16_t* const packed_dgates =
        fast && H % 16 == 0 ? ws.weight_gemm.pack_in_place(P, 4 * H, precision()) : nullptr;
    // There the gate pass also rounds each row once for the products that take the gate
    // gradients as their left operand, dh_{t-1} and the input gradient, and, without
    // peepholes, whose gradients sum them in float32, writes them nowhere else.
    if (dx) ws.input_gemm.pack(kernel_.topRows(input_size_), Op::T, precision());  // W_xᵀ
    const bool rounded =
        packed_dgates && ws.recurrent_gemm.takes_rounded() && (dx == nullptr || ws.input_gemm.takes_rounded());
    const bool rounded_only = rounded && !peep;
    if (packed_dgates) {
      ws.bias_rows.resize(s.batch, 4 * H);
      ws.bias_rows.setZero();
    }
    ws.dgates.resize(rounded_only ? 0 : P, 4 * H);
    ws.dgates_bf16.resize(rounded ? P : 0, 4 * H);

    detail::for_each_step(s, team, /*reverse=*/true, [&](Index t, Index o, Index r0, Index r1) {
      const Index n = r1 - r0;
      if (proj) {
        // dLoss/dh_t in total, through the clip, then back through the projection into m_t.
        auto d_proj = ws.d_proj.middleRows(o + r0, n);
        d_proj = dh_next.middleRows(r0, n) + dh.middleRows(o + r0, n);
        if (proj_clip > 0)
          d_proj = (cache.h_raw.middleRows(o + r0, n).array().abs() <= proj_clip).select(d_proj, Scalar(0));
        ws.projection_gemm.rows(ws.dm.middleRows(r0, n), d_proj, Scalar(1), Scalar(0), r0);
      }
      const Scalar* c_prev = t == 0 ? cache.c0.data() : cache.c.row(s.offset[t - 1]).data();
      // One pass over the four gates of each row; dLoss/dm_t comes from the projection, or is
      // the total dh_t without one.
      for (Index r = r0; r < r1; ++r) {
        detail::LstmGradientPacking<Scalar> packing{};
        if (packed_dgates) {
          const Index pair = (o + r) / 2 * 2, start = ws.weight_gemm.packed_offset(pair, 0);
          packing = {packed_dgates + start, ws.weight_gemm.packed_offset(pair, detail::kDotPanelColumns) - start,
                     o + r, ws.bias_rows.row(r).data(), rounded ? ws.dgates_bf16.row(o + r).data() : nullptr};
        }
        detail::lstm_gate_gradients<Scalar>(
            {cache.gates.row(o + r).data(), cache.tanh_c.row(o + r).data(), c_prev + r * H,
             cell_clip > 0 ? cache.c_raw.row(o + r).data() : nullptr,
             proj ? ws.dm.row(r).data() : dh_next.row(r).data(), proj ? nullptr : dh.row(o + r).data(),
             dc_next.row(r).data(), rounded_only ? nullptr : ws.dgates.row(o + r).data(),
             peep ? w_i_diag_.data() : nullptr, peep ? w_f_diag_.data() : nullptr, peep ? w_o_diag_.data() : nullptr,
             cell_clip, r + 1 < r1},
            H, fast, packed_dgates ? &packing : nullptr);
      }
      // dh flows into h_{t-1} through W_h.
      if (rounded)
        ws.recurrent_gemm.rounded_rows(dh_next.middleRows(r0, n), ws.dgates_bf16.row(o + r0).data(), 4 * H, Scalar(0));
      else
        ws.recurrent_gemm.rows(dh_next.middleRows(r0, n), ws.dgates.middleRows(o + r0, n), Scalar(1), Scalar(0), r0);
    });

    // Weight gradients: one GEMM each over all valid (row, step) pairs, and the bias gradient
    // (the column sums), from the same packed slices in float32 (MixedWeightGemm::transposed_pair).
    // With the gate gradients packed in the loop, the bias gradient sums the rows' sums in
    // row order.
    if (packed_dgates) {
      detail::add_column_sums<Scalar>(ws.bias_rows, grads.bias);
      ws.weight_gemm.transposed_pair_in_place(grads.kernel.topRows(input_size_), cache.x, grads.kernel.bottomRows(R),
                                              cache.h_prev, Scalar(1), Scalar(1));
    } else {
      ws.weight_gemm.transposed_pair(grads.kernel.topRows(input_size_), cache.x, grads.kernel.bottomRows(R),
                                     cache.h_prev, ws.dgates, Scalar(1), Scalar(1), grads.bias.data(), precision());
    }
    if (proj) ws.weight_gemm(grads.projection, cache.m, ws.d_proj, Scalar(1), Scalar(1), precision());
    if (peep) add_peephole_gradients(s, cache, ws.dgates, grads);
    if (dx == nullptr) return;
    dx->resize(P, input_size_);
    if (rounded)
      ws.input_gemm.rounded(*dx, ws.dgates_bf16.data(), 4 * H);
    else
      ws.input_gemm(*dx, ws.dgates);
  }

 private:
  static LSTMOptions with_forget_bias(Scalar forget_bias) {
    LSTMOptions o;
    o.forget_bias = double(forget_bias);
    return o;
  }
  bool projects() const { return options_.num_proj > 0; }

  // Packs the forward products' weights into input, recurrent and projection (room for
  // `loop_rows` rows in the loop's products), or makes them share `packing`'s for as long
  // as `shares` lasts. In int8 the left operands' bounds: x its calibrated one, h_{t-1}
  // (m_t in [-1, 1], or a projected state with its calibrated bound) and m_t.
  void pack_products(MixedRightGemm<Scalar>& input, MixedRightGemm<Scalar>& recurrent,
                     MixedRightGemm<Scalar>& projection, Index loop_rows, const ForwardPacking<Scalar>* packing,
                     detail::ForwardShares<Scalar>& shares) const {
    const bool proj = projects();
    shares.pack(input, packing ? &packing->input : nullptr, kernel_.topRows(input_size_), Op::N, precision(), 0,
                this->input_bound_);  // W_x, (I, 4H)
    shares.pack(recurrent, packing ? &packing->recurrent : nullptr, kernel_.bottomRows(output_size()), Op::N,
                precision(), loop_rows, proj ? this->state_bound_ : 1.0f);  // W_h, (R, 4H)
    if (proj)
      shares.pack(projection, packing ? &packing->extra : nullptr, projection_, Op::N, precision(),
                  loop_rows);  // (H, R)
  }

  // dw_i = Σ di ⊙ c_{t-1}, dw_f = Σ df ⊙ c_{t-1}, dw_o = Σ do ⊙ c_t over all valid (row, step)
  // pairs, summed in a fixed order.
  void add_peephole_gradients(const PackedSchedule& s, const Cache& cache, const ReusableMatrix<Scalar>& dgates,
                              Gradients& grads) const {
    const Index H = hidden_size_;
    for (Index t = 0; t < s.steps; ++t) {
      const Index n = s.active[t], o = s.offset[t];
      const Eigen::Map<const Matrix<Scalar>> c_prev(t == 0 ? cache.c0.data() : cache.c.row(s.offset[t - 1]).data(), n, H);
      const auto d = dgates.middleRows(o, n);
      grads.w_i_diag += (d.leftCols(H).array() * c_prev.array()).colwise().sum().matrix().transpose();
      grads.w_f_diag += (d.middleCols(2 * H, H).array() * c_prev.array()).colwise().sum().matrix().transpose();
      grads.w_o_diag +=
          (d.rightCols(H).array() * cache.c.middleRows(o, n).array()).colwise().sum().matrix().transpose();
    }
  }

  // names: kernel, bias, w_i_diag, w_f_diag, w_o_diag, projection as the messages call them
  // (string literals, so that a passing check allocates nothing).
  void check_like_parameters(const char* function, const char* const (&names)[6], const Matrix<Scalar>& kernel,
                             const Vector<Scalar>& bias, const Vector<Scalar>& w_i, const Vector<Scalar>& w_f,
                             const Vector<Scalar>& w_o, const Matrix<Scalar>& projection) const {
    const Index H = hidden_size_, R = output_size(), D = options_.use_peepholes ? H : 0;
    detail::check_shape(function, names[0], kernel, input_size_ + R, 4 * H);
    detail::check_shape(function, names[1], bias, 4 * H, 1);
    detail::check_shape(function, names[2], w_i, D, 1);
    detail::check_shape(function, names[3], w_f, D, 1);
    detail::check_shape(function, names[4], w_o, D, 1);
    detail::check_shape(function, names[5], projection, projects() ? H : 0, projects() ? R : 0);
  }

  Index input_size_;
  Index hidden_size_;
  LSTMOptions options_;
  Scalar forget_bias_;
  Matrix<Scalar> kernel_;      // (I+R, 4H)
  Vector<Scalar> bias_;        // (4H)
  Vector<Scalar> w_i_diag_, w_f_diag_, w_o_diag_;  // (H) with peepholes, else empty
  Matrix<Scalar> projection_;  // (H, R) with num_proj, else empty
};

/// \brief Visits each (parameter, gradient) pair of an LSTMCell; optimisers use this.
template <class Scalar, class F>
void visit_parameters(LSTMCell<Scalar>& cell, const LSTMGradients<Scalar>& g, F&& f) {
  f(cell.kernel(), g.kernel);
  f(cell.bias(), g.bias);
  if (cell.options().use_peepholes) {
    f(cell.w_i_diag(), g.w_i_diag);
    f(cell.w_f_diag(), g.w_f_diag);
    f(cell.w_o_diag(), g.w_o_diag);
  }
  if (cell.options().num_proj > 0) f(cell.projection(), g.projection);
}

/// \brief Calls f(gradient) for each parameter gradient of an LSTMCell (empty ones included);
/// clip_by_global_norm() and clip_by_value() use this.
template <class Scalar, class F>
void for_each_gradient(LSTMGradients<Scalar>& g, F&& f) {
  f(g.kernel);
  f(g.bias);
  f(g.w_i_diag);
  f(g.w_f_diag);
  f(g.w_o_diag);
  f(g.projection);
}

}  // namespace dynrnn
