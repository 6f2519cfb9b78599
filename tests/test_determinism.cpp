// With the same seed and thread count, training is bit-identical from run to run: the
// whole model and optimiser state, compared as checkpoint bytes after several steps.
#include "busy_cores.hpp"
#include "support.hpp"

namespace dynrnn::test {
namespace {

// A SequenceModel (Embedding -> LSTM -> last output -> Dense -> softmax cross-entropy,
// RMSProp with momentum) trained on ragged batches drawn from `seed`; returns the checkpoint of
// everything after `steps` steps.
std::vector<unsigned char> train(std::uint64_t seed, int threads, int steps = 4) {
  const int saved_threads = max_threads();
  set_num_threads(threads);
  constexpr Index B = 70, T = 9, V = 5, H = 130, C = 4;  // large enough to split across threads
  Rng rng(seed);
  SequenceModel<LSTMCell<float>> model(Input::tokens(V, 6), LSTMCell<float>(6, H), Output::classes(C), seed);
  auto options = RMSPropOptions<float>::tensorflow(0.01f);
  options.momentum = 0.9f;
  model.set_optimizer(RMSProp<float>(options));
  Checkpoint<float> ckpt;
  model.add_to(ckpt);

  SequenceBatch<float> batch;
  for (int step = 0; step < steps; ++step) {
    batch.lengths.assign(B, 0);
    batch.tokens.assign(T * B, 0);
    batch.labels.assign(B, 0);
    for (Index b = 0; b < B; ++b) {
      batch.lengths[b] = int(uniform_int(rng, 0, T + 1));
      batch.labels[b] = int(uniform_int(rng, 0, C));
      for (int t = 0; t < batch.lengths[b]; ++t) batch.tokens[t * B + b] = int(uniform_int(rng, 0, V));
    }
    batch.lengths[0] = T;  // the padded length is T
    model.train_step(batch);
  }
  set_num_threads(saved_threads);
  return ckpt.to_bytes(steps);
}

TEST(Determinism, SameSeedSameThreadsSameBits) {
  for (int threads : {1, 2}) {
    SCOPED_TRACE(threads);
    const auto first = train(5, threads);
    EXPECT_EQ(first, train(5, threads));
    EXPECT_NE(first, train(6, threads));  // the comparison can tell runs apart
  }
}

#if defined(__linux__) && defined(_OPENMP)  // the pool notices preemption from Linux's counts
// While other work takes the cores, short loops run on fewer threads (core/parallel.hpp). The
// results stay those of an idle machine under every GEMM backend: the external libraries may
// sum a row differently when a call has fewer rows, so the time loop keeps its blocks of rows.
TEST(Determinism, ContendedCoresChangeNoBit) {
  const auto idle = train(5, 2);
  bool contended = false;
  std::vector<std::vector<unsigned char>> loaded;
  {
    BusyCores busy;
    contended = BusyCores::wait_until_contended();
    for (int run = 0; run < 3; ++run) loaded.push_back(train(5, 2));
  }
  ASSERT_TRUE(contended) << "2 busy threads per core for 20 s, and the cores never counted as contended";
  for (const auto& bytes : loaded) EXPECT_EQ(bytes, idle);
}
#endif

#if !defined(DYNRNN_GEMM_OPENBLAS) && !defined(DYNRNN_GEMM_ONEDNN)
// With Eigen's GEMM every sum has the same order on any number of threads.
TEST(Determinism, EigenBackendIgnoresTheThreadCount) { EXPECT_EQ(train(5, 1), train(5, 2)); }
#endif

}  // namespace
}  // namespace dynrnn::test
