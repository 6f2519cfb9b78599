// dynrnn: AVX2 tiles for the float32 products, chosen at run time on CPUs without AVX-512.
//
// Most desktop and laptop CPUs of the last ten years (Intel from Haswell on, AMD from Zen 1
// to Zen 3) have AVX2 and FMA but no AVX-512. A program built for them without -march gets
// PanelKernel's own tiles on SSE2 (EigenTiles, panel_kernel.hpp): 4 floats a register and no
// fused multiply-add. These tiles are compiled for AVX2 and FMA with
// __attribute__((target(...))) whatever the program's flags, and float_tiles.hpp chooses
// them when the program's own tiles are narrower than 8 floats and cpu_isa() is
// CpuIsa::avx2 (above it, FloatAvx512Tiles are chosen).
//
// Panels of 16 columns (2 registers of 8 floats), tiles of 6 rows by one panel in 12
// accumulators for the whole depth, one broadcast of A(r, k) per row and k: 12 + 2 + 1 of
// the 16 registers. Every element of C is summed over k = 0 .. K-1 in order in one
// accumulator with fused multiply-adds, then
//
//   out = alpha · sum (+ bias)      one fused multiply-add with a bias, else a product
//   out = beta · C + out            one fused multiply-add, only when beta is not 0
//
// in every tile, every row count and every last, narrower panel (whose lanes past N are
// masked), so a row's results do not depend on how rows or columns are split between calls
// and threads: the same epilogue as FloatAvx512Tiles'.
#pragma once

#include "panel_kernel.hpp"
#include "types.hpp"
#include "unroll.hpp"

#include "../precision/cpu_isa.hpp"    // DYNRNN_X86_KERNELS
#include "../precision/dot_panels.hpp"  // DYNRNN_BEGIN_AVX512_KERNELS, prefetch_c_tile(), fused_epilogue()

#include <algorithm>

namespace dynrnn::detail {

#ifdef DYNRNN_X86_KERNELS
DYNRNN_BEGIN_AVX512_KERNELS
#define DYNRNN_TARGET_AVX2 __attribute__((target("avx2,fma")))

/// \brief PanelKernel<float>'s tiles in AVX2 and FMA, chosen at run time; see the file comment.
struct FloatAvx2Tiles {
  static constexpr int kPacket = 8;   ///< Floats per register.
  static constexpr int kPackets = 2;  ///< Registers per panel row.
  static constexpr int kRows = 6;     ///< Rows per tile.

  /// The first `lanes` of a register's 8 (all of them from 8 on), as vmaskmovps takes them.
  DYNRNN_TARGET_AVX2 __attribute__((always_inline)) static inline __m256i first_lanes(Index lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<Index>(lanes, kPacket))),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  /// Rows [i, i + R) by the panel at column j0 of V registers, packed at w; A's rows where
  /// they are, or packed into tiles of R columns (`packed`: A(r, k) at a[k · R + r]).
  template <int R, int V>
  DYNRNN_TARGET_AVX2 __attribute__((noinline)) static void tile(const PanelProduct<float>& p, Index i, Index j0,
                                                                const float* w, bool packed) {
    __m256 acc[R][V];
    DYNRNN_UNROLL
    for (int r = 0; r < R; ++r)
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
    const TileRows<R> a(p, i, packed);
    prefetch_c_tile<R, V, kPacket>(p.c, p.ldc, i, j0, p.N);  // C's lines, while the products run
    for (Index k = 0, ak = 0; k < p.K; ++k, ak += a.k_stride, w += V * kPacket) {
      __m256 wk[V];
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) wk[v] = _mm256_loadu_ps(w + v * kPacket);
      DYNRNN_UNROLL
      for (int r = 0; r < R; ++r) {
        const __m256 ar = _mm256_broadcast_ss(a.row[r] + ak);
        DYNRNN_UNROLL
        for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(ar, wk[v], acc[r][v]);
      }
    }
    // The epilogue (see the file comment); every index a constant once unrolled, so that
    // the accumulators stay in registers.
    const __m256 alpha = _mm256_set1_ps(p.alpha), beta = _mm256_set1_ps(p.beta);
    DYNRNN_UNROLL
    for (int v = 0; v < V; ++v) {
      const Index j = j0 + v * kPacket;  // < N: the panel has V packets
      const bool whole = p.N - j >= kPacket;
      const __m256i mask = first_lanes(p.N - j);
      const __m256 bias = !p.bias ? _mm256_setzero_ps()
                          : whole ? _mm256_loadu_ps(p.bias + j)
                                  : _mm256_maskload_ps(p.bias + j, mask);
      DYNRNN_UNROLL
      for (int r = 0; r < R; ++r) {
        float* row = p.c + (i + r) * p.ldc + j;
        __m256 out = p.bias ? _mm256_fmadd_ps(alpha, acc[r][v], bias) : _mm256_mul_ps(alpha, acc[r][v]);
        if (p.beta != 0.0f)
          out = _mm256_fmadd_ps(beta, whole ? _mm256_loadu_ps(row) : _mm256_maskload_ps(row, mask), out);
        if (whole)
          _mm256_storeu_ps(row, out);
        else
          _mm256_maskstore_ps(row, mask, out);
      }
    }
  }

  /// A narrow() product of exactly J columns, op(W) packed column after column: each element
  /// of C is a dot product along K in registers of 8 (the last one masked), the register's
  /// lanes summed in a fixed order, then the epilogue in registers of one lane, as a tile's.
  template <int J>
  DYNRNN_TARGET_AVX2 __attribute__((noinline)) static void dots(const PanelProduct<float>& p) {
    for (Index i = 0; i < p.n; ++i) {
      const float* a = p.a + i * p.lda;
      __m256 acc[J];
      for (int j = 0; j < J; ++j) acc[j] = _mm256_setzero_ps();
      for (Index k = 0; k < p.K; k += kPacket) {
        const __m256i mask = first_lanes(p.K - k);
        const __m256 ak = _mm256_maskload_ps(a + k, mask);
        for (int j = 0; j < J; ++j) acc[j] = _mm256_fmadd_ps(ak, _mm256_maskload_ps(p.w + j * p.K + k, mask), acc[j]);
      }
      float* c = p.c + i * p.ldc;
      for (int j = 0; j < J; ++j) {
        // Lanes summed as (0+4, 1+5, 2+6, 3+7), then (0+2, 1+3), then 0+1.
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[j]), _mm256_extractf128_ps(acc[j], 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        c[j] = fused_epilogue(_mm_cvtss_f32(s), p.alpha, p.bias ? p.bias + j : nullptr, p.beta, c + j);
      }
    }
  }
};

#undef DYNRNN_TARGET_AVX2
DYNRNN_END_AVX512_KERNELS
#endif  // DYNRNN_X86_KERNELS

}  // namespace dynrnn::detail
