// LSTMCell with options against the source frameworks: PyTorch's nn.LSTM(proj_size) through
// import_pytorch_lstm, and TensorFlow 1.x's LSTMCell with peepholes, cell_clip, num_proj and
// proj_clip (from a NumPy reference) through import_tensorflow_lstm. Outputs, final states
// and every gradient, in double, within 1e-10 relative. Golden files from
// tests/data/make_lstm_options_golden.py.
#include "golden.hpp"

#include <string>

namespace dynrnn::test {
namespace {


void expect_matches_golden(const LSTMCell<double>& cell, const std::string& file) {
  SCOPED_TRACE(file);
  const GoldenFile g(file);
  const Index R = cell.output_size(), H = g.H;
  const std::vector<int> lengths = g.lengths();
  ASSERT_EQ(lengths, (std::vector<int>{6, 3, 0, 1, 5}));
  const LSTMState<double> s0{g.matrix("c0", g.B, H), g.matrix("h0", g.B, R)};
  const auto fwd = dynamic_rnn(cell, g.tensor("x", g.I), lengths, s0);
  EXPECT_LE(max_relative_error(fwd.outputs, g.tensor("outputs", R)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(fwd.final_state.h, g.matrix("h_n", g.B, R)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(fwd.final_state.c, g.matrix("c_n", g.B, H)), kGoldenTolerance);

  const LSTMState<double> d_final{g.matrix("d_c_n", g.B, H), g.matrix("d_h_n", g.B, R)};
  const auto grads = dynamic_rnn_backward(cell, fwd, g.tensor("d_outputs", R), d_final);
  EXPECT_LE(max_relative_error(grads.kernel, g.matrix("grad_kernel", g.I + R, 4 * H)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.bias, g.vector("grad_bias", 4 * H)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.projection, g.matrix("grad_projection", H, R)), kGoldenTolerance);
  if (cell.options().use_peepholes) {
    EXPECT_LE(max_relative_error(grads.w_i_diag, g.vector("grad_w_i_diag", H)), kGoldenTolerance);
    EXPECT_LE(max_relative_error(grads.w_f_diag, g.vector("grad_w_f_diag", H)), kGoldenTolerance);
    EXPECT_LE(max_relative_error(grads.w_o_diag, g.vector("grad_w_o_diag", H)), kGoldenTolerance);
  }
  EXPECT_LE(max_relative_error(grads.inputs, g.tensor("grad_x", g.I)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.initial_state.h, g.matrix("grad_h0", g.B, R)), kGoldenTolerance);
  EXPECT_LE(max_relative_error(grads.initial_state.c, g.matrix("grad_c0", g.B, H)), kGoldenTolerance);
}

TEST(LSTMOptionsImport, PyTorchProjSizeMatchesNnLSTM) {
  LSTMOptions o;
  o.num_proj = 2;
  LSTMCell<double> cell(3, 4, o);
  import_pytorch_lstm(cell, kData + "/lstm_proj_pytorch.safetensors");
  expect_matches_golden(cell, "lstm_proj_golden.safetensors");
}

TEST(LSTMOptionsImport, TensorFlowEveryOptionMatchesNumPyReference) {
  LSTMOptions o;
  o.use_peepholes = true;
  o.cell_clip = 0.6;
  o.num_proj = 3;
  o.proj_clip = 0.3;
  o.forget_bias = 0.25;  // the import moves TensorFlow's forget_bias 1 into the bias
  LSTMCell<double> cell(3, 4, o);
  import_tensorflow_lstm(cell, kData + "/lstm_options_tensorflow.safetensors", 1.0);
  expect_matches_golden(cell, "lstm_options_golden.safetensors");
}

TEST(LSTMOptionsImport, OptionsTheSourceLacksAreRefused) {
  LSTMOptions o;
  o.use_peepholes = true;
  LSTMCell<double> peephole(3, 4, o);
  expect_invalid_argument([&] { import_pytorch_lstm(peephole, kData + "/lstm_pytorch.safetensors"); },
                          {"import_pytorch_lstm", "'cell'", "without use_peepholes", "use_peepholes=true"});
  o = {};
  o.num_proj = 2;
  LSTMCell<double> projected(3, 4, o);
  expect_invalid_argument([&] { import_keras_lstm(projected, kData + "/lstm_keras.safetensors"); },
                          {"import_keras_lstm", "'cell'", "or num_proj", "num_proj=2"});
  // A plain cell refuses a proj_size state dict; a projecting cell needs weight_hr.
  LSTMCell<double> plain(3, 4);
  try {
    import_pytorch_lstm(plain, kData + "/lstm_proj_pytorch.safetensors");
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("LSTMOptions::num_proj"), std::string::npos) << e.what();
  }
  try {
    import_pytorch_lstm(projected, kData + "/lstm_pytorch.safetensors");
    ADD_FAILURE() << "no CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("has shape [16, 4], expected [16, 2]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dynrnn::test
