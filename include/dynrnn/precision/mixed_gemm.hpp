// dynrnn: the precision of a cell's matrix products, and the products that follow it.
//
// A cell's arithmetic has two parts: its matrix products (the input projection, the
// recurrent product, the input gradient and the weight gradients) and everything else (the
// gate nonlinearities, the cell state, the bias and peephole terms). Precision chooses the
// first part only:
//
//   Precision::float32   float32 operands and sums (the default), or double in a cell of
//                        doubles.
//   Precision::bfloat16  mixed precision, as Keras' "mixed_bfloat16" policy and
//                        torch.autocast on CPU: each product rounds its operands to
//                        bfloat16 and sums in float32 (bfloat16_gemm.hpp); the weights, the
//                        optimizer's state, the gradients and all elementwise work stay
//                        float32. Cells of float only.
//   Precision::int8      inference: each forward product quantises its operands to int8 and
//                        sums in int32 (int8_gemm.hpp), W with a scale per output column,
//                        the left operand with one scale per product, from its bound:
//                          the input x      the bound a calibration pass found (below);
//                          h, and an LSTM's m before its projection
//                                           1, as they lie in [-1, 1] (tanh, and sigmoid
//                                           times tanh) given an initial state there;
//                          a projected h, or a relu RNN's h
//                                           the calibrated bound.
//                        Everything else stays float32, as in bfloat16. A backward pass in
//                        int8 is refused. Cells of float only.
//
// Calibration: begin_int8_calibration() on a cell (or a stack, a model) starts recording the
// largest magnitude of each cell's input over the valid steps of its forward passes (padding
// is never seen), and of the outputs of cells whose state is not bounded (an LSTM with
// num_proj, a relu RNN); end_int8_calibration() makes them the
// bounds. Run a few representative batches between the two in float32 (or bfloat16), then
// set_precision(Precision::int8). Values beyond a bound are clamped to it.
//
// MixedRightGemm and MixedWeightGemm run a cell's products in the precision it is given at
// each pack or product; the cells keep them in their caches and workspaces. A FrozenCell
// (cells/frozen_cell.hpp) keeps its forward products' weights packed once (ForwardPacking),
// and the caches' products of its passes share them (MixedRightGemm::share()).
#pragma once

#include "bfloat16_gemm.hpp"
#include "int8_gemm.hpp"

#include "../core/check.hpp"
#include "../core/column_sums.hpp"
#include "../core/gemm.hpp"
#include "../core/types.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace dynrnn {

/// \brief The arithmetic of a cell's matrix products; see the file comment.
enum class Precision {
  float32 = 0,   ///< The cell's own scalar type throughout (the default).
  bfloat16 = 1,  ///< Operands rounded to bfloat16, sums and everything else float32 (float cells only).
  int8 = 2,      ///< Inference: operands quantised to int8, sums in int32 (float cells only, calibrated).
};

/// \brief The precision's name: "float32", "bfloat16" or "int8", as the examples' --precision
/// takes it.
inline const char* to_string(Precision precision) {
  return precision == Precision::bfloat16 ? "bfloat16" : precision == Precision::int8 ? "int8" : "float32";
}

/// \brief The precision named `name` ("float32", "bfloat16" or "int8").
/// \throws std::invalid_argument naming `argument` for any other name.
inline Precision precision_from_string(const std::string& name, const char* argument = "precision") {
  if (name == "float32") return Precision::float32;
  if (name == "bfloat16") return Precision::bfloat16;
  if (name == "int8") return Precision::int8;
  detail::throw_argument("precision_from_string", argument, "float32, bfloat16 or int8", "\"" + name + "\"");
}

namespace detail {

/// Throws std::invalid_argument unless a cell of Scalar can run in `precision`.
template <class Scalar>
void check_precision(const char* function, Precision precision) {
  if (precision != Precision::float32 && precision != Precision::bfloat16 && precision != Precision::int8)
    throw_argument(function, "precision", "Precision::float32, Precision::bfloat16 or Precision::int8",
                   std::to_string(int(precision)));
  if (!std::is_same_v<Scalar, float> && precision != Precision::float32)
    throw_argument(function, "precision",
                   std::string("Precision::float32 for a cell of double (") + to_string(precision) + " needs float)",
                   std::string("Precision::") + to_string(precision));
}

/// Throws std::invalid_argument when a backward pass would run in `precision` (int8).
inline void check_trainable(const char* function, Precision precision) {
  if (precision == Precision::int8)
    throw_argument(function, "precision",
                   "Precision::float32 or Precision::bfloat16 (int8 is for inference: set_precision before training)",
                   "Precision::int8");
}

struct NoBf16Gemm {};  // in place of Bf16PackedRightGemm for scalars other than float

// The bfloat16 product of a cell of Scalar: Bf16PackedRightGemm for float, none otherwise.
template <class Scalar>
using Bf16GemmFor = std::conditional_t<std::is_same_v<Scalar, float>, Bf16PackedRightGemm, NoBf16Gemm>;

struct NoInt8Gemm {};  // in place of Int8PackedRightGemm for scalars other than float

// The int8 product of a cell of Scalar: Int8PackedRightGemm for float, none otherwise.
template <class Scalar>
using Int8GemmFor = std::conditional_t<std::is_same_v<Scalar, float>, Int8PackedRightGemm, NoInt8Gemm>;

/// Sets `precision` on every cell of the ranges, or on none when one refuses it.
template <class... Cells>
void set_every_precision(Precision precision, Cells&... cells) {
  (..., [&] { for (const auto& cell : cells) cell.check_precision(precision); }());
  (..., [&] { for (auto& cell : cells) cell.set_precision(precision); }());
}

}  // namespace detail

/// \brief The precision setting every cell has (LSTMCell, GRUCell, RNNCell derive from it):
/// the arithmetic of the cell's matrix products, used from its next forward or backward
/// pass on, and the int8 bounds (see the file comment). Precision::bfloat16 rounds the
/// operands of the input projection, the recurrent product (and an LSTM's projection), the
/// input gradient and the weight gradients to bfloat16 and sums them in float32;
/// Precision::int8 quantises the forward products' operands to int8. The weights, the
/// gradients and the gate arithmetic stay in Scalar.
/// \tparam Scalar the cell's element type; bfloat16 and int8 need float.
///
/// \code
/// cell.begin_int8_calibration();
/// for (const auto& batch : samples) dynamic_rnn(cell, batch.x, batch.lengths);  // float32
/// cell.end_int8_calibration();
/// cell.set_precision(dynrnn::Precision::int8);
/// \endcode
template <class Scalar>
class PrecisionSetting {
 public:
  /// \brief The precision of the cell's products: Precision::float32 (the default),
  /// Precision::bfloat16 or Precision::int8.
  Precision precision() const { return precision_; }
  /// \brief Sets precision().
  /// \throws std::invalid_argument as check_precision() does; nothing changes then.
  void set_precision(Precision precision) {
    check_precision(precision);
    precision_ = precision;
  }
  /// \brief Throws what set_precision(precision) would throw, changing nothing.
  /// \throws std::invalid_argument for an invalid value, for Precision::bfloat16 or
  /// Precision::int8 in a cell of double, or for Precision::int8 before the input's bound is
  /// known (end_int8_calibration() or set_int8_bounds()).
  void check_precision(Precision precision) const {
    detail::check_precision<Scalar>("set_precision", precision);
    if (precision == Precision::int8 && input_bound_ < 0.0f)
      detail::throw_argument("set_precision", "precision",
                             "Precision::int8 after calibration (end_int8_calibration or set_int8_bounds)",
                             "Precision::int8 with no int8 bounds");
  }

  /// \brief Starts recording the largest magnitudes the cell's forward passes see (its input
  /// on valid steps; the output of a projecting LSTM or a relu RNN), forgetting earlier records. Passes that
  /// run while recording must not run at the same time on this cell.
  void begin_int8_calibration() {
    calibrating_ = true;
    seen_ = false;
    seen_input_ = seen_state_ = 0.0f;
  }
  /// \brief Stops recording and makes the records the int8 bounds.
  /// \throws std::logic_error when no forward pass ran since begin_int8_calibration(), or it
  /// was not called.
  void end_int8_calibration() {
    if (!calibrating_ || !seen_)
      throw std::logic_error(std::string("end_int8_calibration: ") +
                             (calibrating_ ? "no forward pass ran since begin_int8_calibration()"
                                           : "begin_int8_calibration() was not called"));
    calibrating_ = false;
    input_bound_ = seen_input_;
    state_bound_ = std::max(seen_state_, 0.0f);
  }
  /// \brief Whether forward passes are being recorded.
  bool int8_calibrating() const { return calibrating_; }
  /// \brief Sets the int8 bounds directly (from an earlier calibration, say): `input` for the
  /// cell's input, `state` for the output of a projecting LSTM or a relu RNN (other cells'
  /// states lie in [-1, 1] and ignore it).
  /// \throws std::invalid_argument when a bound is negative or not finite.
  void set_int8_bounds(float input, float state = 1.0f) {
    int8_scale(input);  // checks the bounds
    int8_scale(state);
    input_bound_ = input;
    state_bound_ = state;
  }
  /// \brief The bound of the cell's input in int8: negative until calibrated.
  float int8_input_bound() const { return input_bound_; }
  /// \brief The bound of a projecting LSTM's or a relu RNN's output in int8 (1 until calibrated).
  float int8_state_bound() const { return state_bound_; }

 protected:
  /// Records a forward pass's input (P, I) and, when not null, its output (P, R), while
  /// calibrating.
  template <class Input, class Output = Input>
  void observe_int8(const Input& x, const Output* output = nullptr) const {
    if (!calibrating_) return;
    seen_ = true;
    if (x.size() > 0) seen_input_ = std::max(seen_input_, float(x.cwiseAbs().maxCoeff()));
    if (output && output->size() > 0) seen_state_ = std::max(seen_state_, float(output->cwiseAbs().maxCoeff()));
  }

  Precision precision_ = Precision::float32;  ///< The setting, read by the cell's passes.
  float input_bound_ = -1.0f;                 ///< int8: the input's bound, negative until known.
  float state_bound_ = 1.0f;                  ///< int8: a projecting LSTM's or relu RNN's output's bound.

 private:
  bool calibrating_ = false;
  // Records of the passes since begin_int8_calibration(); forward() is const.
  mutable bool seen_ = false;
  mutable float seen_input_ = 0.0f, seen_state_ = 0.0f;
};

/// \brief PackedRightGemm in a chosen precision: `C = alpha·A·op(W) + beta·C (+ bias)` with
/// op(W) packed once, in float32 (PackedRightGemm<Scalar>), bfloat16 (Bf16PackedRightGemm)
/// or int8 (Int8PackedRightGemm). A cell's forward and backward products.
/// \tparam Scalar element type; bfloat16 and int8 need float.
template <class Scalar>
class MixedRightGemm {
 public:
  using MatrixRef = Eigen::Ref<Matrix<Scalar>>;             ///< Writable row-major block.
  using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;  ///< Read-only row-major block.

  /// \brief Packs op(W), (K, N), for products in `precision` until the next pack(), with
  /// room for `loop_rows` rows in the workspace of rows() (0 when only operator() runs); in
  /// int8, A's values are taken to lie in [-a_bound, a_bound].
  /// \throws std::invalid_argument when the precision is not one a cell of Scalar can use,
  /// or a_bound is negative or not finite.
  void pack(const ConstMatrixRef& W, Op op, Precision precision, Index loop_rows = 0, float a_bound = 1.0f) {
    detail::check_precision<Scalar>("MixedRightGemm::pack", precision);
    precision_ = precision;
    if constexpr (std::is_same_v<Scalar, float>) {
      if (precision == Precision::bfloat16) {
        reduced_.pack(W, op);
        reduced_.reserve(loop_rows);
        return;
      }
      if (precision == Precision::int8) {
        a_scale_ = int8_scale(a_bound);
        int8_.pack(W, op);
        int8_.reserve(loop_rows, a_scale_);
        return;
      }
    }
    (void)loop_rows;
    (void)a_bound;
    float32_.pack(W, op);
  }

  /// \brief Runs the products in `packed`'s precision on its packing of op(W), which is not
  /// copied, with this object's own workspaces (room for `loop_rows` rows in that of
  /// rows()), until the next pack() or unshare(): the products give the bits `packed`'s own
  /// would. `packed` must stay alive and unpacked meanwhile; it is only read, so passes on
  /// any number of threads may share it at once. A FrozenCell's weights, packed once.
  void share(const MixedRightGemm& packed, Index loop_rows = 0) {
    precision_ = packed.precision_;
    a_scale_ = packed.a_scale_;
    if constexpr (std::is_same_v<Scalar, float>) {
      if (precision_ == Precision::bfloat16) {
        reduced_.share(packed.reduced_);
        reduced_.reserve(loop_rows);
        return;
      }
      if (precision_ == Precision::int8) {
        int8_.share(packed.int8_);
        int8_.reserve(loop_rows, a_scale_);
        return;
      }
    }
    float32_.share(packed.float32_);
  }

  /// \brief Ends share(): nothing is packed afterwards until the next pack(). Does nothing
  /// to an object that packed its own W.
  void unshare() noexcept {
    float32_.unshare();
    if constexpr (std::is_same_v<Scalar, float>) {
      reduced_.unshare();
      int8_.unshare();
    }
  }

  /// \brief `C = alpha·A·op(W) + beta·C (+ bias)`, rows shared between threads.
  /// \param C (n, N).  \param A (n, K).  \param bias N scalars, or null.
  /// \throws std::invalid_argument when the shapes disagree with each other or the packed W.
  void operator()(MatrixRef C, const ConstMatrixRef& A, Scalar alpha = Scalar(1), Scalar beta = Scalar(0),
                  const Scalar* bias = nullptr) {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (precision_ == Precision::bfloat16) return reduced_(C, A, alpha, beta, bias);
      if (precision_ == Precision::int8) return int8_(C, A, a_scale_, alpha, beta, bias);
    }
    float32_(C, A, alpha, beta, bias);
  }

  /// \brief operator() on the calling thread alone, without a bias; threads may call it at
  /// once on disjoint rows of C, each passing as `first` the first of its rows among the
  /// `loop_rows` given to pack() (the bfloat16 and int8 products convert A there).
  /// Arguments are checked in debug builds only; alpha must be 1 in int8.
  void rows(MatrixRef C, const ConstMatrixRef& A, Scalar alpha, Scalar beta, Index first) {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (precision_ == Precision::bfloat16) return reduced_.rows(C, A, alpha, beta, nullptr, first);
      if (precision_ == Precision::int8) {
        eigen_assert(alpha == 1.0f);
        return int8_.rows(C, A, beta, first);
      }
    }
    (void)first;
    float32_.rows(C, A, alpha, beta);
  }

  /// \brief Whether the products take a left operand already rounded to bfloat16
  /// (rounded(), rounded_rows()): in bfloat16 on the AVX-512 BF16 kernels.
  bool takes_rounded() const {
    if constexpr (std::is_same_v<Scalar, float>)
      return precision_ == Precision::bfloat16 && reduced_.isa() == CpuIsa::avx512_core_bf16;
    return false;
  }

  /// \brief `C = A·op(W) + beta·C` for A already rounded to bfloat16 (n rows of K rounded
  /// up to even elements at row stride `lda`): Bf16PackedRightGemm::rounded(), the same bits
  /// as operator() gives for a float32 A that rounds to these values. Only where
  /// takes_rounded().
  /// \throws std::invalid_argument as Bf16PackedRightGemm::rounded() does, and when not
  ///   takes_rounded().
  void rounded(MatrixRef C, const std::uint16_t* a, Index lda, Scalar beta = Scalar(0)) {
    if constexpr (std::is_same_v<Scalar, float>)
      if (precision_ == Precision::bfloat16) return reduced_.rounded(C, a, lda, beta);
    (void)C, (void)a, (void)lda, (void)beta;
    detail::throw_argument("MixedRightGemm::rounded", "precision()", "Precision::bfloat16 in a cell of float",
                           to_string(precision_));
  }

  /// \brief rounded() on the calling thread alone, for threads on disjoint rows of C inside
  /// parallel loops; checked in debug builds only.
  void rounded_rows(MatrixRef C, const std::uint16_t* a, Index lda, Scalar beta) {
    eigen_assert(takes_rounded());
    if constexpr (std::is_same_v<Scalar, float>) reduced_.rounded_rows(C, a, lda, beta);
    (void)C, (void)a, (void)lda, (void)beta;
  }

  /// \brief The precision of the last pack().
  Precision precision() const { return precision_; }

 private:
  PackedRightGemm<Scalar> float32_;
  detail::Bf16GemmFor<Scalar> reduced_;
  detail::Int8GemmFor<Scalar> int8_;
  float a_scale_ = 1.0f;  // int8: A's scale
  Precision precision_ = Precision::float32;
};

/// \brief The weights of a cell's forward products, each packed once in the cell's
/// precision (the cells' pack_forward()): what a FrozenCell keeps, and what the passes on it
/// share (MixedRightGemm::share()) instead of packing their own.
/// \tparam Scalar element type.
template <class Scalar>
struct ForwardPacking {
  MixedRightGemm<Scalar> input;      ///< W_x, for the input projection.
  MixedRightGemm<Scalar> recurrent;  ///< The recurrent product's part of W_h.
  MixedRightGemm<Scalar> extra;      ///< An LSTM's projection, a GRU's candidate part of W_h (reset_before), or unused.
};

namespace detail {

/// The products of one pass that share a ForwardPacking, ended when the pass ends, however
/// it ends: no cache is left reading a FrozenCell's packing after the call.
template <class Scalar>
class ForwardShares {
 public:
  ForwardShares() = default;
  ForwardShares(const ForwardShares&) = delete;
  ForwardShares& operator=(const ForwardShares&) = delete;

  /// Makes `gemm` share `*packed` for this pass, with room for `loop_rows` in rows(), or,
  /// when `packed` is null, packs op(W) into it (MixedRightGemm::pack()).
  template <class W>
  void pack(MixedRightGemm<Scalar>& gemm, const MixedRightGemm<Scalar>* packed, const W& w, Op op,
            Precision precision, Index loop_rows, float a_bound = 1.0f) {
    if (!packed) return gemm.pack(w, op, precision, loop_rows, a_bound);
    eigen_assert(count_ < 3 && packed->precision() == precision);
    gemm.share(*packed, loop_rows);
    shares_[count_++] = &gemm;
  }
  ~ForwardShares() {
    for (; count_ > 0; --count_) shares_[count_ - 1]->unshare();
  }

 private:
  MixedRightGemm<Scalar>* shares_[3] = {};
  int count_ = 0;
};

}  // namespace detail

/// \brief A cell's weight-gradient products `C = alpha·Aᵀ·B + beta·C` in a chosen
/// precision: Gemm<Scalar> in float32; in bfloat16, B (the gate gradients) packed once per
/// call as a Bf16PackedRightGemm's W and each Aᵀ rounded as its left operand.
/// \tparam Scalar element type; bfloat16 needs float.
template <class Scalar>
class MixedWeightGemm {
 public:
  using MatrixRef = Eigen::Ref<Matrix<Scalar>>;             ///< Writable row-major block.
  using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;  ///< Read-only row-major block.

  /// \brief `C = alpha·Aᵀ·B + beta·C`.
  /// \param C (M, N).  \param A (K, M).  \param B (K, N).
  /// \throws std::invalid_argument when the shapes disagree or the precision is not one a
  /// cell of Scalar can use.
  void operator()(MatrixRef C, const ConstMatrixRef& A, const ConstMatrixRef& B, Scalar alpha, Scalar beta,
                  Precision precision) {
    detail::check_precision<Scalar>("MixedWeightGemm", precision);
    detail::check_trainable("MixedWeightGemm", precision);
    if constexpr (std::is_same_v<Scalar, float>) {
      if (precision == Precision::bfloat16) {
        reduced_.pack(B, Op::N);  // transposed_left checks A and C against it
        return reduced_.transposed_left(C, A, alpha, beta);
      }
    }
    float32_(C, A, Op::T, B, Op::N, alpha, beta);
  }

  /// \brief `C1 = alpha·A1ᵀ·B + beta·C1`, `C2 = alpha·A2ᵀ·B + beta·C2` and, with
  /// `column_sums`, `column_sums += alpha·1ᵀ·B` (a bias gradient, always summed in the
  /// cell's scalar type): Gemm::transposed_pair in float32, B packed once for both products
  /// in bfloat16.
  /// \throws std::invalid_argument when the shapes disagree or the precision is not one a
  /// cell of Scalar can use.
  void transposed_pair(MatrixRef C1, const ConstMatrixRef& A1, MatrixRef C2, const ConstMatrixRef& A2,
                       const ConstMatrixRef& B, Scalar alpha, Scalar beta, Scalar* column_sums, Precision precision) {
    constexpr const char* fn = "MixedWeightGemm::transposed_pair";
    detail::check_precision<Scalar>(fn, precision);
    detail::check_trainable(fn, precision);
    if constexpr (std::is_same_v<Scalar, float>) {
      if (precision == Precision::bfloat16) {
        // All checked before the column sums or either product write.
        detail::check_shape(fn, "A1", A1, B.rows(), C1.rows());
        detail::check_shape(fn, "A2", A2, B.rows(), C2.rows());
        detail::check_shape(fn, "C1", C1, A1.cols(), B.cols());
        detail::check_shape(fn, "C2", C2, A2.cols(), B.cols());
        // The column sums from the packing's read of B where they need no alpha.
        const bool with_pack = column_sums && alpha == Scalar(1);
        reduced_.pack(B, Op::N, with_pack ? column_sums : nullptr);
        reduced_.transposed_left(C1, A1, alpha, beta);
        reduced_.transposed_left(C2, A2, alpha, beta);
        if (column_sums && !with_pack)
          detail::add_column_sums<Scalar>(B, Eigen::Map<Vector<Scalar>>(column_sums, B.cols()), alpha);
        return;
      }
    }
    float32_.transposed_pair(C1, A1, C2, A2, B, alpha, beta, column_sums);
  }

  /// \brief Room for a B (K, N) in bfloat16 that its producer writes as it computes it, a
  /// row at a time (Bf16PackedRightGemm::pack_in_place()), so that transposed_pair_in_place()
  /// need not read it back in float32 and pack it.
  /// \returns the packing, or null when `precision` is not bfloat16, Scalar is not float, or
  ///   the kernels cannot take B so (see Bf16PackedRightGemm::pack_in_place()): then the
  ///   caller passes B to transposed_pair().
  std::uint16_t* pack_in_place(Index K, Index N, Precision precision) {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (precision == Precision::bfloat16) return reduced_.pack_in_place(K, N);
    }
    (void)K, (void)N, (void)precision;
    return nullptr;
  }

  /// \brief Where element (k, j) of B lies in the packing pack_in_place() returned, in
  /// elements from its start (Bf16PackedRightGemm::packed_offset()).
  Index packed_offset(Index k, Index j) const {
    if constexpr (std::is_same_v<Scalar, float>) {
      return reduced_.packed_offset(k, j);
    } else {
      (void)k, (void)j;
      return 0;
    }
  }

  /// \brief transposed_pair() in bfloat16 with B already written into the packing that
  /// pack_in_place() returned, and no column sums.
  /// \throws std::invalid_argument when the shapes disagree with the packed B.
  void transposed_pair_in_place(MatrixRef C1, const ConstMatrixRef& A1, MatrixRef C2, const ConstMatrixRef& A2,
                                Scalar alpha, Scalar beta) {
    if constexpr (std::is_same_v<Scalar, float>) {
      reduced_.transposed_left(C1, A1, alpha, beta);
      reduced_.transposed_left(C2, A2, alpha, beta);
    } else {
      (void)C1, (void)A1, (void)C2, (void)A2, (void)alpha, (void)beta;
      detail::throw_argument("MixedWeightGemm::transposed_pair_in_place", "Scalar", "float", "another type");
    }
  }

 private:
  Gemm<Scalar> float32_;
  detail::Bf16GemmFor<Scalar> reduced_;
};

}  // namespace dynrnn
