// oneDNN's LSTM primitive on dynrnn's benchmark workloads (workloads.hpp), for comparison.
//
// oneDNN has no per-sequence lengths, so it runs the padded batch: every row for all T
// steps. The GFLOP counter still counts only the valid (row, step) pairs, as dynrnn's
// does, so both measure useful work per second. Training is forward_training plus
// backward of the LSTM alone (no dense layer, loss or optimiser, which cost under 1%).
// Weights are reordered into the primitive's preferred layout once, outside the timing, and
// one untimed step runs before the clock starts, as in dynrnn's benchmarks.
//
// The onednn-bf16 rows run oneDNN's mixed-precision LSTM, and the onednn-int8 rows its int8
// inference (onednn_lstm_desc.hpp): x is given already quantised to u8, as it is given in
// bf16 to the bf16 rows, while dynrnn's steps include converting x.
//
//   onednn_lstm_benchmarks --benchmark_filter=M/ --benchmark_repetitions=5
#include "../workloads.hpp"
#include "onednn_lstm_desc.hpp"

#include <benchmark/benchmark.h>
#include <oneapi/dnnl/dnnl.hpp>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using bench::Workload;
using dnnl::memory;
using tag = memory::format_tag;

// A tensor of the plain layout `d` (float32 or bfloat16) holding `value` everywhere: filled in
// float32 and converted by a reorder.
memory filled(const memory::desc& d, const dnnl::engine& eng, float value) {
  const memory::desc f32 = d.data_type() == memory::data_type::f32
                               ? d
                               : memory::desc(d.dims(), memory::data_type::f32,
                                              memory::dims(d.data.format_desc.blocking.strides,
                                                           d.data.format_desc.blocking.strides + d.data.ndims));
  memory m(f32, eng);
  auto* p = static_cast<float*>(m.get_data_handle());
  for (std::size_t k = 0; k < f32.get_size() / sizeof(float); ++k) p[k] = value;
  if (d.data_type() == memory::data_type::f32) return m;
  memory out(d, eng);
  dnnl::stream s(eng);
  dnnl::reorder(m, out).execute(s, m, out);
  s.wait();
  return out;
}

// A user-layout tensor reordered into the layout `want` (once, outside the timing).
memory in_layout(const memory& user, const memory::desc& want, const dnnl::engine& eng, dnnl::stream& s) {
  if (user.get_desc() == want) return user;
  memory m(want, eng);
  dnnl::reorder(user, m).execute(s, const_cast<memory&>(user), m);
  s.wait();
  return m;
}

// The workload's descriptors (onednn_lstm_desc.hpp) with an engine and a stream.
struct Lstm : bench::OneDnnLstm {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream s{eng};

  Lstm(const Workload& w, memory::data_type type) : OneDnnLstm(w, type) {}

  dnnl::lstm_forward::primitive_desc forward_pd(dnnl::prop_kind kind) const { return {forward(kind), eng}; }
};

void set_threads(benchmark::State& state) {
#ifdef _OPENMP
  omp_set_num_threads(int(state.range(0)));
#else
  (void)state;  // built without OpenMP: oneDNN's own threading decides
#endif
}

void counters(benchmark::State& state, const Workload& w, double flops) {
  state.counters["GFLOP"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["sequences"] = benchmark::Counter(double(w.batch), benchmark::Counter::kIsIterationInvariantRate);
  state.SetItemsProcessed(state.iterations() * w.batch);
}

void BM_Forward(benchmark::State& state, const Workload& w, memory::data_type type) {
  set_threads(state);
  const bool int8 = type == memory::data_type::s8;
  Lstm l(w, int8 ? memory::data_type::f32 : type);
  const auto pd = int8 ? dnnl::lstm_forward::primitive_desc(
                             l.int8_forward(),
                             Lstm::int8_attr(1.0f, std::vector<float>(std::size_t(4 * w.hidden), 127.0f / 0.01f)), l.eng)
                       : l.forward_pd(dnnl::prop_kind::forward_inference);
  // Weights: float32 or bf16 at 0.01 each, or, in int8, their s8 (a plain reorder of the
  // float32 values, which the timing does not depend on).
  const memory::data_type user_type = int8 ? memory::data_type::f32 : type;
  auto user_wl = filled(Lstm::md(l.wl, tag::ldigo, user_type), l.eng, 0.01f);
  auto user_wi = filled(Lstm::md(l.wi, tag::ldigo, user_type), l.eng, 0.01f);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC_LAYER, filled(pd.src_layer_desc(), l.eng, 0.5f)},
      {DNNL_ARG_SRC_ITER, filled(pd.src_iter_desc(), l.eng, 0.0f)},
      {DNNL_ARG_SRC_ITER_C, filled(pd.src_iter_c_desc(), l.eng, 0.0f)},
      {DNNL_ARG_WEIGHTS_LAYER, in_layout(user_wl, pd.weights_layer_desc(), l.eng, l.s)},
      {DNNL_ARG_WEIGHTS_ITER, in_layout(user_wi, pd.weights_iter_desc(), l.eng, l.s)},
      {DNNL_ARG_BIAS, filled(pd.bias_desc(), l.eng, 0.0f)},
      {DNNL_ARG_DST_LAYER, memory(pd.dst_layer_desc(), l.eng)},
      {DNNL_ARG_DST_ITER, memory(pd.dst_iter_desc(), l.eng)},
      {DNNL_ARG_DST_ITER_C, memory(pd.dst_iter_c_desc(), l.eng)},
  };
  dnnl::lstm_forward prim(pd);
  const auto step = [&] {
    prim.execute(l.s, args);
    l.s.wait();
  };
  step();  // untimed: the first execution touches the outputs and scratchpad first
  for (auto _ : state) step();
  counters(state, w, bench::forward_flops(w, bench::lengths_of(w)));
}

void BM_Train(benchmark::State& state, const Workload& w, memory::data_type type) {
  set_threads(state);
  Lstm l(w, type);
  const auto fpd = l.forward_pd(dnnl::prop_kind::forward_training);
  const dnnl::lstm_backward::primitive_desc bpd(l.backward(), l.eng, fpd);

  auto user_wl = filled(Lstm::md(l.wl, tag::ldigo, type), l.eng, 0.01f);
  auto user_wi = filled(Lstm::md(l.wi, tag::ldigo, type), l.eng, 0.01f);
  memory src = filled(fpd.src_layer_desc(), l.eng, 0.5f), h0 = filled(fpd.src_iter_desc(), l.eng, 0.0f),
         c0 = filled(fpd.src_iter_c_desc(), l.eng, 0.0f), b = filled(fpd.bias_desc(), l.eng, 0.0f),
         dst = memory(fpd.dst_layer_desc(), l.eng), hT = memory(fpd.dst_iter_desc(), l.eng),
         cT = memory(fpd.dst_iter_c_desc(), l.eng), ws = memory(fpd.workspace_desc(), l.eng);
  std::unordered_map<int, memory> fwd_args{
      {DNNL_ARG_SRC_LAYER, src}, {DNNL_ARG_SRC_ITER, h0}, {DNNL_ARG_SRC_ITER_C, c0},
      {DNNL_ARG_WEIGHTS_LAYER, in_layout(user_wl, fpd.weights_layer_desc(), l.eng, l.s)},
      {DNNL_ARG_WEIGHTS_ITER, in_layout(user_wi, fpd.weights_iter_desc(), l.eng, l.s)},
      {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST_LAYER, dst}, {DNNL_ARG_DST_ITER, hT}, {DNNL_ARG_DST_ITER_C, cT},
      {DNNL_ARG_WORKSPACE, ws}};
  std::unordered_map<int, memory> bwd_args{
      {DNNL_ARG_SRC_LAYER, src}, {DNNL_ARG_SRC_ITER, h0}, {DNNL_ARG_SRC_ITER_C, c0},
      {DNNL_ARG_WEIGHTS_LAYER, in_layout(user_wl, bpd.weights_layer_desc(), l.eng, l.s)},
      {DNNL_ARG_WEIGHTS_ITER, in_layout(user_wi, bpd.weights_iter_desc(), l.eng, l.s)},
      {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST_LAYER, dst}, {DNNL_ARG_DST_ITER, hT}, {DNNL_ARG_DST_ITER_C, cT},
      {DNNL_ARG_WORKSPACE, ws},
      {DNNL_ARG_DIFF_SRC_LAYER, memory(bpd.diff_src_layer_desc(), l.eng)},
      {DNNL_ARG_DIFF_SRC_ITER, memory(bpd.diff_src_iter_desc(), l.eng)},
      {DNNL_ARG_DIFF_SRC_ITER_C, memory(bpd.diff_src_iter_c_desc(), l.eng)},
      {DNNL_ARG_DIFF_WEIGHTS_LAYER, filled(bpd.diff_weights_layer_desc(), l.eng, 0.0f)},
      {DNNL_ARG_DIFF_WEIGHTS_ITER, filled(bpd.diff_weights_iter_desc(), l.eng, 0.0f)},
      {DNNL_ARG_DIFF_BIAS, filled(bpd.diff_bias_desc(), l.eng, 0.0f)},
      {DNNL_ARG_DIFF_DST_LAYER, filled(bpd.diff_dst_layer_desc(), l.eng, 0.01f)},
      {DNNL_ARG_DIFF_DST_ITER, filled(bpd.diff_dst_iter_desc(), l.eng, 0.0f)},
      {DNNL_ARG_DIFF_DST_ITER_C, filled(bpd.diff_dst_iter_c_desc(), l.eng, 0.0f)}};
  dnnl::lstm_forward fwd(fpd);
  dnnl::lstm_backward bwd(bpd);
  const auto step = [&] {
    fwd.execute(l.s, fwd_args);
    bwd.execute(l.s, bwd_args);
    l.s.wait();
  };
  step();  // untimed, as in BM_Forward
  for (auto _ : state) step();
  counters(state, w, 3.0 * bench::forward_flops(w, bench::lengths_of(w)));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  using type = memory::data_type;
  for (const Workload& w : bench::kWorkloads)  // s8 stands for the int8 configuration
    benchmark::RegisterBenchmark(("onednn-int8/forward/" + std::string(w.name)).c_str(), BM_Forward, w, type::s8)
        ->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
  for (const auto& [system, data] : {std::pair<std::string, type>{"onednn", type::f32}, {"onednn-bf16", type::bf16}}) {
    for (const Workload& w : bench::kWorkloads)
      benchmark::RegisterBenchmark((system + "/forward/" + w.name).c_str(), BM_Forward, w, data)
          ->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
    for (const Workload& w : bench::kWorkloads)
      benchmark::RegisterBenchmark((system + "/train/" + w.name).c_str(), BM_Train, w, data)
          ->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
