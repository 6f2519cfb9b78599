// Single-precision GEMM throughput on this machine: the ceiling every LSTM figure is
// measured against. C = A·B, row-major, at 2048³ and at the LSTM workloads' own shapes
// (the per-step recurrent product B x H · H x 4H and the input projection), and C = Aᵀ·B
// at the shapes of their weight gradients ([x, h]ᵀ · dgates: (I+H) x 4H, over B·T rows).
// Kernels: Eigen's (dynrnn's Gemm for A·B; Eigen's own product expression for Aᵀ·B), dynrnn's
// own kernel ("packed": PackedRightGemm for A·B, with B packed once outside the timed loop
// as a cell packs its weights once per pass; Gemm for Aᵀ·B, which packs slices of both), and
// OpenBLAS and oneDNN's dnnl_sgemm when the build found them.
//
//   gemm_peak_benchmarks --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include "workloads.hpp"

#include <dynrnn/core/gemm.hpp>
#include <dynrnn/core/parallel.hpp>

#include <benchmark/benchmark.h>

#ifdef DYNRNN_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef DYNRNN_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

#include <string>

namespace {

using Mat = dynrnn::Matrix<float>;

struct Shape {
  std::string name;
  dynrnn::Index m, n, k;     // C (m, n), inner dimension k
  bool transposed = false;   // C = Aᵀ·B with A stored (k, m), rather than A·B with A (m, k)
};

Mat left(const Shape& s) { return s.transposed ? Mat::Random(s.k, s.m) : Mat::Random(s.m, s.k); }

// Times product(), which writes c, after one untimed call (the first call maps in the pages
// of c and of the kernels' workspaces), and reports GFLOP/s.
template <class Product>
void measure(benchmark::State& state, const Shape& s, const Mat& c, Product&& product) {
  const auto step = [&] {
    product();
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  };
  step();
  for (auto _ : state) step();
  state.counters["GFLOP"] = benchmark::Counter(2e-9 * double(s.m) * double(s.n) * double(s.k),
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Eigen(benchmark::State& state, const Shape& s) {
  dynrnn::set_num_threads(int(state.range(0)));
  const Mat a = left(s), b = Mat::Random(s.k, s.n);
  Mat c(s.m, s.n);
  dynrnn::Gemm<float> gemm;
  measure(state, s, c, [&] {
    if (s.transposed)
      c.noalias() = a.transpose() * b;  // dynrnn's Gemm would run its own kernel
    else
      gemm(c, a, dynrnn::Op::N, b, dynrnn::Op::N);
  });
}

void BM_Packed(benchmark::State& state, const Shape& s) {
  dynrnn::set_num_threads(int(state.range(0)));
  const Mat a = left(s), b = Mat::Random(s.k, s.n);
  Mat c(s.m, s.n);
  dynrnn::PackedRightGemm<float> gemm;
  dynrnn::Gemm<float> transposed;
  if (!s.transposed) gemm.pack(b, dynrnn::Op::N);
  measure(state, s, c, [&] {
    if (s.transposed)
      transposed(c, a, dynrnn::Op::T, b, dynrnn::Op::N);
    else
      gemm(c, a);
  });
}

#ifdef DYNRNN_HAVE_OPENBLAS
void BM_OpenBLAS(benchmark::State& state, const Shape& s) {
  openblas_set_num_threads(int(state.range(0)));
  const Mat a = left(s), b = Mat::Random(s.k, s.n);
  Mat c(s.m, s.n);
  measure(state, s, c, [&] {
    cblas_sgemm(CblasRowMajor, s.transposed ? CblasTrans : CblasNoTrans, CblasNoTrans, int(s.m), int(s.n), int(s.k),
                1.0f, a.data(), int(a.cols()), b.data(), int(s.n), 0.0f, c.data(), int(s.n));
  });
}
#endif

#ifdef DYNRNN_HAVE_ONEDNN
void BM_OneDNN(benchmark::State& state, const Shape& s) {
  dynrnn::set_num_threads(int(state.range(0)));
  const Mat a = left(s), b = Mat::Random(s.k, s.n);
  Mat c(s.m, s.n);
  measure(state, s, c, [&] {
    dnnl_sgemm(s.transposed ? 'T' : 'N', 'N', s.m, s.n, s.k, 1.0f, a.data(), a.cols(), b.data(), s.n, 0.0f, c.data(),
               s.n);
  });
}
#endif

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::vector<Shape> shapes = {{"2048", 2048, 2048, 2048}};
  for (const auto& w : bench::kWorkloads) {
    if (std::string(w.name) == "M-var") continue;  // same shapes as M
    shapes.push_back({std::string("recurrent-") + w.name, w.batch, 4 * w.hidden, w.hidden});
    shapes.push_back({std::string("input-") + w.name, w.batch * w.max_time, 4 * w.hidden, w.input});
    shapes.push_back(
        {std::string("weight-") + w.name, w.input + w.hidden, 4 * w.hidden, w.batch * w.max_time, true});
  }
  for (const auto& s : shapes) {
    benchmark::RegisterBenchmark(("gemm/eigen/" + s.name).c_str(), BM_Eigen, s)
        ->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
    benchmark::RegisterBenchmark(("gemm/packed/" + s.name).c_str(), BM_Packed, s)
        ->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
#ifdef DYNRNN_HAVE_OPENBLAS
    benchmark::RegisterBenchmark(("gemm/openblas/" + s.name).c_str(), BM_OpenBLAS, s)
        ->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
#endif
#ifdef DYNRNN_HAVE_ONEDNN
    benchmark::RegisterBenchmark(("gemm/onednn/" + s.name).c_str(), BM_OneDNN, s)
        ->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
#endif
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
