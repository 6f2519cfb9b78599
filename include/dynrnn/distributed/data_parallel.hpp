// dynrnn: the pieces of data-parallel training around the step, over any Communicator.
//
// A data-parallel job runs the same program on N ranks. Each step:
//   1. every rank draws the same global batch of G sequences (the same seed), and takes its
//      share, sequences [r·G/N, (r+1)·G/N) (shard_of, shard_batch);
//   2. SequenceModel::train_step averages the gradients over the ranks (set_communicator),
//      so every rank makes the update one process would make on the global batch.
// Around the steps:
//   - broadcast_model: rank 0's parameters, optimiser slots and training progress to every
//     rank, before the first step (fit() does it);
//   - load_checkpoint_from_root: rank 0 reads a checkpoint and every rank loads its bytes, so
//     the file need only be on rank 0's machine; any number of ranks can resume from it, as the
//     progress counts global batches;
//   - reduce_metrics: figures of each rank's share of an evaluation, combined
//     (evaluate_over_ranks does both for a dataset);
//   - only rank 0 writes checkpoints and logs (Communicator::is_root; fit()'s callbacks do).
// fit() does all of this when FitOptions::communicator is set; these are for programs with
// their own loop. Nothing here needs MPI: distributed/mpi.hpp supplies the communicator.
#pragma once

#include "../core/parallel.hpp"
#include "../io/checkpoint.hpp"
#include "../model/sequence_model.hpp"
#include "communicator.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace dynrnn {

/// \brief Rank `rank`'s share [begin, end) of `n` items split between `ranks` ranks: the
/// shares differ by at most one item, and together cover [0, n) in order.
/// \throws std::invalid_argument unless 0 <= rank < ranks.
inline detail::Share shard_of(Index n, int rank, int ranks) {
  detail::check_positive("shard_of", "ranks", ranks);
  if (rank < 0 || rank >= ranks)
    detail::throw_argument("shard_of", "rank", "in [0, " + std::to_string(ranks) + ")", std::to_string(rank));
  return {n * rank / ranks, n * (rank + 1) / ranks};
}

/// \brief Copies rank `rank`'s share (shard_of) of the sequences of `global` into `local`,
/// every member `global` has. Token batches are padded to the share's longest sequence (their
/// padded length is that, SequenceBatch::max_time); feature batches keep the global padded
/// length. Reuses `local`'s storage.
/// \throws std::invalid_argument for a rank out of range, or a share that would be empty
/// (fewer sequences than ranks).
template <class Scalar>
void shard_batch(const SequenceBatch<Scalar>& global, int rank, int ranks, SequenceBatch<Scalar>& local) {
  const Index B = global.batch();
  const detail::Share share = shard_of(B, rank, ranks);
  const Index b0 = share.begin, b1 = share.end;
  if (b1 <= b0)
    detail::throw_argument("shard_batch", "global", "at least one sequence per rank (" + std::to_string(ranks) + ")",
                           std::to_string(B) + " sequences");
  const Index n = b1 - b0;
  local.lengths.assign(global.lengths.begin() + b0, global.lengths.begin() + b1);
  const auto tensor = [&](const Tensor3<Scalar>& from, Tensor3<Scalar>& to, Index steps) {
    to.resize(steps, n, from.dimension(2));
    for (Index t = 0; t < steps; ++t)
      for (Index b = 0; b < n; ++b)
        for (Index k = 0; k < from.dimension(2); ++k) to(t, b, k) = from(t, b0 + b, k);
  };
  if (global.features.size() == 0) local.features.resize(0, 0, 0); else tensor(global.features, local.features, global.features.dimension(0));
  const Index T = local.max_time();
  // Time-major rows: entry (t, b) of a T·B array is at t·B + b.
  const auto rows = [&](const std::vector<int>& from, std::vector<int>& to) {
    to.resize(std::size_t(T * n));
    for (Index t = 0; t < T; ++t)
      for (Index b = 0; b < n; ++b) to[std::size_t(t * n + b)] = from[std::size_t(t * B + b0 + b)];
  };
  if (global.tokens.empty()) local.tokens.clear(); else rows(global.tokens, local.tokens);
  if (Index(global.labels.size()) == B)
    local.labels.assign(global.labels.begin() + b0, global.labels.begin() + b1);
  else if (global.labels.empty())
    local.labels.clear();
  else
    rows(global.labels, local.labels);
  if (global.targets.size() == 0) local.targets.resize(0, 0); else local.targets = global.targets.middleRows(b0, n);
  if (global.step_targets.size() == 0) local.step_targets.resize(0, 0, 0); else tensor(global.step_targets, local.step_targets, T);
}

/// \brief Copies rank 0's model to every rank: parameters, optimiser slots, training progress
/// and the dropout generator, through the bytes of a checkpoint of it. Collective.
/// \throws std::logic_error when the model has no optimiser yet.
/// \throws CheckpointError when a rank's model does not have rank 0's shape.
template <class Cell>
void broadcast_model(SequenceModel<Cell>& model, Communicator& comm) {
  using Scalar = typename Cell::Scalar;
  if (comm.size() <= 1) return;
  Checkpoint<Scalar> ckpt;
  model.add_to(ckpt);
  std::vector<unsigned char> bytes;
  if (comm.is_root()) bytes = ckpt.to_bytes(model.progress().step);
  std::uint64_t size = bytes.size();
  comm.broadcast(&size, sizeof size);
  bytes.resize(std::size_t(size));
  comm.broadcast(bytes.data(), bytes.size());
  if (!comm.is_root()) ckpt.load(safetensors::File::parse(std::move(bytes), "rank 0's model"));
}

/// \brief Rank 0 reads the checkpoint at `path` and every rank loads its bytes into
/// `checkpoint` (the file need only exist where rank 0 runs). Collective.
/// \return the saved training step.
/// \throws CheckpointError on every rank when rank 0 cannot read the file, or when it is not a
/// valid checkpoint for `checkpoint`.
template <class Scalar>
std::int64_t load_checkpoint_from_root(Checkpoint<Scalar>& checkpoint, const std::string& path, Communicator& comm) {
  if (comm.size() <= 1) return checkpoint.load(path);
  std::vector<unsigned char> bytes;
  std::string error;
  if (comm.is_root()) {
    try {
      bytes = safetensors::File::read_bytes(path);
    } catch (const CheckpointError& e) {
      error = e.problem() + " on rank 0";
      bytes.assign(error.begin(), error.end());
    }
  }
  // The status, the size, then the file or rank 0's message.
  std::uint64_t head[2] = {error.empty() ? 0u : 1u, bytes.size()};
  comm.broadcast(head, sizeof head);
  bytes.resize(std::size_t(head[1]));
  comm.broadcast(bytes.data(), bytes.size());
  if (head[0] != 0) throw CheckpointError(path, std::string(bytes.begin(), bytes.end()));
  return checkpoint.load(safetensors::File::parse(std::move(bytes), path));
}

/// \brief Combines each rank's Metrics over its share of an evaluation into the figures of
/// the whole: loss and accuracy weighted by each rank's count. Collective.
inline Metrics reduce_metrics(const Metrics& local, Communicator& comm) {
  if (comm.size() <= 1) return local;
  // A rank with an empty share has no accuracy either way; a classifier's other ranks do.
  const bool accuracy = local.accuracy >= 0;
  double sums[4] = {local.loss * double(local.count), accuracy ? local.accuracy * double(local.count) : 0.0,
                    double(local.count), accuracy ? 1.0 : 0.0};
  comm.allreduce_sum(sums, 4);
  Metrics total;
  total.count = Index(sums[2]);
  if (total.count > 0) {
    total.loss = sums[0] / sums[2];
    if (sums[3] > 0) total.accuracy = sums[1] / sums[2];
  }
  return total;
}

/// \brief SequenceModel::evaluate() over a dataset that every rank holds: each rank evaluates
/// its share (shard_of) and the figures are combined (reduce_metrics). Collective.
template <class Cell>
Metrics evaluate_over_ranks(SequenceModel<Cell>& model, const SequenceDataset<typename Cell::Scalar>& data,
                            Index batch_size, Communicator& comm) {
  const detail::Share share = shard_of(Index(data.size()), comm.rank(), comm.size());
  return reduce_metrics(model.evaluate(data, batch_size, std::size_t(share.begin), std::size_t(share.end)), comm);
}

}  // namespace dynrnn
