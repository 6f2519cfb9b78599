// GRUCell (both variants) and RNNCell (tanh and relu) through dynamic_rnn: values against
// independent scalar references written from the equations, finite-difference gradients in
// double with mixed lengths including 0, the masking semantics, thread-count invariance, and
// the inference pass against the training pass.
#include "support.hpp"

#include <string>

namespace dynrnn::test {
namespace {

// z[c] = sum over k of in[k] · W(row0 + k, col0 + c), for c in [0, n); W is any matrix.
template <class W>
std::vector<double> product(const std::vector<double>& in, const W& w, Index row0, Index col0, Index n) {
  std::vector<double> z(n, 0.0);
  for (Index k = 0; k < Index(in.size()); ++k)
    for (Index c = 0; c < n; ++c) z[c] += in[k] * double(w(row0 + k, col0 + c));
  return z;
}

// One step of each cell, written from the equations in scalar loops, one row at a time,
// sharing no code with the library.
template <class Scalar>
void reference_step(const RNNCell<Scalar>& cell, const std::vector<double>& x, std::vector<double>& h) {
  const Index I = cell.input_size(), H = cell.hidden_size();
  const auto zx = product(x, cell.kernel(), 0, 0, H), zh = product(h, cell.kernel(), I, 0, H);
  for (Index k = 0; k < H; ++k) {
    const double z = zx[k] + zh[k] + double(cell.bias()(k));
    h[k] = cell.activation() == RNNActivation::tanh ? std::tanh(z) : std::max(0.0, z);
  }
}

template <class Scalar>
void reference_step(const GRUCell<Scalar>& cell, const std::vector<double>& x, std::vector<double>& h) {
  const Index I = cell.input_size(), H = cell.hidden_size();
  const auto& W = cell.kernel();
  const auto b = [&](Index k) { return double(cell.bias()(k)); };
  const auto gx = product(x, W, 0, 0, 3 * H);  // x · W_x, all three blocks
  std::vector<double> r(H), u(H), c(H);
  if (cell.variant() == GRUVariant::reset_before) {
    const auto gh = product(h, W, I, 0, 2 * H);
    for (Index k = 0; k < H; ++k) {
      r[k] = sigmoid(gx[k] + gh[k] + b(k));
      u[k] = sigmoid(gx[H + k] + gh[H + k] + b(H + k));
    }
    std::vector<double> rh(H);
    for (Index k = 0; k < H; ++k) rh[k] = r[k] * h[k];
    const auto gc = product(rh, W, I, 2 * H, H);
    for (Index k = 0; k < H; ++k) c[k] = std::tanh(gx[2 * H + k] + gc[k] + b(2 * H + k));
  } else {
    const auto gh = product(h, W, I, 0, 3 * H);
    const auto rb = [&](Index k) { return double(cell.recurrent_bias()(k)); };
    for (Index k = 0; k < H; ++k) {
      r[k] = sigmoid(gx[k] + b(k) + gh[k] + rb(k));
      u[k] = sigmoid(gx[H + k] + b(H + k) + gh[H + k] + rb(H + k));
      c[k] = std::tanh(gx[2 * H + k] + b(2 * H + k) + r[k] * (gh[2 * H + k] + rb(2 * H + k)));
    }
  }
  for (Index k = 0; k < H; ++k) {
    h[k] = u[k] * h[k] + (1 - u[k]) * c[k];
  }
}

// The four configurations under test, each with a cell type and a way to build a random cell.
struct RNNTanh {
  template <class S>
  using Cell = RNNCell<S>;
  template <class S>
  static Cell<S> make(Index I, Index H) {
    return Cell<S>(I, H, RNNActivation::tanh);
  }
};
struct RNNRelu {
  template <class S>
  using Cell = RNNCell<S>;
  template <class S>
  static Cell<S> make(Index I, Index H) {
    return Cell<S>(I, H, RNNActivation::relu);
  }
};
struct GRUBefore {
  template <class S>
  using Cell = GRUCell<S>;
  template <class S>
  static Cell<S> make(Index I, Index H) {
    return Cell<S>(I, H, GRUVariant::reset_before);
  }
};
struct GRUAfter {
  template <class S>
  using Cell = GRUCell<S>;
  template <class S>
  static Cell<S> make(Index I, Index H) {
    return Cell<S>(I, H, GRUVariant::reset_after);
  }
};

// Every parameter of the cell, drawn at random (biases too, so that their gradients count).
template <class Kind, class S>
typename Kind::template Cell<S> random_cell(Index I, Index H, Rng& rng) {
  auto cell = Kind::template make<S>(I, H);
  cell.for_each_parameter([&](const char*, auto& p) { fill_uniform(p, rng, 0.8); });
  return cell;
}

template <class Scalar>
HiddenState<Scalar> random_hidden_state(Index B, Index H, Rng& rng) {
  return {random_matrix<Scalar>(B, H, rng)};
}

template <class Kind>
class CellTest : public ::testing::Test {};
using Kinds = ::testing::Types<RNNTanh, RNNRelu, GRUBefore, GRUAfter>;
struct KindNames {
  template <class T>
  static std::string GetName(int) {
    if (std::is_same_v<T, RNNTanh>) return "RNNTanh";
    if (std::is_same_v<T, RNNRelu>) return "RNNRelu";
    if (std::is_same_v<T, GRUBefore>) return "GRUResetBefore";
    return "GRUResetAfter";
  }
};
TYPED_TEST_SUITE(CellTest, Kinds, KindNames);

template <class Kind, class Scalar>
void expect_matches_reference() {
  Rng rng(1);
  const Index T = 7, B = 6, I = 3, H = 5;
  const auto cell = random_cell<Kind, Scalar>(I, H, rng);
  const auto x = random_tensor<Scalar>(T, B, I, rng);
  const auto s0 = random_hidden_state<Scalar>(B, H, rng);
  const std::vector<int> lengths = {7, 2, 0, 5, 1, 7};
  const auto fwd = dynamic_rnn(cell, x, lengths, s0);
  const double tol = tolerance<Scalar>();
  for (Index b = 0; b < B; ++b) {
    std::vector<double> h(H);
    for (Index k = 0; k < H; ++k) h[k] = double(s0.h(b, k));
    for (Index t = 0; t < T; ++t) {
      if (t < lengths[b]) {
        std::vector<double> xt(I);
        for (Index k = 0; k < I; ++k) xt[k] = double(x(t, b, k));
        reference_step(cell, xt, h);
      }
      for (Index k = 0; k < H; ++k) {
        const double expected = t < lengths[b] ? h[k] : 0.0;
        EXPECT_NEAR(double(fwd.outputs(t, b, k)), expected, tol) << "t=" << t << " b=" << b << " k=" << k;
      }
    }
    for (Index k = 0; k < H; ++k) EXPECT_NEAR(double(fwd.final_state.h(b, k)), h[k], tol);
  }
}

TYPED_TEST(CellTest, MatchesScalarReferenceWithMixedLengths) {
  expect_matches_reference<TypeParam, double>();
  expect_matches_reference<TypeParam, float>();
}

// Loss = <outputs, w> + <final h, wf>; w is nonzero at padded steps too, where the outputs are
// constant 0 and so must get no gradient. Every parameter, the inputs and the initial state.
// Central differences with step 1e-5: at 1e-6 rounding in the loss (about 1e-16 / 1e-6
// relative) already reaches 3e-6 of the smallest gradients (measured on the GRU kernel,
// whose error falls to 6e-8 at a step of 1e-4), while the truncation error stays below 1e-9.
TYPED_TEST(CellTest, GradientsMatchFiniteDifferences) {
  constexpr double kStep = 1e-5;
  Rng rng(2);
  const Index T = 6, B = 5, I = 3, H = 4;
  auto cell = random_cell<TypeParam, double>(I, H, rng);
  auto x = random_tensor<double>(T, B, I, rng);
  auto s0 = random_hidden_state<double>(B, H, rng);
  const std::vector<int> lengths = {6, 3, 0, 1, 6};
  const auto w = random_tensor<double>(T, B, H, rng);
  const auto wf = random_hidden_state<double>(B, H, rng);
  const auto loss = [&] {
    const auto f = dynamic_rnn(cell, x, lengths, s0);
    return dot(f.outputs, w) + dot(f.final_state.h, wf.h);
  };
  const auto g = dynamic_rnn_backward(cell, dynamic_rnn(cell, x, lengths, s0), w, wf);

  EXPECT_LE(max_gradient_error(cell.kernel(), g.kernel, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(cell.bias(), g.bias, loss, kStep), 1e-6);
  if constexpr (std::is_same_v<decltype(cell), GRUCell<double>>) {
    if (cell.variant() == GRUVariant::reset_after) {
      ASSERT_EQ(g.recurrent_bias.size(), 3 * H);
      EXPECT_LE(max_gradient_error(cell.recurrent_bias(), g.recurrent_bias, loss, kStep), 1e-6);
    } else {
      EXPECT_EQ(g.recurrent_bias.size(), 0);
    }
  }
  EXPECT_LE(max_gradient_error(x, g.inputs, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(s0.h, g.initial_state.h, loss, kStep), 1e-6);
}

TYPED_TEST(CellTest, PaddingValuesChangeNothingForwardOrBackward) {
  Rng rng(3);
  const Index T = 6, B = 4, I = 3, H = 5;
  const auto cell = random_cell<TypeParam, float>(I, H, rng);
  const std::vector<int> lengths = {3, 6, 0, 1};
  auto x = random_tensor<float>(T, B, I, rng);
  auto d_out = random_tensor<float>(T, B, H, rng);
  const auto s0 = random_hidden_state<float>(B, H, rng);
  const auto d_final = random_hidden_state<float>(B, H, rng);
  const auto clean = dynamic_rnn(cell, x, lengths, s0);
  const auto clean_g = dynamic_rnn_backward(cell, clean, d_out, d_final);
  for (float fill : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), 1e30f}) {
    auto xp = x;
    auto dp = d_out;
    fill_padding(xp, lengths, fill);
    fill_padding(dp, lengths, fill);
    const auto fwd = dynamic_rnn(cell, xp, lengths, s0);
    const auto g = dynamic_rnn_backward(cell, fwd, dp, d_final);
    SCOPED_TRACE(testing::Message() << "padding filled with " << fill);
    EXPECT_TRUE(identical(fwd.outputs, clean.outputs));
    EXPECT_TRUE(identical(fwd.final_state.h, clean.final_state.h));
    EXPECT_TRUE(identical(g.kernel, clean_g.kernel));
    EXPECT_TRUE(identical(g.bias, clean_g.bias));
    EXPECT_TRUE(identical(g.inputs, clean_g.inputs));
    EXPECT_TRUE(identical(g.initial_state.h, clean_g.initial_state.h));
  }
  for (Index t = 0; t < T; ++t)
    for (Index b = 0; b < B; ++b)
      if (t >= lengths[b]) {
        for (Index k = 0; k < H; ++k) EXPECT_EQ(clean.outputs(t, b, k), 0.0f);
        for (Index k = 0; k < I; ++k) EXPECT_EQ(clean_g.inputs(t, b, k), 0.0f);
      }
  // A row of length 0 keeps its initial state and passes its final-state gradient through.
  EXPECT_TRUE(identical(clean.final_state.h.row(2), s0.h.row(2)));
  EXPECT_TRUE(identical(clean_g.initial_state.h.row(2), d_final.h.row(2)));
}

TYPED_TEST(CellTest, ResultsDoNotDependOnTheThreadCount) {
  // Shapes large enough that the time loop and the products are split across threads. The
  // weights are the cell's own initialisation (Glorot), plus a random bias: with every
  // weight drawn from [-0.8, 0.8] at H = 200 the recurrence is chaotic, and OpenBLAS's and
  // oneDNN's per-thread-count rounding grows past float precision within 8 steps
  // (measured: 3.2e-5 for the tanh RNN, against 5e-7 with this initialisation).
  Rng rng(4);
  const Index T = 8, B = 70, I = 40, H = 200;
  auto cell = TypeParam::template make<float>(I, H);
  fill_uniform(cell.bias(), rng, 0.5);
  expect_same_across_thread_counts(cell, T, B, rng);
}

TYPED_TEST(CellTest, SkippingInputGradientsChangesNothingElse) {
  Rng rng(13);
  expect_skipping_input_gradients_changes_nothing_else(random_cell<TypeParam, float>(3, 5, rng), 6, 7, rng);
  expect_skipping_input_gradients_changes_nothing_else(random_cell<TypeParam, double>(2, 4, rng), 5, 4, rng);
}

// An inference pass (ForwardMode::inference) gives the training pass's outputs and final
// state bit for bit, keeps no h_{t-1}, and no backward pass follows it. A two-layer stack of
// the cell passes the mode to each layer.
TYPED_TEST(CellTest, InferencePassIsTheTrainingPassWithoutHPrev) {
  Rng rng(14);
  const Index T = 6, B = 7, I = 3, H = 5;
  const auto cell = random_cell<TypeParam, float>(I, H, rng);
  const auto x = random_tensor<float>(T, B, I, rng);
  const auto s0 = random_hidden_state<float>(B, H, rng);
  const std::vector<int> lengths = {6, 2, 0, 5, 1, 6, 3};
  const auto train = dynamic_rnn(cell, x, lengths, s0);
  const auto infer = dynamic_rnn(cell, x, lengths, s0, ForwardMode::inference);
  for (Index e = 0; e < train.outputs.size(); ++e) ASSERT_EQ(infer.outputs.data()[e], train.outputs.data()[e]) << e;
  EXPECT_TRUE(infer.final_state.h == train.final_state.h);
  EXPECT_EQ(infer.cache.h_prev.rows(), 0);
  EXPECT_EQ(train.cache.h_prev.rows(), train.schedule.total());
  expect_invalid_argument([&] { dynamic_rnn_backward(cell, infer, random_tensor<float>(T, B, H, rng)); },
                          {"dynamic_rnn_backward", "'forward'", "ForwardMode::inference"});

  using Cell = typename TypeParam::template Cell<float>;
  const StackedCell<Cell> stack({random_cell<TypeParam, float>(I, H, rng), random_cell<TypeParam, float>(H, H, rng)});
  const auto stack_train = dynamic_rnn(stack, x, lengths);
  const auto stack_infer = dynamic_rnn(stack, x, lengths, ForwardMode::inference);
  for (Index e = 0; e < stack_train.outputs.size(); ++e)
    ASSERT_EQ(stack_infer.outputs.data()[e], stack_train.outputs.data()[e]) << e;
  for (const auto& layer : stack_infer.cache.layers) EXPECT_EQ(layer.h_prev.rows(), 0);
}

TYPED_TEST(CellTest, CheckpointRoundTripAndDescription) {
  Rng rng(5);
  auto cell = random_cell<TypeParam, double>(3, 4, rng);
  Checkpoint<double> saved;
  saved.add("cell", cell);
  auto other = TypeParam::template make<double>(3, 4);
  Checkpoint<double> loaded;
  loaded.add("cell", other);
  EXPECT_EQ(loaded.load(safetensors::File::parse(saved.to_bytes(12), "memory")), 12);
  const auto flatten = [](auto& c) {  // every parameter, in the order the cell lists them
    std::vector<double> values;
    c.for_each_parameter([&](const char*, auto& p) { values.insert(values.end(), p.data(), p.data() + p.size()); });
    return values;
  };
  EXPECT_EQ(flatten(other), flatten(cell));
  EXPECT_NE(cell.description().find("input_size=3, hidden_size=4"), std::string::npos) << cell.description();
}

TEST(RNNCellTest, ReluSubgradientAtZeroIsZero) {
  // Zero weights and bias: every pre-activation is exactly 0, so h = 0 and, as in PyTorch,
  // no gradient passes the relu.
  RNNCell<double> cell(2, 3, RNNActivation::relu);
  cell.kernel().setZero();
  Rng rng(6);
  const auto x = random_tensor<double>(4, 2, 2, rng);
  const auto fwd = dynamic_rnn(cell, x, {4, 2});
  EXPECT_EQ(max_abs(fwd.outputs), 0.0);
  Tensor3<double> d(4, 2, 3);
  d.setConstant(1.0);
  const auto g = dynamic_rnn_backward(cell, fwd, d);
  EXPECT_EQ(g.kernel.cwiseAbs().maxCoeff(), 0.0);
  EXPECT_EQ(g.bias.cwiseAbs().maxCoeff(), 0.0);
}

TEST(GRUCellTest, InitialisationFollowsTensorFlow) {
  GRUCell<float> before(3, 5, GRUVariant::reset_before), after(3, 5, GRUVariant::reset_after);
  EXPECT_TRUE(identical(before.kernel(), after.kernel()));  // same seed, same draws
  const float gate_limit = std::sqrt(6.0f / float(8 + 10)), candidate_limit = std::sqrt(6.0f / float(8 + 5));
  EXPECT_LE(before.kernel().leftCols(10).cwiseAbs().maxCoeff(), gate_limit);
  EXPECT_GT(before.kernel().leftCols(10).cwiseAbs().maxCoeff(), 0.8f * gate_limit);
  EXPECT_LE(before.kernel().rightCols(5).cwiseAbs().maxCoeff(), candidate_limit);
  EXPECT_GT(before.kernel().rightCols(5).cwiseAbs().maxCoeff(), 0.8f * candidate_limit);
  EXPECT_TRUE(before.bias().head(10).isOnes(0));  // TensorFlow's gate bias 1
  EXPECT_TRUE(before.bias().tail(5).isZero(0));
  EXPECT_EQ(before.recurrent_bias().size(), 0);
  EXPECT_TRUE(after.bias().isZero(0));
  EXPECT_EQ(after.recurrent_bias().size(), 15);
  EXPECT_TRUE(after.recurrent_bias().isZero(0));
  EXPECT_EQ(after.description(), "GRUCell(input_size=3, hidden_size=5, variant=reset_after)");
}

TEST(GRUCellTest, VariantsComputeDifferentFunctions) {
  Rng rng(7);
  auto before = random_cell<GRUBefore, double>(2, 3, rng);
  GRUCell<double> after(2, 3, GRUVariant::reset_after);
  after.kernel() = before.kernel();
  after.bias() = before.bias();
  const auto x = random_tensor<double>(3, 2, 2, rng);
  const auto s0 = random_hidden_state<double>(2, 3, rng);
  const auto a = dynamic_rnn(before, x, {3, 3}, s0), b = dynamic_rnn(after, x, {3, 3}, s0);
  EXPECT_GT(std::abs(a.outputs(2, 0, 0) - b.outputs(2, 0, 0)), 1e-6);
}

}  // namespace
}  // namespace dynrnn::test
