// GRU and vanilla RNN weights imported from PyTorch, Keras and TensorFlow 1.x must reproduce
// the source framework: outputs, final states and every gradient, in double, within 1e-10
// relative. The golden files come from tests/data/make_gru_rnn_golden.py: PyTorch's nn.GRU
// (reset_after) and nn.RNN (tanh, relu) through torch autograd, and TensorFlow's reset-before
// GRUCell from a NumPy implementation of its equations (gradients by autograd through the
// same equations in torch ops).
#include "golden.hpp"

#include <string>

namespace dynrnn::test {
namespace {


// Runs the golden batch of `file` through `cell` and compares everything with its values;
// `gates` is the number of H-wide column blocks of the cell's kernel.
template <class Cell>
void expect_matches_golden(const Cell& cell, const std::string& file, Index gates) {
  SCOPED_TRACE(file);
  const GoldenFile g(file);
  const Tensor3<double> x = g.tensor("x", g.I);
  const std::vector<int> lengths = g.lengths();
  ASSERT_EQ(lengths, (std::vector<int>{6, 3, 0, 1, 5}));
  const HiddenState<double> s0{g.matrix("h0", g.B, g.H)};

  const auto fwd = dynamic_rnn(cell, x, lengths, s0);
  EXPECT_LE(max_relative_error(fwd.outputs, g.tensor("outputs", g.H)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(fwd.final_state.h, g.matrix("h_n", g.B, g.H)), kGoldenTolerance);

  const HiddenState<double> d_final{g.matrix("d_h_n", g.B, g.H)};
  const auto grads = dynamic_rnn_backward(cell, fwd, g.tensor("d_outputs", g.H), d_final);
  EXPECT_LE(max_relative_error(grads.kernel, g.matrix("grad_kernel", g.I + g.H, gates * g.H)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.bias, g.vector("grad_bias", gates * g.H)), kGoldenTolerance);
  if constexpr (std::is_same_v<Cell, GRUCell<double>>) {
    if (cell.variant() == GRUVariant::reset_after) {
      EXPECT_LE(max_relative_error(grads.recurrent_bias, g.vector("grad_recurrent_bias", 3 * g.H)), kGoldenTolerance);
    }
  }
  EXPECT_LE(max_relative_error(grads.inputs, g.tensor("grad_x", g.I)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.initial_state.h, g.matrix("grad_h0", g.B, g.H)), kGoldenTolerance);
}

TEST(GRUImport, PyTorchMatchesNnGRU) {
  GRUCell<double> cell(3, 4, GRUVariant::reset_after);
  import_pytorch_gru(cell, kData + "/gru_pytorch.safetensors");
  expect_matches_golden(cell, "gru_golden.safetensors", 3);
}

TEST(GRUImport, KerasResetAfterMatchesNnGRU) {
  GRUCell<double> cell(3, 4, GRUVariant::reset_after);
  import_keras_gru(cell, kData + "/gru_keras.safetensors");
  expect_matches_golden(cell, "gru_golden.safetensors", 3);
}

TEST(GRUImport, TensorFlowMatchesNumPyReference) {
  GRUCell<double> cell(3, 4, GRUVariant::reset_before);
  import_tensorflow_gru(cell, kData + "/gru_tensorflow.safetensors");
  expect_matches_golden(cell, "gru_reset_before_golden.safetensors", 3);
}

TEST(GRUImport, KerasResetBeforeUsesOneBias) {
  // Keras GRU(reset_after=False) stores bias (3H) and computes TensorFlow 1.x's function:
  // the TensorFlow weights, rewritten in Keras's layout by hand, give the same golden values.
  const auto tf = safetensors::File::read(kData + "/gru_tensorflow.safetensors");
  const Index I = 3, H = 4;
  Matrix<double> gates(I + H, 2 * H), candidate(I + H, H);
  Vector<double> gates_bias(2 * H), candidate_bias(H);
  tf.read_into("gates/kernel", {7, 8}, gates.data());
  tf.read_into("candidate/kernel", {7, 4}, candidate.data());
  tf.read_into("gates/bias", {8}, gates_bias.data());
  tf.read_into("candidate/bias", {4}, candidate_bias.data());
  Matrix<double> kernel(I, 3 * H), recurrent(H, 3 * H);  // blocks z(= u), r, h(= c)
  kernel << gates.topRows(I).middleCols(H, H), gates.topRows(I).leftCols(H), candidate.topRows(I);
  recurrent << gates.bottomRows(H).middleCols(H, H), gates.bottomRows(H).leftCols(H), candidate.bottomRows(H);
  Vector<double> bias(3 * H);
  bias << gates_bias.segment(H, H), gates_bias.head(H), candidate_bias;
  safetensors::Writer w;
  w.add("kernel", kernel);
  w.add("recurrent_kernel", recurrent);
  w.add("bias", bias);
  GRUCell<double> cell(3, 4, GRUVariant::reset_before);
  import_keras_gru(cell, safetensors::File::parse(w.bytes(), "keras-reset-before"));
  expect_matches_golden(cell, "gru_reset_before_golden.safetensors", 3);
}

TEST(GRUImport, VariantMismatchIsRefused) {
  GRUCell<double> before(3, 4, GRUVariant::reset_before), after(3, 4, GRUVariant::reset_after);
  const Matrix<double> kernel = before.kernel();
  expect_invalid_argument([&] { import_pytorch_gru(before, kData + "/gru_pytorch.safetensors"); },
                          {"import_pytorch_gru", "'cell'", "variant reset_after", "got variant reset_before"});
  expect_invalid_argument([&] { import_tensorflow_gru(after, kData + "/gru_tensorflow.safetensors"); },
                          {"import_tensorflow_gru", "'cell'", "variant reset_before", "got variant reset_after"});
  EXPECT_TRUE(identical(before.kernel(), kernel));
  // A reset_before cell expects Keras's bias (3H) and finds (2, 3H).
  try {
    import_keras_gru(before, kData + "/gru_keras.safetensors");
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'bias' has shape [2, 12], expected [12]"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(identical(before.kernel(), kernel));
}

TEST(RNNImport, PyTorchTanhMatchesNnRNN) {
  RNNCell<double> cell(3, 4, RNNActivation::tanh);
  import_pytorch_rnn(cell, kData + "/rnn_tanh_pytorch.safetensors");
  expect_matches_golden(cell, "rnn_tanh_golden.safetensors", 1);
}

TEST(RNNImport, PyTorchReluMatchesNnRNN) {
  RNNCell<double> cell(3, 4, RNNActivation::relu);
  import_pytorch_rnn(cell, kData + "/rnn_relu_pytorch.safetensors");
  expect_matches_golden(cell, "rnn_relu_golden.safetensors", 1);
}

TEST(RNNImport, KerasAndTensorFlowLayouts) {
  // The PyTorch weights rewritten in Keras's and TensorFlow's layouts import to the same cell.
  RNNCell<double> reference(3, 4);
  import_pytorch_rnn(reference, kData + "/rnn_tanh_pytorch.safetensors");
  const Matrix<double> w = reference.kernel().topRows(3), u = reference.kernel().bottomRows(4);
  const Vector<double> b = reference.bias();
  safetensors::Writer keras, tf;
  keras.add("kernel", w);
  keras.add("recurrent_kernel", u);
  keras.add("bias", b);
  tf.add("rnn/kernel", reference.kernel());
  tf.add("rnn/bias", b);
  RNNCell<double> from_keras(3, 4), from_tf(3, 4);
  import_keras_rnn(from_keras, safetensors::File::parse(keras.bytes(), "keras"));
  import_tensorflow_rnn(from_tf, safetensors::File::parse(tf.bytes(), "tf"), "rnn/");
  EXPECT_TRUE(identical(from_keras.kernel(), reference.kernel()));
  EXPECT_TRUE(identical(from_keras.bias(), reference.bias()));
  EXPECT_TRUE(identical(from_tf.kernel(), reference.kernel()));
  EXPECT_TRUE(identical(from_tf.bias(), reference.bias()));
  expect_matches_golden(from_keras, "rnn_tanh_golden.safetensors", 1);
}

TEST(RNNImport, MismatchLeavesCellUnchanged) {
  RNNCell<double> cell(3, 5);
  const Matrix<double> kernel = cell.kernel();
  try {
    import_pytorch_rnn(cell, kData + "/rnn_tanh_pytorch.safetensors");
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'weight_ih_l0' has shape [4, 3], expected [5, 3]"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(identical(cell.kernel(), kernel));
  expect_invalid_argument([&] { import_pytorch_rnn(cell, kData + "/rnn_tanh_pytorch.safetensors", "", -2); },
                          {"import_pytorch_rnn", "'layer'", ">= 0", "-2"});
}

}  // namespace
}  // namespace dynrnn::test
