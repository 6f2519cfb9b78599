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
//
// Products Aᵀ·B (the weight gradients, Gemm::transposed_pair and op(A) = Aᵀ with op(B) = B)
// and PackedRightGemm, for a right operand fixed over many products (a cell's weights), run
// dynrnn's own kernel instead (panel_kernel.hpp), on Eigen's SIMD packets for the program's
// own flags, or for float on AVX2 or AVX-512 tiles chosen at run time when the program is
// built for a narrower SIMD width (float_tiles.hpp).
//
// Backends: define DYNRNN_GEMM_OPENBLAS (and link OpenBLAS) or DYNRNN_GEMM_ONEDNN (and link
// oneDNN) to hand the products to cblas_?gemm or dnnl_sgemm instead of those kernels; Eigen
// stays in charge of double under oneDNN, which has no double GEMM. Those libraries bring
// their own threads and packing, so PackedRightGemm then simply calls them at every step.
//
// Threads (parallel.hpp): compiled with OpenMP, a product large enough to share is split into
// blocks of columns (or of rows) and the blocks run in parallel, each thread
// with packing buffers of its own. Every thread blocks the inner dimension the
// same way as a single thread would, so each element of C is summed in the
// same order and the result does not depend on the thread count. Products Aᵀ·B
// share their columns in whole panels of dynrnn's kernel, to the same effect.
#pragma once

#include "check.hpp"
#include "column_sums.hpp"
#include "float_tiles.hpp"
#include "panel_kernel.hpp"
#include "parallel.hpp"
#include "reusable_matrix.hpp"
#include "types.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#if defined(DYNRNN_GEMM_OPENBLAS) && defined(DYNRNN_GEMM_ONEDNN)
#error "dynrnn: define at most one of DYNRNN_GEMM_OPENBLAS and DYNRNN_GEMM_ONEDNN"
#endif
#ifdef DYNRNN_GEMM_OPENBLAS
#include <cblas.h>
#endif
#ifdef DYNRNN_GEMM_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

namespace dynrnn {

/// \brief Whether a product operand is used as stored or transposed.
enum class Op {
  N,  ///< as stored
  T,  ///< transposed
};

namespace detail {

/// True when products of `Scalar` go to an external library rather than Eigen's kernel.
template <class Scalar>
constexpr bool external_gemm() {
#if defined(DYNRNN_GEMM_OPENBLAS)
  return std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>;
#elif defined(DYNRNN_GEMM_ONEDNN)
  return std::is_same_v<Scalar, float>;
#else
  return false;
#endif
}

/// C += alpha·op(A)·op(B) through the external library; row-major, leading dimensions given.
template <class Scalar>
void external_gemm(Op op_a, Op op_b, Index M, Index N, Index K, Scalar alpha, const Scalar* a, Index lda,
                   const Scalar* b, Index ldb, Scalar* c, Index ldc) {
#if defined(DYNRNN_GEMM_OPENBLAS)
  const auto ta = op_a == Op::N ? CblasNoTrans : CblasTrans, tb = op_b == Op::N ? CblasNoTrans : CblasTrans;
  if constexpr (std::is_same_v<Scalar, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, blasint(M), blasint(N), blasint(K), alpha, a, blasint(lda), b, blasint(ldb),
                1.0f, c, blasint(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, blasint(M), blasint(N), blasint(K), alpha, a, blasint(lda), b, blasint(ldb),
                1.0, c, blasint(ldc));
#elif defined(DYNRNN_GEMM_ONEDNN)
  if constexpr (std::is_same_v<Scalar, float>)
    dnnl_sgemm(op_a == Op::N ? 'N' : 'T', op_b == Op::N ? 'N' : 'T', M, N, K, alpha, a, lda, b, ldb, 1.0f, c, ldc);
#else
  (void)op_a, (void)op_b, (void)M, (void)N, (void)K, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb, (void)c,
      (void)ldc;
#endif
}

/// C = beta·C, the part of C = alpha·A·B + beta·C done before the product accumulates.
template <class Scalar>
void scale(Eigen::Ref<Matrix<Scalar>>& C, Scalar beta) {
  if (beta == Scalar(0))
    C.setZero();  // not 0·C: C may hold NaN from an earlier use of the buffer
  else if (beta != Scalar(1))
    C *= beta;
}

}  // namespace detail

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

  /// \brief `C = alpha·op(A)·op(B) + beta·C`.
  /// \throws std::invalid_argument when op(A) is not (M, K) and op(B) (K, N) for C (M, N).
  void operator()(MatrixRef C, const ConstMatrixRef& A, Op op_a, const ConstMatrixRef& B, Op op_b,
                  Scalar alpha = Scalar(1), Scalar beta = Scalar(0)) {
    const Index M = C.rows(), N = C.cols();
    const Index K = op_a == Op::N ? A.cols() : A.rows();
    if ((op_a == Op::N ? A.rows() : A.cols()) != M)
      detail::throw_argument("Gemm", "A", "with op(A) of " + std::to_string(M) + " rows (C's rows)",
                             detail::shape_string({A.rows(), A.cols()}));
    if ((op_b == Op::N ? B.rows() : B.cols()) != K || (op_b == Op::N ? B.cols() : B.rows()) != N)
      detail::throw_argument("Gemm", "B", "with op(B) of shape " + detail::shape_string({K, N}),
                             detail::shape_string({B.rows(), B.cols()}) + (op_b == Op::N ? "" : " transposed"));
    if (M == 0 || N == 0) return;
    if constexpr (!detail::external_gemm<Scalar>()) {
      if (op_a == Op::T && op_b == Op::N) {  // a weight gradient: dynrnn's kernel, as transposed_pair()
        const Transposed product{C.data(), C.outerStride(), A.data(), A.outerStride(), M, beta};
        transposed(&product, 1, B, alpha);
        return;
      }
    }
    detail::scale(C, beta);
    if (K == 0) return;
    if constexpr (detail::external_gemm<Scalar>()) {
      detail::external_gemm(op_a, op_b, M, N, K, alpha, A.data(), A.outerStride(), B.data(), B.outerStride(),
                            C.data(), C.outerStride());
    } else {
      dispatch(C, A, op_a, B, op_b, M, N, K, alpha);
    }
  }

  /// \brief `C1 = alpha·A1ᵀ·B + beta·C1` and `C2 = alpha·A2ᵀ·B + beta·C2`: the weight
  /// gradient of a layer whose weights stack two inputs, `[A1, A2]ᵀ · B`, with each slice of
  /// `B` packed once for both products instead of once each. Each element is summed in the
  /// same order as by operator() and whatever the thread count.
  ///
  /// With `column_sums`, also `column_sums += alpha · 1ᵀ·B` (the sums of B's columns: the
  /// bias gradient of the same layer), from the same packed slices of B rather than from
  /// another pass over it; each sum is taken in a fixed order whatever the thread count.
  /// \param C1 (M1, N).  \param A1 (K, M1).
  /// \param C2 (M2, N).  \param A2 (K, M2).
  /// \param B  (K, N).
  /// \param column_sums N scalars, added to; or null.
  /// \throws std::invalid_argument when the shapes disagree.
  void transposed_pair(MatrixRef C1, const ConstMatrixRef& A1, MatrixRef C2, const ConstMatrixRef& A2,
                       const ConstMatrixRef& B, Scalar alpha = Scalar(1), Scalar beta = Scalar(0),
                       Scalar* column_sums = nullptr) {
    constexpr const char* fn = "Gemm::transposed_pair";
    const Index K = B.rows(), N = B.cols();
    detail::check_shape(fn, "A1", A1, K, C1.rows());
    detail::check_shape(fn, "A2", A2, K, C2.rows());
    detail::check_shape(fn, "C1", C1, A1.cols(), N);
    detail::check_shape(fn, "C2", C2, A2.cols(), N);
    if constexpr (!detail::external_gemm<Scalar>()) {
      const Scalar one(1);  // A = 1 (K, 1), row stride 0: 1ᵀ·B
      const Transposed products[] = {
          {C1.data(), C1.outerStride(), A1.data(), A1.outerStride(), C1.rows(), beta},
          {C2.data(), C2.outerStride(), A2.data(), A2.outerStride(), C2.rows(), beta},
          {column_sums, N, &one, 0, 1, Scalar(1)}};
      transposed(products, column_sums ? 3 : 2, B, alpha);
    } else {  // the external libraries: two products, and the sums in a pass of their own
      operator()(C1, A1, Op::T, B, Op::N, alpha, beta);
      operator()(C2, A2, Op::T, B, Op::N, alpha, beta);
      if (column_sums) detail::add_column_sums<Scalar>(B, Eigen::Map<Vector<Scalar>>(column_sums, N), alpha);
    }
  }

 private:
  // Splits C into blocks of whole micro-panels: `kSplit` columns (or rows) at the least.
  static constexpr Index kSplit = 64;
  // Columns of C are rows of Eigen's left operand, which its kernel takes mr at a time and
  // the rest down narrower paths that sum differently: blocks of columns start on multiples
  // of mr, so that every column takes the same path on any thread count.
#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
  static constexpr Index kMr = Eigen::internal::gebp_traits<Scalar, Scalar>::mr;
  static constexpr Index kColumnSplit = (kSplit + kMr - 1) / kMr * kMr;
#else
  static constexpr Index kColumnSplit = kSplit;
#endif
  void dispatch(MatrixRef& C, const ConstMatrixRef& A, Op op_a, const ConstMatrixRef& B, Op op_b, Index M,
                Index N, Index K, Scalar alpha) {
    const double work = double(M) * double(N) * double(K);
    const Index pieces = std::max(M, N) / kSplit;
    const int threads = detail::split_threads(work, pieces);
    reserve(threads);
    const Index kc = depth_blocking(M, N, K);  // the same for every thread's block
    if (threads == 1) {
      block(C, A, op_a, B, op_b, 0, M, 0, N, K, kc, alpha, 0);
      return;
    }
    // Split the longer side of C into one block per thread, in whole multiples of kSplit; or,
    // while the cores are contended and the product is small, run it whole on the caller.
    // That may change from one call to the next, so every slot's packing buffers are made
    // ready for the largest block, the first, and the caller's also for the whole product.
    const bool by_columns = N >= M;
    const Index split = by_columns ? kColumnSplit : kSplit;
    if (prepared_ != std::array<Index, 4>{M, N, K, Index(threads)}) {  // once per shape
      const Index largest = detail::share_of(by_columns ? N : M, 0, threads, split).end;
      for (int slot = 0; slot < threads; ++slot)
        prepare_slot(slot, by_columns ? M : largest, by_columns ? largest : N, K, kc);
      prepare_slot(0, M, N, K, kc);
      prepared_ = {M, N, K, Index(threads)};
    }
    if (detail::threads_for(work, pieces) == 1) {
      block(C, A, op_a, B, op_b, 0, M, 0, N, K, kc, alpha, 0);
      return;
    }
    detail::parallel_parts(threads, threads, [&](Index part, int slot) {
      const auto [begin, end] = detail::share_of(by_columns ? N : M, part, threads, split);
      if (begin >= end) return;
      if (by_columns)
        block(C, A, op_a, B, op_b, 0, M, begin, end - begin, K, kc, alpha, slot);
      else
        block(C, A, op_a, B, op_b, begin, end - begin, 0, N, K, kc, alpha, slot);
    });
  }

  // The depth blocking of a whole (M, N, K) product: it decides the order of the sums, so
  // every thread's block of the product must use this one, not one of its own shape.
  static Index depth_blocking(Index M, Index N, Index K) {
#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
    // C is row-major, so Eigen computes Cᵀ = op(B)ᵀ · op(A)ᵀ: its mc runs over N, nc over M.
    Index kc = K, mc = N, nc = M;
    Eigen::internal::computeProductBlockingSizes<Scalar, Scalar, 1>(kc, mc, nc, Index(1));
    return kc;
#else
    (void)M, (void)N;
    return K;
#endif
  }

  // The rows [r0, r0 + rows) and columns [c0, c0 + cols) of C, on thread slot `slot`, with
  // depth blocking kc.
  void block(MatrixRef& C, const ConstMatrixRef& A, Op op_a, const ConstMatrixRef& B, Op op_b, Index r0,
             Index rows, Index c0, Index cols, Index K, Index kc, Scalar alpha, int slot) {
    Scalar* c = C.data() + r0 * C.outerStride() + c0;
    // Row r of op(A) starts at A(r, 0) as stored, or at column r when transposed; likewise
    // column c of op(B).
    const Scalar* a = op_a == Op::N ? A.data() + r0 * A.outerStride() : A.data() + r0;
    const Scalar* b = op_b == Op::N ? B.data() + c0 : B.data() + c0 * B.outerStride();
    // The storage orders are template arguments of Eigen's kernel: one instantiation each.
    using Rows = std::integral_constant<int, Eigen::RowMajor>;
    using Cols = std::integral_constant<int, Eigen::ColMajor>;
    const auto go = [&](auto order_a, auto order_b) {
      run<decltype(order_a)::value, decltype(order_b)::value>(c, C.outerStride(), a, A.outerStride(), b,
                                                              B.outerStride(), rows, cols, K, kc, alpha, slot);
    };
    if (op_a == Op::N)
      op_b == Op::N ? go(Rows{}, Rows{}) : go(Rows{}, Cols{});
    else
      op_b == Op::N ? go(Cols{}, Rows{}) : go(Cols{}, Cols{});
  }

  using Transposed = detail::PanelTransposed<Scalar>;

  // C_i = alpha·A_iᵀ·B + beta·C_i on dynrnn's kernel (PanelKernel::run_transposed), with the
  // tiles detail::float_tiles() chooses for this product: the columns are shared
  // between the threads in whole panels, each thread with a workspace of its own, so every
  // element is computed the same way on any thread count.
  void transposed(const Transposed* products, int count, const ConstMatrixRef& B, Scalar alpha) {
    detail::with_panel_kernel<Scalar>(detail::float_tiles(), [&](auto kernel) {
      transposed_on<decltype(kernel)>(products, count, B, alpha);
    });
  }
  template <class Kernel>
  void transposed_on(const Transposed* products, int count, const ConstMatrixRef& B, Scalar alpha) {
    const Index K = B.rows(), N = B.cols();
    Index m = 0;
    for (int i = 0; i < count; ++i) m += products[i].m;
    if (m == 0 || N == 0) return;
    if (K == 0) {  // no slice of the depth to apply beta with
      for (int i = 0; i < count; ++i) {
        Eigen::Map<Matrix<Scalar>, 0, Eigen::OuterStride<>> c(products[i].c, products[i].m, N,
                                                              Eigen::OuterStride<>(products[i].ldc));
        MatrixRef ref(c);
        detail::scale(ref, products[i].beta);
      }
      return;
    }
    const Index panels = (N + Kernel::kWidth - 1) / Kernel::kWidth;
    const double work = double(m) * double(N) * double(K);
    const int threads = detail::split_threads(work, panels);
    const std::size_t space = std::size_t(Kernel::transposed_space(m));
    if (spaces_.size() < std::size_t(threads)) spaces_.resize(std::size_t(threads));
    for (int t = 0; t < threads; ++t) detail::grow_flat(spaces_[std::size_t(t)], Index(space));
    // While the cores are contended and the product is small, the caller runs it whole.
    const int running = detail::threads_for(work, panels);
    detail::parallel_parts(running, running, [&](Index part, int slot) {
      const auto [begin, end] = detail::share_of(panels, part, running, 1);
      Kernel::run_transposed(products, count, B.data(), B.outerStride(), K, N, begin * Kernel::kWidth,
                             std::min(N, end * Kernel::kWidth), alpha, spaces_[std::size_t(slot)].data());
    });
  }
  // run_transposed's workspace, one per thread slot, from the buffer cache (a fresh result's
  // workspace takes the memory of one dropped before).
  std::vector<ReusableMatrix<Scalar>> spaces_;

  std::array<Index, 4> prepared_{};  // the last (M, N, K, threads) the slots were made ready for

  // Sizes slot `slot`'s packing buffers for a block of (rows, cols) of C with depth K.
  void prepare_slot(int slot, Index rows, Index cols, Index K, Index kc) {
#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
    blocking_[std::size_t(slot)]->set(rows, cols, K, kc);
#else
    (void)slot, (void)rows, (void)cols, (void)K, (void)kc;
#endif
  }

  // Makes sure there is a packing space for every thread slot.
  void reserve(int threads) {
#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
    while (int(blocking_.size()) < threads) blocking_.push_back(std::make_unique<Blocking>());
#else
    (void)threads;
#endif
  }

  // op(X) of a row-major X is X itself read row-major, or Xᵀ read column-major with the
  // same leading dimension.
  template <int OrderA, int OrderB>
  void run(Scalar* c, Index ldc, const Scalar* a, Index lda, const Scalar* b, Index ldb, Index M, Index N,
           Index K, Index kc, Scalar alpha, int slot) {
#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
    Blocking& blocking = *blocking_[slot];
    blocking.set(M, N, K, kc);
    Eigen::internal::general_matrix_matrix_product<Index, Scalar, OrderA, false, Scalar, OrderB, false,
                                                   Eigen::RowMajor, 1>::run(M, N, K, a, lda, b, ldb, c, 1, ldc,
                                                                            alpha, blocking);
#else
    (void)slot, (void)kc;
    using MapA = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, OrderA>, 0, Eigen::OuterStride<>>;
    using MapB = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, OrderB>, 0, Eigen::OuterStride<>>;
    using MapC = Eigen::Map<Matrix<Scalar>, 0, Eigen::OuterStride<>>;
    MapC(c, M, N, Eigen::OuterStride<>(ldc)).noalias() +=
        alpha * MapA(a, M, K, Eigen::OuterStride<>(lda)) * MapB(b, K, N, Eigen::OuterStride<>(ldb));
#endif
  }

#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
  // Eigen's blocking of one thread's block (M, N, K) of a product: the depth blocking `depth`
  // of the whole product (depth_blocking()), which decides the order of the sums, so that
  // they depend neither on the thread count nor on the shapes multiplied before; the other
  // block sizes from the block's own shape; packing buffers that are kept and only grow.
  class Blocking : public Eigen::internal::level3_blocking<Scalar, Scalar> {
   public:
    void set(Index M, Index N, Index K, Index depth) {
      // C is row-major, so Eigen computes Cᵀ = op(B)ᵀ · op(A)ᵀ: its mc runs over N, nc over M.
      Index kc = K, mc = N, nc = M;
      Eigen::internal::computeProductBlockingSizes<Scalar, Scalar, 1>(kc, mc, nc, Index(1));
      kc = depth;
      this->m_kc = kc;
      this->m_mc = mc;
      this->m_nc = nc;
      detail::grow_flat(a_, kc * mc);
      detail::grow_flat(b_, kc * nc);
      this->m_blockA = a_.data();
      this->m_blockB = b_.data();
    }

   private:
    ReusableMatrix<Scalar> a_, b_;  // from the buffer cache
  };
  std::vector<std::unique_ptr<Blocking>> blocking_;  // one per thread slot
#endif
};

namespace detail {

/// A Gemm context of the calling thread, for layers that have no cache of their own to keep
/// one in (Dense): its buffers grow to the largest product the thread has made and are then
/// reused, so steady-state calls allocate nothing; they are freed when the thread exits.
template <class Scalar>
Gemm<Scalar>& thread_gemm() {
  thread_local Gemm<Scalar> gemm;
  return gemm;
}

}  // namespace detail

/// \brief `C = alpha·A·op(W) + beta·C (+ bias)` for a fixed right operand `W` that is packed
/// once and then multiplied by many left operands: the recurrent weights of a cell, which
/// every time step multiplies, and the input weights, which multiply every packed row.
///
/// With Eigen (the default) it runs dynrnn's own register-tiled kernel (core/panel_kernel.hpp):
/// `W` is packed into panels once (column by column when it has only a few columns), the
/// rows of `A` are read where they are, and `C` is written once, with the bias added and
/// without being read first when beta is 0. Every row of `C` is computed the same way
/// however the rows are split between calls and threads. In float, a program built for a
/// SIMD width narrower than the CPU's (no -march, say) runs AVX2 or AVX-512 tiles, chosen at
/// pack() (core/float_tiles.hpp; isa() tells which).
///
/// \tparam Scalar element type.
///
/// \code
/// dynrnn::PackedRightGemm<float> in, rec;
/// in.pack(W_x, dynrnn::Op::N);             // W_x is (I, 4H)
/// in(gates, x, 1, 0, bias.data());         // gates = x · W_x + biasᵀ on every row
/// rec.pack(W_h, dynrnn::Op::N);            // once per pass: W_h is (H, 4H)
/// rec(gates_t, h_prev_t, 1, 1);            // each step: gates_t += h_prev_t · W_h
/// \endcode
template <class Scalar>
class PackedRightGemm {
 public:
  using MatrixRef = Eigen::Ref<Matrix<Scalar>>;             ///< Writable row-major block.
  using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;  ///< Read-only row-major block.

  /// \brief Packs op(W), (K, N), for the tiles chosen now (isa()). Allocates only when the
  /// packed size grows. Under the external GEMM backends it keeps a pointer to W instead,
  /// which must then outlive the products.
  void pack(const ConstMatrixRef& W, Op op) {
    packed_w_.drop_view();  // after share(): the packing written below is this object's own
    shared_ = false;
    K_ = op == Op::N ? W.rows() : W.cols();
    N_ = op == Op::N ? W.cols() : W.rows();
    if constexpr (detail::external_gemm<Scalar>()) {  // the library packs at every call
      w_data_ = W.data();
      w_stride_ = W.outerStride();
      w_op_ = op;
    } else {
      isa_ = std::is_same_v<Scalar, float> ? detail::float_tiles() : CpuIsa::portable;
      detail::with_panel_kernel<Scalar>(isa_, [&](auto kernel) {
        using Kernel = decltype(kernel);
        const Index size = Kernel::packed_size(K_, N_);
        detail::grow_flat(packed_w_, size);
        Kernel::pack(packed_w_.data(), W.data(), W.outerStride(), op == Op::T, K_, N_);
      });
    }
  }

  /// \brief Runs the products on `packed`'s packing of op(W), which is not copied, until the
  /// next pack() or unshare(): the products give the bits `packed`'s own give. `packed` must
  /// stay alive and unpacked meanwhile; it is only read, so any number of objects may share
  /// it at once, from any threads (a FrozenCell's weights, shared by every pass).
  void share(const PackedRightGemm& packed) {
    detail::view_for_reading(packed_w_, packed.packed_w_);
    isa_ = packed.isa_;
    K_ = packed.K_;
    N_ = packed.N_;
    w_data_ = packed.w_data_;
    w_stride_ = packed.w_stride_;
    w_op_ = packed.w_op_;
    shared_ = true;
  }

  /// \brief Ends share(): nothing is packed afterwards (op(W) is (0, 0)) until the next
  /// pack(). Does nothing to an object that packed its own W.
  void unshare() noexcept {
    if (!shared_) return;
    packed_w_.drop_view();
    K_ = N_ = 0;
    w_data_ = nullptr;
    shared_ = false;
  }

  /// \brief `C = alpha·A·op(W) + beta·C`, plus `bias` on every row of C when it is not null.
  /// The rows are shared between threads when the product is large enough.
  /// \param C (n, N).  \param A (n, K).  \param bias N scalars, or null.
  /// \throws std::invalid_argument when the shapes disagree with each other or the packed W.
  void operator()(MatrixRef C, const ConstMatrixRef& A, Scalar alpha = Scalar(1), Scalar beta = Scalar(0),
                  const Scalar* bias = nullptr) const {
    detail::check_packed_product("PackedRightGemm", K_, N_, C, A);
    if constexpr (detail::external_gemm<Scalar>()) {
      rows(C, A, alpha, beta, bias);  // the external libraries bring their own threads
    } else {
      const Index n = A.rows();
      detail::for_row_shares(n, double(n) * double(N_) * double(K_), row_granule(), [&](Index begin, Index end) {
        rows(C.middleRows(begin, end - begin), A.middleRows(begin, end - begin), alpha, beta, bias);
      });
    }
  }

  /// \brief operator() on the calling thread alone: threads may call this at the same time
  /// on disjoint rows of C. Runs inside parallel loops, where an exception cannot
  /// propagate, so its arguments are checked only in debug builds (eigen_assert).
  void rows(MatrixRef C, const ConstMatrixRef& A, Scalar alpha, Scalar beta, const Scalar* bias = nullptr) const {
    eigen_assert(A.cols() == K_ && C.cols() == N_ && C.rows() == A.rows());
    const Index n = A.rows();
    if (n == 0 || N_ == 0) return;
    if constexpr (detail::external_gemm<Scalar>()) {
      detail::scale(C, beta);  // C = beta·C + bias, then the library adds the product
      if (bias) C.rowwise() += Eigen::Map<const Eigen::Matrix<Scalar, 1, Eigen::Dynamic>>(bias, N_);
      if (K_ == 0) return;
      detail::external_gemm(Op::N, w_op_, n, N_, K_, alpha, A.data(), A.outerStride(), w_data_, w_stride_, C.data(),
                            C.outerStride());
    } else {
      detail::with_panel_kernel<Scalar>(isa_, [&](auto kernel) {
        decltype(kernel)::run({C.data(), C.outerStride(), A.data(), A.outerStride(), packed_w_.data(), bias, n, K_,
                               N_, alpha, beta});
      });
    }
  }

  /// \brief The tiles of the last pack(): CpuIsa::portable for the kernel built with the
  /// program's own flags, CpuIsa::avx2 or CpuIsa::avx512_core for the AVX2 or AVX-512 tiles
  /// chosen at run time (core/float_tiles.hpp).
  CpuIsa isa() const { return isa_; }

  /// \brief Splitting the rows between threads on multiples of this keeps the program's own
  /// kernel on whole register tiles (the tiles chosen at run time take 6 rows: row_granule()).
  /// Any split gives the same results.
  static constexpr Index kRowGranule = detail::PanelKernel<Scalar>::kRows;

  /// \brief Rows of C the tiles of the last pack() take at a time: sharing rows between
  /// threads on multiples of this keeps every share but the last on whole tiles.
  Index row_granule() const { return detail::tile_rows<Scalar>(isa_); }

 private:
  ReusableMatrix<Scalar> packed_w_;  // op(W) in panels (PanelKernel::pack), from the buffer cache
  CpuIsa isa_ = CpuIsa::portable;  // the tiles packed for: float_tiles()
  Index K_ = 0, N_ = 0;
  const Scalar* w_data_ = nullptr;  // external backends: W as given to pack()
  Index w_stride_ = 0;
  Op w_op_ = Op::N;
  bool shared_ = false;  // the packing is another object's (share())
};

}  // namespace dynrnn
