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
//
// MixedRightGemm and MixedWeightGemm run a cell's products in the precision it is given at
// each pack or product; the cells keep them in their caches and workspaces.
#pragma once

#include "bfloat16_gemm.hpp"

#include "../core/check.hpp"
#include "../core/column_sums.hpp"
#include "../core/gemm.hpp"
#include "../core/types.hpp"

#include <string>
#include <type_traits>

namespace dynrnn {

/// \brief The arithmetic of a cell's matrix products; see the file comment.
enum class Precision {
  float32 = 0,   ///< The cell's own scalar type throughout (the default).
  bfloat16 = 1,  ///< Operands rounded to bfloat16, sums and everything else float32 (float cells only).
};

/// \brief The precision's name: "float32" or "bfloat16", as the examples' --precision takes it.
inline const char* to_string(Precision precision) {
  return precision == Precision::bfloat16 ? "bfloat16" : "float32";
}

/// \brief The precision named `name` ("float32" or "bfloat16").
/// \throws std::invalid_argument naming `argument` for any other name.
inline Precision precision_from_string(const std::string& name, const char* argument = "precision") {
  if (name == "float32") return Precision::float32;
  if (name == "bfloat16") return Precision::bfloat16;
  detail::throw_argument("precision_from_string", argument, "float32 or bfloat16", "\"" + name + "\"");
}

namespace detail {

/// Throws std::invalid_argument unless a cell of Scalar can run in `precision`.
template <class Scalar>
void check_precision(const char* function, Precision precision) {
  if (precision != Precision::float32 && precision != Precision::bfloat16)
    throw_argument(function, "precision", "Precision::float32 or Precision::bfloat16",
                   std::to_string(int(precision)));
  if (!std::is_same_v<Scalar, float> && precision == Precision::bfloat16)
    throw_argument(function, "precision", "Precision::float32 for a cell of double (bfloat16 needs float)",
                   "Precision::bfloat16");
}

struct NoBf16Gemm {};  // in place of Bf16PackedRightGemm for scalars other than float

// The bfloat16 product of a cell of Scalar: Bf16PackedRightGemm for float, none otherwise.
template <class Scalar>
using Bf16GemmFor = std::conditional_t<std::is_same_v<Scalar, float>, Bf16PackedRightGemm, NoBf16Gemm>;

}  // namespace detail

/// \brief The precision setting every cell has (LSTMCell, GRUCell, RNNCell derive from it):
/// the arithmetic of the cell's matrix products, used from its next forward or backward
/// pass on. Precision::bfloat16 rounds the operands of the input projection, the recurrent
/// product (and an LSTM's projection), the input gradient and the weight gradients to
/// bfloat16 and sums them in float32; the weights, the gradients and the gate arithmetic stay
/// in Scalar.
/// \tparam Scalar the cell's element type; bfloat16 needs float.
template <class Scalar>
class PrecisionSetting {
 public:
  /// \brief The precision of the cell's products: Precision::float32 (the default) or
  /// Precision::bfloat16.
  Precision precision() const { return precision_; }
  /// \brief Sets precision().
  /// \throws std::invalid_argument for an invalid value, or for Precision::bfloat16 in a
  /// cell of double.
  void set_precision(Precision precision) {
    detail::check_precision<Scalar>("set_precision", precision);
    precision_ = precision;
  }

 protected:
  Precision precision_ = Precision::float32;  ///< The setting, read by the cell's passes.
};

/// \brief PackedRightGemm in a chosen precision: `C = alpha·A·op(W) + beta·C (+ bias)` with
/// op(W) packed once, in float32 (PackedRightGemm<Scalar>) or bfloat16
/// (Bf16PackedRightGemm). A cell's forward and backward products.
/// \tparam Scalar element type; bfloat16 needs float.
template <class Scalar>
class MixedRightGemm {
 public:
  using MatrixRef = Eigen::Ref<Matrix<Scalar>>;             ///< Writable row-major block.
  using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;  ///< Read-only row-major block.

  /// \brief Packs op(W), (K, N), for products in `precision` until the next pack(), with
  /// room for `loop_rows` rows in the workspace of rows() (0 when only operator() runs).
  /// \throws std::invalid_argument when the precision is not one a cell of Scalar can use.
  void pack(const ConstMatrixRef& W, Op op, Precision precision, Index loop_rows = 0) {
    detail::check_precision<Scalar>("MixedRightGemm::pack", precision);
    bf16_ = precision == Precision::bfloat16;
    if constexpr (std::is_same_v<Scalar, float>) {
      if (bf16_) {
        reduced_.pack(W, op);
        reduced_.reserve(loop_rows);
        return;
      }
    }
    (void)loop_rows;
    float32_.pack(W, op);
  }

  /// \brief `C = alpha·A·op(W) + beta·C (+ bias)`, rows shared between threads.
  /// \param C (n, N).  \param A (n, K).  \param bias N scalars, or null.
  /// \throws std::invalid_argument when the shapes disagree with each other or the packed W.
  void operator()(MatrixRef C, const ConstMatrixRef& A, Scalar alpha = Scalar(1), Scalar beta = Scalar(0),
                  const Scalar* bias = nullptr) {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (bf16_) return reduced_(C, A, alpha, beta, bias);
    }
    float32_(C, A, alpha, beta, bias);
  }

  /// \brief operator() on the calling thread alone, without a bias; threads may call it at
  /// once on disjoint rows of C, each passing as `first` the first of its rows among the
  /// `loop_rows` given to pack() (the bfloat16 product converts A there). Arguments are
  /// checked in debug builds only.
  void rows(MatrixRef C, const ConstMatrixRef& A, Scalar alpha, Scalar beta, Index first) {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (bf16_) return reduced_.rows(C, A, alpha, beta, nullptr, first);
    }
    (void)first;
    float32_.rows(C, A, alpha, beta);
  }

  /// \brief The precision of the last pack().
  Precision precision() const { return bf16_ ? Precision::bfloat16 : Precision::float32; }

 private:
  PackedRightGemm<Scalar> float32_;
  detail::Bf16GemmFor<Scalar> reduced_;
  bool bf16_ = false;
};

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
    if constexpr (std::is_same_v<Scalar, float>) {
      if (precision == Precision::bfloat16) {
        // Both checked before either product writes.
        detail::check_shape(fn, "A1", A1, B.rows(), C1.rows());
        detail::check_shape(fn, "A2", A2, B.rows(), C2.rows());
        reduced_.pack(B, Op::N);
        reduced_.transposed_left(C1, A1, alpha, beta);
        reduced_.transposed_left(C2, A2, alpha, beta);
        if (column_sums) detail::add_column_sums<Scalar>(B, Eigen::Map<Vector<Scalar>>(column_sums, B.cols()), alpha);
        return;
      }
    }
    float32_.transposed_pair(C1, A1, C2, A2, B, alpha, beta, column_sums);
  }

 private:
  Gemm<Scalar> float32_;
  detail::Bf16GemmFor<Scalar> reduced_;
};

}  // namespace dynrnn
