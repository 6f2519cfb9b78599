// dynrnn: the Communicator of data-parallel training on MPI.
//
// The one header of dynrnn that needs MPI: a program that includes it links MPI, for example
// with CMake's `find_package(MPI COMPONENTS CXX)` and `target_link_libraries(app MPI::MPI_CXX)`
// (see dynrnnConfig.cmake), and runs under `mpirun -np N app`. Nothing else in dynrnn needs it.
//
//   int main(int argc, char** argv) {
//     dynrnn::MpiSession mpi(argc, argv);  // MPI_Init_thread, and MPI_Finalize at the end
//     dynrnn::MpiCommunicator comm;        // MPI_COMM_WORLD
//     dynrnn::FitOptions options;
//     options.communicator = &comm;        // fit() shards the data and averages the gradients
//     ...
//   }
//
// Threads: only the thread that created the session calls MPI (MPI_THREAD_FUNNELED); dynrnn's
// own threads never do. Errors: an MPI call that fails throws CommunicatorError with MPI's
// message. A rank that dies ends the job: mpirun notices and stops the others. A rank whose
// exception leaves main() while the session is alive calls MPI_Abort from the session's
// destructor, so the others do not wait for it forever.
#pragma once

#include "communicator.hpp"

// Only MPI's C interface is used; its deprecated C++ bindings stay out.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

namespace dynrnn {

namespace detail {

// Throws CommunicatorError naming `what` when an MPI call did not succeed.
inline void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  throw CommunicatorError(std::string("dynrnn::MpiCommunicator: ") + what + " failed: " + std::string(text, std::size_t(length)));
}

// MPI counts are int: longer buffers go in pieces of this many elements.
inline constexpr Index kMpiPiece = Index(1) << 30;

template <class Scalar>
MPI_Datatype mpi_type() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>, "float or double");
  return std::is_same_v<Scalar, float> ? MPI_FLOAT : MPI_DOUBLE;
}

}  // namespace detail

/// \brief Starts MPI when constructed (unless the program already did) and ends it when
/// destroyed: MPI_Finalize normally, MPI_Abort when an exception is leaving the scope, so that
/// one rank's failure ends the job instead of leaving the others waiting.
class MpiSession {
 public:
  /// \brief MPI_Init_thread with MPI_THREAD_FUNNELED.
  /// \throws CommunicatorError when MPI cannot start.
  MpiSession(int& argc, char**& argv) : exceptions_(std::uncaught_exceptions()) {
    int initialized = 0;
    detail::check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
    if (initialized) return;
    int provided = 0;
    detail::check_mpi(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    owner_ = true;
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  ~MpiSession() {
    if (!owner_) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (std::uncaught_exceptions() > exceptions_) {
      std::fprintf(stderr, "dynrnn::MpiSession: an exception ends this rank; aborting the MPI job\n");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
  }

 private:
  int exceptions_;
  bool owner_ = false;
};

/// \brief Communicator over an MPI communicator (MPI_COMM_WORLD by default), which it
/// duplicates so that dynrnn's messages never mix with the program's own. MPI must be running
/// (MpiSession) for as long as the object lives.
class MpiCommunicator final : public Communicator {
 public:
  /// \throws CommunicatorError when MPI is not running or the duplicate cannot be made.
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD) {
    int initialized = 0;
    detail::check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
    if (!initialized)
      throw CommunicatorError("dynrnn::MpiCommunicator: MPI is not running; create a dynrnn::MpiSession first");
    detail::check_mpi(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    detail::check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    detail::check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  ~MpiCommunicator() override {
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (!pending_.empty()) MPI_Waitall(int(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE);
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(float* data, Index n) override { reduce(data, n, false); }
  void allreduce_sum(double* data, Index n) override { reduce(data, n, false); }
  void start_allreduce_sum(float* data, Index n) override { reduce(data, n, true); }
  void start_allreduce_sum(double* data, Index n) override { reduce(data, n, true); }
  void wait_all() override {
    if (pending_.empty()) return;
    const int code = MPI_Waitall(int(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE);
    pending_.clear();
    detail::check_mpi(code, "MPI_Waitall");
  }
  void broadcast(void* data, std::size_t bytes, int root = 0) override {
    auto* p = static_cast<unsigned char*>(data);
    for (std::size_t done = 0; done < bytes;) {
      const int count = int(std::min<std::size_t>(bytes - done, std::size_t(detail::kMpiPiece)));
      detail::check_mpi(MPI_Bcast(p + done, count, MPI_BYTE, root, comm_), "MPI_Bcast");
      done += std::size_t(count);
    }
  }
  [[noreturn]] void abort(int code, const std::string& why) noexcept override {
    std::fprintf(stderr, "rank %d: %s\n", rank_, why.c_str());
    std::fflush(stderr);
    MPI_Abort(comm_, code);
    std::abort();  // MPI_Abort does not return; if it ever did, this rank still ends
  }

  /// \brief The duplicated MPI communicator, for the program's own MPI calls.
  MPI_Comm handle() const { return comm_; }

 private:
  template <class Scalar>
  void reduce(Scalar* data, Index n, bool start) {
    for (Index done = 0; done < n; done += detail::kMpiPiece) {
      const int count = int(std::min(n - done, detail::kMpiPiece));
      if (start) {
        MPI_Request request;
        detail::check_mpi(
            MPI_Iallreduce(MPI_IN_PLACE, data + done, count, detail::mpi_type<Scalar>(), MPI_SUM, comm_, &request),
            "MPI_Iallreduce");
        pending_.push_back(request);
      } else {
        detail::check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + done, count, detail::mpi_type<Scalar>(), MPI_SUM, comm_),
                          "MPI_Allreduce");
      }
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<MPI_Request> pending_;
};

/// \brief Whether this process was started by an MPI launcher (mpirun, mpiexec, srun) as part
/// of a job of several processes; the examples switch to data parallelism by themselves then.
inline bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (const char* value = std::getenv(name)) return std::atoi(value) > 1;
  return false;
}

}  // namespace dynrnn
