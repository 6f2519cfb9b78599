// Every bad input to a public entry point throws std::invalid_argument whose message names
// the argument, what was expected and what was given.
#include "support.hpp"

namespace dynrnn::test {
namespace {

struct Fixture {
  Rng rng{31};
  LSTMCell<double> cell{3, 4};
  Tensor3<double> x = random_tensor<double>(5, 2, 3, rng);
  std::vector<int> lengths{5, 2};
};

TEST(Errors, DynamicRNNInputShape) {
  Fixture f;
  expect_invalid_argument([&] { dynamic_rnn(f.cell, random_tensor<double>(5, 2, 4, f.rng), f.lengths); },
                          {"dynamic_rnn", "'x'", "[5, 2, 3]", "[5, 2, 4]"});
}

TEST(Errors, DynamicRNNLengthCount) {
  Fixture f;
  expect_invalid_argument([&] { dynamic_rnn(f.cell, f.x, {5, 2, 1}); },
                          {"dynamic_rnn", "'lengths'", "size 2", "size 3"});
}

TEST(Errors, DynamicRNNLengthOutOfRange) {
  Fixture f;
  expect_invalid_argument([&] { dynamic_rnn(f.cell, f.x, {6, 2}); },
                          {"'lengths'", "[0, 5]", "lengths[0] = 6"});
  expect_invalid_argument([&] { dynamic_rnn(f.cell, f.x, {5, -1}); },
                          {"'lengths'", "[0, 5]", "lengths[1] = -1"});
}

TEST(Errors, DynamicRNNInitialState) {
  Fixture f;
  LSTMState<double> bad{Matrix<double>::Zero(2, 4), Matrix<double>::Zero(3, 4)};
  expect_invalid_argument([&] { dynamic_rnn(f.cell, f.x, f.lengths, bad); },
                          {"'initial_state.h'", "[2, 4]", "[3, 4]"});
  bad = {Matrix<double>::Zero(2, 5), Matrix<double>::Zero(2, 4)};
  expect_invalid_argument([&] { dynamic_rnn(f.cell, f.x, f.lengths, bad); },
                          {"'initial_state.c'", "[2, 4]", "[2, 5]"});
}

TEST(Errors, CellParametersResizedByTheUser) {
  Fixture f;
  f.cell.kernel().resize(7, 15);
  expect_invalid_argument([&] { dynamic_rnn(f.cell, f.x, f.lengths); },
                          {"'cell.kernel()'", "[7, 16]", "[7, 15]"});
  Fixture g;
  g.cell.bias().resize(3);
  expect_invalid_argument([&] { dynamic_rnn(g.cell, g.x, g.lengths); }, {"'cell.bias()'", "[16, 1]", "[3, 1]"});
}

TEST(Errors, CellConstructor) {
  expect_invalid_argument([] { LSTMCell<float>(0, 4); }, {"LSTMCell", "'input_size'", "positive", "got 0"});
  expect_invalid_argument([] { LSTMCell<float>(2, -1); }, {"'hidden_size'", "got -1"});
}

TEST(Errors, DynamicRNNBackward) {
  Fixture f;
  const auto fwd = dynamic_rnn(f.cell, f.x, f.lengths);
  expect_invalid_argument([&] { dynamic_rnn_backward(f.cell, fwd, random_tensor<double>(5, 2, 3, f.rng)); },
                          {"dynamic_rnn_backward", "'d_outputs'", "[5, 2, 4]", "[5, 2, 3]"});
  const auto d_out = random_tensor<double>(5, 2, 4, f.rng);
  const LSTMState<double> bad{Matrix<double>::Zero(1, 4), Matrix<double>::Zero(2, 4)};
  expect_invalid_argument([&] { dynamic_rnn_backward(f.cell, fwd, d_out, bad); },
                          {"'d_final.c'", "[2, 4]", "[1, 4]"});
  DynamicRNNGradients<LSTMCell<double>> grads;  // default-constructed: empty
  expect_invalid_argument([&] { dynamic_rnn_backward(f.cell, fwd, d_out, f.cell.zero_state(2), grads); },
                          {"'grads.kernel'", "[7, 16]", "[0, 0]"});
  LSTMCell<double> other(2, 4);
  DynamicRNNResult<LSTMCell<double>> foreign = dynamic_rnn(other, random_tensor<double>(5, 2, 2, f.rng), f.lengths);
  expect_invalid_argument([&] { dynamic_rnn_backward(f.cell, foreign, d_out); },
                          {"'forward.cache.x'", "[7, 3]", "[7, 2]"});
}

TEST(Errors, Dense) {
  Dense<double> d(3, 2);
  expect_invalid_argument([] { Dense<double>(3, 0); }, {"Dense", "'output_size'", "got 0"});
  expect_invalid_argument([&] { d.forward(Matrix<double>::Zero(4, 2)); }, {"Dense::forward", "'x'", "[4, 3]", "[4, 2]"});
  auto g = d.make_gradients();
  expect_invalid_argument([&] { d.backward(Matrix<double>::Zero(4, 3), Matrix<double>::Zero(4, 3), g); },
                          {"Dense::backward", "'dy'", "[4, 2]", "[4, 3]"});
  DenseGradients<double> empty;
  expect_invalid_argument([&] { d.backward(Matrix<double>::Zero(4, 3), Matrix<double>::Zero(4, 2), empty); },
                          {"'grads.weight'", "[3, 2]", "[0, 0]"});
}

TEST(Errors, Embedding) {
  Embedding<double> e(2, 3);
  expect_invalid_argument([] { Embedding<double>(0, 3); }, {"Embedding", "'vocab_size'", "got 0"});
  expect_invalid_argument([&] { e.forward({0, 2}); }, {"Embedding::forward", "'ids'", "[0, 2)", "ids[1] = 2"});
  expect_invalid_argument([&] { e.forward({-1}); }, {"'ids'", "ids[0] = -1"});
  expect_invalid_argument([&] { e.forward_sequences({0, 1, 1}, 2, 2); },
                          {"Embedding::forward_sequences", "'ids'", "max_time * batch = 4", "size 3"});
  auto g = e.make_gradients();
  expect_invalid_argument([&] { e.backward({0, 1}, Matrix<double>::Zero(2, 2), g); },
                          {"Embedding::backward", "'dy'", "[2, 3]", "[2, 2]"});
  expect_invalid_argument([&] { e.backward_sequences({0, 1}, Tensor3<double>(1, 3, 3), g); },
                          {"Embedding::backward_sequences", "'ids'", "= 3", "size 2"});
}

TEST(Errors, SoftmaxCrossEntropy) {
  const Matrix<double> z = Matrix<double>::Zero(2, 3);
  expect_invalid_argument([&] { softmax_cross_entropy(z, {0}); },
                          {"softmax_cross_entropy", "'labels'", "size 2", "size 1"});
  expect_invalid_argument([&] { softmax_cross_entropy(z, {0, 3}); }, {"'labels'", "[0, 3)", "labels[1] = 3"});
  expect_invalid_argument([&] { softmax_cross_entropy(Matrix<double>(0, 3), {}); },
                          {"'logits'", "non-empty", "[0, 3]"});
}

TEST(Errors, GatherLastOutputs) {
  const Tensor3<double> out(4, 2, 3);
  expect_invalid_argument([&] { gather_last_outputs(out, {4}); }, {"gather_last_outputs", "'lengths'", "size 2"});
  expect_invalid_argument([&] { gather_last_outputs(out, {4, 5}); }, {"[0, 4]", "lengths[1] = 5"});
  expect_invalid_argument([&] { gather_last_outputs_backward(Matrix<double>(2, 3), {1, 9}, 4); },
                          {"gather_last_outputs_backward", "lengths[1] = 9"});
}

TEST(Errors, RMSProp) {
  auto o = RMSPropOptions<double>::tensorflow(0.1);
  o.decay = 1.0;
  expect_invalid_argument([&] { RMSProp<double> opt(o); }, {"RMSProp", "'decay'", "[0, 1)", "1.0"});
  expect_invalid_argument([&] { RMSProp<double> opt(-0.1); }, {"'learning_rate'", ">= 0", "-0.1"});
  o = RMSPropOptions<double>::pytorch();
  o.momentum = -1;
  expect_invalid_argument([&] { RMSProp<double> opt(o); }, {"'momentum'", ">= 0"});
  o = RMSPropOptions<double>::pytorch();
  o.epsilon = -1;
  expect_invalid_argument([&] { RMSProp<double> opt(o); }, {"'epsilon'", ">= 0"});

  RMSProp<double> opt(0.1);
  Matrix<double> p = Matrix<double>::Zero(3, 2);
  expect_invalid_argument([&] { opt.apply(p, Matrix<double>::Zero(2, 3)); },
                          {"RMSProp::apply", "'grad'", "[3, 2]", "[2, 3]"});
  auto top2 = p.topRows(2);
  opt.apply(top2, Matrix<double>::Ones(2, 2));
  auto top1 = p.topRows(1);  // same address, other shape
  expect_invalid_argument([&] { opt.apply(top1, Matrix<double>::Ones(1, 2)); },
                          {"'param'", "[2, 2]", "reset()", "got [1, 2]"});
}

}  // namespace
}  // namespace dynrnn::test
