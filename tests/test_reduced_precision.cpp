// The reduced-precision products (precision/bfloat16_gemm.hpp, precision/int8_gemm.hpp) and
// the choice of their kernels (precision/cpu_isa.hpp).
//
// The references are computed here, from the headers' definitions, independently of the
// library's code:
// - bfloat16: operands rounded by bit arithmetic (round to nearest, ties to even), each
//   element of C summed in float32 over the pairs of k in order, the odd product of a pair
//   before the even one. A product of two bfloat16 values is exact in float32, so the
//   reference is the same whether or not the compiler fuses its multiply-adds. A depth
//   above 1024 is summed in slices, as the header defines them: the fewest slices of at most
//   1024, of equal depth in whole pairs but the last, each slice's sum added to C in turn.
// - int8: scales and quantised values from the definition, sums in int64, the epilogue with
//   std::fma.
// Both kernels of each product, the fast one and the portable one, must give those bits.
#include <dynrnn/precision/bfloat16_gemm.hpp>
#include <dynrnn/precision/int8_gemm.hpp>

#include "reduced_precision_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using dynrnn::CpuIsa;
using dynrnn::Index;
using dynrnn::Op;
using Mat = dynrnn::Matrix<float>;

using dynrnn::test::bf16;
using dynrnn::test::bf16_bits;
using dynrnn::test::at_float_tile_levels;
using dynrnn::test::float_tile_levels;
using dynrnn::test::WithIsa;

// The kernels a product of Gemm (Bf16PackedRightGemm or Int8PackedRightGemm) packs for under
// the limit `limit`: its instructions' at or above their level, else the portable kernel, on
// the float32 tiles of that limit (core/float_tiles.hpp).
template <class Gemm>
constexpr CpuIsa kernel_at(CpuIsa limit) {
  constexpr CpuIsa fast = std::is_same_v<Gemm, dynrnn::Bf16PackedRightGemm> ? CpuIsa::avx512_core_bf16
                                                                             : CpuIsa::avx512_core_vnni;
  return limit >= fast ? fast : CpuIsa::portable;
}

// The limits under which a product of Gemm runs its portable kernel on each float32 tile
// level the program has (float_tile_levels), then its instructions' level.
template <class Gemm>
std::vector<CpuIsa> portable_levels_and_fast() {
  constexpr CpuIsa fast = kernel_at<Gemm>(CpuIsa::avx512_core_bf16);
  std::vector<CpuIsa> levels = float_tile_levels(CpuIsa(int(fast) - 1));
  levels.push_back(fast);
  return levels;
}

// C = alpha · A · W (+ bias) + beta · C0 as the file comment defines it; W is (K, N).
Mat reference(const Mat& A, const Mat& W, float alpha, float beta, const Mat& C0, const float* bias) {
  const Index n = A.rows(), K = A.cols(), N = W.cols();
  const Index depth = (K + 1) / 2 * 2, slices = std::max<Index>(1, (depth + 1023) / 1024);
  const Index slice = std::max<Index>(2, ((depth + slices - 1) / slices + 1) / 2 * 2);
  Mat C(n, N);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < N; ++j) {
      float out = 0.0f;
      for (Index k0 = 0; k0 < std::max<Index>(depth, 1); k0 += slice) {
        float sum = 0.0f;
        for (Index k = k0; k < std::min(K, k0 + slice); k += 2) {
          if (k + 1 < K) sum += bf16(A(i, k + 1)) * bf16(W(k + 1, j));
          sum += bf16(A(i, k)) * bf16(W(k, j));
        }
        if (k0 > 0) {
          out = alpha * sum + out;
          continue;
        }
        out = alpha * sum;
        if (bias) out = out + bias[j];
        if (beta != 0.0f) out = out + beta * C0(i, j);
      }
      C(i, j) = out;
    }
  return C;
}

Mat normal(Index rows, Index cols, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  Mat m(rows, cols);
  for (Index k = 0; k < m.size(); ++k) m.data()[k] = d(rng);
  return m;
}

bool have_bf16() { return dynrnn::detected_cpu_isa() >= CpuIsa::avx512_core_bf16; }
bool have_vnni() { return dynrnn::detected_cpu_isa() >= CpuIsa::avx512_core_vnni; }

#define SKIP_WITHOUT_BF16()                                                                             \
  if (!have_bf16())                                                                                     \
  GTEST_SKIP() << "this CPU (or compiler) has no AVX-512 BF16; the portable kernel's tests still run: " \
               << "detected_cpu_isa() = " << dynrnn::to_string(dynrnn::detected_cpu_isa())

#define SKIP_WITHOUT_VNNI()                                                                             \
  if (!have_vnni())                                                                                     \
  GTEST_SKIP() << "this CPU (or compiler) has no AVX-512 VNNI; the portable kernel's tests still run: " \
               << "detected_cpu_isa() = " << dynrnn::to_string(dynrnn::detected_cpu_isa())

// One product's arguments: shapes, W stored as op(W) or transposed, alpha, beta, a bias.
struct ProductCase {
  Index n, K, N;
  Op op;
  float alpha, beta;
  bool bias;
};

// Runs every case through a Gemm (Bf16PackedRightGemm or Int8PackedRightGemm) limited to
// `isa`, with product(gemm, C, A, case, bias) and reference(A, W, case, C0, bias), and
// expects the reference's bits. With `awkward`, A holds a NaN and W a column of zeros.
template <class Gemm, class Product, class Reference>
void expect_reference_bits(CpuIsa isa, std::initializer_list<ProductCase> cases, bool awkward, Product&& product,
                           Reference&& reference) {
  WithIsa limit(isa);
  std::mt19937 rng(20);
  for (const ProductCase& c : cases) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + " K=" + std::to_string(c.K) + " N=" + std::to_string(c.N) +
                 (c.op == Op::T ? " W transposed" : ""));
    Mat A = normal(c.n, c.K, rng), W = normal(c.K, c.N, rng, 0.1f);
    const Mat C0 = normal(c.n, c.N, rng), bias = normal(1, c.N, rng);
    if (awkward && c.K > 2) A(0, 1) = std::numeric_limits<float>::quiet_NaN();
    if (awkward && c.N > 1) W.col(1).setZero();
    const float* b = c.bias ? bias.data() : nullptr;
    Gemm gemm;
    gemm.pack(c.op == Op::N ? W : Mat(W.transpose()), c.op);
    ASSERT_EQ(gemm.isa(), kernel_at<Gemm>(isa));
    Mat C = C0;
    product(gemm, C, A, c, b);
    const Mat want = reference(A, W, c, C0, b);
    Index differ = 0;
    for (Index k = 0; k < C.size(); ++k) differ += C.data()[k] != want.data()[k];
    EXPECT_EQ(differ, 0) << "of " << C.size() << " elements; largest difference "
                         << (C - want).cwiseAbs().maxCoeff();
  }
}

// Every shape class: rows that fill no tile, odd depths, column counts that end inside a
// register and inside a panel, W given transposed, bias, beta, alpha.
void expect_bf16_reference_bits(CpuIsa isa) {
  expect_reference_bits<dynrnn::Bf16PackedRightGemm>(
      isa,
      {{1, 1, 1, Op::N, 1.0f, 0.0f, false},
       {5, 7, 13, Op::N, 1.0f, 0.0f, true},
       {6, 16, 64, Op::N, 1.0f, 1.0f, false},
       {13, 33, 100, Op::T, 1.0f, 1.0f, true},
       {64, 256, 1024, Op::N, 1.0f, 0.0f, true},
       {19, 129, 80, Op::T, 1.0f, 0.0f, false},
       {7, 40, 3, Op::N, 1.0f, 1.0f, true},
       {12, 2, 200, Op::N, 1.0f, 0.0f, false},
       {9, 31, 47, Op::N, 0.5f, 0.0f, true},
       {8, 0, 17, Op::N, 1.0f, 1.0f, true},
       {7, 1025, 80, Op::N, 1.0f, 1.0f, true},
       {13, 2501, 48, Op::T, 1.0f, 0.0f, false}},
      false,
      [](auto& gemm, Mat& C, const Mat& A, const ProductCase& c, const float* bias) {
        gemm(C, A, c.alpha, c.beta, bias);
      },
      [](const Mat& A, const Mat& W, const ProductCase& c, const Mat& C0, const float* bias) {
        return reference(A, W, c.alpha, c.beta, C0, bias);
      });
}

// The portable kernel at every float32 tile level below BF16's (the program's own tiles,
// and AVX2's and AVX-512's where the CPU has them).
TEST(Bf16Gemm, PortableKernelGivesTheReferenceBits) {
  at_float_tile_levels(CpuIsa::avx512_core_vnni, expect_bf16_reference_bits);
}

TEST(Bf16Gemm, Avx512Bf16KernelGivesTheReferenceBits) {
  SKIP_WITHOUT_BF16();
  expect_bf16_reference_bits(CpuIsa::avx512_core_bf16);
}

// The two kernels on a benchmark workload's shapes (M's recurrent and input products), the
// fast one chosen by default, the portable one forced on the same machine.
TEST(Bf16Gemm, FastAndPortableKernelsGiveTheSameBits) {
  SKIP_WITHOUT_BF16();
  std::mt19937 rng(3);
  for (const auto& [n, K, N] : {std::array<Index, 3>{64, 256, 1024}, std::array<Index, 3>{640, 128, 1024}}) {
    const Mat A = normal(n, K, rng), W = normal(K, N, rng, 0.05f);
    Mat fast(n, N), portable(n, N);
    dynrnn::Bf16PackedRightGemm gemm;
    gemm.pack(W, Op::N);
    EXPECT_EQ(gemm.isa(), CpuIsa::avx512_core_bf16) << "the fast kernel is the default where the CPU has it";
    gemm(fast, A);
    {
      WithIsa limit(CpuIsa::portable);
      gemm.pack(W, Op::N);
      EXPECT_EQ(gemm.isa(), CpuIsa::portable);
      gemm(portable, A);
    }
    EXPECT_TRUE(fast == portable) << "largest difference " << (fast - portable).cwiseAbs().maxCoeff();
  }
}

// transposed_left: C = alpha·Aᵀ·W + beta·C for A (K, m), the weight gradients' product. Its
// left operand is read by columns (the AVX-512 kernel converts 16 columns of 16 k-pairs at a
// time, transposes them in registers and scatters the last k-pairs), so the shapes cover
// column counts that end inside a group of 16, depths of several whole blocks of 16 k-pairs,
// with and without a tail, odd depths and a depth of 1; the bits must be the reference's for
// Aᵀ.
void expect_transposed_left_reference_bits(CpuIsa isa) {
  WithIsa limit(isa);
  std::mt19937 rng(21);
  for (const auto& [m, K, N] : {std::array<Index, 3>{1, 1, 1}, std::array<Index, 3>{17, 9, 70},
                                std::array<Index, 3>{48, 101, 256}, std::array<Index, 3>{133, 640, 96},
                                std::array<Index, 3>{5, 2, 13}, std::array<Index, 3>{40, 3001, 96}}) {
    SCOPED_TRACE("m=" + std::to_string(m) + " K=" + std::to_string(K) + " N=" + std::to_string(N));
    const Mat A = normal(K, m, rng), W = normal(K, N, rng, 0.1f), C0 = normal(m, N, rng);
    dynrnn::Bf16PackedRightGemm gemm;
    gemm.pack(W, Op::N);
    ASSERT_EQ(gemm.isa(), kernel_at<dynrnn::Bf16PackedRightGemm>(isa));
    for (const float beta : {0.0f, 1.0f}) {
      Mat C = C0;
      gemm.transposed_left(C, A, 1.0f, beta);
      const Mat want = reference(A.transpose(), W, 1.0f, beta, C0, nullptr);
      EXPECT_TRUE(C == want) << "beta " << beta << ": largest difference " << (C - want).cwiseAbs().maxCoeff();
    }
  }
  dynrnn::Bf16PackedRightGemm gemm;
  gemm.pack(Mat::Ones(4, 8), Op::N);
  Mat C(3, 8);
  EXPECT_THROW(gemm.transposed_left(C, Mat::Ones(5, 3)), std::invalid_argument);  // A needs 4 rows
  EXPECT_THROW(gemm.transposed_left(C, Mat::Ones(4, 2)), std::invalid_argument);  // C needs 2 rows
}

TEST(Bf16Gemm, PortableTransposedLeftGivesTheReferenceBits) {
  at_float_tile_levels(CpuIsa::avx512_core_vnni, expect_transposed_left_reference_bits);
}

TEST(Bf16Gemm, Avx512Bf16TransposedLeftGivesTheReferenceBits) {
  SKIP_WITHOUT_BF16();
  expect_transposed_left_reference_bits(CpuIsa::avx512_core_bf16);
}

// pack() with column sums (the weight gradients' bias gradient, read with the gate
// gradients): the sums are added in float32, row after row, as detail::add_column_sums adds
// them, on either kernel, over an odd depth and columns that end inside a packet; the
// products do not change; Op::T is refused.
void expect_pack_adds_column_sums(CpuIsa isa) {
  WithIsa limit(isa);
  std::mt19937 rng(23);
  for (const Index K : {37, 2049}) {
    SCOPED_TRACE("K=" + std::to_string(K));
    const Index N = 70;
    const Mat W = normal(K, N, rng), A = normal(5, K, rng);
    const Mat start = normal(1, N, rng);
    Mat want = start;
    for (Index k = 0; k < K; ++k)
      for (Index j = 0; j < N; ++j) want(0, j) = want(0, j) + W(k, j);
    Mat sums = start, with(5, N), without(5, N);
    dynrnn::Bf16PackedRightGemm gemm;
    gemm.pack(W, Op::N, sums.data());
    ASSERT_EQ(gemm.isa(), kernel_at<dynrnn::Bf16PackedRightGemm>(isa));
    gemm(with, A);
    EXPECT_TRUE(sums == want) << "largest difference " << (sums - want).cwiseAbs().maxCoeff();
    gemm.pack(W, Op::N);
    gemm(without, A);
    EXPECT_TRUE(with == without);
    EXPECT_THROW(gemm.pack(W.transpose(), Op::T, sums.data()), std::invalid_argument);
  }
}

TEST(Bf16Gemm, PortablePackAddsTheColumnSums) {
  at_float_tile_levels(CpuIsa::avx512_core_vnni, expect_pack_adds_column_sums);
}

TEST(Bf16Gemm, Avx512Bf16PackAddsTheColumnSums) {
  SKIP_WITHOUT_BF16();
  expect_pack_adds_column_sums(CpuIsa::avx512_core_bf16);
}

#ifdef DYNRNN_X86_KERNELS
// Rows `order` of W (K, N) written into pack_in_place()'s packing by
// Bf16Avx512Kernel::store_row(), 16 columns at a time, as the LSTM's gate gradients are.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void store_rows(
    const dynrnn::Bf16PackedRightGemm& gemm, std::uint16_t* packed, const Mat& W, const std::vector<Index>& order) {
  for (const Index k : order)
    for (Index j = 0; j < W.cols(); j += 16)
      dynrnn::detail::Bf16Avx512Kernel::store_row(packed + gemm.packed_offset(k - k % 2, j), k,
                                                  _mm512_loadu_ps(W.data() + k * W.cols() + j));
}
#endif

// pack_in_place(): rows written into the packing one at a time, in any order (shuffled
// here: the LSTM's backward writes the last step's rows first, and threads write the two
// rows of a pair apart), give the products of pack() of the same W bit for bit, both
// operator() and transposed_left(): over depths of one slice and of several, odd and even,
// and panels of 64 columns and narrower last ones. The packing held infinities before, so
// that a row left unwritten, or an odd depth's pad row left as it was, shows as NaN.
TEST(Bf16Gemm, RowsWrittenInPlaceMakeThePackedOperand) {
  SKIP_WITHOUT_BF16();
#ifdef DYNRNN_X86_KERNELS
  std::mt19937 rng(24);
  for (const auto& [K, N] : {std::array<Index, 2>{7, 48}, std::array<Index, 2>{2501, 208},
                             std::array<Index, 2>{1030, 64}}) {
    SCOPED_TRACE("K=" + std::to_string(K) + " N=" + std::to_string(N));
    const Mat W = normal(K, N, rng), A = normal(11, K, rng), At = normal(K, 9, rng), C0 = normal(11, N, rng);
    std::vector<Index> order(static_cast<std::size_t>(K));
    for (Index k = 0; k < K; ++k) order[std::size_t(k)] = k;
    std::shuffle(order.begin(), order.end(), rng);
    dynrnn::Bf16PackedRightGemm in_place, packed;
    in_place.pack(Mat::Constant(K + 1, N, std::numeric_limits<float>::infinity()), Op::N);
    std::uint16_t* dst = in_place.pack_in_place(K, N);
    ASSERT_NE(dst, nullptr);
    EXPECT_EQ(in_place.isa(), CpuIsa::avx512_core_bf16);
    store_rows(in_place, dst, W, order);
    packed.pack(W, Op::N);
    Mat c_in_place = C0, c_packed = C0;
    in_place(c_in_place, A, 1.0f, 1.0f);
    packed(c_packed, A, 1.0f, 1.0f);
    EXPECT_TRUE(c_in_place == c_packed) << "largest difference " << (c_in_place - c_packed).cwiseAbs().maxCoeff();
    Mat d_in_place(9, N), d_packed(9, N);
    in_place.transposed_left(d_in_place, At);
    packed.transposed_left(d_packed, At);
    EXPECT_TRUE(d_in_place == d_packed) << "largest difference " << (d_in_place - d_packed).cwiseAbs().maxCoeff();
  }
#endif
  // Columns that end inside a packet, or a CPU limited below AVX-512 BF16: no packing to
  // write into, and the caller packs W instead.
  dynrnn::Bf16PackedRightGemm gemm;
  EXPECT_EQ(gemm.pack_in_place(8, 40), nullptr);
  WithIsa limit(CpuIsa::avx512_core_vnni);
  EXPECT_EQ(gemm.pack_in_place(8, 48), nullptr);
}

// rounded(): a left operand its producer already rounded (here by the tests' own bit
// arithmetic, at a row stride wider than the depth, a pad element past an odd K zero) gives
// operator()'s bits for the float32 A, on 1 and 2 threads, and rounded_rows() the same on
// part of the rows; over one slice of depth and several. It refuses C of other columns, a
// stride below the depth, a null A, and a W packed for the portable kernel.
TEST(Bf16Gemm, RoundedLeftOperandGivesTheBitsOfOperator) {
  SKIP_WITHOUT_BF16();
  std::mt19937 rng(25);
  for (const auto& [n, K, N] : {std::array<Index, 3>{37, 7, 48}, std::array<Index, 3>{301, 1030, 80}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " K=" + std::to_string(K) + " N=" + std::to_string(N));
    const Mat W = normal(K, N, rng, 0.05f), A = normal(n, K, rng), C0 = normal(n, N, rng);
    const Index lda = K + K % 2 + 6;
    std::vector<std::uint16_t> a(std::size_t(n * lda), 0xffff);  // 0xffff: a NaN left where nothing was written
    for (Index i = 0; i < n; ++i) {
      for (Index k = 0; k < K; ++k) a[std::size_t(i * lda + k)] = bf16_bits(bf16(A(i, k)));
      if (K % 2) a[std::size_t(i * lda + K)] = 0;
    }
    dynrnn::Bf16PackedRightGemm gemm;
    gemm.pack(W, Op::N);
    ASSERT_EQ(gemm.isa(), CpuIsa::avx512_core_bf16);
    Mat want = C0;
    gemm(want, A, 1.0f, 0.5f);
    for (int threads : {1, 2}) {
      dynrnn::set_num_threads(threads);
      Mat got = C0;
      gemm.rounded(got, a.data(), lda, 0.5f);
      EXPECT_TRUE(got == want) << threads << " threads: largest difference " << (got - want).cwiseAbs().maxCoeff();
    }
    dynrnn::set_num_threads(dynrnn::max_threads());
    Mat rows = C0;
    const Index first = n / 3;
    gemm.rounded_rows(rows.middleRows(first, n - first), a.data() + first * lda, lda, 0.5f);
    EXPECT_TRUE(rows.middleRows(first, n - first) == want.middleRows(first, n - first));
    EXPECT_TRUE(rows.topRows(first) == C0.topRows(first)) << "rows outside its share";
  }
  dynrnn::Bf16PackedRightGemm gemm;
  gemm.pack(Mat::Ones(5, 16), Op::N);
  std::vector<std::uint16_t> a(3 * 8, 0);
  Mat C(3, 16), wrong_c(3, 15);
  const auto expect_refusal = [](auto&& call, const char* argument, const char* expected, const char* actual) {
    try {
      call();
      ADD_FAILURE() << "no exception for " << argument;
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("Bf16PackedRightGemm::rounded"), std::string::npos) << what;
      for (const char* part : {argument, expected, actual}) EXPECT_NE(what.find(part), std::string::npos) << what;
    }
  };
  expect_refusal([&] { gemm.rounded(wrong_c, a.data(), 8); }, "C", "16", "15");
  expect_refusal([&] { gemm.rounded(C, a.data(), 5); }, "lda", "at least 6", "5");
  expect_refusal([&] { gemm.rounded(C, nullptr, 8); }, "a", "not null", "null");
  WithIsa limit(CpuIsa::portable);
  gemm.pack(Mat::Ones(5, 16), Op::N);
  expect_refusal([&] { gemm.rounded(C, a.data(), 8); }, "isa()", "avx512_core_bf16", "portable");
}

// Against the float32 product (in double): bfloat16 keeps 8 significant bits, so the
// relative (Frobenius) error of a long sum of random products is a few 1e-3.
TEST(Bf16Gemm, AgreesWithFloat32Within1e2) {
  std::mt19937 rng(4);
  const Mat A = normal(64, 384, rng), W = normal(384, 1024, rng, 0.05f);
  const Eigen::MatrixXd exact = A.cast<double>() * W.cast<double>();
  for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx512_core_bf16}) {
    WithIsa limit(isa);
    dynrnn::Bf16PackedRightGemm gemm;
    gemm.pack(W, Op::N);
    Mat C(64, 1024);
    gemm(C, A);
    const double error = (C.cast<double>() - exact).norm() / exact.norm();
    std::printf("bfloat16 %s, 64x384 . 384x1024: relative error against float32 %.2e\n", dynrnn::to_string(gemm.isa()),
                error);
    EXPECT_LT(error, 1e-2) << dynrnn::to_string(gemm.isa());
    EXPECT_GT(error, 1e-4) << "the operands were not rounded to bfloat16";
  }
}

// The rows are shared between threads for a large product: the bits do not change.
TEST(Bf16Gemm, ThreadCountChangesNoBit) {
  std::mt19937 rng(5);
  const Mat A = normal(1000, 256, rng), W = normal(256, 512, rng, 0.05f);
  for (CpuIsa isa : portable_levels_and_fast<dynrnn::Bf16PackedRightGemm>()) {
    WithIsa limit(isa);
    dynrnn::Bf16PackedRightGemm gemm;
    gemm.pack(W, Op::N);
    Mat one(1000, 512), two(1000, 512);
    dynrnn::set_num_threads(1);
    gemm(one, A);
    dynrnn::set_num_threads(2);
    gemm(two, A);
    dynrnn::set_num_threads(dynrnn::max_threads());
    EXPECT_TRUE(one == two) << "limit " << dynrnn::to_string(isa);
  }
}

TEST(Bf16Gemm, RefusesShapesThatDisagree) {
  dynrnn::Bf16PackedRightGemm gemm;
  gemm.pack(Mat::Ones(4, 8), Op::N);
  Mat C(3, 8), wrong_c(3, 7);
  try {
    gemm(C, Mat::Ones(3, 5));
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("A"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("of 4 columns"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3, 5]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gemm(wrong_c, Mat::Ones(3, 4)), std::invalid_argument);
}

TEST(CpuIsa, SetMaxCpuIsaRefusesALevelThatDoesNotExist) {
  try {
    dynrnn::set_max_cpu_isa(static_cast<CpuIsa>(7));
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("got 7"), std::string::npos) << e.what();
  }
}

// The levels, lowest first, each with its own name (DYNRNN_MAX_CPU_ISA's), and a limit at any
// of them gives the lower of it and the CPU's.
TEST(CpuIsa, EveryLevelHasItsNameAndLimitsTheLevelInUse) {
  std::vector<std::string> names;
  for (CpuIsa isa : dynrnn::kCpuIsaLevels) {
    EXPECT_EQ(int(isa), int(names.size())) << "levels are numbered from 0, lowest first";
    names.push_back(dynrnn::to_string(isa));
    WithIsa limit(isa);
    EXPECT_EQ(dynrnn::cpu_isa(), std::min(isa, dynrnn::detected_cpu_isa())) << names.back();
  }
  EXPECT_EQ(names, (std::vector<std::string>{"portable", "avx2", "avx512_core", "avx512_core_vnni",
                                             "avx512_core_bf16"}));
}

// The level in use is the lower of the CPU's and the limit. Run by ctest once more with
// DYNRNN_MAX_CPU_ISA=portable (reduced_precision_environment_limit), where the limit starts there.
TEST(CpuIsa, TheLimitStartsAtTheEnvironmentsAndLowersTheLevel) {
  const char* env = std::getenv("DYNRNN_MAX_CPU_ISA");
  const CpuIsa initial = dynrnn::max_cpu_isa();
  if (env && std::string(env) == "portable") {
    EXPECT_EQ(initial, CpuIsa::portable);
    EXPECT_EQ(dynrnn::cpu_isa(), CpuIsa::portable);
    std::mt19937 rng(6);
    dynrnn::Bf16PackedRightGemm gemm;
    gemm.pack(normal(8, 8, rng), Op::N);
    EXPECT_EQ(gemm.isa(), CpuIsa::portable);
  } else {
    EXPECT_EQ(initial, CpuIsa::avx512_core_bf16);
    EXPECT_EQ(dynrnn::cpu_isa(), dynrnn::detected_cpu_isa());
  }
  {
    WithIsa limit(CpuIsa::portable);
    EXPECT_EQ(dynrnn::cpu_isa(), CpuIsa::portable);
  }
  EXPECT_EQ(dynrnn::max_cpu_isa(), initial);
}

// ---- int8 ----

// The int8 product by its definition (int8_gemm.hpp's file comment); W is (K, N).
std::int32_t quantized(float x, float inverse) {
  float v = x * inverse;
  if (!(v > -127.0f)) v = -127.0f;  // NaN too
  if (!(v < 127.0f)) v = 127.0f;
  return std::int32_t(std::nearbyint(v));  // the default rounding: halves to even
}

Mat int8_reference(const Mat& A, const Mat& W, float a_scale, float alpha, float beta, const Mat& C0,
                   const float* bias) {
  const Index n = A.rows(), K = A.cols(), N = W.cols();
  Mat C(n, N);
  for (Index j = 0; j < N; ++j) {
    float bound = 0.0f;
    for (Index k = 0; k < K; ++k) bound = std::max(bound, std::abs(W(k, j)));
    const float w_scale = bound > 0.0f ? bound / 127.0f : 1.0f, factor = alpha * a_scale * w_scale;
    for (Index i = 0; i < n; ++i) {
      std::int64_t sum = 0;
      for (Index k = 0; k < K; ++k)
        sum += std::int64_t(quantized(A(i, k), 1.0f / a_scale)) * quantized(W(k, j), 1.0f / w_scale);
      float out = std::fma(float(sum), factor, bias ? bias[j] : 0.0f);
      if (beta != 0.0f) out = std::fma(beta, C0(i, j), out);
      C(i, j) = out;
    }
  }
  return C;
}

// As for bfloat16, and: A partly beyond the calibrated range (clamped), with a NaN; a
// column of W all zero; depths either side of where the portable kernel's float32 sums stop
// being exact.
void expect_int8_reference_bits(CpuIsa isa) {
  const float a_scale = dynrnn::int8_scale(2.0f);
  expect_reference_bits<dynrnn::Int8PackedRightGemm>(
      isa,
      {{1, 1, 1, Op::N, 1.0f, 0.0f, false},
       {5, 7, 13, Op::N, 1.0f, 0.0f, true},
       {6, 16, 64, Op::N, 0.7f, 1.0f, false},
       {13, 33, 100, Op::T, 1.0f, 0.3f, true},
       {64, 256, 1024, Op::N, 1.0f, 0.0f, true},
       {19, 130, 80, Op::T, 1.0f, 0.0f, false},
       {7, 40, 3, Op::N, 1.0f, 1.0f, true},
       {8, 0, 17, Op::N, 1.0f, 1.0f, true},
       {3, 1040, 20, Op::N, 1.0f, 0.0f, true},
       {3, 1041, 20, Op::T, 1.0f, 1.0f, false}},
      true,
      [&](auto& gemm, Mat& C, const Mat& A, const ProductCase& c, const float* bias) {
        gemm(C, A, a_scale, c.alpha, c.beta, bias);
      },
      [&](const Mat& A, const Mat& W, const ProductCase& c, const Mat& C0, const float* bias) {
        return int8_reference(A, W, a_scale, c.alpha, c.beta, C0, bias);
      });
}

// The portable kernel at every float32 tile level below VNNI's.
TEST(Int8Gemm, PortableKernelGivesTheReferenceBits) {
  at_float_tile_levels(CpuIsa::avx512_core, expect_int8_reference_bits);
}

TEST(Int8Gemm, Avx512VnniKernelGivesTheReferenceBits) {
  SKIP_WITHOUT_VNNI();
  expect_int8_reference_bits(CpuIsa::avx512_core_vnni);
}

// The largest sums there can be (every product 127 · 127), past 2^24 where float32 stops
// holding every integer: still exact, with either kernel.
TEST(Int8Gemm, TheLargestSumsStayExact) {
  for (CpuIsa isa : portable_levels_and_fast<dynrnn::Int8PackedRightGemm>()) {
    WithIsa limit(isa);
    for (Index K : {Index(1040), Index(1041), Index(3001)}) {
      const Mat A = Mat::Ones(5, K), W = -Mat::Ones(K, 3);
      dynrnn::Int8PackedRightGemm gemm;
      gemm.pack(W, Op::N);
      Mat C(5, 3);
      gemm(C, A, dynrnn::int8_scale(1.0f));
      const Mat want = int8_reference(A, W, dynrnn::int8_scale(1.0f), 1.0f, 0.0f, C, nullptr);
      EXPECT_TRUE(C == want) << "limit " << dynrnn::to_string(isa) << " K=" << K << ": " << C(0, 0) << " against "
                             << want(0, 0);
    }
  }
}

TEST(Int8Gemm, FastAndPortableKernelsGiveTheSameBits) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(7);
  const Mat A = normal(640, 256, rng).cwiseMin(1.0f).cwiseMax(-1.0f), W = normal(256, 1024, rng, 0.05f);
  Mat fast(640, 1024), portable(640, 1024);
  dynrnn::Int8PackedRightGemm gemm;
  gemm.pack(W, Op::N);
  EXPECT_EQ(gemm.isa(), CpuIsa::avx512_core_vnni) << "the fast kernel is the default where the CPU has it";
  gemm(fast, A, dynrnn::int8_scale(1.0f));
  {
    WithIsa limit(CpuIsa::portable);
    gemm.pack(W, Op::N);
    EXPECT_EQ(gemm.isa(), CpuIsa::portable);
    gemm(portable, A, dynrnn::int8_scale(1.0f));
  }
  EXPECT_TRUE(fast == portable) << "largest difference " << (fast - portable).cwiseAbs().maxCoeff();
}

// Against the float32 product: 8-bit operands, an h-like A in [-1, 1] with its known bound.
TEST(Int8Gemm, AgreesWithFloat32Within5e2) {
  std::mt19937 rng(8);
  const Mat A = normal(64, 384, rng, 0.5f).cwiseMin(1.0f).cwiseMax(-1.0f), W = normal(384, 1024, rng, 0.05f);
  const Eigen::MatrixXd exact = A.cast<double>() * W.cast<double>();
  for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx512_core_vnni}) {
    WithIsa limit(isa);
    dynrnn::Int8PackedRightGemm gemm;
    gemm.pack(W, Op::N);
    Mat C(64, 1024);
    gemm(C, A, dynrnn::int8_scale(1.0f));
    const double error = (C.cast<double>() - exact).norm() / exact.norm();
    std::printf("int8 %s, 64x384 . 384x1024: relative error against float32 %.2e\n", dynrnn::to_string(gemm.isa()),
                error);
    EXPECT_LT(error, 5e-2) << dynrnn::to_string(gemm.isa());
    EXPECT_GT(error, 1e-4) << "the operands were not quantised";
  }
}

TEST(Int8Gemm, ThreadCountChangesNoBit) {
  std::mt19937 rng(9);
  const Mat A = normal(1000, 256, rng), W = normal(256, 512, rng, 0.05f);
  for (CpuIsa isa : portable_levels_and_fast<dynrnn::Int8PackedRightGemm>()) {
    WithIsa limit(isa);
    dynrnn::Int8PackedRightGemm gemm;
    gemm.pack(W, Op::N);
    Mat one(1000, 512), two(1000, 512);
    dynrnn::set_num_threads(1);
    gemm(one, A, 0.05f);
    dynrnn::set_num_threads(2);
    gemm(two, A, 0.05f);
    dynrnn::set_num_threads(dynrnn::max_threads());
    EXPECT_TRUE(one == two) << "limit " << dynrnn::to_string(isa);
  }
}

// Expects `call` to throw std::invalid_argument whose message holds every one of `parts`.
template <class Call>
void expect_invalid(Call&& call, std::initializer_list<const char*> parts) {
  try {
    call();
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    for (const char* part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(Int8Gemm, RefusesBadArguments) {
  dynrnn::Int8PackedRightGemm gemm;
  gemm.pack(Mat::Ones(4, 8), Op::N);
  Mat C(3, 8);
  expect_invalid([&] { gemm(C, Mat::Ones(3, 5), 0.1f); }, {"A", "of 4 columns", "[3, 5]"});
  expect_invalid([&] { gemm(C, Mat::Ones(3, 4), 0.0f); }, {"a_scale", "> 0 and finite", "got 0"});
  expect_invalid([&] { gemm(C, Mat::Ones(3, 4), std::numeric_limits<float>::infinity()); }, {"a_scale", "inf"});
  Mat bad = Mat::Ones(4, 8);
  bad(2, 3) = std::numeric_limits<float>::quiet_NaN();
  expect_invalid([&] { gemm.pack(bad, Op::N); }, {"W", "finite values"});
  expect_invalid([&] { gemm.pack(Mat::Zero(dynrnn::Int8PackedRightGemm::kMaxDepth + 1, 1), Op::N); },
                 {"W", "at most 66000", "66001"});
  expect_invalid([] { dynrnn::int8_scale(-1.0f); }, {"bound", ">= 0 and finite", "-1"});
}

}  // namespace
