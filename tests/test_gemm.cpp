// Gemm and PackedRightGemm against Eigen's own product expressions: every operand
// orientation, odd shapes, alpha and beta, reuse across shapes, and row shares; each at every
// kernel level this program can run (the program's own tiles, and in float the AVX-512 tiles
// chosen at run time in a build narrower than AVX-512).
#include "reduced_precision_support.hpp"  // WithIsa, at_float_tile_levels
#include "support.hpp"

#include <algorithm>
#include <iterator>
#include <type_traits>
#include <vector>

namespace dynrnn::test {
namespace {

template <class Scalar>
class GemmTyped : public ::testing::Test {};
TYPED_TEST_SUITE(GemmTyped, ScalarTypes, ScalarNames);

// op(X) as a plain matrix.
template <class Scalar>
Matrix<Scalar> apply_op(const Matrix<Scalar>& x, Op op) {
  return op == Op::N ? x : Matrix<Scalar>(x.transpose());
}

template <class Scalar>
double max_abs(const Matrix<Scalar>& m) {
  return m.size() ? double(m.cwiseAbs().maxCoeff()) : 0.0;
}

// Runs check() at every level of this program's float tiles (core/float_tiles.hpp): its own
// (CpuIsa::portable), and AVX2's and AVX-512's where the CPU has them and they are wider.
// Products of double always run on the program's own tiles: once.
template <class Scalar, class Check>
void at_every_level(Check&& check) {
  if constexpr (!std::is_same_v<Scalar, float>) {
    check();
  } else {
    at_float_tile_levels(cpu_isa(), [&](CpuIsa isa) {
      WithIsa limit(isa);
      check();
    });
  }
}

template <class Scalar>
void expect_gemm_matches_eigen() {
  Rng rng(41);
  const Index shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {37, 29, 53}, {130, 70, 300}, {64, 1024, 256}};
  Gemm<Scalar> gemm;  // one context for all shapes: buffers grow and are reused
  for (const auto& shape : shapes) {
    const Index M = shape[0], N = shape[1], K = shape[2];
    for (Op op_a : {Op::N, Op::T})
      for (Op op_b : {Op::N, Op::T})
        for (double beta : {0.0, 1.0, -0.5}) {
          const auto a = random_matrix<Scalar>(op_a == Op::N ? M : K, op_a == Op::N ? K : M, rng);
          const auto b = random_matrix<Scalar>(op_b == Op::N ? K : N, op_b == Op::N ? N : K, rng);
          Matrix<Scalar> c = random_matrix<Scalar>(M, N, rng);
          const Matrix<Scalar> expected =
              Scalar(1.5) * apply_op(a, op_a) * apply_op(b, op_b) + Scalar(beta) * c;
          gemm(c, a, op_a, b, op_b, Scalar(1.5), Scalar(beta));
          EXPECT_LE(max_abs<Scalar>(c - expected), tolerance<Scalar>() * double(K) * 4)
              << M << "x" << N << "x" << K << " beta " << beta;
        }
  }
}
TYPED_TEST(GemmTyped, MatchesEigenForEveryOrientationAndShape) {
  at_every_level<TypeParam>(expect_gemm_matches_eigen<TypeParam>);
}

TYPED_TEST(GemmTyped, WritesIntoBlocksAndIgnoresOldValuesWhenBetaIsZero) {
  using Scalar = TypeParam;
  Rng rng(42);
  Matrix<Scalar> c = Matrix<Scalar>::Constant(40, 50, std::numeric_limits<Scalar>::quiet_NaN());
  const auto a = random_matrix<Scalar>(30, 20, rng), b = random_matrix<Scalar>(20, 25, rng);
  Gemm<Scalar> gemm;
  gemm(c.block(5, 10, 30, 25), a, Op::N, b, Op::N);
  EXPECT_LE(max_abs<Scalar>(c.block(5, 10, 30, 25) - a * b), tolerance<Scalar>() * 80);
  EXPECT_TRUE(std::isnan(c(0, 0)));  // outside the block: untouched
  EXPECT_TRUE(std::isnan(c(35, 10)));
}

// PackedRightGemm against Eigen's product expressions: both orientations of W, widths that
// are not multiples of the kernel's panels, row counts that are not multiples of its tiles
// and large enough for several row blocks and threads, alpha, beta and the bias; with beta 0
// C is never read (it holds NaN). Any split of the rows, on any thread count, gives
// bit-identical rows.
template <class Scalar>
void expect_packed_right_matches_eigen() {
  Rng rng(43);
  const Index shapes[][3] = {{3, 5, 1}, {9, 23, 13}, {17, 44, 37}, {64, 256, 64}, {256, 1024, 37},
                             {300, 96, 700}, {256, 2, 50}, {37, 1, 13}, {19, 3, 29}, {1, 4, 7}};  // K, N, n
  const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  PackedRightGemm<Scalar> packed;  // one object for all shapes: its storage grows and is reused
  const int saved_threads = max_threads();
  for (const auto& shape : shapes) {
    const Index K = shape[0], N = shape[1], n = shape[2];
    for (Op op : {Op::N, Op::T}) {
      SCOPED_TRACE(testing::Message() << K << "x" << N << " n " << n << (op == Op::N ? " N" : " T"));
      const auto w = random_matrix<Scalar>(op == Op::N ? K : N, op == Op::N ? N : K, rng);
      packed.pack(w, op);
      const auto a = random_matrix<Scalar>(n, K, rng);
      const Matrix<Scalar> c = random_matrix<Scalar>(n, N, rng);
      const Matrix<Scalar> bias = random_matrix<Scalar>(1, N, rng);
      const Matrix<Scalar> product = a * apply_op(w, op);
      const double tol = tolerance<Scalar>() * double(K) * 4;

      Matrix<Scalar> accumulated = c;
      packed(accumulated, a, Scalar(1), Scalar(1));
      EXPECT_LE(max_abs<Scalar>(accumulated - (product + c)), tol);
      Matrix<Scalar> scaled = c;
      packed(scaled, a, Scalar(-0.5), Scalar(2), bias.data());
      EXPECT_LE(max_abs<Scalar>(scaled - (Scalar(-0.5) * product + Scalar(2) * c + bias.replicate(n, 1))), tol);
      Matrix<Scalar> fresh = Matrix<Scalar>::Constant(n, N, nan);
      packed(fresh, a, Scalar(1), Scalar(0), bias.data());
      EXPECT_LE(max_abs<Scalar>(fresh - (product + bias.replicate(n, 1))), tol);

      // Rows shared in pieces that are not multiples of the tile, as threads or steps would.
      Matrix<Scalar> shared = Matrix<Scalar>::Constant(n, N, nan);
      for (Index r0 = 0, piece = 1; r0 < n; r0 += piece, piece += 2) {
        const Index rows = std::min(piece, n - r0);
        packed.rows(shared.middleRows(r0, rows), a.middleRows(r0, rows), Scalar(1), Scalar(0), bias.data());
      }
#if !defined(DYNRNN_GEMM_OPENBLAS) && !defined(DYNRNN_GEMM_ONEDNN)
      EXPECT_TRUE(identical(shared, fresh));
#else
      EXPECT_LE(max_abs<Scalar>(shared - fresh), tol);
#endif
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        Matrix<Scalar> again = Matrix<Scalar>::Constant(n, N, nan);
        packed(again, a, Scalar(1), Scalar(0), bias.data());
#if !defined(DYNRNN_GEMM_OPENBLAS) && !defined(DYNRNN_GEMM_ONEDNN)
        EXPECT_TRUE(identical(again, fresh)) << threads << " threads";
#else
        EXPECT_LE(max_abs<Scalar>(again - fresh), tol) << threads << " threads";
#endif
      }
      set_num_threads(saved_threads);
    }
  }
}
TYPED_TEST(GemmTyped, PackedRightMatchesEigenAndSharesRowsExactly) {
  at_every_level<TypeParam>(expect_packed_right_matches_eigen<TypeParam>);
}

// [A1, A2]ᵀ · B with B packed once, and the column sums of B with it: against Eigen's
// product expressions and column sums, with beta, for widths that are not multiples of the
// kernel's panels and depths of several k blocks; bit-identical to two separate products
// and to itself on any thread count.
template <class Scalar>
void expect_transposed_pair_matches_separate_products() {
  Rng rng(44);
  // K, M1, M2, N: no depth at all; depths of several slices of the kernel's (kDepth), rows
  // that end inside a tile, columns that end inside a panel and inside a packet.
  const Index shapes[][4] = {{0, 3, 4, 5},       {1, 1, 1, 1},        {7, 3, 5, 9},
                             {700, 37, 66, 130}, {640, 128, 256, 1024}, {257, 7, 1, 3}};
  Gemm<Scalar> pair, single;
  for (const auto& shape : shapes) {
    const Index K = shape[0], M1 = shape[1], M2 = shape[2], N = shape[3];
    SCOPED_TRACE(testing::Message() << K << " " << M1 << " " << M2 << " " << N);
    const auto a1 = random_matrix<Scalar>(K, M1, rng), a2 = random_matrix<Scalar>(K, M2, rng);
    const auto b = random_matrix<Scalar>(K, N, rng);
    const Matrix<Scalar> c1 = random_matrix<Scalar>(M1, N, rng), c2 = random_matrix<Scalar>(M2, N, rng);
    for (double beta : {0.0, 1.0, 0.5}) {
      // With beta 0, C's old values (here NaN) are never read.
      const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
      Matrix<Scalar> p1 = beta == 0 ? Matrix<Scalar>::Constant(M1, N, nan) : c1;
      Matrix<Scalar> p2 = beta == 0 ? Matrix<Scalar>::Constant(M2, N, nan) : c2;
      pair.transposed_pair(p1, a1, p2, a2, b, Scalar(-0.75), Scalar(beta));
      const Matrix<Scalar> e1 = Scalar(-0.75) * a1.transpose() * b + Scalar(beta) * c1;
      const Matrix<Scalar> e2 = Scalar(-0.75) * a2.transpose() * b + Scalar(beta) * c2;
      EXPECT_LE(max_abs<Scalar>(p1 - e1), tolerance<Scalar>() * double(K) * 4);
      EXPECT_LE(max_abs<Scalar>(p2 - e2), tolerance<Scalar>() * double(K) * 4);
      // With column sums: sums += alpha · 1ᵀ·B (against Eigen's column sums), and the products
      // exactly as without them.
      const Vector<Scalar> sums0 = random_matrix<Scalar>(N, 1, rng);
      Vector<Scalar> sums = sums0;
      Matrix<Scalar> q1 = c1, q2 = c2;
      pair.transposed_pair(q1, a1, q2, a2, b, Scalar(-0.75), Scalar(beta), sums.data());
      const Vector<Scalar> expected_sums = sums0 + Scalar(-0.75) * b.colwise().sum().transpose();
      EXPECT_LE(max_abs<Scalar>(sums - expected_sums), tolerance<Scalar>() * double(K + 1) * 4);
      EXPECT_TRUE(identical(q1, p1));
      EXPECT_TRUE(identical(q2, p2));
#if !defined(DYNRNN_GEMM_OPENBLAS) && !defined(DYNRNN_GEMM_ONEDNN)
      const int saved_threads = max_threads();
      Matrix<Scalar> s1 = c1, s2 = c2;
      single(s1, a1, Op::T, b, Op::N, Scalar(-0.75), Scalar(beta));
      single(s2, a2, Op::T, b, Op::N, Scalar(-0.75), Scalar(beta));
      EXPECT_TRUE(identical(p1, s1));
      EXPECT_TRUE(identical(p2, s2));
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        Matrix<Scalar> t1 = c1, t2 = c2;
        Vector<Scalar> t_sums = sums0;
        Gemm<Scalar>().transposed_pair(t1, a1, t2, a2, b, Scalar(-0.75), Scalar(beta), t_sums.data());
        EXPECT_TRUE(identical(t1, p1)) << threads << " threads";
        EXPECT_TRUE(identical(t2, p2)) << threads << " threads";
        EXPECT_TRUE(identical(t_sums, sums)) << threads << " threads";
      }
      set_num_threads(saved_threads);
#endif
    }
  }
}
TYPED_TEST(GemmTyped, TransposedPairMatchesSeparateProducts) {
  at_every_level<TypeParam>(expect_transposed_pair_matches_separate_products<TypeParam>);
}

// A product's result depends on its own shape only, never on the products a Gemm made
// before: the depth blocking, which fixes the order of the sums, follows each product.
TYPED_TEST(GemmTyped, ResultDoesNotDependOnEarlierShapes) {
  using Scalar = TypeParam;
  Rng rng(43);
  const Matrix<Scalar> big_a = random_matrix<Scalar>(50, 2000, rng), big_b = random_matrix<Scalar>(2000, 120, rng);
  Matrix<Scalar> big(50, 120);
  for (Index K : {300, 600, 1100}) {  // depths blocked differently from 2000 by any L1 size
    SCOPED_TRACE(K);
    const Matrix<Scalar> a = random_matrix<Scalar>(40, K, rng), b = random_matrix<Scalar>(K, 90, rng);
    Matrix<Scalar> fresh(40, 90), reused(40, 90);
    Gemm<Scalar> first;
    first(fresh, a, Op::N, b, Op::N);
    Gemm<Scalar> second;
    second(big, big_a, Op::N, big_b, Op::N);  // deeper and wider than the product that follows
    second(reused, a, Op::N, b, Op::N);
    EXPECT_TRUE(identical(fresh, reused));
  }
}

// In a build whose own float tiles are narrower than AVX2's or AVX-512's (no -march: SSE2),
// float products run on AVX2 or AVX-512 tiles chosen at run time where the CPU has them, and
// set_max_cpu_isa() returns them to narrower ones; products of double always run on the
// program's own. (The tests above check every level against Eigen.)
TEST(FloatTiles, ChosenAtRunTimeInANarrowerBuild) {
  if (detail::external_gemm<float>())
    GTEST_SKIP() << "float products go to the external GEMM library (DYNRNN_GEMM_OPENBLAS or DYNRNN_GEMM_ONEDNN), "
                    "which brings its own kernels";
  struct Level {
    CpuIsa isa;
    bool wider;  // than the program's own tiles
  };
  const Level levels[] = {{CpuIsa::avx2, detail::kRuntimeFloatAvx2Tiles},
                          {CpuIsa::avx512_core, detail::kRuntimeFloatAvx512Tiles}};
  if (std::none_of(std::begin(levels), std::end(levels),
                   [](const Level& l) { return l.wider && cpu_isa() >= l.isa; }))
    GTEST_SKIP() << "no tiles to choose at run time: cpu_isa() = " << to_string(cpu_isa())
                 << " (detected " << to_string(detected_cpu_isa())
                 << "), and this program's own float tiles are as wide as the CPU's or its compiler cannot build "
                    "others; float products run on the program's own tiles, which the tests above check";
  Rng rng(45);
  const auto w = random_matrix<float>(40, 70, rng);
  for (const Level& level : levels) {
    if (!level.wider || cpu_isa() < level.isa) continue;
    SCOPED_TRACE(to_string(level.isa));
    WithIsa at(level.isa);
    PackedRightGemm<float> gemm;
    gemm.pack(w, Op::N);
    EXPECT_EQ(gemm.isa(), level.isa);
    {
      WithIsa limit(CpuIsa::portable);
      gemm.pack(w, Op::N);
      EXPECT_EQ(gemm.isa(), CpuIsa::portable);
    }
    EXPECT_EQ(gemm.isa(), CpuIsa::portable) << "a packed operand keeps the kernels it was packed for";
  }
  if (detail::kRuntimeFloatAvx512Tiles && cpu_isa() >= CpuIsa::avx512_core) {
    PackedRightGemm<float> gemm;  // the widest tiles the CPU has
    gemm.pack(w, Op::N);
    EXPECT_EQ(gemm.isa(), CpuIsa::avx512_core);
  }
  PackedRightGemm<double> in_double;
  in_double.pack(random_matrix<double>(40, 70, rng), Op::N);
  EXPECT_EQ(in_double.isa(), CpuIsa::portable);
}

}  // namespace
}  // namespace dynrnn::test
