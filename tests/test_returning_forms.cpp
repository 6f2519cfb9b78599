// The overloads that return fresh results: their buffers come from the buffer cache
// (core/buffer_cache.hpp), they give the same values as the overloads that reuse a result,
// and several threads may call them at once on one shared const cell.
#include "support.hpp"

#include <cstdint>
#include <limits>
#include <thread>

namespace dynrnn::test {
namespace {

using detail::BufferCache;

TEST(BufferCache, AFreedBlockServesTheNextRequestThatFits) {
  release_cached_buffers();  // blocks from earlier tests would fit too
  auto& cache = BufferCache::instance();
  const std::size_t bytes = std::size_t(3) << 20;
  const BufferCache::Block a = cache.take(bytes);
  ASSERT_NE(a.data, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.data) % EIGEN_MAX_ALIGN_BYTES, 0u);
  static_cast<unsigned char*>(a.data)[bytes - 1] = 7;  // the whole block is usable
  cache.give(a);
  EXPECT_GE(cache.cached_bytes(), bytes);

  const BufferCache::Block b = cache.take(bytes - 1000);  // fits: the same block
  EXPECT_EQ(b.data, a.data);
  EXPECT_EQ(b.bytes, bytes);
  const BufferCache::Block c = cache.take(bytes);  // a is taken: a new block
  EXPECT_NE(c.data, a.data);
  cache.give(b);
  const BufferCache::Block d = cache.take(bytes / 3);  // less than half of it: not that block
  EXPECT_NE(d.data, a.data);
  cache.give(c);
  cache.give(d);
  release_cached_buffers();
}

TEST(BufferCache, SmallBlocksGoStraightBack) {
  release_cached_buffers();
  auto& cache = BufferCache::instance();
  const BufferCache::Block small = cache.take(BufferCache::kMinCachedBytes - 1);
  cache.give(small);
  EXPECT_EQ(cached_buffer_bytes(), 0u);
  EXPECT_EQ(cache.take(0).data, nullptr);
}

TEST(BufferCache, HoldsNoMoreThanItsLimitAndReleasesEverything) {
  release_cached_buffers();
  auto& cache = BufferCache::instance();
  const std::size_t bytes = std::size_t(1) << 20;
  const BufferCache::Block a = cache.take(bytes), b = cache.take(bytes);
  cache.give(a);
  cache.give(b);
  EXPECT_GE(cached_buffer_bytes(), 2 * bytes);
  set_buffer_cache_limit(bytes);  // frees blocks down to the limit
  EXPECT_LE(cached_buffer_bytes(), bytes);
  set_buffer_cache_limit(0);  // caching off
  EXPECT_EQ(cached_buffer_bytes(), 0u);
  cache.give(cache.take(bytes));
  EXPECT_EQ(cached_buffer_bytes(), 0u);
  set_buffer_cache_limit(std::numeric_limits<std::size_t>::max());
  cache.give(cache.take(bytes));
  EXPECT_GE(cached_buffer_bytes(), bytes);
  EXPECT_GE(release_cached_buffers(), bytes);
  EXPECT_EQ(cached_buffer_bytes(), 0u);
}

// A working set that grows (small shapes first, then larger ones) replaces the old one in
// the cache: the larger blocks are all kept, and the next round of requests finds them.
TEST(BufferCache, FollowsAGrowingWorkingSet) {
  release_cached_buffers();
  auto& cache = BufferCache::instance();
  const std::size_t small = std::size_t(1) << 20, large = std::size_t(3) << 20;
  const auto round = [&](std::size_t bytes) {
    std::vector<BufferCache::Block> blocks;
    for (int k = 0; k < 4; ++k) blocks.push_back(cache.take(bytes));
    for (const BufferCache::Block& b : blocks) cache.give(b);
    return blocks;
  };
  round(small);
  EXPECT_EQ(cached_buffer_bytes(), 4 * small);
  const auto first = round(large);
  EXPECT_EQ(cached_buffer_bytes(), 4 * large) << "the large blocks replace the small ones";
  const auto second = round(large);
  for (int k = 0; k < 4; ++k) {
    bool reused = false;
    for (const BufferCache::Block& b : first) reused = reused || b.data == second[std::size_t(k)].data;
    EXPECT_TRUE(reused) << "request " << k << " of the second round got a new block";
  }
  release_cached_buffers();
}

// The float products' packed weights and workspaces live in the buffer cache too, so the
// products of a fresh result's cache take the memory of a dropped one's (with dynrnn's own
// kernel: an external BLAS packs inside its own calls).
TEST(BufferCache, HoldsThePackedWeightsOfDroppedProducts) {
  if (detail::external_gemm<float>()) GTEST_SKIP() << "the external BLAS packs W itself";
  release_cached_buffers();
  Rng rng(8);
  Matrix<float> W(256, 512), A(96, 256), C(96, 512);
  for (auto* m : {&W, &A}) *m = random_matrix<float>(m->rows(), m->cols(), rng);
  Gemm<float> gemm;
  {
    PackedRightGemm<float> product;
    product.pack(W, Op::N);
    product(C, A, 1.0f, 0.0f);
    Matrix<float> dW(256, 512);
    gemm(dW, A, Op::T, C, Op::N);  // Aᵀ·C, with its workspace
  }
  EXPECT_GE(cached_buffer_bytes(), std::size_t(256 * 512) * sizeof(float)) << "the packed W was freed";
  release_cached_buffers();
}

// Results created and dropped step after step keep reusing the same memory: after the first
// step the cache neither grows nor runs dry, and the packed buffers come from it.
TEST(ReturningForms, ReuseCachedBuffersStepAfterStep) {
  release_cached_buffers();
  Rng rng(3);
  LSTMCell<float> cell(16, 96);
  cell.reset_parameters(rng);
  const Index T = 20, B = 40;
  const auto x = random_tensor<float>(T, B, 16, rng);
  std::vector<int> lengths(B);
  for (int& len : lengths) len = int(uniform_int(rng, 0, T + 1));
  const auto d_outputs = random_tensor<float>(T, B, 96, rng);

  std::size_t cached_after_first = 0;
  for (int step = 0; step < 4; ++step) {
    {
      const auto fwd = dynamic_rnn(cell, x, lengths);
      const auto g = dynamic_rnn_backward(cell, fwd, d_outputs);
      if (step > 0) {
        EXPECT_EQ(cached_buffer_bytes(), 0u) << "step " << step << " left cached blocks unused";
      }
    }
    if (step == 0) cached_after_first = cached_buffer_bytes();
    EXPECT_GT(cached_buffer_bytes(), 0u);
    EXPECT_EQ(cached_buffer_bytes(), cached_after_first) << "step " << step;
  }
  release_cached_buffers();
}

// The padded tensors (fwd.outputs, g.inputs) of results dropped step after step are reused
// too: a destroyed result gives its tensor to the pool, and the next result of that size
// takes it, with its memory. A reused tensor is wholly rewritten: the values, zeros at padded
// steps included, are the reusing overload's, bit for bit.
TEST(ReturningForms, ReuseThePaddedTensorsStepAfterStep) {
  release_cached_buffers();
  Rng rng(6);
  LSTMCell<float> cell(32, 96);
  cell.reset_parameters(rng);
  const Index T = 20, B = 40;  // outputs 300 KiB, input gradients 100 KiB: both pooled
  const auto x = random_tensor<float>(T, B, 32, rng);
  const auto d_outputs = random_tensor<float>(T, B, 96, rng);
  std::vector<int> lengths(B, int(T));  // step 0 fills every entry; later steps leave padding
  DynamicRNNResult<LSTMCell<float>> kept;  // the reusing overloads' results, for the values
  DynamicRNNGradients<LSTMCell<float>> kept_g(cell);
  auto& pool = detail::TensorPool<float>::instance();
  const std::size_t padded_bytes = std::size_t(T * B * (96 + 32)) * sizeof(float);
  for (int step = 0; step < 3; ++step) {
    {
      const auto fwd = dynamic_rnn(cell, x, lengths);
      const auto g = dynamic_rnn_backward(cell, fwd, d_outputs);
      EXPECT_EQ(pool.cached_bytes(), 0u) << "step " << step << ": the results took the pooled tensors";
      dynamic_rnn(cell, x, lengths, cell.zero_state(B), kept);
      kept_g.setZero();
      dynamic_rnn_backward(cell, kept, d_outputs, cell.zero_state(B), kept_g);
      EXPECT_TRUE(identical(fwd.outputs, kept.outputs)) << "step " << step;
      EXPECT_TRUE(identical(g.inputs, kept_g.inputs)) << "step " << step;
    }
    EXPECT_EQ(pool.cached_bytes(), padded_bytes) << "step " << step << ": the dropped results gave them back";
    EXPECT_GE(cached_buffer_bytes(), padded_bytes) << "step " << step;
    for (int& len : lengths) len = int(uniform_int(rng, 0, T + 1));
  }
  EXPECT_GT(release_cached_buffers(), 0u);
  EXPECT_EQ(cached_buffer_bytes(), 0u);

  set_buffer_cache_limit(0);  // caching off: a dropped result's tensors are freed
  { const auto fwd = dynamic_rnn(cell, x, lengths); }
  EXPECT_EQ(pool.cached_bytes(), 0u);
  EXPECT_EQ(cached_buffer_bytes(), 0u);
  set_buffer_cache_limit(std::numeric_limits<std::size_t>::max());
}

// The returning and reusing overloads compute the same values, bit for bit.
TEST(ReturningForms, MatchTheReusingForms) {
  Rng rng(4);
  LSTMCell<float> cell(5, 24);
  cell.reset_parameters(rng);
  const Index T = 9, B = 11;
  const auto x = random_tensor<float>(T, B, 5, rng);
  const std::vector<int> lengths = {9, 0, 3, 9, 1, 5, 7, 2, 8, 4, 6};
  const auto d_outputs = random_tensor<float>(T, B, 24, rng);

  const auto fwd = dynamic_rnn(cell, x, lengths);
  const auto g = dynamic_rnn_backward(cell, fwd, d_outputs);
  DynamicRNNResult<LSTMCell<float>> fwd2;
  DynamicRNNGradients<LSTMCell<float>> g2(cell);
  for (int pass = 0; pass < 2; ++pass) {  // the second pass runs on reused buffers
    dynamic_rnn(cell, x, lengths, cell.zero_state(B), fwd2);
    g2.setZero();
    dynamic_rnn_backward(cell, fwd2, d_outputs, cell.zero_state(B), g2);
    EXPECT_TRUE(identical(fwd.outputs, fwd2.outputs));
    EXPECT_TRUE(identical(fwd.final_state.h, fwd2.final_state.h));
    EXPECT_TRUE(identical(g.kernel, g2.kernel));
    EXPECT_TRUE(identical(g.bias, g2.bias));
    EXPECT_TRUE(identical(g.inputs, g2.inputs));
  }
}

// The returning bidirectional backward takes final-state gradients, as dynamic_rnn_backward's
// does, and gives what the reusing overload gives.
TEST(ReturningForms, BidirectionalBackwardTakesFinalStateGradients) {
  Rng rng(6);
  LSTMCell<double> fw(3, 5), bw(3, 4);
  fw.reset_parameters(rng);
  bw.reset_parameters(rng);
  const Index T = 6, B = 4;
  const auto x = random_tensor<double>(T, B, 3, rng);
  const std::vector<int> lengths = {6, 2, 0, 4};
  const auto r = bidirectional_dynamic_rnn(fw, bw, x, lengths);
  const auto d_fw = random_tensor<double>(T, B, 5, rng), d_bw = random_tensor<double>(T, B, 4, rng);
  LSTMState<double> d_final_fw{random_matrix<double>(B, 5, rng), random_matrix<double>(B, 5, rng)};
  LSTMState<double> d_final_bw{random_matrix<double>(B, 4, rng), random_matrix<double>(B, 4, rng)};

  const auto g = bidirectional_dynamic_rnn_backward(fw, bw, r, d_fw, d_bw, d_final_fw, d_final_bw);
  BidirectionalGradients<LSTMCell<double>, LSTMCell<double>> expected(fw, bw);
  bidirectional_dynamic_rnn_backward(fw, bw, r, d_fw, d_bw, d_final_fw, d_final_bw, expected);
  EXPECT_TRUE(identical(g.fw.kernel, expected.fw.kernel));
  EXPECT_TRUE(identical(g.bw.kernel, expected.bw.kernel));
  EXPECT_TRUE(identical(g.inputs, expected.inputs));
  // The final-state gradients count: without them the gradients differ.
  const auto without = bidirectional_dynamic_rnn_backward(fw, bw, r, d_fw, d_bw);
  EXPECT_FALSE(identical(g.fw.kernel, without.fw.kernel));
  EXPECT_FALSE(identical(g.bw.kernel, without.bw.kernel));
}

// Several threads run forward and backward at once on one const cell, each on its own
// batch, with results created and dropped in every call; each must get exactly what a
// lone call gets.
TEST(ReturningForms, ThreadsShareOneConstCell) {
  Rng rng(5);
  LSTMCell<float> trained(12, 64);
  trained.reset_parameters(rng);
  const LSTMCell<float>& cell = trained;
  constexpr int kThreads = 4, kCalls = 6;
  const Index T = 14, B = 33;

  struct Job {
    Tensor3<float> x, d_outputs;
    std::vector<int> lengths;
    Tensor3<float> outputs;      // expected, from a call on this thread alone
    Matrix<float> kernel_grad;   // expected
  };
  std::vector<Job> jobs(kThreads);
  for (Job& job : jobs) {
    job.x = random_tensor<float>(T, B, 12, rng);
    job.d_outputs = random_tensor<float>(T, B, 64, rng);
    job.lengths.resize(B);
    for (int& len : job.lengths) len = int(uniform_int(rng, 0, T + 1));
    const auto fwd = dynamic_rnn(cell, job.x, job.lengths);
    job.outputs = fwd.outputs;
    job.kernel_grad = dynamic_rnn_backward(cell, fwd, job.d_outputs).kernel;
  }

  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k)
    threads.emplace_back([&, k] {
      const Job& job = jobs[std::size_t(k)];
      for (int call = 0; call < kCalls; ++call) {
        const auto fwd = dynamic_rnn(cell, job.x, job.lengths);
        const auto g = dynamic_rnn_backward(cell, fwd, job.d_outputs);
#if !defined(DYNRNN_GEMM_OPENBLAS) && !defined(DYNRNN_GEMM_ONEDNN)
        // Eigen's products sum in the same order on any number of threads.
        const bool same = identical(fwd.outputs, job.outputs) && identical(g.kernel, job.kernel_grad);
#else
        Tensor3<float> difference = fwd.outputs - job.outputs;
        const bool same = max_abs(difference) < 1e-5 && (g.kernel - job.kernel_grad).cwiseAbs().maxCoeff() < 1e-4;
#endif
        mismatches[std::size_t(k)] += !same;
      }
    });
  for (auto& t : threads) t.join();
  for (int k = 0; k < kThreads; ++k) EXPECT_EQ(mismatches[std::size_t(k)], 0) << "thread " << k;
}

}  // namespace
}  // namespace dynrnn::test
