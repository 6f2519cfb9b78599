// Single-precision GEMM throughput on this machine: the ceiling every LSTM figure is
// measured against. C = A·B, row-major, at 2048³ and at the LSTM workloads' own shapes
// (the per-step recurrent product B x H · H x 4H and the input projection), and C = Aᵀ·B
// at the shapes of their weight gradients ([x, h]ᵀ · dgates: (I+H) x 4H, over B·T rows).
// Kernels: Eigen's (dynrnn's Gemm for A·B; Eigen's own product expression for Aᵀ·B), dynrnn's
// own kernel ("packed": PackedRightGemm for A·B, with B packed once outside the timed loop
// as a cell packs its weights once per pass; Gemm for Aᵀ·B, which packs slices of both), and
// OpenBLAS and oneDNN's dnnl_sgemm when the build found them.
//
// Reduced precision: dynrnn's bfloat16 and int8 products (Bf16PackedRightGemm and
// Int8PackedRightGemm, B packed once; A rounded or quantised at every call, inside the
// timing, and the int8 sums scaled back to float32) with the kernels cpu_isa() chooses
// ("bf16", "int8") and with the portable ones forced ("bf16-portable", "int8-portable");
// and oneDNN's matmul on bfloat16 operands and dnnl_gemm_u8s8s32 on operands converted
// beforehand (its int32 sums are not scaled back). The weight gradients' C = Aᵀ·B in
// bfloat16 only (Bf16PackedRightGemm::transposed_left; oneDNN's matmul given A stored
// transposed), as training runs them; int8 does not train. GFLOP counts 2·m·n·k whatever
// the precision.
//
//   gemm_peak_benchmarks --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include "workloads.hpp"

#include <dynrnn/core/gemm.hpp>
#include <dynrnn/core/parallel.hpp>
#include <dynrnn/precision/bfloat16_gemm.hpp>
#include <dynrnn/precision/int8_gemm.hpp>

#include <benchmark/benchmark.h>

#ifdef DYNRNN_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef DYNRNN_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

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

// dynrnn's bfloat16 or int8 product (Gemm), packed with the kernels cpu_isa() chooses or,
// when `portable`, with the portable ones.
template <class Gemm>
void BM_Reduced(benchmark::State& state, const Shape& s, bool portable) {
  dynrnn::set_num_threads(int(state.range(0)));
  const Mat a = Mat::Random(s.m, s.k), b = Mat::Random(s.k, s.n);
  Mat c(s.m, s.n);
  const dynrnn::CpuIsa limit = dynrnn::max_cpu_isa();
  if (portable) dynrnn::set_max_cpu_isa(dynrnn::CpuIsa::portable);
  Gemm gemm;
  gemm.pack(b, dynrnn::Op::N);
  dynrnn::set_max_cpu_isa(limit);
  state.SetLabel(dynrnn::to_string(gemm.isa()));
  const Mat at = s.transposed ? left(s) : Mat();
  measure(state, s, c, [&] {
    if constexpr (std::is_same_v<Gemm, dynrnn::Int8PackedRightGemm>)
      gemm(c, a, dynrnn::int8_scale(1.0f));  // a in [-1, 1]
    else if (s.transposed)
      gemm.transposed_left(c, at);
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

// oneDNN's bfloat16 product: its matmul primitive (its public GEMM functions are float32
// and int8 only) on bfloat16 A and B, with a float32 C, the primitive created once.
void BM_OneDNNBf16(benchmark::State& state, const Shape& s) {
  dynrnn::set_num_threads(int(state.range(0)));
  using dnnl::memory;
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const auto desc = [](dynrnn::Index rows, dynrnn::Index cols, memory::data_type type) {
    return memory::desc({rows, cols}, type, memory::format_tag::ab);
  };
  // A (m, k), stored transposed (k, m) for Aᵀ·B.
  const memory::desc a_desc = s.transposed ? memory::desc({s.m, s.k}, memory::data_type::bf16, memory::format_tag::ba)
                                           : desc(s.m, s.k, memory::data_type::bf16);
  const memory::desc b_desc = desc(s.k, s.n, memory::data_type::bf16), c_desc = desc(s.m, s.n, memory::data_type::f32);
  const auto rounded = [&](const Mat& values, const memory::desc& d) {
    memory m(d, engine);
    auto* bits = static_cast<std::uint16_t*>(m.get_data_handle());
    for (dynrnn::Index i = 0; i < values.size(); ++i) bits[i] = dynrnn::detail::bfloat16_bits(values.data()[i]);
    return m;
  };
  memory a = rounded(Mat::Random(s.m, s.k), a_desc), b = rounded(Mat::Random(s.k, s.n), b_desc);
  Mat c(s.m, s.n);
  memory c_memory(c_desc, engine, c.data());
  const dnnl::matmul matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_desc, b_desc, c_desc), engine));
  measure(state, s, c, [&] {
    matmul.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c_memory}});
    stream.wait();
  });
}

// oneDNN's int8 GEMM: u8 A, s8 B, int32 C, no offsets.
void BM_OneDNNInt8(benchmark::State& state, const Shape& s) {
  dynrnn::set_num_threads(int(state.range(0)));
  std::vector<std::uint8_t> a(static_cast<std::size_t>(s.m * s.k));
  std::vector<std::int8_t> b(static_cast<std::size_t>(s.k * s.n));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = std::uint8_t(i * 7 % 251);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = std::int8_t(int(i * 13 % 255) - 127);
  std::vector<std::int32_t> c(static_cast<std::size_t>(s.m * s.n));
  const std::int32_t offset = 0;
  Mat timed(1, 1);  // measure() keeps a float C alive; the int32 C is this one
  measure(state, s, timed, [&] {
    dnnl_gemm_u8s8s32('N', 'N', 'F', s.m, s.n, s.k, 1.0f, a.data(), s.k, 0, b.data(), s.n, 0, 0.0f, c.data(), s.n,
                      &offset);
    benchmark::DoNotOptimize(c.data());
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
    for (const bool portable : {false, true}) {
      const std::string kernel = portable ? "-portable/" : "/";
      benchmark::RegisterBenchmark(("gemm/bf16" + kernel + s.name).c_str(), BM_Reduced<dynrnn::Bf16PackedRightGemm>,
                                   s, portable)
          ->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
      if (s.transposed) continue;  // int8 does not train: no weight gradients
      benchmark::RegisterBenchmark(("gemm/int8" + kernel + s.name).c_str(), BM_Reduced<dynrnn::Int8PackedRightGemm>,
                                   s, portable)
          ->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
    }
#ifdef DYNRNN_HAVE_ONEDNN
    benchmark::RegisterBenchmark(("gemm/onednn-bf16/" + s.name).c_str(), BM_OneDNNBf16, s)
        ->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
    if (!s.transposed)
      benchmark::RegisterBenchmark(("gemm/onednn-int8/" + s.name).c_str(), BM_OneDNNInt8, s)
          ->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
#endif
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
