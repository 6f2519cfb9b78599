// Uses dynrnn's data parallelism from another project: two ranks train a small model with
// fit() over MPI and must end with the same parameters.
#include <dynrnn/distributed/mpi.hpp>
#include <dynrnn/dynrnn.hpp>

#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  dynrnn::MpiSession session(argc, argv);
  dynrnn::MpiCommunicator comm;
  dynrnn::SequenceDataset<float> data;
  for (int i = 0; i < 40; ++i) data.add(std::vector<int>(std::size_t(1 + i % 7), i % 2), i % 2);
  dynrnn::SequenceModel<dynrnn::LSTMCell<float>> model(dynrnn::Input::tokens(2, 3), dynrnn::LSTMCell<float>(3, 8),
                                                       dynrnn::Output::classes(2), 1 + std::uint64_t(comm.rank()));
  model.set_optimizer(dynrnn::Adam<float>(0.01f));
  dynrnn::FitOptions options;
  options.epochs = 2;
  options.batch_size = 8;
  options.verbose = false;
  options.communicator = &comm;
  const auto result = dynrnn::fit(model, data, {}, options);
  std::vector<float> kernel(model.cell().kernel().data(), model.cell().kernel().data() + model.cell().kernel().size());
  std::vector<float> root = kernel;
  comm.broadcast(root.data(), root.size() * sizeof(float));
  double differs = root == kernel ? 0 : 1;
  comm.allreduce_sum(&differs, 1);
  const bool ok = result.steps == 10 && differs == 0 && comm.size() == 2;
  if (comm.is_root()) std::printf("dynrnn %s mpi consumer: %s\n", dynrnn::version, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
