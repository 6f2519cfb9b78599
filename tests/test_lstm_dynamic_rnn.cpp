// LSTMCell through dynamic_rnn: values against an independent scalar reference,
// finite-difference gradients, and the masking semantics of TensorFlow's dynamic_rnn.
#include "reduced_precision_support.hpp"
#include "support.hpp"

#include <limits>

namespace dynrnn::test {
namespace {

// An LSTM written from TensorFlow's equations with scalar loops, one row at a time,
// sharing no code with the library: the reference for forward values.
struct ReferenceLSTM {
  Index I, H;
  std::vector<double> kernel;  // (I+H) x 4H row-major, gates i j f o
  std::vector<double> bias;    // 4H
  double forget_bias;

  template <class Scalar>
  explicit ReferenceLSTM(const LSTMCell<Scalar>& cell)
      : I(cell.input_size()), H(cell.hidden_size()), forget_bias(double(cell.forget_bias())) {
    for (Index r = 0; r < I + H; ++r)
      for (Index c = 0; c < 4 * H; ++c) kernel.push_back(double(cell.kernel()(r, c)));
    for (Index c = 0; c < 4 * H; ++c) bias.push_back(double(cell.bias()(c)));
  }

  // Runs `steps` steps of one row. x(t, k) gives input k at step t; c and h are updated.
  template <class X>
  void run(X x, int steps, std::vector<double>& c, std::vector<double>& h,
           std::vector<std::vector<double>>* outputs) const {
    for (int t = 0; t < steps; ++t) {
      std::vector<double> z(bias);
      for (Index r = 0; r < I + H; ++r) {
        const double in = r < I ? double(x(t, r)) : h[r - I];
        for (Index c2 = 0; c2 < 4 * H; ++c2) z[c2] += in * kernel[r * 4 * H + c2];
      }
      for (Index k = 0; k < H; ++k) {
        c[k] = sigmoid(z[2 * H + k] + forget_bias) * c[k] + sigmoid(z[k]) * std::tanh(z[H + k]);
        h[k] = sigmoid(z[3 * H + k]) * std::tanh(c[k]);
      }
      if (outputs) outputs->push_back(h);
    }
  }
};

template <class Scalar>
LSTMCell<Scalar> random_cell(Index I, Index H, Rng& rng) {
  LSTMCell<Scalar> cell(I, H);
  cell.reset_parameters(rng);
  fill_uniform(cell.bias(), rng, 0.5);  // a nonzero bias exercises its gradient
  return cell;
}

template <class Scalar>
LSTMState<Scalar> random_lstm_state(Index B, Index H, Rng& rng) {
  return {random_matrix<Scalar>(B, H, rng), random_matrix<Scalar>(B, H, rng)};
}

template <class Scalar>
class LSTMTyped : public ::testing::Test {};
TYPED_TEST_SUITE(LSTMTyped, ScalarTypes, ScalarNames);

TYPED_TEST(LSTMTyped, MatchesScalarReferenceWithMixedLengths) {
  using Scalar = TypeParam;
  Rng rng(1);
  const Index T = 7, B = 5, I = 3, H = 4;
  auto cell = random_cell<Scalar>(I, H, rng);
  const auto x = random_tensor<Scalar>(T, B, I, rng);
  const auto s0 = random_lstm_state<Scalar>(B, H, rng);
  const std::vector<int> lengths = {4, 7, 0, 1, 7};
  const auto fwd = dynamic_rnn(cell, x, lengths, s0);
  const ReferenceLSTM ref(cell);

  for (Index b = 0; b < B; ++b) {
    std::vector<double> c(H), h(H);
    for (Index k = 0; k < H; ++k) c[k] = double(s0.c(b, k)), h[k] = double(s0.h(b, k));
    std::vector<std::vector<double>> outs;
    ref.run([&](Index t, Index k) { return x(t, b, k); }, lengths[b], c, h, &outs);
    for (Index t = 0; t < T; ++t)
      for (Index k = 0; k < H; ++k) {
        const double expected = t < lengths[b] ? outs[t][k] : 0.0;
        EXPECT_NEAR(double(fwd.outputs(t, b, k)), expected, tolerance<Scalar>()) << "t=" << t << " b=" << b;
      }
    for (Index k = 0; k < H; ++k) {
      EXPECT_NEAR(double(fwd.final_state.c(b, k)), c[k], tolerance<Scalar>()) << "b=" << b;
      EXPECT_NEAR(double(fwd.final_state.h(b, k)), h[k], tolerance<Scalar>()) << "b=" << b;
    }
  }
}

TYPED_TEST(LSTMTyped, OneStepFromHandDerivation) {
  // Zero kernel, bias (i, j, f, o) = (0, ln 3 / 2, 0, 0), c0 = 1, h0 = 0, forget_bias 1:
  //   sigmoid(0) = 1/2, tanh(ln 3 / 2) = (3 - 1) / (3 + 1) = 1/2, sigmoid(1) = e / (1 + e)
  //   c1 = e / (1 + e) + 1/4,  h1 = tanh(c1) / 2.
  using Scalar = TypeParam;
  LSTMCell<Scalar> cell(1, 1);
  cell.kernel().setZero();
  cell.bias() << Scalar(0), Scalar(std::log(3.0) / 2), Scalar(0), Scalar(0);
  Tensor3<Scalar> x(1, 1, 1);
  x.setConstant(Scalar(5));
  LSTMState<Scalar> s0{Matrix<Scalar>::Ones(1, 1), Matrix<Scalar>::Zero(1, 1)};
  const auto fwd = dynamic_rnn(cell, x, {1}, s0);
  const double c1 = std::exp(1.0) / (1 + std::exp(1.0)) + 0.25;
  EXPECT_NEAR(double(fwd.final_state.c(0, 0)), c1, tolerance<Scalar>());
  EXPECT_NEAR(double(fwd.final_state.h(0, 0)), std::tanh(c1) / 2, tolerance<Scalar>());
  EXPECT_NEAR(double(fwd.outputs(0, 0, 0)), std::tanh(c1) / 2, tolerance<Scalar>());
}

TYPED_TEST(LSTMTyped, OutputsAreExactlyZeroPastLength) {
  using Scalar = TypeParam;
  Rng rng(2);
  const Index T = 6, B = 4, I = 2, H = 3;
  auto cell = random_cell<Scalar>(I, H, rng);
  const std::vector<int> lengths = {6, 2, 0, 5};
  const auto fwd = dynamic_rnn(cell, random_tensor<Scalar>(T, B, I, rng), lengths);
  for (Index b = 0; b < B; ++b)
    for (Index t = 0; t < T; ++t)
      for (Index k = 0; k < H; ++k) {
        if (t >= lengths[b]) {
          EXPECT_EQ(fwd.outputs(t, b, k), Scalar(0));
        } else {
          EXPECT_NE(fwd.outputs(t, b, k), Scalar(0));
        }
      }
}

// A result reused for a batch of the same shape writes every padded output again, with
// zeros, whatever its buffer held (NaN here), at steps some rows reach (row 1 after step 2)
// and at steps none reaches (4 and 5); and so do the gradients for the inputs.
TYPED_TEST(LSTMTyped, ReusedResultsRewriteEveryPaddedPosition) {
  using Scalar = TypeParam;
  Rng rng(12);
  const Index T = 6, B = 4, I = 2, H = 3;
  const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  auto cell = random_cell<Scalar>(I, H, rng);
  const std::vector<int> lengths = {4, 2, 0, 3};
  const auto x = random_tensor<Scalar>(T, B, I, rng);
  const auto d_outputs = random_tensor<Scalar>(T, B, H, rng);
  DynamicRNNResult<LSTMCell<Scalar>> fwd;
  DynamicRNNGradients<LSTMCell<Scalar>> g(cell);
  dynamic_rnn(cell, x, std::vector<int>(B, int(T)), cell.zero_state(B), fwd);
  dynamic_rnn_backward(cell, fwd, d_outputs, cell.zero_state(B), g);
  fwd.outputs.setConstant(nan);
  g.inputs.setConstant(nan);
  dynamic_rnn(cell, x, lengths, cell.zero_state(B), fwd);
  g.setZero();
  dynamic_rnn_backward(cell, fwd, d_outputs, cell.zero_state(B), g);
  for (Index b = 0; b < B; ++b)
    for (Index t = 0; t < T; ++t) {
      SCOPED_TRACE(testing::Message() << "row " << b << " step " << t);
      for (Index k = 0; k < H; ++k) {
        if (t >= lengths[b]) {
          EXPECT_EQ(fwd.outputs(t, b, k), Scalar(0));
        } else {
          EXPECT_TRUE(std::isfinite(fwd.outputs(t, b, k)));
        }
      }
      for (Index k = 0; k < I; ++k) {
        if (t >= lengths[b]) {
          EXPECT_EQ(g.inputs(t, b, k), Scalar(0));
        } else {
          EXPECT_TRUE(std::isfinite(g.inputs(t, b, k)));
        }
      }
    }
}

TYPED_TEST(LSTMTyped, PaddingValuesChangeNothingForwardOrBackward) {
  using Scalar = TypeParam;
  Rng rng(3);
  const Index T = 6, B = 4, I = 3, H = 5;
  auto cell = random_cell<Scalar>(I, H, rng);
  const std::vector<int> lengths = {3, 6, 0, 1};
  auto x = random_tensor<Scalar>(T, B, I, rng);
  auto d_out = random_tensor<Scalar>(T, B, H, rng);
  const auto s0 = random_lstm_state<Scalar>(B, H, rng);
  const auto d_final = random_lstm_state<Scalar>(B, H, rng);
  fill_padding(x, lengths, Scalar(0));
  const auto clean = dynamic_rnn(cell, x, lengths, s0);
  const auto clean_g = dynamic_rnn_backward(cell, clean, d_out, d_final);

  const Scalar fills[] = {std::numeric_limits<Scalar>::quiet_NaN(), Scalar(1e30),
                          std::numeric_limits<Scalar>::infinity(), -std::numeric_limits<Scalar>::infinity()};
  for (Scalar fill : fills) {
    auto xp = x;
    auto dp = d_out;
    fill_padding(xp, lengths, fill);
    fill_padding(dp, lengths, fill);
    const auto fwd = dynamic_rnn(cell, xp, lengths, s0);
    const auto g = dynamic_rnn_backward(cell, fwd, dp, d_final);
    SCOPED_TRACE(testing::Message() << "padding filled with " << fill);
    EXPECT_TRUE(identical(fwd.outputs, clean.outputs));
    EXPECT_TRUE(identical(fwd.final_state.c, clean.final_state.c));
    EXPECT_TRUE(identical(fwd.final_state.h, clean.final_state.h));
    EXPECT_TRUE(identical(g.kernel, clean_g.kernel));
    EXPECT_TRUE(identical(g.bias, clean_g.bias));
    EXPECT_TRUE(identical(g.inputs, clean_g.inputs));
    EXPECT_TRUE(identical(g.initial_state.c, clean_g.initial_state.c));
    EXPECT_TRUE(identical(g.initial_state.h, clean_g.initial_state.h));
  }
  // The input gradient is exactly zero at padded steps.
  for (Index t = 0; t < T; ++t)
    for (Index b = 0; b < B; ++b)
      for (Index k = 0; k < I; ++k)
        if (t >= lengths[b]) {
          EXPECT_EQ(clean_g.inputs(t, b, k), Scalar(0));
        }
}

TYPED_TEST(LSTMTyped, FinalStateIsStateAfterLastValidStep) {
  using Scalar = TypeParam;
  Rng rng(4);
  const Index T = 8, B = 3, I = 2, H = 4;
  auto cell = random_cell<Scalar>(I, H, rng);
  const auto x = random_tensor<Scalar>(T, B, I, rng);
  const auto s0 = random_lstm_state<Scalar>(B, H, rng);
  const std::vector<int> lengths = {5, 0, 8};
  const auto fwd = dynamic_rnn(cell, x, lengths, s0);
  for (Index b = 0; b < B; ++b) {
    // Run the same row alone for exactly its length, with every step valid.
    const Index L = lengths[b];
    Tensor3<Scalar> xb(std::max<Index>(L, 1), 1, I);
    xb.setZero();
    for (Index t = 0; t < L; ++t)
      for (Index k = 0; k < I; ++k) xb(t, 0, k) = x(t, b, k);
    const LSTMState<Scalar> sb{s0.c.row(b), s0.h.row(b)};
    const auto alone = dynamic_rnn(cell, xb, {int(L)}, sb);
    for (Index k = 0; k < H; ++k) {
      EXPECT_NEAR(double(fwd.final_state.c(b, k)), double(alone.final_state.c(0, k)), tolerance<Scalar>());
      EXPECT_NEAR(double(fwd.final_state.h(b, k)), double(alone.final_state.h(0, k)), tolerance<Scalar>());
      if (L > 0) {
        EXPECT_EQ(fwd.final_state.h(b, k), fwd.outputs(L - 1, b, k));
      }
    }
    if (L == 0) {
      EXPECT_TRUE(identical(fwd.final_state.c.row(b), s0.c.row(b)));
      EXPECT_TRUE(identical(fwd.final_state.h.row(b), s0.h.row(b)));
    }
  }
}

TYPED_TEST(LSTMTyped, RowAloneEqualsRowInsideLongerBatch) {
  using Scalar = TypeParam;
  Rng rng(5);
  const Index T = 9, B = 6, I = 3, H = 5, L = 4;
  auto cell = random_cell<Scalar>(I, H, rng);
  const auto x = random_tensor<Scalar>(T, B, I, rng);
  const std::vector<int> lengths = {9, 2, int(L), 0, 7, 9};
  const Index row = 2;
  const auto d_out = random_tensor<Scalar>(T, B, H, rng);
  const auto fwd = dynamic_rnn(cell, x, lengths);
  const auto g = dynamic_rnn_backward(cell, fwd, d_out);

  Tensor3<Scalar> xr(L, 1, I), dr(L, 1, H);
  for (Index t = 0; t < L; ++t) {
    for (Index k = 0; k < I; ++k) xr(t, 0, k) = x(t, row, k);
    for (Index k = 0; k < H; ++k) dr(t, 0, k) = d_out(t, row, k);
  }
  const auto alone = dynamic_rnn(cell, xr, {int(L)});
  const auto ga = dynamic_rnn_backward(cell, alone, dr);
  for (Index t = 0; t < L; ++t) {
    for (Index k = 0; k < H; ++k)
      EXPECT_NEAR(double(fwd.outputs(t, row, k)), double(alone.outputs(t, 0, k)), tolerance<Scalar>());
    for (Index k = 0; k < I; ++k)
      EXPECT_NEAR(double(g.inputs(t, row, k)), double(ga.inputs(t, 0, k)), tolerance<Scalar>());
  }
}

TYPED_TEST(LSTMTyped, EmptyBatchesAndAllZeroLengths) {
  using Scalar = TypeParam;
  Rng rng(6);
  LSTMCell<Scalar> cell(2, 3);
  const auto s0 = random_lstm_state<Scalar>(2, 3, rng);
  const auto fwd = dynamic_rnn(cell, random_tensor<Scalar>(4, 2, 2, rng), {0, 0}, s0);
  EXPECT_TRUE(identical(fwd.final_state.h, s0.h));
  EXPECT_TRUE(identical(fwd.final_state.c, s0.c));
  const auto d_final = random_lstm_state<Scalar>(2, 3, rng);
  const auto g = dynamic_rnn_backward(cell, fwd, random_tensor<Scalar>(4, 2, 3, rng), d_final);
  EXPECT_TRUE(identical(g.initial_state.h, d_final.h));
  EXPECT_TRUE(identical(g.initial_state.c, d_final.c));
  EXPECT_EQ(g.kernel.cwiseAbs().maxCoeff(), Scalar(0));

  const auto none = dynamic_rnn(cell, Tensor3<Scalar>(0, 0, 2), {});
  EXPECT_EQ(none.outputs.size(), 0);
  const auto zero_time = dynamic_rnn(cell, Tensor3<Scalar>(0, 3, 2), {0, 0, 0});
  EXPECT_EQ(zero_time.final_state.h.rows(), 3);
}

TEST(LSTMGradient, ThroughTimeWithMixedLengthsAndInitialState) {
  Rng rng(7);
  const Index T = 6, B = 5, I = 3, H = 4;
  auto cell = random_cell<double>(I, H, rng);
  auto x = random_tensor<double>(T, B, I, rng);
  auto s0 = random_lstm_state<double>(B, H, rng);
  const std::vector<int> lengths = {6, 3, 0, 1, 6};
  // Loss = <outputs, w> + <final c, wc> + <final h, wh>; w is nonzero at padded steps too,
  // where the outputs are constant 0 and so must get no gradient.
  const auto w = random_tensor<double>(T, B, H, rng);
  const auto wf = random_lstm_state<double>(B, H, rng);
  const auto loss = [&] {
    const auto f = dynamic_rnn(cell, x, lengths, s0);
    return dot(f.outputs, w) + dot(f.final_state.c, wf.c) + dot(f.final_state.h, wf.h);
  };
  const auto g = dynamic_rnn_backward(cell, dynamic_rnn(cell, x, lengths, s0), w, wf);

  EXPECT_LE(max_gradient_error(cell.kernel(), g.kernel, loss), 1e-6);
  EXPECT_LE(max_gradient_error(cell.bias(), g.bias, loss), 1e-6);
  EXPECT_LE(max_gradient_error(x, g.inputs, loss), 1e-6);
  EXPECT_LE(max_gradient_error(s0.c, g.initial_state.c, loss), 1e-6);
  EXPECT_LE(max_gradient_error(s0.h, g.initial_state.h, loss), 1e-6);
}

TEST(LSTMGradient, ForgetBiasOtherThanOne) {
  Rng rng(8);
  const Index T = 4, B = 3, I = 2, H = 3;
  LSTMCell<double> cell(I, H, /*forget_bias=*/-0.5);
  cell.reset_parameters(rng);
  fill_uniform(cell.bias(), rng, 0.5);
  auto x = random_tensor<double>(T, B, I, rng);
  const std::vector<int> lengths = {4, 2, 3};
  const auto w = random_tensor<double>(T, B, H, rng);
  const auto loss = [&] { return dot(dynamic_rnn(cell, x, lengths).outputs, w); };
  const auto g = dynamic_rnn_backward(cell, dynamic_rnn(cell, x, lengths), w);
  EXPECT_LE(max_gradient_error(cell.kernel(), g.kernel, loss), 1e-6);
  EXPECT_LE(max_gradient_error(cell.bias(), g.bias, loss), 1e-6);
}

TEST(LSTMGradient, AccumulatesIntoGivenGradients) {
  Rng rng(9);
  auto cell = random_cell<double>(2, 3, rng);
  const auto x = random_tensor<double>(4, 2, 2, rng);
  const auto d = random_tensor<double>(4, 2, 3, rng);
  const auto fwd = dynamic_rnn(cell, x, {4, 3});
  const auto once = dynamic_rnn_backward(cell, fwd, d);
  DynamicRNNGradients<LSTMCell<double>> twice(cell);
  dynamic_rnn_backward(cell, fwd, d, cell.zero_state(2), twice);
  dynamic_rnn_backward(cell, fwd, d, cell.zero_state(2), twice);
  EXPECT_TRUE(twice.kernel.isApprox(2 * once.kernel, 1e-14));
  EXPECT_TRUE(twice.bias.isApprox(2 * once.bias, 1e-14));
  EXPECT_TRUE(identical(twice.inputs, once.inputs));  // per call, not accumulated
  twice.setZero();
  EXPECT_EQ(twice.kernel.cwiseAbs().maxCoeff(), 0.0);
}

TEST(LSTMCellTest, InitialisationIsGlorotUniformAndReproducible) {
  LSTMCell<float> a(3, 5), b(3, 5);
  EXPECT_TRUE(identical(a.kernel(), b.kernel()));
  const float limit = std::sqrt(6.0f / float(8 + 20));
  EXPECT_LE(a.kernel().cwiseAbs().maxCoeff(), limit);
  EXPECT_GT(a.kernel().cwiseAbs().maxCoeff(), 0.8f * limit);
  EXPECT_EQ(a.bias().cwiseAbs().maxCoeff(), 0.0f);
  EXPECT_EQ(a.forget_bias(), 1.0f);
  Rng rng(42);
  b.reset_parameters(rng);
  EXPECT_FALSE(identical(a.kernel(), b.kernel()));
}

TEST(LSTMThreads, ResultsDoNotDependOnTheThreadCount) {
  // Shapes large enough that products and elementwise loops are split across threads.
  Rng rng(10);
  const Index T = 8, B = 70, I = 40, H = 260;
  auto cell = random_cell<float>(I, H, rng);
  expect_same_across_thread_counts(cell, T, B, rng);
}

// A batch whose rows all run every step has the packed layout of its padded tensors, so a
// pass that keeps nothing for backward (ForwardMode::inference, or any pass in int8) reads x
// and writes the outputs where they are (dynamic_rnn.hpp). Its reference is the same batch
// with one more row of length 0, whose x is NaN: that batch is not full, so it goes through
// the packed copies, with the same rows in the same places of every product. Every cell, a
// stack, every precision and 1 and 2 threads; one result taking a full batch, a ragged one
// and the full one again. No cache is left viewing the caller's tensors, whose shapes it
// keeps. A pass that trains still copies x: backward reads it after the caller has
// overwritten its tensor.
template <class Cell>
void expect_full_batch_in_place(const char* name, Cell cell, Rng& rng) {
  const Index T = 7, B = 6, I = cell.input_size(), H = cell.output_size();
  const Tensor3<float> x = random_tensor<float>(T, B, I, rng);
  Tensor3<float> x_more(T, B + 1, I);  // x and a row of length 0, never read
  x_more.setConstant(std::numeric_limits<float>::quiet_NaN());
  for (Index t = 0; t < T; ++t)
    for (Index b = 0; b < B; ++b)
      for (Index k = 0; k < I; ++k) x_more(t, b, k) = x(t, b, k);
  const std::vector<int> full(static_cast<std::size_t>(B), static_cast<int>(T)), ragged = {7, 2, 0, 5, 7, 1};
  std::vector<int> more(full);
  more.push_back(0);
  auto s0 = cell.zero_state(B), s0_more = cell.zero_state(B + 1);
  s0_more.zip(s0_more, [&](Matrix<float>& m, const Matrix<float>&) {
    m = random_matrix<float>(m.rows(), m.cols(), rng, 0.5);
  });
  s0.zip(s0_more, [&](Matrix<float>& m, const Matrix<float>& src) { m = src.topRows(B); });
  cell.begin_int8_calibration();  // for int8, below
  dynamic_rnn(cell, x, full, s0);
  cell.end_int8_calibration();
  for (Precision precision : {Precision::float32, Precision::bfloat16, Precision::int8}) {
    cell.set_precision(precision);
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      const auto reference = dynamic_rnn(cell, x_more, more, s0_more, ForwardMode::inference);
      DynamicRNNResult<Cell> r;
      for (const std::vector<int>* lengths : {&full, &ragged, &full}) {
        SCOPED_TRACE(testing::Message() << name << ", precision " << int(precision) << ", " << threads
                                        << " threads, " << (lengths == &ragged ? "ragged" : "full"));
        dynamic_rnn(cell, x, *lengths, s0, r, ForwardMode::inference);
        EXPECT_FALSE(r.cache.x.is_view());
        EXPECT_FALSE(Cell::packed_outputs(r.cache).is_view());
        EXPECT_EQ(r.cache.x.rows(), r.schedule.total());
        EXPECT_EQ(Cell::packed_outputs(r.cache).rows(), r.schedule.total());
        if (lengths == &ragged) {
          const auto packed = dynamic_rnn(cell, x, ragged, s0, ForwardMode::training);  // copies in any precision
          for (Index e = 0; e < r.outputs.size(); ++e) ASSERT_EQ(r.outputs.data()[e], packed.outputs.data()[e]) << e;
          continue;
        }
        for (Index t = 0; t < T; ++t)
          for (Index b = 0; b < B; ++b)
            for (Index k = 0; k < H; ++k)
              ASSERT_EQ(r.outputs(t, b, k), reference.outputs(t, b, k)) << t << " " << b << " " << k;
        r.final_state.zip(reference.final_state, [&](const Matrix<float>& got, const Matrix<float>& want) {
          EXPECT_TRUE(got == want.topRows(B));
        });
      }
    }
    set_num_threads(1);
  }
  // Training: the cache keeps its own copy of x.
  cell.set_precision(Precision::float32);
  const Tensor3<float> dy = random_tensor<float>(T, B, H, rng);
  const auto fwd = dynamic_rnn(cell, x, full, s0);
  const auto want = dynamic_rnn_backward(cell, fwd, dy);
  Tensor3<float> x_reused = x;
  const auto fwd_reused = dynamic_rnn(cell, x_reused, full, s0);
  x_reused.setConstant(std::numeric_limits<float>::quiet_NaN());
  auto got = dynamic_rnn_backward(cell, fwd_reused, dy);
  for (Index e = 0; e < got.inputs.size(); ++e)
    ASSERT_EQ(got.inputs.data()[e], want.inputs.data()[e]) << name << " " << e;
  got.initial_state.zip(want.initial_state,
                        [&](const Matrix<float>& a, const Matrix<float>& b) { EXPECT_TRUE(a == b); });
}

// A cell of the concept in dynamic_rnn.hpp with neither of its optional members (no
// precision(), only the const packed_outputs()): an LSTM otherwise.
struct PlainCell : LSTMCell<float> {
  using LSTMCell<float>::LSTMCell;
  Precision precision() const = delete;
  static const ReusableMatrix<float>& packed_outputs(const Cache& cache) { return cache.h; }
};

TEST(DynamicRNN, FullBatchInferenceReadsAndWritesInPlace) {
  Rng rng(47);
  for_each_test_cell([&](const char* name, auto cell) { expect_full_batch_in_place(name, cell, rng); });
  using Cell = LSTMCell<float>;
  const Cell a(10, 24), b(24, 16);
  expect_full_batch_in_place("StackedCell of LSTMCell", StackedCell<Cell>({a, b}), rng);

  // Such a cell copies, as before, and computes the same.
  static_assert(!detail::has_writable_outputs<PlainCell>::value);
  const PlainCell plain(10, 24);
  const Tensor3<float> x = random_tensor<float>(5, 4, 10, rng);
  const std::vector<int> full(4, 5);
  const auto want = dynamic_rnn(a, x, full, ForwardMode::inference);
  DynamicRNNResult<PlainCell> got;
  dynamic_rnn(plain, x, full, plain.zero_state(4), got, ForwardMode::inference);
  for (Index e = 0; e < want.outputs.size(); ++e) ASSERT_EQ(got.outputs.data()[e], want.outputs.data()[e]) << e;
  EXPECT_FALSE(got.cache.x.is_view());
}

}  // namespace
}  // namespace dynrnn::test
