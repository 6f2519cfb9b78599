// SequenceModel and fit(): the model's step against the same step written by hand with the
// low-level API (bit for bit), fit() with its callbacks, resumption, SIGINT, and bad input.
#include "support.hpp"

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iterator>

namespace dynrnn::test {
namespace {

using Scalar = float;

// A random token batch: lengths in [0, T], ids in [0, V), labels per sequence or per step.
SequenceBatch<Scalar> token_batch(Rng& rng, Index T, Index B, int V, int classes, bool per_step) {
  SequenceBatch<Scalar> b;
  b.lengths.resize(std::size_t(B));
  for (int& len : b.lengths) len = int(uniform_int(rng, 0, T + 1));
  b.lengths[0] = int(T);  // the padded length is T
  b.tokens.assign(std::size_t(T * B), 0);
  for (Index t = 0; t < T; ++t)
    for (Index r = 0; r < B; ++r) b.tokens[std::size_t(t * B + r)] = int(uniform_int(rng, 0, V));
  b.labels.resize(std::size_t(per_step ? T * B : B));
  for (int& y : b.labels) y = int(uniform_int(rng, 0, classes));
  return b;
}

SequenceBatch<Scalar> feature_batch(Rng& rng, Index T, Index B, Index I) {
  SequenceBatch<Scalar> b;
  b.lengths.resize(std::size_t(B));
  for (int& len : b.lengths) len = int(uniform_int(rng, 1, T + 1));
  b.lengths[0] = int(T);
  b.features = random_tensor<Scalar>(T, B, I, rng);
  return b;
}

// Classifier: tokens -> Embedding -> LSTM -> last output -> Dense -> softmax cross-entropy,
// RMSProp with global-norm clipping, written with the low-level API as the README teaches.
TEST(SequenceModel, ClassifierStepIsTheHandWrittenStep) {
  constexpr Index T = 7, B = 9, V = 5, D = 3, H = 12, C = 4;
  const Scalar clip = 0.5f;
  SequenceModel<LSTMCell<Scalar>> model(Input::tokens(V, D), LSTMCell<Scalar>(D, H), Output::classes(C), 11);
  model.set_optimizer(RMSProp<Scalar>(0.05f)).set_clip_norm(clip);

  // The same weights, drawn in the same order: embedding, cell, head.
  Embedding<Scalar> embedding(V, D);
  LSTMCell<Scalar> lstm(D, H);
  Dense<Scalar> dense(H, C);
  Rng init(11);
  embedding.reset_parameters(init);
  lstm.reset_parameters(init);
  dense.reset_parameters(init);
  ASSERT_TRUE(identical(model.cell().kernel(), lstm.kernel()));
  RMSProp<Scalar> opt(0.05f);

  Rng data(2);
  for (int step = 0; step < 5; ++step) {
    const auto batch = token_batch(data, T, B, V, C, false);
    const Scalar model_loss = model.train_step(batch);

    const auto x = embedding.forward_sequences(batch.tokens, T, B);
    const auto fwd = dynamic_rnn(lstm, x, batch.lengths);
    const auto last = gather_last_outputs(fwd.outputs, batch.lengths);
    const auto ce = softmax_cross_entropy(dense.forward(last), batch.labels);
    auto d_dense = dense.make_gradients();
    const auto d_last = dense.backward(last, ce.d_logits, d_dense);
    auto d_lstm = dynamic_rnn_backward(lstm, fwd, gather_last_outputs_backward(d_last, batch.lengths, T));
    auto d_embedding = embedding.make_gradients();
    embedding.backward_sequences(batch.tokens, d_lstm.inputs, d_embedding);
    clip_by_global_norm(clip, d_lstm, d_dense, d_embedding);
    opt.apply(lstm, d_lstm);
    opt.apply(dense, d_dense);
    opt.apply(embedding, d_embedding);

    EXPECT_EQ(model_loss, ce.loss) << "step " << step;
    EXPECT_TRUE(identical(model.cell().kernel(), lstm.kernel())) << "step " << step;
    EXPECT_TRUE(identical(model.cell().bias(), lstm.bias())) << "step " << step;
    EXPECT_TRUE(identical(model.head().weight(), dense.weight())) << "step " << step;
    EXPECT_TRUE(identical(model.embedding()->table(), embedding.table())) << "step " << step;
  }
  EXPECT_EQ(model.progress().step, 5);
}

// Per-step model: features -> two LSTM layers with dropout -> Dense at every step ->
// per-step softmax cross-entropy, Adam.
TEST(SequenceModel, PerStepStepIsTheHandWrittenStep) {
  constexpr Index T = 6, B = 8, I = 3, H = 10, C = 5;
  using Stack = StackedCell<LSTMCell<Scalar>>;
  const auto make_stack = [] { return Stack({LSTMCell<Scalar>(I, H), LSTMCell<Scalar>(H, H)}, 0.3, 77); };
  SequenceModel<Stack> model(Input::features(I), make_stack(), Output::classes_per_step(C), 5);
  model.set_optimizer(Adam<Scalar>(0.01f));

  Stack stack = make_stack();
  Dense<Scalar> dense(H, C);
  Rng init(5);
  stack.reset_parameters(init);
  dense.reset_parameters(init);
  Adam<Scalar> opt(0.01f);

  Rng data(3);
  for (int step = 0; step < 5; ++step) {
    auto batch = feature_batch(data, T, B, I);
    batch.labels.resize(std::size_t(T * B));
    for (int& y : batch.labels) y = int(uniform_int(data, 0, C));
    const Scalar model_loss = model.train_step(batch);

    stack.set_training(true);
    const auto fwd = dynamic_rnn(stack, batch.features, batch.lengths);
    Tensor3<Scalar> logits(T, B, C);
    detail::as_matrix(logits) = dense.forward(detail::as_matrix(fwd.outputs));
    const auto ce = sequence_softmax_cross_entropy(logits, batch.labels, batch.lengths);
    auto d_dense = dense.make_gradients();
    Tensor3<Scalar> d_outputs(T, B, H);
    detail::as_matrix(d_outputs) = dense.backward(detail::as_matrix(fwd.outputs), detail::as_matrix(ce.d_logits), d_dense);
    const auto d_stack = dynamic_rnn_backward(stack, fwd, d_outputs, InputGradients::skip);
    opt.apply(stack, d_stack);
    opt.apply(dense, d_dense);

    EXPECT_EQ(model_loss, ce.loss) << "step " << step;
    for (std::size_t k = 0; k < 2; ++k)
      EXPECT_TRUE(identical(model.cell().layer(k).kernel(), stack.layer(k).kernel())) << "step " << step;
    EXPECT_TRUE(identical(model.head().weight(), dense.weight())) << "step " << step;
  }
  // Inference mode: no dropout, so predictions equal the cell's deterministic forward pass.
  auto batch = feature_batch(data, T, B, I);
  const Tensor3<Scalar> y = model.predict_steps(batch);
  stack.set_training(false);
  const auto fwd = dynamic_rnn(stack, batch.features, batch.lengths);
  const Matrix<Scalar> expected = dense.forward(detail::as_matrix(fwd.outputs));
  for (Index b = 0; b < B; ++b)
    for (Index t = 0; t < T; ++t)
      for (Index k = 0; k < C; ++k)
        EXPECT_EQ(y(t, b, k), t < batch.lengths[std::size_t(b)] ? expected(t * B + b, k) : 0.0f);
}

// Regression on the last step: features -> GRU -> Dense -> mean squared error, SGD.
TEST(SequenceModel, RegressionStepIsTheHandWrittenStep) {
  constexpr Index T = 5, B = 6, I = 2, H = 7, K = 2;
  SequenceModel<GRUCell<Scalar>> model(Input::features(I), GRUCell<Scalar>(I, H, GRUVariant::reset_after), Output::values(K), 9);
  SGDOptions<Scalar> o;
  o.learning_rate = 0.1f;
  o.momentum = 0.9f;
  model.set_optimizer(SGD<Scalar>(o));
  GRUCell<Scalar> gru(I, H, GRUVariant::reset_after);
  Dense<Scalar> dense(H, K);
  Rng init(9);
  gru.reset_parameters(init);
  dense.reset_parameters(init);
  SGD<Scalar> opt(o);

  Rng data(4);
  for (int step = 0; step < 5; ++step) {
    auto batch = feature_batch(data, T, B, I);
    batch.targets = random_matrix<Scalar>(B, K, data);
    const Scalar model_loss = model.train_step(batch);

    const auto fwd = dynamic_rnn(gru, batch.features, batch.lengths);
    const auto last = gather_last_outputs(fwd.outputs, batch.lengths);
    const auto mse = mean_squared_error(dense.forward(last), batch.targets);
    auto d_dense = dense.make_gradients();
    const auto d_last = dense.backward(last, mse.d_predictions, d_dense);
    const auto d_gru = dynamic_rnn_backward(gru, fwd, gather_last_outputs_backward(d_last, batch.lengths, T),
                                            InputGradients::skip);
    opt.apply(gru, d_gru);
    opt.apply(dense, d_dense);
    EXPECT_EQ(model_loss, mse.loss) << "step " << step;
    EXPECT_TRUE(identical(model.cell().kernel(), gru.kernel())) << "step " << step;
    EXPECT_TRUE(identical(model.head().bias(), dense.bias())) << "step " << step;
  }
  const Matrix<Scalar> y = model.predict(feature_batch(data, T, B, I));
  EXPECT_EQ(y.rows(), B);
  EXPECT_EQ(y.cols(), K);
}

// evaluate(): the loss of a forward pass without an update, and the argmax accuracy.
TEST(SequenceModel, EvaluateCountsCorrectPredictions) {
  SequenceModel<RNNCell<Scalar>> model(Input::tokens(4, 3), RNNCell<Scalar>(3, 6), Output::classes(3), 2);
  model.set_optimizer(RMSProp<Scalar>(0.01f));
  Rng data(8);
  auto batch = token_batch(data, 5, 12, 4, 3, false);
  const Matrix<Scalar> logits = model.predict(batch);
  int correct = 0;
  for (Index b = 0; b < 12; ++b) {
    Index best;
    logits.row(b).maxCoeff(&best);
    correct += best == batch.labels[std::size_t(b)];
  }
  const Matrix<Scalar> table = model.embedding()->table();
  const Metrics m = model.evaluate(batch);
  EXPECT_DOUBLE_EQ(m.accuracy, correct / 12.0);
  EXPECT_EQ(m.count, 12);
  EXPECT_DOUBLE_EQ(m.loss, double(softmax_cross_entropy(logits, batch.labels).loss));
  EXPECT_TRUE(identical(model.embedding()->table(), table));  // nothing trained
  EXPECT_EQ(model.progress().step, 0);
}

TEST(SequenceModel, BadInputNamesTheArgument) {
  using Model = SequenceModel<LSTMCell<Scalar>>;
  expect_invalid_argument([] { Model(Input::features(3), LSTMCell<Scalar>(4, 8), Output::classes(2)); },
                          {"input.size", "the cell's input size 4", "got 3"});
  expect_invalid_argument([] { Model(Input::features(4), LSTMCell<Scalar>(4, 8), Dense<Scalar>(6, 2), Output::classes(2)); },
                          {"head", "output width 8", "input size 6"});
  expect_invalid_argument([] { Model(Input::features(4), LSTMCell<Scalar>(4, 8), Dense<Scalar>(8, 3), Output::classes(2)); },
                          {"head", "output.size = 2", "got 3"});
  expect_invalid_argument([] { Model(Input::features(4), LSTMCell<Scalar>(4, 8), Output::classes(0)); },
                          {"output.size", "got 0"});

  Model model(Input::tokens(5, 4), LSTMCell<Scalar>(4, 8), Output::classes(3));
  Rng rng(1);
  auto batch = token_batch(rng, 6, 4, 5, 3, false);
  EXPECT_THROW(model.train_step(batch), std::logic_error);  // no optimizer yet
  model.set_optimizer(Adam<Scalar>(0.01f));
  const Matrix<Scalar> kernel = model.cell().kernel();

  auto wrong = batch;
  wrong.labels.pop_back();
  expect_invalid_argument([&] { model.train_step(wrong); }, {"batch.labels", "4 class ids", "got 3"});
  wrong = batch;
  wrong.labels[2] = 3;
  expect_invalid_argument([&] { model.train_step(wrong); }, {"labels", "[0, 3)"});
  wrong = batch;
  wrong.lengths[1] = 7;  // longer than the 6 steps of tokens
  expect_invalid_argument([&] { model.train_step(wrong); }, {"batch.tokens"});
  wrong = batch;
  wrong.lengths[1] = -1;
  expect_invalid_argument([&] { model.train_step(wrong); }, {"lengths", "-1"});
  wrong = batch;
  wrong.tokens[0] = 9;
  expect_invalid_argument([&] { model.train_step(wrong); }, {"ids", "9"});
  EXPECT_TRUE(identical(model.cell().kernel(), kernel));  // nothing changed
  expect_invalid_argument([&] { model.predict_steps(batch); }, {"model", "Output::Head::last_step"});

  // Another kind of optimiser assigned through optimizer() has no compiled update: refused
  // before anything changes, until set_optimizer chooses it.
  *model.optimizer() = RMSProp<Scalar>(0.01f);
  const std::vector<std::string> refused = {"replaced through optimizer(); choose it with set_optimizer"};
  expect_throw<std::logic_error>([&] { model.train_step(batch); }, refused);
  Checkpoint<Scalar> checkpoint;
  expect_throw<std::logic_error>([&] { model.add_to(checkpoint); }, refused);
  EXPECT_TRUE(identical(model.cell().kernel(), kernel));
  EXPECT_EQ(model.progress().step, 0);
  model.set_optimizer(RMSProp<Scalar>(0.01f));
  model.train_step(batch);
  EXPECT_FALSE(identical(model.cell().kernel(), kernel));

  Model features(Input::features(4), LSTMCell<Scalar>(4, 8), Output::values(2));
  features.set_optimizer(SGD<Scalar>(0.1f));
  auto fb = feature_batch(rng, 5, 3, 4);
  fb.targets = Matrix<Scalar>::Zero(3, 3);
  expect_invalid_argument([&] { features.train_step(fb); }, {"batch.targets", "[3, 2]", "[3, 3]"});
  fb.targets = Matrix<Scalar>::Zero(3, 2);
  fb.features = random_tensor<Scalar>(5, 3, 2, rng);
  expect_invalid_argument([&] { features.train_step(fb); }, {"batch.features"});
}

// A dataset of count-the-ones sequences: tokens 0/1, label = number of ones.
SequenceDataset<Scalar> ones_dataset(std::size_t n, std::uint64_t seed) {
  SequenceDataset<Scalar> d;
  Rng rng(seed);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<int> bits(std::size_t(uniform_int(rng, 1, 8)));
    int ones = 0;
    for (int& bit : bits) ones += bit = int(uniform_int(rng, 0, 2));
    d.add(bits, ones);
  }
  return d;
}

using OnesModel = SequenceModel<LSTMCell<Scalar>>;

std::unique_ptr<OnesModel> ones_model(Scalar lr = 0.02f) {
  auto m = std::make_unique<OnesModel>(Input::tokens(2, 2), LSTMCell<Scalar>(2, 16), Output::classes(8), 3);
  m->set_optimizer(Adam<Scalar>(lr));
  return m;
}

FitOptions quiet(std::int64_t epochs) {
  FitOptions o;
  o.epochs = epochs;
  o.batch_size = 16;
  o.verbose = false;
  return o;
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "dynrnn_model_" + name; }

// Stops after a given number of steps, as an interruption would.
struct StopAt : FitCallback {
  std::int64_t at;
  explicit StopAt(std::int64_t step) : at(step) {}
  void on_step_end(const FitStep& s, FitControl& c) override {
    if (s.step == at) {
      c.stop = true;
      c.reason = "test";
    }
  }
};

TEST(Fit, LearnsAndLogsEveryStepAndEpoch) {
  const auto train = ones_dataset(200, 1), validation = ones_dataset(100, 2);
  auto model = ones_model();
  const double before = model->evaluate(validation).loss;
  const std::string csv_path = temp_path("log.csv");
  CsvLog csv(csv_path);
  const FitResult r = fit(*model, train, validation, quiet(3), {&csv});
  EXPECT_EQ(r.epochs, 3);
  EXPECT_EQ(r.steps, 3 * 13);  // ceil(200 / 16) batches per epoch
  EXPECT_FALSE(r.interrupted);
  ASSERT_TRUE(r.has_validation);
  EXPECT_LT(r.validation.loss, before);
  std::ifstream in(csv_path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "step,epoch,train_loss,validation_loss,validation_accuracy");
  int steps = 0, epochs = 0;
  while (std::getline(in, line)) (line.find(",,") != std::string::npos && line.back() == ',' ? steps : epochs)++;
  EXPECT_EQ(steps, 39);
  EXPECT_EQ(epochs, 3);
  std::remove(csv_path.c_str());
}

TEST(Fit, EarlyStoppingEndsWhenValidationStopsImproving) {
  const auto train = ones_dataset(64, 1), validation = ones_dataset(32, 2);
  auto model = ones_model(0.0f);  // a learning rate of 0: the validation loss never improves
  EarlyStopping<LSTMCell<Scalar>> early(*model, 2);
  const FitResult r = fit(*model, train, validation, quiet(10), {&early});
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.epochs, 3);  // the first sets the best, two more without improvement
  EXPECT_NE(r.reason.find("early stopping"), std::string::npos);
}

// Stopped after 17 steps (inside the second epoch), saved, loaded into a fresh model and
// continued: the same parameters, optimiser state and log as a run that never stopped.
TEST(Fit, ResumesBitForBit) {
  const auto train = ones_dataset(150, 1), validation = ones_dataset(40, 2);
  auto whole = ones_model();
  Checkpoint<Scalar> whole_ckpt;
  whole->add_to(whole_ckpt);
  fit(*whole, train, validation, quiet(3));

  const std::string path = temp_path("resume.safetensors");
  {
    auto first = ones_model();
    Checkpoint<Scalar> ckpt;
    first->add_to(ckpt);
    CheckpointEvery<Scalar> saver(ckpt, first->progress().step, path, 0);
    StopAt stop(17);
    const FitResult r = fit(*first, train, validation, quiet(3), {&stop, &saver});
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.steps, 17);
  }
  auto second = ones_model();
  Checkpoint<Scalar> ckpt;
  second->add_to(ckpt);
  EXPECT_EQ(ckpt.load(path), 17);
  EXPECT_EQ(second->progress().epoch, 1);
  EXPECT_EQ(second->progress().batch_in_epoch, 7);  // 10 batches per epoch
  const FitResult r = fit(*second, train, validation, quiet(3));
  EXPECT_EQ(r.steps, 30);
  EXPECT_EQ(ckpt.to_bytes(r.steps), whole_ckpt.to_bytes(whole->progress().step));
  std::remove(path.c_str());
}

// Calls the real SIGINT machinery: the signal arrives during step 5.
struct RaiseSigint : FitCallback {
  void on_step_end(const FitStep& s, FitControl&) override {
    if (s.step == 5) std::raise(SIGINT);
  }
};

TEST(Fit, SigintStopsAfterTheStepAndSaves) {
  const auto train = ones_dataset(100, 1), validation = ones_dataset(20, 2);
  auto model = ones_model();
  Checkpoint<Scalar> ckpt;
  model->add_to(ckpt);
  const std::string path = temp_path("sigint.safetensors");
  std::remove(path.c_str());
  CheckpointEvery<Scalar> saver(ckpt, model->progress().step, path, 1000);
  RaiseSigint raiser;
  const auto previous = std::signal(SIGINT, SIG_IGN);  // fit() must put this back
  const FitResult r = fit(*model, train, validation, quiet(5), {&raiser, &saver});
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.steps, 5);
  EXPECT_EQ(std::signal(SIGINT, previous), SIG_IGN);

  auto resumed = ones_model();
  Checkpoint<Scalar> loaded;
  resumed->add_to(loaded);
  EXPECT_EQ(loaded.load(path), 5);  // nothing lost: the interrupted step is in the file
  EXPECT_TRUE(identical(resumed->cell().kernel(), model->cell().kernel()));
  std::remove(path.c_str());
}

TEST(Fit, BadOptionsAndData) {
  const auto train = ones_dataset(10, 1);
  auto model = ones_model();
  FitOptions o = quiet(1);
  o.batch_size = 0;
  expect_invalid_argument([&] { fit(*model, train, train, o); }, {"options.batch_size", "got 0"});
  expect_invalid_argument([&] { fit(*model, SequenceDataset<Scalar>(), train, quiet(1)); }, {"train", "0 sequences"});
  SequenceDataset<Scalar> wrong;
  wrong.add(std::vector<int>{0, 1, 1}, 9);  // 9 classes do not fit a model of 8
  expect_invalid_argument([&] { fit(*model, wrong, train, quiet(1)); }, {"labels", "[0, 8)"});
  SequenceDataset<Scalar> mixed;
  mixed.add(std::vector<int>{0, 1}, 1);
  expect_invalid_argument([&] { mixed.add(Matrix<Scalar>::Zero(2, 3), 1); }, {"features", "token sequences"});
  expect_invalid_argument([&] { mixed.add(std::vector<int>{0, 1}, std::vector<int>{1}); }, {"step_labels", "2", "got 1"});
}

}  // namespace
}  // namespace dynrnn::test
