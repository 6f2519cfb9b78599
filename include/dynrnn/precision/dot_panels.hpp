// dynrnn: what the reduced-precision kernels share.
//
// vdpbf16ps (bfloat16) and vpdpbusd (int8) both add, into each 32-bit lane of a register,
// the products of `Group` consecutive k of one row of A and one column of W (2 bfloat16, 4
// int8). So both kernels pack op(W) the same way:
//
//   panel p:  columns [64p, 64p + 64) of W (the last one narrower: whole packets of 16),
//             depth(K) / Group groups of k, each holding the panel's columns side by side
//             with a column's Group values consecutive (one 32-bit lane); zeros past N and K.
//
// and run the same loops: row blocks of about 128 KiB of A, each panel over a block, tiles
// of 6 rows by one panel (24 accumulators for the whole depth, 4 registers of W and one
// broadcast group of A), a narrower panel or fewer rows taking a smaller tile. The kernels
// supply the tile.
#pragma once

#include "cpu_isa.hpp"  // DYNRNN_X86_KERNELS, <immintrin.h>

#include "../core/types.hpp"
#include "../core/unroll.hpp"

#include <algorithm>

// Around the AVX-512 kernels: GCC before 13 warns falsely about its own AVX-512 intrinsics'
// undefined-vector helpers (GCC bug 105593) where they are inlined into a kernel.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define DYNRNN_BEGIN_AVX512_KERNELS                                \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define DYNRNN_END_AVX512_KERNELS _Pragma("GCC diagnostic pop")
#else
#define DYNRNN_BEGIN_AVX512_KERNELS
#define DYNRNN_END_AVX512_KERNELS
#endif

namespace dynrnn::detail {

#ifdef DYNRNN_X86_KERNELS
/// The mask of the first `lanes` of a packet's 16 (all 16 from 16 on): a row's last, partial
/// packet.
inline __mmask16 first_lanes(Index lanes) { return __mmask16(lanes >= 16 ? 0xffffu : (1u << lanes) - 1); }
#endif

#ifdef DYNRNN_X86_KERNELS
/// The epilogue of one element of C from its float32 sum, as DotPanels::store_tile() gives a
/// lane of a tile: out = alpha · sum (+ *bias) in one fused multiply-add, then
/// beta · *c + out in another, *c read only when beta is not 0. For the float32 tiles' narrow
/// dot products (core/float_avx2_tiles.hpp, core/float_avx512_tiles.hpp).
__attribute__((target("fma"), always_inline)) inline float fused_epilogue(float sum, float alpha, const float* bias,
                                                                         float beta, const float* c) {
  const __m128 alpha_v = _mm_set_ss(alpha), sum_v = _mm_set_ss(sum);
  __m128 out = bias ? _mm_fmadd_ss(alpha_v, sum_v, _mm_set_ss(*bias)) : _mm_mul_ss(alpha_v, sum_v);
  if (beta != 0.0f) out = _mm_fmadd_ss(_mm_set_ss(beta), _mm_set_ss(*c), out);
  return _mm_cvtss_f32(out);
}
#endif

/// Fetches the cache lines of C (row stride ldc, N columns) that a tile at rows [i, i + R)
/// by the V packets of Packet floats at column j0 stores, and reads when its beta is not 0,
/// so that they arrive while the tile's products run rather than when it stores. A time
/// loop's step adds its product to the input projection computed before the loop, whose
/// lines are then in no cache. Only lines inside C are named. For every tile of 32-bit
/// lanes: the bfloat16 and int8 kernels' and the float32 tiles chosen at run time.
///
/// Always inlined, and unrolled: a call that GCC at -O2 leaves out of line is dropped
/// altogether (a function of prefetches alone has no effect it must keep), and a program
/// built with -O2 lost 20% of its bfloat16 and int8 speed at M to the misses on C.
template <int R, int V, int Packet>
__attribute__((always_inline)) inline void prefetch_c_tile(const float* c, Index ldc, Index i, Index j0, Index N) {
  DYNRNN_UNROLL
  for (int r = 0; r < R; ++r)
    DYNRNN_UNROLL
    for (int v = 0; v < V; ++v)
      if (j0 + v * Packet < N) __builtin_prefetch(c + (i + r) * ldc + j0 + v * Packet, 1);
}

/// Rows of C per tile of the dot-product kernels: also the granule in which their callers
/// share rows between threads, so that every share but the last fills whole tiles.
inline constexpr int kDotTileRows = 6;

/// Columns per panel of the dot-product kernels (DotPanels::kWidth): producers that write a
/// packing in place (the LSTM's gate gradients) step from one panel to the next by it.
inline constexpr Index kDotPanelColumns = 64;

/// \brief The panel layout and loops of a dot-product kernel (see the file comment).
/// \tparam Kernel the kernel: provides `template <int R, int V> static void tile(const
///   Product&, Index i, Index j0, const W* panel)` for rows [i, i + R) by the panel at column
///   j0 of V packets.
/// \tparam Group consecutive k per 32-bit lane.
template <class Kernel, int Group>
struct DotPanels {
  static constexpr int kPacket = 16;                          ///< 32-bit lanes per register.
  static constexpr int kPackets = 4;                          ///< Registers per panel row.
  static constexpr int kRows = kDotTileRows;                  ///< Rows of C per tile.
  static constexpr Index kWidth = Index(kPackets) * kPacket;  ///< Columns per panel.
  static_assert(kWidth == kDotPanelColumns, "kDotPanelColumns names the panels' width");

  /// K rounded up to whole groups.
  static Index depth(Index K) { return (K + Group - 1) / Group * Group; }

  /// Packets in the panel at column j0 of N: kPackets, or fewer in a last, narrower one.
  static int packets_at(Index j0, Index N) {
    return int(std::min<Index>(kPackets, (N - j0 + kPacket - 1) / kPacket));
  }

  /// Elements of packed op(W) (K, N).
  static Index packed_size(Index K, Index N) {
    const Index full = N / kWidth * kWidth;
    return depth(K) * (full + (N - full + kPacket - 1) / kPacket * kPacket);
  }

  /// Where element (k, j) of op(W) (K, N) lies in its packing: an offset in elements from
  /// the start, as pack() places it.
  static Index packed_offset(Index K, Index N, Index k, Index j) {
    const Index j0 = j / kWidth * kWidth, width = Index(packets_at(j0, N)) * kPacket;
    return j0 * depth(K) + (k / Group) * Group * width + Group * (j - j0) + k % Group;
  }

  /// Packs (K, N) elements value(k, j) at dst (packed_size(K, N) of them), zeros past K and N.
  template <class T, class Value>
  static void pack(T* dst, Index K, Index N, Value&& value) {
    const Index Kp = depth(K);
    for (Index j0 = 0; j0 < N; j0 += kWidth) {
      const Index width = Index(packets_at(j0, N)) * kPacket;
      T* panel = dst + j0 * Kp;  // every panel before this one is kWidth wide
      for (Index k = 0; k < Kp; ++k)
        for (Index c = 0; c < width; ++c)
          panel[(k / Group) * Group * width + Group * c + k % Group] =
              k < K && j0 + c < N ? value(k, j0 + c) : T(0);
    }
  }

#ifdef DYNRNN_X86_KERNELS
  /// The epilogue of a tile of float32 sums acc (R rows by V registers) at rows [i, i + R)
  /// and the V packets at column j0 of C (row stride ldc, N columns; lanes past N are masked):
  ///
  ///   out = alpha · sum (+ bias)      one fused multiply-add with a bias, else a product
  ///   C   = beta · C + out            one fused multiply-add, C read only when beta is not 0
  ///
  /// the same for every tile shape, so a row's results do not depend on the tile it falls in.
  /// For alpha 1 (or a power of two) and beta 0 or 1 it rounds as a separate multiply and add.
  template <int R, int V>
  __attribute__((target("avx512f"), always_inline)) static inline void store_tile(
      __m512 (&acc)[R][V], float* c, Index ldc, Index i, Index j0, Index N, const float* bias, float alpha,
      float beta) {
    const __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
    // Every index a constant once unrolled, so that the accumulators stay in registers (a
    // loop that could leave early keeps a copy of them on the stack at every k).
    DYNRNN_UNROLL
    for (int v = 0; v < V; ++v) {
      const Index j = j0 + v * kPacket, lanes = std::min<Index>(kPacket, N - j);  // > 0: the panel has V packets
      const __mmask16 mask = first_lanes(lanes);
      const __m512 bias_v = bias ? _mm512_maskz_loadu_ps(mask, bias + j) : _mm512_setzero_ps();
      DYNRNN_UNROLL
      for (int r = 0; r < R; ++r) {
        float* row = c + (i + r) * ldc + j;
        __m512 out = bias ? _mm512_fmadd_ps(alpha_v, acc[r][v], bias_v) : _mm512_mul_ps(alpha_v, acc[r][v]);
        if (beta != 0.0f) out = _mm512_fmadd_ps(beta_v, _mm512_maskz_loadu_ps(mask, row), out);
        _mm512_mask_storeu_ps(row, mask, out);
      }
    }
  }
#endif

  /// Runs product p (rows n, depth K, packed in depth(K), columns N, packed W at p.w, A at
  /// p.a) on the calling thread.
  template <class Product>
  static void run(const Product& p) {
    if (p.n == 0 || p.N == 0) return;
    const double bytes = double(p.n) * double(p.K) * double(sizeof(*p.a));
    const Index blocks = std::max<Index>(1, Index(bytes / double(128 * 1024)));
    const Index block = ((p.n + blocks - 1) / blocks + kRows - 1) / kRows * kRows;
    for (Index i0 = 0; i0 < p.n; i0 += block)
      for (Index j0 = 0; j0 < p.N; j0 += kWidth) {
        const Index i1 = std::min(p.n, i0 + block);
        const auto* w = p.w + j0 * p.K;
        switch (packets_at(j0, p.N)) {
          case 1: rows<1>(p, i0, i1, j0, w); break;
          case 2: rows<2>(p, i0, i1, j0, w); break;
          case 3: rows<3>(p, i0, i1, j0, w); break;
          default: rows<4>(p, i0, i1, j0, w); break;
        }
      }
  }

 private:
  template <int V, class Product, class W>
  static void rows(const Product& p, Index i0, Index i1, Index j0, const W* w) {
    Index i = i0;
    for (; i + kRows <= i1; i += kRows) Kernel::template tile<kRows, V>(p, i, j0, w);
    switch (i1 - i) {
      case 5: Kernel::template tile<5, V>(p, i, j0, w); break;
      case 4: Kernel::template tile<4, V>(p, i, j0, w); break;
      case 3: Kernel::template tile<3, V>(p, i, j0, w); break;
      case 2: Kernel::template tile<2, V>(p, i, j0, w); break;
      case 1: Kernel::template tile<1, V>(p, i, j0, w); break;
      default: break;
    }
  }
};

}  // namespace dynrnn::detail
