// dynrnn benchmarks: LSTM forward inference and a full training step, in float, at 1 and
// 2 threads, for the workloads of workloads.hpp (S, M, M-var, L).
//
// Counters: GFLOP (a rate) counts the LSTM's GEMM work, 2·(I+H)·4H flops per valid
// (row, step) for forward and 3× that for training with input gradients (forward,
// input/state gradients, weight gradients); sequences is rows processed per second.
//
// dynrnn/train is the training step a program runs when the LSTM reads its data directly:
// it skips dLoss/dx (InputGradients::skip), 2·I·4H flops per valid (row, step) fewer, as
// PyTorch's does for inputs that require no gradient, and its GFLOP counter counts only
// the work done. dynrnn-dx/train computes dLoss/dx as well, like for like with oneDNN's
// LSTM backward, which always computes it.
//
// Every benchmark runs one untimed step before it starts the clock, as the peers' benchmarks
// do: the first step allocates the buffers that later steps reuse, and the kernel maps their
// pages in as it first writes them (over 100 MB at L), while a training run takes thousands
// of steps. L runs only two or three timed steps per repetition, and without the untimed
// step its figures were 10-30% slower.
//
//   dynrnn_benchmarks --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//   dynrnn_benchmarks --workloads-json      # the workloads and their lengths, for peers
#include "workloads.hpp"

#include <dynrnn/dynrnn.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

using bench::Workload;
constexpr int kClasses = 15;

void set_counters(benchmark::State& state, const Workload& w, double flops) {
  state.counters["GFLOP"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["sequences"] =
      benchmark::Counter(double(w.batch), benchmark::Counter::kIsIterationInvariantRate);
  state.SetItemsProcessed(state.iterations() * w.batch);
}

template <class Scalar>
void BM_Forward(benchmark::State& state, Workload w) {
  dynrnn::set_num_threads(int(state.range(0)));
  const dynrnn::LSTMCell<Scalar> cell(w.input, w.hidden);
  dynrnn::Tensor3<Scalar> x(w.max_time, w.batch, w.input);
  x.setRandom();
  const auto lengths = bench::lengths_of(w);
  const auto s0 = cell.zero_state(w.batch);
  dynrnn::DynamicRNNResult<dynrnn::LSTMCell<Scalar>> fwd;  // reused: no allocation per step
  const auto step = [&] {
    dynrnn::dynamic_rnn(cell, x, lengths, s0, fwd);
    benchmark::DoNotOptimize(fwd.outputs.data());
    benchmark::ClobberMemory();
  };
  step();  // untimed: the first pass allocates and first touches the buffers (see the file comment)
  for (auto _ : state) step();
  set_counters(state, w, bench::forward_flops(w, lengths));
}

// One training step of a many-to-one classifier: LSTM, last valid output, dense,
// softmax cross-entropy, BPTT, RMSProp on every parameter.
template <class Scalar>
void BM_TrainStep(benchmark::State& state, Workload w, dynrnn::InputGradients input_gradients) {
  dynrnn::set_num_threads(int(state.range(0)));
  dynrnn::Rng rng(2);
  dynrnn::LSTMCell<Scalar> cell(w.input, w.hidden);
  dynrnn::Dense<Scalar> dense(w.hidden, kClasses);
  dynrnn::RMSProp<Scalar> opt(Scalar(0.001));
  dynrnn::Tensor3<Scalar> x(w.max_time, w.batch, w.input);
  x.setRandom();
  const auto lengths = bench::lengths_of(w);
  std::vector<int> labels(w.batch);
  for (int& y : labels) y = int(dynrnn::uniform_int(rng, 0, kClasses));

  // Every buffer is reused across steps, as a training loop that cares about speed does.
  const auto s0 = cell.zero_state(w.batch), d_final = cell.zero_state(w.batch);
  dynrnn::DynamicRNNResult<dynrnn::LSTMCell<Scalar>> fwd;
  dynrnn::DynamicRNNGradients<dynrnn::LSTMCell<Scalar>> d_cell(cell);
  auto d_dense = dense.make_gradients();
  dynrnn::Matrix<Scalar> last, logits, d_last;
  dynrnn::SoftmaxCrossEntropy<Scalar> ce;
  dynrnn::Tensor3<Scalar> d_outputs;

  const auto step = [&] {
    dynrnn::dynamic_rnn(cell, x, lengths, s0, fwd);
    dynrnn::gather_last_outputs(fwd.outputs, lengths, last);
    dense.forward(last, logits);
    dynrnn::softmax_cross_entropy(logits, labels, dynrnn::Reduction::mean, ce);
    d_dense.setZero();
    d_cell.setZero();
    dense.backward(last, ce.d_logits, d_dense, d_last);
    dynrnn::gather_last_outputs_backward(d_last, lengths, w.max_time, d_outputs);
    dynrnn::dynamic_rnn_backward(cell, fwd, d_outputs, d_final, d_cell, input_gradients);
    opt.apply(cell, d_cell);
    opt.apply(dense, d_dense);
    benchmark::DoNotOptimize(cell.kernel().data());
    benchmark::ClobberMemory();
  };
  step();  // untimed, as in BM_Forward
  for (auto _ : state) step();
  const double skipped = input_gradients == dynrnn::InputGradients::skip
                             ? bench::forward_flops(w, lengths) * double(w.input) / double(w.input + w.hidden)
                             : 0.0;
  set_counters(state, w, 3.0 * bench::forward_flops(w, lengths) - skipped);
}

// Prints the workloads, lengths included, as JSON lines for peers written in other languages.
void print_workloads() {
  for (const Workload& w : bench::kWorkloads) {
    std::printf("{\"name\": \"%s\", \"input\": %lld, \"hidden\": %lld, \"batch\": %lld, \"max_time\": %lld, "
                "\"lengths\": [",
                w.name, static_cast<long long>(w.input), static_cast<long long>(w.hidden),
                static_cast<long long>(w.batch), static_cast<long long>(w.max_time));
    const auto lengths = bench::lengths_of(w);
    for (std::size_t b = 0; b < lengths.size(); ++b) std::printf("%s%d", b ? ", " : "", lengths[b]);
    std::printf("]}\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--workloads-json") {
    print_workloads();
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // Arg: threads (dynrnn::set_num_threads; more than 1 needs a build with OpenMP).
  for (const Workload& w : bench::kWorkloads)
    benchmark::RegisterBenchmark((std::string("dynrnn/forward/") + w.name).c_str(), BM_Forward<float>, w)
        ->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
  for (const Workload& w : bench::kWorkloads)
    benchmark::RegisterBenchmark((std::string("dynrnn/train/") + w.name).c_str(), BM_TrainStep<float>, w,
                                 dynrnn::InputGradients::skip)
        ->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
  for (const Workload& w : bench::kWorkloads)
    benchmark::RegisterBenchmark((std::string("dynrnn-dx/train/") + w.name).c_str(), BM_TrainStep<float>, w,
                                 dynrnn::InputGradients::compute)
        ->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
