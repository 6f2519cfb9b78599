// dynrnn benchmarks: LSTM forward inference and a full training step, in float, at 1 and
// 2 threads, for the workloads of workloads.hpp (S, M, M-var, L, L-one). The forward rows run
// inference passes (dynrnn::ForwardMode::inference), as oneDNN's forward_inference rows do;
// the rows named ...-training/forward run the same pass in the default ForwardMode::training,
// which keeps the cache for backward. The rows named
// dynrnn-bf16... run the same steps with the cell's products in bfloat16
// (cell.set_precision(dynrnn::Precision::bfloat16), or the model's), on the kernels
// cpu_isa() allows; in each form the float32 rows have. The rows named dynrnn-int8 run
// inference with the products in int8 (Precision::int8), calibrated on the benchmark's
// input first, in the reusing and the returning forms. The rows named ...-frozen run the
// same inference passes on dynrnn::freeze(cell), whose weights are packed once, before the
// clock starts (as oneDNN's rows reorder theirs), where the other rows pack them in every pass.
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
#include <type_traits>
#include <utility>
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

// How a benchmark calls dynamic_rnn and dynamic_rnn_backward: `reusing` passes a result
// object kept across steps; `returning` uses the overloads that return a fresh result,
// the form the README's first example teaches.
enum class Form { reusing, returning };

// The forward passes of `cell` (Weights::packed_per_pass), or of dynrnn::freeze(cell), its
// weights packed once before the clock starts, as oneDNN's are reordered once.
enum class Weights { packed_per_pass, frozen };

// One forward pass of `cell` in `form`.
template <class Cell, class Result>
void forward_pass(const Cell& cell, const dynrnn::Tensor3<typename Cell::Scalar>& x, const std::vector<int>& lengths,
                  const typename Cell::State& s0, Form form, dynrnn::ForwardMode mode, Result& reused) {
  if (form == Form::reusing) {
    dynrnn::dynamic_rnn(cell, x, lengths, s0, reused, mode);
    benchmark::DoNotOptimize(reused.outputs.data());
  } else {
    const auto result = dynrnn::dynamic_rnn(cell, x, lengths, s0, mode);
    benchmark::DoNotOptimize(result.outputs.data());
  }
  benchmark::ClobberMemory();
}

template <class Scalar>
void BM_Forward(benchmark::State& state, Workload w, Form form, dynrnn::Precision precision,
                dynrnn::ForwardMode mode, Weights weights) {
  dynrnn::set_num_threads(int(state.range(0)));
  dynrnn::LSTMCell<Scalar> cell(w.input, w.hidden);
  dynrnn::Tensor3<Scalar> x(w.max_time, w.batch, w.input);
  x.setRandom();
  const auto lengths = bench::lengths_of(w);
  const auto s0 = cell.zero_state(w.batch);
  if (precision == dynrnn::Precision::int8) {  // the input's bound from a float32 pass over it
    cell.begin_int8_calibration();
    dynrnn::dynamic_rnn(cell, x, lengths, s0);
    cell.end_int8_calibration();
  }
  cell.set_precision(precision);
  const auto run = [&](const auto& runner) {
    dynrnn::DynamicRNNResult<std::decay_t<decltype(runner)>> fwd;  // reused: no allocation per step
    // untimed: the first pass allocates and first touches the buffers (see the file comment)
    forward_pass(runner, x, lengths, s0, form, mode, fwd);
    for (auto _ : state) forward_pass(runner, x, lengths, s0, form, mode, fwd);
  };
  if (weights == Weights::frozen)
    run(dynrnn::freeze(cell));
  else
    run(cell);
  set_counters(state, w, bench::forward_flops(w, lengths));
}

// One training step of a many-to-one classifier: LSTM, last valid output, dense,
// softmax cross-entropy, BPTT, RMSProp on every parameter.
template <class Scalar>
void BM_TrainStep(benchmark::State& state, Workload w, dynrnn::InputGradients input_gradients, Form form,
                  dynrnn::Precision precision) {
  dynrnn::set_num_threads(int(state.range(0)));
  dynrnn::Rng rng(2);
  dynrnn::LSTMCell<Scalar> cell(w.input, w.hidden);
  cell.set_precision(precision);
  dynrnn::Dense<Scalar> dense(w.hidden, kClasses);
  dynrnn::RMSProp<Scalar> opt(Scalar(0.001));
  dynrnn::Tensor3<Scalar> x(w.max_time, w.batch, w.input);
  x.setRandom();
  const auto lengths = bench::lengths_of(w);
  std::vector<int> labels(w.batch);
  for (int& y : labels) y = int(dynrnn::uniform_int(rng, 0, kClasses));

  // Reusing: every buffer is kept across steps, as a training loop that cares about speed
  // does. Returning: the LSTM's result and gradients are fresh objects in every step, the
  // rest as before.
  using Cell = dynrnn::LSTMCell<Scalar>;
  const auto s0 = cell.zero_state(w.batch), d_final = cell.zero_state(w.batch);
  dynrnn::DynamicRNNResult<Cell> fwd;
  dynrnn::DynamicRNNGradients<Cell> d_cell(cell);
  auto d_dense = dense.make_gradients();
  dynrnn::Matrix<Scalar> last, logits, d_last;
  dynrnn::SoftmaxCrossEntropy<Scalar> ce;
  dynrnn::Tensor3<Scalar> d_outputs;

  // Everything but the LSTM's forward and backward.
  const auto head = [&](const dynrnn::DynamicRNNResult<Cell>& f) {
    dynrnn::gather_last_outputs(f.outputs, lengths, last);
    dense.forward(last, logits);
    dynrnn::softmax_cross_entropy(logits, labels, dynrnn::Reduction::mean, ce);
    d_dense.setZero();
    dense.backward(last, ce.d_logits, d_dense, d_last);
    dynrnn::gather_last_outputs_backward(d_last, lengths, w.max_time, d_outputs);
  };
  const auto step = [&] {
    if (form == Form::reusing) {
      dynrnn::dynamic_rnn(cell, x, lengths, s0, fwd);
      head(fwd);
      d_cell.setZero();
      dynrnn::dynamic_rnn_backward(cell, fwd, d_outputs, d_final, d_cell, input_gradients);
      opt.apply(cell, d_cell);
    } else {
      const auto f = dynrnn::dynamic_rnn(cell, x, lengths, s0);
      head(f);
      const auto g = dynrnn::dynamic_rnn_backward(cell, f, d_outputs, d_final, input_gradients);
      opt.apply(cell, g);
    }
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

// The same training step as BM_TrainStep's reusing form, through SequenceModel::train_step:
// what the model layer costs over the hand-written step.
template <class Scalar>
void BM_ModelTrainStep(benchmark::State& state, Workload w, dynrnn::Precision precision) {
  dynrnn::set_num_threads(int(state.range(0)));
  dynrnn::Rng rng(2);
  dynrnn::SequenceModel<dynrnn::LSTMCell<Scalar>> model(dynrnn::Input::features(w.input),
                                                        dynrnn::LSTMCell<Scalar>(w.input, w.hidden),
                                                        dynrnn::Output::classes(kClasses));
  model.set_optimizer(dynrnn::RMSProp<Scalar>(Scalar(0.001)));
  model.set_precision(precision);
  dynrnn::SequenceBatch<Scalar> batch;
  batch.features.resize(w.max_time, w.batch, w.input);
  batch.features.setRandom();
  batch.lengths = bench::lengths_of(w);
  batch.labels.resize(w.batch);
  for (int& y : batch.labels) y = int(dynrnn::uniform_int(rng, 0, kClasses));
  const auto step = [&] {
    benchmark::DoNotOptimize(model.train_step(batch));
    benchmark::ClobberMemory();
  };
  step();  // untimed, as in BM_Forward
  for (auto _ : state) step();
  set_counters(state, w, 3.0 * bench::forward_flops(w, batch.lengths) -
                             bench::forward_flops(w, batch.lengths) * double(w.input) / double(w.input + w.hidden));
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
  // Arg: threads (dynrnn::set_num_threads; more than 1 needs a build with OpenMP). The
  // `returning` rows call the overloads that return fresh results (see Form).
  const auto add = [](const std::string& name, auto fn, auto... args) {
    benchmark::RegisterBenchmark(name.c_str(), fn, args...)
        ->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
  };
  using dynrnn::InputGradients;
  using dynrnn::Precision;
  using Mode = dynrnn::ForwardMode;
  // Every form at each precision: dynrnn... in float32, dynrnn-bf16... in bfloat16.
  for (const auto& [system, precision] : {std::pair<std::string, Precision>{"dynrnn", Precision::float32},
                                          std::pair<std::string, Precision>{"dynrnn-bf16", Precision::bfloat16}}) {
    for (const Workload& w : bench::kWorkloads)
      add(system + "/forward/" + w.name, BM_Forward<float>, w, Form::reusing, precision, Mode::inference,
          Weights::packed_per_pass);
    for (const Workload& w : bench::kWorkloads)
      add(system + "-training/forward/" + w.name, BM_Forward<float>, w, Form::reusing, precision, Mode::training,
          Weights::packed_per_pass);
    for (const Workload& w : bench::kWorkloads)
      add(system + "/train/" + w.name, BM_TrainStep<float>, w, InputGradients::skip, Form::reusing, precision);
    for (const Workload& w : bench::kWorkloads)
      add(system + "-dx/train/" + w.name, BM_TrainStep<float>, w, InputGradients::compute, Form::reusing, precision);
    for (const Workload& w : bench::kWorkloads)
      add(system + "-returning/forward/" + w.name, BM_Forward<float>, w, Form::returning, precision, Mode::inference,
          Weights::packed_per_pass);
    for (const Workload& w : bench::kWorkloads)
      add(system + "-returning/train/" + w.name, BM_TrainStep<float>, w, InputGradients::skip, Form::returning,
          precision);
    for (const Workload& w : bench::kWorkloads)
      add(system + "-model/train/" + w.name, BM_ModelTrainStep<float>, w, precision);
  }
  for (const Workload& w : bench::kWorkloads)
    add(std::string("dynrnn-int8/forward/") + w.name, BM_Forward<float>, w, Form::reusing, Precision::int8,
        Mode::inference, Weights::packed_per_pass);
  for (const Workload& w : bench::kWorkloads)
    add(std::string("dynrnn-int8-returning/forward/") + w.name, BM_Forward<float>, w, Form::returning, Precision::int8,
        Mode::inference, Weights::packed_per_pass);
  // Inference on a FrozenCell (dynrnn::freeze), at each precision: the weights packed once.
  for (const auto& [system, precision] : {std::pair<std::string, Precision>{"dynrnn", Precision::float32},
                                          std::pair<std::string, Precision>{"dynrnn-bf16", Precision::bfloat16},
                                          std::pair<std::string, Precision>{"dynrnn-int8", Precision::int8}}) {
    for (const Workload& w : bench::kWorkloads)
      add(system + "-frozen/forward/" + w.name, BM_Forward<float>, w, Form::reusing, precision, Mode::inference,
          Weights::frozen);
    for (const Workload& w : bench::kWorkloads)
      add(system + "-frozen-returning/forward/" + w.name, BM_Forward<float>, w, Form::returning, precision,
          Mode::inference, Weights::frozen);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
