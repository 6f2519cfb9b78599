// Training throughput of data parallelism: sequences per second of SequenceModel::train_step
// on a benchmark workload (workloads.hpp), alone or as one rank of an MPI job, and the share
// of each step spent summing gradients.
//
//   data_parallel_benchmark M                         # this process alone
//   mpirun -np 2 data_parallel_benchmark M            # 2 ranks share every global batch
//   data_parallel_benchmark L --steps 5 --rounds 7 --no-overlap --per-rank-batch
//
// The global batch is the workload's B (64) sequences, split between the ranks (strong
// scaling, comparable with one process on more threads); --per-rank-batch gives every rank B
// sequences instead (weak scaling). The model: features [T, B, I] -> LSTM(H) -> last output
// -> Dense(H, 10) -> softmax cross-entropy, RMSProp. Each round times --steps steps after a
// collective start; rank 0 prints the median over the rounds, one line:
//   data_parallel <workload> ranks <N> threads <n> overlap <on|off> seq/s <median> step_ms <median>
//   comm_ms <median> comm_share <median>
// comm_ms is the time a step spends in the communicator's calls (allreduce, waiting for
// started sums): what the overlap did not hide.
#include "workloads.hpp"

#include <dynrnn/distributed/mpi.hpp>
#include <dynrnn/dynrnn.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A Communicator that passes every call on and counts the time spent in them.
class TimedCommunicator final : public dynrnn::Communicator {
 public:
  explicit TimedCommunicator(dynrnn::Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  void allreduce_sum(float* d, dynrnn::Index n) override { timed([&] { inner_.allreduce_sum(d, n); }); }
  void allreduce_sum(double* d, dynrnn::Index n) override { timed([&] { inner_.allreduce_sum(d, n); }); }
  void start_allreduce_sum(float* d, dynrnn::Index n) override { timed([&] { inner_.start_allreduce_sum(d, n); }); }
  void start_allreduce_sum(double* d, dynrnn::Index n) override { timed([&] { inner_.start_allreduce_sum(d, n); }); }
  void wait_all() override { timed([&] { inner_.wait_all(); }); }
  void broadcast(void* d, std::size_t bytes, int root) override { timed([&] { inner_.broadcast(d, bytes, root); }); }
  [[noreturn]] void abort(int code, const std::string& why) noexcept override {
    inner_.abort(code, why);
    std::abort();  // not reached
  }
  double seconds = 0;  // in the calls so far

 private:
  template <class F>
  void timed(F&& f) {
    const auto t = Clock::now();
    f();
    seconds += seconds_since(t);
  }
  dynrnn::Communicator& inner_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string name = argc > 1 ? argv[1] : "M";
  int steps = 10, rounds = 5;
  bool overlap = true, per_rank_batch = false;
  for (int k = 2; k < argc; ++k) {
    const std::string a = argv[k];
    if (a == "--steps" && k + 1 < argc) steps = std::atoi(argv[++k]);
    else if (a == "--rounds" && k + 1 < argc) rounds = std::atoi(argv[++k]);
    else if (a == "--no-overlap") overlap = false;
    else if (a == "--per-rank-batch") per_rank_batch = true;
    else {
      std::fprintf(stderr, "data_parallel_benchmark: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  const bench::Workload* w = nullptr;
  for (const auto& candidate : bench::kWorkloads)
    if (name == candidate.name) w = &candidate;
  if (!w || steps < 1 || rounds < 1) {
    std::fprintf(stderr, "usage: data_parallel_benchmark S|M|M-var|L [--steps N] [--rounds N] [--no-overlap] "
                         "[--per-rank-batch]\n");
    return 2;
  }

  std::optional<dynrnn::MpiSession> session;
  std::optional<dynrnn::MpiCommunicator> mpi;
  dynrnn::SingleProcess alone;
  if (dynrnn::launched_by_mpi()) {
    session.emplace(argc, argv);
    mpi.emplace();
  }
  dynrnn::Communicator& world = mpi ? static_cast<dynrnn::Communicator&>(*mpi) : alone;
  TimedCommunicator comm(world);
  const int rank = comm.rank(), ranks = comm.size();

  // The global batch: the workload's lengths and random features and labels, the same on every rank.
  constexpr int kClasses = 10;
  const dynrnn::Index B = per_rank_batch ? w->batch * ranks : w->batch;
  dynrnn::Rng rng(7);
  dynrnn::SequenceBatch<float> global, mine;
  global.lengths.clear();
  for (int r = 0; r < (per_rank_batch ? ranks : 1); ++r) {
    const auto lengths = bench::lengths_of(*w);
    global.lengths.insert(global.lengths.end(), lengths.begin(), lengths.end());
  }
  global.features.resize(w->max_time, B, w->input);
  for (dynrnn::Index i = 0; i < global.features.size(); ++i) global.features.data()[i] = float(dynrnn::uniform(rng, -1, 1));
  for (dynrnn::Index b = 0; b < B; ++b) global.labels.push_back(int(dynrnn::uniform_int(rng, 0, kClasses)));
  dynrnn::shard_batch(global, rank, ranks, mine);

  dynrnn::SequenceModel<dynrnn::LSTMCell<float>> model(dynrnn::Input::features(w->input),
                                                       dynrnn::LSTMCell<float>(w->input, w->hidden),
                                                       dynrnn::Output::classes(kClasses), 1);
  model.set_optimizer(dynrnn::RMSProp<float>(1e-4f));
  model.set_communicator(&comm, {overlap});

  for (int k = 0; k < 2; ++k) model.train_step(mine);  // warm-up: buffers, threads, buckets
  std::vector<double> step_ms, comm_ms, shares;
  for (int round = 0; round < rounds; ++round) {
    double sync = 0;
    comm.allreduce_sum(&sync, 1);  // start together
    comm.seconds = 0;
    const auto start = Clock::now();
    for (int k = 0; k < steps; ++k) model.train_step(mine);
    const double elapsed = seconds_since(start);
    step_ms.push_back(1e3 * elapsed / steps);
    comm_ms.push_back(1e3 * comm.seconds / steps);
    shares.push_back(comm.seconds / elapsed);
  }
  if (rank == 0)
    std::printf("data_parallel %s ranks %d threads %d overlap %s seq/s %.1f step_ms %.3f comm_ms %.3f comm_share %.4f\n",
                w->name, ranks, dynrnn::max_threads(), overlap ? "on" : "off", double(B) / (median(step_ms) / 1e3),
                median(step_ms), median(comm_ms), median(shares));
  return 0;
}
