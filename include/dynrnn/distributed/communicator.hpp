// dynrnn: the collective operations data-parallel training needs, behind one interface.
//
// Data parallelism runs the same program as N processes ("ranks"). Each takes a share of
// every global batch, the ranks sum their gradients with an allreduce, and every rank applies
// the same update, so the models stay identical. The training code (SequenceModel, fit(),
// data_parallel.hpp) talks only to Communicator:
//
//   rank(), size()           which process this is, of how many
//   allreduce_sum(data, n)   every rank's n values summed, in place, on every rank
//   start_allreduce_sum()    the same without waiting; wait_all() waits for every one started
//   broadcast(data, bytes)   rank 0's bytes copied to every rank
//   abort(code, why)         ends every rank of the job (a rank that cannot go on)
//
// Implementations: SingleProcess (below, rank 0 of 1, nothing to do) and MpiCommunicator
// (distributed/mpi.hpp, the only header that needs MPI). Another engine (Gloo, NCCL) is
// another subclass; the training code does not change.
#pragma once

#include "../core/types.hpp"

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace dynrnn {

/// \brief A collective operation failed, or the ranks disagree about something they must
/// share (a buffer size, a checkpoint that only some could read).
class CommunicatorError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// \brief The collective operations of data-parallel training; see the file comment.
///
/// Every operation is collective: every rank of the job calls it, in the same order, with the
/// same sizes. Calls come from one thread at a time.
class Communicator {
 public:
  virtual ~Communicator() = default;

  /// \brief This process's index, in [0, size()).
  virtual int rank() const = 0;
  /// \brief Processes in the job.
  virtual int size() const = 0;

  /// \brief Sums `n` values over the ranks, in place: afterwards every rank holds the same sums.
  virtual void allreduce_sum(float* data, Index n) = 0;
  /// \copydoc allreduce_sum(float*, Index)
  virtual void allreduce_sum(double* data, Index n) = 0;

  /// \brief Starts allreduce_sum() of `data` and returns at once; `data` must stay untouched
  /// until wait_all(). The default runs it to the end here.
  virtual void start_allreduce_sum(float* data, Index n) { allreduce_sum(data, n); }
  /// \copydoc start_allreduce_sum(float*, Index)
  virtual void start_allreduce_sum(double* data, Index n) { allreduce_sum(data, n); }
  /// \brief Waits until every operation start_allreduce_sum() started has finished.
  virtual void wait_all() {}

  /// \brief Copies `bytes` bytes at `data` on rank `root` into `data` on every other rank.
  virtual void broadcast(void* data, std::size_t bytes, int root = 0) = 0;

  /// \brief Ends every process of the job with exit status `code`, after printing `why` to
  /// stderr. For a rank that cannot go on: the others would otherwise wait for it forever.
  [[noreturn]] virtual void abort(int code, const std::string& why) noexcept = 0;

  /// \brief Whether this is rank 0, the one that writes files and prints progress.
  bool is_root() const { return rank() == 0; }
};

/// \brief The job of one process: rank 0 of 1; every collective leaves the data as it is.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(float*, Index) override {}
  void allreduce_sum(double*, Index) override {}
  void broadcast(void*, std::size_t, int) override {}
  [[noreturn]] void abort(int code, const std::string& why) noexcept override {
    std::fprintf(stderr, "%s\n", why.c_str());
    std::exit(code);
  }
};

}  // namespace dynrnn
