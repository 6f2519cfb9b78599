// LSTMCell's TensorFlow options (peepholes, cell_clip, num_proj, proj_clip, forget_bias)
// through dynamic_rnn: values against an independent scalar reference, finite-difference
// gradients in double with mixed lengths including 0, the clips' subgradient at their
// boundary derived by hand, argument checks, and the inference pass (ForwardMode::inference)
// against the scalar reference and against the training pass, bit for bit.
#include "reduced_precision_support.hpp"
#include "support.hpp"

#include <string>

namespace dynrnn::test {
namespace {

double clip(double v, double limit) { return limit > 0 ? std::min(limit, std::max(-limit, v)) : v; }

// One step of one row of TensorFlow 1.x's LSTMCell with options, in scalar loops, sharing
// no code with the library. c has width H, h width R.
template <class Scalar>
void reference_step(const LSTMCell<Scalar>& cell, const std::vector<double>& x, std::vector<double>& c,
                    std::vector<double>& h) {
  const Index I = cell.input_size(), H = cell.hidden_size(), R = cell.output_size();
  const LSTMOptions& opt = cell.options();
  std::vector<double> z(4 * H);
  for (Index k = 0; k < 4 * H; ++k) {
    z[k] = double(cell.bias()(k));
    for (Index r = 0; r < I; ++r) z[k] += x[r] * double(cell.kernel()(r, k));
    for (Index r = 0; r < R; ++r) z[k] += h[r] * double(cell.kernel()(I + r, k));
  }
  std::vector<double> m(H);
  for (Index k = 0; k < H; ++k) {
    const double wi = opt.use_peepholes ? double(cell.w_i_diag()(k)) : 0.0;
    const double wf = opt.use_peepholes ? double(cell.w_f_diag()(k)) : 0.0;
    const double wo = opt.use_peepholes ? double(cell.w_o_diag()(k)) : 0.0;
    const double i = sigmoid(z[k] + wi * c[k]), f = sigmoid(z[2 * H + k] + opt.forget_bias + wf * c[k]);
    c[k] = clip(f * c[k] + i * std::tanh(z[H + k]), opt.cell_clip);
    m[k] = sigmoid(z[3 * H + k] + wo * c[k]) * std::tanh(c[k]);
  }
  if (opt.num_proj == 0) {
    h = m;
    return;
  }
  for (Index r = 0; r < R; ++r) {
    double v = 0;
    for (Index k = 0; k < H; ++k) v += m[k] * double(cell.projection()(k, r));
    h[r] = clip(v, opt.proj_clip);
  }
}

struct OptionsCase {
  const char* name;
  LSTMOptions options;
};

std::vector<OptionsCase> cases() {
  std::vector<OptionsCase> all;
  LSTMOptions o;
  o.use_peepholes = true;
  all.push_back({"peepholes", o});
  o = {};
  o.cell_clip = 0.4;  // small enough that many steps clip
  all.push_back({"cell_clip", o});
  o = {};
  o.num_proj = 3;
  all.push_back({"num_proj", o});
  o.proj_clip = 0.15;
  all.push_back({"num_proj and proj_clip", o});
  o = {};
  o.use_peepholes = true;
  o.cell_clip = 0.5;
  o.num_proj = 6;
  o.proj_clip = 0.2;
  o.forget_bias = -0.3;
  all.push_back({"all options", o});
  return all;
}

// Every parameter drawn at random, biases and peepholes included.
template <class Scalar>
LSTMCell<Scalar> random_cell(Index I, Index H, const LSTMOptions& options, Rng& rng) {
  LSTMCell<Scalar> cell(I, H, options);
  cell.for_each_parameter([&](const char*, auto& p) { fill_uniform(p, rng, 0.9); });
  return cell;
}

template <class Scalar>
LSTMState<Scalar> random_cell_state(const LSTMCell<Scalar>& cell, Index B, Rng& rng) {
  return {random_matrix<Scalar>(B, cell.hidden_size(), rng), random_matrix<Scalar>(B, cell.output_size(), rng)};
}

template <class Scalar>
void expect_matches_reference(const LSTMOptions& options, ForwardMode mode) {
  Rng rng(1);
  const Index T = 7, B = 5, I = 3, H = 4;
  const auto cell = random_cell<Scalar>(I, H, options, rng);
  const Index R = cell.output_size();
  const auto x = random_tensor<Scalar>(T, B, I, rng);
  const auto s0 = random_cell_state(cell, B, rng);
  const std::vector<int> lengths = {7, 2, 0, 5, 1};
  const auto fwd = dynamic_rnn(cell, x, lengths, s0, mode);
  const double tol = tolerance<Scalar>();
  ASSERT_EQ(fwd.outputs.dimension(2), R);
  for (Index b = 0; b < B; ++b) {
    std::vector<double> c(H), h(R);
    for (Index k = 0; k < H; ++k) c[k] = double(s0.c(b, k));
    for (Index k = 0; k < R; ++k) h[k] = double(s0.h(b, k));
    for (Index t = 0; t < lengths[b]; ++t) {
      std::vector<double> xt(I);
      for (Index k = 0; k < I; ++k) xt[k] = double(x(t, b, k));
      reference_step(cell, xt, c, h);
      for (Index k = 0; k < R; ++k) EXPECT_NEAR(double(fwd.outputs(t, b, k)), h[k], tol) << "t=" << t << " b=" << b;
    }
    for (Index k = 0; k < H; ++k) EXPECT_NEAR(double(fwd.final_state.c(b, k)), c[k], tol);
    for (Index k = 0; k < R; ++k) EXPECT_NEAR(double(fwd.final_state.h(b, k)), h[k], tol);
  }
}

TEST(LSTMOptionsTest, MatchScalarReference) {
  for (const OptionsCase& c : cases()) {
    for (ForwardMode mode : {ForwardMode::training, ForwardMode::inference}) {
      SCOPED_TRACE(testing::Message() << c.name << (mode == ForwardMode::inference ? ", inference" : ", training"));
      expect_matches_reference<double>(c.options, mode);
      expect_matches_reference<float>(c.options, mode);
    }
  }
}

// An inference pass computes what a training pass computes, bit for bit, and keeps nothing
// for backward: no tanh(c), h_{t-1} or values before the clips, c (and m with a projection)
// one row per sequence. Every option, both gate passes (the fused one and Eigen's), float32
// and bfloat16 products, 1 and 2 threads, lengths with 0 and a changing batch in one result.
template <class Scalar>
void expect_inference_pass_is_the_training_pass(const LSTMOptions& options, Precision precision, Rng& rng) {
  auto cell = random_cell<Scalar>(3, 37, options, rng);
  cell.set_precision(precision);
  const Index T = 6, B = 9, R = cell.output_size();
  const auto x = random_tensor<Scalar>(T, B, 3, rng);
  const auto s0 = random_cell_state(cell, B, rng);
  const std::vector<int> lengths = {6, 2, 0, 5, 1, 6, 3, 0, 4};
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const auto train = dynamic_rnn(cell, x, lengths, s0);
    DynamicRNNResult<LSTMCell<Scalar>> infer;
    for (int round = 0; round < 2; ++round) {  // the second reuses the result's buffers
      dynamic_rnn(cell, x, lengths, s0, infer, ForwardMode::inference);
      SCOPED_TRACE(testing::Message() << threads << " threads, round " << round);
      ASSERT_EQ(infer.outputs.dimension(2), R);
      for (Index e = 0; e < train.outputs.size(); ++e) ASSERT_EQ(infer.outputs.data()[e], train.outputs.data()[e]) << e;
      EXPECT_TRUE(infer.final_state.c == train.final_state.c);
      EXPECT_TRUE(infer.final_state.h == train.final_state.h);
      EXPECT_EQ(infer.mode, ForwardMode::inference);
      EXPECT_EQ(infer.cache.tanh_c.rows(), 0);
      EXPECT_EQ(infer.cache.h_prev.rows(), 0);
      EXPECT_EQ(infer.cache.c_raw.rows(), 0);
      EXPECT_EQ(infer.cache.h_raw.rows(), 0);
      EXPECT_EQ(infer.cache.c.rows(), B);
      EXPECT_EQ(infer.cache.m.rows(), options.num_proj > 0 ? B : 0);
      if (round == 0) {  // a shorter batch in the same result, an empty one, then the full one again
        const std::vector<int> short_lengths = {2, 2, 1, 0, 2, 1, 2, 2, 0};
        dynamic_rnn(cell, x, short_lengths, s0, infer, ForwardMode::inference);
        const auto short_train = dynamic_rnn(cell, x, short_lengths, s0);
        EXPECT_TRUE(infer.final_state.c == short_train.final_state.c);
        EXPECT_TRUE(infer.final_state.h == short_train.final_state.h);
        dynamic_rnn(cell, x, std::vector<int>(std::size_t(B), 0), s0, infer, ForwardMode::inference);
        EXPECT_TRUE(infer.final_state.c == s0.c);
        EXPECT_TRUE(infer.final_state.h == s0.h);
      }
    }
    set_num_threads(1);
  }
}

TEST(LSTMOptionsTest, InferencePassIsTheTrainingPassWithoutTheCache) {
  Rng rng(31);
  std::vector<OptionsCase> all = cases();
  all.push_back({"no options", LSTMOptions{}});
  for (const OptionsCase& c : all) {
    SCOPED_TRACE(c.name);
    expect_inference_pass_is_the_training_pass<double>(c.options, Precision::float32, rng);
    for (CpuIsa isa : {CpuIsa::portable, detected_cpu_isa()}) {  // Eigen's gate pass, then the CPU's
      WithIsa limit(isa);
      SCOPED_TRACE(to_string(isa));
      expect_inference_pass_is_the_training_pass<float>(c.options, Precision::float32, rng);
      expect_inference_pass_is_the_training_pass<float>(c.options, Precision::bfloat16, rng);
    }
  }
}

// No backward pass can follow an inference pass: dynamic_rnn_backward says so, and the same
// result object trains again after a training pass.
TEST(LSTMOptionsTest, BackwardAfterAnInferencePassThrows) {
  Rng rng(32);
  const auto cell = random_cell<double>(3, 4, LSTMOptions{}, rng);
  const auto x = random_tensor<double>(5, 2, 3, rng);
  const std::vector<int> lengths = {5, 3};
  auto fwd = dynamic_rnn(cell, x, lengths, ForwardMode::inference);
  const auto d_out = random_tensor<double>(5, 2, 4, rng);
  expect_invalid_argument([&] { dynamic_rnn_backward(cell, fwd, d_out); },
                          {"dynamic_rnn_backward", "'forward'", "ForwardMode::training", "ForwardMode::inference"});
  // The cell's own backward, called directly on an inference cache, names what is missing.
  DynamicRNNGradients<LSTMCell<double>> g(cell);
  LSTMState<double> dstate = cell.zero_state(2);
  ReusableMatrix<double> dh(fwd.schedule.total(), 4);
  dh.setZero();
  expect_invalid_argument([&] { cell.backward(fwd.schedule, fwd.cache, dh, dstate, g, nullptr, g.workspace.cell); },
                          {"cache.h_prev", "ForwardMode::inference"});
  dynamic_rnn(cell, x, lengths, cell.zero_state(2), fwd);
  EXPECT_EQ(fwd.mode, ForwardMode::training);
  EXPECT_NO_THROW(dynamic_rnn_backward(cell, fwd, d_out));
  expect_invalid_argument([&] { dynamic_rnn(cell, x, lengths, static_cast<ForwardMode>(7)); },
                          {"dynamic_rnn", "'mode'", "ForwardMode::training or ForwardMode::inference", "7"});
}

// InputGradients::skip leaves out only dLoss/dx: every option's parameter gradients (the
// peepholes' and the projection's, computed after the input-gradient product's place in
// backward) and the initial-state gradients are the same bit for bit.
TEST(LSTMOptionsTest, SkippingInputGradientsChangesNothingElse) {
  Rng rng(12);
  std::vector<OptionsCase> all = cases();
  all.push_back({"no options", LSTMOptions{}});
  for (const OptionsCase& c : all) {
    SCOPED_TRACE(c.name);
    expect_skipping_input_gradients_changes_nothing_else(random_cell<float>(3, 5, c.options, rng), 6, 7, rng);
    expect_skipping_input_gradients_changes_nothing_else(random_cell<double>(2, 4, c.options, rng), 5, 4, rng);
  }
}

TEST(LSTMOptionsTest, ClipsAreActiveInTheseCases) {
  // The gradient checks below only test the clips if some values are clipped and some not.
  for (const OptionsCase& c : cases()) {
    if (c.options.cell_clip == 0 && c.options.proj_clip == 0) continue;
    SCOPED_TRACE(c.name);
    Rng rng(2);
    const auto cell = random_cell<double>(3, 4, c.options, rng);
    const auto x = random_tensor<double>(6, 5, 3, rng);
    const auto fwd = dynamic_rnn(cell, x, {6, 3, 0, 1, 6}, random_cell_state(cell, 5, rng));
    const auto& cache = fwd.cache;
    const auto count_beyond = [](const Matrix<double>& raw, double limit) {
      return (raw.array().abs() > limit).count();
    };
    if (c.options.cell_clip > 0) {
      EXPECT_GT(count_beyond(cache.c_raw, c.options.cell_clip), 0);
      EXPECT_LT(count_beyond(cache.c_raw, c.options.cell_clip), cache.c_raw.size());
    }
    if (c.options.proj_clip > 0) {
      EXPECT_GT(count_beyond(cache.h_raw, c.options.proj_clip), 0);
      EXPECT_LT(count_beyond(cache.h_raw, c.options.proj_clip), cache.h_raw.size());
    }
  }
}

TEST(LSTMOptionsTest, GradientsMatchFiniteDifferences) {
  constexpr double kStep = 1e-5;
  for (const OptionsCase& c : cases()) {
    SCOPED_TRACE(c.name);
    Rng rng(2);
    const Index T = 6, B = 5, I = 3, H = 4;
    auto cell = random_cell<double>(I, H, c.options, rng);
    auto x = random_tensor<double>(T, B, I, rng);
    auto s0 = random_cell_state(cell, B, rng);
    const std::vector<int> lengths = {6, 3, 0, 1, 6};
    const auto w = random_tensor<double>(T, B, cell.output_size(), rng);
    const auto wf = random_cell_state(cell, B, rng);
    const auto loss = [&] {
      const auto f = dynamic_rnn(cell, x, lengths, s0);
      return dot(f.outputs, w) + dot(f.final_state.c, wf.c) + dot(f.final_state.h, wf.h);
    };
    const auto g = dynamic_rnn_backward(cell, dynamic_rnn(cell, x, lengths, s0), w, wf);
    EXPECT_LE(max_gradient_error(cell.kernel(), g.kernel, loss, kStep), 1e-6);
    EXPECT_LE(max_gradient_error(cell.bias(), g.bias, loss, kStep), 1e-6);
    if (c.options.use_peepholes) {
      EXPECT_LE(max_gradient_error(cell.w_i_diag(), g.w_i_diag, loss, kStep), 1e-6);
      EXPECT_LE(max_gradient_error(cell.w_f_diag(), g.w_f_diag, loss, kStep), 1e-6);
      EXPECT_LE(max_gradient_error(cell.w_o_diag(), g.w_o_diag, loss, kStep), 1e-6);
    }
    if (c.options.num_proj > 0) {
      EXPECT_LE(max_gradient_error(cell.projection(), g.projection, loss, kStep), 1e-6);
    }
    EXPECT_LE(max_gradient_error(x, g.inputs, loss, kStep), 1e-6);
    EXPECT_LE(max_gradient_error(s0.c, g.initial_state.c, loss, kStep), 1e-6);
    EXPECT_LE(max_gradient_error(s0.h, g.initial_state.h, loss, kStep), 1e-6);
  }
}

// With i's bias at -1000 and f's at +1000 (both saturate exactly in double), one step gives
// c_1 = c_0 exactly, so c_0 placed on or beyond cell_clip tests the clip's subgradient by
// hand: dLoss/dc_0 = dLoss/dc_1 where |c_0| <= cell_clip (the boundary included, as
// TensorFlow's clip_by_value), and 0 beyond it.
TEST(LSTMOptionsTest, CellClipSubgradientAtTheBoundary) {
  LSTMOptions o;
  o.cell_clip = 0.5;
  o.forget_bias = 0;
  LSTMCell<double> cell(1, 3, o);
  cell.kernel().setZero();
  cell.bias().setZero();
  cell.bias().head(3).setConstant(-1000);      // i: sigmoid = 0
  cell.bias().segment(6, 3).setConstant(1000); // f: sigmoid = 1
  Tensor3<double> x(1, 1, 1);
  x.setZero();
  LSTMState<double> s0 = cell.zero_state(1);
  s0.c << 0.5, -0.5, 0.5000001;  // on the boundary, on the other boundary, beyond it
  const auto fwd = dynamic_rnn(cell, x, {1}, s0);
  EXPECT_EQ(fwd.final_state.c(0, 0), 0.5);
  EXPECT_EQ(fwd.final_state.c(0, 1), -0.5);
  EXPECT_EQ(fwd.final_state.c(0, 2), 0.5);  // clipped
  LSTMState<double> d_final = cell.zero_state(1);
  d_final.c << 2, 3, 4;
  Tensor3<double> d_out(1, 1, 3);
  d_out.setZero();
  const auto g = dynamic_rnn_backward(cell, fwd, d_out, d_final);
  EXPECT_EQ(g.initial_state.c(0, 0), 2.0);
  EXPECT_EQ(g.initial_state.c(0, 1), 3.0);
  EXPECT_EQ(g.initial_state.c(0, 2), 0.0);
}

// The same for proj_clip: an identity projection of m with o saturated open gives
// h = tanh(c); c_0 = atanh(0.25) puts h on the boundary 0.25 (up to rounding, so it is set
// just inside), and a larger c_0 beyond it.
TEST(LSTMOptionsTest, ProjClipPassesInsideAndStopsBeyond) {
  LSTMOptions o;
  o.num_proj = 2;
  o.proj_clip = 0.25;
  o.forget_bias = 0;
  LSTMCell<double> cell(1, 2, o);
  cell.kernel().setZero();
  cell.bias().setZero();
  cell.bias().head(2).setConstant(-1000);       // i closed
  cell.bias().segment(4, 2).setConstant(1000);  // f open: c_1 = c_0
  cell.bias().tail(2).setConstant(1000);        // o open: m = tanh(c)
  cell.projection().setIdentity();
  Tensor3<double> x(1, 1, 1);
  x.setZero();
  LSTMState<double> s0 = cell.zero_state(1);
  s0.c << std::atanh(0.25) - 1e-12, 1.0;
  const auto fwd = dynamic_rnn(cell, x, {1}, s0);
  EXPECT_NEAR(fwd.outputs(0, 0, 0), 0.25, 1e-11);
  EXPECT_EQ(fwd.outputs(0, 0, 1), 0.25);  // clipped
  Tensor3<double> d_out(1, 1, 2);
  d_out.setConstant(1.0);
  const auto g = dynamic_rnn_backward(cell, fwd, d_out);
  // dh/dc_0 = 1 - tanh(c)^2 inside the clip, 0 beyond.
  EXPECT_NEAR(g.initial_state.c(0, 0), 1 - 0.25 * 0.25, 1e-10);
  EXPECT_EQ(g.initial_state.c(0, 1), 0.0);
}

TEST(LSTMOptionsTest, ShapesDescriptionAndCheckpoint) {
  LSTMOptions o;
  o.use_peepholes = true;
  o.num_proj = 5;
  o.proj_clip = 2;
  o.cell_clip = 3;
  LSTMCell<float> cell(4, 8, o);
  EXPECT_EQ(cell.output_size(), 5);
  EXPECT_EQ(cell.kernel().rows(), 4 + 5);
  EXPECT_EQ(cell.kernel().cols(), 32);
  EXPECT_EQ(cell.projection().rows(), 8);
  EXPECT_EQ(cell.projection().cols(), 5);
  EXPECT_EQ(cell.w_o_diag().size(), 8);
  EXPECT_EQ(cell.zero_state(3).c.cols(), 8);
  EXPECT_EQ(cell.zero_state(3).h.cols(), 5);
  EXPECT_EQ(cell.description(), "LSTMCell(input_size=4, hidden_size=8, use_peepholes=true, cell_clip=3, num_proj=5, proj_clip=2)");
  EXPECT_EQ(LSTMCell<float>(4, 8).description(), "LSTMCell(input_size=4, hidden_size=8)");
  std::vector<std::string> names;
  cell.for_each_parameter([&](const char* name, auto&) { names.push_back(name); });
  EXPECT_EQ(names, (std::vector<std::string>{"kernel", "bias", "w_i_diag", "w_f_diag", "w_o_diag", "projection/kernel"}));

  Rng rng(3);
  cell.for_each_parameter([&](const char*, auto& p) { fill_uniform(p, rng, 1.0); });
  Checkpoint<float> saved;
  saved.add("lstm", cell);
  LSTMCell<float> other(4, 8, o);
  Checkpoint<float> loaded;
  loaded.add("lstm", other);
  loaded.load(safetensors::File::parse(saved.to_bytes(1), "memory"));
  EXPECT_TRUE(identical(other.projection(), cell.projection()));
  EXPECT_TRUE(identical(other.w_f_diag(), cell.w_f_diag()));
  LSTMCell<float> plain(4, 8);  // another description
  Checkpoint<float> refused;
  refused.add("lstm", plain);
  EXPECT_THROW(refused.load(safetensors::File::parse(saved.to_bytes(1), "memory")), CheckpointError);
}

TEST(LSTMOptionsTest, TrainsWithRMSProp) {
  // Every parameter an option adds gets its optimiser update.
  LSTMOptions o;
  o.use_peepholes = true;
  o.num_proj = 3;
  LSTMCell<double> cell(2, 4, o);
  Rng rng(4);
  const auto x = random_tensor<double>(3, 2, 2, rng);
  const auto d = random_tensor<double>(3, 2, 3, rng);
  const auto g = dynamic_rnn_backward(cell, dynamic_rnn(cell, x, {3, 2}), d);
  const Vector<double> w_o = cell.w_o_diag();
  const Matrix<double> projection = cell.projection();
  RMSProp<double> opt(0.01);
  opt.apply(cell, g);
  EXPECT_FALSE(identical(cell.w_o_diag(), w_o));
  EXPECT_FALSE(identical(cell.projection(), projection));
}

TEST(LSTMOptionsTest, BadOptions) {
  LSTMOptions o;
  o.cell_clip = -1;
  expect_invalid_argument([&] { LSTMCell<float>(2, 3, o); }, {"LSTMCell", "'options.cell_clip'", ">= 0", "-1"});
  o = {};
  o.proj_clip = 1;
  expect_invalid_argument([&] { LSTMCell<float>(2, 3, o); }, {"'options.proj_clip'", "options.num_proj is 0"});
  o = {};
  o.num_proj = -2;
  expect_invalid_argument([&] { LSTMCell<float>(2, 3, o); }, {"'options.num_proj'", ">= 0", "-2"});
  o = {};
  o.cell_clip = std::numeric_limits<double>::infinity();
  expect_invalid_argument([&] { LSTMCell<float>(2, 3, o); }, {"'options.cell_clip'", "finite"});
  o = {};
  o.num_proj = 2;
  LSTMCell<double> cell(3, 4, o);
  Rng rng(5);
  expect_invalid_argument([&] { dynamic_rnn(cell, random_tensor<double>(2, 1, 3, rng), {2}, LSTMState<double>::zeros(1, 4)); },
                          {"dynamic_rnn", "'initial_state.h'", "[1, 2]", "[1, 4]"});
}

}  // namespace
}  // namespace dynrnn::test
