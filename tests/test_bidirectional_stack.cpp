// BidirectionalStack (stacked bidirectional layers) and import_pytorch_module: against two-layer
// bidirectional nn.LSTM and nn.GRU modules (tests/data/make_bidirectional_stack_golden.py),
// finite differences in double with dropout, refusals of modules of another shape, and a
// SequenceModel over a stack against the same step written by hand.
#include "golden.hpp"

namespace dynrnn::test {
namespace {


TEST(BidirectionalStack, LSTMModuleMatchesPyTorch) {
  const GoldenFile g("lstm_bistack_golden.safetensors");
  BidirectionalStack<LSTMCell<double>> stack(2, g.I, g.H);
  import_pytorch_module(stack, kData + "/lstm_bistack_pytorch.safetensors");
  EXPECT_EQ(stack.forward_cell(1).input_size(), 2 * g.H);
  const auto r = stack.forward(g.tensor("x", g.I), g.lengths());
  EXPECT_LE(max_relative_error(r.top(), g.tensor("outputs", 2 * g.H)), kGoldenTolerance);

  auto grads = stack.make_gradients();
  stack.backward(r, g.tensor("d_outputs", 2 * g.H), grads);
  for (int k = 0; k < 2; ++k) {
    SCOPED_TRACE(testing::Message() << "layer " << k);
    const std::string l = "_l" + std::to_string(k);
    const Index in = k == 0 ? g.I : 2 * g.H;
    EXPECT_LE(max_relative_error(grads.layers[k].fw.kernel, g.matrix("grad_kernel" + l + "_fw", in + g.H, 4 * g.H)),
              kGoldenTolerance);
    EXPECT_LE(max_relative_error(grads.layers[k].bw.kernel, g.matrix("grad_kernel" + l + "_bw", in + g.H, 4 * g.H)),
              kGoldenTolerance);
    EXPECT_LE(max_relative_error(grads.layers[k].fw.bias, g.vector("grad_bias" + l + "_fw", 4 * g.H)),
              kGoldenTolerance);
    EXPECT_LE(max_relative_error(grads.layers[k].bw.bias, g.vector("grad_bias" + l + "_bw", 4 * g.H)),
              kGoldenTolerance);
  }
  EXPECT_LE(max_relative_error(grads.inputs, g.tensor("grad_x", g.I)), kGoldenTolerance);
}

TEST(BidirectionalStack, GRUModuleMatchesPyTorch) {
  const GoldenFile g("gru_bistack_golden.safetensors");
  BidirectionalStack<GRUCell<double>> stack(2, g.I, g.H, GRUVariant::reset_after);
  import_pytorch_module(stack, kData + "/gru_bistack_pytorch.safetensors");
  const auto r = stack.forward(g.tensor("x", g.I), g.lengths());
  EXPECT_LE(max_relative_error(r.top(), g.tensor("outputs", 2 * g.H)), kGoldenTolerance);
  auto grads = stack.make_gradients();
  stack.backward(r, g.tensor("d_outputs", 2 * g.H), grads);
  EXPECT_LE(max_relative_error(grads.inputs, g.tensor("grad_x", g.I)), kGoldenTolerance);
}

// Three layers with dropout 0.3 between them in training mode: the masks are redrawn from the
// same seed for every evaluation, so the loss is a fixed function of the parameters.
TEST(BidirectionalStack, GradientsWithDropoutMatchFiniteDifferences) {
  constexpr double kStep = 1e-5;
  Rng rng(3);
  BidirectionalStack<LSTMCell<double>> stack(3, 2, 3);
  stack.for_each_parameter([&](const char*, auto& p) { fill_uniform(p, rng, 0.8); });
  stack.set_dropout(0.3);
  stack.set_training(true);
  auto x = random_tensor<double>(5, 4, 2, rng);
  const std::vector<int> lengths = {5, 2, 0, 4};
  const auto w = random_tensor<double>(5, 4, 6, rng);
  const auto run = [&] {
    stack.rng() = Rng(42);
    return stack.forward(x, lengths);
  };
  const auto loss = [&] { return dot(run().top(), w); };
  const auto r = run();
  EXPECT_GT((Eigen::Map<const Eigen::ArrayXd>(r.masks[0].data(), r.masks[0].size()) == 0).count(), 0);
  auto grads = stack.make_gradients();
  stack.backward(r, w, grads);
  for (std::size_t k = 0; k < 3; ++k) {
    SCOPED_TRACE(testing::Message() << "layer " << k);
    EXPECT_LE(max_gradient_error(stack.forward_cell(k).kernel(), grads.layers[k].fw.kernel, loss, kStep), 1e-6);
    EXPECT_LE(max_gradient_error(stack.backward_cell(k).kernel(), grads.layers[k].bw.kernel, loss, kStep), 1e-6);
    EXPECT_LE(max_gradient_error(stack.backward_cell(k).bias(), grads.layers[k].bw.bias, loss, kStep), 1e-6);
  }
  EXPECT_LE(max_gradient_error(x, grads.inputs, loss, kStep), 1e-6);
  // Padding stays exactly 0 in the outputs and in the input gradient.
  for (Index b = 0; b < 4; ++b)
    for (Index t = lengths[b]; t < 5; ++t) {
      for (Index j = 0; j < 6; ++j) EXPECT_EQ(r.top()(t, b, j), 0.0);
      for (Index j = 0; j < 2; ++j) EXPECT_EQ(grads.inputs(t, b, j), 0.0);
    }
}

TEST(ModuleImport, RefusesAModuleOfAnotherShapeAndChangesNothing) {
  const std::string bistack = kData + "/lstm_bistack_pytorch.safetensors";
  StackedCell<LSTMCell<double>> two_layers({LSTMCell<double>(3, 4), LSTMCell<double>(4, 4)});
  const Matrix<double> kernel = two_layers.layer(0).kernel();
  try {
    import_pytorch_module(two_layers, bistack);
    ADD_FAILURE() << "a bidirectional module went into a one-direction stack";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("bidirectional module"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(identical(two_layers.layer(0).kernel(), kernel));

  BidirectionalStack<LSTMCell<double>> one_layer(1, 3, 4);
  try {
    import_pytorch_module(one_layer, bistack);
    ADD_FAILURE() << "a two-layer module went into a one-layer stack";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("more than the 1 layers"), std::string::npos) << e.what();
  }

  // A one-direction module lacks the reverse tensors; the first layer is not left changed.
  BidirectionalStack<LSTMCell<double>> stack(2, 3, 4);
  const Matrix<double> fw0 = stack.forward_cell(0).kernel();
  EXPECT_THROW(import_pytorch_module(stack, kData + "/lstm_2layer_pytorch.safetensors"), CheckpointError);
  EXPECT_TRUE(identical(stack.forward_cell(0).kernel(), fw0));

  // And the two-layer module imports into the two-layer StackedCell in one call.
  import_pytorch_module(two_layers, kData + "/lstm_2layer_pytorch.safetensors");
  LSTMCell<double> layer1(4, 4);
  import_pytorch_lstm(layer1, kData + "/lstm_2layer_pytorch.safetensors", "", 1);
  EXPECT_TRUE(identical(two_layers.layer(1).kernel(), layer1.kernel()));
}

// The README's way to put a PyTorch encoder under a new head: import into model.cell().
TEST(ModuleImport, IntoAModelsCellInPlace) {
  const GoldenFile g("lstm_bistack_golden.safetensors");
  using Encoder = BidirectionalStack<LSTMCell<double>>;
  SequenceModel<Encoder> model(Input::features(g.I), Encoder(2, g.I, g.H), Output::classes(2));
  const double* storage = model.cell().forward_cell(1).kernel().data();
  import_pytorch_module(model.cell(), kData + "/lstm_bistack_pytorch.safetensors");
  EXPECT_EQ(model.cell().forward_cell(1).kernel().data(), storage);  // written in place
  const auto r = model.cell().forward(g.tensor("x", g.I), g.lengths());
  EXPECT_LE(max_relative_error(r.top(), g.tensor("outputs", 2 * g.H)), kGoldenTolerance);
}

TEST(BidirectionalStack, BadArguments) {
  expect_invalid_argument([] { BidirectionalStack<LSTMCell<double>>({}, {}); }, {"forward", "at least one cell"});
  expect_invalid_argument(
      [] { BidirectionalStack<LSTMCell<double>>({LSTMCell<double>(3, 4), LSTMCell<double>(4, 4)},
                                                {LSTMCell<double>(3, 4), LSTMCell<double>(8, 4)}); },
      {"forward[1]", "input size 8", "got 4"});
  expect_invalid_argument([] { BidirectionalStack<LSTMCell<double>>(0, 3, 4); }, {"layers", "got 0"});
  BidirectionalStack<LSTMCell<double>> stack(1, 3, 4);
  expect_invalid_argument([&] { stack.set_dropout(1.0); }, {"p", "[0, 1)"});
  Rng rng(1);
  expect_invalid_argument([&] { stack.forward(random_tensor<double>(4, 2, 5, rng), {4, 4}); }, {"x"});
}

// A per-step classifier over two bidirectional layers through SequenceModel, against the same
// step written with the stack and the low-level pieces.
TEST(BidirectionalStack, ModelStepIsTheHandWrittenStep) {
  using Stack = BidirectionalStack<LSTMCell<float>>;
  constexpr Index T = 5, B = 6, V = 4, D = 3, H = 5, C = 3;
  SequenceModel<Stack> model(Input::tokens(V, D), Stack(2, D, H), Output::classes_per_step(C), 4);
  model.set_optimizer(Adam<float>(0.01f));
  Embedding<float> embedding(V, D);
  Stack stack(2, D, H);
  Dense<float> dense(2 * H, C);
  Rng init(4);
  embedding.reset_parameters(init);
  stack.reset_parameters(init);
  dense.reset_parameters(init);
  Adam<float> opt(0.01f);

  Rng data(9);
  SequenceBatch<float> batch;
  for (int step = 0; step < 5; ++step) {
    batch.lengths = {5, 1, 3, 0, 4, 2};
    batch.tokens.resize(T * B);
    for (int& id : batch.tokens) id = int(uniform_int(data, 0, V));
    batch.labels.resize(T * B);
    for (int& y : batch.labels) y = int(uniform_int(data, 0, C));
    const float model_loss = model.train_step(batch);

    const auto x = embedding.forward_sequences(batch.tokens, T, B);
    const auto r = stack.forward(x, batch.lengths);
    Tensor3<float> logits(T, B, C);
    detail::as_matrix(logits) = dense.forward(detail::as_matrix(r.top()));
    const auto ce = sequence_softmax_cross_entropy(logits, batch.labels, batch.lengths);
    auto d_dense = dense.make_gradients();
    Tensor3<float> d_top(T, B, 2 * H);
    detail::as_matrix(d_top) = dense.backward(detail::as_matrix(r.top()), detail::as_matrix(ce.d_logits), d_dense);
    auto d_stack = stack.make_gradients();
    stack.backward(r, d_top, d_stack);
    auto d_embedding = embedding.make_gradients();
    embedding.backward_sequences(batch.tokens, d_stack.inputs, d_embedding);
    opt.apply(stack, d_stack);
    opt.apply(dense, d_dense);
    opt.apply(embedding, d_embedding);

    EXPECT_EQ(model_loss, ce.loss) << "step " << step;
    for (std::size_t k = 0; k < 2; ++k) {
      EXPECT_TRUE(identical(model.cell().forward_cell(k).kernel(), stack.forward_cell(k).kernel())) << step;
      EXPECT_TRUE(identical(model.cell().backward_cell(k).kernel(), stack.backward_cell(k).kernel())) << step;
    }
    EXPECT_TRUE(identical(model.embedding()->table(), embedding.table())) << "step " << step;
  }
  Checkpoint<float> ckpt;
  model.add_to(ckpt);  // a stack registers like any cell
  EXPECT_FALSE(ckpt.to_bytes(5).empty());
}

}  // namespace
}  // namespace dynrnn::test
