// Cells running inference in int8 (Precision::int8, precision/mixed_gemm.hpp), and the
// calibration that finds their inputs' bounds.
//
// The references are independent of the library:
// - an LSTM written here in double whose products take int8 operands quantised by the
//   test's own arithmetic from the int8 scheme's definition (per-column weight scales, the
//   input's scale from its largest magnitude over the valid steps, h's from [-1, 1]);
// - the calibrated bounds against the largest magnitudes computed here;
// - every cell and topology against its own float32 result: within 5e-2, as the issue asks,
//   and above 1e-4, which proves that the products were quantised.
// The fast and the portable paths agree within kPathTolerance (their kernels give the same
// bits; the gate activations are computed two ways).
#include "reduced_precision_support.hpp"
#include "support.hpp"

#include <cstdio>
#include <stdexcept>

namespace dynrnn::test {
namespace {

const std::vector<int> kInt8Lengths = {9, 3, 0, 7, 9, 1};

// Round-half-even of v / scale clamped to [-127, 127], in double.
double quantised(double v, double scale) { return std::nearbyint(std::min(127.0, std::max(-127.0, v / scale))); }

// Rows [first, first + K) of W, quantised column by column with a scale of max |.| / 127:
// the values q(k, j) and the scales s(j).
std::pair<Eigen::MatrixXd, Eigen::VectorXd> quantised_block(const Matrix<float>& W, Index first, Index K) {
  Eigen::MatrixXd q(K, W.cols());
  Eigen::VectorXd s(W.cols());
  for (Index j = 0; j < W.cols(); ++j) {
    double bound = 0;
    for (Index k = 0; k < K; ++k) bound = std::max(bound, std::abs(double(W(first + k, j))));
    s(j) = bound > 0 ? double(float(bound) / 127.0f) : 1.0;
    for (Index k = 0; k < K; ++k) q(k, j) = quantised(W(first + k, j), s(j));
  }
  return {q, s};
}

// TensorFlow's LSTMCell (forget_bias 1) in double with int8 products: x with the scale of
// `x_bound`, h with 1/127. Outputs [T, B, H], zero past each length.
Tensor3<double> reference_int8_lstm(const LSTMCell<float>& cell, const Tensor3<float>& x,
                                    const std::vector<int>& lengths, float x_bound) {
  const Index I = x.dimension(2), H = cell.hidden_size();
  // Named copies, not structured bindings, which a C++17 lambda cannot capture.
  const auto x_block = quantised_block(cell.kernel(), 0, I), h_block = quantised_block(cell.kernel(), I, H);
  const Eigen::MatrixXd &qx = x_block.first, &qh = h_block.first;
  const Eigen::VectorXd &sx = x_block.second, &sh = h_block.second;
  const double x_scale = double(x_bound / 127.0f), h_scale = double(1.0f / 127.0f);
  return reference_lstm(x.dimension(0), x.dimension(1), H, lengths, [&](Index t, Index b, const Eigen::VectorXd& h) {
    Eigen::VectorXd sum_x = Eigen::VectorXd::Zero(4 * H), sum_h = Eigen::VectorXd::Zero(4 * H);
    for (Index k = 0; k < I; ++k) sum_x += quantised(x(t, b, k), x_scale) * qx.row(k).transpose();
    for (Index k = 0; k < H; ++k) sum_h += quantised(h(k), h_scale) * qh.row(k).transpose();
    return Eigen::VectorXd(cell.bias().cast<double>() + (sum_x.array() * sx.array() * x_scale).matrix() +
                           (sum_h.array() * sh.array() * h_scale).matrix());
  });
}

// x with 100 in every padded step: calibration and inference must never look there.
Tensor3<float> padded_input(Index I, Rng& rng, float scale = 1.5f) {
  Tensor3<float> x = random_tensor<float>(9, 6, I, rng);
  x = x * scale;
  for (Index b = 0; b < 6; ++b)
    for (Index t = kInt8Lengths[std::size_t(b)]; t < 9; ++t)
      for (Index k = 0; k < I; ++k) x(t, b, k) = 100.0f;
  return x;
}

// The largest |x| over valid steps.
float valid_bound(const Tensor3<float>& x, const std::vector<int>& lengths) {
  float bound = 0;
  for (Index b = 0; b < x.dimension(1); ++b)
    for (Index t = 0; t < lengths[std::size_t(b)]; ++t)
      for (Index k = 0; k < x.dimension(2); ++k) bound = std::max(bound, std::abs(x(t, b, k)));
  return bound;
}

TEST(Int8Inference, LSTMForwardMatchesAReferenceWithQuantisedOperands) {
  Rng rng(1);
  LSTMCell<float> cell = reference_test_lstm(rng);
  const Tensor3<float> x = padded_input(20, rng);
  cell.begin_int8_calibration();
  const auto f32 = dynamic_rnn(cell, x, kInt8Lengths);
  cell.end_int8_calibration();
  ASSERT_EQ(cell.int8_input_bound(), valid_bound(x, kInt8Lengths));
  const Tensor3<double> want = reference_int8_lstm(cell, x, kInt8Lengths, cell.int8_input_bound());
  cell.set_precision(Precision::int8);
  Tensor3<float> first;
  for (CpuIsa isa : {CpuIsa::avx512_core_vnni, CpuIsa::portable}) {
    WithIsa limit(isa);
    SCOPED_TRACE(to_string(cpu_isa()));
    const auto q = dynamic_rnn(cell, x, kInt8Lengths);
    EXPECT_LT(relative_difference(q.outputs, want), 1e-4);
    if (first.size() == 0)
      first = q.outputs;
    else
      EXPECT_LT(relative_difference(q.outputs, first), kPathTolerance) << "the fast and portable paths differ";
  }
  EXPECT_GT(relative_difference(f32.outputs, want), 1e-3) << "the reference does not tell the precisions apart";
}

// Each layer's bounds come from its own input; a projecting LSTM's and a relu RNN's from
// their outputs as well; padding is never seen.
TEST(Int8Inference, CalibrationRecordsEachLayersValidInputs) {
  Rng rng(2);
  LSTMOptions options;
  options.num_proj = 12;
  StackedCell<LSTMCell<float>> stack({LSTMCell<float>(8, 16, options), LSTMCell<float>(12, 10)});
  stack.reset_parameters(rng);
  for (Index k = 0; k < stack.layers()[0].projection().size(); ++k) stack.layers()[0].projection()(k) *= 4;
  const Tensor3<float> x = padded_input(8, rng), x2 = padded_input(8, rng, 3.0f);
  stack.begin_int8_calibration();
  const auto a = dynamic_rnn(stack, x, kInt8Lengths);
  const std::vector<int> lengths2 = {2, 9, 4, 0, 1, 5};
  const auto b = dynamic_rnn(stack, x2, lengths2);
  stack.end_int8_calibration();
  EXPECT_EQ(stack.layers()[0].int8_input_bound(), std::max(valid_bound(x, kInt8Lengths), valid_bound(x2, lengths2)));
  // Layer 1's input is layer 0's output: the projected state, which is also layer 0's bound.
  const float between = a.cache.layers[0].h.cwiseAbs().maxCoeff();
  const float between2 = b.cache.layers[0].h.cwiseAbs().maxCoeff();
  EXPECT_EQ(stack.layers()[1].int8_input_bound(), std::max(between, between2));
  EXPECT_EQ(stack.layers()[0].int8_state_bound(), std::max(between, between2));
  EXPECT_GT(stack.layers()[0].int8_state_bound(), 1.0f) << "the test should reach beyond [-1, 1]";

  RNNCell<float> relu(8, 16, RNNActivation::relu);
  relu.reset_parameters(rng);
  relu.begin_int8_calibration();
  const auto r = dynamic_rnn(relu, x, kInt8Lengths);
  relu.end_int8_calibration();
  EXPECT_EQ(relu.int8_state_bound(), valid_bound(r.outputs, kInt8Lengths));
}

// One cell or topology in float32 and in int8: outputs within 5e-2 of each other, and apart
// by more than 1e-4. The portable path within kPathTolerance of the fast one.
template <class Cell, class Forward>
void expect_int8_agrees(const char* name, Cell cell, Forward&& forward) {
  SCOPED_TRACE(name);
  Rng rng(3);
  cell.reset_parameters(rng);
  const Tensor3<float> x = padded_input(cell.input_size(), rng);
  cell.begin_int8_calibration();
  const Eigen::VectorXf out32 = forward(cell, x);
  cell.end_int8_calibration();
  cell.set_precision(Precision::int8);
  EXPECT_EQ(cell.precision(), Precision::int8);
  const Eigen::VectorXf out8 = forward(cell, x);
  const double error = relative_difference(out8, out32);
  std::printf("%-34s int8 against float32: outputs %.2e\n", name, error);
  EXPECT_LT(error, 5e-2);
  EXPECT_GT(error, 1e-4);
  if (detected_cpu_isa() < CpuIsa::avx512_core_vnni) return;  // the portable kernel ran both
  WithIsa limit(CpuIsa::portable);
  const Eigen::VectorXf portable = forward(cell, x);
  EXPECT_LT(relative_difference(portable, out8), kPathTolerance);
  std::printf("%-34s portable against fast path: outputs %.2e\n", name, relative_difference(portable, out8));
}

template <class Cell>
Eigen::VectorXf cell_outputs(const Cell& cell, const Tensor3<float>& x) {
  const auto fwd = dynamic_rnn(cell, x, kInt8Lengths);
  return Eigen::Map<const Eigen::VectorXf>(fwd.outputs.data(), fwd.outputs.size());
}

TEST(Int8Inference, EveryCellAgreesWithFloat32) {
  const auto forward = [](const auto& cell, const Tensor3<float>& x) { return cell_outputs(cell, x); };
  for_each_test_cell([&](const char* name, const auto& cell) { expect_int8_agrees(name, cell, forward); });
  using Stack = StackedCell<GRUCell<float>>;
  const GRUVariant after = GRUVariant::reset_after;
  expect_int8_agrees("StackedCell of two GRUs", Stack({GRUCell<float>(10, 32, after), GRUCell<float>(32, 24, after)}),
                     forward);
  using Bi = BidirectionalStack<LSTMCell<float>>;
  expect_int8_agrees("BidirectionalStack of LSTMs", Bi(2, 10, 16), [](const Bi& stack, const Tensor3<float>& x) {
    const auto r = stack.forward(x, kInt8Lengths);
    return Eigen::VectorXf(Eigen::Map<const Eigen::VectorXf>(r.top().data(), r.top().size()));
  });
}

// A model calibrated on one batch predicts another in int8 close to float32, and refuses to
// train in int8.
TEST(Int8Inference, ModelCalibratesPredictsAndRefusesToTrain) {
  Rng rng(4);
  SequenceModel<LSTMCell<float>> model(Input::features(6), LSTMCell<float>(6, 24), Output::classes(5));
  SequenceBatch<float> sample, held_out;
  for (SequenceBatch<float>* batch : {&sample, &held_out}) {
    batch->lengths = kInt8Lengths;
    batch->features = padded_input(6, rng);
    batch->labels = {0, 1, 2, 3, 4, 0};
  }
  EXPECT_THROW(model.set_precision(Precision::int8), std::invalid_argument) << "not calibrated";
  EXPECT_THROW(model.calibrate_int8(std::vector<const SequenceBatch<float>*>{}), std::invalid_argument);
  model.calibrate_int8(sample);
  EXPECT_EQ(model.cell().int8_input_bound(), valid_bound(sample.features, kInt8Lengths));
  const Matrix<float> y32 = model.predict(held_out);
  model.set_precision(Precision::int8);
  const Matrix<float> y8 = model.predict(held_out);
  const double error = relative_difference(y8, y32);
  EXPECT_LT(error, 5e-2);
  EXPECT_GT(error, 1e-5);
  model.set_optimizer(Adam<float>(0.01f));
  const Matrix<float> kernel = model.cell().kernel();
  try {
    model.train_step(sample);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("int8 is for inference"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(model.cell().kernel() == kernel) << "a refused step changes no weight";
}

TEST(Int8Inference, TheSettingIsChecked) {
  LSTMCell<float> cell(3, 4);
  EXPECT_LT(cell.int8_input_bound(), 0.0f);
  try {
    cell.set_precision(Precision::int8);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("calibration"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cell.precision(), Precision::float32) << "a refused setting changes nothing";
  EXPECT_THROW(cell.end_int8_calibration(), std::logic_error) << "no calibration began";
  cell.begin_int8_calibration();
  EXPECT_THROW(cell.end_int8_calibration(), std::logic_error) << "no pass ran";
  EXPECT_THROW(cell.set_int8_bounds(-1.0f), std::invalid_argument);
  EXPECT_THROW(cell.set_int8_bounds(1.0f, std::nanf("")), std::invalid_argument);
  cell.set_int8_bounds(2.0f);
  cell.set_precision(Precision::int8);
  EXPECT_EQ(cell.precision(), Precision::int8);

  LSTMCell<double> cell64(3, 4);
  cell64.set_int8_bounds(1.0f);
  EXPECT_THROW(cell64.set_precision(Precision::int8), std::invalid_argument) << "double refuses int8";

  // A stack with one calibrated layer refuses int8 and changes no layer.
  StackedCell<LSTMCell<float>> stack({LSTMCell<float>(3, 4), LSTMCell<float>(4, 4)});
  stack.layers()[0].set_int8_bounds(1.0f);
  EXPECT_THROW(stack.set_precision(Precision::int8), std::invalid_argument);
  for (const auto& layer : stack.layers()) EXPECT_EQ(layer.precision(), Precision::float32);

  EXPECT_EQ(precision_from_string("int8"), Precision::int8);
  EXPECT_STREQ(to_string(Precision::int8), "int8");

  // Backward in int8 is refused before any gradient changes.
  Rng rng(5);
  const Tensor3<float> x = random_tensor<float>(9, 6, 3, rng), dy = random_tensor<float>(9, 6, 4, rng);
  const auto fwd = dynamic_rnn(cell, x, kInt8Lengths);
  EXPECT_THROW(dynamic_rnn_backward(cell, fwd, dy), std::invalid_argument);
}

// A pass in int8 keeps no h_{t-1} for backward (time_loop.hpp): its cache, kept while the
// cell is set back to float32, is refused by a backward pass, which names what is missing.
// So is one from a full batch, whose pass read x and wrote the outputs in place
// (dynamic_rnn.hpp).
TEST(Int8Inference, ACacheFromAnInt8PassIsRefusedByBackward) {
  Rng rng(6);
  const Tensor3<float> x = random_tensor<float>(9, 6, 10, rng);
  const std::vector<int> full(6, 9);
  for (const std::vector<int>* lengths : {&kInt8Lengths, &full}) {
    for_each_test_cell([&](const char* name, auto cell) {
      cell.set_int8_bounds(2.0f, 2.0f);
      cell.set_precision(Precision::int8);
      const auto fwd = dynamic_rnn(cell, x, *lengths);
      cell.set_precision(Precision::float32);
      const Tensor3<float> dy = random_tensor<float>(9, 6, cell.output_size(), rng);
      try {
        dynamic_rnn_backward(cell, fwd, dy);
        ADD_FAILURE() << name << ": no exception";
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("cache.h_prev"), std::string::npos) << name << ": " << e.what();
        EXPECT_NE(std::string(e.what()).find("int8"), std::string::npos) << name << ": " << e.what();
      }
      // A pass in float32 again trains.
      const auto fwd32 = dynamic_rnn(cell, x, *lengths);
      EXPECT_NO_THROW(dynamic_rnn_backward(cell, fwd32, dy)) << name;
    });
  }
}

}  // namespace
}  // namespace dynrnn::test
