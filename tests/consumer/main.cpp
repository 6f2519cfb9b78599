// Uses dynrnn from another project: one forward and backward pass, checked for sanity.
#include <dynrnn/dynrnn.hpp>

#include <cstdio>

int main() {
  dynrnn::LSTMCell<float> cell(3, 8);
  dynrnn::Tensor3<float> x(4, 2, 3);
  x.setConstant(0.5f);
  const std::vector<int> lengths = {4, 2};
  const auto fwd = dynrnn::dynamic_rnn(cell, x, lengths);
  dynrnn::Tensor3<float> d_out(4, 2, 8);
  d_out.setConstant(1.0f);
  const auto g = dynrnn::dynamic_rnn_backward(cell, fwd, d_out);
  const bool ok = fwd.outputs(3, 1, 0) == 0.0f && fwd.outputs(1, 1, 0) != 0.0f && g.kernel.allFinite();
  std::printf("dynrnn %s consumer: %s\n", dynrnn::version, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
