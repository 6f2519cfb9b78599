// Data parallelism without MPI (distributed/): gradient buckets, sharding, and a model's step
// over a communicator, against a stand-in for N ranks that all hold the same data. The MPI
// runs themselves are tests/distributed.
#include "support.hpp"

#include <numeric>

namespace dynrnn::test {
namespace {

// N ranks that all hold this rank's values: every sum is N times them. Counts the calls.
class MirrorCommunicator final : public Communicator {
 public:
  explicit MirrorCommunicator(int ranks) : ranks_(ranks) {}
  int rank() const override { return 0; }
  int size() const override { return ranks_; }
  void allreduce_sum(float* d, Index n) override { scale(d, n); }
  void allreduce_sum(double* d, Index n) override { scale(d, n); }
  void start_allreduce_sum(float* d, Index n) override {
    ++started;
    scale(d, n);
  }
  void start_allreduce_sum(double* d, Index n) override {
    ++started;
    scale(d, n);
  }
  void wait_all() override { ++waits; }
  void broadcast(void*, std::size_t, int) override {}
  [[noreturn]] void abort(int, const std::string& why) noexcept override {
    std::fprintf(stderr, "%s\n", why.c_str());
    std::abort();
  }
  std::vector<Index> sizes;  // of every sum, in order
  int started = 0, waits = 0;

 private:
  template <class Scalar>
  void scale(Scalar* d, Index n) {
    sizes.push_back(n);
    for (Index i = 0; i < n; ++i) d[i] *= Scalar(ranks_);
  }
  int ranks_;
};

TEST(GradientBuckets, PackSumAndUnpackInFewCalls) {
  Matrix<double> a = Matrix<double>::Constant(8, 5, 1.5);  // 40
  Vector<double> b = Vector<double>::LinSpaced(7, 1, 7);   // 7
  const Matrix<double> a0 = a;
  const Vector<double> b0 = b;
  MirrorCommunicator comm(3);
  GradientBuckets<double> buckets(25 * sizeof(double));  // 25 scalars a bucket
  buckets.begin(2.0);
  buckets.add(a);
  buckets.start(comm);  // a's 40 scalars: a full bucket and one of 15
  buckets.add(b);
  double extras[2] = {4, 5};
  buckets.finish(comm, extras, 2);
  EXPECT_EQ(comm.sizes, (std::vector<Index>{25, 15, 9}));  // b and the extras share the last bucket
  EXPECT_EQ(buckets.buckets(), 3);
  EXPECT_EQ(comm.started, 3);
  EXPECT_EQ(comm.waits, 1);
  EXPECT_EQ(extras[0], 12);
  EXPECT_EQ(extras[1], 15);
  buckets.unpack(0.25);  // sums of 3 ranks' 2·g, scaled: 1.5·g
  EXPECT_TRUE(a.isApprox(1.5 * a0, 1e-15));
  EXPECT_TRUE(b.isApprox(1.5 * b0, 1e-15));
  // A second round reuses the buckets and sends the same calls.
  comm.sizes.clear();
  buckets.begin(1.0);
  buckets.add(a, b);
  buckets.finish(comm, extras, 2);
  EXPECT_EQ(comm.sizes, (std::vector<Index>{25, 24}));
}

TEST(GradientBuckets, RefusesBucketsSmallerThanAScalar) {
  EXPECT_THROW(GradientBuckets<float>(2), std::invalid_argument);
}

TEST(Sharding, SharesCoverTheBatchInOrder) {
  for (int ranks = 1; ranks <= 5; ++ranks) {
    Index next = 0;
    for (int r = 0; r < ranks; ++r) {
      const auto s = shard_of(23, r, ranks);
      EXPECT_EQ(s.begin, next);
      EXPECT_LE(s.end - s.begin, 23 / ranks + 1);
      EXPECT_GE(s.end - s.begin, 23 / ranks);
      next = s.end;
    }
    EXPECT_EQ(next, 23);
  }
  EXPECT_THROW(shard_of(23, 3, 3), std::invalid_argument);
  EXPECT_THROW(shard_of(23, -1, 3), std::invalid_argument);
}

// Token inputs with a label per step: a share is padded to its own longest sequence.
TEST(Sharding, ShardBatchTakesTheRowsOfOneShare) {
  SequenceBatch<float> global, local;
  global.lengths = {2, 5, 1, 3, 4};
  const Index B = 5, T = 5;
  for (Index t = 0; t < T; ++t)
    for (Index b = 0; b < B; ++b) {
      global.tokens.push_back(int(10 * t + b));
      global.labels.push_back(int(100 + 10 * t + b));
    }
  shard_batch(global, 1, 2, local);  // rows 2, 3, 4 of 5
  EXPECT_EQ(local.lengths, (std::vector<int>{1, 3, 4}));
  ASSERT_EQ(local.max_time(), 4);
  ASSERT_EQ(local.tokens.size(), 12u);
  for (Index t = 0; t < 4; ++t)
    for (Index b = 0; b < 3; ++b) {
      EXPECT_EQ(local.tokens[std::size_t(t * 3 + b)], 10 * t + b + 2);
      EXPECT_EQ(local.labels[std::size_t(t * 3 + b)], 100 + 10 * t + b + 2);
    }
  SequenceBatch<float> too_few;
  too_few.lengths = {3};
  too_few.tokens = {0, 1, 0};
  EXPECT_THROW(shard_batch(too_few, 0, 2, local), std::invalid_argument);  // rank 0 would get none
}

// Features with values at every step: the share keeps the padded length, and takes its rows.
TEST(Sharding, ShardBatchKeepsFeatureLayouts) {
  SequenceBatch<double> global, local;
  global.lengths = {3, 1, 2};
  global.features.resize(3, 3, 2);
  global.step_targets.resize(3, 3, 1);
  for (Index i = 0; i < global.features.size(); ++i) global.features.data()[i] = double(i);
  for (Index i = 0; i < global.step_targets.size(); ++i) global.step_targets.data()[i] = double(-i);
  shard_batch(global, 0, 2, local);  // row 0
  ASSERT_EQ(local.features.dimension(0), 3);
  ASSERT_EQ(local.features.dimension(1), 1);
  for (Index t = 0; t < 3; ++t) {
    EXPECT_EQ(local.features(t, 0, 1), global.features(t, 0, 1));
    EXPECT_EQ(local.step_targets(t, 0, 0), global.step_targets(t, 0, 0));
  }
}

// Ranks that all see the same batch average to that batch's own gradients: a step over the
// mirror communicator is the step alone, for a mean and for a summed loss, and with clipping.
template <class Scalar>
void mirrored_step_is_the_step_alone(Reduction reduction, bool overlap) {
  SequenceBatch<Scalar> batch;
  batch.lengths = {4, 2, 3};
  batch.tokens = {1, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0};
  batch.labels = {2, 1, 0};
  Output output = Output::classes(3);
  output.reduction = reduction;
  SequenceModel<LSTMCell<Scalar>> alone(Input::tokens(2, 3), LSTMCell<Scalar>(3, 6), output, 4);
  SequenceModel<LSTMCell<Scalar>> ranked(Input::tokens(2, 3), LSTMCell<Scalar>(3, 6), output, 4);
  MirrorCommunicator comm(4);
  for (auto* m : {&alone, &ranked}) m->set_optimizer(Adam<Scalar>(Scalar(0.05))).set_clip_norm(Scalar(0.3));
  ranked.set_communicator(&comm, {overlap, 64});
  for (int step = 0; step < 3; ++step) {
    const Scalar a = alone.train_step(batch);
    bool stop = step == 1;
    const Scalar r = ranked.train_step(batch, &stop);
    EXPECT_NEAR(double(r), double(reduction == Reduction::sum ? 4 * a : a), 1e-12 * std::abs(double(a)));
    EXPECT_EQ(stop, step == 1) << "one rank's wish to stop reaches all";
  }
  EXPECT_TRUE(ranked.cell().kernel().isApprox(alone.cell().kernel(), Scalar(1e-12)));
  EXPECT_TRUE(ranked.head().weight().isApprox(alone.head().weight(), Scalar(1e-12)));
  EXPECT_GT(comm.sizes.size(), 3u * (overlap ? 2 : 1)) << "small buckets: several sums a step";
}

TEST(DataParallelStep, MirroredMeanStepIsTheStepAlone) { mirrored_step_is_the_step_alone<double>(Reduction::mean, true); }
TEST(DataParallelStep, MirroredStepWithoutOverlap) { mirrored_step_is_the_step_alone<double>(Reduction::mean, false); }

TEST(DataParallelStep, SingleProcessCommunicatorChangesNothing) {
  SingleProcess one;
  SequenceModel<LSTMCell<double>> model(Input::tokens(2, 3), LSTMCell<double>(3, 6), Output::classes(3), 4);
  model.set_optimizer(RMSProp<double>(0.01));
  model.set_communicator(&one);
  EXPECT_EQ(model.communicator(), nullptr);
}

}  // namespace
}  // namespace dynrnn::test
