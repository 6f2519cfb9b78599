// dynrnn: the logistic function and tanh over contiguous arrays, for the cells' gate passes.
//
// Eigen vectorises its logistic() and tanh() for the SIMD width the program is built for:
// SSE2 in a build without -march, which takes a float32 LSTM's gate pass 2.5 times as long as
// in an AVX-512 build. So on a CPU with AVX-512 these functions are compiled for it with
// __attribute__((target("avx512f"))), whatever the program's own flags, and chosen at run
// time, as the reduced-precision kernels are (precision/cpu_isa.hpp). 16 floats at a time,
// without a division:
//
//   e^x          = s · (1 + q), s = 2^(n/32), n = round(x · 32 / ln 2), q = e^r − 1 for
//                  r = x − n · ln2/32 in [−ln2/64, ln2/64] (ln2/32 in two parts), q by its
//                  Taylor polynomial to r^3 (relative error below 5.3e-8), and s = 2^m · T[k]
//                  for n = 32m + k: T[k] = 2^(k/32) from a table of 32 floats (one vpermt2ps),
//                  2^m added to its exponent bits. T[k]'s rounding error is kept as a second
//                  table, for tanh near 0.
//   logistic(x)  = 1 / (1 + e^{−x}),                x clamped to [−80, 80]
//   tanh(x)      = (e^{2x} − 1) / (e^{2x} − 1 + 2),  x clamped to [−10, 10], with
//                  e^{2x} − 1 = s · q + (s − 1 + 2^m · lo[k]), which keeps its relative
//                  accuracy near 0
//
// and each reciprocal 1/d as vrcp14ps and one Newton step, r · (2 − d · r). Against the same
// functions in double both are within 3.1e-7 relative (logistic above x = −80; below, it
// returns logistic(−80), 1.8e-35), where Eigen's float logistic is within 7.1e-4 (near
// x = −9). NaN stays NaN, and ±∞ gives the limits. tests/test_activations.cpp checks this.
//
// The LSTM's gate pass spends its time in these functions' chains of dependent multiply-adds.
// The table takes 3 of each exponential's 10 (and 3 links of its chain) away from a Taylor
// polynomial to r^7 over [−ln2/2, ln2/2]: a step of 64 rows of 256 units took 16.7 us where
// it took 19.4.
//
// Where cpu_isa() is below CpuIsa::avx512_core (a CPU without AVX-512, a compiler that
// cannot build the kernels, or a lower set_max_cpu_isa()), and always for double, the
// functions are Eigen's.
#pragma once

#include "../precision/cpu_isa.hpp"
#include "../precision/dot_panels.hpp"  // DYNRNN_BEGIN_AVX512_KERNELS
#include "types.hpp"

#include <Eigen/Core>

#include <array>
#include <type_traits>
#include <utility>

namespace dynrnn::detail {

#ifdef DYNRNN_X86_KERNELS
DYNRNN_BEGIN_AVX512_KERNELS

/// 2^(k/32) for k in [0, 32) as the nearest floats (`rest` false), or the rest, 2^(k/32)
/// minus those, rounded (`rest` true); computed in double at compile time from e^x's Taylor
/// series (to x^26 for x = k/32 · ln 2 < ln 2, an error below 1e-17), so the tables of
/// exp_parts_avx512() hold no typed digits.
constexpr std::array<float, 32> exp2_table(bool rest) {
  std::array<float, 32> table{};
  for (int k = 0; k < 32; ++k) {
    const double x = k / 32.0 * 0.69314718055994530941723212145818;
    double e = 1.0, term = 1.0;
    for (int i = 1; i <= 26; ++i) e += term *= x / i;
    table[std::size_t(k)] = rest ? float(e - double(float(e))) : float(e);
  }
  return table;
}
inline constexpr std::array<float, 32> kExp2Hi = exp2_table(false), kExp2Lo = exp2_table(true);

/// e^x = (s + 2^m · lo) · (1 + q) for x in [−87, 87], s = 2^m · hi[k], as in the file
/// comment: then e^x − 1 = s · q + (s − 1 + 2^m · lo) keeps its relative accuracy near 0,
/// where n = 0. `scale` is 2^m.
struct ExpParts {
  __m512 s, q, lo, scale;
};
__attribute__((target("avx512f"))) inline ExpParts exp_parts_avx512(__m512 x) {
  // n = round(x · 32 / ln 2), rounded as it is added to 1.5 · 2^23: the sum's low mantissa
  // bits are then n in two's complement (|n| < 2^22), and k = n mod 32, m = ⌊n / 32⌋.
  const __m512 shifter = _mm512_set1_ps(12582912.0f);
  const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(float(32 / 0.69314718055994530941723212145818)), shifter);
  const __m512 n = _mm512_sub_ps(t, shifter);
  // ln2/32 = 0.021660849452018738 (the nearest float) − 5.952044687368e-11.
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.021660849452018738f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-5.952044687368e-11f), r);
  // e^r − 1 = r + r² · (1/2 + r/6).
  const __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 6), r, _mm512_set1_ps(0.5f));
  const __m512i bits = _mm512_castps_si512(t);
  const __m512i m = _mm512_slli_epi32(_mm512_srai_epi32(bits, 5), 23);  // m in the exponent's place
  const __m512 hi0 = _mm512_loadu_ps(kExp2Hi.data()), hi1 = _mm512_loadu_ps(kExp2Hi.data() + 16);
  const __m512 lo0 = _mm512_loadu_ps(kExp2Lo.data()), lo1 = _mm512_loadu_ps(kExp2Lo.data() + 16);
  const __m512 T = _mm512_permutex2var_ps(hi0, bits, hi1);  // hi[k]: the low 5 bits of the index
  return {_mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(T), m)),
          _mm512_fmadd_ps(_mm512_mul_ps(r, r), p, r), _mm512_permutex2var_ps(lo0, bits, lo1),
          _mm512_castsi512_ps(_mm512_add_epi32(m, _mm512_castps_si512(_mm512_set1_ps(1.0f))))};
}

/// 1 / q for q ≥ 1 and finite: vrcp14ps (14 bits) and one Newton step.
__attribute__((target("avx512f"))) inline __m512 reciprocal_avx512(__m512 q) {
  const __m512 r = _mm512_rcp14_ps(q);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.0f)));
}

/// Clamps x to [lo, hi]; max and min return their second operand, x, when it is NaN.
__attribute__((target("avx512f"))) inline __m512 clamp_avx512(__m512 x, float lo, float hi) {
  return _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), x));
}

/// logistic(x) = 1 / (1 + e^{−x}).
__attribute__((target("avx512f"))) inline __m512 logistic_avx512(__m512 x) {
  const ExpParts e = exp_parts_avx512(_mm512_sub_ps(_mm512_setzero_ps(), clamp_avx512(x, -80.0f, 80.0f)));
  // Leaving lo out changes e^{−x} by less than 6e-8 relative (half a float's step), and
  // the logistic function by less: it is not needed here as it is for tanh near 0.
  return reciprocal_avx512(_mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(e.s, e.q, e.s)));
}

/// tanh(x) = (e^{2x} − 1) / (e^{2x} − 1 + 2).
__attribute__((target("avx512f"))) inline __m512 tanh_avx512(__m512 x) {
  x = clamp_avx512(x, -10.0f, 10.0f);
  const ExpParts e = exp_parts_avx512(_mm512_add_ps(x, x));
  const __m512 s_minus_1 = _mm512_fmadd_ps(e.lo, e.scale, _mm512_sub_ps(e.s, _mm512_set1_ps(1.0f)));
  const __m512 em1 = _mm512_fmadd_ps(e.s, e.q, s_minus_1);
  return _mm512_mul_ps(em1, reciprocal_avx512(_mm512_add_ps(em1, _mm512_set1_ps(2.0f))));
}

/// y[k] = f(x[k] + bias) for k in [0, n), f logistic or tanh: whole packets, then a masked
/// last one.
template <bool Tanh>
__attribute__((target("avx512f"))) inline void map_avx512(const float* x, float* y, Index n, float bias) {
  const __m512 b = _mm512_set1_ps(bias);
  Index k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 v = _mm512_add_ps(_mm512_loadu_ps(x + k), b);
    _mm512_storeu_ps(y + k, Tanh ? tanh_avx512(v) : logistic_avx512(v));
  }
  if (k < n) {
    const __mmask16 m = first_lanes(n - k);
    const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + k), b);
    _mm512_mask_storeu_ps(y + k, m, Tanh ? tanh_avx512(v) : logistic_avx512(v));
  }
}

DYNRNN_END_AVX512_KERNELS
#endif  // DYNRNN_X86_KERNELS

/// \brief Whether logistic() and tanh() for float use the AVX-512 functions now (see the file
/// comment): read it once per pass and pass it on.
inline bool fast_activations() { return cpu_isa() >= CpuIsa::avx512_core; }

/// \brief y = logistic(x + bias), n elements; y may be x.
/// \param fast fast_activations(), read by the caller.
template <class Scalar>
void logistic(const Scalar* x, Scalar* y, Index n, Scalar bias, bool fast) {
#ifdef DYNRNN_X86_KERNELS
  if constexpr (std::is_same_v<Scalar, float>)
    if (fast) return map_avx512<false>(x, y, n, bias);
#endif
  (void)fast;
  using Array = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  Eigen::Map<Array>(y, n) = (Eigen::Map<const Array>(x, n) + bias).logistic();
}

/// \brief y = tanh(x), n elements; y may be x.
/// \param fast fast_activations(), read by the caller.
template <class Scalar>
void tanh(const Scalar* x, Scalar* y, Index n, bool fast) {
#ifdef DYNRNN_X86_KERNELS
  if constexpr (std::is_same_v<Scalar, float>)
    if (fast) return map_avx512<true>(x, y, n, 0.0f);
#endif
  (void)fast;
  using Array = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  Eigen::Map<Array>(y, n) = Eigen::Map<const Array>(x, n).tanh();
}

}  // namespace dynrnn::detail
