// Topologies: StackedCell (layers with dropout between them) and bidirectional_dynamic_rnn.
// Golden values from PyTorch's 2-layer and bidirectional nn.LSTM
// (tests/data/make_topology_golden.py), finite-difference gradients in double with mixed
// lengths including 0 (dropout masks included), and the semantics each promises.
#include "golden.hpp"

#include <string>

namespace dynrnn::test {
namespace {

using Stack = StackedCell<LSTMCell<double>>;

TEST(Stacked, TwoLayerLSTMMatchesPyTorch) {
  const GoldenFile g("lstm_2layer_golden.safetensors");
  std::vector<LSTMCell<double>> layers = {{3, 4}, {4, 4}};
  for (int k = 0; k < 2; ++k) import_pytorch_lstm(layers[k], kData + "/lstm_2layer_pytorch.safetensors", "", k);
  const Stack stack(std::move(layers));
  const auto h0 = g.slices("h0", 2, g.B, g.H), c0 = g.slices("c0", 2, g.B, g.H);
  StackedState<LSTMCell<double>> s0{{{c0[0], h0[0]}, {c0[1], h0[1]}}};
  const auto fwd = dynamic_rnn(stack, g.tensor("x", g.I), g.lengths(), s0);
  EXPECT_LE(max_relative_error(fwd.outputs, g.tensor("outputs", g.H)), kGoldenTolerance);
  const auto h_n = g.slices("h_n", 2, g.B, g.H), c_n = g.slices("c_n", 2, g.B, g.H);
  const auto dh = g.slices("d_h_n", 2, g.B, g.H), dc = g.slices("d_c_n", 2, g.B, g.H);
  StackedState<LSTMCell<double>> d_final{{{dc[0], dh[0]}, {dc[1], dh[1]}}};
  const auto grads = dynamic_rnn_backward(stack, fwd, g.tensor("d_outputs", g.H), d_final);
  const auto g_h0 = g.slices("grad_h0", 2, g.B, g.H), g_c0 = g.slices("grad_c0", 2, g.B, g.H);
  for (int k = 0; k < 2; ++k) {
    SCOPED_TRACE(testing::Message() << "layer " << k);
    EXPECT_LE(max_relative_error(fwd.final_state.layers[k].h, h_n[k]), kGoldenTolerance);
    EXPECT_LE(max_relative_error(fwd.final_state.layers[k].c, c_n[k]), kGoldenTolerance);
    const std::string l = "_l" + std::to_string(k);
    EXPECT_LE(max_relative_error(grads.layers[k].kernel, g.matrix("grad_kernel" + l, (k ? g.H : g.I) + g.H, 4 * g.H)),
              kGoldenTolerance);
    EXPECT_LE(max_relative_error(grads.layers[k].bias, g.vector("grad_bias" + l, 4 * g.H)), kGoldenTolerance);
    EXPECT_LE(max_relative_error(grads.initial_state.layers[k].h, g_h0[k]), kGoldenTolerance);
    EXPECT_LE(max_relative_error(grads.initial_state.layers[k].c, g_c0[k]), kGoldenTolerance);
  }
  EXPECT_LE(max_relative_error(grads.inputs, g.tensor("grad_x", g.I)), kGoldenTolerance);
}

TEST(Bidirectional, LSTMMatchesPyTorch) {
  const GoldenFile g("lstm_bidirectional_golden.safetensors");
  LSTMCell<double> fw(3, 4), bw(3, 4);
  import_pytorch_lstm(fw, kData + "/lstm_bidirectional_pytorch.safetensors");
  import_pytorch_lstm(bw, kData + "/lstm_bidirectional_pytorch.safetensors", "", 0, /*reverse=*/true);
  const auto h0 = g.slices("h0", 2, g.B, g.H), c0 = g.slices("c0", 2, g.B, g.H);
  const auto r = bidirectional_dynamic_rnn(fw, bw, g.tensor("x", g.I), g.lengths(), LSTMState<double>{c0[0], h0[0]},
                                           LSTMState<double>{c0[1], h0[1]});
  EXPECT_LE(max_relative_error(concat_outputs(r), g.tensor("outputs", 2 * g.H)), kGoldenTolerance);
  const auto h_n = g.slices("h_n", 2, g.B, g.H), c_n = g.slices("c_n", 2, g.B, g.H);
  EXPECT_LE(max_relative_error(r.fw.final_state.h, h_n[0]), kGoldenTolerance);
  EXPECT_LE(max_relative_error(r.bw.final_state.h, h_n[1]), kGoldenTolerance);
  EXPECT_LE(max_relative_error(r.bw.final_state.c, c_n[1]), kGoldenTolerance);

  Tensor3<double> d_fw, d_bw;
  split_outputs(g.tensor("d_outputs", 2 * g.H), g.H, g.H, d_fw, d_bw);
  const auto dh = g.slices("d_h_n", 2, g.B, g.H), dc = g.slices("d_c_n", 2, g.B, g.H);
  BidirectionalGradients<LSTMCell<double>, LSTMCell<double>> grads(fw, bw);
  bidirectional_dynamic_rnn_backward(fw, bw, r, d_fw, d_bw, LSTMState<double>{dc[0], dh[0]},
                                     LSTMState<double>{dc[1], dh[1]}, grads);
  EXPECT_LE(max_relative_error(grads.fw.kernel, g.matrix("grad_kernel_fw", g.I + g.H, 4 * g.H)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.bw.kernel, g.matrix("grad_kernel_bw", g.I + g.H, 4 * g.H)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.fw.bias, g.vector("grad_bias_fw", 4 * g.H)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.bw.bias, g.vector("grad_bias_bw", 4 * g.H)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.inputs, g.tensor("grad_x", g.I)), kGoldenTolerance);
  const auto g_h0 = g.slices("grad_h0", 2, g.B, g.H), g_c0 = g.slices("grad_c0", 2, g.B, g.H);
  EXPECT_LE(max_relative_error(grads.fw.initial_state.h, g_h0[0]), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.bw.initial_state.h, g_h0[1]), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.bw.initial_state.c, g_c0[1]), kGoldenTolerance);
}

// Three layers (the middle one with peepholes and a projection), dropout 0.3 in training
// mode: the masks are redrawn from the same seed for every evaluation, so the loss is a fixed
// function of the parameters and backward must use the masks forward drew.
TEST(Stacked, GradientsWithDropoutMatchFiniteDifferences) {
  constexpr double kStep = 1e-5;
  Rng rng(1);
  LSTMOptions o;
  o.use_peepholes = true;
  o.num_proj = 3;
  std::vector<LSTMCell<double>> layers = {{3, 4}, {4, 5, o}, {3, 4}};
  for (auto& l : layers) l.for_each_parameter([&](const char*, auto& p) { fill_uniform(p, rng, 0.8); });
  Stack stack(std::move(layers), 0.3, 11);
  stack.set_training(true);
  auto x = random_tensor<double>(6, 5, 3, rng);
  const std::vector<int> lengths = {6, 3, 0, 1, 6};
  auto s0 = stack.zero_state(5);
  for (auto& l : s0.layers) {
    fill_uniform(l.c, rng, 1.0);
    fill_uniform(l.h, rng, 1.0);
  }
  const auto w = random_tensor<double>(6, 5, 4, rng);
  const auto run = [&] {
    stack.rng() = Rng(42);
    return dynamic_rnn(stack, x, lengths, s0);
  };
  const auto loss = [&] {
    const auto f = run();
    double l = dot(f.outputs, w);
    for (const auto& st : f.final_state.layers) l += st.c.sum() + 2 * st.h.sum();
    return l;
  };
  const auto fwd = run();
  ASSERT_EQ(fwd.cache.masks.size(), 2u);
  EXPECT_GT((fwd.cache.masks[0].array() == 0).count(), 0);
  auto d_final = stack.zero_state(5);
  for (auto& st : d_final.layers) {
    st.c.setConstant(1);
    st.h.setConstant(2);
  }
  const auto g = dynamic_rnn_backward(stack, fwd, w, d_final);
  for (std::size_t k = 0; k < 3; ++k) {
    SCOPED_TRACE(testing::Message() << "layer " << k);
    auto& layer = stack.layer(k);
    EXPECT_LE(max_gradient_error(layer.kernel(), g.layers[k].kernel, loss, kStep), 1e-6);
    EXPECT_LE(max_gradient_error(layer.bias(), g.layers[k].bias, loss, kStep), 1e-6);
    EXPECT_LE(max_gradient_error(s0.layers[k].c, g.initial_state.layers[k].c, loss, kStep), 1e-6);
    EXPECT_LE(max_gradient_error(s0.layers[k].h, g.initial_state.layers[k].h, loss, kStep), 1e-6);
  }
  EXPECT_LE(max_gradient_error(stack.layer(1).w_f_diag(), g.layers[1].w_f_diag, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(stack.layer(1).projection(), g.layers[1].projection, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(x, g.inputs, loss, kStep), 1e-6);

  // InputGradients::skip through the same masks: no input gradient, every other gradient
  // the same bit for bit, and still that of the loss.
  const auto gs = dynamic_rnn_backward(stack, fwd, w, d_final, InputGradients::skip);
  EXPECT_EQ(gs.inputs.size(), 0);
  for (std::size_t k = 0; k < 3; ++k) {
    SCOPED_TRACE(testing::Message() << "skip, layer " << k);
    EXPECT_TRUE(identical(gs.layers[k].kernel, g.layers[k].kernel));
    EXPECT_TRUE(identical(gs.layers[k].bias, g.layers[k].bias));
    EXPECT_TRUE(identical(gs.initial_state.layers[k].c, g.initial_state.layers[k].c));
    EXPECT_TRUE(identical(gs.initial_state.layers[k].h, g.initial_state.layers[k].h));
    EXPECT_LE(max_gradient_error(stack.layer(k).kernel(), gs.layers[k].kernel, loss, kStep), 1e-6);
    EXPECT_LE(max_gradient_error(stack.layer(k).bias(), gs.layers[k].bias, loss, kStep), 1e-6);
  }
  EXPECT_TRUE(identical(gs.layers[1].w_f_diag, g.layers[1].w_f_diag));
  EXPECT_TRUE(identical(gs.layers[1].projection, g.layers[1].projection));
}

TEST(Stacked, InferenceEqualsLayersChainedByHand) {
  Rng rng(2);
  std::vector<GRUCell<float>> layers = {{3, 5, GRUVariant::reset_after}, {5, 4, GRUVariant::reset_after}};
  for (auto& l : layers) l.reset_parameters(rng);
  const StackedCell<GRUCell<float>> stack(layers, /*dropout=*/0.5);  // inference: nothing dropped
  const auto x = random_tensor<float>(7, 4, 3, rng);
  const std::vector<int> lengths = {7, 0, 3, 5};
  const auto fwd = dynamic_rnn(stack, x, lengths);
  const auto first = dynamic_rnn(layers[0], x, lengths);
  const auto second = dynamic_rnn(layers[1], first.outputs, lengths);
  EXPECT_TRUE(identical(fwd.outputs, second.outputs));
  EXPECT_TRUE(identical(fwd.final_state.layers[0].h, first.final_state.h));
  EXPECT_TRUE(identical(fwd.final_state.layers[1].h, second.final_state.h));
  EXPECT_EQ(fwd.cache.masks[0].size(), 0);
}

TEST(Stacked, DropoutMasksAreSeededAndScaled) {
  Rng rng(3);
  std::vector<RNNCell<float>> layers = {{2, 64}, {64, 8}};
  StackedCell<RNNCell<float>> stack(layers, 0.25, 99);
  stack.set_training(true);
  const auto x = random_tensor<float>(20, 30, 2, rng);
  const std::vector<int> lengths(30, 20);
  const auto a = dynamic_rnn(stack, x, lengths);
  const auto b = dynamic_rnn(stack, x, lengths);  // the generator moved on
  stack.rng() = Rng(99);
  const auto c = dynamic_rnn(stack, x, lengths);  // reseeded: the first masks again
  EXPECT_TRUE(identical(a.cache.masks[0], c.cache.masks[0]));
  EXPECT_FALSE(identical(a.cache.masks[0], b.cache.masks[0]));
  const auto& m = a.cache.masks[0];
  const double dropped = double((m.array() == 0).count()) / double(m.size());
  EXPECT_NEAR(dropped, 0.25, 0.02);  // 38400 draws: 6 standard deviations is 0.013
  EXPECT_TRUE(((m.array() == 0) || (m.array() == 1 / 0.75f)).all());
}

// Layers that never write their inputs read the stack's packed inputs and the outputs of the
// layer below where they are (views into the same cache), unless dropout drew a mask. A copy
// of the result has its own; its backward is the original's after the original is gone. A
// forward that throws leaves no view behind.
TEST(Stacked, LayersReadTheirInputsWhereTheyAre) {
  Rng rng(21);
  std::vector<LSTMCell<double>> layers = {{3, 4}, {4, 5}, {5, 2}};
  for (auto& l : layers) l.for_each_parameter([&](const char*, auto& p) { fill_uniform(p, rng, 0.8); });
  Stack stack(std::move(layers), /*dropout=*/0.4, 5);
  const auto x = random_tensor<double>(6, 5, 3, rng);
  const auto dy = random_tensor<double>(6, 5, 2, rng);
  const std::vector<int> lengths = {6, 3, 0, 1, 6};
  DynamicRNNGradients<Stack> want(stack);
  DynamicRNNResult<Stack> copy;
  {
    const auto fwd = dynamic_rnn(stack, x, lengths);  // inference mode: nothing dropped
    EXPECT_TRUE(fwd.cache.layers[0].x.is_view());
    EXPECT_EQ(fwd.cache.layers[0].x.data(), fwd.cache.x.data());
    for (std::size_t k = 1; k < 3; ++k) {
      EXPECT_TRUE(fwd.cache.layers[k].x.is_view()) << k;
      EXPECT_EQ(fwd.cache.layers[k].x.data(), fwd.cache.layers[k - 1].h.data()) << k;
    }
    dynamic_rnn_backward(stack, fwd, dy, stack.zero_state(5), want);
    copy = fwd;
  }
  for (const auto& layer : copy.cache.layers) EXPECT_FALSE(layer.x.is_view());
  const auto got = dynamic_rnn_backward(stack, copy, dy);
  for (std::size_t k = 0; k < 3; ++k) {
    EXPECT_TRUE(identical(got.layers[k].kernel, want.layers[k].kernel)) << k;
    EXPECT_TRUE(identical(got.layers[k].bias, want.layers[k].bias)) << k;
  }
  EXPECT_TRUE(identical(got.inputs, want.inputs));

  stack.set_training(true);  // masks drawn: the layers above take their own masked copies
  auto dropped = dynamic_rnn(stack, x, lengths);
  EXPECT_TRUE(dropped.cache.layers[0].x.is_view());
  EXPECT_FALSE(dropped.cache.layers[1].x.is_view());
  EXPECT_FALSE(dropped.cache.layers[2].x.is_view());

  stack.set_training(false);
  dynamic_rnn(stack, x, lengths, stack.zero_state(5), dropped);
  ASSERT_TRUE(dropped.cache.layers[1].x.is_view());
  auto bad = stack.zero_state(4);  // the wrong batch: refused before any layer runs
  EXPECT_THROW(stack.forward(dropped.schedule, bad, dropped.cache, dropped.sorted_final), std::invalid_argument);
  for (const auto& layer : dropped.cache.layers) EXPECT_FALSE(layer.x.is_view());
}

// The bottom layer skips its input gradient; the layers above still pass theirs down, so
// every layer's parameter gradients are unchanged (with dropout masks: the test above).
TEST(Stacked, SkippingInputGradientsChangesNothingElse) {
  Rng rng(14);
  std::vector<LSTMCell<double>> layers = {{3, 4}, {4, 5}, {5, 2}};
  for (auto& l : layers) l.for_each_parameter([&](const char*, auto& p) { fill_uniform(p, rng, 0.8); });
  const Stack stack(std::move(layers));
  expect_skipping_input_gradients_changes_nothing_else(stack, 6, 5, rng);
}

// A GRU forward and a vanilla RNN backward: each direction's own cell type.
TEST(Bidirectional, GradientsMatchFiniteDifferences) {
  constexpr double kStep = 1e-5;
  Rng rng(4);
  GRUCell<double> fw(3, 4, GRUVariant::reset_before);
  RNNCell<double> bw(3, 2);
  fw.for_each_parameter([&](const char*, auto& p) { fill_uniform(p, rng, 0.8); });
  bw.for_each_parameter([&](const char*, auto& p) { fill_uniform(p, rng, 0.8); });
  auto x = random_tensor<double>(6, 5, 3, rng);
  const std::vector<int> lengths = {6, 3, 0, 1, 5};
  HiddenState<double> s_fw{random_matrix<double>(5, 4, rng)}, s_bw{random_matrix<double>(5, 2, rng)};
  const auto w = random_tensor<double>(6, 5, 6, rng);
  const auto loss = [&] {
    const auto r = bidirectional_dynamic_rnn(fw, bw, x, lengths, s_fw, s_bw);
    return dot(concat_outputs(r), w) + r.fw.final_state.h.sum() + 3 * r.bw.final_state.h.sum();
  };
  const auto r = bidirectional_dynamic_rnn(fw, bw, x, lengths, s_fw, s_bw);
  Tensor3<double> d_fw, d_bw;
  split_outputs(w, 4, 2, d_fw, d_bw);
  BidirectionalGradients<GRUCell<double>, RNNCell<double>> g(fw, bw);
  HiddenState<double> d_final_fw{Matrix<double>::Ones(5, 4)}, d_final_bw{Matrix<double>::Constant(5, 2, 3)};
  bidirectional_dynamic_rnn_backward(fw, bw, r, d_fw, d_bw, d_final_fw, d_final_bw, g);
  EXPECT_LE(max_gradient_error(fw.kernel(), g.fw.kernel, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(fw.bias(), g.fw.bias, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(bw.kernel(), g.bw.kernel, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(bw.bias(), g.bw.bias, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(x, g.inputs, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(s_fw.h, g.fw.initial_state.h, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(s_bw.h, g.bw.initial_state.h, loss, kStep), 1e-6);

  // InputGradients::skip: the same parameter and initial-state gradients, no input gradient.
  BidirectionalGradients<GRUCell<double>, RNNCell<double>> skipped(fw, bw);
  bidirectional_dynamic_rnn_backward(fw, bw, r, d_fw, d_bw, d_final_fw, d_final_bw, skipped);  // fills inputs
  skipped.fw.setZero();
  skipped.bw.setZero();
  bidirectional_dynamic_rnn_backward(fw, bw, r, d_fw, d_bw, d_final_fw, d_final_bw, skipped, InputGradients::skip);
  EXPECT_EQ(skipped.inputs.size(), 0);
  EXPECT_EQ(skipped.fw.inputs.size(), 0);
  EXPECT_EQ(skipped.bw.inputs.size(), 0);
  EXPECT_TRUE(identical(skipped.fw.kernel, g.fw.kernel));
  EXPECT_TRUE(identical(skipped.fw.bias, g.fw.bias));
  EXPECT_TRUE(identical(skipped.bw.kernel, g.bw.kernel));
  EXPECT_TRUE(identical(skipped.bw.bias, g.bw.bias));
  EXPECT_TRUE(identical(skipped.fw.initial_state.h, g.fw.initial_state.h));
  EXPECT_TRUE(identical(skipped.bw.initial_state.h, g.bw.initial_state.h));
  EXPECT_LE(max_gradient_error(fw.kernel(), skipped.fw.kernel, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(bw.kernel(), skipped.bw.kernel, loss, kStep), 1e-6);
}

TEST(Bidirectional, BackwardDirectionReadsEachRowReversedWithoutPadding) {
  // A row of length 2 inside T = 4: the backward cell must see x(1), x(0) and nothing else,
  // so its output at step 0 equals a forward run over the reversed pair.
  Rng rng(5);
  RNNCell<double> fw(1, 3), bw(1, 3);
  bw.reset_parameters(rng);
  Tensor3<double> x(4, 1, 1);
  x.setValues({{{0.5}}, {{-1.0}}, {{1e6}}, {{std::numeric_limits<double>::quiet_NaN()}}});
  const auto r = bidirectional_dynamic_rnn(fw, bw, x, {2});
  Tensor3<double> pair(2, 1, 1);
  pair.setValues({{{-1.0}}, {{0.5}}});
  const auto alone = dynamic_rnn(bw, pair, {2});
  for (Index k = 0; k < 3; ++k) {
    EXPECT_EQ(r.bw.outputs(0, 0, k), alone.outputs(1, 0, k));  // step 0 is read last
    EXPECT_EQ(r.bw.outputs(1, 0, k), alone.outputs(0, 0, k));
    EXPECT_EQ(r.bw.outputs(2, 0, k), 0.0);
    EXPECT_EQ(r.bw.outputs(3, 0, k), 0.0);
  }
  EXPECT_TRUE(identical(r.bw.final_state.h, alone.final_state.h));
}

TEST(ReverseSequences, ReversesValidStepsOnlyAndIsItsOwnInverse) {
  Tensor3<int> x(3, 2, 1);
  x.setValues({{{1}, {4}}, {{2}, {5}}, {{3}, {6}}});
  const Tensor3<int> original = x;
  reverse_sequences(x, {3, 2});
  EXPECT_EQ(x(0, 0, 0), 3);
  EXPECT_EQ(x(2, 0, 0), 1);
  EXPECT_EQ(x(0, 1, 0), 5);
  EXPECT_EQ(x(1, 1, 0), 4);
  EXPECT_EQ(x(2, 1, 0), 6);  // padding stays
  reverse_sequences(x, {3, 2});
  EXPECT_TRUE(identical(x, original));
  expect_invalid_argument([&] { reverse_sequences(x, {4, 0}); }, {"reverse_sequences", "'lengths'", "lengths[0] = 4"});
}

TEST(Topologies, BadArguments) {
  expect_invalid_argument([] { Stack(std::vector<LSTMCell<double>>{}); }, {"StackedCell", "'layers'", "at least one"});
  expect_invalid_argument([] { Stack({{3, 4}, {5, 4}}); },
                          {"StackedCell", "'layers'", "layers[1].input_size() = 5 after output_size 4"});
  expect_invalid_argument([] { Stack({{3, 4}}, 1.0); }, {"StackedCell", "'dropout'", "in [0, 1)", "1.0"});
  const Stack stack({{3, 4}, {4, 4}});
  Rng rng(6);
  const auto x = random_tensor<double>(2, 2, 3, rng);
  auto s0 = stack.zero_state(2);
  s0.layers.pop_back();
  expect_invalid_argument([&] { dynamic_rnn(stack, x, {2, 1}, s0); },
                          {"dynamic_rnn", "'initial_state'", "with 2 layers (one per layer)", "got 1"});
  s0 = stack.zero_state(2);
  s0.layers[1].h.resize(2, 3);
  expect_invalid_argument([&] { dynamic_rnn(stack, x, {2, 1}, s0); },
                          {"'initial_state.h'", "[2, 4]", "[2, 3]", "(layer 1)"});
  Tensor3<double> a, b;
  expect_invalid_argument([&] { split_outputs(random_tensor<double>(2, 2, 5, rng), 4, 2, a, b); },
                          {"split_outputs", "'d_concat'", "[2, 2, 6]", "[2, 2, 5]"});
}

TEST(Stacked, CheckpointNamesLayers) {
  Stack stack({{3, 4}, {4, 4}});
  std::vector<std::string> names;
  stack.for_each_parameter([&](const char* name, auto&) { names.push_back(name); });
  EXPECT_EQ(names, (std::vector<std::string>{"layer0/kernel", "layer0/bias", "layer1/kernel", "layer1/bias"}));
  EXPECT_EQ(stack.description(),
            "StackedCell[LSTMCell(input_size=3, hidden_size=4); LSTMCell(input_size=4, hidden_size=4)]");
}

}  // namespace
}  // namespace dynrnn::test
