// dynrnn: the LSTM's gate pass over one row of one step, after its products (lstm_cell.hpp).
//
//   in   g (4H)   pre-activations [i j f o], the input projection, bias and recurrent product added
//        cp (H)   c_{t-1}
//   out  g (4H)   [sigmoid(i + w_i ⊙ c_{t-1}), tanh(j), sigmoid(f + forget_bias + w_f ⊙ c_{t-1}),
//                  sigmoid(o + w_o ⊙ c_t)], the activations backward() needs
//        c (H)    c_t = f ⊙ c_{t-1} + i ⊙ j, clipped to [-cell_clip, cell_clip] with a cell clip
//        c_raw    c_t before the clip (only with a cell clip)
//        tc (H)   tanh(c_t)
//        m (H)    o ⊙ tanh(c_t)
//
// Two versions compute the same: Eigen's array expressions, and for float on a CPU with
// AVX-512 (cpu_isa() above CpuIsa::portable, whatever the program's own flags) one fused
// loop over 32 units at a time (two packets, whose chains of dependent operations overlap)
// with core/activations.hpp's functions, keeping the gates of those units in registers
// from their load to the stores of c, tanh(c) and m.
#pragma once

#include "../core/activations.hpp"
#include "../core/types.hpp"

#include <Eigen/Core>

#include <type_traits>

namespace dynrnn::detail {

/// \brief The arguments of one row's gate pass (see the file comment); the peephole weights
/// are null without peepholes, and `c_raw` is null without a cell clip (`cell_clip` 0).
template <class Scalar>
struct LstmGateRow {
  Scalar* g;
  const Scalar* cp;
  Scalar *c, *tc, *m, *c_raw;
  const Scalar *w_i, *w_f, *w_o;
  Scalar forget_bias, cell_clip;
};

#ifdef DYNRNN_X86_KERNELS
DYNRNN_BEGIN_AVX512_KERNELS

/// Packet v of V at p: whole, or the last one masked by `mask`.
template <int V>
__attribute__((target("avx512f"))) inline __m512 load_packet(const float* p, int v, __mmask16 mask) {
  return v + 1 < V ? _mm512_loadu_ps(p + 16 * v) : _mm512_maskz_loadu_ps(mask, p + 16 * v);
}
template <int V>
__attribute__((target("avx512f"))) inline void store_packet(float* p, int v, __mmask16 mask, __m512 x) {
  if (v + 1 < V)
    _mm512_storeu_ps(p + 16 * v, x);
  else
    _mm512_mask_storeu_ps(p + 16 * v, mask, x);
}

/// The fused pass for float over units [k, k + 16·V), V packets side by side, so that their
/// chains of dependent operations (about 60 from the loads to the stores) overlap; the last
/// packet masked by `mask`.
template <int V>
__attribute__((target("avx512f"))) inline void lstm_gates_avx512(const LstmGateRow<float>& a, Index H, Index k,
                                                                __mmask16 mask) {
  __m512 cp[V], i[V], j[V], f[V], c[V], o[V], tc[V];
  float* g = a.g + k;
  for (int v = 0; v < V; ++v) {
    cp[v] = load_packet<V>(a.cp + k, v, mask);
    i[v] = load_packet<V>(g, v, mask);
    f[v] = _mm512_add_ps(load_packet<V>(g + 2 * H, v, mask), _mm512_set1_ps(a.forget_bias));
    if (a.w_i) {
      i[v] = _mm512_fmadd_ps(load_packet<V>(a.w_i + k, v, mask), cp[v], i[v]);
      f[v] = _mm512_fmadd_ps(load_packet<V>(a.w_f + k, v, mask), cp[v], f[v]);
    }
    i[v] = logistic_avx512(i[v]);
    j[v] = tanh_avx512(load_packet<V>(g + H, v, mask));
    f[v] = logistic_avx512(f[v]);
  }
  for (int v = 0; v < V; ++v) {
    store_packet<V>(g, v, mask, i[v]);
    store_packet<V>(g + H, v, mask, j[v]);
    store_packet<V>(g + 2 * H, v, mask, f[v]);
    c[v] = _mm512_fmadd_ps(f[v], cp[v], _mm512_mul_ps(i[v], j[v]));
    if (a.c_raw) {
      store_packet<V>(a.c_raw + k, v, mask, c[v]);
      c[v] = clamp_avx512(c[v], -a.cell_clip, a.cell_clip);
    }
    store_packet<V>(a.c + k, v, mask, c[v]);
    o[v] = load_packet<V>(g + 3 * H, v, mask);
    if (a.w_o) o[v] = _mm512_fmadd_ps(load_packet<V>(a.w_o + k, v, mask), c[v], o[v]);
    o[v] = logistic_avx512(o[v]);
    tc[v] = tanh_avx512(c[v]);
  }
  for (int v = 0; v < V; ++v) {
    store_packet<V>(g + 3 * H, v, mask, o[v]);
    store_packet<V>(a.tc + k, v, mask, tc[v]);
    store_packet<V>(a.m + k, v, mask, _mm512_mul_ps(o[v], tc[v]));
  }
}

__attribute__((target("avx512f"))) inline void lstm_gates_avx512(const LstmGateRow<float>& a, Index H) {
  constexpr int V = 2;
  Index k = 0;
  for (; k + 16 * V <= H; k += 16 * V) lstm_gates_avx512<V>(a, H, k, __mmask16(0xffff));
  for (; k < H; k += 16) lstm_gates_avx512<1>(a, H, k, __mmask16(H - k >= 16 ? 0xffff : (1u << (H - k)) - 1));
}

DYNRNN_END_AVX512_KERNELS
#endif  // DYNRNN_X86_KERNELS

/// \brief One row's gate pass over H units (see the file comment).
/// \param fast fast_activations(), read once per pass by the caller.
template <class Scalar>
void lstm_gates(const LstmGateRow<Scalar>& a, Index H, bool fast) {
#ifdef DYNRNN_X86_KERNELS
  if constexpr (std::is_same_v<Scalar, float>)
    if (fast) return lstm_gates_avx512(a, H);
#endif
  (void)fast;
  using Array = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
  using ConstArray = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
  Array i(a.g, H), j(a.g + H, H), f(a.g + 2 * H, H), o(a.g + 3 * H, H), c(a.c, H), tc(a.tc, H);
  const ConstArray cp(a.cp, H);
  if (a.w_i) {
    i += ConstArray(a.w_i, H) * cp;
    f += ConstArray(a.w_f, H) * cp;
  }
  i = i.logistic();
  j = j.tanh();
  f = (f + a.forget_bias).logistic();
  c = f * cp + i * j;
  if (a.c_raw) {
    Array(a.c_raw, H) = c;
    c = c.min(a.cell_clip).max(-a.cell_clip);
  }
  if (a.w_o) o += ConstArray(a.w_o, H) * c;
  o = o.logistic();
  tc = c.tanh();
  Array(a.m, H) = o * tc;
}

}  // namespace dynrnn::detail
