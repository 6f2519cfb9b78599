// dynrnn: gradients summed over the ranks of a data-parallel job, in a few large buckets.
//
// One allreduce per parameter tensor would pay the collective's latency a dozen times a step;
// GradientBuckets copies the gradients into a few contiguous buckets of at most
// `bucket_bytes` and sums each with one call (as Horovod's tensor fusion and PyTorch DDP's
// buckets do):
//
//   buckets.begin(weight);           // a new round; every gradient is packed times `weight`
//   buckets.add(d_head);             // gradient structs or Eigen objects, in the order they
//   buckets.start(comm);             //   are ready; start() sends what is packed so far, so
//   buckets.add(d_cell, d_embed);    //   that its sum overlaps the backward pass still to run
//   buckets.finish(comm, extras, n); // sends the rest, with n extra scalars, and waits
//   buckets.unpack(scale);           // every gradient = its sum over the ranks · scale
//
// The weight and the scale make a mean of per-rank means: each rank packs its gradient times
// the number of samples it averaged over, the extras carry those numbers, and the sums are
// scaled by one over their total. Buffers are kept from round to round: once the gradients
// have their shapes, a round allocates nothing.
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"
#include "../optim/clip.hpp"
#include "communicator.hpp"

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

namespace dynrnn {

/// \brief Sums gradients over the ranks in a few large buckets; see the file comment.
/// \tparam Scalar element type of the gradients.
template <class Scalar>
class GradientBuckets {
 public:
  /// \brief Buckets of at most `bucket_bytes` (the last may hold a few extra scalars).
  /// \throws std::invalid_argument unless bucket_bytes holds at least one Scalar.
  explicit GradientBuckets(std::size_t bucket_bytes = std::size_t(16) << 20)
      : capacity_(Index(bucket_bytes / sizeof(Scalar))) {
    if (capacity_ < 1)
      detail::throw_argument("GradientBuckets", "bucket_bytes", ">= " + std::to_string(sizeof(Scalar)),
                             std::to_string(bucket_bytes));
  }

  /// \brief Starts a round: gradients added from now on are packed times `weight`.
  void begin(Scalar weight) {
    weight_ = weight;
    pieces_.clear();
    used_ = 0;
    fill_ = 0;
    sent_ = 0;
  }

  /// \brief Packs every parameter gradient of `grads` (gradient structs of the library's
  /// layers and cells, or contiguous Eigen objects) into the buckets.
  template <class... Grads>
  void add(Grads&... grads) {
    const auto pack = [this](auto& g) {
      using G = std::decay_t<decltype(g)>;
      static_assert(std::is_base_of_v<Eigen::PlainObjectBase<G>, G>, "gradients must be Matrix, Vector or Array objects");
      add_tensor(g.data(), g.size());
    };
    (detail::for_each_gradient_tensor(grads, pack), ...);
  }

  /// \brief Starts summing every bucket packed since the last start(); later gradients go to
  /// new buckets.
  void start(Communicator& comm) {
    if (fill_ > 0) close();
    for (; sent_ < used_; ++sent_) comm.start_allreduce_sum(buckets_[std::size_t(sent_)].data(), sizes_[std::size_t(sent_)]);
  }

  /// \brief Appends `extras` (n scalars, summed with the gradients and written back) to the
  /// last bucket, starts every bucket not yet started and waits for all of them.
  void finish(Communicator& comm, Scalar* extras, Index n) {
    if (fill_ > 0 || n > 0) {
      Vector<Scalar>& b = bucket(capacity_ + n);
      std::copy(extras, extras + n, b.data() + fill_);
      fill_ += n;
      close();
    }
    start(comm);
    comm.wait_all();
    if (n > 0) {
      const Vector<Scalar>& last = buckets_[std::size_t(used_ - 1)];
      std::copy(last.data() + sizes_[std::size_t(used_ - 1)] - n, last.data() + sizes_[std::size_t(used_ - 1)], extras);
    }
  }

  /// \brief Writes every gradient back as its sum over the ranks times `scale`.
  void unpack(Scalar scale) {
    for (const Piece& p : pieces_) {
      const Scalar* from = buckets_[std::size_t(p.bucket)].data() + p.offset;
      Eigen::Map<Vector<Scalar>>(p.data, p.size) = scale * Eigen::Map<const Vector<Scalar>>(from, p.size);
    }
  }

  /// \brief Buckets summed in the last round.
  Index buckets() const { return used_; }

 private:
  struct Piece {
    Scalar* data;   // the gradient's elements
    Index size;
    Index bucket;   // where they are packed
    Index offset;
  };

  // The open bucket, made ready for `elements` in all.
  Vector<Scalar>& bucket(Index elements) {
    if (std::size_t(used_) == buckets_.size()) {
      buckets_.emplace_back();
      sizes_.push_back(0);
    }
    Vector<Scalar>& b = buckets_[std::size_t(used_)];
    if (b.size() < elements) {
      Vector<Scalar> grown(elements);
      grown.head(fill_) = b.head(fill_);
      b.swap(grown);
    }
    return b;
  }

  void close() {
    sizes_[std::size_t(used_)] = fill_;
    ++used_;
    fill_ = 0;
  }

  void add_tensor(Scalar* data, Index size) {
    for (Index done = 0; done < size;) {
      Vector<Scalar>& b = bucket(capacity_);
      const Index n = std::min(size - done, capacity_ - fill_);
      Eigen::Map<Vector<Scalar>>(b.data() + fill_, n) = weight_ * Eigen::Map<const Vector<Scalar>>(data + done, n);
      pieces_.push_back({data + done, n, used_, fill_});
      fill_ += n;
      done += n;
      if (fill_ == capacity_) close();
    }
  }

  Index capacity_;                        // scalars in a bucket
  Scalar weight_ = Scalar(1);
  std::vector<Vector<Scalar>> buckets_;   // kept from round to round
  std::vector<Index> sizes_;              // scalars packed in each bucket this round
  std::vector<Piece> pieces_;             // where each gradient's elements went
  Index used_ = 0;                        // buckets closed this round
  Index fill_ = 0;                        // scalars in the open bucket
  Index sent_ = 0;                        // buckets whose sums were started
};

}  // namespace dynrnn
