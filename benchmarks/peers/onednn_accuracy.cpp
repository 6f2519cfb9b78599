// How far each system's bfloat16 LSTM is from its own float32 LSTM, dynrnn and oneDNN on the
// same inputs, weights and output gradients: the relative (Frobenius) difference of the
// outputs and of the weight gradients, on the benchmark workloads M and L (workloads.hpp);
// and how far each one's int8 inference is from its float32 outputs.
//
// The weights are one LSTMCell's, drawn as its constructor draws them, with forget_bias 0
// and a zero bias, copied into oneDNN's layout (gates i, f, c, o against TensorFlow's i, j,
// f, o); x and the output gradient are uniform in [-1, 1). Before comparing precisions the
// program checks that the two systems' float32 results agree (to about 1e-6), which proves
// that they ran the same LSTM. oneDNN's bf16 LSTM is the benchmark's (onednn_lstm_desc.hpp).
//
// int8: dynrnn calibrated on x (Precision::int8: x's scale from its largest magnitude, h's
// from [-1, 1], a scale per weight column); oneDNN's int8 LSTM with its common data scale
// for x and h over [-max(|x|max, 1), max(|x|max, 1)], and a scale per weight column from
// the largest magnitude over both weight matrices, the scheme of its int8 example.
//
//   onednn_accuracy            # M and L
//   onednn_accuracy M          # one workload
#include "../workloads.hpp"
#include "onednn_lstm_desc.hpp"

#include <dynrnn/dynrnn.hpp>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using bench::Workload;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// ||a - b|| / ||b|| over n floats.
double relative(const float* a, const float* b, std::size_t n) {
  double diff = 0, norm = 0;
  for (std::size_t k = 0; k < n; ++k) {
    diff += (double(a[k]) - double(b[k])) * (double(a[k]) - double(b[k]));
    norm += double(b[k]) * double(b[k]);
  }
  return std::sqrt(diff / norm);
}

// Our gate block (TensorFlow's i, j, f, o) of oneDNN's gate g (i, f, c, o).
constexpr int kOurBlock[4] = {0, 2, 1, 3};

// Rows [row0, row0 + rows) of the kernel (rows, 4H) in oneDNN's ldigo order, or back.
std::vector<float> to_ldigo(const dynrnn::Matrix<float>& kernel, dynrnn::Index row0, dynrnn::Index rows,
                            dynrnn::Index H) {
  std::vector<float> out(std::size_t(rows * 4 * H));
  for (dynrnn::Index i = 0; i < rows; ++i)
    for (int g = 0; g < 4; ++g)
      for (dynrnn::Index o = 0; o < H; ++o)
        out[std::size_t((i * 4 + g) * H + o)] = kernel(row0 + i, kOurBlock[g] * H + o);
  return out;
}

void from_ldigo(const float* w, dynrnn::Index row0, dynrnn::Index rows, dynrnn::Index H,
                dynrnn::Matrix<float>& kernel) {
  for (dynrnn::Index i = 0; i < rows; ++i)
    for (int g = 0; g < 4; ++g)
      for (dynrnn::Index o = 0; o < H; ++o) kernel(row0 + i, kOurBlock[g] * H + o) = w[(i * 4 + g) * H + o];
}

struct Results {
  std::vector<float> outputs;   // [T, B, H]
  dynrnn::Matrix<float> dkernel;  // (I + H, 4H), our layout
};

Results run_dynrnn(const dynrnn::LSTMCell<float>& cell, const dynrnn::Tensor3<float>& x,
                   const std::vector<int>& lengths, const dynrnn::Tensor3<float>& dy) {
  const auto fwd = dynrnn::dynamic_rnn(cell, x, lengths);
  const auto g = dynrnn::dynamic_rnn_backward(cell, fwd, dy);
  return {std::vector<float>(fwd.outputs.data(), fwd.outputs.data() + fwd.outputs.size()), g.kernel};
}

// A user-layout float32 tensor in the layout and type `want`, through a reorder.
memory converted(const std::vector<float>& data, const memory::dims& dims, tag t, const memory::desc& want,
                 const dnnl::engine& eng, dnnl::stream& s) {
  memory user({dims, dt::f32, t}, eng);
  std::memcpy(user.get_data_handle(), data.data(), data.size() * sizeof(float));
  memory out(want, eng);
  dnnl::reorder(user, out).execute(s, user, out);
  s.wait();
  return out;
}

// `m` read back as float32 in the plain layout t.
std::vector<float> read(const memory& m, const memory::dims& dims, tag t, const dnnl::engine& eng, dnnl::stream& s) {
  memory user({dims, dt::f32, t}, eng);
  dnnl::reorder(m, user).execute(s, const_cast<memory&>(m), user);
  s.wait();
  const auto* p = static_cast<const float*>(user.get_data_handle());
  return std::vector<float>(p, p + user.get_desc().get_size() / sizeof(float));
}

Results run_onednn(const dynrnn::LSTMCell<float>& cell, const Workload& w, const dynrnn::Tensor3<float>& x,
                   const dynrnn::Tensor3<float>& dy, dt type) {
  const memory::dim B = w.batch, I = w.input, H = w.hidden;
  const bench::OneDnnLstm l(w, type);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const dnnl::lstm_forward::primitive_desc fpd(l.forward(dnnl::prop_kind::forward_training), eng);
  const dnnl::lstm_backward::primitive_desc bpd(l.backward(), eng, fpd);
  const memory::dims &src = l.src, &iter = l.iter, &wl = l.wl, &wi = l.wi, &bias = l.bias, &dst = l.dst;

  const std::vector<float> x_data(x.data(), x.data() + x.size()), dy_data(dy.data(), dy.data() + dy.size());
  const std::vector<float> zeros_iter(std::size_t(B * H), 0.0f), zeros_bias(std::size_t(4 * H), 0.0f);
  memory x_m = converted(x_data, src, tag::tnc, fpd.src_layer_desc(), eng, s);
  memory h0 = converted(zeros_iter, iter, tag::ldnc, fpd.src_iter_desc(), eng, s);
  memory c0 = converted(zeros_iter, iter, tag::ldnc, fpd.src_iter_c_desc(), eng, s);
  memory b = converted(zeros_bias, bias, tag::ldgo, fpd.bias_desc(), eng, s);
  memory w_layer = converted(to_ldigo(cell.kernel(), 0, I, H), wl, tag::ldigo, fpd.weights_layer_desc(), eng, s);
  memory w_iter = converted(to_ldigo(cell.kernel(), I, H, H), wi, tag::ldigo, fpd.weights_iter_desc(), eng, s);
  memory y(fpd.dst_layer_desc(), eng), hT(fpd.dst_iter_desc(), eng), cT(fpd.dst_iter_c_desc(), eng),
      ws(fpd.workspace_desc(), eng);
  dnnl::lstm_forward(fpd).execute(s, {{DNNL_ARG_SRC_LAYER, x_m}, {DNNL_ARG_SRC_ITER, h0}, {DNNL_ARG_SRC_ITER_C, c0},
                                      {DNNL_ARG_WEIGHTS_LAYER, w_layer}, {DNNL_ARG_WEIGHTS_ITER, w_iter},
                                      {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST_LAYER, y}, {DNNL_ARG_DST_ITER, hT},
                                      {DNNL_ARG_DST_ITER_C, cT}, {DNNL_ARG_WORKSPACE, ws}});
  s.wait();

  // The backward pass reads the weights in its own layout, and writes float32 gradients.
  memory bw_layer = converted(to_ldigo(cell.kernel(), 0, I, H), wl, tag::ldigo, bpd.weights_layer_desc(), eng, s);
  memory bw_iter = converted(to_ldigo(cell.kernel(), I, H, H), wi, tag::ldigo, bpd.weights_iter_desc(), eng, s);
  memory dw_layer = converted(std::vector<float>(std::size_t(I * 4 * H), 0.0f), wl, tag::ldigo,
                              bpd.diff_weights_layer_desc(), eng, s);
  memory dw_iter = converted(std::vector<float>(std::size_t(H * 4 * H), 0.0f), wi, tag::ldigo,
                             bpd.diff_weights_iter_desc(), eng, s);
  memory d_bias = converted(zeros_bias, bias, tag::ldgo, bpd.diff_bias_desc(), eng, s);
  memory dy_m = converted(dy_data, dst, tag::tnc, bpd.diff_dst_layer_desc(), eng, s);
  memory dh_T = converted(zeros_iter, iter, tag::ldnc, bpd.diff_dst_iter_desc(), eng, s);
  memory dc_T = converted(zeros_iter, iter, tag::ldnc, bpd.diff_dst_iter_c_desc(), eng, s);
  memory dx(bpd.diff_src_layer_desc(), eng), dh0(bpd.diff_src_iter_desc(), eng), dc0(bpd.diff_src_iter_c_desc(), eng);
  dnnl::lstm_backward(bpd).execute(
      s, {{DNNL_ARG_SRC_LAYER, x_m}, {DNNL_ARG_SRC_ITER, h0}, {DNNL_ARG_SRC_ITER_C, c0},
          {DNNL_ARG_WEIGHTS_LAYER, bw_layer}, {DNNL_ARG_WEIGHTS_ITER, bw_iter}, {DNNL_ARG_BIAS, b},
          {DNNL_ARG_DST_LAYER, y}, {DNNL_ARG_DST_ITER, hT}, {DNNL_ARG_DST_ITER_C, cT}, {DNNL_ARG_WORKSPACE, ws},
          {DNNL_ARG_DIFF_SRC_LAYER, dx}, {DNNL_ARG_DIFF_SRC_ITER, dh0}, {DNNL_ARG_DIFF_SRC_ITER_C, dc0},
          {DNNL_ARG_DIFF_WEIGHTS_LAYER, dw_layer}, {DNNL_ARG_DIFF_WEIGHTS_ITER, dw_iter},
          {DNNL_ARG_DIFF_BIAS, d_bias}, {DNNL_ARG_DIFF_DST_LAYER, dy_m}, {DNNL_ARG_DIFF_DST_ITER, dh_T},
          {DNNL_ARG_DIFF_DST_ITER_C, dc_T}});
  s.wait();

  Results r{read(y, dst, tag::tnc, eng, s), dynrnn::Matrix<float>(I + H, 4 * H)};
  from_ldigo(read(dw_layer, wl, tag::ldigo, eng, s).data(), 0, I, H, r.dkernel);
  from_ldigo(read(dw_iter, wi, tag::ldigo, eng, s).data(), I, H, H, r.dkernel);
  return r;
}

// oneDNN's int8 inference of the cell on x: its outputs [T, B, H].
std::vector<float> run_onednn_int8(const dynrnn::LSTMCell<float>& cell, const Workload& w,
                                   const dynrnn::Tensor3<float>& x) {
  const memory::dim B = w.batch, I = w.input, H = w.hidden;
  const bench::OneDnnLstm l(w, dt::f32);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const std::vector<float> x_data(x.data(), x.data() + x.size());
  float x_bound = 1.0f;
  for (float v : x_data) x_bound = std::max(x_bound, std::abs(v));
  const std::vector<float> w_layer = to_ldigo(cell.kernel(), 0, I, H), w_iter = to_ldigo(cell.kernel(), I, H, H);
  std::vector<float> scales(std::size_t(4 * H), 0.0f);  // per (g, o), over both matrices
  for (const std::vector<float>* m : {&w_layer, &w_iter})
    for (std::size_t k = 0; k < m->size(); ++k)
      scales[k % scales.size()] = std::max(scales[k % scales.size()], std::abs((*m)[k]));
  for (float& v : scales) v = v > 0 ? 127.0f / v : 1.0f;
  const dnnl::primitive_attr attr = bench::OneDnnLstm::int8_attr(x_bound, scales);
  const dnnl::lstm_forward::primitive_desc pd(l.int8_forward(), attr, eng);
  // Quantising reorders: x with the data parameters, the weights with their scales.
  const auto quantised = [&](const std::vector<float>& data, const memory::dims& dims, tag t,
                             const memory::desc& want) {
    memory user({dims, dt::f32, t}, eng);
    std::memcpy(user.get_data_handle(), data.data(), data.size() * sizeof(float));
    memory out(want, eng);
    dnnl::reorder(dnnl::reorder::primitive_desc(user, out, attr)).execute(s, user, out);
    s.wait();
    return out;
  };
  const std::vector<float> zeros_iter(std::size_t(B * H), 0.0f), zeros_bias(std::size_t(4 * H), 0.0f);
  memory x_m = quantised(x_data, l.src, tag::tnc, pd.src_layer_desc());
  memory wl_m = quantised(w_layer, l.wl, tag::ldigo, pd.weights_layer_desc());
  memory wi_m = quantised(w_iter, l.wi, tag::ldigo, pd.weights_iter_desc());
  memory h0 = converted(zeros_iter, l.iter, tag::ldnc, pd.src_iter_desc(), eng, s);
  memory c0 = converted(zeros_iter, l.iter, tag::ldnc, pd.src_iter_c_desc(), eng, s);
  memory b = converted(zeros_bias, l.bias, tag::ldgo, pd.bias_desc(), eng, s);
  memory y(pd.dst_layer_desc(), eng), hT(pd.dst_iter_desc(), eng), cT(pd.dst_iter_c_desc(), eng);
  dnnl::lstm_forward(pd).execute(s, {{DNNL_ARG_SRC_LAYER, x_m}, {DNNL_ARG_SRC_ITER, h0}, {DNNL_ARG_SRC_ITER_C, c0},
                                     {DNNL_ARG_WEIGHTS_LAYER, wl_m}, {DNNL_ARG_WEIGHTS_ITER, wi_m},
                                     {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST_LAYER, y}, {DNNL_ARG_DST_ITER, hT},
                                     {DNNL_ARG_DST_ITER_C, cT}});
  s.wait();
  return read(y, l.dst, tag::tnc, eng, s);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  std::printf("| workload | system | outputs: bf16 against f32 | weight gradients: bf16 against f32 "
              "| outputs: int8 against f32 |\n");
  std::printf("|---|---|---|---|---|\n");
  for (const Workload& w : bench::kWorkloads) {
    const std::string name = w.name;
    if (only.empty() ? (name != "M" && name != "L") : name != only) continue;
    dynrnn::LSTMCell<float> cell(w.input, w.hidden, 0.0f);  // forget_bias 0: oneDNN has none
    dynrnn::Rng rng(7);
    dynrnn::Tensor3<float> x(w.max_time, w.batch, w.input), dy(w.max_time, w.batch, w.hidden);
    for (dynrnn::Index k = 0; k < x.size(); ++k) x.data()[k] = float(dynrnn::uniform(rng, -1, 1));
    for (dynrnn::Index k = 0; k < dy.size(); ++k) dy.data()[k] = float(dynrnn::uniform(rng, -1, 1));
    const std::vector<int> lengths(std::size_t(w.batch), int(w.max_time));  // oneDNN runs whole sequences

    const Results ours32 = run_dynrnn(cell, x, lengths, dy);
    cell.set_precision(dynrnn::Precision::bfloat16);
    const Results ours16 = run_dynrnn(cell, x, lengths, dy);
    cell.set_precision(dynrnn::Precision::float32);
    cell.begin_int8_calibration();
    dynrnn::dynamic_rnn(cell, x, lengths);
    cell.end_int8_calibration();
    cell.set_precision(dynrnn::Precision::int8);
    const auto ours8 = dynrnn::dynamic_rnn(cell, x, lengths).outputs;
    cell.set_precision(dynrnn::Precision::float32);
    const std::vector<float> theirs8 = run_onednn_int8(cell, w, x);
    const Results theirs32 = run_onednn(cell, w, x, dy, dt::f32);
    const Results theirs16 = run_onednn(cell, w, x, dy, dt::bf16);

    const std::size_t n_out = ours32.outputs.size(), n_dw = std::size_t(ours32.dkernel.size());
    const double same_out = relative(theirs32.outputs.data(), ours32.outputs.data(), n_out);
    const double same_dw = relative(theirs32.dkernel.data(), ours32.dkernel.data(), n_dw);
    if (same_out > 1e-4 || same_dw > 1e-4) {
      std::fprintf(stderr, "onednn_accuracy: %s: the float32 LSTMs disagree (outputs %.2e, weight gradients %.2e)\n",
                   w.name, same_out, same_dw);
      return 1;
    }
    std::printf("| %s | dynrnn | %.2e | %.2e | %.2e |\n", w.name,
                relative(ours16.outputs.data(), ours32.outputs.data(), n_out),
                relative(ours16.dkernel.data(), ours32.dkernel.data(), n_dw),
                relative(ours8.data(), ours32.outputs.data(), n_out));
    std::printf("| %s | oneDNN | %.2e | %.2e | %.2e |\n", w.name,
                relative(theirs16.outputs.data(), theirs32.outputs.data(), n_out),
                relative(theirs16.dkernel.data(), theirs32.dkernel.data(), n_dw),
                relative(theirs8.data(), theirs32.outputs.data(), n_out));
    std::printf("(%s: dynrnn's and oneDNN's float32 results agree to %.1e (outputs), %.1e (weight gradients))\n",
                w.name, same_out, same_dw);
    std::fflush(stdout);
  }
  return 0;
}
