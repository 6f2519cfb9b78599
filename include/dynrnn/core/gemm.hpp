// dynrnn: matrix products that keep their packing buffers.
//
// C = alpha · op(A) · op(B) + beta · C over row-major blocks, op(X) = X or Xᵀ.
//
// Eigen's `C.noalias() += A * B` allocates packing buffers for every product
// larger than its stack limit and frees them again; in a time loop that is a
// malloc/free pair (often an mmap and page faults) per step. Gemm runs the same
// Eigen kernel (general_matrix_matrix_product) with a blocking object that it
// allocates once and then reuses, so products of any shape up to the first
// one's sizes allocate nothing. This uses Eigen's internal product API, which
// is stable within Eigen 3.4; for other versions Gemm falls back to the public
// expression API.
#pragma once

#include "types.hpp"

#include <Eigen/Core>

#include <memory>

namespace dynrnn {

/// \brief Whether a product operand is used as stored or transposed.
enum class Op {
  N,  ///< as stored
  T,  ///< transposed
};

/// \brief A reusable GEMM context: computes `C = alpha·op(A)·op(B) + beta·C` on row-major
/// blocks without allocating once it has been used with the largest shape it will see.
///
/// \tparam Scalar element type.
///
/// \code
/// dynrnn::Gemm<float> gemm;
/// gemm(c, a, dynrnn::Op::N, b, dynrnn::Op::T);         // c = a · bᵀ
/// gemm(c, a, dynrnn::Op::T, b, dynrnn::Op::N, 1, 1);   // c += aᵀ · b
/// \endcode
template <class Scalar>
class Gemm {
 public:
  using MatrixRef = Eigen::Ref<Matrix<Scalar>>;              ///< Writable row-major block.
  using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;   ///< Read-only row-major block.

  /// \brief `C = alpha·op(A)·op(B) + beta·C`. Shapes must agree; they are checked in debug builds.
  void operator()(MatrixRef C, const ConstMatrixRef& A, Op op_a, const ConstMatrixRef& B, Op op_b,
                  Scalar alpha = Scalar(1), Scalar beta = Scalar(0)) {
    const Index M = C.rows(), N = C.cols();
    const Index K = op_a == Op::N ? A.cols() : A.rows();
    eigen_assert((op_a == Op::N ? A.rows() : A.cols()) == M);
    eigen_assert((op_b == Op::N ? B.rows() : B.cols()) == K);
    eigen_assert((op_b == Op::N ? B.cols() : B.rows()) == N);
    if (M == 0 || N == 0) return;
    if (beta == Scalar(0))
      C.setZero();
    else if (beta != Scalar(1))
      C *= beta;
    if (K == 0) return;
    if (op_a == Op::N) {
      if (op_b == Op::N)
        run<Eigen::RowMajor, Eigen::RowMajor>(C, A, B, M, N, K, alpha);
      else
        run<Eigen::RowMajor, Eigen::ColMajor>(C, A, B, M, N, K, alpha);
    } else {
      if (op_b == Op::N)
        run<Eigen::ColMajor, Eigen::RowMajor>(C, A, B, M, N, K, alpha);
      else
        run<Eigen::ColMajor, Eigen::ColMajor>(C, A, B, M, N, K, alpha);
    }
  }

 private:
  // op(X) of a row-major X is X itself read row-major, or Xᵀ read column-major with the
  // same leading dimension.
  template <int OrderA, int OrderB>
  void run(MatrixRef& C, const ConstMatrixRef& A, const ConstMatrixRef& B, Index M, Index N, Index K,
           Scalar alpha) {
#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
    if (!blocking_ || M > rows_ || N > cols_ || K > depth_) {
      rows_ = std::max(rows_, M);
      cols_ = std::max(cols_, N);
      depth_ = std::max(depth_, K);
      blocking_ = std::make_unique<Blocking>(rows_, cols_, depth_, 1, true);
      blocking_->allocateAll();
    }
    Eigen::internal::general_matrix_matrix_product<Index, Scalar, OrderA, false, Scalar, OrderB, false,
                                                   Eigen::RowMajor, 1>::run(M, N, K, A.data(), A.outerStride(),
                                                                            B.data(), B.outerStride(), C.data(), 1,
                                                                            C.outerStride(), alpha, *blocking_);
#else
    using MapA = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, OrderA>, 0, Eigen::OuterStride<>>;
    using MapB = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, OrderB>, 0, Eigen::OuterStride<>>;
    C.noalias() += alpha * MapA(A.data(), M, K, Eigen::OuterStride<>(A.outerStride())) *
                   MapB(B.data(), K, N, Eigen::OuterStride<>(B.outerStride()));
#endif
  }

#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
  using Blocking = Eigen::internal::gemm_blocking_space<Eigen::RowMajor, Scalar, Scalar, Eigen::Dynamic,
                                                        Eigen::Dynamic, Eigen::Dynamic>;
  std::unique_ptr<Blocking> blocking_;
  Index rows_ = 0, cols_ = 0, depth_ = 0;
#endif
};

}  // namespace dynrnn
