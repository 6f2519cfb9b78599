// dynrnn: AVX-512 tiles for the float32 products, chosen at run time.
//
// PanelKernel's own tiles (EigenTiles, panel_kernel.hpp) are built on Eigen's packets for
// the SIMD width the program is compiled for. A program built without -march, as a CMake
// project that links dynrnn::dynrnn is by default, gets SSE2: 4 floats a register, 16
// registers and no fused multiply-add, a small part of what an AVX-512 CPU can do. These
// tiles are compiled for AVX-512 F with __attribute__((target(...))) whatever the program's
// flags, and float_tiles.hpp chooses them when the program's own tiles are narrower than 16
// floats and cpu_isa() is CpuIsa::avx512_core or above (precision/cpu_isa.hpp), so the CPU
// and the OS have AVX-512 and set_max_cpu_isa() or DYNRNN_MAX_CPU_ISA do not forbid it.
//
// Their panels and tiles are those of a program built for AVX-512: panels of 64 columns
// (4 registers of 16 floats), tiles of 6 rows by one panel in 24 accumulators for the whole
// depth, one broadcast of A(r, k) per row and k. Every element of C is summed over
// k = 0 .. K-1 in order in one accumulator with fused multiply-adds, then
//
//   out = alpha · sum (+ bias)      one fused multiply-add with a bias, else a product
//   out = beta · C + out            one fused multiply-add, only when beta is not 0
//
// in every tile, every row count and every last, narrower panel (whose lanes past N are
// masked), so a row's results do not depend on how rows or columns are split between calls
// and threads. Against the program's own tiles the results differ by roundings: SSE2 has no
// fused multiply-add.
#pragma once

#include "panel_kernel.hpp"
#include "types.hpp"
#include "unroll.hpp"

#include "../precision/cpu_isa.hpp"    // DYNRNN_X86_KERNELS
#include "../precision/dot_panels.hpp"  // prefetch_c_tile(), DotPanels::store_tile(), fused_epilogue(), first_lanes(), kDotTileRows

#include <algorithm>

namespace dynrnn::detail {

#ifdef DYNRNN_X86_KERNELS
DYNRNN_BEGIN_AVX512_KERNELS
#define DYNRNN_TARGET_AVX512F __attribute__((target("avx512f,fma")))

/// \brief PanelKernel<float>'s tiles in AVX-512 F, chosen at run time; see the file comment.
struct FloatAvx512Tiles {
  static constexpr int kPacket = 16;           ///< Floats per register.
  static constexpr int kPackets = 4;           ///< Registers per panel row.
  static constexpr int kRows = kDotTileRows;   ///< Rows per tile.

  /// Rows [i, i + R) by the panel at column j0 of V registers, packed at w; A's rows where
  /// they are, or packed into tiles of R columns (`packed`: A(r, k) at a[k · R + r]).
  template <int R, int V>
  DYNRNN_TARGET_AVX512F __attribute__((noinline)) static void tile(const PanelProduct<float>& p, Index i, Index j0,
                                                                   const float* w, bool packed) {
    __m512 acc[R][V];
    DYNRNN_UNROLL
    for (int r = 0; r < R; ++r)
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
    const TileRows<R> a(p, i, packed);
    prefetch_c_tile<R, V, kPacket>(p.c, p.ldc, i, j0, p.N);  // C's lines, while the products run
    for (Index k = 0, ak = 0; k < p.K; ++k, ak += a.k_stride, w += V * kPacket) {
      __m512 wk[V];
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) wk[v] = _mm512_loadu_ps(w + v * kPacket);
      DYNRNN_UNROLL
      for (int r = 0; r < R; ++r) {
        const __m512 ar = _mm512_set1_ps(a.row[r][ak]);
        DYNRNN_UNROLL
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(ar, wk[v], acc[r][v]);
      }
    }
    DotPanels<FloatAvx512Tiles, 1>::store_tile<R, V>(acc, p.c, p.ldc, i, j0, p.N, p.bias, p.alpha, p.beta);
  }

  /// A narrow() product of exactly J columns, op(W) packed column after column: each element
  /// of C is a dot product along K in registers of 16 (the last one masked), the register's
  /// lanes summed, then the epilogue in registers of one lane, as a tile's.
  template <int J>
  DYNRNN_TARGET_AVX512F __attribute__((noinline)) static void dots(const PanelProduct<float>& p) {
    for (Index i = 0; i < p.n; ++i) {
      const float* a = p.a + i * p.lda;
      __m512 acc[J];
      for (int j = 0; j < J; ++j) acc[j] = _mm512_setzero_ps();
      for (Index k = 0; k < p.K; k += kPacket) {
        const __mmask16 mask = first_lanes(p.K - k);
        const __m512 ak = _mm512_maskz_loadu_ps(mask, a + k);
        for (int j = 0; j < J; ++j) acc[j] = _mm512_fmadd_ps(ak, _mm512_maskz_loadu_ps(mask, p.w + j * p.K + k), acc[j]);
      }
      float* c = p.c + i * p.ldc;
      for (int j = 0; j < J; ++j)
        c[j] = fused_epilogue(_mm512_reduce_add_ps(acc[j]), p.alpha, p.bias ? p.bias + j : nullptr, p.beta, c + j);
    }
  }
};

#undef DYNRNN_TARGET_AVX512F
DYNRNN_END_AVX512_KERNELS
#endif  // DYNRNN_X86_KERNELS

}  // namespace dynrnn::detail
