// RMSProp against reference values from tests/data/rmsprop_reference.py: TensorFlow 1.x's
// update computed by hand in Python, PyTorch's from torch.optim.RMSprop itself.
#include "support.hpp"

#include <array>

namespace dynrnn::test {
namespace {

using Steps = std::array<std::array<double, 2>, 3>;

struct RmspropCase {
  const char* name;
  RMSPropOptions<double> options;
  Steps expected;  // parameter after steps 1, 2, 3
};

RMSPropOptions<double> with(RMSPropOptions<double> o, double momentum, bool centered) {
  o.momentum = momentum;
  o.centered = centered;
  return o;
}

const std::array<std::array<double, 2>, 3> kGrads = {{{0.5, -1.0}, {-0.25, 2.0}, {1.0, 0.1}}};

// Output of: /usr/bin/python3 tests/data/rmsprop_reference.py
const RmspropCase kCases[] = {
    {"tf_plain", with(RMSPropOptions<double>::tensorflow(0.1), 0.0, false),
     {{{0.9480124755118065, -1.900000000005}, {0.9753100300318098, -2.075411603859659}, {0.8671545095566753, -2.084652658804384}}}},
    {"tf_momentum", with(RMSPropOptions<double>::tensorflow(0.1), 0.5, false),
     {{{0.9480124755118065, -1.900000000005}, {0.9493162677877132, -2.025411603862159}, {0.841812643450532, -2.097358460735464}}}},
    {"tf_centered", with(RMSPropOptions<double>::tensorflow(0.1), 0.0, true),
     {{{0.9479420793732862, -1.8994962184791548}, {0.9752461453262684, -2.075729904187456}, {0.8661989112768259, -2.0850181989157166}}}},
    {"tf_centered_momentum", with(RMSPropOptions<double>::tensorflow(0.1), 0.5, true),
     {{{0.9479420793732862, -1.8994962184791548}, {0.9492171850129115, -2.0254780134270334}, {0.8408075037832816, -2.0977572056292333}}}},
    {"torch_plain", with(RMSPropOptions<double>::pytorch(0.1), 0.0, false),
     {{{1.9999996048181146e-07, -1.0000000999999905}, {0.44901337442175077, -1.8953230219915222}, {-0.4257262160714049, -1.9402692234691479}}}},
    {"torch_momentum", with(RMSPropOptions<double>::pytorch(0.1), 0.9, false),
     {{{1.999999605373226e-07, -1.0000000999999903}, {-0.4509864455782848, -0.995323111991513}, {-1.7316140170918615, -1.0360600242615092}}}},
    {"torch_centered", with(RMSPropOptions<double>::pytorch(0.1), 0.0, true),
     {{{-0.005037613239050165, -0.9949622857508791}, {0.44441090335049105, -1.891201762428898}, {-0.4355418716441056, -1.9362029879307188}}}},
    {"torch_centered_momentum", with(RMSPropOptions<double>::pytorch(0.1), 0.9, true),
     {{{-0.0050376132390502655, -0.9949622857508792}, {-0.46012294856465424, -0.9866678196046894}, {-1.7496525253522945, -1.0242040255749394}}}},
};

TEST(RMSPropTest, ThreeStepsMatchReference) {
  for (const RmspropCase& c : kCases) {
    SCOPED_TRACE(c.name);
    RMSProp<double> opt(c.options);
    Vector<double> theta(2);
    theta << 1.0, -2.0;
    for (std::size_t step = 0; step < 3; ++step) {
      Vector<double> g(2);
      g << kGrads[step][0], kGrads[step][1];
      opt.apply(theta, g);
      for (int k = 0; k < 2; ++k)
        EXPECT_NEAR(theta(k), c.expected[step][k], 1e-12 * std::max(1.0, std::abs(c.expected[step][k])))
            << "step " << step + 1 << " element " << k;
    }
  }
}

TEST(RMSPropTest, FloatFollowsDouble) {
  RMSProp<float> opt(0.1f);
  Matrix<float> theta(1, 2);
  theta << 1.0f, -2.0f;
  for (const auto& g : kGrads) opt.apply(theta, (Matrix<float>(1, 2) << float(g[0]), float(g[1])).finished());
  EXPECT_NEAR(theta(0, 0), 0.8671545095566753, 1e-6);
  EXPECT_NEAR(theta(0, 1), -2.084652658804384, 1e-6);
}

TEST(RMSPropTest, DefaultsFollowTheFrameworks) {
  const RMSProp<float> tf(0.01f);
  EXPECT_EQ(tf.options().variant, RMSPropVariant::tensorflow);
  EXPECT_FLOAT_EQ(tf.options().decay, 0.9f);
  EXPECT_FLOAT_EQ(tf.options().momentum, 0.0f);
  EXPECT_FLOAT_EQ(tf.options().epsilon, 1e-10f);
  EXPECT_FALSE(tf.options().centered);
  const auto pt = RMSPropOptions<float>::pytorch();
  EXPECT_FLOAT_EQ(pt.learning_rate, 0.01f);
  EXPECT_FLOAT_EQ(pt.decay, 0.99f);
  EXPECT_FLOAT_EQ(pt.epsilon, 1e-8f);
}

TEST(RMSPropTest, KeepsSeparateSlotsPerParameter) {
  // Two parameters updated in turn must each behave as if alone.
  RMSProp<double> shared(0.1);
  Vector<double> a(2), b(2);
  a << 1.0, -2.0;
  b << 1.0, -2.0;
  for (const auto& g : kGrads) {
    const Vector<double> gv = (Vector<double>(2) << g[0], g[1]).finished();
    shared.apply(a, gv);
    shared.apply(b, gv);
  }
  EXPECT_EQ(shared.slot_count(), 2u);
  EXPECT_NEAR(a(0), 0.8671545095566753, 1e-12);
  EXPECT_EQ(a, b);
  shared.reset();
  EXPECT_EQ(shared.slot_count(), 0u);
}

TEST(RMSPropTest, AppliesWholeLayerGradients) {
  Rng rng(21);
  LSTMCell<double> cell(2, 3);
  Tensor3<double> x = random_tensor<double>(3, 2, 2, rng);
  const auto fwd = dynamic_rnn(cell, x, {3, 2});
  const auto g = dynamic_rnn_backward(cell, fwd, random_tensor<double>(3, 2, 3, rng));
  const Matrix<double> k0 = cell.kernel();
  const Vector<double> b0 = cell.bias();
  RMSProp<double> opt(0.01);
  opt.apply(cell, g);
  EXPECT_EQ(opt.slot_count(), 2u);
  // First TensorFlow step: ms = 0.9 + 0.1 g², θ -= lr g / sqrt(ms + eps).
  const Matrix<double> expected_k =
      k0.array() - 0.01 * g.kernel.array() / (0.9 + 0.1 * g.kernel.array().square() + 1e-10).sqrt();
  const Vector<double> expected_b =
      b0.array() - 0.01 * g.bias.array() / (0.9 + 0.1 * g.bias.array().square() + 1e-10).sqrt();
  EXPECT_TRUE(cell.kernel().isApprox(expected_k, 1e-14));
  EXPECT_TRUE(cell.bias().isApprox(expected_b, 1e-14));

  Dense<double> dense(3, 2);
  opt.apply(dense, dense.make_gradients());
  Embedding<double> emb(4, 2);
  opt.apply(emb, emb.make_gradients());
  EXPECT_EQ(opt.slot_count(), 5u);
}

TEST(RMSPropTest, LargeParametersSplitAcrossThreadsFollowTheFormula) {
  // 300 x 400 entries: updated in blocks of rows, on two threads when OpenMP is on.
  Rng rng(22);
  set_num_threads(2);
  Matrix<double> theta = random_matrix<double>(300, 400, rng);
  const Matrix<double> theta0 = theta;
  const Matrix<double> g = random_matrix<double>(300, 400, rng);
  RMSProp<double> opt(0.01);
  opt.apply(theta, g);
  set_num_threads(1);
  const Matrix<double> expected = theta0.array() - 0.01 * g.array() / (0.9 + 0.1 * g.array().square() + 1e-10).sqrt();
  EXPECT_LE((theta - expected).cwiseAbs().maxCoeff(), 1e-15);
}

}  // namespace
}  // namespace dynrnn::test
