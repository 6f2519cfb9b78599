// Optimisers, gradient clipping and learning-rate schedules against golden values written by
// tests/data/make_optimizer_golden.py (torch.optim, torch.nn.utils.clip_grad_norm_ and
// StepLR in double; TensorFlow 1.x's Adam and schedules from their documented formulas),
// and how optimiser state follows a parameter whose storage or object moves.
#include "golden.hpp"

#include <dynrnn/dynrnn.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace {

using namespace dynrnn;
using json = nlohmann::json;

const json& golden() {
  static const json doc = [] {
    std::ifstream in(test::kData + "/optimizer_golden.json");
    if (!in) throw std::runtime_error("cannot open optimizer_golden.json");
    return json::parse(in);
  }();
  return doc;
}

template <class Scalar>
Matrix<Scalar> matrix(const json& rows) {
  Matrix<Scalar> m(Index(rows.size()), Index(rows[0].size()));
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) m(i, j) = Scalar(rows[std::size_t(i)][std::size_t(j)].get<double>());
  return m;
}

// The largest |a - b| / max(|b|, floor) over the elements: relative for floor 1e-300,
// relative to 1 for values under 1 with floor 1.
template <class A, class B>
double relative_error(const A& a, const B& b, double floor = 1e-300) {
  double worst = 0;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j) {
      const double x = double(a(i, j)), y = double(b(i, j));
      worst = std::max(worst, std::abs(x - y) / std::max(std::abs(y), floor));
    }
  return worst;
}

// Any of the library's optimisers, built from a golden case's options.
template <class Scalar>
using AnyOptimizer = std::variant<Adam<Scalar>, AdamW<Scalar>, SGD<Scalar>, Adagrad<Scalar>, RMSProp<Scalar>>;

template <class Scalar>
AnyOptimizer<Scalar> make_optimizer(const json& c) {
  const json& o = c["options"];
  const auto v = [&](const char* key) { return Scalar(o[key].get<double>()); };
  const std::string kind = c["optimizer"];
  if (kind == "adam" || kind == "adamw" || kind == "adam_tf") {
    AdamOptions<Scalar> a = kind == "adam_tf" ? AdamOptions<Scalar>::tensorflow(v("lr")) : AdamOptions<Scalar>{};
    a.learning_rate = v("lr");
    a.beta1 = v("beta1");
    a.beta2 = v("beta2");
    a.epsilon = v("eps");
    a.weight_decay = v("weight_decay");
    a.amsgrad = o["amsgrad"].get<bool>();
    if (kind == "adamw") return AdamW<Scalar>(a);
    return Adam<Scalar>(a);
  }
  if (kind == "sgd") {
    SGDOptions<Scalar> s;
    s.learning_rate = v("lr");
    s.momentum = v("momentum");
    s.dampening = v("dampening");
    s.weight_decay = v("weight_decay");
    s.nesterov = o["nesterov"].get<bool>();
    return SGD<Scalar>(s);
  }
  if (kind == "adagrad") {
    AdagradOptions<Scalar> a;
    a.learning_rate = v("lr");
    a.lr_decay = v("lr_decay");
    a.weight_decay = v("weight_decay");
    a.initial_accumulator_value = v("initial_accumulator_value");
    a.epsilon = v("eps");
    return Adagrad<Scalar>(a);
  }
  if (kind == "rmsprop_torch") {
    auto r = RMSPropOptions<Scalar>::pytorch(v("lr"));
    r.decay = v("alpha");
    r.epsilon = v("eps");
    r.momentum = v("momentum");
    r.centered = o["centered"].get<bool>();
    return RMSProp<Scalar>(r);
  }
  throw std::runtime_error("unknown optimizer " + kind);
}

// Five updates of the golden parameter through `param` (any writable Eigen object of the
// golden shape); returns the worst relative error against the golden values over the steps.
template <class Scalar, class Param>
double run_golden_case(const json& c, Param& param) {
  AnyOptimizer<Scalar> opt = make_optimizer<Scalar>(c);
  param = matrix<Scalar>(golden()["theta0"]);
  double worst = 0;
  for (std::size_t k = 0; k < golden()["grads"].size(); ++k) {
    const Matrix<Scalar> g = matrix<Scalar>(golden()["grads"][k]);
    std::visit([&](auto& o) { o.apply(param, g); }, opt);
    // float: relative to max(|expected|, 1), as its rounding is absolute near 0
    const double floor = std::is_same_v<Scalar, float> ? 1.0 : 1e-300;
    worst = std::max(worst, relative_error(param, matrix<double>(c["expected"][k]), floor));
  }
  return worst;
}

TEST(Optimizers, MatchGoldenValuesInDouble) {
  ASSERT_GE(golden()["cases"].size(), 20u);
  for (const json& c : golden()["cases"]) {
    Matrix<double> param;
    const double err = run_golden_case<double>(c, param);
    EXPECT_LE(err, 1e-12) << c["name"];
    std::printf("  %-34s max relative error %.2e\n", c["name"].get<std::string>().c_str(), err);
  }
}

TEST(Optimizers, MatchGoldenValuesThroughColumnMajorBlocksAndFloat) {
  for (const json& c : golden()["cases"]) {
    // A column-major block of a larger matrix: another storage order and an expression.
    Eigen::MatrixXd outer = Eigen::MatrixXd::Constant(4, 5, 7.0);
    auto block = outer.block(1, 1, 2, 3);
    EXPECT_LE(run_golden_case<double>(c, block), 1e-12) << c["name"];
    EXPECT_TRUE((outer.row(0).array() == 7.0).all() && (outer.col(4).array() == 7.0).all()) << c["name"];
    Matrix<float> f;
    EXPECT_LE(run_golden_case<float>(c, f), 1e-5) << c["name"];
  }
}

// A plain matrix is updated as one flat array, in chunks of entries shared between threads;
// a block of the same values is updated a block of rows at a time. Every rule must update
// every entry once, the same on 1 and 2 threads, on a parameter large enough to be split.
// The two paths agree to rounding, not bit for bit: Eigen's packet square root (a reciprocal
// estimate refined once, under EIGEN_FAST_MATH) can differ by an ulp from its scalar one,
// and where the chunks start decides which entries take which.
TEST(Optimizers, FlatAndBlockUpdatesAgree) {
  Rng rng(5);
  Matrix<float> flat(300, 301);  // 90300 entries: more than one thread's chunk
  fill_uniform(flat, rng, 1.0f);
  std::vector<Matrix<float>> grads(3, Matrix<float>(300, 301));
  for (auto& g : grads) fill_uniform(g, rng, 1.0f);
  AdamOptions<float> amsgrad;
  amsgrad.amsgrad = true;
  amsgrad.weight_decay = 0.01f;
  SGDOptions<float> nesterov;
  nesterov.momentum = 0.9f;
  nesterov.nesterov = true;
  auto centered = RMSPropOptions<float>::pytorch(0.01f);
  centered.centered = true;
  centered.momentum = 0.5f;
  const std::vector<AnyOptimizer<float>> kinds = {Adam<float>(amsgrad), AdamW<float>(0.01f), SGD<float>(nesterov),
                                                  Adagrad<float>(0.1f), RMSProp<float>(centered)};
  const int threads = max_threads();
  for (const auto& kind : kinds) {
    std::vector<Matrix<float>> flat_runs;
    for (int t : {1, 2}) {
      set_num_threads(t);
      AnyOptimizer<float> opt = kind;
      Matrix<float> p = flat;
      for (const auto& g : grads) std::visit([&](auto& o) { o.apply(p, g); }, opt);
      flat_runs.push_back(p);
    }
    set_num_threads(threads);
    EXPECT_TRUE(test::identical(flat_runs[0], flat_runs[1])) << kind.index();

    AnyOptimizer<float> opt = kind;
    Matrix<float> outer = Matrix<float>::Zero(302, 301);
    outer.middleRows(1, 300) = flat;
    auto block = outer.middleRows(1, 300);
    for (const auto& g : grads) std::visit([&](auto& o) { o.apply(block, g); }, opt);
    const Matrix<float> moved_by_block = Matrix<float>(block) - flat, moved_flat = flat_runs[0] - flat;
    EXPECT_GT(moved_flat.cwiseAbs().minCoeff(), 0.0f) << kind.index();  // every entry updated
    EXPECT_LE((moved_flat - moved_by_block).cwiseAbs().maxCoeff(), 1e-6f * moved_by_block.cwiseAbs().maxCoeff())
        << kind.index();
  }
}

TEST(Optimizers, LayerApplyEqualsApplyingEachParameter) {
  LSTMCell<double> a(2, 3), b(2, 3);
  b.kernel() = a.kernel();
  b.bias() = a.bias();
  LSTMGradients<double> g = a.make_gradients();
  Rng rng(3);
  fill_uniform(g.kernel, rng, 1.0);
  fill_uniform(g.bias, rng, 1.0);
  Adam<double> whole(0.01), each(0.01);
  for (int step = 0; step < 3; ++step) {
    whole.apply(a, g);
    each.apply(b.kernel(), g.kernel);
    each.apply(b.bias(), g.bias);
  }
  EXPECT_EQ(a.kernel(), b.kernel());
  EXPECT_EQ(a.bias(), b.bias());
  EXPECT_EQ(whole.slot_count(), 2u);
  EXPECT_EQ(whole.find_slots(a.kernel())->step, 3);
}

// ---------------------------------------------------------------------------------------
// State keying.

TEST(OptimizerState, SurvivesAnImportIntoTheSameCell) {
  LSTMCell<double> cell(3, 4);
  RMSProp<double> opt(0.1);
  LSTMGradients<double> g = cell.make_gradients();
  Rng rng(5);
  fill_uniform(g.kernel, rng, 1.0);
  fill_uniform(g.bias, rng, 1.0);
  opt.apply(cell, g);
  opt.apply(cell, g);
  const Eigen::ArrayXd ms = opt.find_slots(cell.kernel())->arrays[0];
  ASSERT_FALSE((ms == 1.0).all());  // moved away from TensorFlow's starting value
  const double* storage = cell.kernel().data();

  import_pytorch_lstm(cell, test::kData + "/lstm_pytorch.safetensors");
  EXPECT_EQ(cell.kernel().data(), storage);  // written in place
  EXPECT_EQ(opt.slot_count(), 2u);           // no stale third slot
  ASSERT_NE(opt.find_slots(cell.kernel()), nullptr);
  EXPECT_TRUE((opt.find_slots(cell.kernel())->arrays[0] == ms).all());
  opt.apply(cell, g);
  EXPECT_EQ(opt.slot_count(), 2u);
}

TEST(OptimizerState, FollowsStorageThatMovesUnderTheSameObject) {
  Adam<double> opt(0.1);
  Matrix<double> p = Matrix<double>::Ones(2, 3), g = Matrix<double>::Constant(2, 3, 0.5);
  opt.apply(p, g);
  const Eigen::ArrayXd m = opt.find_slots(p)->arrays[0];
  const double* before = p.data();
  p = Matrix<double>(Matrix<double>::Ones(2, 3));  // move-assigned: new storage, same object
  ASSERT_NE(p.data(), before);
  ASSERT_NE(opt.find_slots(p), nullptr);
  EXPECT_TRUE((opt.find_slots(p)->arrays[0] == m).all());
  opt.apply(p, g);
  EXPECT_EQ(opt.slot_count(), 1u);
  EXPECT_EQ(opt.find_slots(p)->step, 2);
}

TEST(OptimizerState, FollowsAnObjectMovedWithItsStorage) {
  SGDOptions<double> o;
  o.learning_rate = 0.1;
  o.momentum = 0.9;
  SGD<double> opt(o);
  std::vector<Matrix<double>> params;
  params.push_back(Matrix<double>::Ones(2, 2));
  const Matrix<double> g = Matrix<double>::Constant(2, 2, 0.5);
  opt.apply(params[0], g);
  const double* storage = params[0].data();
  params.reserve(64);  // moves the Matrix object; its heap storage goes with it
  ASSERT_EQ(params[0].data(), storage);
  opt.apply(params[0], g);
  EXPECT_EQ(opt.slot_count(), 1u);
  EXPECT_EQ(opt.find_slots(params[0])->step, 2);
}

TEST(OptimizerState, RefusesAParameterWhoseShapeChanged) {
  Adam<double> opt(0.1);
  Matrix<double> p = Matrix<double>::Ones(2, 3);
  opt.apply(p, Matrix<double>::Ones(2, 3));
  p.resize(3, 2);
  EXPECT_THROW(opt.apply(p, Matrix<double>::Ones(3, 2)), std::invalid_argument);
  opt.reset();
  EXPECT_NO_THROW(opt.apply(p, Matrix<double>::Ones(3, 2)));
}

TEST(OptimizerState, FindSlotsNeverCreatesState) {
  Adagrad<double> opt(0.1);
  Matrix<double> p = Matrix<double>::Ones(2, 3);
  EXPECT_EQ(opt.find_slots(p), nullptr);
  EXPECT_EQ(opt.slot_count(), 0u);
  opt.slots(p);
  EXPECT_EQ(opt.slot_count(), 1u);
  EXPECT_TRUE((opt.find_slots(p)->arrays[0] == 0.0).all());
}

// ---------------------------------------------------------------------------------------
// Clipping.

TEST(Clipping, GlobalNormMatchesPyTorch) {
  const json& t = golden()["clip_tensors"];
  for (const json& c : golden()["clips"]) {
    Matrix<double> a = matrix<double>(t[0]);
    Vector<double> b(3);
    for (int i = 0; i < 3; ++i) b(i) = t[1][std::size_t(i)].get<double>();
    Matrix<double> d = matrix<double>(t[2]);
    const double norm = clip_by_global_norm(c["max_norm"].get<double>(), a, b, d);
    EXPECT_NEAR(norm, c["norm"].get<double>(), 1e-12 * c["norm"].get<double>());
    EXPECT_LE(relative_error(a, matrix<double>(c["clipped"][0])), 1e-12);
    Matrix<double> b_expected(3, 1);
    for (int i = 0; i < 3; ++i) b_expected(i, 0) = c["clipped"][1][std::size_t(i)].get<double>();
    EXPECT_LE(relative_error(b, b_expected), 1e-12);
    EXPECT_LE(relative_error(d, matrix<double>(c["clipped"][2])), 1e-12);
  }
}

TEST(Clipping, GlobalNormCoversGradientStructsAndLeavesSmallNormsAlone) {
  LSTMCell<double> cell(2, 3);
  Dense<double> dense(3, 2);
  LSTMGradients<double> gl = cell.make_gradients();
  DenseGradients<double> gd = dense.make_gradients();
  Rng rng(9);
  fill_uniform(gl.kernel, rng, 1.0);
  fill_uniform(gd.weight, rng, 1.0);
  const double expected = std::sqrt(gl.kernel.squaredNorm() + gd.weight.squaredNorm());
  const LSTMGradients<double> gl0 = gl;
  EXPECT_NEAR(clip_by_global_norm(1e6, gl, gd), expected, 1e-12 * expected);
  EXPECT_EQ(gl.kernel, gl0.kernel);  // under the limit: unchanged, bit for bit
  const double norm = clip_by_global_norm(0.5, gl, gd);
  EXPECT_NEAR(norm, expected, 1e-12 * expected);
  EXPECT_NEAR(std::sqrt(gl.kernel.squaredNorm() + gd.weight.squaredNorm()), 0.5, 1e-6);
}

TEST(Clipping, NonFiniteNorms) {
  const double inf = std::numeric_limits<double>::infinity();
  Matrix<double> a(1, 2);
  a << 1.0, inf;
  const Matrix<double> a0 = a;
  EXPECT_THROW(clip_by_global_norm(GlobalNormClip<double>{1.0, NonFiniteNorm::error}, a), std::domain_error);
  EXPECT_TRUE(a.cwiseEqual(a0).all());
  EXPECT_EQ(clip_by_global_norm(GlobalNormClip<double>{1.0, NonFiniteNorm::leave}, a), inf);
  EXPECT_TRUE(a.cwiseEqual(a0).all());
  // PyTorch's default: scaled by max_norm / (inf + eps) = 0; 0·inf is NaN.
  EXPECT_EQ(clip_by_global_norm(1.0, a), inf);
  EXPECT_EQ(a(0, 0), 0.0);
  EXPECT_TRUE(std::isnan(a(0, 1)));
}

TEST(Clipping, ByValueClampsEveryElement) {
  Matrix<double> a(2, 2);
  a << -3.0, 0.5, 2.0, std::nan("");
  Vector<double> b(2);
  b << 10.0, -0.25;
  clip_by_value(-1.0, 1.0, a, b);
  EXPECT_EQ(a(0, 0), -1.0);
  EXPECT_EQ(a(0, 1), 0.5);
  EXPECT_EQ(a(1, 0), 1.0);
  EXPECT_TRUE(std::isnan(a(1, 1)));
  EXPECT_EQ(b(0), 1.0);
  EXPECT_EQ(b(1), -0.25);
}

// ---------------------------------------------------------------------------------------
// Schedules.

template <class Schedule>
void expect_schedule(const Schedule& s, const char* name) {
  const json& expected = golden()["schedules"][name];
  ASSERT_EQ(expected.size(), 40u);
  for (std::size_t t = 0; t < expected.size(); ++t) {
    const double want = expected[t].get<double>();
    EXPECT_NEAR(s(std::int64_t(t)), want, 1e-12 * want) << name << " at step " << t;
  }
}

TEST(Schedules, MatchGoldenValues) {
  expect_schedule(StepDecay<double>(0.5, 7, 0.3), "step_decay");
  expect_schedule(ExponentialDecay<double>(0.5, 10, 0.8), "exponential");
  expect_schedule(ExponentialDecay<double>(0.5, 10, 0.8, true), "exponential_staircase");
  expect_schedule(CosineDecay<double>(0.5, 25, 0.1), "cosine");
  expect_schedule(LinearWarmup(5, CosineDecay<double>(0.5, 25, 0.1)), "warmup_cosine");
}

TEST(Schedules, SetTheOptimizersRate) {
  Adam<float> adam(1.0f);
  set_learning_rate(adam, ExponentialDecay<float>(0.5f, 10, 0.5f, true), 25);
  EXPECT_FLOAT_EQ(adam.learning_rate(), 0.125f);
  EXPECT_FLOAT_EQ(adam.options().learning_rate, 0.125f);
}

// ---------------------------------------------------------------------------------------
// Bad input.

template <class F>
void expect_invalid(F&& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one naming " << fragment;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Optimizers, RejectBadHyperParameters) {
  expect_invalid([] { Adam<float> a(-0.1f); }, "'learning_rate'");
  expect_invalid([] { AdamW<float> a(0.1f, -1.0f); }, "'weight_decay'");
  expect_invalid([] { SGD<float> s(-1.0f); }, "'learning_rate'");
  expect_invalid([] { Adagrad<float> a(-1.0f); }, "'learning_rate'");
  expect_invalid([] { RMSProp<float> r(-1.0f); }, "'learning_rate'");
  expect_invalid([] { Adam<float>(1e-3f).set_learning_rate(-1.0f); }, "'lr'");
  expect_invalid([] { Adam<float>(1e-3f).set_learning_rate(std::nanf("")); }, "'lr'");
  for (float beta : {1.0f, -0.1f, 1.5f}) {
    AdamOptions<float> o;
    o.beta1 = beta;
    expect_invalid([&] { Adam<float> a(o); }, "'beta1'");
    o.beta1 = 0.9f;
    o.beta2 = beta;
    expect_invalid([&] { AdamW<float> a(o); }, "'beta2'");
  }
  SGDOptions<float> s;
  s.nesterov = true;
  expect_invalid([&] { SGD<float> x(s); }, "'nesterov'");
  s.momentum = 0.9f;
  s.dampening = 1.5f;
  s.nesterov = false;
  expect_invalid([&] { SGD<float> x(s); }, "'dampening'");
  AdagradOptions<float> a;
  a.initial_accumulator_value = -1;
  expect_invalid([&] { Adagrad<float> x(a); }, "'initial_accumulator_value'");
}

TEST(Optimizers, RejectMismatchedShapes) {
  Matrix<float> p = Matrix<float>::Zero(2, 3);
  expect_invalid([&] { Adam<float>().apply(p, Matrix<float>::Zero(3, 2)); }, "'grad'");
  expect_invalid([&] { SGD<float>().apply(p, Matrix<float>::Zero(2, 2)); }, "'grad'");
  expect_invalid([&] { Adagrad<float>().apply(p, Matrix<float>::Zero(1, 3)); }, "'grad'");
  expect_invalid([&] { AdamW<float>().apply(p, Matrix<float>::Zero(2, 4)); }, "'grad'");
}

TEST(Clipping, RejectsBadBounds) {
  Matrix<float> g = Matrix<float>::Ones(2, 2);
  expect_invalid([&] { clip_by_global_norm(-1.0f, g); }, "'max_norm'");
  expect_invalid([&] { clip_by_global_norm(std::nanf(""), g); }, "'max_norm'");
  expect_invalid([&] { clip_by_value(1.0f, -1.0f, g); }, "'max_value'");
}

TEST(Schedules, RejectBadArguments) {
  expect_invalid([] { StepDecay<float>(0.1f, 0, 0.5f); }, "'step_size'");
  expect_invalid([] { ExponentialDecay<float>(-0.1f, 10, 0.5f); }, "'initial'");
  expect_invalid([] { CosineDecay<float>(0.1f, 10, 2.0f); }, "'alpha'");
  expect_invalid([] { LinearWarmup(0, CosineDecay<float>(0.1f, 10)); }, "'warmup_steps'");
  expect_invalid([] { CosineDecay<float>(0.1f, 10)(-1); }, "'step'");
}

}  // namespace
