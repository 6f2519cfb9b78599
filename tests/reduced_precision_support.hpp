// What the reduced-precision tests share: their own bfloat16 rounding, a relative error, an
// LSTM reference whose products the test supplies, written from the
// format's definition independently of the library (which rounds through Eigen::bfloat16 and
// vcvtneps2bf16), a scope that limits the kernels' instruction-set level, and the levels at
// which the float32 tiles differ.
#pragma once

#include <dynrnn/dynrnn.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace dynrnn::test {

/// x rounded to the nearest bfloat16, ties to even (for finite x).
inline float bf16(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

/// The 16 bits of bfloat16 x (x already a bfloat16 value, as bf16() returns).
inline std::uint16_t bf16_bits(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return std::uint16_t(bits >> 16);
}

/// The float of the bfloat16 with these 16 bits.
inline float from_bf16_bits(std::uint16_t b) {
  const std::uint32_t bits = std::uint32_t(b) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

/// Frobenius norm of a - b over that of b, in double, element by element in storage order
/// (both of the same layout).
template <class A, class B>
double relative_difference(const A& a, const B& b) {
  double diff = 0, norm = 0;
  for (Index k = 0; k < Index(b.size()); ++k) {
    const double d = double(a.data()[k]) - double(b.data()[k]);
    diff += d * d;
    norm += double(b.data()[k]) * double(b.data()[k]);
  }
  return std::sqrt(diff / norm);
}

/// How far a cell's or topology's fast path may be from its portable one (CpuIsa::portable),
/// relative_difference() of outputs or gradients. Their products give the same bits (the
/// kernels' own tests check that); their gate activations are computed two ways, within 4e-7
/// of each other (core/activations.hpp), which a bfloat16 rounding or an int8 quantisation of
/// the next step's h can amplify (to 1.5e-5 in the gradients of a stack of two LSTMs in
/// bfloat16, test_mixed_precision.cpp). Products left in float32 are 1e-3 off or more.
inline constexpr double kPathTolerance = 1e-4;

/// An LSTMCell(20, 24) drawn from rng, with a bias uniform in [-0.5, 0.5).
inline LSTMCell<float> reference_test_lstm(Rng& rng) {
  LSTMCell<float> cell(20, 24);
  cell.reset_parameters(rng);
  for (Index k = 0; k < cell.bias().size(); ++k) cell.bias()(k) = float(uniform(rng, -0.5, 0.5));
  return cell;
}

/// TensorFlow's LSTMCell (forget_bias 1) in double, the gate pre-activations of each step
/// (4H, gates i, j, f, o, bias included) from `preactivations(t, b, h_{t-1})`: outputs
/// [T, B, H], zero past each length.
template <class Preactivations>
Tensor3<double> reference_lstm(Index T, Index B, Index H, const std::vector<int>& lengths,
                               Preactivations&& preactivations) {
  const auto sigmoid = [](double v) { return 1 / (1 + std::exp(-v)); };
  Tensor3<double> out(T, B, H);
  out.setZero();
  for (Index b = 0; b < B; ++b) {
    Eigen::VectorXd h = Eigen::VectorXd::Zero(H), c = Eigen::VectorXd::Zero(H);
    for (Index t = 0; t < lengths[std::size_t(b)]; ++t) {
      const Eigen::VectorXd z = preactivations(t, b, h);
      for (Index u = 0; u < H; ++u) {
        c(u) = sigmoid(z(2 * H + u) + 1) * c(u) + sigmoid(z(u)) * std::tanh(z(H + u));
        h(u) = sigmoid(z(3 * H + u)) * std::tanh(c(u));
        out(t, b, u) = h(u);
      }
    }
  }
  return out;
}

/// Calls check(name, cell) with one float cell of each kind, input 10 and 32 units: LSTM,
/// LSTM with every option, GRU in both variants, RNN with tanh and with relu.
template <class Check>
void for_each_test_cell(Check&& check) {
  check("LSTMCell", LSTMCell<float>(10, 32));
  LSTMOptions options;
  options.use_peepholes = true;
  options.cell_clip = 1;
  options.num_proj = 16;
  options.proj_clip = 0.5;
  check("LSTMCell, all options", LSTMCell<float>(10, 32, options));
  check("GRUCell, reset_before", GRUCell<float>(10, 32, GRUVariant::reset_before));
  check("GRUCell, reset_after", GRUCell<float>(10, 32, GRUVariant::reset_after));
  check("RNNCell, tanh", RNNCell<float>(10, 32, RNNActivation::tanh));
  check("RNNCell, relu", RNNCell<float>(10, 32, RNNActivation::relu));
}

/// Limits the kernels to `isa` for its lifetime (set_max_cpu_isa), then restores the limit.
class WithIsa {
 public:
  explicit WithIsa(CpuIsa isa) : saved_(max_cpu_isa()) { set_max_cpu_isa(isa); }
  ~WithIsa() { set_max_cpu_isa(saved_); }
  WithIsa(const WithIsa&) = delete;
  WithIsa& operator=(const WithIsa&) = delete;

 private:
  CpuIsa saved_;
};

/// The levels up to `highest` (and the CPU's) at which this program's float32 tiles differ
/// (core/float_tiles.hpp), lowest first: CpuIsa::portable (the program's own tiles), then
/// CpuIsa::avx2 and CpuIsa::avx512_core where the CPU has them and they are wider. The
/// float32 products run on those tiles, and so do the portable kernels of the bfloat16 and
/// int8 products below their own levels.
inline std::vector<CpuIsa> float_tile_levels(CpuIsa highest) {
  std::vector<CpuIsa> levels;
  CpuIsa last = CpuIsa::portable;
  for (CpuIsa isa : kCpuIsaLevels) {
    if (isa > highest || isa > detected_cpu_isa()) break;
    WithIsa limit(isa);
    const CpuIsa tiles = detail::float_tiles();
    if (levels.empty() || tiles != last) levels.push_back(isa);
    last = tiles;
  }
  return levels;
}

/// Calls f(isa) for each level of float_tile_levels(highest), under a trace that names it
/// and its float32 tiles; f sets the limit itself (WithIsa) where it needs it.
template <class F>
void at_float_tile_levels(CpuIsa highest, F&& f) {
  for (CpuIsa isa : float_tile_levels(highest)) {
    CpuIsa tiles;
    {
      WithIsa limit(isa);
      tiles = detail::float_tiles();
    }
    SCOPED_TRACE(testing::Message() << "limit " << to_string(isa) << ", float tiles " << to_string(tiles));
    f(isa);
  }
}

}  // namespace dynrnn::test
