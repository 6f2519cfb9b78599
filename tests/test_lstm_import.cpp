// LSTM weights imported from PyTorch, Keras and TensorFlow 1.x layouts must reproduce
// PyTorch's nn.LSTM: outputs, final states and every gradient, in double, within 1e-10
// relative. The golden files come from tests/data/make_lstm_golden.py (torch autograd;
// the Keras and TensorFlow layouts are converted there with NumPy).
#include "golden.hpp"

#include <string>

namespace dynrnn::test {
namespace {


struct Golden : GoldenFile {
  Golden() : GoldenFile("lstm_golden.safetensors") {}
};

// Runs the golden batch through `cell` and compares everything with PyTorch's values.
void expect_matches_pytorch(const LSTMCell<double>& cell) {
  const Golden g;
  const Tensor3<double> x = g.tensor("x", g.I);
  const std::vector<int> lengths = g.lengths();
  ASSERT_EQ(lengths, (std::vector<int>{6, 3, 0, 1, 5}));
  const LSTMState<double> s0{g.matrix("c0", g.B, g.H), g.matrix("h0", g.B, g.H)};

  const auto fwd = dynamic_rnn(cell, x, lengths, s0);
  const Tensor3<double> outputs = g.tensor("outputs", g.H);
  const Matrix<double> h_n = g.matrix("h_n", g.B, g.H), c_n = g.matrix("c_n", g.B, g.H);
  EXPECT_LE(max_relative_error(fwd.outputs.data(), outputs.data(), std::size_t(outputs.size())), kGoldenTolerance);
  EXPECT_LE(max_relative_error(fwd.final_state.h.data(), h_n.data(), std::size_t(h_n.size())), kGoldenTolerance);
  EXPECT_LE(max_relative_error(fwd.final_state.c.data(), c_n.data(), std::size_t(c_n.size())), kGoldenTolerance);

  const LSTMState<double> d_final{g.matrix("d_c_n", g.B, g.H), g.matrix("d_h_n", g.B, g.H)};
  const auto grads = dynamic_rnn_backward(cell, fwd, g.tensor("d_outputs", g.H), d_final);
  const Matrix<double> g_kernel = g.matrix("grad_kernel", g.I + g.H, 4 * g.H);
  Vector<double> g_bias(4 * g.H);
  g.f.read_into("grad_bias", {std::uint64_t(4 * g.H)}, g_bias.data());
  const Tensor3<double> g_x = g.tensor("grad_x", g.I);
  const Matrix<double> g_h0 = g.matrix("grad_h0", g.B, g.H), g_c0 = g.matrix("grad_c0", g.B, g.H);
  EXPECT_LE(max_relative_error(grads.kernel.data(), g_kernel.data(), std::size_t(g_kernel.size())), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.bias.data(), g_bias.data(), std::size_t(g_bias.size())), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.inputs.data(), g_x.data(), std::size_t(g_x.size())), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.initial_state.h.data(), g_h0.data(), std::size_t(g_h0.size())), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.initial_state.c.data(), g_c0.data(), std::size_t(g_c0.size())), kGoldenTolerance);
}

TEST(LSTMImport, PyTorchMatchesNnLSTM) {
  LSTMCell<double> cell(3, 4);  // forget_bias 1: the import must compensate for it
  import_pytorch_lstm(cell, kData + "/lstm_pytorch.safetensors");
  expect_matches_pytorch(cell);
}

TEST(LSTMImport, PyTorchIntoCellWithoutForgetBias) {
  LSTMCell<double> cell(3, 4, /*forget_bias=*/0.0);
  import_pytorch_lstm(cell, kData + "/lstm_pytorch.safetensors");
  expect_matches_pytorch(cell);
}

TEST(LSTMImport, KerasMatchesNnLSTM) {
  LSTMCell<double> cell(3, 4, 0.5);
  import_keras_lstm(cell, kData + "/lstm_keras.safetensors");
  expect_matches_pytorch(cell);
}

TEST(LSTMImport, TensorFlowMatchesNnLSTM) {
  LSTMCell<double> cell(3, 4);
  import_tensorflow_lstm(cell, kData + "/lstm_tensorflow.safetensors", 1.0);
  expect_matches_pytorch(cell);
  LSTMCell<double> other(3, 4, -2.0);  // another forget_bias, same function
  import_tensorflow_lstm(other, kData + "/lstm_tensorflow.safetensors", 1.0);
  expect_matches_pytorch(other);
}

TEST(LSTMImport, FloatCellLoadsDoubleWeights) {
  LSTMCell<float> cell(3, 4);
  import_pytorch_lstm(cell, kData + "/lstm_pytorch.safetensors");
  LSTMCell<double> reference(3, 4);
  import_pytorch_lstm(reference, kData + "/lstm_pytorch.safetensors");
  EXPECT_TRUE(cell.kernel().isApprox(reference.kernel().cast<float>(), 1e-6f));
  EXPECT_TRUE(cell.bias().isApprox(reference.bias().cast<float>(), 1e-6f));
}

// A wrong size, a missing tensor or a prefix that matches nothing throws CheckpointError
// naming the file and the tensor, and leaves the cell as it was.
TEST(LSTMImport, MismatchLeavesCellUnchanged) {
  auto expect_unchanged_after = [](LSTMCell<double>& cell, auto&& call, const std::string& fragment) {
    const Matrix<double> kernel = cell.kernel();
    const Vector<double> bias = cell.bias();
    try {
      call();
      ADD_FAILURE() << "no CheckpointError";
    } catch (const CheckpointError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(fragment), std::string::npos) << what;
      EXPECT_NE(what.find(".safetensors"), std::string::npos) << what;
    }
    EXPECT_TRUE(identical(cell.kernel(), kernel));
    EXPECT_TRUE(identical(cell.bias(), bias));
  };
  LSTMCell<double> wide(3, 5);
  expect_unchanged_after(wide, [&] { import_pytorch_lstm(wide, kData + "/lstm_pytorch.safetensors"); },
                         "'weight_ih_l0' has shape [16, 3], expected [20, 3]");
  LSTMCell<double> cell(3, 4);
  expect_unchanged_after(cell, [&] { import_pytorch_lstm(cell, kData + "/lstm_pytorch.safetensors", "", 1); },
                         "'weight_ih_l1' is missing");
  expect_unchanged_after(cell, [&] { import_keras_lstm(cell, kData + "/lstm_keras.safetensors", "lstm/"); },
                         "'lstm/kernel' is missing");
  expect_unchanged_after(cell, [&] { import_tensorflow_lstm(cell, kData + "/lstm_keras.safetensors"); },
                         "'kernel' has shape [3, 16], expected [7, 16]");
  expect_unchanged_after(cell, [&] { import_keras_lstm(cell, kData + "/no_such_file.safetensors"); },
                         "cannot open");
  expect_invalid_argument([&] { import_pytorch_lstm(cell, kData + "/lstm_pytorch.safetensors", "", -1); },
                          {"import_pytorch_lstm", "'layer'", ">= 0", "-1"});
}

TEST(LSTMImport, PyTorchWithoutBiasOrWithProjection) {
  // Build small state dicts with dynrnn's writer; the values are checked by hand.
  LSTMCell<double> cell(1, 1, 0.0);
  safetensors::Writer w;
  const double w_ih[4] = {1, 2, 3, 4}, w_hh[4] = {5, 6, 7, 8};  // gates i, f, g, o
  w.add("weight_ih_l0", {4, 1}, w_ih, 4);
  w.add("weight_hh_l0", {4, 1}, w_hh, 4);
  import_pytorch_lstm(cell, safetensors::File::parse(w.bytes(), "no-bias"));
  EXPECT_TRUE(identical(cell.kernel(), (Matrix<double>(2, 4) << 1, 3, 2, 4, 5, 7, 6, 8).finished()));
  EXPECT_TRUE(cell.bias().isZero(0));

  const double one[4] = {0, 0, 0, 0};
  w.add("bias_ih_l0", {4}, one, 4);
  try {
    import_pytorch_lstm(cell, safetensors::File::parse(w.bytes(), "half-bias"));
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("only one of 'bias_ih_l0' and 'bias_hh_l0'"), std::string::npos) << e.what();
  }
  w.add("bias_hh_l0", {4}, one, 4);
  w.add("weight_hr_l0", {1, 1}, one, 1);
  try {
    import_pytorch_lstm(cell, safetensors::File::parse(w.bytes(), "proj"));
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("proj_size"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dynrnn::test
