// oneDNN's LSTM descriptors for a benchmark workload, shared by the oneDNN peer benchmark and
// the accuracy comparison, in float32 or in oneDNN's mixed bfloat16.
//
// With `type` bf16, the inputs, h, the weights and the outputs are bfloat16, and the bias, c
// and every gradient float32: the combination oneDNN 2.6 accepts for a bf16 LSTM's backward
// pass (every other one fails to create a primitive descriptor). Weights take the layout the
// primitive prefers (tag::any); the rest are plain: tnc, ldnc, ldgo.
//
// int8 inference (int8_forward() with int8_attr()): x u8, the weights s8, and h, c, the bias
// and the outputs float32, one of the combinations oneDNN 2.6 accepts (h in and out must both
// be u8 or both f32; the outputs u8 or f32). oneDNN quantises x and h with one common scale
// and shift (its data parameters) and the weights with a scale per gate column, shared by
// both weight matrices.
#pragma once

#include "../workloads.hpp"

#include <oneapi/dnnl/dnnl.hpp>

#include <vector>

namespace bench {

/// The tensor shapes of an LSTM on workload `w`, and the descriptors of its two passes.
struct OneDnnLstm {
  using dims = dnnl::memory::dims;
  using tag = dnnl::memory::format_tag;
  using type = dnnl::memory::data_type;

  dims src, iter, wl, wi, bias, dst;  // [T, B, I], [1, 1, B, H], weights, bias, [T, B, H]
  type data;                          // inputs, h, weights and outputs: f32 or bf16

  OneDnnLstm(const Workload& w, type data_type)
      : src{w.max_time, w.batch, w.input},
        iter{1, 1, w.batch, w.hidden},
        wl{1, 1, w.input, 4, w.hidden},
        wi{1, 1, w.hidden, 4, w.hidden},
        bias{1, 1, 4, w.hidden},
        dst{w.max_time, w.batch, w.hidden},
        data(data_type) {}

  static dnnl::memory::desc md(const dims& d, tag t, type ty = type::f32) { return {d, ty, t}; }

  /// forward_inference or forward_training.
  dnnl::lstm_forward::desc forward(dnnl::prop_kind kind) const {
    return {kind,          dnnl::rnn_direction::unidirectional_left2right,
            md(src, tag::tnc, data), md(iter, tag::ldnc, data), md(iter, tag::ldnc),
            md(wl, tag::any, data),  md(wi, tag::any, data),    md(bias, tag::ldgo),
            md(dst, tag::tnc, data), md(iter, tag::ldnc, data), md(iter, tag::ldnc)};
  }

  /// int8 inference: x u8, weights s8, the rest float32 (see the file comment).
  dnnl::lstm_forward::desc int8_forward() const {
    return {dnnl::prop_kind::forward_inference,
            dnnl::rnn_direction::unidirectional_left2right,
            md(src, tag::tnc, type::u8), md(iter, tag::ldnc), md(iter, tag::ldnc),
            md(wl, tag::any, type::s8),  md(wi, tag::any, type::s8), md(bias, tag::ldgo),
            md(dst, tag::tnc),           md(iter, tag::ldnc),        md(iter, tag::ldnc)};
  }

  /// The quantisation of int8_forward(), for the primitive and for the reorders that quantise
  /// its x and weights: x and h in [-data_bound, data_bound] to u8 = 127/data_bound · v + 128,
  /// and weight column (g, o) times weight_scales[g·H + o] (127 over its largest magnitude).
  static dnnl::primitive_attr int8_attr(float data_bound, const std::vector<float>& weight_scales) {
    dnnl::primitive_attr attr;
    attr.set_rnn_data_qparams(127.0f / data_bound, 128.0f);
    attr.set_rnn_weights_qparams((1 << 3) | (1 << 4), weight_scales);  // per gate (3) and output (4)
    return attr;
  }

  /// The backward pass, its gradients float32.
  dnnl::lstm_backward::desc backward() const {
    return {dnnl::prop_kind::backward, dnnl::rnn_direction::unidirectional_left2right,
            md(src, tag::tnc, data),   md(iter, tag::ldnc, data), md(iter, tag::ldnc),
            md(wl, tag::any, data),    md(wi, tag::any, data),    md(bias, tag::ldgo),
            md(dst, tag::tnc, data),   md(iter, tag::ldnc, data), md(iter, tag::ldnc),
            md(src, tag::tnc),         md(iter, tag::ldnc),       md(iter, tag::ldnc),
            md(wl, tag::any),          md(wi, tag::any),          md(bias, tag::ldgo),
            md(dst, tag::tnc),         md(iter, tag::ldnc),       md(iter, tag::ldnc)};
  }
};

}  // namespace bench
