// dynrnn: the register-tiled kernel behind PackedRightGemm and Gemm's products Aᵀ·B.
//
// C = alpha · A · W + beta · C + 1 · biasᵀ for a right operand W (K, N) packed once into
// panels of kWidth columns, and any number of left rows A (n, K), all row-major.
//
//   panel p:  K rows of kWidth consecutive scalars, columns [p·kWidth, (p+1)·kWidth) of W;
//             the last panel may be narrower (whole packets), zero-padded past N.
//
// A tile of kRows rows of C by one panel lives in kRows · kPackets registers for the whole
// depth K: at each k the kernel loads the panel's kPackets packets of row k of W,
// broadcasts A(r, k) of each row and accumulates with fused multiply-adds. The epilogue then
// writes alpha · tile (+ bias) (+ beta · C) once, without reading C when beta is 0. This is
// what Eigen's general product kernel (gebp) cannot do: it always adds into C, so a fresh
// output such as the input projection costs a read of the whole of C first; and it repacks
// the left rows at every call.
//
// Every element of C is the sum over k = 0 .. K-1 in that order in one accumulator, then the
// same epilogue, whatever tile, row block or thread it falls in: results do not depend on
// how the rows are split between calls or threads.
//
// A product of at most a quarter of a packet's columns (narrow(): the input gradient of a
// layer with 2 input features, say) would leave most lanes of a panel zero. Its W is packed
// column after column instead, and each element of C is a dot product along K, in packets
// and then the scalars past the last whole one: again the same for every row wherever it
// falls.
//
// run_transposed() uses the same tiles for C = alpha · Aᵀ · B + beta · C, the weight gradient
// [x, h]ᵀ · dgates, whose depth (the rows of a whole batch) is too large for one pass: it
// takes kDepth rows of A and B at a time, packs that slice of A into tiles of kRows columns
// (A(r, k) then sits at k · kRows + r) and each panel's slice of B like W, and keeps the
// partial sums in C between slices.
//
// The loops above are PanelKernel's; the tiles (and the narrow dot products) are its Tiles
// parameter's: EigenTiles on Eigen's packets for the width the program is built for, or
// FloatAvx2Tiles and FloatAvx512Tiles, chosen at run time for float in a program built for a
// narrower one (float_tiles.hpp).
#pragma once

#include "types.hpp"
#include "unroll.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <type_traits>

namespace dynrnn::detail {

/// The arguments of one product of PanelKernel; see PanelKernel::run().
template <class Scalar>
struct PanelProduct {
  Scalar* c;            ///< C, (n, N), row stride ldc.
  Index ldc;            ///< Row stride of C.
  const Scalar* a;      ///< A, (n, K), row stride lda.
  Index lda;            ///< Row stride of A.
  const Scalar* w;      ///< op(W) packed by PanelKernel::pack().
  const Scalar* bias;   ///< N scalars added to every row of C, or null.
  Index n, K, N;        ///< Shapes.
  Scalar alpha, beta;   ///< C = alpha·A·W + beta·C (+ bias); C is not read when beta is 0.
};

/// One product of PanelKernel::run_transposed(): C (m, N) = alpha · Aᵀ · B + beta · C for A (K, m).
template <class Scalar>
struct PanelTransposed {
  Scalar* c;        ///< C, (m, N), row stride ldc.
  Index ldc;        ///< Row stride of C.
  const Scalar* a;  ///< A, (K, m), row stride lda.
  Index lda;        ///< Row stride of A.
  Index m;          ///< Rows of C, columns of A.
  Scalar beta;      ///< C = alpha · Aᵀ · B + beta · C; C is not read when beta is 0.
};

/// Where a tile's R rows of A are: row r's scalar k at row[r][k · k_stride]. Rows where they
/// are in A have k_stride 1 and rows lda apart; rows packed into tiles of R columns
/// (PanelKernel::run_transposed) have A(r, k) at a[k · R + r]: k_stride R, rows 1 apart.
/// One tile serves both, the choice made once per tile rather than compiled twice.
template <int R, class Scalar = float>
struct TileRows {
  const Scalar* row[R];  ///< Row r's scalar 0.
  Index k_stride;        ///< Scalars from one k to the next.
  /// The rows [i, i + R) of p.a, packed or not.
  TileRows(const PanelProduct<Scalar>& p, Index i, bool packed) : k_stride(packed ? R : 1) {
    const Scalar* a = packed ? p.a + i * p.K : p.a + i * p.lda;
    const Index row_stride = packed ? 1 : p.lda;
    for (int r = 0; r < R; ++r) row[r] = a + r * row_stride;
  }
};

template <class Scalar>
struct EigenTiles;

/// \brief The packed right-operand kernel; see the file comment.
/// \tparam Scalar element type (float or double, or any type Eigen vectorises or not).
/// \tparam Tiles its register tiles: the shape of a tile and of a panel (kPacket, kPackets,
///   kRows), `template <int R, int V> static void tile(const PanelProduct&, Index i,
///   Index j0, const Scalar* w, bool packed)` for rows [i, i + R) by the panel at column j0
///   of V packets (A's rows where they are, or packed by pack_columns() when `packed`), and
///   `template <int J> static void dots(const PanelProduct&)` for a narrow() product of J
///   columns. EigenTiles (the default) are built on Eigen's packets for the program's own
///   SIMD width; FloatAvx2Tiles and FloatAvx512Tiles are tiles chosen at run time
///   (float_tiles.hpp).
template <class Scalar, class Tiles = EigenTiles<Scalar>>
struct PanelKernel {
  static constexpr int kPacket = Tiles::kPacket;    ///< Scalars per packet.
  static constexpr int kPackets = Tiles::kPackets;  ///< Packets per panel row.
  static constexpr int kRows = Tiles::kRows;        ///< Rows per tile.
  static constexpr Index kWidth = Index(kPackets) * kPacket;  ///< Columns per panel.

  /// Packets in the panel that starts at column j0 of N: kPackets, or fewer in a last,
  /// narrower panel, so that a product with few columns (an input gradient of width 8,
  /// say) does not compute a whole panel's worth of zeros.
  static int packets_at(Index j0, Index N) {
    return int(std::min<Index>(kPackets, (N - j0 + kPacket - 1) / kPacket));
  }

  /// Widest product computed by dot products along K (narrow()): a quarter of a packet.
  static constexpr int kNarrow = kPacket / 4;

  /// True when a product of N columns is computed as one dot product along K per element of
  /// C, with op(W) packed column after column, rather than in a panel whose lanes would be
  /// mostly zeros: the input gradient of a layer with a few input features, for instance
  /// (2 columns against AVX-512's 16 float lanes).
  static bool narrow(Index N) { return kNarrow > 0 && N <= kNarrow; }

  /// Scalars the packed form of a (K, N) operand takes.
  static Index packed_size(Index K, Index N) {
    const Index full = N / kWidth * kWidth;
    return K * (full + (N - full + kPacket - 1) / kPacket * kPacket);
  }

  /// Packs op(W), (K, N), for run() into `dst` (packed_size(K, N) scalars): in panels, or
  /// column after column when the product is narrow(). W is row-major with row stride
  /// `stride`: (K, N) when not `transposed`, else (N, K).
  static void pack(Scalar* dst, const Scalar* w, Index stride, bool transposed, Index K, Index N) {
    if (!narrow(N)) return pack_panels(dst, w, stride, transposed, K, N);
    for (Index j = 0; j < N; ++j)  // column j at dst + j · K
      for (Index k = 0; k < K; ++k) dst[j * K + k] = transposed ? w[j * stride + k] : w[k * stride + j];
  }

  /// Packs op(W), (K, N), into panels at `dst` (packed_size(K, N) scalars), whatever N;
  /// arguments as for pack().
  static void pack_panels(Scalar* dst, const Scalar* w, Index stride, bool transposed, Index K, Index N) {
    for (Index j0 = 0; j0 < N; j0 += kWidth) {
      const Index width = std::min(kWidth, N - j0), panel_width = Index(packets_at(j0, N)) * kPacket;
      Scalar* panel = dst + j0 * K;  // every panel before this one is kWidth wide
      if (transposed) {
        pack_transposed_panel(panel, panel_width, w + j0 * stride, stride, K, width);
        continue;
      }
      for (Index k = 0; k < K; ++k) {
        Scalar* out = panel + k * panel_width;
        if (width == kWidth)  // a fixed count, copied inline rather than by a library call
          for (Index c = 0; c < kWidth; ++c) out[c] = w[k * stride + j0 + c];
        else
          std::copy(w + k * stride + j0, w + k * stride + j0 + width, out);
        std::fill(out + width, out + panel_width, Scalar(0));
      }
    }
  }

  /// One panel of a transposed W: rows [0, width) of `w` (row stride `stride`, K columns
  /// each) as the panel's columns, rows of `panel_width` zero-padded past `width`. In blocks
  /// of 16 x 16, whose 16 rows of W and 16 rows of the panel stay in the L1 cache: a column at
  /// a time, each element a row of W further on, took 5 times as long at K = 2048 (an LSTM's
  /// W_hᵀ at H = 512 in backward(), which packs it at every call).
  static void pack_transposed_panel(Scalar* panel, Index panel_width, const Scalar* w, Index stride, Index K,
                                    Index width) {
    constexpr Index B = 16;
    for (Index k0 = 0; k0 < K; k0 += B) {
      const Index kn = std::min(B, K - k0);
      for (Index c0 = 0; c0 < width; c0 += B) {
        const Index cn = std::min(B, width - c0);
        const auto block = [&](auto rows, auto cols) {  // fixed counts where the block is whole
          for (Index c = 0; c < cols; ++c)
            for (Index k = 0; k < rows; ++k) panel[(k0 + k) * panel_width + c0 + c] = w[(c0 + c) * stride + k0 + k];
        };
        if (kn == B && cn == B)
          block(std::integral_constant<Index, B>(), std::integral_constant<Index, B>());
        else
          block(kn, cn);
      }
      for (Index k = k0; k < k0 + kn; ++k)
        std::fill(panel + k * panel_width + width, panel + (k + 1) * panel_width, Scalar(0));
    }
  }

  using Product = PanelProduct<Scalar>;  ///< The arguments of one product; see run().

  /// Computes the whole product p on the calling thread.
  static void run(const Product& p) {
    if (p.n == 0 || p.N == 0) return;
    if constexpr (kNarrow > 0) {
      if (narrow(p.N)) return dots<kNarrow>(p);
    }
    run_panels(p);
  }

  /// run() for an op(W) packed into panels (pack_panels()) whatever N: every element of C
  /// is summed over k = 0 .. K-1 in order, never as narrow()'s dot products.
  static void run_panels(const Product& p) {
    if (p.n == 0 || p.N == 0) return;
    // Rows in blocks of about 128 KiB of A, which stay in the L2 cache while every panel
    // passes over them; a panel (K · kWidth scalars) stays in L1 or L2 while the block's
    // tiles use it.
    const double bytes = double(p.n) * double(p.K) * double(sizeof(Scalar));
    const Index blocks = std::max<Index>(1, Index(bytes / double(128 * 1024)));
    const Index block = ((p.n + blocks - 1) / blocks + kRows - 1) / kRows * kRows;
    for (Index i0 = 0; i0 < p.n; i0 += block)
      for (Index j0 = 0; j0 < p.N; j0 += kWidth)
        panel(p, i0, std::min(p.n, i0 + block), j0, packets_at(j0, p.N), p.w + j0 * p.K, false);
  }

  using Transposed = PanelTransposed<Scalar>;  ///< One product of run_transposed().

  /// Depth (rows of A and B) that run_transposed() takes at a time. A panel's slice of B
  /// (64 KiB for AVX-512 float) stays in the L2 cache while every tile of C passes over it,
  /// and C is read and written once per slice. Measured on the weight gradients of the M and
  /// L workloads (AVX-512, 1 thread, GFLOP/s): depth 64: 94 and 93; 128: 96 and 96; 256: 96
  /// and 103; 512: 96 and 103.
  static constexpr Index kDepth = 256;

  /// Scalars of workspace run_transposed() needs for products of `m` rows of C in all.
  static Index transposed_space(Index m) { return kDepth * (m + kWidth); }

  /// Computes C_i = alpha · A_iᵀ · B + beta_i · C_i for `count` products that share the right
  /// operand B (K, N), row stride ldb, over the columns [j_begin, j_end) of B and of every C_i,
  /// on the calling thread. j_begin is a multiple of kWidth. `space` holds
  /// transposed_space(m_1 + ... + m_count) scalars. Beta is applied with the first slice, so
  /// with K = 0 nothing is written: the caller scales C then. A product's A may have row
  /// stride 0: A = 1 (K, 1) with lda 0 and a pointing at a 1 makes C (1, N) the column sums of B.
  ///
  /// This is the weight gradient of a layer, [x, h]ᵀ · dgates, whose depth K (the rows of a
  /// whole batch) is large: it is taken kDepth at a time, the products keeping their partial
  /// sums in C. Each slice of every A_i is packed into tiles of kRows columns, read at each k
  /// as kRows consecutive scalars, and each panel's slice of B is packed like W in run(). An
  /// element of C is summed over the same slices in the same order whatever the columns
  /// given, so the columns can be shared between threads without changing a bit.
  static void run_transposed(const Transposed* products, int count, const Scalar* b, Index ldb, Index K, Index N,
                             Index j_begin, Index j_end, Scalar alpha, Scalar* space) {
    if (j_begin >= j_end) return;
    for (Index k0 = 0; k0 < K; k0 += kDepth) {
      const Index depth = std::min(kDepth, K - k0);
      Scalar* const packed_b = space;
      Scalar* const packed_a = space + depth * kWidth;
      Scalar* a = packed_a;
      for (int i = 0; i < count; ++i) {
        pack_columns(a, products[i].a + k0 * products[i].lda, products[i].lda, depth, products[i].m);
        a += depth * products[i].m;
      }
      for (Index j0 = j_begin; j0 < j_end; j0 += kWidth) {
        const int packets = packets_at(j0, N);
        pack_panels(packed_b, b + k0 * ldb + j0, ldb, false, depth, std::min(kWidth, N - j0));
        a = packed_a;
        for (int i = 0; i < count; ++i) {
          const Transposed& t = products[i];
          const Product p{t.c, t.ldc, a, 0, nullptr, nullptr, t.m, depth, N, alpha, k0 == 0 ? t.beta : Scalar(1)};
          panel(p, 0, t.m, j0, packets, packed_b, true);
          a += depth * t.m;
        }
      }
    }
  }

 private:
  // Packs the columns of A (K, m), row stride lda, into tiles of kRows columns (the last one
  // narrower): tile t holds K rows of its columns' scalars, tile after tile, at t · kRows · K.
  static void pack_columns(Scalar* dst, const Scalar* a, Index lda, Index K, Index m) {
    for (Index t = 0; t < m; t += kRows) {
      const Index rows = std::min<Index>(kRows, m - t);
      Scalar* out = dst + t * K;
      const Scalar* in = a + t;
      if (rows == kRows)  // a fixed count, copied inline rather than by a library call per row
        for (Index k = 0; k < K; ++k, out += kRows, in += lda)
          for (int r = 0; r < kRows; ++r) out[r] = in[r];
      else
        for (Index k = 0; k < K; ++k, out += rows, in += lda) std::copy(in, in + rows, out);
    }
  }

  // Rows [i0, i1) by the panel at column j0, which has `packets` packets (V) and is packed at
  // w. A's rows are read where they are, or from tiles packed by pack_columns (`packed`).
  template <int V = kPackets>
  static void panel(const Product& p, Index i0, Index i1, Index j0, int packets, const Scalar* w, bool packed) {
    if constexpr (V > 1) {
      if (packets < V) return panel<V - 1>(p, i0, i1, j0, packets, w, packed);
    }
    Index i = i0;
    for (; i + kRows <= i1; i += kRows) Tiles::template tile<kRows, V>(p, i, j0, w, packed);
    tail<V>(p, i, i1 - i, j0, w, packed);
  }

  // A narrow product (narrow()) of exactly J columns, or fewer: Tiles::dots<J>.
  template <int J>
  static void dots(const Product& p) {
    if constexpr (J > 1) {
      if (p.N < J) return dots<J - 1>(p);
    }
    Tiles::template dots<J>(p);
  }

  // The rows < kRows left at the end of a row block.
  template <int V, int R = kRows - 1>
  static void tail(const Product& p, Index i, Index rows, Index j0, const Scalar* w, bool packed) {
    if constexpr (R > 0) {
      if (rows == R) return Tiles::template tile<R, V>(p, i, j0, w, packed);
      tail<V, R - 1>(p, i, rows, j0, w, packed);
    } else {
      (void)p, (void)i, (void)rows, (void)j0, (void)w, (void)packed;
    }
  }
};

/// \brief PanelKernel's tiles on Eigen's SIMD packets, for the width the program is built
/// for (see the file comment).
template <class Scalar>
struct EigenTiles {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;  ///< One SIMD register.
  static constexpr int kPacket = Eigen::internal::unpacket_traits<Packet>::size;  ///< Scalars per packet.
  static constexpr int kRegisters = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS;        ///< SIMD registers.
  /// Packets per panel row and rows per tile: kRows · kPackets accumulators, kPackets panel
  /// packets and one broadcast must fit the registers (AVX-512: 24 + 4 + 1 of 32; SSE and
  /// AVX2: 12 + 3 + 1 of 16).
  static constexpr int kPackets = kRegisters >= 32 ? 4 : 3;
  static constexpr int kRows = kRegisters >= 32 ? 6 : kRegisters >= 16 ? 4 : 1;  ///< \copydoc kPackets

  /// Rows [i, i + R) by the panel at column j0 of V packets, packed at w; A's rows where they
  /// are, or packed into tiles of R columns (`packed`: A(r, k) at a[k · R + r]).
  // Never inlined: compiled on its own, the accumulators stay in registers. Inlined into a
  // large caller, GCC has been seen to store them to the stack at every k, three times slower.
  template <int R, int V>
  EIGEN_DONT_INLINE static void tile(const PanelProduct<Scalar>& p, Index i, Index j0, const Scalar* w, bool packed) {
    using namespace Eigen::internal;
    constexpr Index width = Index(V) * kPacket;  // this panel's row stride
    Packet acc[R][V];
    DYNRNN_UNROLL
    for (int r = 0; r < R; ++r)
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) acc[r][v] = pset1<Packet>(Scalar(0));
    const TileRows<R, Scalar> a(p, i, packed);
    // C's lines of the tile are fetched while the products run, not when the tile is stored
    // (only those inside C: a pointer past it would be undefined even unread).
    DYNRNN_UNROLL
    for (int r = 0; r < R; ++r)
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v)
        if (j0 + v * kPacket < p.N) prefetch(p.c + (i + r) * p.ldc + j0 + v * kPacket);
    for (Index k = 0, ak = 0; k < p.K; ++k, ak += a.k_stride, w += width) {
      Packet wk[V];
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) wk[v] = ploadu<Packet>(w + v * kPacket);
      DYNRNN_UNROLL
      for (int r = 0; r < R; ++r) {
        const Packet ar = pset1<Packet>(a.row[r][ak]);
        DYNRNN_UNROLL
        for (int v = 0; v < V; ++v) acc[r][v] = pmadd(ar, wk[v], acc[r][v]);
      }
    }
    const Index columns = std::min(width, p.N - j0);
    if (columns == width) {
      const Packet alpha = pset1<Packet>(p.alpha), beta = pset1<Packet>(p.beta);
      DYNRNN_UNROLL
      for (int r = 0; r < R; ++r) {
        Scalar* c = p.c + (i + r) * p.ldc + j0;
        DYNRNN_UNROLL
        for (int v = 0; v < V; ++v) {
          Packet out = pmul(alpha, acc[r][v]);
          if (p.bias) out = padd(out, ploadu<Packet>(p.bias + j0 + v * kPacket));
          if (p.beta != Scalar(0)) out = padd(out, pmul(beta, ploadu<Packet>(c + v * kPacket)));
          pstoreu(c + v * kPacket, out);
        }
      }
      return;
    }
    // A last panel that ends inside a packet: the same epilogue one scalar at a time.
    alignas(64) Scalar lanes[width];
    DYNRNN_UNROLL
    for (int r = 0; r < R; ++r) {
      DYNRNN_UNROLL
      for (int v = 0; v < V; ++v) pstore(lanes + v * kPacket, acc[r][v]);
      store_lanes(p, lanes, i + r, j0, columns);
    }
  }

  /// A narrow() product of exactly J columns: each element of C is a dot product of its row
  /// of A and its column of W, summed in packets from k = 0 (the J columns side by side, so
  /// that their sums overlap), the packet reduced, then the scalars past the last whole
  /// packet; then epilogue(), as a tile's last columns.
  template <int J>
  static void dots(const PanelProduct<Scalar>& p) {
    using namespace Eigen::internal;
    const Index whole = p.K / kPacket * kPacket;
    for (Index i = 0; i < p.n; ++i) {
      const Scalar* a = p.a + i * p.lda;
      Packet acc[J];
      for (int j = 0; j < J; ++j) acc[j] = pset1<Packet>(Scalar(0));
      for (Index k = 0; k < whole; k += kPacket) {
        const Packet ak = ploadu<Packet>(a + k);
        for (int j = 0; j < J; ++j) acc[j] = pmadd(ak, ploadu<Packet>(p.w + j * p.K + k), acc[j]);
      }
      Scalar* c = p.c + i * p.ldc;
      for (int j = 0; j < J; ++j) {
        const Scalar* w = p.w + j * p.K;
        Scalar sum = predux(acc[j]);
        for (Index k = whole; k < p.K; ++k) sum += a[k] * w[k];
        c[j] = epilogue(p, sum, j, c + j);
      }
    }
  }

 private:
  // The first `columns` of a tile row's lanes into row `row` of C at column j0, through
  // epilogue() one scalar at a time: a last panel that ends inside a packet. Out of line,
  // one copy serves every tile; inlined, GCC at -O3 vectorised the loop once per row of every
  // tile, which made each tile up to ten times larger (22 KB at 6 rows) and slow to compile.
  EIGEN_DONT_INLINE static void store_lanes(const PanelProduct<Scalar>& p, const Scalar* lanes, Index row, Index j0,
                                            Index columns) {
    Scalar* c = p.c + row * p.ldc + j0;
    for (Index col = 0; col < columns; ++col) c[col] = epilogue(p, lanes[col], j0 + col, c + col);
  }

  // One element of C, column j, from its sum along K, as the scalar paths write it (a tile's
  // full packets do the same in packets): alpha · sum (+ bias[j]) (+ beta · *c, read only
  // when beta is not 0).
  static Scalar epilogue(const PanelProduct<Scalar>& p, Scalar sum, Index j, const Scalar* c) {
    Scalar out = p.alpha * sum;
    if (p.bias) out = out + p.bias[j];
    if (p.beta != Scalar(0)) out = out + p.beta * *c;
    return out;
  }
};

}  // namespace dynrnn::detail

