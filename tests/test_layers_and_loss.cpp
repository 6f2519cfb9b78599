// Dense, Embedding, softmax cross-entropy and the last-output gather: values by hand,
// gradients by finite differences.
#include "support.hpp"

namespace dynrnn::test {
namespace {

template <class Scalar>
class LayersTyped : public ::testing::Test {};
TYPED_TEST_SUITE(LayersTyped, ScalarTypes, ScalarNames);

TYPED_TEST(LayersTyped, DenseComputesXWPlusB) {
  using Scalar = TypeParam;
  Dense<Scalar> d(2, 3);
  d.weight() << 1, 2, 3, 4, 5, 6;
  d.bias() << Scalar(0.5), -1, 0;
  Matrix<Scalar> x(2, 2);
  x << 1, 0, -1, 2;
  Matrix<Scalar> expected(2, 3);
  expected << 1.5, 1, 3,   // [1 0]·W + b
      7.5, 7, 9;           // [-1 2]·W + b
  EXPECT_TRUE(d.forward(x).isApprox(expected));
}

TYPED_TEST(LayersTyped, EmbeddingLooksUpRows) {
  using Scalar = TypeParam;
  Embedding<Scalar> e(3, 2);
  e.table() << 1, 2, 3, 4, 5, 6;
  const Matrix<Scalar> y = e.forward({2, 0, 2});
  Matrix<Scalar> expected(3, 2);
  expected << 5, 6, 1, 2, 5, 6;
  EXPECT_TRUE(identical(y, expected));
  const Tensor3<Scalar> seq = e.forward_sequences({0, 1, 2, 0}, 2, 2);
  EXPECT_EQ(seq(1, 0, 1), Scalar(6));  // step 1, row 0 is id index 1*2 + 0 = 2
  EXPECT_EQ(seq(0, 1, 0), Scalar(3));
}

TYPED_TEST(LayersTyped, SoftmaxCrossEntropyByHand) {
  using Scalar = TypeParam;
  // Row 0: logits (0, ln 3), label 1: p = (1/4, 3/4), loss = -ln(3/4).
  // Row 1: logits (2, 2), label 0: p = (1/2, 1/2), loss = ln 2.
  Matrix<Scalar> z(2, 2);
  z << 0, Scalar(std::log(3.0)), 2, 2;
  const auto ce = softmax_cross_entropy<Scalar>(z, {1, 0});
  EXPECT_NEAR(double(ce.loss), (-std::log(0.75) + std::log(2.0)) / 2, tolerance<Scalar>());
  Matrix<Scalar> expected(2, 2);
  expected << 0.25 / 2, -0.25 / 2, -0.5 / 2, 0.5 / 2;
  EXPECT_TRUE(ce.d_logits.isApprox(expected, Scalar(tolerance<Scalar>())));
  const auto summed = softmax_cross_entropy<Scalar>(z, {1, 0}, Reduction::sum);
  EXPECT_NEAR(double(summed.loss), -std::log(0.75) + std::log(2.0), tolerance<Scalar>());
}

TYPED_TEST(LayersTyped, SoftmaxCrossEntropyIsStableForHugeLogits) {
  using Scalar = TypeParam;
  Matrix<Scalar> z(1, 3);
  z << Scalar(1e4), Scalar(0), Scalar(-1e4);
  const auto right = softmax_cross_entropy<Scalar>(z, {0});
  EXPECT_EQ(right.loss, Scalar(0));
  const auto wrong = softmax_cross_entropy<Scalar>(z, {1});
  EXPECT_NEAR(double(wrong.loss), 1e4, 1e-2);
  EXPECT_TRUE(std::isfinite(wrong.d_logits.sum()));
}

TYPED_TEST(LayersTyped, SoftmaxCrossEntropyTakesLogitsNotProbabilities) {
  // A confident, correct prediction has a loss near 0. Feeding softmax probabilities in
  // (the classic mistake) would bound the loss below by ln(1 + (C-1)/e) instead.
  using Scalar = TypeParam;
  Matrix<Scalar> z(1, 15);
  z.setZero();
  z(0, 7) = 30;
  EXPECT_LT(double(softmax_cross_entropy<Scalar>(z, {7}).loss), 1e-6);
}

TEST(LayerGradient, Dense) {
  Rng rng(11);
  Dense<double> d(4, 3);
  d.reset_parameters(rng);
  fill_uniform(d.bias(), rng, 1);
  auto x = random_matrix<double>(5, 4, rng);
  const auto w = random_matrix<double>(5, 3, rng);
  const auto loss = [&] { return dot(d.forward(x), w); };
  auto g = d.make_gradients();
  const Matrix<double> dx = d.backward(x, w, g);
  EXPECT_LE(max_gradient_error(d.weight(), g.weight, loss), 1e-6);
  EXPECT_LE(max_gradient_error(d.bias(), g.bias, loss), 1e-6);
  EXPECT_LE(max_gradient_error(x, dx, loss), 1e-6);
}

TEST(LayerGradient, EmbeddingWithRepeatedIds) {
  Rng rng(12);
  Embedding<double> e(4, 3);
  const std::vector<int> ids = {1, 3, 1, 0, 1};
  const auto w = random_matrix<double>(5, 3, rng);
  const auto loss = [&] { return dot(e.forward(ids), w); };
  auto g = e.make_gradients();
  e.backward(ids, w, g);
  EXPECT_LE(max_gradient_error(e.table(), g.table, loss), 1e-6);
  EXPECT_EQ(g.table.row(2).cwiseAbs().maxCoeff(), 0.0);  // id 2 never looked up
}

TEST(LayerGradient, SoftmaxCrossEntropyMeanAndSum) {
  Rng rng(13);
  auto z = random_matrix<double>(6, 5, rng, 3);
  const std::vector<int> labels = {0, 4, 2, 2, 1, 3};
  for (Reduction r : {Reduction::mean, Reduction::sum}) {
    const auto loss = [&] { return double(softmax_cross_entropy(z, labels, r).loss); };
    const auto ce = softmax_cross_entropy(z, labels, r);
    EXPECT_LE(max_gradient_error(z, ce.d_logits, loss), 1e-6);
  }
}

TEST(LayerGradient, GatherLastOutputs) {
  Rng rng(14);
  const Index T = 5, B = 4, H = 3;
  auto outputs = random_tensor<double>(T, B, H, rng);
  const std::vector<int> lengths = {5, 1, 0, 3};
  const Matrix<double> last = gather_last_outputs(outputs, lengths);
  for (Index k = 0; k < H; ++k) {
    EXPECT_EQ(last(0, k), outputs(4, 0, k));
    EXPECT_EQ(last(1, k), outputs(0, 1, k));
    EXPECT_EQ(last(2, k), 0.0);
    EXPECT_EQ(last(3, k), outputs(2, 3, k));
  }
  const auto w = random_matrix<double>(B, H, rng);
  const auto loss = [&] { return dot(gather_last_outputs(outputs, lengths), w); };
  const auto d = gather_last_outputs_backward(w, lengths, T);
  EXPECT_LE(max_gradient_error(outputs, d, loss), 1e-6);
}

TEST(Softmax, RowsSumToOne) {
  Rng rng(15);
  const Matrix<double> p = softmax(random_matrix<double>(3, 7, rng, 50));
  for (Index r = 0; r < 3; ++r) EXPECT_NEAR(p.row(r).sum(), 1.0, 1e-12);
  EXPECT_GE(p.minCoeff(), 0.0);
}

}  // namespace
}  // namespace dynrnn::test

namespace dynrnn::test {
namespace {

// logsumexp(z) - z[y], straight from the definition.
double cross_entropy_by_hand(std::initializer_list<double> z, int y) {
  double sum = 0;
  for (double v : z) sum += std::exp(v);
  return std::log(sum) - *(z.begin() + y);
}

TEST(SequenceLoss, MeanOverValidStepsByHandAndPaddingNeverRead) {
  // T = 2, B = 2, C = 3; row 0 has 2 steps, row 1 has 1. Row 1's padded step holds NaN
  // logits and an out-of-range label, neither of which may be read.
  Tensor3<double> logits(2, 2, 3);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double z[2][2][3] = {{{1, 2, 3}, {0.5, -1, 0}}, {{-2, 0, 2}, {nan, nan, nan}}};
  for (int t = 0; t < 2; ++t)
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < 3; ++c) logits(t, b, c) = z[t][b][c];
  const std::vector<int> labels = {2, 0, 1, -5};  // time-major: (t0 b0), (t0 b1), (t1 b0), (t1 b1)
  const auto mean = sequence_softmax_cross_entropy(logits, labels, {2, 1});
  const double expected =
      (cross_entropy_by_hand({1, 2, 3}, 2) + cross_entropy_by_hand({0.5, -1, 0}, 0) + cross_entropy_by_hand({-2, 0, 2}, 1)) / 3;
  EXPECT_NEAR(mean.loss, expected, 1e-14);
  EXPECT_EQ(mean.steps, 3);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(mean.d_logits(1, 1, c), 0.0);
  // d = (softmax - onehot) / 3 at (t1, b0): softmax of {-2, 0, 2}.
  const double e = std::exp(-2) + 1 + std::exp(2);
  EXPECT_NEAR(mean.d_logits(1, 0, 1), (1 / e - 1) / 3, 1e-15);
  const auto sum = sequence_softmax_cross_entropy(logits, labels, {2, 1}, Reduction::sum);
  EXPECT_NEAR(sum.loss, 3 * expected, 1e-13);
  EXPECT_NEAR(sum.d_logits(1, 0, 1), 1 / e - 1, 1e-15);
}

TEST(SequenceLoss, GradientMatchesFiniteDifferences) {
  Rng rng(11);
  const Index T = 5, B = 4, C = 6;
  auto logits = random_tensor<double>(T, B, C, rng);
  const std::vector<int> lengths = {5, 0, 2, 3};
  std::vector<int> labels(T * B);
  for (int& y : labels) y = int(uniform_int(rng, 0, C));
  for (Reduction reduction : {Reduction::mean, Reduction::sum}) {
    const auto r = sequence_softmax_cross_entropy(logits, labels, lengths, reduction);
    const auto loss = [&] { return double(sequence_softmax_cross_entropy(logits, labels, lengths, reduction).loss); };
    EXPECT_LE(max_gradient_error(logits, r.d_logits, loss), 1e-7);
  }
}

TEST(SequenceLoss, EmptyBatchHasZeroLoss) {
  Tensor3<float> logits(3, 2, 4);
  logits.setConstant(1.0f);
  const auto r = sequence_softmax_cross_entropy(logits, std::vector<int>(6, 0), {0, 0});
  EXPECT_EQ(r.loss, 0.0f);
  EXPECT_EQ(r.steps, 0);
  EXPECT_EQ(max_abs(r.d_logits), 0.0);
}

TEST(SequenceLoss, BadArguments) {
  Tensor3<float> logits(3, 2, 4);
  logits.setZero();
  expect_invalid_argument([&] { sequence_softmax_cross_entropy(logits, std::vector<int>(5, 0), {3, 1}); },
                          {"sequence_softmax_cross_entropy", "'labels'", "of size 6", "size 5"});
  expect_invalid_argument([&] { sequence_softmax_cross_entropy(logits, {0, 0, 0, 0, 4, 0}, {3, 1}); },
                          {"'labels'", "in [0, 4)", "labels[4] = 4 (step 2, row 0)"});
  expect_invalid_argument([&] { sequence_softmax_cross_entropy(logits, std::vector<int>(6, 0), {4, 1}); },
                          {"'lengths'", "in [0, 3]", "lengths[0] = 4"});
  expect_invalid_argument([&] { sequence_softmax_cross_entropy(Tensor3<float>(3, 2, 0), std::vector<int>(6, 0), {3, 1}); },
                          {"'logits'", "at least one class", "[3, 2, 0]"});
}

TEST(MeanSquaredError, ByHand) {
  Matrix<double> p(2, 2), y(2, 2);
  p << 1, 2, 3, 4;
  y << 0, 2, 5, 1;  // differences 1, 0, -2, 3: squares sum to 14
  const auto mean = mean_squared_error(p, y);
  EXPECT_DOUBLE_EQ(mean.loss, 14.0 / 4);
  EXPECT_DOUBLE_EQ(mean.d_predictions(1, 1), 2 * 3.0 / 4);
  const auto sum = mean_squared_error(p, y, Reduction::sum);
  EXPECT_DOUBLE_EQ(sum.loss, 14.0);
  EXPECT_DOUBLE_EQ(sum.d_predictions(1, 0), 2 * -2.0);
}

TEST(MeanSquaredError, GradientMatchesFiniteDifferences) {
  Rng rng(21);
  auto p = random_matrix<double>(5, 3, rng, 2);
  const auto y = random_matrix<double>(5, 3, rng, 2);
  for (Reduction r : {Reduction::mean, Reduction::sum}) {
    const auto mse = mean_squared_error(p, y, r);
    const auto loss = [&] { return double(mean_squared_error(p, y, r).loss); };
    EXPECT_LE(max_gradient_error(p, mse.d_predictions, loss), 1e-7);
  }
}

TEST(SequenceMeanSquaredError, MeanOverValidStepsByHandAndPaddingNeverRead) {
  // T = 2, B = 2, D = 2; row 0 has 2 steps, row 1 has 1. Row 1's padded step holds NaN.
  Tensor3<double> p(2, 2, 2), y(2, 2, 2);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double pv[2][2][2] = {{{1, 2}, {0, 0}}, {{3, -1}, {nan, nan}}};
  const double yv[2][2][2] = {{{0, 2}, {1, 1}}, {{1, 1}, {nan, 5}}};
  for (int t = 0; t < 2; ++t)
    for (int b = 0; b < 2; ++b)
      for (int d = 0; d < 2; ++d) {
        p(t, b, d) = pv[t][b][d];
        y(t, b, d) = yv[t][b][d];
      }
  // Squares: (t0 b0) 1 + 0, (t0 b1) 1 + 1, (t1 b0) 4 + 4: 11 over 3 steps of 2 outputs.
  const auto mean = sequence_mean_squared_error(p, y, {2, 1});
  EXPECT_DOUBLE_EQ(mean.loss, 11.0 / 6);
  EXPECT_EQ(mean.steps, 3);
  EXPECT_EQ(mean.d_predictions(1, 1, 0), 0.0);
  EXPECT_EQ(mean.d_predictions(1, 1, 1), 0.0);
  EXPECT_DOUBLE_EQ(mean.d_predictions(1, 0, 1), 2 * -2.0 / 6);
  const auto sum = sequence_mean_squared_error(p, y, {2, 1}, Reduction::sum);
  EXPECT_DOUBLE_EQ(sum.loss, 11.0);
  EXPECT_DOUBLE_EQ(sum.d_predictions(1, 0, 0), 2 * 2.0);
}

TEST(SequenceMeanSquaredError, GradientMatchesFiniteDifferences) {
  Rng rng(23);
  const Index T = 5, B = 4, D = 3;
  auto p = random_tensor<double>(T, B, D, rng);
  const auto y = random_tensor<double>(T, B, D, rng);
  const std::vector<int> lengths = {5, 0, 2, 3};
  for (Reduction reduction : {Reduction::mean, Reduction::sum}) {
    const auto r = sequence_mean_squared_error(p, y, lengths, reduction);
    const auto loss = [&] { return double(sequence_mean_squared_error(p, y, lengths, reduction).loss); };
    EXPECT_LE(max_gradient_error(p, r.d_predictions, loss), 1e-7);
  }
}

TEST(SequenceMeanSquaredError, EmptyBatchHasZeroLoss) {
  Tensor3<float> p(3, 2, 4), y(3, 2, 4);
  p.setConstant(1.0f);
  y.setZero();
  const auto r = sequence_mean_squared_error(p, y, {0, 0});
  EXPECT_EQ(r.loss, 0.0f);
  EXPECT_EQ(max_abs(r.d_predictions), 0.0);
}

TEST(MeanSquaredError, BadArguments) {
  expect_invalid_argument([] { mean_squared_error(Matrix<float>(2, 3), Matrix<float>(3, 2)); },
                          {"mean_squared_error", "'targets'", "[2, 3]", "[3, 2]"});
  expect_invalid_argument([] { mean_squared_error(Matrix<float>(0, 3), Matrix<float>(0, 3)); },
                          {"'predictions'", "non-empty"});
  Tensor3<float> p(3, 2, 4), y(3, 1, 4);
  p.setZero();
  y.setZero();
  expect_invalid_argument([&] { sequence_mean_squared_error(p, y, {3, 1}); },
                          {"sequence_mean_squared_error", "'targets'"});
  expect_invalid_argument([&] { sequence_mean_squared_error(p, p, {4, 1}); }, {"'lengths'", "in [0, 3]"});
}

}  // namespace
}  // namespace dynrnn::test
