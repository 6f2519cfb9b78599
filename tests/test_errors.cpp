// Every bad input to a public entry point throws std::invalid_argument whose message names
// the argument, what was expected and what was given.
#include "support.hpp"

#include <cmath>

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
  expect_invalid_argument([] { RNNCell<float>(0, 4); }, {"RNNCell", "'input_size'", "positive", "got 0"});
  expect_invalid_argument([] { RNNCell<float>(2, 0, RNNActivation::relu); }, {"RNNCell", "'hidden_size'", "got 0"});
  expect_invalid_argument([] { GRUCell<float>(-3, 4, GRUVariant::reset_after); },
                          {"GRUCell", "'input_size'", "positive", "got -3"});
  expect_invalid_argument([] { GRUCell<float>(2, 0, GRUVariant::reset_before); }, {"GRUCell", "'hidden_size'", "got 0"});
}

TEST(Errors, GRUAndRNNShapes) {
  Rng rng(3);
  const auto x = random_tensor<double>(5, 2, 3, rng);
  GRUCell<double> gru(3, 4, GRUVariant::reset_after);
  gru.recurrent_bias().resize(4);  // resized by the user
  expect_invalid_argument([&] { dynamic_rnn(gru, x, {5, 1}); },
                          {"dynamic_rnn", "'cell.recurrent_bias()'", "[12, 1]", "[4, 1]"});
  GRUCell<double> before(3, 4, GRUVariant::reset_before);
  const auto fwd = dynamic_rnn(before, x, {5, 1});
  DynamicRNNGradients<GRUCell<double>> grads(before);
  grads.recurrent_bias.resize(12);  // reset_before has no recurrent bias
  expect_invalid_argument([&] { dynamic_rnn_backward(before, fwd, random_tensor<double>(5, 2, 4, rng), before.zero_state(2), grads); },
                          {"dynamic_rnn_backward", "'grads.recurrent_bias'", "[0, 1]", "[12, 1]"});
  RNNCell<double> rnn(3, 4);
  expect_invalid_argument([&] { dynamic_rnn(rnn, x, {5, 1}, HiddenState<double>::zeros(2, 5)); },
                          {"dynamic_rnn", "'initial_state.h'", "[2, 4]", "[2, 5]"});
  expect_invalid_argument([&] { dynamic_rnn(rnn, random_tensor<double>(5, 2, 2, rng), {5, 1}); },
                          {"dynamic_rnn", "'x'", "[5, 2, 3]", "[5, 2, 2]"});
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
  expect_invalid_argument([&] { dynamic_rnn_backward(f.cell, fwd, d_out, static_cast<InputGradients>(2)); },
                          {"dynamic_rnn_backward", "'input_gradients'", "InputGradients::compute or", "2"});
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
  expect_invalid_argument([&] { gather_last_outputs_backward(Matrix<double>(Matrix<double>::Zero(2, 3)), {1, 9}, 4); },
                          {"gather_last_outputs_backward", "lengths[1] = 9"});
}

TEST(Errors, RMSProp) {
  auto o = RMSPropOptions<double>::tensorflow(0.1);
  o.decay = 1.0;
  expect_invalid_argument([&] { RMSProp<double> opt(o); }, {"RMSProp", "'decay'", "[0, 1)", "got 1"});
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
  expect_invalid_argument([&] { opt.set_learning_rate(-1); }, {"RMSProp::set_learning_rate", "'lr'", ">= 0", "-1"});
  expect_invalid_argument([&] { opt.set_learning_rate(std::nan("")); }, {"'lr'", "nan"});
}

TEST(Errors, Threads) {
  expect_invalid_argument([] { set_num_threads(0); }, {"set_num_threads", "'threads'", ">= 1", "got 0"});
  expect_invalid_argument([] { set_num_threads(-3); }, {"'threads'", "got -3"});
}

TEST(Errors, RandomNumbers) {
  Rng rng(1);
  expect_invalid_argument([&] { uniform_int(rng, 3, 3); }, {"uniform_int", "'hi'", "> lo = 3", "got 3"});
  expect_invalid_argument([&] { uniform_int(rng, 5, -5); }, {"uniform_int", "got -5"});
  expect_invalid_argument([&] { uniform(rng, 1.0, 0.5); }, {"uniform", "'hi'", ">= lo", "got 0.5"});
  expect_invalid_argument([&] { uniform(rng, 0.0, INFINITY); }, {"uniform", "finite"});
  Matrix<double> m(2, 2);
  expect_invalid_argument([&] { fill_uniform(m, rng, -1.0); }, {"fill_uniform", "'limit'", ">= 0", "got -1"});
  expect_invalid_argument([&] { fill_uniform(m, rng, std::nan("")); }, {"fill_uniform", "finite"});
}

TEST(Errors, Gemm) {
  Gemm<double> gemm;
  Matrix<double> c(3, 4), a(3, 5), b(5, 4);
  expect_invalid_argument([&] { gemm(c, Matrix<double>(2, 5), Op::N, b, Op::N); },
                          {"Gemm", "'A'", "3 rows", "[2, 5]"});
  expect_invalid_argument([&] { gemm(c, a, Op::T, b, Op::N); }, {"Gemm", "'A'", "[3, 5]"});
  expect_invalid_argument([&] { gemm(c, a, Op::N, Matrix<double>(4, 4), Op::N); }, {"'B'", "[5, 4]", "got [4, 4]"});
  expect_invalid_argument([&] { gemm(c, a, Op::N, b, Op::T); }, {"'B'", "[5, 4]", "[5, 4] transposed"});

  Matrix<double> c1(2, 4), c3(3, 4), k6(6, 2), k5(5, 3), k5b(5, 4);
  expect_invalid_argument([&] { gemm.transposed_pair(c1, k5b, c3, k5, k5b); },
                          {"Gemm::transposed_pair", "'A1'", "[5, 2]", "[5, 4]"});
  expect_invalid_argument([&] { gemm.transposed_pair(c1, k6, c3, k5, k5b); }, {"'A1'", "[5, 2]", "[6, 2]"});
  expect_invalid_argument([&] { gemm.transposed_pair(c1, Matrix<double>(5, 2), c3, k5, Matrix<double>(5, 3)); },
                          {"'C1'", "[2, 3]", "[2, 4]"});
  PackedRightGemm<double> packed;
  packed.pack(b, Op::N);
  expect_invalid_argument([&] { packed(c, Matrix<double>(3, 4)); }, {"PackedRightGemm", "'A'", "5 columns", "[3, 4]"});
  Matrix<double> c2(3, 2);
  expect_invalid_argument([&] { packed(c2, a); }, {"PackedRightGemm", "'C'", "[3, 4]", "[3, 2]"});
}

TEST(Errors, PackedScheduleAndStates) {
  expect_invalid_argument([] { PackedSchedule::build({3, -1}, 3); },
                          {"PackedSchedule", "'lengths'", "[0, 3]", "lengths[1] = -1"});
  expect_invalid_argument([] { PackedSchedule::build({4}, 3); }, {"lengths[0] = 4"});
  expect_invalid_argument([] { PackedSchedule::build({}, -1); }, {"PackedSchedule", "'max_time'", ">= 0", "-1"});
  expect_invalid_argument([] { LSTMState<float>::zeros(-1, 3); }, {"LSTMState::zeros", "'batch'", ">= 0", "-1"});
  expect_invalid_argument([] { LSTMState<float>::zeros(2, -3); }, {"'hidden'", "-3"});
  expect_invalid_argument([] { LSTMCell<float>(2, 3).zero_state(-2); }, {"'batch'", "-2"});
}

TEST(Errors, CellForwardAndBackwardDirectly) {
  Fixture f;
  const PackedSchedule s = PackedSchedule::build(f.lengths, 5);  // P = 7
  LSTMCache<double> cache;
  LSTMState<double> final;
  cache.x = Matrix<double>::Zero(7, 3);
  expect_invalid_argument([&] { f.cell.forward(s, f.cell.zero_state(3), cache, final); },
                          {"LSTMCell::forward", "'s0.c'", "[2, 4]", "[3, 4]"});
  cache.x = Matrix<double>::Zero(6, 3);
  expect_invalid_argument([&] { f.cell.forward(s, f.cell.zero_state(2), cache, final); },
                          {"LSTMCell::forward", "'cache.x'", "[7, 3]", "[6, 3]"});
  cache.x = Matrix<double>::Zero(7, 3);
  f.cell.forward(s, f.cell.zero_state(2), cache, final);
  auto grads = f.cell.make_gradients();
  LSTMState<double> dstate = f.cell.zero_state(2);
  ReusableMatrix<double> dx, dh;
  LSTMBackwardWorkspace<double> ws;
  dh = Matrix<double>::Zero(7, 3);
  expect_invalid_argument([&] { f.cell.backward(s, cache, dh, dstate, grads, &dx, ws); },
                          {"LSTMCell::backward", "'dh'", "[7, 4]", "[7, 3]"});
  LSTMState<double> bad = f.cell.zero_state(1);
  dh = Matrix<double>::Zero(7, 4);
  expect_invalid_argument([&] { f.cell.backward(s, cache, dh, bad, grads, &dx, ws); },
                          {"LSTMCell::backward", "'dstate.c'", "[2, 4]", "[1, 4]"});
}

TEST(Errors, SoftmaxAndLastOutputs) {
  expect_invalid_argument([] { softmax(Matrix<double>(2, 0)); }, {"softmax", "'logits'", "one column", "[2, 0]"});
  expect_invalid_argument([] { gather_last_outputs_backward(Matrix<double>(0, 3), {}, -1); },
                          {"gather_last_outputs_backward", "'max_time'", ">= 0", "-1"});
}

TEST(Errors, SafetensorsWriterAndFiles) {
  safetensors::Writer w;
  const double v[2] = {1, 2};
  w.add("a", {2}, v, 2);
  expect_invalid_argument([&] { w.add("a", {2}, v, 2); }, {"Writer::add", "'name'", "new tensor name", "'a'"});
  expect_invalid_argument([&] { w.add("__metadata__", {2}, v, 2); }, {"'name'", "'__metadata__'"});
  expect_invalid_argument([&] { w.add("b", {3}, v, 2); }, {"Writer::add", "'count'", "must be 3", "got 2"});
  const auto f = safetensors::File::parse(w.bytes(), "mem");
  EXPECT_THROW(f.info("b"), CheckpointError);
  try {
    f.check<double>("a", {2, 1});
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'mem': tensor 'a' has shape [2], expected [2, 1]"), std::string::npos) << e.what();
  }
  try {
    f.check<std::int64_t>("a", {2});
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("dtype F64, expected I32 or I64"), std::string::npos) << e.what();
  }
  const unsigned char byte = 0;
  try {
    write_file_atomically(std::string(::testing::TempDir()) + "/", &byte, 1);
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("names a directory"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dynrnn::test
