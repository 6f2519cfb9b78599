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
//                     below 2^24 and so exact in any order, and in int32 beyond. The
//                     float32 products run on the tiles PackedRightGemm<float> chooses
//                     (core/float_tiles.hpp): AVX2 or AVX-512 on a CPU without VNNI that
//                     has them.
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
#include "../core/reusable_matrix.hpp"
#include "../core/types.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <algorithm>

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

/// The AVX-512 VNNI kernel; see the file comment and dot_panels.hpp. Sizes in bytes.
struct Int8Avx512Kernel : DotPanels<Int8Avx512Kernel, 4> {
  /// Packs Wq (K, N).
  static void pack(std::int8_t* dst, const Matrix<std::int32_t>& wq) {
    DotPanels::pack(dst, wq.rows(), wq.cols(), [&](Index k, Index j) { return std::int8_t(wq(k, j)); });
  }

  /// Quantises W (K, N) as stored (row stride ldw), column j with inverse[j], and packs the
  /// panels [first, last) of kWidth columns at dst, with zeros past K and N; writes the
  /// column sums of Wq for those panels' columns to sums. Four rows of sixteen columns at a
  /// time: rounded as quantize() rounds, then interleaved so that each column's four k sit
  /// side by side.
  DYNRNN_TARGET_AVX512_VNNI static void pack_rows(std::int8_t* dst, std::int32_t* sums, const float* w, Index ldw,
                                                  Index K, Index N, const float* inverse, Index first, Index last) {
    const Index Kp = depth(K);
    const __m512 low = _mm512_set1_ps(-127.0f), high = _mm512_set1_ps(127.0f);
    for (Index panel = first; panel < last; ++panel) {
      const Index j0 = panel * kWidth;
      const int packets = packets_at(j0, N);
      const Index width = Index(packets) * kPacket;
      std::int8_t* out = dst + j0 * Kp;  // every panel before this one is kWidth wide
      for (int v = 0; v < packets; ++v) {
        const Index j = j0 + v * kPacket, lanes = std::min<Index>(kPacket, N - j);
        const __mmask16 mask = first_lanes(lanes);
        const __m512 scale = _mm512_maskz_loadu_ps(mask, inverse + j);
        __m512i sum = _mm512_setzero_si512();
        for (Index k = 0; k < Kp; k += 4) {
          __m128i q[4];
          for (int r = 0; r < 4; ++r) {
            const __m512 x = k + r < K ? _mm512_maskz_loadu_ps(mask, w + (k + r) * ldw + j) : _mm512_setzero_ps();
            const __m512i qi = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, scale), low), high));
            sum = _mm512_add_epi32(sum, qi);
            q[r] = _mm512_cvtepi32_epi8(qi);
          }
          const __m128i lo01 = _mm_unpacklo_epi8(q[0], q[1]), hi01 = _mm_unpackhi_epi8(q[0], q[1]);
          const __m128i lo23 = _mm_unpacklo_epi8(q[2], q[3]), hi23 = _mm_unpackhi_epi8(q[2], q[3]);
          __m128i* to = reinterpret_cast<__m128i*>(out + k * width + 4 * v * kPacket);
          _mm_storeu_si128(to, _mm_unpacklo_epi16(lo01, lo23));      // columns 0-3, k..k+3 each
          _mm_storeu_si128(to + 1, _mm_unpackhi_epi16(lo01, lo23));  // 4-7
          _mm_storeu_si128(to + 2, _mm_unpacklo_epi16(hi01, hi23));  // 8-11
          _mm_storeu_si128(to + 3, _mm_unpackhi_epi16(hi01, hi23));  // 12-15
        }
        _mm512_mask_storeu_epi32(sums + j, mask, sum);
      }
    }
  }

  /// x · inverse clamped to [-127, 127], rounded (halves to even) and offset by 128, as the
  /// bytes of a 128-bit register.
  DYNRNN_TARGET_AVX512_VNNI static __m128i quantize_packet(__m512 x, __m512 inverse) {
    const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, inverse), _mm512_set1_ps(-127.0f)),
                                   _mm512_set1_ps(127.0f));
    return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(128)));
  }

  /// Quantises rows [0, n) of A (row stride lda) to Aq + 128 at dst (row stride depth(K)),
  /// padded with 128 (a zero) past K. Whole packets are stored whole: a masked store of the
  /// narrowed bytes (vpmovdb to memory) took this loop 1.7 times as long where measured.
  DYNRNN_TARGET_AVX512_VNNI static void quantize(std::uint8_t* dst, const float* a, Index lda, Index n, Index K,
                                                 float inverse_scale) {
    const Index Kp = depth(K);
    const __m512 inverse = _mm512_set1_ps(inverse_scale);
    for (Index i = 0; i < n; ++i) {
      const float* in = a + i * lda;
      std::uint8_t* out = dst + i * Kp;
      Index k = 0;
      for (; k + kPacket <= K; k += kPacket)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), quantize_packet(_mm512_loadu_ps(in + k), inverse));
      if (k < K) {
        const __mmask16 mask = first_lanes(K - k);
        _mm_mask_storeu_epi8(out + k, mask, quantize_packet(_mm512_maskz_loadu_ps(mask, in + k), inverse));
      }
      for (Index p = K; p < Kp; ++p) out[p] = 128;
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
    DYNRNN_UNROLL
    for (int r = 0; r < R; ++r)
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) acc[r][v] = Lanes(_mm512_setzero_si512());
    const std::uint8_t* a = p.a + i * p.lda;
    prefetch_c_tile<R, V, kPacket>(p.c, p.ldc, i, j0, p.N);
    const Index quads = p.K / 4;
    for (Index q = 0; q < quads; ++q, w += 4 * V * kPacket) {
      __m512i wq[V];
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) wq[v] = _mm512_loadu_si512(w + v * 4 * kPacket);
      DYNRNN_UNROLL
      for (int r = 0; r < R; ++r) {
        std::int32_t quad;
        std::memcpy(&quad, a + r * p.lda + 4 * q, sizeof quad);
        const __m512i ar = _mm512_set1_epi32(quad);
        DYNRNN_UNROLL
        for (int v = 0; v < V; ++v) acc[r][v] = Lanes(_mm512_dpbusd_epi32(__m512i(acc[r][v]), ar, wq[v]));
      }
    }
    const __m512 beta = _mm512_set1_ps(p.beta);
    // Every index a constant once unrolled, so that the accumulators stay in registers (a
    // loop that could leave early keeps a copy of them on the stack at every k).
    DYNRNN_UNROLL
    for (int v = 0; v < V; ++v) {
      const Index j = j0 + v * kPacket, lanes = std::min<Index>(kPacket, p.N - j);  // > 0: the panel has V packets
      const __mmask16 mask = first_lanes(lanes);
      const __m512i offset = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(mask, p.column_sums + j), 7);  // 128 · sum
      const __m512 scale = _mm512_maskz_loadu_ps(mask, p.scale + j);
      const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + j) : _mm512_setzero_ps();
      DYNRNN_UNROLL
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
DYNRNN_END_AVX512_KERNELS
#endif  // DYNRNN_X86_KERNELS

}  // namespace detail

/// \brief `C = alpha·A·op(W) + beta·C (+ bias)` with A and W quantised to int8 and the
/// products summed exactly in int32 (see the file comment): about four times the float32
/// rate on CPUs with AVX-512 VNNI, the same bits through a portable kernel elsewhere. For
/// inference. op(W) is quantised and packed once; nothing is allocated once the object has
/// seen its largest shapes. An object keeps workspaces: it runs one product at a time,
/// except rows(), which threads may call at once on disjoint workspace rows.
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
  /// then uses those kernels until the next pack(). Allocates only when sizes grow; W is not
  /// referenced afterwards.
  /// \throws std::invalid_argument when K exceeds kMaxDepth (the last pack stays) or W holds
  /// a value that is not finite (nothing stays packed).
  void pack(const ConstMatrixRef& W, Op op) {
    constexpr const char* fn = "Int8PackedRightGemm::pack";
    const Index K = op == Op::N ? W.rows() : W.cols(), N = op == Op::N ? W.cols() : W.rows();
    if (K > kMaxDepth)
      detail::throw_argument(fn, "W", "at most " + std::to_string(kMaxDepth) + " rows of op(W)", std::to_string(K));
    end_share();
    K_ = K;
    N_ = N;
    reserved_ = 0;  // the workspaces' rows were sized for the last depth
    isa_ = cpu_isa() >= CpuIsa::avx512_core_vnni ? CpuIsa::avx512_core_vnni : CpuIsa::portable;
    // scale_w[j] = int8_scale(max_k |op(W)(k, j)|), from the largest magnitude of each column.
    weight_scales_.resize(N);
    inverse_scales_.resize(N);
    bool finite = true;
    if (K == 0) {
      weight_scales_.setZero();
    } else if (op == Op::N) {  // row by row: contiguous, where a column of a row-major W is strided
      inverse_scales_.setZero();  // here 0 · W summed: NaN where W holds a NaN or an infinity
      weight_scales_.setZero();
      for (Index k = 0; k < K; ++k) {
        weight_scales_ = weight_scales_.cwiseMax(W.row(k).cwiseAbs().transpose());
        inverse_scales_ += 0.0f * W.row(k).transpose();
      }
      finite = inverse_scales_.allFinite();
    } else {
      finite = W.allFinite();
      if (finite) weight_scales_ = W.cwiseAbs().rowwise().maxCoeff();
    }
    if (!finite) {
      K_ = N_ = 0;  // nothing packed
      detail::throw_argument(fn, "W", "finite values", "a NaN or infinity");
    }
    for (Index j = 0; j < N; ++j) {
      weight_scales_[j] = int8_scale(weight_scales_[j]);
      inverse_scales_[j] = 1.0f / weight_scales_[j];
    }
    column_sums_.resize(N);
    scales_.resize(N);
    loop_scales_.resize(N);
#ifdef DYNRNN_X86_KERNELS
    if (isa_ == CpuIsa::avx512_core_vnni && op == Op::N) {  // W as stored: the vector packing
      detail::grow_flat(packed_, Fast::packed_size(K, N));
      const Index panels = (N + Fast::kWidth - 1) / Fast::kWidth;
      // Quantising and interleaving cost about as much as 8 multiply-adds per element.
      detail::for_row_shares(panels, 8.0 * double(K) * double(N), 1, [&](Index first, Index last) {
        Fast::pack_rows(packed_.data(), column_sums_.data(), W.data(), W.outerStride(), K, N, inverse_scales_.data(),
                        first, last);
      });
      return;
    }
#endif
    const auto w = [&](Index k, Index j) { return op == Op::N ? W(k, j) : W(j, k); };
    quantized_.resize(K, N);
    for (Index k = 0; k < K; ++k)
      for (Index j = 0; j < N; ++j) quantized_(k, j) = detail::quantize_int8(w(k, j), inverse_scales_[j]);
    column_sums_ = quantized_.colwise().sum().transpose();
#ifdef DYNRNN_X86_KERNELS
    if (isa_ == CpuIsa::avx512_core_vnni) {
      detail::grow_flat(packed_, Fast::packed_size(K, N));
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

  /// \brief Runs the products on `packed`'s quantised and packed op(W) and its kernels,
  /// which are not copied (only its N scales and column sums are), with this object's own
  /// workspaces, until the next pack() or unshare(): the products give the bits `packed`'s
  /// own give. `packed` must stay alive and unpacked meanwhile; it is only read, so any
  /// number of objects may share it at once. Allocates only when N grows.
  void share(const Int8PackedRightGemm& packed) {
    detail::view_for_reading(packed_, packed.packed_);
    portable_float_.gemm.share(packed.portable_float_.gemm);
    portable_int_.gemm.share(packed.portable_int_.gemm);
    isa_ = packed.isa_;
    K_ = packed.K_;
    N_ = packed.N_;
    reserved_ = 0;
    weight_scales_ = packed.weight_scales_;
    column_sums_ = packed.column_sums_;
    scales_.resize(N_);
    loop_scales_.resize(N_);
    shared_ = true;
  }

  /// \brief Ends share(): nothing is packed afterwards (op(W) is (0, 0)) until the next
  /// pack(). Does nothing to an object that packed its own W.
  void unshare() noexcept {
    if (!shared_) return;
    end_share();
    K_ = N_ = 0;
    reserved_ = 0;
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
    check_scale(fn, a_scale);
    const Index n = A.rows();
    if (n == 0 || N_ == 0) return;
    for (Index j = 0; j < N_; ++j) scales_[j] = alpha * a_scale * weight_scales_[j];
    reserve_rows(n);
    // A quarter of the float32 work per multiply-add where the instructions take four at a time.
    const double work = double(n) * double(N_) * double(K_) * (isa_ == CpuIsa::avx512_core_vnni ? 0.25 : 1.0);
    const float inverse = 1.0f / a_scale;
    detail::for_row_shares(n, work, row_granule(), [&](Index begin, Index end) {
      run_rows(C.data() + begin * C.outerStride(), C.outerStride(), A.data() + begin * A.outerStride(),
               A.outerStride(), end - begin, scales_.data(), inverse, beta, bias, begin);
    });
  }

  /// \brief Prepares rows(): makes room for `n` rows of A in the workspace and sets the
  /// scale rows() quantises A with (alpha 1).
  /// \throws std::invalid_argument when a_scale is not positive and finite.
  void reserve(Index n, float a_scale) {
    check_scale("Int8PackedRightGemm::reserve", a_scale);
    for (Index j = 0; j < N_; ++j) loop_scales_[j] = a_scale * weight_scales_[j];
    loop_inverse_ = 1.0f / a_scale;
    reserve_rows(n);
  }

  /// \brief `C = A·op(W) + beta·C` on the calling thread alone, A quantised with the scale
  /// given to reserve() in workspace rows [first, first + A.rows()), which reserve() must
  /// have made room for: threads may call this at the same time on disjoint rows of C with
  /// disjoint workspace rows. Runs inside parallel loops, where an exception cannot
  /// propagate, so its arguments are checked only in debug builds (eigen_assert).
  void rows(MatrixRef C, const ConstMatrixRef& A, float beta, Index first) {
    eigen_assert(A.cols() == K_ && C.cols() == N_ && C.rows() == A.rows());
    eigen_assert(first >= 0 && first + A.rows() <= reserved_);
    run_rows(C.data(), C.outerStride(), A.data(), A.outerStride(), A.rows(), loop_scales_.data(), loop_inverse_,
             beta, nullptr, first);
  }

  /// \brief The kernels chosen at the last pack(): CpuIsa::avx512_core_vnni or
  /// CpuIsa::portable.
  CpuIsa isa() const { return isa_; }

  /// \brief Rows of C the kernels take at a time: sharing rows between threads on multiples
  /// of this keeps every share but the last on whole tiles. Any split gives the same bits.
  Index row_granule() const {
    return isa_ == CpuIsa::avx512_core_vnni ? detail::kDotTileRows
           : float_sums()                   ? portable_float_.gemm.row_granule()
                                            : portable_int_.gemm.row_granule();
  }

  /// \brief scale_w, one per column of op(W), from the last pack().
  const Vector<float>& weight_scales() const { return weight_scales_; }

 private:
#ifdef DYNRNN_X86_KERNELS
  using Fast = detail::Int8Avx512Kernel;
#endif

  static void check_scale(const char* fn, float a_scale) {
    if (!(a_scale > 0.0f) || !std::isfinite(a_scale))
      detail::throw_argument(fn, "a_scale", "> 0 and finite", detail::number_string(a_scale));
  }

  // Own storage for the packing again, before it is written (after share()).
  void end_share() noexcept {
    packed_.drop_view();
    portable_float_.gemm.unshare();
    portable_int_.gemm.unshare();
    shared_ = false;
  }

  // Room for n rows of the quantised A (and the portable kernel's sums).
  void reserve_rows(Index n) {
    if (isa_ == CpuIsa::avx512_core_vnni) {
      detail::grow_flat(a_u8_, n * ((K_ + 3) / 4 * 4));  // rows of depth(K) bytes
    } else if (float_sums()) {
      portable_float_.reserve(n, K_, N_);
    } else {
      portable_int_.reserve(n, K_, N_);
    }
    reserved_ = std::max(reserved_, n);
  }

  // n rows of the product on the calling thread (rows of A at a, stride lda; of C at c,
  // stride ldc), A quantised in workspace rows [first, first + n).
  void run_rows(float* c, Index ldc, const float* a, Index lda, Index n, const float* scales, float inverse,
                float beta, const float* bias, Index first) {
    if (n == 0 || N_ == 0) return;
#ifdef DYNRNN_X86_KERNELS
    if (isa_ == CpuIsa::avx512_core_vnni) {
      const Index Kq = Fast::depth(K_);
      std::uint8_t* q = a_u8_.data() + first * Kq;
      Fast::quantize(q, a, lda, n, K_, inverse);
      Fast::run(Fast::Product{c, ldc, q, Kq, packed_.data(), column_sums_.data(), scales, bias, n, Kq, N_, beta});
      return;
    }
#endif
    if (float_sums())
      portable_rows(portable_float_, c, ldc, a, lda, n, scales, inverse, beta, bias, first);
    else
      portable_rows(portable_int_, c, ldc, a, lda, n, scales, inverse, beta, bias, first);
  }

  // The portable kernel's operands, with sums in T (float or int32), as flat buffers of
  // rows of K (Aq) and N (Aq · Wq).
  template <class T>
  struct Portable {
    PackedRightGemm<T> gemm;  // Wq
    ReusableMatrix<T> a;      // Aq
    ReusableMatrix<T> sums;   // Aq · Wq
    void reserve(Index n, Index K, Index N) {
      detail::grow_flat(a, n * K);
      detail::grow_flat(sums, n * N);
    }
  };

  template <class T>
  void portable_rows(Portable<T>& portable, float* c, Index ldc, const float* a, Index lda, Index n,
                     const float* scales, float inverse, float beta, const float* bias, Index first) {
    using Rows = Eigen::Map<Matrix<T>>;
    Rows q(portable.a.data() + first * K_, n, K_), sums(portable.sums.data() + first * N_, n, N_);
    for (Index i = 0; i < n; ++i)
      for (Index k = 0; k < K_; ++k) q(i, k) = T(detail::quantize_int8(a[i * lda + k], inverse));
    portable.gemm.rows(sums, q, T(1), T(0));
    // The fast kernel's epilogue, fused multiply-adds as there.
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < N_; ++j) {
        float& out = c[i * ldc + j];
        float value = std::fma(float(sums(i, j)), scales[j], bias ? bias[j] : 0.0f);
        if (beta != 0.0f) value = std::fma(beta, out, value);
        out = value;
      }
  }

  // Deepest product whose float32 sums of quantised products are exact: 127 · 127 · K < 2^24.
  static constexpr Index kFloatExactDepth = 1040;

  // Whether the portable kernel sums in float32 (else in int32).
  bool float_sums() const { return K_ <= kFloatExactDepth; }

  CpuIsa isa_ = CpuIsa::portable;
  Index K_ = 0, N_ = 0;
  Index reserved_ = 0;                          // rows of A the workspace holds at this depth
  bool shared_ = false;                         // the packing is another object's (share())
  Vector<float> weight_scales_;                 // scale_w
  Vector<float> inverse_scales_;                // 1 / scale_w
  Matrix<std::int32_t> quantized_;              // Wq (K, N), but for the vector packing
  Matrix<float> quantized_float_;               // Wq as float32 for the portable kernel
  Vector<std::int32_t> column_sums_;            // sums over k of Wq
  Vector<float> scales_;                        // alpha · scale_a · scale_w, per call of operator()
  Vector<float> loop_scales_;                   // scale_a · scale_w for rows(), set by reserve()
  float loop_inverse_ = 1.0f;                   // 1 / scale_a for rows()
  // Flat buffers from dynrnn's buffer cache, as in Bf16PackedRightGemm: a workspace made
  // and dropped with every call of the returning forms reuses memory.
  ReusableMatrix<std::int8_t> packed_;          // Wq for the AVX-512 VNNI kernel
  ReusableMatrix<std::uint8_t> a_u8_;           // Aq + 128 for the AVX-512 VNNI kernel
  Portable<float> portable_float_;              // the portable kernel while K <= kFloatExactDepth
  Portable<std::int32_t> portable_int_;         // and beyond
};

}  // namespace dynrnn
