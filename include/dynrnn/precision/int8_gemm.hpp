// dynrnn: C = alpha · A · W + beta · C (+ bias) with int8 operands and int32 sums, for
// inference.
//
// Quantisation (symmetric, no zero points in the stored values):
//   W  per output column j: scale_w[j] = max_k |W(k, j)| / 127 (1 for a column of zeros),
//      Wq(k, j) = round(W(k, j) / scale_w[j]), in [-127, 127]; done once, by pack().
//   A  per product, with a scale the caller gives (a calibration pass over sample inputs
//      finds it; int8_scale(bound) for values known to lie in [-bound, bound], such as an
//      LSTM's h in [-1, 1]): Aq(i, k) = round(min(max(A(i, k) · (1 / scale_a), -127), 127)),
//      rounding halves to even; NaN becomes -127.
//   C(i, j) = fma(beta, C(i, j), fma(S(i, j), alpha · scale_a · scale_w[j], bias[j] or 0))
//      (the second fma only when beta is not 0), S = Aq · Wq summed exactly in int32, the
//      factor computed once per column and call, each fma rounded once.
//
// The kernels (chosen at pack() by cpu_isa(), cpu_isa.hpp):
//   avx512_core_vnni  vpdpbusd, which sums four u8 · s8 products into each int32 lane: A is
//                     stored as Aq + 128 (u8), W packed in panels of 64 columns with each
//                     column's four consecutive k side by side, and S recovered as the sum
//                     minus 128 · (column sums of Wq). A tile of 6 rows by one panel sits in
//                     24 registers for the whole depth.
//   portable          dynrnn's packed kernel (core/panel_kernel.hpp) on the quantised values:
//                     in float32 while K <= 1040, where every partial sum is an integer
//                     below 2^24 and so exact in any order, and in int32 beyond.
//
// S is an exact integer either way, and the epilogue the same fused float operations, so
// both give the same bits, on any split of the rows between threads. K may be at most
// kMaxDepth, which keeps every int32 sum exact (255 · 127 · K < 2^31).
#pragma once

#include "cpu_isa.hpp"
#include "dot_panels.hpp"

#include "../core/check.hpp"
#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "../core/types.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace dynrnn {

/// \brief The int8 scale of values known to lie in [-bound, bound]: bound / 127 (1 when
/// bound is 0, so that zeros stay zeros).
/// \throws std::invalid_argument when bound is negative or not finite.
inline float int8_scale(float bound) {
  if (!(bound >= 0.0f) || !std::isfinite(bound))
    detail::throw_argument("int8_scale", "bound", ">= 0 and finite", detail::number_string(bound));
  return bound > 0.0f ? bound / 127.0f : 1.0f;
}

namespace detail {

/// x · inverse_scale clamped to [-127, 127] and rounded to the nearest integer, halves to
/// even (NaN to -127): the quantisation of the file comment, in the order the vector code
/// computes it (its max and min keep their second operand when the first is NaN).
inline std::int32_t quantize_int8(float x, float inverse_scale) {
  float v = x * inverse_scale;
  v = v > -127.0f ? v : -127.0f;
  v = v < 127.0f ? v : 127.0f;
  return std::int32_t(std::nearbyint(v));
}

#ifdef DYNRNN_X86_KERNELS
DYNRNN_BEGIN_AVX512_KERNELS
#define DYNRNN_TARGET_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#if defined(__clang__)
#define DYNRNN_VNNI_UNROLL _Pragma("clang loop unroll(full)")
#else
#define DYNRNN_VNNI_UNROLL _Pragma("GCC unroll 8")
#endif

/// The AVX-512 VNNI kernel; see the file comment and dot_panels.hpp. Sizes in bytes.
struct Int8Avx512Kernel : DotPanels<Int8Avx512Kernel, 4> {
  /// Packs Wq (K, N).
  static void pack(std::int8_t* dst, const Matrix<std::int32_t>& wq) {
    DotPanels::pack(dst, wq.rows(), wq.cols(), [&](Index k, Index j) { return std::int8_t(wq(k, j)); });
  }

  /// Quantises rows [0, n) of A (row stride lda) to Aq + 128 at dst (row stride depth(K)),
  /// padded with 128 (a zero) past K.
  DYNRNN_TARGET_AVX512_VNNI static void quantize(std::uint8_t* dst, const float* a, Index lda, Index n, Index K,
                                                 float inverse_scale) {
    const Index Kp = depth(K);
    const __m512 inverse = _mm512_set1_ps(inverse_scale), low = _mm512_set1_ps(-127.0f),
                 high = _mm512_set1_ps(127.0f);
    const __m512i offset = _mm512_set1_epi32(128);
    for (Index i = 0; i < n; ++i) {
      const float* in = a + i * lda;
      std::uint8_t* out = dst + i * Kp;
      for (Index k = 0; k < K; k += kPacket) {
        const Index lanes = std::min<Index>(kPacket, K - k);
        const __mmask16 mask = __mmask16(lanes == kPacket ? 0xffffu : (1u << lanes) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, in + k), inverse);
        v = _mm512_min_ps(_mm512_max_ps(v, low), high);
        const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), offset);  // rounds halves to even
        _mm_mask_storeu_epi8(out + k, mask, _mm512_cvtepi32_epi8(q));
      }
      for (Index k = K; k < Kp; ++k) out[k] = 128;
    }
  }

  /// One product: C (n, N) = scale[j] · (sum − 128 · column_sum[j]) (+ bias) (+ beta · C).
  struct Product {
    float* c;
    Index ldc;
    const std::uint8_t* a;  // Aq + 128, row stride lda (a multiple of 4)
    Index lda;
    const std::int8_t* w;   // packed Wq
    const std::int32_t* column_sums;
    const float* scale;     // alpha · scale_a · scale_w[j]
    const float* bias;
    Index n, K, N;          // K: depth(K) of the packed operands
    float beta;
  };

  /// Rows [i, i + R) by the panel at column j0 of V packets, packed at w (DotPanels::run()).
  template <int R, int V>
  DYNRNN_TARGET_AVX512_VNNI __attribute__((noinline)) static void tile(const Product& p, Index i, Index j0,
                                                                       const std::int8_t* w) {
    // The accumulators as 16 int32 lanes, the type vpdpbusd computes in: GCC keeps an array
    // of __m512i (64-bit lanes), accessed as int32 lanes, on the stack at every k.
    using Lanes = std::int32_t __attribute__((vector_size(64)));
    Lanes acc[R][V];
    DYNRNN_VNNI_UNROLL
    for (int r = 0; r < R; ++r)
      DYNRNN_VNNI_UNROLL
      for (int v = 0; v < V; ++v) acc[r][v] = Lanes(_mm512_setzero_si512());
    const std::uint8_t* a = p.a + i * p.lda;
    const Index quads = p.K / 4;
    for (Index q = 0; q < quads; ++q, w += 4 * V * kPacket) {
      __m512i wq[V];
      DYNRNN_VNNI_UNROLL
      for (int v = 0; v < V; ++v) wq[v] = _mm512_loadu_si512(w + v * 4 * kPacket);
      DYNRNN_VNNI_UNROLL
      for (int r = 0; r < R; ++r) {
        std::int32_t quad;
        std::memcpy(&quad, a + r * p.lda + 4 * q, sizeof quad);
        const __m512i ar = _mm512_set1_epi32(quad);
        DYNRNN_VNNI_UNROLL
        for (int v = 0; v < V; ++v) acc[r][v] = Lanes(_mm512_dpbusd_epi32(__m512i(acc[r][v]), ar, wq[v]));
      }
    }
    const __m512 beta = _mm512_set1_ps(p.beta);
    // Every index a constant once unrolled, so that the accumulators stay in registers (a
    // loop that could leave early keeps a copy of them on the stack at every k).
    DYNRNN_VNNI_UNROLL
    for (int v = 0; v < V; ++v) {
      const Index j = j0 + v * kPacket, lanes = std::min<Index>(kPacket, p.N - j);  // > 0: the panel has V packets
      const __mmask16 mask = __mmask16(lanes == kPacket ? 0xffffu : (1u << lanes) - 1);
      const __m512i offset = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(mask, p.column_sums + j), 7);  // 128 · sum
      const __m512 scale = _mm512_maskz_loadu_ps(mask, p.scale + j);
      const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + j) : _mm512_setzero_ps();
      DYNRNN_VNNI_UNROLL
      for (int r = 0; r < R; ++r) {
        float* c = p.c + (i + r) * p.ldc + j;
        __m512 out = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(__m512i(acc[r][v]), offset)), scale, bias);
        if (p.beta != 0.0f) out = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mask, c), out);
        _mm512_mask_storeu_ps(c, mask, out);
      }
    }
  }
};

#undef DYNRNN_TARGET_AVX512_VNNI
#undef DYNRNN_VNNI_UNROLL
DYNRNN_END_AVX512_KERNELS
#endif  // DYNRNN_X86_KERNELS

}  // namespace detail

/// \brief `C = alpha·A·op(W) + beta·C (+ bias)` with A and W quantised to int8 and the
/// products summed exactly in int32 (see the file comment): about four times the float32
/// rate on CPUs with AVX-512 VNNI, the same bits through a portable kernel elsewhere. For
/// inference. op(W) is quantised and packed once; nothing is allocated once the object has
/// seen its largest shapes. An object keeps workspaces: it runs one product at a time.
///
/// \code
/// dynrnn::Int8PackedRightGemm gemm;
/// gemm.pack(w, dynrnn::Op::N);                  // w (K, N): int8 with a scale per column
/// gemm(c, a, dynrnn::int8_scale(a_bound));      // c (n, N) ≈ a (n, K) · w
/// \endcode
class Int8PackedRightGemm {
 public:
  using MatrixRef = Eigen::Ref<Matrix<float>>;             ///< Writable row-major block.
  using ConstMatrixRef = Eigen::Ref<const Matrix<float>>;  ///< Read-only row-major block.

  /// \brief Deepest product: every int32 sum stays exact (255 · 127 · K < 2^31).
  static constexpr Index kMaxDepth = 66000;

  /// \brief Quantises op(W), (K, N), to int8 with a scale per column and packs it for the
  /// AVX-512 VNNI kernel when cpu_isa() allows it, else for the portable one; this object
  /// then uses those kernels until the next pack(). Allocates only when sizes grow.
  /// \throws std::invalid_argument when K exceeds kMaxDepth or W holds a value that is not
  /// finite.
  void pack(const ConstMatrixRef& W, Op op) {
    constexpr const char* fn = "Int8PackedRightGemm::pack";
    const Index K = op == Op::N ? W.rows() : W.cols(), N = op == Op::N ? W.cols() : W.rows();
    if (K > kMaxDepth)
      detail::throw_argument(fn, "W", "at most " + std::to_string(kMaxDepth) + " rows of op(W)", std::to_string(K));
    if (!W.allFinite()) detail::throw_argument(fn, "W", "finite values", "a NaN or infinity");
    K_ = K;
    N_ = N;
    isa_ = cpu_isa() >= CpuIsa::avx512_core_vnni ? CpuIsa::avx512_core_vnni : CpuIsa::portable;
    const auto w = [&](Index k, Index j) { return op == Op::N ? W(k, j) : W(j, k); };
    weight_scales_.resize(N);
    quantized_.resize(K, N);
    column_sums_.resize(N);
    for (Index j = 0; j < N; ++j) {
      float bound = 0.0f;
      for (Index k = 0; k < K; ++k) bound = std::max(bound, std::abs(w(k, j)));
      weight_scales_[j] = int8_scale(bound);
      const float inverse = 1.0f / weight_scales_[j];
      std::int32_t sum = 0;
      for (Index k = 0; k < K; ++k) sum += quantized_(k, j) = detail::quantize_int8(w(k, j), inverse);
      column_sums_[j] = sum;
    }
    scales_.resize(N);
#ifdef DYNRNN_X86_KERNELS
    if (isa_ == CpuIsa::avx512_core_vnni) {
      const Index size = Fast::packed_size(K, N);
      if (Index(packed_.size()) < size) packed_.resize(std::size_t(size));
      Fast::pack(packed_.data(), quantized_);
      return;
    }
#endif
    if (float_sums()) {
      // Kept: under an external GEMM backend the packed product refers to its operand.
      quantized_float_ = quantized_.cast<float>();
      portable_float_.gemm.pack(quantized_float_, Op::N);
    } else
      portable_int_.gemm.pack(quantized_, Op::N);
  }

  /// \brief `C = alpha·A·op(W) + beta·C`, plus `bias` on every row of C when it is not null,
  /// A quantised with `a_scale` (values beyond ±127·a_scale are clamped). The rows are
  /// shared between threads when the product is large enough; the result does not depend
  /// on how.
  /// \param C (n, N).  \param A (n, K).  \param a_scale > 0 and finite.  \param bias N floats,
  /// or null.
  /// \throws std::invalid_argument when the shapes disagree with each other or the packed W,
  /// or a_scale is not positive and finite.
  void operator()(MatrixRef C, const ConstMatrixRef& A, float a_scale, float alpha = 1.0f, float beta = 0.0f,
                  const float* bias = nullptr) {
    constexpr const char* fn = "Int8PackedRightGemm";
    detail::check_packed_product(fn, K_, N_, C, A);
    if (!(a_scale > 0.0f) || !std::isfinite(a_scale))
      detail::throw_argument(fn, "a_scale", "> 0 and finite", detail::number_string(a_scale));
    const Index n = A.rows();
    if (n == 0 || N_ == 0) return;
    for (Index j = 0; j < N_; ++j) scales_[j] = alpha * a_scale * weight_scales_[j];
    const bool fast = isa_ == CpuIsa::avx512_core_vnni;
    const Index Kq = (K_ + 3) / 4 * 4;
    if (fast && Index(a_u8_.size()) < n * Kq) a_u8_.resize(std::size_t(n * Kq));
    if (!fast && float_sums()) portable_float_.reserve(n, K_, N_);
    if (!fast && !float_sums()) portable_int_.reserve(n, K_, N_);
    const Index granule =
        fast ? detail::kDotTileRows
             : float_sums() ? detail::PanelKernel<float>::kRows : detail::PanelKernel<std::int32_t>::kRows;
    // A quarter of the float32 work per multiply-add where the instructions take four at a time.
    const double work = double(n) * double(N_) * double(K_) * (fast ? 0.25 : 1.0);
    const float inverse = 1.0f / a_scale;
    detail::for_row_shares(n, work, granule,
                           [&](Index begin, Index end) { rows(C, A, inverse, beta, bias, begin, end); });
  }

  /// \brief The kernels chosen at the last pack(): CpuIsa::avx512_core_vnni or
  /// CpuIsa::portable.
  CpuIsa isa() const { return isa_; }

  /// \brief scale_w, one per column of op(W), from the last pack().
  const Vector<float>& weight_scales() const { return weight_scales_; }

 private:
#ifdef DYNRNN_X86_KERNELS
  using Fast = detail::Int8Avx512Kernel;
#endif

  // Rows [begin, end) of the product, on the calling thread.
  void rows(MatrixRef& C, const ConstMatrixRef& A, float inverse, float beta, const float* bias, Index begin,
            Index end) {
    const Index n = end - begin;
#ifdef DYNRNN_X86_KERNELS
    if (isa_ == CpuIsa::avx512_core_vnni) {
      const Index Kq = Fast::depth(K_);
      std::uint8_t* a = a_u8_.data() + begin * Kq;
      Fast::quantize(a, A.data() + begin * A.outerStride(), A.outerStride(), n, K_, inverse);
      Fast::run(Fast::Product{C.data() + begin * C.outerStride(), C.outerStride(), a, Kq, packed_.data(),
                              column_sums_.data(), scales_.data(), bias, n, Kq, N_, beta});
      return;
    }
#endif
    if (float_sums())
      portable_rows(portable_float_, C, A, inverse, beta, bias, begin, end);
    else
      portable_rows(portable_int_, C, A, inverse, beta, bias, begin, end);
  }

  // The portable kernel's operands, with sums in T (float or int32).
  template <class T>
  struct Portable {
    PackedRightGemm<T> gemm;  // Wq
    Matrix<T> a;              // Aq
    Matrix<T> sums;           // Aq · Wq
    void reserve(Index n, Index K, Index N) {
      if (a.rows() < n || a.cols() != K) a.resize(n, K);
      if (sums.rows() < n || sums.cols() != N) sums.resize(n, N);
    }
  };

  template <class T>
  void portable_rows(Portable<T>& portable, MatrixRef& C, const ConstMatrixRef& A, float inverse, float beta,
                     const float* bias, Index begin, Index end) {
    const Index n = end - begin;
    for (Index i = begin; i < end; ++i)
      for (Index k = 0; k < K_; ++k) portable.a(i, k) = T(detail::quantize_int8(A(i, k), inverse));
    auto sums = portable.sums.middleRows(begin, n);
    portable.gemm.rows(sums, portable.a.middleRows(begin, n), T(1), T(0));
    // The fast kernel's epilogue, fused multiply-adds as there.
    for (Index i = begin; i < end; ++i)
      for (Index j = 0; j < N_; ++j) {
        float out = std::fma(float(portable.sums(i, j)), scales_[j], bias ? bias[j] : 0.0f);
        if (beta != 0.0f) out = std::fma(beta, C(i, j), out);
        C(i, j) = out;
      }
  }

  // Deepest product whose float32 sums of quantised products are exact: 127 · 127 · K < 2^24.
  static constexpr Index kFloatExactDepth = 1040;

  // Whether the portable kernel sums in float32 (else in int32).
  bool float_sums() const { return K_ <= kFloatExactDepth; }

  CpuIsa isa_ = CpuIsa::portable;
  Index K_ = 0, N_ = 0;
  Vector<float> weight_scales_;                 // scale_w
  Matrix<std::int32_t> quantized_;              // Wq (K, N)
  Matrix<float> quantized_float_;               // Wq as float32 for the portable kernel
  Vector<std::int32_t> column_sums_;            // sums over k of Wq
  Vector<float> scales_;                        // alpha · scale_a · scale_w, per call
  std::vector<std::int8_t> packed_;             // Wq for the AVX-512 VNNI kernel
  std::vector<std::uint8_t> a_u8_;              // Aq + 128 for the AVX-512 VNNI kernel
  Portable<float> portable_float_;              // the portable kernel while K <= kFloatExactDepth
  Portable<std::int32_t> portable_int_;         // and beyond
};

}  // namespace dynrnn
