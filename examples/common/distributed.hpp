// The examples' data parallelism: started by mpirun with several processes, an example
// trains data-parallel over MPI with no flag of its own; started alone, it trains alone.
//
//   examples::Distributed dist(argc, argv);  // first thing in main()
//   dist.comm()    // the communicator, or null when this process trains alone
//   dist.root()    // whether this process prints and writes files (rank 0, or alone)
//   dist.fail(2)   // ends this process with status 2, and with it the whole job
//
// The examples are built with MPI when CMake finds it (DYNRNN_EXAMPLES_MPI); without it they
// always train alone. On ranks other than 0, stdout goes to /dev/null, so that the job prints
// one copy of the progress.
#pragma once

#include <dynrnn/distributed/communicator.hpp>

#include <cstdio>
#include <optional>
#include <string>

#ifdef DYNRNN_EXAMPLES_MPI
#include <dynrnn/distributed/mpi.hpp>
#endif

namespace examples {

class Distributed {
 public:
  Distributed(int& argc, char**& argv) {
#ifdef DYNRNN_EXAMPLES_MPI
    if (!dynrnn::launched_by_mpi()) return;
    session_.emplace(argc, argv);
    comm_.emplace();
    if (!comm_->is_root() && !std::freopen("/dev/null", "w", stdout))
      std::fprintf(stderr, "rank %d: cannot silence stdout\n", comm_->rank());
#else
    (void)argc;
    (void)argv;
#endif
  }

  /// The communicator, or null when this process trains alone.
  dynrnn::Communicator* comm() {
#ifdef DYNRNN_EXAMPLES_MPI
    if (comm_) return &*comm_;
#endif
    return nullptr;
  }
  /// Whether this process prints and writes files.
  bool root() { return !comm() || comm()->is_root(); }
  /// Processes in the job.
  int size() { return comm() ? comm()->size() : 1; }

  /// The exit status `code` for main() to return. A failure that only this rank sees (a
  /// checkpoint it cannot write) must end the others too, which would wait for it forever:
  /// over several ranks a non-zero code aborts the job here.
  int fail(int code, const std::string& why = "") {
    if (code != 0 && comm()) comm()->abort(code, why.empty() ? "ending the job" : why);
    return code;
  }

 private:
#ifdef DYNRNN_EXAMPLES_MPI
  std::optional<dynrnn::MpiSession> session_;
  std::optional<dynrnn::MpiCommunicator> comm_;
#endif
};

}  // namespace examples
