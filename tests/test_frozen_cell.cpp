// FrozenCell (cells/frozen_cell.hpp): a cell whose forward products' weights are packed
// once, and the products' share() that lets every pass read that packing in place.
//
// A frozen pass runs the cell's own arithmetic on the same packed operands, so its outputs
// must be the bits of the cell's own inference pass, in every precision and for every kind
// of cell; the cell's own passes are checked against references independent of the library
// in the other test files. Beyond that: a FrozenCell is a snapshot of the weights, passes on
// several threads may share it at once, and no result reads its packing after the pass.
#include "reduced_precision_support.hpp"
#include "support.hpp"

#include <cstdint>
#include <thread>
#include <type_traits>

namespace dynrnn::test {
namespace {

const std::vector<int> kLengths = {9, 3, 0, 7, 9, 1};  // B = 6, T = 9

// `cell` in `precision`, calibrated on x first for int8.
template <class Cell>
void set_test_precision(Cell& cell, Precision precision, const Tensor3<float>& x, const std::vector<int>& lengths) {
  if (precision == Precision::int8) {
    cell.set_precision(Precision::float32);
    cell.begin_int8_calibration();
    dynamic_rnn(cell, x, lengths);
    cell.end_int8_calibration();
  }
  cell.set_precision(precision);
}

// Calls check(p, cell, x) for each precision p with an LSTM of 32 units in p (calibrated for
// int8) and a batch x of kLengths' shape, drawn from `seed`.
template <class Check>
void for_each_precision(std::uint64_t seed, Check&& check) {
  Rng rng(seed);
  const Tensor3<float> x = random_tensor<float>(9, 6, 10, rng);
  for (const Precision p : {Precision::float32, Precision::bfloat16, Precision::int8}) {
    LSTMCell<float> cell(10, 32);
    set_test_precision(cell, p, x, kLengths);
    check(p, cell, x);
  }
}

// Expects `frozen`'s outputs and final state to be the bits of `cell`'s inference pass.
template <class Frozen, class Cell, class Scalar>
void expect_same_bits(const Frozen& frozen, const Cell& cell, const Tensor3<Scalar>& x, const std::vector<int>& lengths,
                      const std::string& what) {
  auto own = dynamic_rnn(cell, x, lengths, ForwardMode::inference);
  auto shared = dynamic_rnn(frozen, x, lengths);
  EXPECT_TRUE(identical(shared.outputs, own.outputs)) << what;
  EXPECT_GT(max_abs(own.outputs), 0.0) << what;
  if constexpr (std::is_same_v<decltype(own.final_state), decltype(shared.final_state)>)  // not for stacks
    own.final_state.zip(shared.final_state, [&](Matrix<Scalar>& a, const Matrix<Scalar>& b) {
      EXPECT_TRUE(identical(a, b)) << what << ": final state";
    });
}

TEST(FrozenCell, GivesTheCellsOwnBitsInEveryPrecision) {
  Rng rng(21);
  const Tensor3<float> x = random_tensor<float>(9, 6, 10, rng);
  const std::vector<int> full(6, 9);  // every row runs every step: the in-place pass
  for_each_test_cell([&](const char* name, auto cell) {
    for (const Precision p : {Precision::float32, Precision::bfloat16, Precision::int8}) {
      for (const auto* lengths : {&kLengths, &full}) {
        set_test_precision(cell, p, x, *lengths);
        const auto frozen = freeze(cell);
        EXPECT_EQ(frozen.precision(), p);
        const std::string what = std::string(name) + ", " + to_string(p) + (lengths == &full ? ", full batch" : "");
        expect_same_bits(frozen, cell, x, *lengths, what);
        // The portable kernels, as on a CPU without the instructions.
        WithIsa portable(CpuIsa::portable);
        expect_same_bits(freeze(cell), cell, x, *lengths, what + ", portable kernels");
      }
    }
  });
}

TEST(FrozenCell, GivesTheCellsOwnBitsInDouble) {
  Rng rng(22);
  const Tensor3<double> x = random_tensor<double>(9, 6, 10, rng);
  LSTMOptions options;
  options.use_peepholes = true;
  options.num_proj = 12;
  expect_same_bits(freeze(LSTMCell<double>(10, 20, options)), LSTMCell<double>(10, 20, options), x, kLengths,
                   "LSTMCell<double>");
  const GRUCell<double> gru(10, 20, GRUVariant::reset_after);
  expect_same_bits(freeze(gru), gru, x, kLengths, "GRUCell<double>");
}

TEST(FrozenCell, IsASnapshotOfTheWeights) {
  for_each_precision(23, [](Precision p, LSTMCell<float>& cell, const Tensor3<float>& x) {
    const LSTMCell<float> before = cell;
    const auto frozen = freeze(cell);
    cell.kernel().array() += 0.25f;  // after freezing: the frozen copy keeps the old weights
    cell.bias().array() -= 0.5f;
    expect_same_bits(frozen, before, x, kLengths, std::string(to_string(p)) + ", frozen before the change");
    EXPECT_FALSE(identical(dynamic_rnn(frozen, x, kLengths).outputs,
                           dynamic_rnn(cell, x, kLengths, ForwardMode::inference).outputs));
    expect_same_bits(freeze(cell), cell, x, kLengths, std::string(to_string(p)) + ", frozen again");
    // Copies pack their own copy of the weights; assignment replaces them.
    auto copy = frozen;
    expect_same_bits(copy, before, x, kLengths, std::string(to_string(p)) + ", a copy");
    copy = freeze(cell);
    expect_same_bits(copy, cell, x, kLengths, std::string(to_string(p)) + ", assigned");
    auto assigned = freeze(cell);
    assigned = frozen;
    expect_same_bits(assigned, before, x, kLengths, std::string(to_string(p)) + ", copy-assigned");
  });
}

// The passes read the packing made when the cell was frozen, not the frozen copy's weights:
// changing those in place (the copy is the FrozenCell's own, so the cast is allowed) must
// change nothing, where a pass that packed them again would follow them. Under an external
// GEMM backend a float32 "packing" is a pointer to those weights, so float32 is left out.
TEST(FrozenCell, PassesReadThePackingMadeWhenFrozen) {
  for_each_precision(28, [](Precision p, const LSTMCell<float>& cell, const Tensor3<float>& x) {
    if (p == Precision::float32 && detail::external_gemm<float>()) return;
    auto frozen = freeze(cell);
    const Tensor3<float> expected = dynamic_rnn(cell, x, kLengths, ForwardMode::inference).outputs;
    auto& copy = const_cast<LSTMCell<float>&>(frozen.cell());
    copy.kernel().array() *= -1.0f;
    EXPECT_TRUE(identical(dynamic_rnn(frozen, x, kLengths).outputs, expected)) << to_string(p);
    EXPECT_FALSE(identical(dynamic_rnn(copy, x, kLengths, ForwardMode::inference).outputs, expected))
        << to_string(p);
  });
}

// Passes on several threads at once, each into its own result, read one packing; the
// reduced-precision products keep their converted operands in each pass's own workspace.
TEST(FrozenCell, PassesOnManyThreadsShareOnePacking) {
  for_each_precision(24, [](Precision p, const LSTMCell<float>& cell, const Tensor3<float>& x) {
    const auto frozen = freeze(cell);
    const Tensor3<float> expected = dynamic_rnn(cell, x, kLengths, ForwardMode::inference).outputs;
    std::vector<int> same(4, 0);
    std::vector<std::thread> threads;
    for (int k = 0; k < 4; ++k)
      threads.emplace_back([&, k] {
        DynamicRNNResult<FrozenCell<LSTMCell<float>>> r;
        int n = 0;
        for (int pass = 0; pass < 25; ++pass) {
          dynamic_rnn(frozen, x, kLengths, frozen.zero_state(6), r);
          n += identical(r.outputs, expected);
        }
        same[std::size_t(k)] = n;
      });
    for (auto& t : threads) t.join();
    EXPECT_EQ(same, std::vector<int>(4, 25)) << to_string(p);
  });
}

// A result keeps nothing of the packing after the pass: it may be copied after the frozen
// cell is gone (the sanitizer build would see a read of freed memory), and the same result
// then serves a cell of other weights, whose own packing must not land in a frozen one.
TEST(FrozenCell, ResultsLetGoOfThePackingWhenThePassEnds) {
  for_each_precision(25, [](Precision p, const LSTMCell<float>& cell, const Tensor3<float>& x) {
    LSTMCell<float> other = cell;
    other.kernel().array() *= -1.0f;
    const auto frozen_other = freeze(other);
    DynamicRNNResult<FrozenCell<LSTMCell<float>>> r;
    {
      const auto frozen = freeze(cell);
      dynamic_rnn(frozen, x, kLengths, frozen.zero_state(6), r);
    }
    // Nothing is packed in the cache's products any more: they refuse to run.
    Matrix<float> gates(2, 4 * 32);
    expect_invalid_argument([&] { r.cache.input_gemm(gates, Matrix<float>::Zero(2, 10)); }, {"A"});
    expect_invalid_argument([&] { r.cache.recurrent_gemm(gates, Matrix<float>::Zero(2, 32)); }, {"A"});
    const auto copy = r;  // copies the cache too
    const auto own = dynamic_rnn(cell, x, kLengths, ForwardMode::inference);
    EXPECT_TRUE(identical(copy.outputs, own.outputs)) << to_string(p);
    // One result for the frozen other cell, then the cell itself, then the frozen other again.
    DynamicRNNResult<LSTMCell<float>> shared;
    dynamic_rnn(other, x, kLengths, other.zero_state(6), shared, ForwardMode::inference);
    const Tensor3<float> other_outputs = shared.outputs;
    dynamic_rnn(cell, x, kLengths, cell.zero_state(6), shared, ForwardMode::inference);
    EXPECT_TRUE(identical(shared.outputs, own.outputs)) << to_string(p);
    expect_same_bits(frozen_other, other, x, kLengths, std::string(to_string(p)) + ", other weights");
    EXPECT_TRUE(identical(dynamic_rnn(frozen_other, x, kLengths).outputs, other_outputs)) << to_string(p);
  });
}

TEST(FrozenCell, StacksAndBidirectionalPasses) {
  Rng rng(26);
  const Tensor3<float> x = random_tensor<float>(9, 6, 10, rng);
  for (const Precision p : {Precision::float32, Precision::bfloat16, Precision::int8}) {
    StackedCell<LSTMCell<float>> stack({LSTMCell<float>(10, 32), LSTMCell<float>(32, 16)}, /*dropout=*/0.3);
    set_test_precision(stack, p, x, kLengths);
    const auto frozen = freeze(stack);
    EXPECT_EQ(frozen.layers().size(), 2u);
    expect_same_bits(frozen, stack, x, kLengths, std::string("stack, ") + to_string(p));

    GRUCell<float> fw(10, 16, GRUVariant::reset_before), bw(10, 24, GRUVariant::reset_after);
    set_test_precision(fw, p, x, kLengths);
    set_test_precision(bw, p, x, kLengths);
    const auto frozen_fw = freeze(fw);
    const auto frozen_bw = freeze(bw);
    const auto own = bidirectional_dynamic_rnn(fw, bw, x, kLengths, ForwardMode::inference);
    const auto shared = bidirectional_dynamic_rnn(frozen_fw, frozen_bw, x, kLengths);
    EXPECT_TRUE(identical(shared.fw.outputs, own.fw.outputs)) << to_string(p);
    EXPECT_TRUE(identical(shared.bw.outputs, own.bw.outputs)) << to_string(p);
  }
}

TEST(FrozenCell, RefusesBadArguments) {
  LSTMCell<float> cell(4, 8);
  cell.kernel().resize(3, 3);
  expect_invalid_argument([&] { freeze(cell); }, {"FrozenCell", "cell.kernel()"});
  const auto frozen = freeze(LSTMCell<float>(4, 8));
  Tensor3<float> x(3, 2, 5);  // 5 features for a cell of 4
  x.setZero();
  expect_invalid_argument([&] { dynamic_rnn(frozen, x, {3, 3}); }, {"dynamic_rnn", "x"});
}

// The products' share(): another object's packing, read in place, gives that object's
// bits; packing again writes storage of one's own; unshare() leaves nothing packed.
template <class Gemm, class Product>
void expect_sharing_works(const char* name, Product&& product) {
  Rng rng(27);
  const Matrix<float> W = random_matrix<float>(70, 48, rng), W2 = random_matrix<float>(70, 48, rng);
  const Matrix<float> A = random_matrix<float>(13, 70, rng);
  Gemm packed, shared;
  packed.pack(W, Op::N);
  Matrix<float> expected(13, 48), got(13, 48);
  product(packed, expected, A);
  shared.share(packed);
  product(shared, got, A);
  EXPECT_TRUE(identical(got, expected)) << name;
  shared.pack(W2, Op::N);  // its own packing now, not written over packed's
  product(packed, got, A);
  EXPECT_TRUE(identical(got, expected)) << name << ": the shared packing after pack()";
  product(shared, got, A);
  EXPECT_FALSE(identical(got, expected)) << name << ": W2";
  shared.share(packed);
  shared.unshare();
  expect_invalid_argument([&] { product(shared, got, A); }, {"A"});
}

TEST(FrozenCell, ProductsShareAnotherObjectsPacking) {
  const auto product = [](auto& gemm, Matrix<float>& C, const Matrix<float>& A) { gemm(C, A); };
  const auto int8_product = [](auto& gemm, Matrix<float>& C, const Matrix<float>& A) { gemm(C, A, int8_scale(4.0f)); };
  for (const CpuIsa isa : {cpu_isa(), CpuIsa::portable}) {
    WithIsa limit(isa);
    expect_sharing_works<PackedRightGemm<float>>("PackedRightGemm", product);
    expect_sharing_works<Bf16PackedRightGemm>("Bf16PackedRightGemm", product);
    expect_sharing_works<Int8PackedRightGemm>("Int8PackedRightGemm", int8_product);
  }
}

}  // namespace
}  // namespace dynrnn::test
