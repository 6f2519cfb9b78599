// The steady state of training and inference allocates nothing: after the first step of a
// given shape, every further step of that shape makes no heap allocation at all.
//
// Allocations are counted twice over: a replaced global operator new (what the standard
// library uses) and, on glibc, interposed malloc/calloc/realloc/aligned allocation (what
// Eigen uses). This file is its own test executable so the counters see only these tests.
#include <dynrnn/dynrnn.hpp>

#include "reduced_precision_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {
std::atomic<long> g_allocations{0};
// Allocations of at least 64 KiB (BufferCache::kMinCachedBytes): the blocks the C library
// may hand back to the kernel, which the returning forms keep from it.
std::atomic<long> g_large_allocations{0};
void count(std::size_t bytes) {
  ++g_allocations;
  if (bytes >= (std::size_t(64) << 10)) ++g_large_allocations;
}
}  // namespace

[[gnu::noinline]] void* operator new(std::size_t n) {
  count(n);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

#ifdef __GLIBC__
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);

void* malloc(std::size_t n) {
  count(n);
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) {
  count(n * size);
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) {
  count(n);
  return __libc_realloc(p, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
  count(n);
  return __libc_memalign(alignment, n);
}
void* memalign(std::size_t alignment, std::size_t n) {
  count(n);
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  count(n);
  *out = __libc_memalign(alignment, n);
  return *out ? 0 : 12;  // ENOMEM
}
}
#endif

namespace dynrnn::test {
namespace {

using Scalar = float;

// oneDNN's dnnl_sgemm allocates its scratch space inside every call; with that backend
// dynrnn's steady state cannot be allocation-free and these tests do not apply.
#ifdef DYNRNN_GEMM_ONEDNN
#define DYNRNN_SKIP_IF_BACKEND_ALLOCATES() \
  GTEST_SKIP() << "DYNRNN_GEMM_ONEDNN: dnnl_sgemm allocates scratch space in every call"
#else
#define DYNRNN_SKIP_IF_BACKEND_ALLOCATES() (void)0
#endif

// A many-to-one classifier (tokens -> Embedding -> LSTM -> last output -> Dense -> softmax
// cross-entropy) with RMSProp, clipping and a schedule, and a batch for it.
struct TrainingState {
  SequenceModel<LSTMCell<Scalar>> model{Input::tokens(3, 4), LSTMCell<Scalar>(4, 16), Output::classes(5)};
  SequenceBatch<Scalar> batch;

  TrainingState() {
    model.set_optimizer(RMSProp<Scalar>(0.01f)).set_clip_norm(1.0f).set_schedule(CosineDecay<Scalar>{0.01f, 100});
    batch.lengths = {7, 3, 0, 5, 7, 1};
    batch.labels = {0, 4, 2, 1, 3, 0};
    batch.tokens.resize(7 * 6);
    for (std::size_t k = 0; k < batch.tokens.size(); ++k) batch.tokens[k] = int(k % 3);
  }

  Scalar step() { return model.train_step(batch); }
};

void* volatile g_sink;  // keeps the compiler from removing the allocations below

TEST(NoAllocation, CountersSeeAllocations) {
  // The tests below are only meaningful if the counters work. Calls of the allocation
  // functions themselves (not new-expressions) cannot be elided. operator new counts once
  // itself and once more in the malloc it calls.
  long before = g_allocations;
  g_sink = ::operator new(64);
  ::operator delete(g_sink);
  EXPECT_GE(g_allocations - before, 1);
#ifdef __GLIBC__
  before = g_allocations;
  g_sink = Eigen::internal::aligned_malloc(4096);  // how Eigen allocates matrices
  Eigen::internal::aligned_free(g_sink);
  EXPECT_GE(g_allocations - before, 1);
#endif
}

TEST(NoAllocation, TrainingStepsAfterTheFirst) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
  TrainingState s;
  s.step();  // sizes every buffer
  const long before = g_allocations;
  Scalar loss = 0;
  for (int k = 0; k < 5; ++k) loss = s.step();
  EXPECT_EQ(g_allocations - before, 0);
  EXPECT_TRUE(std::isfinite(loss));
}

// Every optimiser (with its options that keep extra state on), a schedule and both kinds of
// clipping, on a cell's and a dense layer's gradients, after the first update made the state.
template <class Opt>
long allocations_of_updates(Opt opt) {
  LSTMCell<Scalar> cell(4, 16);
  Dense<Scalar> dense(16, 5);
  LSTMGradients<Scalar> g_cell = cell.make_gradients();
  DenseGradients<Scalar> g_dense = dense.make_gradients();
  g_cell.kernel.setConstant(Scalar(0.3));
  g_dense.weight.setConstant(Scalar(-0.2));
  const LinearWarmup<CosineDecay<Scalar>> schedule(2, CosineDecay<Scalar>(Scalar(0.01), 10));
  const auto update = [&](std::int64_t step) {
    set_learning_rate(opt, schedule, step);
    clip_by_global_norm(Scalar(0.5), g_cell, g_dense);
    clip_by_value(Scalar(-0.1), Scalar(0.1), g_cell, g_dense);
    opt.apply(cell, g_cell);
    opt.apply(dense, g_dense);
  };
  update(0);
  const long before = g_allocations;
  for (std::int64_t step = 1; step < 6; ++step) update(step);
  return g_allocations - before;
}

// A data-parallel step (gradients packed into buckets, summed, unpacked) allocates nothing
// after the first either: over a stand-in for 2 ranks whose sums leave the data as it is, with
// small buckets, so that a step sends several, and the head's started early.
TEST(NoAllocation, DataParallelStepsAfterTheFirst) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
  struct TwoRanks final : Communicator {
    int rank() const override { return 0; }
    int size() const override { return 2; }
    void allreduce_sum(float*, Index) override {}
    void allreduce_sum(double*, Index) override {}
    void broadcast(void*, std::size_t, int) override {}
    [[noreturn]] void abort(int, const std::string&) noexcept override { std::abort(); }
  } comm;
  TrainingState s;
  s.model.set_communicator(&comm, {true, 256});
  bool stop = false;
  s.model.train_step(s.batch, &stop);
  const long before = g_allocations;
  for (int k = 0; k < 3; ++k) s.model.train_step(s.batch, &stop);
  EXPECT_EQ(g_allocations - before, 0);
}

// A per-step model on dense features with two dropout-separated LSTM layers, Adam, and
// evaluation between the updates.
TEST(NoAllocation, PerStepModelAfterTheFirstStep) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
  using Stack = StackedCell<LSTMCell<Scalar>>;
  SequenceModel<Stack> model(Input::features(3), Stack({LSTMCell<Scalar>(3, 12), LSTMCell<Scalar>(12, 12)}, 0.2),
                             Output::values_per_step(2));
  model.set_optimizer(Adam<Scalar>(0.01f));
  SequenceBatch<Scalar> batch;
  batch.lengths = {5, 2, 4, 0};
  batch.features = Tensor3<Scalar>(5, 4, 3);
  batch.features.setConstant(0.5f);
  batch.step_targets = Tensor3<Scalar>(5, 4, 2);
  batch.step_targets.setConstant(0.25f);
  model.train_step(batch);
  model.evaluate(batch);
  const long before = g_allocations;
  for (int k = 0; k < 3; ++k) {
    model.train_step(batch);
    model.evaluate(batch);
  }
  EXPECT_EQ(g_allocations - before, 0);
}

TEST(NoAllocation, EveryOptimizerAndClippingAfterTheFirstUpdate) {
  AdamOptions<Scalar> adam;
  adam.amsgrad = true;
  adam.weight_decay = Scalar(0.01);
  EXPECT_EQ(allocations_of_updates(Adam<Scalar>(adam)), 0);
  EXPECT_EQ(allocations_of_updates(AdamW<Scalar>(adam)), 0);
  EXPECT_EQ(allocations_of_updates(Adam<Scalar>(AdamOptions<Scalar>::tensorflow())), 0);
  SGDOptions<Scalar> sgd;
  sgd.momentum = Scalar(0.9);
  sgd.nesterov = true;
  sgd.weight_decay = Scalar(0.01);
  EXPECT_EQ(allocations_of_updates(SGD<Scalar>(sgd)), 0);
  AdagradOptions<Scalar> adagrad;
  adagrad.lr_decay = Scalar(0.1);
  adagrad.weight_decay = Scalar(0.01);
  EXPECT_EQ(allocations_of_updates(Adagrad<Scalar>(adagrad)), 0);
  auto rmsprop = RMSPropOptions<Scalar>::tensorflow(Scalar(0.01));
  rmsprop.momentum = Scalar(0.9);
  rmsprop.centered = true;
  EXPECT_EQ(allocations_of_updates(RMSProp<Scalar>(rmsprop)), 0);
}

// Training and inference passes, and the passes of a FrozenCell in each precision, which
// share its packed weights and pack nothing.
TEST(NoAllocation, InferenceAfterTheFirstCall) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
  LSTMCell<Scalar> cell(8, 32);
  Tensor3<Scalar> x(10, 5, 8);
  x.setConstant(0.25f);
  const std::vector<int> lengths = {10, 2, 7, 0, 10};
  const auto s0 = cell.zero_state(5);
  const auto allocations_after_the_first = [&](const auto& runner, ForwardMode mode) {
    DynamicRNNResult<std::decay_t<decltype(runner)>> fwd;
    dynamic_rnn(runner, x, lengths, s0, fwd, mode);
    const long before = g_allocations;
    for (int k = 0; k < 5; ++k) dynamic_rnn(runner, x, lengths, s0, fwd, mode);
    return g_allocations - before;
  };
  EXPECT_EQ(allocations_after_the_first(cell, ForwardMode::training), 0) << "training";
  EXPECT_EQ(allocations_after_the_first(cell, ForwardMode::inference), 0) << "inference";
  cell.begin_int8_calibration();
  dynamic_rnn(cell, x, lengths);
  cell.end_int8_calibration();
  for (const Precision p : {Precision::float32, Precision::bfloat16, Precision::int8}) {
    cell.set_precision(p);
    EXPECT_EQ(allocations_after_the_first(freeze(cell), ForwardMode::inference), 0) << "frozen, " << to_string(p);
  }
}

// The forms that return fresh results (auto fwd = dynamic_rnn(...), auto g =
// dynamic_rnn_backward(...), and the bidirectional ones) allocate in every call, but after
// the first step of a shape their large buffers are reused: the packed ones come from the
// buffer cache and the padded tensors (outputs, input gradients, the bidirectional
// scratch) from the tensor pool (core/buffer_cache.hpp), so that no step's memory goes
// back to the kernel and comes again. The cells are small, so that every other block each
// call allocates afresh (the packed weights, the parameter gradients) stays under 64 KiB.
TEST(NoAllocation, ReturningFormsReuseTheirLargeBuffersAfterTheFirstStep) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
#ifdef DYNRNN_GEMM_OPENBLAS
  GTEST_SKIP() << "DYNRNN_GEMM_OPENBLAS: OpenBLAS allocates in its threaded products";
#endif
  LSTMCell<Scalar> cell(8, 16), cell_bw(8, 12);
  const Index T = 100, B = 64;  // every padded tensor at least 200 KiB
  Tensor3<Scalar> x(T, B, 8), dy(T, B, 16), dy_bw(T, B, 12);
  x.setConstant(0.25f);
  dy.setConstant(0.5f);
  dy_bw.setConstant(0.5f);
  std::vector<int> lengths(std::size_t{64}, 100);
  lengths[3] = 0;
  lengths[7] = 41;
  for (const Precision p : {Precision::float32, Precision::bfloat16}) {
    cell.set_precision(p);
    cell_bw.set_precision(p);
    long large = 0;
    for (int step = 0; step < 4; ++step) {
      const long before = g_large_allocations;
      {
        const auto fwd = dynamic_rnn(cell, x, lengths);
        const auto g = dynamic_rnn_backward(cell, fwd, dy);
        const auto bi = bidirectional_dynamic_rnn(cell, cell_bw, x, lengths);
        const auto bi_g = bidirectional_dynamic_rnn_backward(cell, cell_bw, bi, dy, dy_bw);
        g_sink = const_cast<Scalar*>(g.inputs.data() + bi_g.inputs.size());
      }
      if (step > 0) large += g_large_allocations - before;
    }
    EXPECT_EQ(large, 0) << "precision " << int(p);
  }
}

// The bfloat16 and int8 products, with each kernel: after the first product of the largest
// shape, products of it and of fewer rows allocate nothing (threads sharing the rows too).
TEST(NoAllocation, ReducedPrecisionProductsAfterTheFirst) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();  // the portable int8 kernel's float sums go to the backend
#ifdef DYNRNN_GEMM_OPENBLAS
  GTEST_SKIP() << "DYNRNN_GEMM_OPENBLAS: OpenBLAS allocates in its threaded products";
#endif
  const Matrix<float> w = Matrix<float>::Random(128, 512), a = Matrix<float>::Random(600, 128);
  Matrix<float> c(600, 512);
  for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx512_core_bf16}) {
    const WithIsa limit(isa);
    Bf16PackedRightGemm bf16;
    Int8PackedRightGemm int8;
    bf16.pack(w, Op::N);
    int8.pack(w, Op::N);
    bf16(c, a);
    int8(c, a, 0.01f);
    const long before = g_allocations;
    for (int k = 0; k < 3; ++k) {
      bf16(c, a);
      bf16(c.topRows(7), a.topRows(7), 1.0f, 1.0f);
      int8(c, a, 0.01f);
      int8(c.topRows(7), a.topRows(7), 0.01f, 1.0f, 1.0f);
    }
    EXPECT_EQ(g_allocations - before, 0) << to_string(bf16.isa()) << ", " << to_string(int8.isa());
  }
}

// A dense layer over every step of a character model's batch: products far above the size
// Eigen would pack on the stack, still allocation-free after the first call.
TEST(NoAllocation, DenseLayerWithLargeProducts) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
#ifdef DYNRNN_GEMM_OPENBLAS
  // OpenBLAS allocates in its threaded products (see ThreadedTrainingAfterTheFirstStep);
  // on one thread it does not.
  const int saved_threads = max_threads();
  set_num_threads(1);
#endif
  Dense<Scalar> dense(256, 54);
  const Matrix<Scalar> x = Matrix<Scalar>::Constant(1280, 256, 0.25f);
  const Matrix<Scalar> dy = Matrix<Scalar>::Constant(1280, 54, 0.5f);
  Matrix<Scalar> y, dx;
  DenseGradients<Scalar> grads = dense.make_gradients();
  const auto pass = [&] {
    dense.forward(x, y);
    dense.backward(x, dy, grads, dx);
  };
  pass();
  const long before = g_allocations;
  for (int k = 0; k < 3; ++k) pass();
  EXPECT_EQ(g_allocations - before, 0);
#ifdef DYNRNN_GEMM_OPENBLAS
  set_num_threads(saved_threads);
#endif
}

// Forward and backward of every cell through dynamic_rnn, into reused result and gradient
// objects: nothing is allocated after the first call, also when the next batches have
// other lengths (a smaller sum of lengths, so smaller packed buffers) and then the first
// lengths again. With InputGradients::skip the passes leave the input gradients out, as a
// first layer's training does.
template <class Cell>
long allocations_after_first_pass(const Cell& cell, InputGradients input_gradients = InputGradients::compute,
                                  bool backward = true) {
  const Index T = 10, B = 5;
  Tensor3<Scalar> x(T, B, cell.input_size()), d_out(T, B, cell.output_size());
  x.setConstant(0.25f);
  d_out.setConstant(0.5f);
  const std::vector<int> longest = {10, 2, 7, 0, 10}, shorter = {3, 9, 1, 4, 0};
  const auto s0 = cell.zero_state(B);
  DynamicRNNResult<Cell> fwd;
  DynamicRNNGradients<Cell> grads(cell);
  const auto pass = [&](const std::vector<int>& lengths) {
    dynamic_rnn(cell, x, lengths, s0, fwd);
    if (backward) dynamic_rnn_backward(cell, fwd, d_out, s0, grads, input_gradients);
  };
  pass(longest);
  const long before = g_allocations;
  for (int k = 0; k < 6; ++k) pass(k % 2 ? longest : shorter);
  return g_allocations - before;
}

TEST(NoAllocation, ReusableMatrixKeepsItsStorage) {
  ReusableMatrix<Scalar> m(40, 30);
  const Scalar* data = m.data();
  const long before = g_allocations;
  m.resize(7, 30);
  m.resize(30, 40);
  m = Matrix<Scalar>::Constant(20, 2, 1.5f).topRows(20);
  EXPECT_EQ(g_allocations - before, 0);
  EXPECT_EQ(m.data(), data);
  EXPECT_EQ(m.rows(), 20);
  EXPECT_EQ(m.cols(), 2);
  EXPECT_EQ(m.capacity(), 1200);
  EXPECT_EQ(m.sum(), 60.0f);
  m.resize(41, 30);  // more than it ever held
  EXPECT_GT(g_allocations - before, 0);
  EXPECT_EQ(m.capacity(), 1230);
}

TEST(NoAllocation, ReusableMatrixHasValueSemantics) {
  ReusableMatrix<Scalar> a;
  a = Matrix<Scalar>::Constant(3, 4, 2.0f);
  ReusableMatrix<Scalar> b = a;  // a copy of its own
  b(1, 2) = 7.0f;
  EXPECT_EQ(a(1, 2), 2.0f);
  EXPECT_NE(a.data(), b.data());
  const Scalar* storage = b.data();
  ReusableMatrix<Scalar> c = std::move(b);  // takes the storage over
  EXPECT_EQ(c.data(), storage);
  EXPECT_EQ(c(1, 2), 7.0f);
  EXPECT_EQ(b.size(), 0);
  a = c;
  EXPECT_EQ(a(1, 2), 7.0f);
  EXPECT_EQ(a.rows(), 3);
  EXPECT_EQ(a.cols(), 4);
  a.resize(0, 4);
  EXPECT_EQ(a.size(), 0);
  EXPECT_EQ(a.capacity(), 12);
}

// view(): the matrix reads and writes the caller's memory, keeps the view through a
// resize() that fits, and has storage of its own again after end_view() (in the view's
// shape), drop_view() (empty, allocating nothing), a larger resize() or an assignment; a
// copy never views, a move takes the view.
TEST(NoAllocation, ReusableMatrixViewsMemoryItDoesNotOwn) {
  ReusableMatrix<Scalar> m(4, 5);
  Scalar* own = m.data();
  alignas(64) Scalar outside[24] = {};
  const long before = g_allocations;
  m.view(outside, 4, 6);
  EXPECT_TRUE(m.is_view());
  EXPECT_EQ(m.data(), outside);
  m(3, 5) = 2.5f;
  EXPECT_EQ(outside[23], 2.5f);
  m.resize(6, 4);  // fits: still the view
  EXPECT_EQ(m.data(), outside);
  EXPECT_EQ(m(5, 3), 2.5f);
  ReusableMatrix<Scalar> copy = m;  // a copy of its own
  EXPECT_FALSE(copy.is_view());
  EXPECT_NE(copy.data(), outside);
  EXPECT_EQ(copy(5, 3), 2.5f);
  ReusableMatrix<Scalar> moved = std::move(m);  // takes the view and the storage
  EXPECT_TRUE(moved.is_view());
  EXPECT_EQ(moved.data(), outside);
  EXPECT_FALSE(m.is_view());
  EXPECT_EQ(m.size(), 0);
  m.swap(moved);
  EXPECT_EQ(m.data(), outside);
  EXPECT_FALSE(moved.is_view());
  EXPECT_EQ(moved.size(), 0);
  EXPECT_EQ(g_allocations - before, 1);  // the copy's storage only
  m.end_view();  // own storage again, shape kept; 24 elements, more than the 20 it had
  EXPECT_FALSE(m.is_view());
  EXPECT_NE(m.data(), outside);
  EXPECT_NE(m.data(), own);
  EXPECT_EQ(m.rows(), 6);
  EXPECT_EQ(m.cols(), 4);
  EXPECT_EQ(g_allocations - before, 2);
  m.view(outside, 2, 3);
  m.resize(5, 5);  // larger than the view: ends it
  EXPECT_FALSE(m.is_view());
  EXPECT_GE(m.capacity(), 25);
  m.view(outside, 2, 3);
  m = Matrix<Scalar>::Constant(2, 3, 1.0f);  // an assignment ends it too
  EXPECT_FALSE(m.is_view());
  EXPECT_EQ(outside[0], 0.0f);
  EXPECT_EQ(m.sum(), 6.0f);
  m.end_view();  // not a view: nothing happens
  EXPECT_EQ(m.rows(), 2);
  try {
    m.view(nullptr, 2, 3);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    for (const char* part : {"ReusableMatrix::view", "'data'", "6 elements", "null"})
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
  m.view(nullptr, 0, 3);  // an empty view needs no memory
  EXPECT_FALSE(m.is_view());
  EXPECT_EQ(m.size(), 0);
  m.view(outside, 4, 6);
  const long dropping = g_allocations;
  m.drop_view();  // ended without allocating: empty, its own storage again
  EXPECT_EQ(g_allocations - dropping, 0);
  EXPECT_FALSE(m.is_view());
  EXPECT_EQ(m.size(), 0);
  EXPECT_GE(m.capacity(), 25);
  m.drop_view();  // not a view: nothing happens
  EXPECT_EQ(m.size(), 0);
  for (Scalar v : outside) EXPECT_TRUE(v == 0.0f || v == 2.5f);
}

// A full batch in inference reads x and writes the outputs in place (dynamic_rnn.hpp), and
// allocates nothing after its first call either.
TEST(NoAllocation, FullBatchInferenceAfterTheFirstCall) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
  LSTMCell<Scalar> cell(8, 32);
  Tensor3<Scalar> x(10, 5, 8);
  x.setConstant(0.25f);
  const std::vector<int> lengths(5, 10);
  const auto s0 = cell.zero_state(5);
  DynamicRNNResult<LSTMCell<Scalar>> fwd;
  dynamic_rnn(cell, x, lengths, s0, fwd, ForwardMode::inference);
  const long before = g_allocations;
  for (int k = 0; k < 5; ++k) dynamic_rnn(cell, x, lengths, s0, fwd, ForwardMode::inference);
  EXPECT_EQ(g_allocations - before, 0);
}

TEST(NoAllocation, EveryCellAfterTheFirstPass) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
  EXPECT_EQ(allocations_after_first_pass(LSTMCell<Scalar>(8, 32)), 0);
  EXPECT_EQ(allocations_after_first_pass(RNNCell<Scalar>(8, 32, RNNActivation::tanh)), 0);
  EXPECT_EQ(allocations_after_first_pass(RNNCell<Scalar>(8, 32, RNNActivation::relu)), 0);
  EXPECT_EQ(allocations_after_first_pass(GRUCell<Scalar>(8, 32, GRUVariant::reset_before)), 0);
  EXPECT_EQ(allocations_after_first_pass(GRUCell<Scalar>(8, 32, GRUVariant::reset_after)), 0);
  LSTMOptions options;
  options.use_peepholes = true;
  options.cell_clip = 1;
  options.num_proj = 16;
  options.proj_clip = 0.5;
  EXPECT_EQ(allocations_after_first_pass(LSTMCell<Scalar>(8, 32, options)), 0);
  StackedCell<LSTMCell<Scalar>> stack({LSTMCell<Scalar>(8, 32), LSTMCell<Scalar>(32, 16)}, 0.2);
  stack.set_training(true);  // dropout masks drawn at every pass
  EXPECT_EQ(allocations_after_first_pass(stack), 0);
  EXPECT_EQ(allocations_after_first_pass(LSTMCell<Scalar>(8, 32), InputGradients::skip), 0);
  EXPECT_EQ(allocations_after_first_pass(stack, InputGradients::skip), 0);
}

// Every cell with its products in bfloat16, on each kernel: nothing allocated after the first
// pass either (the products' workspaces are sized in it).
TEST(NoAllocation, EveryCellInBfloat16AfterTheFirstPass) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
  for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx512_core_bf16}) {
    const WithIsa limit(isa);
    SCOPED_TRACE(to_string(std::min(isa, detected_cpu_isa())));
    const auto bf16 = [](auto cell) {
      cell.set_precision(Precision::bfloat16);
      return cell;
    };
    EXPECT_EQ(allocations_after_first_pass(bf16(LSTMCell<Scalar>(8, 32))), 0);
    EXPECT_EQ(allocations_after_first_pass(bf16(RNNCell<Scalar>(8, 32, RNNActivation::tanh))), 0);
    EXPECT_EQ(allocations_after_first_pass(bf16(GRUCell<Scalar>(8, 32, GRUVariant::reset_before))), 0);
    EXPECT_EQ(allocations_after_first_pass(bf16(GRUCell<Scalar>(8, 32, GRUVariant::reset_after))), 0);
    LSTMOptions options;
    options.use_peepholes = true;
    options.cell_clip = 1;
    options.num_proj = 16;
    options.proj_clip = 0.5;
    EXPECT_EQ(allocations_after_first_pass(bf16(LSTMCell<Scalar>(8, 32, options))), 0);
    StackedCell<LSTMCell<Scalar>> stack({LSTMCell<Scalar>(8, 32), LSTMCell<Scalar>(32, 16)}, 0.2);
    stack.set_training(true);
    stack.set_precision(Precision::bfloat16);
    EXPECT_EQ(allocations_after_first_pass(stack), 0);
  }
}

// Every cell's inference in int8, on each kernel: nothing allocated after the first pass.
TEST(NoAllocation, EveryCellInInt8AfterTheFirstPass) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
  for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx512_core_vnni}) {
    const WithIsa limit(isa);
    SCOPED_TRACE(to_string(std::min(isa, detected_cpu_isa())));
    const auto int8 = [](auto cell) {
      cell.set_int8_bounds(1.0f, 2.0f);
      cell.set_precision(Precision::int8);
      return cell;
    };
    const auto forward_only = [](const auto& cell) {
      return allocations_after_first_pass(cell, InputGradients::skip, /*backward=*/false);
    };
    EXPECT_EQ(forward_only(int8(LSTMCell<Scalar>(8, 32))), 0);
    EXPECT_EQ(forward_only(int8(RNNCell<Scalar>(8, 32, RNNActivation::relu))), 0);
    EXPECT_EQ(forward_only(int8(GRUCell<Scalar>(8, 32, GRUVariant::reset_before))), 0);
    EXPECT_EQ(forward_only(int8(GRUCell<Scalar>(8, 32, GRUVariant::reset_after))), 0);
    LSTMOptions options;
    options.use_peepholes = true;
    options.num_proj = 16;
    EXPECT_EQ(forward_only(int8(LSTMCell<Scalar>(8, 32, options))), 0);
  }
}

// dynrnn's parallel loops allocate nothing once the pool's helpers exist (an OpenMP region,
// which they used before, allocated a few blocks each under LLVM's libomp).
TEST(NoAllocation, ParallelLoopsAfterTheFirst) {
  std::atomic<int> sink{0};
  detail::parallel_parts(8, 2, [&](Index part, int) { sink += int(part); });  // starts the helper
  const long before = g_allocations;
  for (int k = 0; k < 100; ++k) detail::parallel_parts(8, 2, [&](Index part, int) { sink += int(part); });
  EXPECT_EQ(sink.load(), 101 * 28);
  EXPECT_EQ(g_allocations - before, 0);
}

TEST(NoAllocation, ThreadedTrainingAfterTheFirstStep) {
  DYNRNN_SKIP_IF_BACKEND_ALLOCATES();
#ifdef DYNRNN_GEMM_OPENBLAS
  GTEST_SKIP() << "DYNRNN_GEMM_OPENBLAS: OpenBLAS allocates in its threaded products";
#endif
  // Large enough that products and elementwise loops run on several threads (with OpenMP),
  // or on one while other work contends for the cores: either way, and when that changes
  // between steps, nothing is allocated.
  set_num_threads(2);
  SequenceModel<LSTMCell<Scalar>> model(Input::features(32), LSTMCell<Scalar>(32, 256), Output::classes_per_step(7));
  model.set_optimizer(RMSProp<Scalar>(Scalar(0.001)));
  SequenceBatch<Scalar> batch;
  batch.features = Tensor3<Scalar>(3, 64, 32);
  batch.features.setConstant(0.1f);
  batch.lengths.assign(64, 3);
  batch.lengths[5] = 1;
  batch.labels.resize(3 * 64);
  for (std::size_t k = 0; k < batch.labels.size(); ++k) batch.labels[k] = int(k % 7);
  const auto step = [&] { model.train_step(batch); };
  step();
  long before = g_allocations;
  for (int k = 0; k < 3; ++k) step();
  EXPECT_EQ(g_allocations - before, 0);
  model.set_precision(Precision::bfloat16);  // the time loop's threads share the workspaces' rows
  step();
  before = g_allocations;
  for (int k = 0; k < 3; ++k) step();
  EXPECT_EQ(g_allocations - before, 0) << "in bfloat16";
  set_num_threads(1);
}

}  // namespace
}  // namespace dynrnn::test
