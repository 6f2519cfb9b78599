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
//                     copies of A and W, on the float32 tiles float_tiles() chooses at
//                     pack() (core/float_tiles.hpp): AVX2 or AVX-512 ones on a CPU without
//                     BF16 that has them, else those built with the program's own flags.
//
// Both give the same bits (for alpha 1 or a power of two and beta 0 or 1, what a layer's
// products need; other values may differ by a rounding of the epilogue, whose
// multiply-adds a compiler may fuse). Every element of C is
//
//   sum = 0;  for q = 0 .. ceil(K / 2) - 1:  sum += a[2q+1]·w[2q+1];  sum += a[2q]·w[2q];
//
// in float32, with a and w rounded to bfloat16 (an odd K's last pair padded with zeros),
// then the epilogue alpha · sum (+ bias) (+ beta · C). A product deeper than
// kMaxSliceDepth (the weight gradients, whose depth is every (row, step) of a batch) runs
// in slices of depth: each slice's sum as above, the first with that epilogue, every later
// one with alpha · sum + C (detail::slice_depth() sets where they start). A slice of W then
// stays in cache across the rows of A, where a whole panel of W of several MB would be read
// from memory again for every block of rows of A; in float32, PanelKernel::run_transposed()
// slices its depth the same way.
//
// A product of two bfloat16 values is exact in float32 (8-bit significands), so a fused
// multiply-add rounds as the separate add does, and vdpbf16ps adds a pair's odd product
// first, then its even one: the portable kernel packs each pair swapped to do the same.
// Only values below float32's normal range (about 1.2e-38) may differ: the instructions
// treat subnormals as zero. The sum order does not depend on how rows are shared between
// threads.
#pragma once

#include "cpu_isa.hpp"
#include "dot_panels.hpp"

#include "../core/check.hpp"
#include "../core/column_sums.hpp"
#include "../core/float_tiles.hpp"
#include "../core/gemm.hpp"
#include "../core/panel_kernel.hpp"
#include "../core/parallel.hpp"
#include "../core/reusable_matrix.hpp"
#include "../core/types.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

namespace dynrnn {
namespace detail {

/// The largest depth Bf16PackedRightGemm multiplies in one pass (see the file comment): a
/// slice of a panel of W is then at most 128 KiB, which stays in the L2 cache while the
/// tiles of a block of rows of A read it.
inline constexpr Index kMaxSliceDepth = 1024;

/// The depth of every slice but the last of a product of depth Kp (even): Kp when it is
/// at most kMaxSliceDepth, else Kp shared evenly between the fewest slices that are at most
/// that deep, rounded up to whole pairs (the last slice takes the rest).
inline Index slice_depth(Index Kp) {
  const Index slices = std::max<Index>(1, (Kp + kMaxSliceDepth - 1) / kMaxSliceDepth);
  return std::max<Index>(2, ((Kp + slices - 1) / slices + 1) / 2 * 2);
}

/// `x` rounded to the nearest bfloat16 (ties to even; NaN stays NaN), as a float.
inline float round_to_bfloat16(float x) { return static_cast<float>(Eigen::bfloat16(x)); }

/// The bits of `x` rounded to the nearest bfloat16.
inline std::uint16_t bfloat16_bits(float x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(x)); }

#ifdef DYNRNN_X86_KERNELS
DYNRNN_BEGIN_AVX512_KERNELS
#define DYNRNN_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/// The AVX-512 BF16 kernel; see the file comment and dot_panels.hpp. Sizes in bfloat16
/// elements.
struct Bf16Avx512Kernel : DotPanels<Bf16Avx512Kernel, 2> {
  /// The 16 k-pairs (even[l], odd[l]) rounded to bfloat16, each one 32-bit lane with the
  /// even k in its low half, as vdpbf16ps reads a pair.
  DYNRNN_TARGET_AVX512_BF16 static __m512i pairs_of(__m512 even, __m512 odd) {
    const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(even));
    const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(odd));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
  }

  /// pack() of the panels [first, last) of W as stored, (K, N) with row stride `stride`,
  /// vectorised: each k-pair's two rows are rounded 16 columns at a time and interleaved into
  /// 32-bit lanes (the even k in the low half). The weight gradients pack their right operand
  /// at every product, so threads share the panels. W is read row after row, each pair of
  /// rows once across all the panels: the gate gradients, (P, 4H), are several MB, and read
  /// a panel at a time their rows would be a page apart, beyond the prefetchers.
  /// With `sums`, also adds each row of W's panel columns to sums, in float32 and in row
  /// order: a bias gradient from the same read.
  DYNRNN_TARGET_AVX512_BF16 static void pack_rows(std::uint16_t* dst, const float* w, Index stride, Index K,
                                                  Index N, Index first, Index last, float* sums) {
    const Index Kp = depth(K);
    for (Index q = 0; q < Kp / 2; ++q)
      for (Index j0 = first * kWidth; j0 < std::min(N, last * kWidth); j0 += kWidth) {
        const int packets = packets_at(j0, N);
        std::uint16_t* panel = dst + j0 * Kp;
        for (int v = 0; v < packets; ++v) {
          const Index j = j0 + v * kPacket, lanes = std::min<Index>(kPacket, N - j);
          const __mmask16 mask = first_lanes(lanes);
          const __m512 even = _mm512_maskz_loadu_ps(mask, w + 2 * q * stride + j);
          const __m512 odd = 2 * q + 1 < K ? _mm512_maskz_loadu_ps(mask, w + (2 * q + 1) * stride + j)
                                           : _mm512_setzero_ps();
          _mm512_storeu_si512(panel + (q * packets + v) * 2 * kPacket, pairs_of(even, odd));
          if (sums) {
            __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, sums + j), even);
            if (2 * q + 1 < K) sum = _mm512_add_ps(sum, odd);
            _mm512_mask_storeu_ps(sums + j, mask, sum);
          }
        }
      }
  }

  /// pack() of the panels [first, last) of op(W) = Wᵀ, W (N, K) with row stride `stride`,
  /// vectorised: a k-pair of column j of op(W) is two neighbours in row j of W, so 16 rows
  /// of W (16 columns of op(W)) are rounded 32 values at a time, which are 16 pairs each,
  /// and transposed in registers (transpose_words()) into 16 pairs of rows of the panel, 16
  /// columns wide each: whole 64-byte stores, where storing each column's pairs to their 16
  /// rows of the panel took a scatter per 32 values.
  DYNRNN_TARGET_AVX512_BF16 static void pack_columns(std::uint16_t* dst, const float* w, Index stride, Index K,
                                                     Index N, Index first, Index last) {
    const Index Kp = depth(K), pairs = Kp / 2;
    for (Index j0 = first * kWidth; j0 < std::min(N, last * kWidth); j0 += kWidth) {
      const Index width = Index(packets_at(j0, N)) * kPacket;
      std::uint16_t* panel = dst + j0 * Kp;  // pair q of column c at 32-bit word q·width + c
      for (Index c0 = 0; c0 < width; c0 += kPacket)
        for (Index q0 = 0; q0 < pairs; q0 += kPacket) {
          const Index k = 2 * q0, left = std::min<Index>(2 * kPacket, K - k);  // >= 1: k < K
          const __mmask16 lo_mask = first_lanes(std::min<Index>(kPacket, left));
          const __mmask16 hi_mask = first_lanes(std::max<Index>(left - kPacket, 0));
          __m512i x[16];
          for (int c = 0; c < 16; ++c) {  // past N the panel holds zeros
            const Index j = j0 + c0 + c;
            const float* row = w + j * stride + k;
            x[c] = j < N ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi_mask, row + kPacket),
                                                        _mm512_maskz_loadu_ps(lo_mask, row))
                         : _mm512_setzero_si512();
          }
          transpose_words(x);  // x[l]: pair q0 + l of the 16 columns
          for (Index l = 0; l < std::min<Index>(kPacket, pairs - q0); ++l)
            _mm512_storeu_si512(panel + 2 * ((q0 + l) * width + c0), x[l]);
        }
    }
  }

  /// Row k of op(W) at 16 columns [j, j + 16) of one panel (j a multiple of 16, the 16
  /// columns inside N), rounded to bfloat16 and stored into their halves of the 16 k-pairs at
  /// `pairs` = the packing + packed_offset(K, N, k - k % 2, j): the low halves for an even k,
  /// the high ones for an odd k. The other k of each pair is left as it is, so the rows of a
  /// pair may be written in either order, by different threads: what pack_rows() writes, a
  /// row at a time.
  DYNRNN_TARGET_AVX512_BF16 static void store_row(std::uint16_t* pairs, Index k, __m512 x) {
    store_row(pairs, k, (__m256i)_mm512_cvtneps_pbh(x));
  }
  /// store_row() of 16 values its caller already rounded (vcvtneps2bf16).
  DYNRNN_TARGET_AVX512_BF16 static void store_row(std::uint16_t* pairs, Index k, __m256i rounded) {
    const __m512i words = _mm512_cvtepu16_epi32(rounded);
    if (k % 2)
      _mm512_mask_storeu_epi16(pairs, __mmask32(0xaaaaaaaau), _mm512_slli_epi32(words, 16));
    else
      _mm512_mask_storeu_epi16(pairs, __mmask32(0x55555555u), words);
  }

  /// x[0..15], 16 rows of 16 32-bit words, transposed in place: word r of x[c] becomes word
  /// c of x[r]. Pairs of rows are interleaved by words, then by pairs of words, each within
  /// its 128-bit lanes (a 4 x 4 transpose in every lane), and the 4 x 4 blocks of lanes are
  /// transposed last.
  DYNRNN_TARGET_AVX512_BF16 static void transpose_words(__m512i (&x)[16]) {
    __m512i t[16];
    for (int r = 0; r < 16; r += 2) {
      t[r] = _mm512_unpacklo_epi32(x[r], x[r + 1]);
      t[r + 1] = _mm512_unpackhi_epi32(x[r], x[r + 1]);
    }
    // u[4g + c], rows 4g .. 4g + 3: in lane l the 4 words of column 4l + c.
    __m512i u[16];
    for (int g = 0; g < 4; ++g) {
      u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
      u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
      u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
      u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    // Column 4l + c: lane l of u[c], u[4 + c], u[8 + c], u[12 + c], in that order.
    for (int c = 0; c < 4; ++c) {
      const __m512i low01 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44);    // lanes 0, 1 of each
      const __m512i high01 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xee);   // lanes 2, 3 of each
      const __m512i low23 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
      const __m512i high23 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xee);
      x[c] = _mm512_shuffle_i32x4(low01, low23, 0x88);
      x[4 + c] = _mm512_shuffle_i32x4(low01, low23, 0xdd);
      x[8 + c] = _mm512_shuffle_i32x4(high01, high23, 0x88);
      x[12 + c] = _mm512_shuffle_i32x4(high01, high23, 0xdd);
    }
  }

  /// Pair q (rows 2q and 2q + 1, a zero past K) of columns [i, i + 16) of A (K, ·), row stride
  /// lda, as 16 32-bit pairs; the columns outside `mask` are zeros.
  DYNRNN_TARGET_AVX512_BF16 static __m512i pair_row(const float* a, Index lda, Index K, Index q, Index i,
                                                    __mmask16 mask) {
    const __m512 even = _mm512_maskz_loadu_ps(mask, a + 2 * q * lda + i);
    const __m512 odd = 2 * q + 1 < K ? _mm512_maskz_loadu_ps(mask, a + (2 * q + 1) * lda + i) : _mm512_setzero_ps();
    return pairs_of(even, odd);
  }

  /// Rounds columns [0, n) of A (K, n), row stride lda, to bfloat16 as the rows of Aᵀ at dst,
  /// row stride depth(K), with a zero past an odd K. A is read row after row (a weight
  /// gradient's A is the cache's inputs or h_{t-1}, several MB): each k-pair of 16 columns
  /// becomes 16 32-bit pairs, and 16 k-pairs of them are transposed in registers into 64
  /// contiguous bytes of each of the 16 rows of Aᵀ. The last k-pairs, fewer than 16, are
  /// scattered to their rows.
  DYNRNN_TARGET_AVX512_BF16 static void convert_transposed(std::uint16_t* dst, const float* a, Index lda, Index n,
                                                           Index K) {
    const Index Kp = depth(K), pairs = Kp / 2;
    Index q0 = 0;
    for (; q0 + kPacket <= pairs; q0 += kPacket)
      for (Index i = 0; i < n; i += kPacket) {
        const Index lanes = std::min<Index>(kPacket, n - i);
        const __mmask16 mask = first_lanes(lanes);
        __m512i x[16];
        for (int r = 0; r < 16; ++r) x[r] = pair_row(a, lda, K, q0 + r, i, mask);
        transpose_words(x);
        for (Index c = 0; c < lanes; ++c) _mm512_storeu_si512(dst + (i + c) * Kp + 2 * q0, x[c]);
      }
    const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(int(Kp / 2)));  // in 32-bit words
    for (Index q = q0; q < pairs; ++q)
      for (Index i = 0; i < n; i += kPacket) {
        const Index lanes = std::min<Index>(kPacket, n - i);
        const __mmask16 mask = first_lanes(lanes);
        _mm512_mask_i32scatter_epi32(dst + i * Kp + 2 * q, mask, rows, pair_row(a, lda, K, q, i, mask), 4);
      }
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
        const __mmask16 mask = first_lanes(K - k);
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
    DYNRNN_UNROLL
    for (int r = 0; r < R; ++r)
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
    const std::uint16_t* a = p.a + i * p.lda;
    prefetch_c_tile<R, V, kPacket>(p.c, p.ldc, i, j0, p.N);
    const Index pairs = p.K / 2;
    for (Index q = 0; q < pairs; ++q, w += 2 * V * kPacket) {
      __m512i wq[V];
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) wq[v] = _mm512_loadu_si512(w + v * 2 * kPacket);
      DYNRNN_UNROLL
      for (int r = 0; r < R; ++r) {
        std::int32_t pair;
        std::memcpy(&pair, a + r * p.lda + 2 * q, sizeof pair);
        const __m512i ar = _mm512_set1_epi32(pair);
        DYNRNN_UNROLL
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)ar, (__m512bh)wq[v]);
      }
    }
    store_tile<R, V>(acc, p.c, p.ldc, i, j0, p.N, p.bias, p.alpha, p.beta);
  }
};

#undef DYNRNN_TARGET_AVX512_BF16
DYNRNN_END_AVX512_KERNELS
#endif  // DYNRNN_X86_KERNELS

}  // namespace detail

/// \brief `C = alpha·A·op(W) + beta·C (+ bias)` with A and W rounded to bfloat16 and the
/// products summed in float32 (see the file comment): twice the float32 rate on CPUs with
/// AVX-512 BF16, the same bits through a portable kernel elsewhere. Like PackedRightGemm,
/// op(W) is packed once and used for any number of products, and nothing is allocated once
/// the object has seen its largest shapes. An object keeps workspaces: it runs one product
/// at a time, except rows(), which threads may call at once on disjoint workspace rows.
///
/// \code
/// dynrnn::Bf16PackedRightGemm gemm;
/// gemm.pack(w, dynrnn::Op::N);  // w (K, N), rounded to bfloat16 once
/// gemm(c, a);                   // c (n, N) = a (n, K) · w
/// gemm.transposed_left(d, b);   // d (m, N) = bᵀ · w, b (K, m): a weight gradient
/// \endcode
class Bf16PackedRightGemm {
 public:
  using MatrixRef = Eigen::Ref<Matrix<float>>;             ///< Writable row-major block.
  using ConstMatrixRef = Eigen::Ref<const Matrix<float>>;  ///< Read-only row-major block.

  /// \brief Rounds op(W), (K, N), to bfloat16 and packs it for the AVX-512 BF16 kernel when
  /// cpu_isa() allows it, else for the portable one; this object then uses those kernels
  /// until the next pack(). Allocates only when the packed size grows; W is not referenced
  /// afterwards.
  /// \param column_sums null, or N floats to which the column sums of W (float32, not
  ///   rounded) are added, row after row, as detail::add_column_sums() adds them: a weight
  ///   gradient's bias gradient, from the same read of the gate gradients. Op::N only.
  /// \throws std::invalid_argument for column_sums with Op::T.
  void pack(const ConstMatrixRef& W, Op op, float* column_sums = nullptr) {
    if (column_sums && op != Op::N)
      detail::throw_argument("Bf16PackedRightGemm::pack", "op", "Op::N with column_sums", "Op::T");
    end_share();
    set_shape(op == Op::N ? W.rows() : W.cols(), op == Op::N ? W.cols() : W.rows());
    isa_ = cpu_isa() >= CpuIsa::avx512_core_bf16 ? CpuIsa::avx512_core_bf16 : CpuIsa::portable;
    tiles_ = isa_ == CpuIsa::portable ? detail::float_tiles() : CpuIsa::portable;
#ifdef DYNRNN_X86_KERNELS
    if (isa_ == CpuIsa::avx512_core_bf16) {
      detail::grow_flat(packed_bf16_, slices() * Fast::packed_size(slice_, N_));
      const Index panels = (N_ + Fast::kWidth - 1) / Fast::kWidth;
      // Rounding and interleaving cost about as much as 8 multiply-adds per element. Each
      // slice of depth is packed as a W of its own, one after the other.
      detail::for_row_shares(panels, 8.0 * double(K_) * double(N_), 1, [&](Index first, Index last) {
        for (Index k0 = 0, s = 0; k0 < K_; k0 += slice_, ++s) {
          std::uint16_t* dst = packed_bf16_.data() + s * Fast::packed_size(slice_, N_);
          const Index rows = std::min(slice_, K_ - k0);
          if (op == Op::N)
            Fast::pack_rows(dst, W.data() + k0 * W.outerStride(), W.outerStride(), rows, N_, first, last,
                            column_sums);
          else
            Fast::pack_columns(dst, W.data() + k0, W.outerStride(), rows, N_, first, last);
        }
      });
      return;
    }
#endif
    if (column_sums) detail::add_column_sums<float>(W, Eigen::Map<Vector<float>>(column_sums, N_));
    // The portable kernel's W: Kp rows, each pair swapped, rounded (see the file comment).
    detail::grow_flat(staged_, Kp_ * N_);
    for (Index k = 0; k < Kp_; ++k)
      for (Index j = 0; j < N_; ++j) {
        const Index from = k ^ 1;  // the other row of the pair
        staged_.data()[k * N_ + j] = from >= K_ ? 0.0f : detail::round_to_bfloat16(op == Op::N ? W(from, j) : W(j, from));
      }
    detail::with_panel_kernel<float>(tiles_, [&](auto kernel) {
      using Portable = decltype(kernel);
      detail::grow_flat(packed_float_, slices() * Portable::packed_size(slice_, N_));
      for (Index k0 = 0, s = 0; k0 < Kp_; k0 += slice_, ++s)
        Portable::pack_panels(packed_float_.data() + s * Portable::packed_size(slice_, N_), staged_.data() + k0 * N_,
                              N_, false, std::min(slice_, Kp_ - k0), N_);
    });
  }

  /// \brief Makes room for W (K, N), Op::N, to be written in place by its producer, a row
  /// at a time, instead of being packed from a float32 matrix by pack(): the LSTM's gate
  /// gradients as it computes them, in the layout of the AVX-512 BF16 kernel
  /// (`detail::Bf16Avx512Kernel::store_row()` at packed_offset(k - k % 2, j) of the
  /// returned pointer). The products then use it as they use a packed W. The caller must
  /// write every element of rows [0, K) before the next product; a pad row past an odd K
  /// is zeroed here.
  /// \returns the packing, or null when cpu_isa() does not allow the AVX-512 BF16 kernel or N
  ///   is not a multiple of 16; then the caller uses pack(), and this object is unchanged.
  std::uint16_t* pack_in_place(Index K, Index N) {
#ifdef DYNRNN_X86_KERNELS
    if (cpu_isa() < CpuIsa::avx512_core_bf16 || N % Fast::kPacket != 0) return nullptr;
    end_share();
    set_shape(K, N);
    isa_ = CpuIsa::avx512_core_bf16;
    tiles_ = CpuIsa::portable;
    detail::grow_flat(packed_bf16_, slices() * Fast::packed_size(slice_, N_));
    std::uint16_t* packed = packed_bf16_.data();
    if (K_ % 2)
      for (Index j = 0; j < N_; ++j) packed[packed_offset(K_, j)] = 0;
    return packed;
#else
    (void)K;
    (void)N;
    return nullptr;
#endif
  }

  /// \brief Runs the products on `packed`'s packing of op(W) and its kernels, which are not
  /// copied, with this object's own workspaces, until the next pack(), pack_in_place() or
  /// unshare(): the products give the bits `packed`'s own give. `packed` must stay alive and
  /// unpacked meanwhile; it is only read, so any number of objects may share it at once.
  void share(const Bf16PackedRightGemm& packed) {
    detail::view_for_reading(packed_bf16_, packed.packed_bf16_);
    detail::view_for_reading(packed_float_, packed.packed_float_);
    set_shape(packed.K_, packed.N_);
    isa_ = packed.isa_;
    tiles_ = packed.tiles_;
    shared_ = true;
  }

  /// \brief Ends share(): nothing is packed afterwards (op(W) is (0, 0)) until the next
  /// pack(). Does nothing to an object that packed its own W.
  void unshare() noexcept {
    if (!shared_) return;
    end_share();
    K_ = N_ = Kp_ = 0;
    reserved_ = 0;
  }

  /// \brief Where element (k, j) of op(W) (k < K rounded up to even, j < N) lies in the
  /// packing of the AVX-512 BF16 kernel that pack_in_place() returns, in elements from its start.
  Index packed_offset(Index k, Index j) const {
#ifdef DYNRNN_X86_KERNELS
    const Index s = k / slice_, k0 = s * slice_;
    return s * Fast::packed_size(slice_, N_) + Fast::packed_offset(std::min(slice_, Kp_ - k0), N_, k - k0, j);
#else
    (void)k, (void)j;
    return 0;
#endif
  }

  /// \brief `C = alpha·A·op(W) + beta·C`, plus `bias` on every row of C when it is not
  /// null; A is rounded to bfloat16 first. The rows are shared between threads when the
  /// product is large enough; the result does not depend on how.
  /// \param C (n, N).  \param A (n, K).  \param bias N floats, or null.
  /// \throws std::invalid_argument when the shapes disagree with each other or the packed W.
  void operator()(MatrixRef C, const ConstMatrixRef& A, float alpha = 1.0f, float beta = 0.0f,
                  const float* bias = nullptr) {
    detail::check_packed_product("Bf16PackedRightGemm", K_, N_, C, A);
    shared(C, A.data(), A.outerStride(), false, A.rows(), alpha, beta, bias);
  }

  /// \brief `C = alpha·Aᵀ·op(W) + beta·C` for A (K, m): a weight gradient, such as
  /// `[x, h_{t-1}]ᵀ · dgates` with the gate gradients packed as W. Aᵀ is rounded to bfloat16
  /// as operator() rounds A, and every element is summed in the same order.
  /// \param C (m, N).  \param A (K, m).
  /// \throws std::invalid_argument when the shapes disagree with each other or the packed W.
  void transposed_left(MatrixRef C, const ConstMatrixRef& A, float alpha = 1.0f, float beta = 0.0f) {
    constexpr const char* fn = "Bf16PackedRightGemm::transposed_left";
    if (A.rows() != K_)
      detail::throw_argument(fn, "A", "of " + std::to_string(K_) + " rows (as packed)",
                             detail::shape_string({A.rows(), A.cols()}));
    detail::check_shape(fn, "C", C, A.cols(), N_);
    shared(C, A.data(), A.outerStride(), true, A.cols(), alpha, beta, nullptr);
  }

  /// \brief Makes room for `n` rows of A in the workspace, for rows().
  void reserve(Index n) {
    if (isa_ == CpuIsa::avx512_core_bf16) {
      detail::grow_flat(a_bf16_, n * Kp_);
    } else {
      detail::grow_flat(a_float_, n * Kp_);
    }
    reserved_ = std::max(reserved_, n);
  }

  /// \brief operator() on the calling thread alone, converting A in workspace rows
  /// [first, first + A.rows()), which reserve() must have made room for: threads may call
  /// this at the same time on disjoint rows of C with disjoint workspace rows. Runs inside
  /// parallel loops, where an exception cannot propagate, so its arguments are checked only
  /// in debug builds (eigen_assert).
  void rows(MatrixRef C, const ConstMatrixRef& A, float alpha, float beta, const float* bias, Index first) {
    eigen_assert(A.cols() == K_ && C.cols() == N_ && C.rows() == A.rows());
    eigen_assert(first >= 0 && first + A.rows() <= reserved_);
    run_rows(C.data(), C.outerStride(), A.data(), A.outerStride(), false, A.rows(), alpha, beta, bias, first);
  }

  /// \brief `C = A·op(W) + beta·C` for an A that its producer already rounded to
  /// bfloat16 (an LSTM's gate gradients, rounded as they are computed): operator() without
  /// its conversion, and the same bits as operator() gives for any float32 A that rounds to
  /// these values. Only where isa() is CpuIsa::avx512_core_bf16; rows shared between threads
  /// as operator() shares them.
  /// \param C (n, N).  \param a n rows of depth(K) = K rounded up to even elements, at row
  ///   stride `lda`, a pad element past an odd K zero.
  /// \throws std::invalid_argument when C's columns are not N, lda is below depth(K), a is
  ///   null with rows to read, or isa() is not CpuIsa::avx512_core_bf16.
  void rounded(MatrixRef C, const std::uint16_t* a, Index lda, float beta = 0.0f) {
    constexpr const char* fn = "Bf16PackedRightGemm::rounded";
    if (isa_ != CpuIsa::avx512_core_bf16)
      detail::throw_argument(fn, "isa()", "avx512_core_bf16 (a W packed for the AVX-512 BF16 kernel)", to_string(isa_));
    detail::check_shape(fn, "C", C, C.rows(), N_);
    if (lda < Kp_) detail::throw_argument(fn, "lda", "at least " + std::to_string(Kp_), std::to_string(lda));
    if (a == nullptr && C.rows() > 0 && Kp_ > 0) detail::throw_argument(fn, "a", "not null", "null");
    if (C.rows() == 0 || N_ == 0) return;
    const double work = 0.5 * double(C.rows()) * double(N_) * double(K_);
    detail::for_row_shares(C.rows(), work, row_granule(), [&](Index begin, Index end) {
      run_rounded(C.data() + begin * C.outerStride(), C.outerStride(), a + begin * lda, lda, end - begin, 1.0f,
                  beta, nullptr);
    });
  }

  /// \brief rounded() on the calling thread alone, for threads that call it at the same
  /// time on disjoint rows of C, inside parallel loops: its arguments are checked only in
  /// debug builds (eigen_assert).
  void rounded_rows(MatrixRef C, const std::uint16_t* a, Index lda, float beta) {
    eigen_assert(isa_ == CpuIsa::avx512_core_bf16 && C.cols() == N_ && lda >= Kp_);
    run_rounded(C.data(), C.outerStride(), a, lda, C.rows(), 1.0f, beta, nullptr);
  }

  /// \brief The kernels chosen at the last pack(): CpuIsa::avx512_core_bf16 or
  /// CpuIsa::portable (on the float32 tiles of float_tiles(), core/float_tiles.hpp).
  CpuIsa isa() const { return isa_; }

  /// \brief Rows of C the kernels take at a time: sharing rows between threads on multiples
  /// of this keeps every share but the last on whole tiles. Any split gives the same bits.
  Index row_granule() const {
    return isa_ == CpuIsa::avx512_core_bf16 ? detail::kDotTileRows : detail::tile_rows<float>(tiles_);
  }

 private:
#ifdef DYNRNN_X86_KERNELS
  using Fast = detail::Bf16Avx512Kernel;
#endif

  // All n rows of op(A) · op(W), shared between threads (row i of op(A): a + i·lda, or
  // column i of a when `transposed`).
  void shared(MatrixRef& C, const float* a, Index lda, bool transposed, Index n, float alpha, float beta,
              const float* bias) {
    if (n == 0 || N_ == 0) return;
    reserve(n);
    // Half the float32 work per multiply-add where the instructions take two at a time.
    const double work = double(n) * double(N_) * double(K_) * (isa_ == CpuIsa::avx512_core_bf16 ? 0.5 : 1.0);
    detail::for_row_shares(n, work, row_granule(), [&](Index begin, Index end) {
      run_rows(C.data() + begin * C.outerStride(), C.outerStride(), transposed ? a + begin : a + begin * lda, lda,
               transposed, end - begin, alpha, beta, bias, begin);
    });
  }

  // n rows of the product on the calling thread, A converted in workspace rows [first,
  // first + n).
  void run_rows(float* c, Index ldc, const float* a, Index lda, bool transposed, Index n, float alpha, float beta,
                const float* bias, Index first) {
    if (n == 0 || N_ == 0) return;
#ifdef DYNRNN_X86_KERNELS
    if (isa_ == CpuIsa::avx512_core_bf16) {
      std::uint16_t* converted = a_bf16_.data() + first * Kp_;
      if (transposed)
        Fast::convert_transposed(converted, a, lda, n, K_);
      else
        Fast::convert(converted, a, lda, n, K_);
      return run_rounded(c, ldc, converted, Kp_, n, alpha, beta, bias);
    }
#endif
    for (Index i = 0; i < n; ++i)
      for (Index k = 0; k < Kp_; ++k) {
        const Index from = k ^ 1;
        a_float_.data()[(first + i) * Kp_ + k] =
            from >= K_ ? 0.0f : detail::round_to_bfloat16(transposed ? a[from * lda + i] : a[i * lda + from]);
      }
    detail::with_panel_kernel<float>(tiles_, [&](auto kernel) {
      using Portable = decltype(kernel);
      for (Index k0 = 0, s = 0; k0 == 0 || k0 < Kp_; k0 += slice_, ++s)
        Portable::run_panels({c, ldc, a_float_.data() + first * Kp_ + k0, Kp_,
                              packed_float_.data() + s * Portable::packed_size(slice_, N_), k0 == 0 ? bias : nullptr,
                              n, std::min(slice_, Kp_ - k0), N_, alpha, k0 == 0 ? beta : 1.0f});
    });
  }

  // n rows of the product on the AVX-512 BF16 kernel, A rounded at a (row stride lda), on
  // the calling thread: slice after slice of depth, and once for a depth of 0, which still
  // gives C = beta·C (+ bias).
  void run_rounded(float* c, Index ldc, const std::uint16_t* a, Index lda, Index n, float alpha, float beta,
                   const float* bias) {
#ifdef DYNRNN_X86_KERNELS
    for (Index k0 = 0, s = 0; k0 == 0 || k0 < Kp_; k0 += slice_, ++s)
      Fast::run(Fast::Product{c, ldc, a + k0, lda, packed_bf16_.data() + s * Fast::packed_size(slice_, N_),
                              k0 == 0 ? bias : nullptr, n, std::min(slice_, Kp_ - k0), N_, alpha,
                              k0 == 0 ? beta : 1.0f});
#else
    (void)c, (void)ldc, (void)a, (void)lda, (void)n, (void)alpha, (void)beta, (void)bias;
#endif
  }

  // Own storage for the packings again, before they are written (after share()).
  void end_share() noexcept {
    packed_bf16_.drop_view();
    packed_float_.drop_view();
    shared_ = false;
  }

  // The shapes of a new op(W), (K, N), and its slices of depth.
  void set_shape(Index K, Index N) {
    K_ = K;
    N_ = N;
    Kp_ = (K_ + 1) / 2 * 2;
    slice_ = detail::slice_depth(Kp_);
    reserved_ = 0;  // the workspaces' rows were sized for the last depth
  }

  // Slices of depth of the packed op(W) (at least one).
  Index slices() const { return std::max<Index>(1, (Kp_ + slice_ - 1) / slice_); }

  CpuIsa isa_ = CpuIsa::portable;
  CpuIsa tiles_ = CpuIsa::portable;         // the portable kernel's float32 tiles: float_tiles()
  Index K_ = 0, N_ = 0, Kp_ = 0;
  Index slice_ = 2;                         // the depth of every slice of op(W) but the last
  Index reserved_ = 0;                      // rows of A the workspace holds at this depth
  bool shared_ = false;                     // the packings view another object's (share())
  // Flat buffers from dynrnn's buffer cache (ReusableMatrix), as a result's matrices are: a
  // workspace made and dropped with every call of the returning forms (the weight gradients'
  // packed gate gradients and the input gradient's converted ones, several MB each) then
  // reuses memory instead of faulting in fresh pages, and growing writes no zeros.
  ReusableMatrix<std::uint16_t> packed_bf16_;  // op(W) for the AVX-512 BF16 kernel
  ReusableMatrix<float> packed_float_;         // op(W) for the portable kernel, in its panels
  ReusableMatrix<float> staged_;               // the portable kernel's W before packing, (Kp, N)
  ReusableMatrix<std::uint16_t> a_bf16_;       // A rounded, for the AVX-512 BF16 kernel
  ReusableMatrix<float> a_float_;              // A rounded and paired, for the portable kernel, (n, Kp)
};

}  // namespace dynrnn
