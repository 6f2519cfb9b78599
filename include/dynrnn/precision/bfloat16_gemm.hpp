// dynrnn: C = alpha · A · W + beta · C (+ bias) with bfloat16 operands and float32 sums.
//
// A (n, K) and op(W) (K, N) are float32 matrices; the product rounds both to bfloat16
// (round to nearest even) and sums their products in float32. W is rounded and packed once
// (pack()), A at every product. C, alpha, beta and the bias stay float32.
//
// The kernels (chosen at pack() by cpu_isa(), cpu_isa.hpp):
//   avx512_core_bf16  vdpbf16ps, which takes two bfloat16 products per float32 lane: W is
//                     packed in panels of 64 columns, each k-pair's two rows interleaved
//                     (W(2q, j), W(2q + 1, j)); a tile of 6 rows of C by one panel sits in 24
//                     registers for the whole depth, and each row's pair (A(r, 2q),
//                     A(r, 2q + 1)) is broadcast as one 32-bit word.
//   portable          dynrnn's float kernel (core/panel_kernel.hpp) on bfloat16-rounded
//                     copies of A and W, built with the program's own flags.
//
// Both give the same bits (for alpha 1 or a power of two and beta 0 or 1, what a layer's
// products need; other values may differ by a rounding of the epilogue, whose
// multiply-adds a compiler may fuse). Every element of C is
//
//   sum = 0;  for q = 0 .. ceil(K / 2) - 1:  sum += a[2q+1]·w[2q+1];  sum += a[2q]·w[2q];
//
// in float32, with a and w rounded to bfloat16 (an odd K's last pair padded with zeros),
// then the epilogue alpha · sum (+ bias) (+ beta · C). A product of two bfloat16 values is
// exact in float32 (8-bit significands), so a fused multiply-add rounds as the separate
// add does, and vdpbf16ps adds a pair's odd product first, then its even one: the portable
// kernel packs each pair swapped to do the same. Only values below float32's normal range
// (about 1.2e-38) may differ: the instructions treat subnormals as zero. The sum order does
// not depend on how rows are shared between threads.
#pragma once

#include "cpu_isa.hpp"
#include "dot_panels.hpp"

#include "../core/check.hpp"
#include "../core/gemm.hpp"
#include "../core/panel_kernel.hpp"
#include "../core/parallel.hpp"
#include "../core/types.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace dynrnn {
namespace detail {

/// `x` rounded to the nearest bfloat16 (ties to even; NaN stays NaN), as a float.
inline float round_to_bfloat16(float x) { return static_cast<float>(Eigen::bfloat16(x)); }

/// The bits of `x` rounded to the nearest bfloat16.
inline std::uint16_t bfloat16_bits(float x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(x)); }

#ifdef DYNRNN_X86_KERNELS
DYNRNN_BEGIN_AVX512_KERNELS
#define DYNRNN_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
// Fully unrolls a tile's loops over rows and registers, so that its accumulators stay in
// registers.
#if defined(__clang__)
#define DYNRNN_BF16_UNROLL _Pragma("clang loop unroll(full)")
#else
#define DYNRNN_BF16_UNROLL _Pragma("GCC unroll 8")
#endif

/// The AVX-512 BF16 kernel; see the file comment and dot_panels.hpp. Sizes in bfloat16
/// elements.
struct Bf16Avx512Kernel : DotPanels<Bf16Avx512Kernel, 2> {
  /// Packs op(W) (K, N), rounded, from w, row stride `stride` ((N, K) when `transposed`).
  static void pack(std::uint16_t* dst, const float* w, Index stride, bool transposed, Index K, Index N) {
    DotPanels::pack(dst, K, N, [&](Index k, Index j) {
      return bfloat16_bits(transposed ? w[j * stride + k] : w[k * stride + j]);
    });
  }

  /// Rounds rows [0, n) of A (n, K), row stride lda, to bfloat16 at dst, row stride depth(K),
  /// with a zero past an odd K.
  DYNRNN_TARGET_AVX512_BF16 static void convert(std::uint16_t* dst, const float* a, Index lda, Index n, Index K) {
    const Index Kp = depth(K);
    for (Index i = 0; i < n; ++i) {
      const float* in = a + i * lda;
      std::uint16_t* out = dst + i * Kp;
      Index k = 0;
      for (; k + kPacket <= K; k += kPacket)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(in + k)));
      if (k < K) {
        const __mmask16 mask = __mmask16((1u << (K - k)) - 1);
        _mm256_mask_storeu_epi16(out + k, mask, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, in + k)));
      }
      if (K % 2) out[K] = 0;
    }
  }

  /// One product: C (n, N) = alpha · A · W + beta · C (+ bias), A already converted (row
  /// stride lda, in elements, even), W packed.
  struct Product {
    float* c;
    Index ldc;
    const std::uint16_t* a;
    Index lda;
    const std::uint16_t* w;
    const float* bias;
    Index n, K, N;  // K: depth(K) of the packed operands
    float alpha, beta;
  };

  /// Rows [i, i + R) by the panel at column j0 of V packets, packed at w (DotPanels::run()).
  template <int R, int V>
  DYNRNN_TARGET_AVX512_BF16 __attribute__((noinline)) static void tile(const Product& p, Index i, Index j0,
                                                                       const std::uint16_t* w) {
    __m512 acc[R][V];
    DYNRNN_BF16_UNROLL
    for (int r = 0; r < R; ++r)
      DYNRNN_BF16_UNROLL
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
    const std::uint16_t* a = p.a + i * p.lda;
    const Index pairs = p.K / 2;
    for (Index q = 0; q < pairs; ++q, w += 2 * V * kPacket) {
      __m512i wq[V];
      DYNRNN_BF16_UNROLL
      for (int v = 0; v < V; ++v) wq[v] = _mm512_loadu_si512(w + v * 2 * kPacket);
      DYNRNN_BF16_UNROLL
      for (int r = 0; r < R; ++r) {
        std::int32_t pair;
        std::memcpy(&pair, a + r * p.lda + 2 * q, sizeof pair);
        const __m512i ar = _mm512_set1_epi32(pair);
        DYNRNN_BF16_UNROLL
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)ar, (__m512bh)wq[v]);
      }
    }
    const __m512 alpha = _mm512_set1_ps(p.alpha), beta = _mm512_set1_ps(p.beta);
    // Every index a constant once unrolled, so that the accumulators stay in registers (a
    // loop that could leave early keeps a copy of them on the stack at every k).
    DYNRNN_BF16_UNROLL
    for (int v = 0; v < V; ++v) {
      const Index j = j0 + v * kPacket, lanes = std::min<Index>(kPacket, p.N - j);  // > 0: the panel has V packets
      const __mmask16 mask = __mmask16(lanes == kPacket ? 0xffffu : (1u << lanes) - 1);
      const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + j) : _mm512_setzero_ps();
      DYNRNN_BF16_UNROLL
      for (int r = 0; r < R; ++r) {
        float* c = p.c + (i + r) * p.ldc + j;
        __m512 out = _mm512_mul_ps(alpha, acc[r][v]);
        if (p.bias) out = _mm512_add_ps(out, bias);
        if (p.beta != 0.0f) out = _mm512_add_ps(out, _mm512_mul_ps(beta, _mm512_maskz_loadu_ps(mask, c)));
        _mm512_mask_storeu_ps(c, mask, out);
      }
    }
  }
};

#undef DYNRNN_TARGET_AVX512_BF16
#undef DYNRNN_BF16_UNROLL
DYNRNN_END_AVX512_KERNELS
#endif  // DYNRNN_X86_KERNELS

}  // namespace detail

/// \brief `C = alpha·A·op(W) + beta·C (+ bias)` with A and W rounded to bfloat16 and the
/// products summed in float32 (see the file comment): twice the float32 rate on CPUs with
/// AVX-512 BF16, the same bits through a portable kernel elsewhere. Like PackedRightGemm,
/// op(W) is packed once and used for any number of products, and nothing is allocated once
/// the object has seen its largest shapes. An object keeps workspaces: it runs one product
/// at a time.
///
/// \code
/// dynrnn::Bf16PackedRightGemm gemm;
/// gemm.pack(w, dynrnn::Op::N);  // w (K, N), rounded to bfloat16 once
/// gemm(c, a);                   // c (n, N) = a (n, K) · w
/// \endcode
class Bf16PackedRightGemm {
 public:
  using MatrixRef = Eigen::Ref<Matrix<float>>;             ///< Writable row-major block.
  using ConstMatrixRef = Eigen::Ref<const Matrix<float>>;  ///< Read-only row-major block.

  /// \brief Rounds op(W), (K, N), to bfloat16 and packs it for the AVX-512 BF16 kernel when
  /// cpu_isa() allows it, else for the portable one; this object then uses those kernels
  /// until the next pack(). Allocates only when the packed size grows; W is not referenced
  /// afterwards.
  void pack(const ConstMatrixRef& W, Op op) {
    K_ = op == Op::N ? W.rows() : W.cols();
    N_ = op == Op::N ? W.cols() : W.rows();
    Kp_ = (K_ + 1) / 2 * 2;
    isa_ = cpu_isa() >= CpuIsa::avx512_core_bf16 ? CpuIsa::avx512_core_bf16 : CpuIsa::portable;
#ifdef DYNRNN_X86_KERNELS
    if (isa_ == CpuIsa::avx512_core_bf16) {
      const Index size = Fast::packed_size(K_, N_);
      if (Index(packed_bf16_.size()) < size) packed_bf16_.resize(std::size_t(size));
      Fast::pack(packed_bf16_.data(), W.data(), W.outerStride(), op == Op::T, K_, N_);
      return;
    }
#endif
    // The portable kernel's W: Kp rows, each pair swapped, rounded (see the file comment).
    if (staged_.rows() != Kp_ || staged_.cols() != N_) staged_.resize(Kp_, N_);
    for (Index k = 0; k < Kp_; ++k)
      for (Index j = 0; j < N_; ++j) {
        const Index from = k ^ 1;  // the other row of the pair
        staged_(k, j) = from >= K_ ? 0.0f : detail::round_to_bfloat16(op == Op::N ? W(from, j) : W(j, from));
      }
    const Index size = Portable::packed_size(Kp_, N_);
    if (packed_float_.size() < size) packed_float_.resize(size);
    Portable::pack_panels(packed_float_.data(), staged_.data(), staged_.outerStride(), false, Kp_, N_);
  }

  /// \brief `C = alpha·A·op(W) + beta·C`, plus `bias` on every row of C when it is not
  /// null; A is rounded to bfloat16 first. The rows are shared between threads when the
  /// product is large enough; the result does not depend on how.
  /// \param C (n, N).  \param A (n, K).  \param bias N floats, or null.
  /// \throws std::invalid_argument when the shapes disagree with each other or the packed W.
  void operator()(MatrixRef C, const ConstMatrixRef& A, float alpha = 1.0f, float beta = 0.0f,
                  const float* bias = nullptr) {
    detail::check_packed_product("Bf16PackedRightGemm", K_, N_, C, A);
    const Index n = A.rows();
    if (n == 0 || N_ == 0) return;
    const bool fast = isa_ == CpuIsa::avx512_core_bf16;
    if (fast && Index(a_bf16_.size()) < n * Kp_) a_bf16_.resize(std::size_t(n * Kp_));
    if (!fast && (a_float_.rows() < n || a_float_.cols() != Kp_)) a_float_.resize(n, Kp_);
    // Half the float32 work per multiply-add where the instructions take two at a time.
    const double work = double(n) * double(N_) * double(K_) * (fast ? 0.5 : 1.0);
    detail::for_row_shares(n, work, fast ? detail::kDotTileRows : Portable::kRows,
                           [&](Index begin, Index end) { rows(C, A, alpha, beta, bias, begin, end); });
  }

  /// \brief The kernels chosen at the last pack(): CpuIsa::avx512_core_bf16 or
  /// CpuIsa::portable.
  CpuIsa isa() const { return isa_; }

 private:
  using Portable = detail::PanelKernel<float>;
#ifdef DYNRNN_X86_KERNELS
  using Fast = detail::Bf16Avx512Kernel;
#endif

  // Rows [begin, end) of the product, on the calling thread.
  void rows(MatrixRef& C, const ConstMatrixRef& A, float alpha, float beta, const float* bias, Index begin,
            Index end) {
    const Index n = end - begin;
#ifdef DYNRNN_X86_KERNELS
    if (isa_ == CpuIsa::avx512_core_bf16) {
      std::uint16_t* a = a_bf16_.data() + begin * Kp_;
      Fast::convert(a, A.data() + begin * A.outerStride(), A.outerStride(), n, K_);
      Fast::run(Fast::Product{C.data() + begin * C.outerStride(), C.outerStride(), a, Kp_, packed_bf16_.data(), bias,
                              n, Kp_, N_, alpha, beta});
      return;
    }
#endif
    for (Index i = begin; i < end; ++i)
      for (Index k = 0; k < Kp_; ++k) {
        const Index from = k ^ 1;
        a_float_(i, k) = from >= K_ ? 0.0f : detail::round_to_bfloat16(A(i, from));
      }
    Portable::run_panels({C.data() + begin * C.outerStride(), C.outerStride(), a_float_.data() + begin * Kp_, Kp_,
                          packed_float_.data(), bias, n, Kp_, N_, alpha, beta});
  }

  CpuIsa isa_ = CpuIsa::portable;
  Index K_ = 0, N_ = 0, Kp_ = 0;
  std::vector<std::uint16_t> packed_bf16_;  // op(W) for the AVX-512 BF16 kernel
  Vector<float> packed_float_;              // op(W) for the portable kernel, in its panels
  Matrix<float> staged_;                    // the portable kernel's W before packing
  std::vector<std::uint16_t> a_bf16_;       // A rounded, for the AVX-512 BF16 kernel
  Matrix<float> a_float_;                   // A rounded and paired, for the portable kernel
};

}  // namespace dynrnn
