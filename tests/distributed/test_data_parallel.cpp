// Data-parallel training over MPI, run by ctest under `mpirun -np N` (N = 2 and 3).
//
// The reference is one process training on the same global batches, which every rank also
// computes on its own (no communication). N ranks, each on its share of every global batch,
// must reach its parameters after K steps within 1e-12 (double) or 1e-5 (float) relative,
// and every rank must hold the same bits. Ranks start from different seeds, so that only
// broadcast_model() can make them agree. Covered: an LSTM classifier (tokens, one label per
// sequence) and a per-step model (features, a value at every step), RMSProp and Adam, through
// fit() and through a program's own loop with train_step() and shard_batch(); and resuming a
// single process's checkpoint on N ranks.
#include <dynrnn/distributed/mpi.hpp>
#include <dynrnn/dynrnn.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

using dynrnn::Index;

dynrnn::Communicator* world = nullptr;  // set by main()

enum class Kind { classifier, per_step };

template <class Scalar>
struct Tolerance;
template <>
struct Tolerance<double> {
  static constexpr double value = 1e-12;
};
template <>
struct Tolerance<float> {
  static constexpr double value = 1e-5;
};

// A dataset of variable-length sequences: token sequences with the count of ones as label
// (classifier), or 3-feature sequences with 2 running sums as per-step targets (per_step).
template <class Scalar>
dynrnn::SequenceDataset<Scalar> make_data(Kind kind, int n, std::uint64_t seed) {
  dynrnn::Rng rng(seed);
  dynrnn::SequenceDataset<Scalar> data;
  for (int i = 0; i < n; ++i) {
    const int length = int(dynrnn::uniform_int(rng, 1, 12));
    if (kind == Kind::classifier) {
      std::vector<int> tokens(static_cast<std::size_t>(length));
      int ones = 0;
      for (int& t : tokens) ones += t = int(dynrnn::uniform_int(rng, 0, 2));
      data.add(std::move(tokens), ones % 5);
    } else {
      dynrnn::Matrix<Scalar> x(length, 3), y(length, 2);
      Scalar a = 0, b = 0;
      for (int t = 0; t < length; ++t) {
        for (int k = 0; k < 3; ++k) x(t, k) = Scalar(dynrnn::uniform(rng, -1, 1));
        a += x(t, 0) * Scalar(0.5);
        b += x(t, 1) * x(t, 2);
        y(t, 0) = a;
        y(t, 1) = b;
      }
      data.add(std::move(x), std::move(y));
    }
  }
  return data;
}

template <class Scalar>
using Model = dynrnn::SequenceModel<dynrnn::LSTMCell<Scalar>>;

template <class Scalar>
std::unique_ptr<Model<Scalar>> make_model(Kind kind, const std::string& optimizer, std::uint64_t seed) {
  auto model = kind == Kind::classifier
                   ? std::make_unique<Model<Scalar>>(dynrnn::Input::tokens(2, 4), dynrnn::LSTMCell<Scalar>(4, 24),
                                                     dynrnn::Output::classes(5), seed)
                   : std::make_unique<Model<Scalar>>(dynrnn::Input::features(3), dynrnn::LSTMCell<Scalar>(3, 24),
                                                     dynrnn::Output::values_per_step(2), seed);
  if (optimizer == "adam")
    model->set_optimizer(dynrnn::Adam<Scalar>(Scalar(0.01)));
  else
    model->set_optimizer(dynrnn::RMSProp<Scalar>(Scalar(0.01)));
  return model;
}

// Every parameter of the model, in a fixed order.
template <class Scalar>
std::vector<Scalar> parameters(Model<Scalar>& model) {
  std::vector<Scalar> all;
  const auto take = [&](const char*, auto& p) { all.insert(all.end(), p.data(), p.data() + p.size()); };
  if (model.embedding()) model.embedding()->for_each_parameter(take);
  model.cell().for_each_parameter(take);
  model.head().for_each_parameter(take);
  return all;
}

// The largest |a - b| / max|b| over the parameters (relative to the largest reference value).
template <class Scalar>
double relative_difference(const std::vector<Scalar>& a, const std::vector<Scalar>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

// Whether every rank holds exactly rank 0's values.
template <class Scalar>
bool same_on_every_rank(std::vector<Scalar> values) {
  std::vector<Scalar> root = values;
  world->broadcast(root.data(), root.size() * sizeof(Scalar));
  double differs = root == values ? 0 : 1;
  world->allreduce_sum(&differs, 1);
  return differs == 0;
}

template <class Scalar>
void fit_matches_one_process(Kind kind, const std::string& optimizer) {
  const auto data = make_data<Scalar>(kind, 150, 7);
  dynrnn::FitOptions options;
  options.epochs = 2;
  options.batch_size = 25;  // 6 global batches an epoch, 12 steps; 25 does not divide by 2 or 3
  options.seed = 3;
  options.verbose = false;
  options.handle_interrupt = false;

  auto reference = make_model<Scalar>(kind, optimizer, 11);
  const auto one = dynrnn::fit(*reference, data, {}, options);

  auto model = make_model<Scalar>(kind, optimizer, 11 + std::uint64_t(world->rank()));  // rank 0's seed wins
  options.communicator = world;
  const auto many = dynrnn::fit(*model, data, data, options);

  EXPECT_EQ(many.steps, one.steps);
  EXPECT_EQ(model->communicator(), nullptr) << "fit() leaves the model as it found it";
  const auto p = parameters(*model);
  const double error = relative_difference(p, parameters(*reference));
  EXPECT_LE(error, Tolerance<Scalar>::value) << world->size() << " ranks against one process";
  EXPECT_TRUE(same_on_every_rank(p)) << "the ranks' parameters differ";
  if (world->is_root())
    std::printf("  %d ranks, %s, %s, %s: parameters within %.2e of one process\n", world->size(),
                sizeof(Scalar) == 8 ? "double" : "float", kind == Kind::classifier ? "classifier" : "per-step",
                optimizer.c_str(), error);
  // The validation figures are those of the whole set.
  ASSERT_TRUE(many.has_validation);
  const dynrnn::Metrics whole = model->evaluate(data, 64);
  EXPECT_NEAR(many.validation.loss, whole.loss, 1e-4 * std::abs(whole.loss));
  EXPECT_EQ(many.validation.count, whole.count);
}

TEST(DataParallel, FitClassifierRMSPropDouble) { fit_matches_one_process<double>(Kind::classifier, "rmsprop"); }
TEST(DataParallel, FitClassifierAdamDouble) { fit_matches_one_process<double>(Kind::classifier, "adam"); }
TEST(DataParallel, FitPerStepRMSPropDouble) { fit_matches_one_process<double>(Kind::per_step, "rmsprop"); }
TEST(DataParallel, FitPerStepAdamDouble) { fit_matches_one_process<double>(Kind::per_step, "adam"); }
TEST(DataParallel, FitClassifierRMSPropFloat) { fit_matches_one_process<float>(Kind::classifier, "rmsprop"); }
TEST(DataParallel, FitPerStepAdamFloat) { fit_matches_one_process<float>(Kind::per_step, "adam"); }

// A program's own loop: every rank makes the global batch, takes its share with
// shard_batch() and steps; the resumed part starts from a checkpoint one process wrote.
template <class Scalar>
void own_loop_matches_one_process(bool overlap) {
  const auto data = make_data<Scalar>(Kind::classifier, 200, 5);
  const auto batch_of = [&](int step, dynrnn::SequenceBatch<Scalar>& b) {
    std::vector<std::size_t> indices;
    for (int i = 0; i < 20; ++i) indices.push_back(std::size_t((step * 20 + i) % 200));
    data.make_batch(indices, b);
  };
  constexpr int kFirst = 4, kSteps = 10;
  const std::string path = "data_parallel_resume_" + std::to_string(world->size()) + ".safetensors";

  auto reference = make_model<Scalar>(Kind::classifier, "adam", 2);
  reference->set_clip_norm(Scalar(0.5));  // clipping sees the averaged gradients
  dynrnn::Checkpoint<Scalar> reference_ckpt;
  reference->add_to(reference_ckpt);
  dynrnn::SequenceBatch<Scalar> global, local;
  for (int step = 0; step < kSteps; ++step) {
    if (step == kFirst && world->is_root()) reference_ckpt.save(path, step);
    batch_of(step, global);
    reference->train_step(global);
  }

  auto model = make_model<Scalar>(Kind::classifier, "adam", 40 + std::uint64_t(world->rank()));
  model->set_clip_norm(Scalar(0.5));
  dynrnn::Checkpoint<Scalar> ckpt;
  model->add_to(ckpt);
  const std::int64_t start = dynrnn::load_checkpoint_from_root(ckpt, path, *world);
  EXPECT_EQ(start, kFirst);
  model->set_communicator(world, {overlap, 4096});  // small buckets: several per step
  for (int step = int(start); step < kSteps; ++step) {
    batch_of(step, global);
    dynrnn::shard_batch(global, world->rank(), world->size(), local);
    model->train_step(local);
  }
  const auto p = parameters(*model);
  const double error = relative_difference(p, parameters(*reference));
  EXPECT_LE(error, Tolerance<Scalar>::value);
  EXPECT_TRUE(same_on_every_rank(p));
  if (world->is_root()) {
    std::printf("  %d ranks, own loop, resumed, overlap %s: parameters within %.2e of one process\n", world->size(),
                overlap ? "on" : "off", error);
    std::remove(path.c_str());
  }
}

TEST(DataParallel, OwnLoopResumedDouble) { own_loop_matches_one_process<double>(true); }
TEST(DataParallel, OwnLoopResumedNoOverlapFloat) { own_loop_matches_one_process<float>(false); }

// Only rank 0 writes checkpoints and the CSV log: each rank is given a file name of its own
// here, and only rank 0's are written.
TEST(DataParallel, OnlyRankZeroWrites) {
  const auto data = make_data<float>(Kind::classifier, 40, 3);
  auto model = make_model<float>(Kind::classifier, "rmsprop", 1);
  dynrnn::Checkpoint<float> ckpt;
  model->add_to(ckpt);
  const std::string rank = std::to_string(world->rank());
  const std::string checkpoint_path = "dp_writes_" + rank + ".safetensors", csv_path = "dp_writes_" + rank + ".csv";
  std::remove(checkpoint_path.c_str());
  dynrnn::CheckpointEvery<float> saver(ckpt, model->progress().step, checkpoint_path, 2);
  dynrnn::CsvLog csv(csv_path);
  dynrnn::FitOptions options;
  options.epochs = 1;
  options.batch_size = 10;
  options.verbose = false;
  options.handle_interrupt = false;
  options.communicator = world;
  dynrnn::fit(*model, data, {}, options, {&saver, &csv});
  std::ifstream checkpoint_file(checkpoint_path), csv_file(csv_path);
  std::string first_line;
  std::getline(csv_file, first_line);
  if (world->is_root()) {
    EXPECT_TRUE(checkpoint_file.good());
    EXPECT_EQ(first_line, "step,epoch,train_loss,validation_loss,validation_accuracy");
  } else {
    EXPECT_FALSE(checkpoint_file.good()) << checkpoint_path;
    EXPECT_EQ(first_line, "") << csv_path << " is written on rank " << rank;
  }
  std::remove(checkpoint_path.c_str());
  std::remove(csv_path.c_str());
}

// A checkpoint rank 0 cannot read fails on every rank with rank 0's reason, instead of
// leaving the others waiting.
TEST(DataParallel, UnreadableCheckpointFailsOnEveryRank) {
  auto model = make_model<double>(Kind::classifier, "rmsprop", 1);
  dynrnn::Checkpoint<double> ckpt;
  model->add_to(ckpt);
  try {
    dynrnn::load_checkpoint_from_root(ckpt, "no_such_checkpoint.safetensors", *world);
    ADD_FAILURE() << "no exception";
  } catch (const dynrnn::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0"), std::string::npos) << e.what();
  }
}

}  // namespace

int main(int argc, char** argv) {
  dynrnn::MpiSession session(argc, argv);
  dynrnn::MpiCommunicator comm;
  world = &comm;
  ::testing::InitGoogleTest(&argc, argv);
  if (!comm.is_root()) GTEST_FLAG_SET(brief, true);  // the other ranks report their failures only
  const int failed = RUN_ALL_TESTS();
  if (failed && !comm.is_root()) std::fprintf(stderr, "rank %d: a test failed\n", comm.rank());
  return failed;
}
