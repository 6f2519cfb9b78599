// Finite-difference checks in double of the input gradients through the narrow product
// path (PanelKernel::narrow: at most a quarter of a SIMD register's columns, so 1 input
// feature with AVX, 1 or 2 with AVX-512), which only builds for this CPU reach: the generic
// SSE2 build's double registers are too narrow for it.
#include "support.hpp"

namespace dynrnn::test {
namespace {

template <class Cell>
void check_gradients(Index I) {
  constexpr double kStep = 1e-5;  // as the cells' other checks: 1e-6 leaves rounding noise near 1e-6
  SCOPED_TRACE(testing::Message() << "I = " << I << (detail::PanelKernel<double>::narrow(I) ? " (narrow)" : ""));
  Rng rng(17);
  const Index T = 5, B = 4, H = 3;
  Cell cell(I, H);
  cell.reset_parameters(rng);
  fill_uniform(cell.bias(), rng, 0.5);
  auto x = random_tensor<double>(T, B, I, rng);
  const std::vector<int> lengths = {5, 2, 0, 4};
  const auto w = random_tensor<double>(T, B, H, rng);
  const auto loss = [&] { return dot(dynamic_rnn(cell, x, lengths).outputs, w); };
  const auto g = dynamic_rnn_backward(cell, dynamic_rnn(cell, x, lengths), w);
  EXPECT_LE(max_gradient_error(x, g.inputs, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(cell.kernel(), g.kernel, loss, kStep), 1e-6);
  EXPECT_LE(max_gradient_error(cell.bias(), g.bias, loss, kStep), 1e-6);
}

TEST(NativeGradients, LSTMWithFewInputFeatures) {
  for (Index I : {1, 2, 3}) check_gradients<LSTMCell<double>>(I);
}

TEST(NativeGradients, RNNWithFewInputFeatures) {
  for (Index I : {1, 2, 3}) check_gradients<RNNCell<double>>(I);
}

}  // namespace
}  // namespace dynrnn::test
