// dynrnn: the LSTM's gate pass over one row of one step, after its products (lstm_cell.hpp).
//
//   in   g (4H)   pre-activations [i j f o], the input projection, bias and recurrent product added
//        cp (H)   c_{t-1}
//   out  g (4H)   [sigmoid(i + w_i ⊙ c_{t-1}), tanh(j), sigmoid(f + forget_bias + w_f ⊙ c_{t-1}),
//                  sigmoid(o + w_o ⊙ c_t)], the activations backward() needs
//        c (H)    c_t = f ⊙ c_{t-1} + i ⊙ j, clipped to [-cell_clip, cell_clip] with a cell clip
//        c_raw    c_t before the clip (only when kept, with a cell clip)
//        tc (H)   tanh(c_t) (only when kept)
//        m (H)    o ⊙ tanh(c_t)
//
// An inference pass keeps nothing for backward (LstmGateRow::keep false): the activations
// need not be stored back into g, nor tanh(c_t) anywhere, and c may be cp, updated in place.
//
// Two versions compute the same: Eigen's array expressions, and for float on a CPU with
// AVX-512 (cpu_isa() at CpuIsa::avx512_core or above, whatever the program's own flags)
// one fused loop over 64 units at a time (four packets, whose chains of dependent
// operations overlap) with core/activations.hpp's functions, keeping the gates of those
// units in registers from their load to the stores of c, tanh(c) and m.
//
// Its backward, one row of one step of backward() (lstm_gate_gradients()):
//
//   in   g (4H)   the activations forward() kept: i, j, f, o
//        tc, cp   tanh(c_t), c_{t-1};  c_raw: c_t before the clip (with a cell clip)
//        dm (H)   dLoss/dm_t (the sum of two rows, dm + dm2, when dm2 is not null)
//        dc (H)   in: dLoss/dc_t from step t + 1;  out: dLoss/dc_{t-1}
//   out  dg (4H)  dLoss/d pre-activations [di dj df do]
//
// again as Eigen's expressions (a pass over the row for each) or, for float where the
// forward pass is fused, one AVX-512 loop that reads each input once.
#pragma once

#include "../core/activations.hpp"
#include "../core/types.hpp"
#include "../precision/bfloat16_gemm.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <type_traits>

namespace dynrnn::detail {

/// \brief The arguments of one row's gate pass (see the file comment); the peephole weights
/// are null without peepholes, `cell_clip` is 0 without a cell clip, and `c_raw` is null
/// when c_t before the clip is not kept.
/// `next_row`: the next row of every array but the peephole weights follows this one (g 4H
/// further on, the others H) and is the next to be computed, so the fused loop fetches its
/// inputs and the lines of its outputs while it computes this one. The gates come from the
/// step's product, c_{t-1} from the step before, and c, tanh(c) and m go to the forward
/// cache; when each row is reached only by the loads and stores of its own computation, the
/// pass waits on memory for about a quarter of its time.
/// `keep`: the pass is followed by backward(), so the activations go back into g and
/// tanh(c_t) into tc. When false, tc may be null, g's values afterwards are unspecified, and
/// c may equal cp (each unit of c_{t-1} is read before its c_t is written).
template <class Scalar>
struct LstmGateRow {
  Scalar* g;
  const Scalar* cp;
  Scalar *c, *tc, *m, *c_raw;
  const Scalar *w_i, *w_f, *w_o;
  Scalar forget_bias, cell_clip;
  bool next_row, keep;
};

/// \brief The arguments of one row's gate gradients (see the file comment); the peephole
/// weights are null without peepholes, `c_raw` is null without a cell clip, `dm2` null when
/// dm is whole. `dg` may be null where the gradients go rounded elsewhere
/// (LstmGradientPacking::rounded) and nothing reads them in float32. `next_row`: the next
/// row of every input follows this one (g 4H further on, the others H) and is the next to be
/// computed, so the fused loop fetches it while it computes this one (the cache of a forward
/// pass is long out of cache when backward reads it).
template <class Scalar>
struct LstmGradientRow {
  const Scalar *g, *tc, *cp, *c_raw;
  const Scalar *dm, *dm2;
  Scalar *dc, *dg;
  const Scalar *w_i, *w_f, *w_o;
  Scalar cell_clip;
  bool next_row;
};

/// \brief Where a row's gate gradients also go when the weight gradients run in bfloat16:
/// row `row` of the gate gradients (P, 4H), rounded, into the packing that
/// MixedWeightGemm::pack_in_place() returned for them, and added to `sums` (4H), the row's sum
/// over the steps so far (its share of the bias gradient). This spares backward() a pass
/// that reads all the gate gradients back from memory after the loop.
/// `pair` points at element (row - row % 2, 0) of the packing, and `panel_stride` is the
/// distance from there to the same pair's first column of the next panel of 64 columns;
/// 4H must be a multiple of 64 (H of 16).
/// `rounded`: null, or 4H places where the row's gate gradients also go, rounded, as a
/// row of the left operand of the products that follow them (dgates_t · W_hᵀ in the loop,
/// dgates · W_xᵀ after it), which then need not round them again.
template <class Scalar>
struct LstmGradientPacking {
  std::uint16_t* pair;
  Index panel_stride, row;
  Scalar* sums;
  std::uint16_t* rounded;
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
    if (a.keep) {
      store_packet<V>(g, v, mask, i[v]);
      store_packet<V>(g + H, v, mask, j[v]);
      store_packet<V>(g + 2 * H, v, mask, f[v]);
    }
    c[v] = _mm512_fmadd_ps(f[v], cp[v], _mm512_mul_ps(i[v], j[v]));
    if (a.cell_clip > 0) {
      if (a.c_raw) store_packet<V>(a.c_raw + k, v, mask, c[v]);
      c[v] = clamp_avx512(c[v], -a.cell_clip, a.cell_clip);
    }
    store_packet<V>(a.c + k, v, mask, c[v]);
    o[v] = load_packet<V>(g + 3 * H, v, mask);
    if (a.w_o) o[v] = _mm512_fmadd_ps(load_packet<V>(a.w_o + k, v, mask), c[v], o[v]);
    o[v] = logistic_avx512(o[v]);
    tc[v] = tanh_avx512(c[v]);
  }
  for (int v = 0; v < V; ++v) {
    if (a.keep) {
      store_packet<V>(g + 3 * H, v, mask, o[v]);
      store_packet<V>(a.tc + k, v, mask, tc[v]);
    }
    store_packet<V>(a.m + k, v, mask, _mm512_mul_ps(o[v], tc[v]));
  }
}

/// Fetches the lines of the next row's units [k, k + 16·V) (LstmGateRow::next_row): its
/// gates and c_{t-1} to read, its c, m (and tanh(c) and c_raw when kept) to write.
template <int V>
__attribute__((target("avx512f"))) inline void prefetch_next_gate_row(const LstmGateRow<float>& a, Index H, Index k) {
  for (int v = 0; v < V; ++v) {
    const Index u = k + 16 * v;
    for (int gate = 0; gate < 4; ++gate) __builtin_prefetch(a.g + 4 * H + gate * H + u);
    __builtin_prefetch(a.cp + H + u);
    for (float* p : {a.c, a.tc, a.m, a.c_raw})
      if (p) __builtin_prefetch(p + H + u, /*write=*/1);
  }
}

/// Units [k, k + 16·V) of a row, the last packet masked by `mask`: the next row's lines
/// fetched (LstmGateRow::next_row), then the pass.
template <int V>
__attribute__((target("avx512f"))) inline void lstm_gates_packets(const LstmGateRow<float>& a, Index H, Index k,
                                                                 __mmask16 mask) {
  if (a.next_row) prefetch_next_gate_row<V>(a, H, k);
  lstm_gates_avx512<V>(a, H, k, mask);
}

/// The last units of a row, [k, H) for 0 < H − k < 64: one call of one to four packets, the
/// last masked. A function of its own, so that the compiler keeps the whole packets of
/// lstm_gates_avx512()'s loop apart, with their constant mask (inlined here, the loop's
/// calls took 3% longer).
__attribute__((target("avx512f"))) inline void lstm_gates_avx512_tail(const LstmGateRow<float>& a, Index H, Index k) {
  const Index left = H - k, packets = (left + 15) / 16;
  const __mmask16 mask = first_lanes(left - 16 * (packets - 1));
  switch (packets) {
    case 1: return lstm_gates_packets<1>(a, H, k, mask);
    case 2: return lstm_gates_packets<2>(a, H, k, mask);
    case 3: return lstm_gates_packets<3>(a, H, k, mask);
    default: return lstm_gates_packets<4>(a, H, k, mask);
  }
}

/// The fused pass over a row: 64 units (four packets) at a time. The pass waits on the
/// latency of each packet's chain (the exponential, its reciprocal, then tanh(c_t) on their
/// result) more than on the multiply-add units: four chains side by side took a step of 64
/// rows of 256 units from 16.6 us to 14.9 where two were measured (three, which leave a
/// tail of a packet at H = 256, took 17.8; eight, 14.9).
__attribute__((target("avx512f"))) inline void lstm_gates_avx512(const LstmGateRow<float>& a, Index H) {
  constexpr int V = 4;
  Index k = 0;
  for (; k + 16 * V <= H; k += 16 * V) lstm_gates_packets<V>(a, H, k, __mmask16(0xffff));
  if (k < H) lstm_gates_avx512_tail(a, H, k);
}

/// The fused gate gradients for float over units [k, k + 16), masked by `mask`; also gives
/// them in d (di, dj, df, do).
__attribute__((target("avx512f"), always_inline)) inline void lstm_gate_gradients_packet(
    const LstmGradientRow<float>& a, Index H, Index k, __mmask16 mask, __m512 (&d)[4]) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const float* g = a.g + k;
  if (a.next_row) {
    for (int gate = 0; gate < 4; ++gate) __builtin_prefetch(g + (4 + gate) * H);
    for (const float* p : {a.tc, a.cp, a.c_raw, a.dm, a.dm2, static_cast<const float*>(a.dc)})
      if (p) __builtin_prefetch(p + k + H);
  }
  const __m512 i = load_packet<1>(g, 0, mask), j = load_packet<1>(g + H, 0, mask);
  const __m512 f = load_packet<1>(g + 2 * H, 0, mask), o = load_packet<1>(g + 3 * H, 0, mask);
  const __m512 tc = load_packet<1>(a.tc + k, 0, mask), cp = load_packet<1>(a.cp + k, 0, mask);
  __m512 dm = load_packet<1>(a.dm + k, 0, mask);
  if (a.dm2) dm = _mm512_add_ps(dm, load_packet<1>(a.dm2 + k, 0, mask));
  // m = o ⊙ tanh(c): dm reaches c through tanh and o directly.
  const __m512 dm_o = _mm512_mul_ps(dm, o);
  __m512 dc = _mm512_fmadd_ps(dm_o, _mm512_fnmadd_ps(tc, tc, one), load_packet<1>(a.dc + k, 0, mask));
  const __m512 d_o = _mm512_mul_ps(_mm512_mul_ps(dm_o, tc), _mm512_sub_ps(one, o));
  if (a.w_o) dc = _mm512_fmadd_ps(d_o, load_packet<1>(a.w_o + k, 0, mask), dc);
  if (a.c_raw) {  // no gradient through the clip where it clipped
    const __m512 c_raw = load_packet<1>(a.c_raw + k, 0, mask);
    const __m512 bound = _mm512_set1_ps(a.cell_clip);
    const __mmask16 inside = _mm512_cmp_ps_mask(_mm512_abs_ps(c_raw), bound, _CMP_LE_OQ);
    dc = _mm512_maskz_mov_ps(inside, dc);
  }
  const __m512 di = _mm512_mul_ps(_mm512_mul_ps(dc, j), _mm512_mul_ps(i, _mm512_sub_ps(one, i)));
  const __m512 dj = _mm512_mul_ps(_mm512_mul_ps(dc, i), _mm512_fnmadd_ps(j, j, one));
  const __m512 df = _mm512_mul_ps(_mm512_mul_ps(dc, cp), _mm512_mul_ps(f, _mm512_sub_ps(one, f)));
  // dc flows into c_{t-1} through the forget gate (and the peepholes).
  dc = _mm512_mul_ps(dc, f);
  if (a.w_i)
    dc = _mm512_fmadd_ps(df, load_packet<1>(a.w_f + k, 0, mask),
                         _mm512_fmadd_ps(di, load_packet<1>(a.w_i + k, 0, mask), dc));
  if (float* dg = a.dg ? a.dg + k : nullptr) {
    store_packet<1>(dg, 0, mask, di);
    store_packet<1>(dg + H, 0, mask, dj);
    store_packet<1>(dg + 2 * H, 0, mask, df);
    store_packet<1>(dg + 3 * H, 0, mask, d_o);
  }
  store_packet<1>(a.dc + k, 0, mask, dc);
  d[0] = di, d[1] = dj, d[2] = df, d[3] = d_o;
}

__attribute__((target("avx512f"))) inline void lstm_gate_gradients_avx512(const LstmGradientRow<float>& a, Index H) {
  __m512 d[4];
  for (Index k = 0; k < H; k += 16) lstm_gate_gradients_packet(a, H, k, first_lanes(H - k), d);
}

/// The fused gate gradients, also written in bfloat16 into the weight gradients' packed
/// right operand and added to the row's running sums (LstmGradientPacking); H a multiple of 16.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) inline void lstm_gate_gradients_avx512_bf16(
    const LstmGradientRow<float>& a, Index H, const LstmGradientPacking<float>& out) {
  using Kernel = Bf16Avx512Kernel;
  __m512 d[4];
  for (Index k = 0; k < H; k += 16) {
    lstm_gate_gradients_packet(a, H, k, 0xffff, d);
    for (int gate = 0; gate < 4; ++gate) {
      const Index j = gate * H + k;
      const __m256i rounded = (__m256i)_mm512_cvtneps_pbh(d[gate]);
      Kernel::store_row(out.pair + j / kDotPanelColumns * out.panel_stride + 2 * (j % kDotPanelColumns), out.row,
                        rounded);
      if (out.rounded) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.rounded + j), rounded);
      _mm512_storeu_ps(out.sums + j, _mm512_add_ps(_mm512_loadu_ps(out.sums + j), d[gate]));
    }
  }
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
  // The activations go back into g whether kept or not: its values are scratch then.
  Array i(a.g, H), j(a.g + H, H), f(a.g + 2 * H, H), o(a.g + 3 * H, H), c(a.c, H);
  const ConstArray cp(a.cp, H);
  if (a.w_i) {
    i += ConstArray(a.w_i, H) * cp;
    f += ConstArray(a.w_f, H) * cp;
  }
  i = i.logistic();
  j = j.tanh();
  f = (f + a.forget_bias).logistic();
  c = f * cp + i * j;  // coefficient-wise: c may be cp
  if (a.cell_clip > 0) {
    if (a.c_raw) Array(a.c_raw, H) = c;
    c = c.min(a.cell_clip).max(-a.cell_clip);
  }
  if (a.w_o) o += ConstArray(a.w_o, H) * c;
  o = o.logistic();
  if (a.keep) {
    Array tc(a.tc, H);
    tc = c.tanh();
    Array(a.m, H) = o * tc;
  } else {
    Array(a.m, H) = o * c.tanh();
  }
}

/// \brief One row's gate gradients over H units (see the file comment).
/// \param fast fast_activations(), read once per pass by the caller.
/// \param packing null, or where the gradients also go in bfloat16 (LstmGradientPacking):
///   only for float, with `fast`, H a multiple of 16 and the packing from a CPU at
///   CpuIsa::avx512_core_bf16, which MixedWeightGemm::pack_in_place() ensures.
template <class Scalar>
void lstm_gate_gradients(const LstmGradientRow<Scalar>& a, Index H, bool fast,
                         const LstmGradientPacking<Scalar>* packing = nullptr) {
#ifdef DYNRNN_X86_KERNELS
  if constexpr (std::is_same_v<Scalar, float>) {
    if (packing) {
      eigen_assert(fast && H % 16 == 0 && (a.dg || packing->rounded));
      return lstm_gate_gradients_avx512_bf16(a, H, *packing);
    }
    if (fast) return lstm_gate_gradients_avx512(a, H);
  }
#endif
  (void)fast, (void)packing;
  using Array = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
  using ConstArray = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
  const ConstArray i(a.g, H), j(a.g + H, H), f(a.g + 2 * H, H), og(a.g + 3 * H, H), tc(a.tc, H), cp(a.cp, H);
  Array dc(a.dc, H), di(a.dg, H), dj(a.dg + H, H), df(a.dg + 2 * H, H), d_o(a.dg + 3 * H, H);
  const auto update = [&](const auto& dm) {
    // m = o ⊙ tanh(c): dm reaches c through tanh and o directly.
    dc += dm * og * (Scalar(1) - tc.square());
    d_o = dm * tc * og * (Scalar(1) - og);
  };
  if (a.dm2)
    update(ConstArray(a.dm, H) + ConstArray(a.dm2, H));
  else
    update(ConstArray(a.dm, H));
  if (a.w_o) dc += d_o * ConstArray(a.w_o, H);
  if (a.c_raw) dc = (ConstArray(a.c_raw, H).abs() <= a.cell_clip).select(dc, Scalar(0));
  di = dc * j * i * (Scalar(1) - i);
  dj = dc * i * (Scalar(1) - j.square());
  df = dc * cp * f * (Scalar(1) - f);
  // dc flows into c_{t-1} through the forget gate (and the peepholes).
  dc *= f;
  if (a.w_i) dc += di * ConstArray(a.w_i, H) + df * ConstArray(a.w_f, H);
}

}  // namespace dynrnn::detail
