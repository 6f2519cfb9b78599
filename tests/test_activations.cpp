// The gate activations (core/activations.hpp) and the LSTM's gate pass (cells/lstm_gates.hpp):
// the AVX-512 functions against the same functions in double, and the fused gate pass
// against the portable one (Eigen's expressions), which the fallback runs.
#include "reduced_precision_support.hpp"
#include "support.hpp"

#include <dynrnn/cells/lstm_gates.hpp>
#include <dynrnn/core/activations.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace dynrnn {
namespace {

#define SKIP_WITHOUT_AVX512()                                                                           \
  if (!detail::fast_activations())                                                                      \
  GTEST_SKIP() << "this CPU (or compiler) has no AVX-512, or the level is limited; the portable gate " \
                  "pass's tests still run: cpu_isa() = "                                               \
               << to_string(cpu_isa())

// x over [lo, hi) in steps that hit no round number, and the values around tanh's and the
// exponential's edges.
std::vector<float> grid(double lo, double hi) {
  std::vector<float> x;
  for (double v = lo; v < hi; v += 0.000731) x.push_back(float(v));
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-8f, -1e-8f, 0.5f, -0.5f, 0.34657f, -0.34657f})
    x.push_back(v);
  return x;
}

double worst_relative_error(const std::vector<float>& x, const std::vector<float>& y, double (*f)(double)) {
  double worst = 0;
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double ref = f(double(x[k]));
    if (ref != 0) worst = std::max(worst, std::abs(double(y[k]) - ref) / std::abs(ref));
  }
  return worst;
}

double tanh_double(double x) { return std::tanh(x); }

TEST(Activations, LogisticIsWithinFourTenMillionthsOfDouble) {
  SKIP_WITHOUT_AVX512();
  const std::vector<float> x = grid(-80, 80);
  std::vector<float> y(x.size());
  detail::logistic(x.data(), y.data(), Index(x.size()), 0.0f, true);
  EXPECT_LT(worst_relative_error(x, y, test::sigmoid), 4e-7);
  // The bias is added before the function.
  std::vector<float> shifted(x.size());
  detail::logistic(x.data(), shifted.data(), Index(x.size()), 1.0f, true);
  for (std::size_t k = 0; k < x.size(); k += 997)
    EXPECT_NEAR(shifted[k], test::sigmoid(double(x[k] + 1.0f)), 4e-7) << "x = " << x[k];
}

TEST(Activations, TanhIsWithinFourTenMillionthsOfDoubleAlsoNearZero) {
  SKIP_WITHOUT_AVX512();
  const std::vector<float> x = grid(-20, 20);
  std::vector<float> y(x.size());
  detail::tanh(x.data(), y.data(), Index(x.size()), true);
  EXPECT_LT(worst_relative_error(x, y, tanh_double), 4e-7);
}

TEST(Activations, NanStaysNanAndInfinitiesGiveTheLimits) {
  SKIP_WITHOUT_AVX512();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {std::nanf(""), inf, -inf, 1e30f, -1e30f};
  std::vector<float> lg(x.size()), th(x.size());
  detail::logistic(x.data(), lg.data(), Index(x.size()), 0.0f, true);
  detail::tanh(x.data(), th.data(), Index(x.size()), true);
  EXPECT_TRUE(std::isnan(lg[0]));
  EXPECT_TRUE(std::isnan(th[0]));
  EXPECT_EQ(lg[1], 1.0f);
  EXPECT_EQ(lg[3], 1.0f);
  EXPECT_LT(lg[2], 1e-30f);  // logistic(-80), the clamp's
  EXPECT_GE(lg[2], 0.0f);
  EXPECT_EQ(th[1], 1.0f);
  EXPECT_EQ(th[2], -1.0f);
  EXPECT_EQ(th[3], 1.0f);
  EXPECT_EQ(th[4], -1.0f);
}

TEST(Activations, EveryLengthWritesItsElementsAndNoMore) {
  SKIP_WITHOUT_AVX512();
  for (Index n = 0; n <= 40; ++n) {
    std::vector<float> x(std::size_t(n) + 8), y(std::size_t(n) + 8, 7.0f), t(std::size_t(n) + 8, 7.0f);
    for (Index k = 0; k < n + 8; ++k) x[std::size_t(k)] = 0.1f * float(k) - 1.0f;
    detail::logistic(x.data(), y.data(), n, 0.0f, true);
    detail::tanh(x.data(), t.data(), n, true);
    for (Index k = 0; k < n + 8; ++k) {
      const float xk = x[std::size_t(k)];
      EXPECT_NEAR(y[std::size_t(k)], k < n ? test::sigmoid(xk) : 7.0, 1e-6) << "n = " << n << ", k = " << k;
      EXPECT_NEAR(t[std::size_t(k)], k < n ? std::tanh(xk) : 7.0, 1e-6) << "n = " << n << ", k = " << k;
    }
  }
}

TEST(Activations, ThePortableLevelAndDoubleUseEigen) {
  {
    test::WithIsa portable(CpuIsa::portable);
    EXPECT_FALSE(detail::fast_activations());
  }
  // double: Eigen's functions whatever `fast` says, so within double's rounding.
  const std::vector<double> x = {-30, -9.5, -1, 0, 1e-9, 0.3, 2, 30};
  std::vector<double> y(x.size()), t(x.size());
  detail::logistic(x.data(), y.data(), Index(x.size()), 0.0, true);
  detail::tanh(x.data(), t.data(), Index(x.size()), true);
  for (std::size_t k = 0; k < x.size(); ++k) {
    EXPECT_NEAR(y[k], test::sigmoid(x[k]), 1e-15 * std::max(1.0, y[k]) + 1e-300) << "x = " << x[k];
    EXPECT_NEAR(t[k], std::tanh(x[k]), 1e-15) << "x = " << x[k];
  }
}

// Two rows' gate pass both ways, for H units, with or without peepholes and a cell clip:
// every output of the fused pass within 1e-6 of the portable one's. The first row is
// computed with next_row set (the fused pass fetches the second row's lines meanwhile).
// Then each pass again without keep, in place, as an inference pass runs it.
void expect_gate_passes_agree(Index H, bool peepholes, float cell_clip) {
  Rng rng(Index(H) * 7 + (peepholes ? 1 : 0));
  const auto draw = [&](Index n, double scale) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& e : v) e = float(uniform(rng, -scale, scale));
    return v;
  };
  const Index rows = 2;
  const std::vector<float> g0 = draw(rows * 4 * H, 6), cp = draw(rows * H, 2), w = draw(3 * H, 1);
  struct Out {
    std::vector<float> g, c, tc, m, c_raw;
  } out[2];
  for (int fast = 0; fast < 2; ++fast) {
    Out& o = out[fast];
    o.g = g0;
    for (auto* v : {&o.c, &o.tc, &o.m, &o.c_raw}) v->assign(std::size_t(rows * H), 0);
    for (Index r = 0; r < rows; ++r)
      detail::lstm_gates<float>({o.g.data() + r * 4 * H, cp.data() + r * H, o.c.data() + r * H, o.tc.data() + r * H,
                                 o.m.data() + r * H, cell_clip > 0 ? o.c_raw.data() + r * H : nullptr,
                                 peepholes ? w.data() : nullptr, peepholes ? w.data() + H : nullptr,
                                 peepholes ? w.data() + 2 * H : nullptr, 1.0f, cell_clip, r + 1 < rows, true},
                                H, fast == 1);
  }
  // Eigen's logistic is within 7.1e-4 relative of the exact one near x = -9 (an output of
  // about 1.2e-4), its tanh and the fused pass's functions within 4e-7: outputs agree within
  // 1e-6 absolute.
  const auto expect_near = [&](const char* name, const std::vector<float>& a, const std::vector<float>& b) {
    for (std::size_t k = 0; k < a.size(); ++k)
      ASSERT_NEAR(a[k], b[k], 1e-6) << name << "[" << k << "], H = " << H << ", peepholes " << peepholes
                                    << ", cell_clip " << cell_clip;
  };
  expect_near("gates", out[1].g, out[0].g);
  expect_near("c", out[1].c, out[0].c);
  expect_near("tanh_c", out[1].tc, out[0].tc);
  expect_near("m", out[1].m, out[0].m);
  expect_near("c_raw", out[1].c_raw, out[0].c_raw);
  // Without keep (an inference pass), c updated in place over c_{t-1}: c and m the same bits
  // as the pass that keeps everything, on both paths, and tanh(c) and c_raw not needed.
  for (int fast = 0; fast < 2; ++fast) {
    std::vector<float> g = g0, c = cp, m(std::size_t(rows * H), 0);
    for (Index r = 0; r < rows; ++r)
      detail::lstm_gates<float>({g.data() + r * 4 * H, c.data() + r * H, c.data() + r * H, nullptr, m.data() + r * H,
                                 nullptr, peepholes ? w.data() : nullptr, peepholes ? w.data() + H : nullptr,
                                 peepholes ? w.data() + 2 * H : nullptr, 1.0f, cell_clip, r + 1 < rows, false},
                                H, fast == 1);
    for (std::size_t k = 0; k < c.size(); ++k) {
      ASSERT_EQ(c[k], out[fast].c[k]) << "in place, fast " << fast << ", c[" << k << "], H = " << H;
      ASSERT_EQ(m[k], out[fast].m[k]) << "in place, fast " << fast << ", m[" << k << "], H = " << H;
    }
  }
  if (cell_clip > 0) {
    bool clipped = false;
    for (float v : out[1].c_raw) clipped = clipped || std::abs(v) > cell_clip;
    EXPECT_TRUE(clipped) << "the test's draw should reach the clip";
    for (float v : out[1].c) EXPECT_LE(std::abs(v), cell_clip);
  }
}

// Units in whole calls of four packets (64), and every tail after them, of one to four
// packets, the last one whole or cut.
TEST(LstmGates, TheFusedPassAgreesWithThePortableOne) {
  SKIP_WITHOUT_AVX512();
  for (Index H : {1, 15, 16, 17, 37, 50, 64, 81, 100, 127, 256}) {
    expect_gate_passes_agree(H, false, 0);
    expect_gate_passes_agree(H, true, 0);
    expect_gate_passes_agree(H, true, 0.75f);
  }
}

// The portable pass, which CPUs without AVX-512 run, against the LSTM's equations in double.
TEST(LstmGates, ThePortablePassComputesTheCellsEquations) {
  const Index H = 19;
  Rng rng(5);
  std::vector<float> g(4 * H), cp(H), w(3 * H), c(H), tc(H), m(H), c_raw(H);
  for (float& e : g) e = float(uniform(rng, -4, 4));
  for (float& e : cp) e = float(uniform(rng, -2, 2));
  for (float& e : w) e = float(uniform(rng, -1, 1));
  const std::vector<float> g0 = g;
  const float clip = 0.9f, forget_bias = 1.0f;
  detail::lstm_gates<float>({g.data(), cp.data(), c.data(), tc.data(), m.data(), c_raw.data(), w.data(), w.data() + H,
                             w.data() + 2 * H, forget_bias, clip, false, true},
                            H, false);
  for (Index u = 0; u < H; ++u) {
    const std::size_t k = std::size_t(u);
    const double i = test::sigmoid(g0[k] + double(w[k]) * cp[k]);
    const double j = std::tanh(double(g0[k + H]));
    const double f = test::sigmoid(g0[k + 2 * H] + forget_bias + double(w[k + H]) * cp[k]);
    const double raw = f * cp[k] + i * j, cu = std::min<double>(clip, std::max<double>(-clip, raw));
    const double o = test::sigmoid(g0[k + 3 * H] + double(w[k + 2 * H]) * cu);
    EXPECT_NEAR(g[k], i, 1e-5);
    EXPECT_NEAR(g[k + H], j, 1e-5);
    EXPECT_NEAR(g[k + 2 * H], f, 1e-5);
    EXPECT_NEAR(c_raw[k], raw, 1e-5);
    EXPECT_NEAR(c[k], cu, 1e-5);
    EXPECT_NEAR(g[k + 3 * H], o, 1e-5);
    EXPECT_NEAR(tc[k], std::tanh(cu), 1e-5);
    EXPECT_NEAR(m[k], o * std::tanh(cu), 1e-5);
  }
}

// One row's gate gradients both ways (the fused loop and Eigen's expressions), for H units,
// with or without peepholes, a cell clip and a second row of dm: every output within 1e-6.
void expect_gradient_passes_agree(Index H, bool peepholes, float cell_clip, bool two_dm) {
  Rng rng(Index(H) * 11 + (peepholes ? 1 : 0) + (two_dm ? 2 : 0));
  const auto draw = [&](Index n, double lo, double hi) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& e : v) e = float(uniform(rng, lo, hi));
    return v;
  };
  std::vector<float> g = draw(4 * H, 0, 1);  // activations: i, f, o in (0, 1), j in (-1, 1)
  for (Index u = 0; u < H; ++u) g[std::size_t(H + u)] = 2 * g[std::size_t(H + u)] - 1;
  const std::vector<float> tc = draw(H, -1, 1), cp = draw(H, -2, 2), c_raw = draw(H, -1.5, 1.5);
  const std::vector<float> dm = draw(H, -1, 1), dm2 = draw(H, -1, 1), dc0 = draw(H, -1, 1), w = draw(3 * H, -1, 1);
  std::vector<float> dc[2] = {dc0, dc0}, dg[2] = {std::vector<float>(std::size_t(4 * H)), std::vector<float>(std::size_t(4 * H))};
  for (int fast = 0; fast < 2; ++fast)
    detail::lstm_gate_gradients<float>({g.data(), tc.data(), cp.data(), cell_clip > 0 ? c_raw.data() : nullptr,
                                        dm.data(), two_dm ? dm2.data() : nullptr, dc[fast].data(), dg[fast].data(),
                                        peepholes ? w.data() : nullptr, peepholes ? w.data() + H : nullptr,
                                        peepholes ? w.data() + 2 * H : nullptr, cell_clip, false},
                                       H, fast == 1);
  for (std::size_t k = 0; k < dg[0].size(); ++k)
    ASSERT_NEAR(dg[1][k], dg[0][k], 1e-6) << "dgates[" << k << "], H = " << H << ", peepholes " << peepholes
                                          << ", cell_clip " << cell_clip << ", two dm " << two_dm;
  for (std::size_t k = 0; k < dc[0].size(); ++k)
    ASSERT_NEAR(dc[1][k], dc[0][k], 1e-6) << "dc[" << k << "], H = " << H;
  if (cell_clip > 0) {
    int cut = 0;
    for (Index u = 0; u < H; ++u) cut += std::abs(c_raw[std::size_t(u)]) > cell_clip;
    EXPECT_TRUE(H < 16 || cut > 0) << "the test's draw should reach the clip";
  }
}

TEST(LstmGates, TheFusedGradientsAgreeWithThePortableOnes) {
  SKIP_WITHOUT_AVX512();
  for (Index H : {1, 15, 16, 17, 37, 256}) {
    expect_gradient_passes_agree(H, false, 0, false);
    expect_gradient_passes_agree(H, false, 0, true);
    expect_gradient_passes_agree(H, true, 0.75f, false);
    expect_gradient_passes_agree(H, true, 0.75f, true);
  }
}

// The portable gradients against the LSTM's derivatives in double, written out here:
// m = o·tanh(c), c = clip(f·c_{t-1} + i·j), o = σ(z_o + w_o·c), i = σ(z_i + w_i·c_{t-1}),
// f = σ(z_f + w_f·c_{t-1}), j = tanh(z_j).
TEST(LstmGates, ThePortableGradientsAreTheCellsDerivatives) {
  const Index H = 19;
  Rng rng(8);
  const auto draw = [&](double lo, double hi) { return float(uniform(rng, lo, hi)); };
  std::vector<float> g(4 * H), tc(H), cp(H), c_raw(H), dm(H), dm2(H), dc(H), dg(4 * H), w(3 * H);
  for (Index u = 0; u < H; ++u) {
    const std::size_t k = std::size_t(u);
    g[k] = draw(0, 1), g[k + H] = draw(-1, 1), g[k + 2 * H] = draw(0, 1), g[k + 3 * H] = draw(0, 1);
    c_raw[k] = draw(-1.5, 1.5), tc[k] = float(std::tanh(std::min(0.9, std::max(-0.9, double(c_raw[k])))));
    cp[k] = draw(-2, 2), dm[k] = draw(-1, 1), dm2[k] = draw(-1, 1), dc[k] = draw(-1, 1);
    w[k] = draw(-1, 1), w[k + H] = draw(-1, 1), w[k + 2 * H] = draw(-1, 1);
  }
  const std::vector<float> dc0 = dc;
  const float clip = 0.9f;
  detail::lstm_gate_gradients<float>({g.data(), tc.data(), cp.data(), c_raw.data(), dm.data(), dm2.data(), dc.data(),
                                      dg.data(), w.data(), w.data() + H, w.data() + 2 * H, clip, false},
                                     H, false);
  int clipped = 0;
  for (Index u = 0; u < H; ++u) {
    const std::size_t k = std::size_t(u);
    const double i = g[k], j = g[k + H], f = g[k + 2 * H], o = g[k + 3 * H], t = tc[k];
    const double dmt = double(dm[k]) + dm2[k];
    const double d_o = dmt * t * o * (1 - o);                        // through o = σ(z_o)
    double dct = dc0[k] + dmt * o * (1 - t * t) + d_o * w[k + 2 * H];  // through tanh(c) and o's peephole
    if (std::abs(c_raw[k]) > clip) dct = 0, ++clipped;                // the clip passes no gradient
    const double di = dct * j * i * (1 - i), dj = dct * i * (1 - j * j), df = dct * cp[k] * f * (1 - f);
    EXPECT_NEAR(dg[k], di, 1e-5);
    EXPECT_NEAR(dg[k + H], dj, 1e-5);
    EXPECT_NEAR(dg[k + 2 * H], df, 1e-5);
    EXPECT_NEAR(dg[k + 3 * H], d_o, 1e-5);
    EXPECT_NEAR(dc[k], dct * f + di * w[k] + df * w[k + H], 1e-5);  // into c_{t-1}: f and i's, f's peepholes
  }
  EXPECT_GT(clipped, 0) << "the test's draw should reach the clip";
}

}  // namespace
}  // namespace dynrnn
