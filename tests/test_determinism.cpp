// With the same seed and thread count, training is bit-identical from run to run: the
// whole model and optimiser state, compared as checkpoint bytes after several steps.
#include "support.hpp"

namespace dynrnn::test {
namespace {

// Embedding -> LSTM -> last output -> Dense -> softmax cross-entropy -> RMSProp, on ragged
// batches drawn from `seed`; returns the checkpoint of everything after `steps` steps.
std::vector<unsigned char> train(std::uint64_t seed, int threads, int steps = 4) {
  const int saved_threads = max_threads();
  set_num_threads(threads);
  constexpr Index B = 70, T = 9, V = 5, H = 130, C = 4;  // large enough to split across threads
  Rng rng(seed);
  Embedding<float> embedding(V, 6);
  LSTMCell<float> lstm(6, H);
  Dense<float> dense(H, C);
  embedding.reset_parameters(rng);
  lstm.reset_parameters(rng);
  dense.reset_parameters(rng);
  auto options = RMSPropOptions<float>::tensorflow(0.01f);
  options.momentum = 0.9f;
  RMSProp<float> opt(options);
  Checkpoint<float> ckpt;
  ckpt.add("embedding", embedding).add("lstm", lstm).add("dense", dense).add("opt", opt);

  for (int step = 0; step < steps; ++step) {
    std::vector<int> lengths(B), ids(T * B, 0), labels(B);
    for (Index b = 0; b < B; ++b) {
      lengths[b] = int(uniform_int(rng, 0, T + 1));
      labels[b] = int(uniform_int(rng, 0, C));
      for (int t = 0; t < lengths[b]; ++t) ids[t * B + b] = int(uniform_int(rng, 0, V));
    }
    const auto x = embedding.forward_sequences(ids, T, B);
    const auto fwd = dynamic_rnn(lstm, x, lengths);
    const auto last = gather_last_outputs(fwd.outputs, lengths);
    const auto ce = softmax_cross_entropy(dense.forward(last), labels);
    auto d_dense = dense.make_gradients();
    const auto d_last = dense.backward(last, ce.d_logits, d_dense);
    const auto d_lstm = dynamic_rnn_backward(lstm, fwd, gather_last_outputs_backward(d_last, lengths, T));
    auto d_embedding = embedding.make_gradients();
    embedding.backward_sequences(ids, d_lstm.inputs, d_embedding);
    opt.apply(lstm, d_lstm);
    opt.apply(dense, d_dense);
    opt.apply(embedding, d_embedding);
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

#if !defined(DYNRNN_GEMM_OPENBLAS) && !defined(DYNRNN_GEMM_ONEDNN)
// With Eigen's GEMM every sum has the same order on any number of threads.
TEST(Determinism, EigenBackendIgnoresTheThreadCount) { EXPECT_EQ(train(5, 1), train(5, 2)); }
#endif

}  // namespace
}  // namespace dynrnn::test
