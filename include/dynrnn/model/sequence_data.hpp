// dynrnn: the data a SequenceModel trains on: a padded batch of variable-length sequences,
// and a dataset of sequences that hands out such batches.
//
// Dimensions: T max_time (the longest length in the batch), B batch, I input features,
// K outputs (classes or regression targets). Everything is time-major, as dynamic_rnn is.
//
// A batch carries its inputs in one of two forms, whichever the model reads:
//   features  [T, B, I] dense inputs;
//   tokens    T·B ids, tokens[t·B + b], for a model that starts with an Embedding.
// and its targets in one of four, whichever the model's output predicts:
//   labels    B class ids (one per sequence), or T·B (one per step, time-major);
//   targets   (B, K) values (one row per sequence), or step_targets [T, B, K] (per step).
// Entries at padded steps (t >= lengths[b]) are never read.
#pragma once

#include "../core/check.hpp"
#include "../core/random.hpp"
#include "../core/types.hpp"

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace dynrnn {

/// \brief A padded, time-major batch of variable-length sequences and their targets; see the
/// file comment for which members a model reads.
/// \tparam Scalar element type.
template <class Scalar>
struct SequenceBatch {
  std::vector<int> lengths;      ///< B lengths, each in [0, T].
  Tensor3<Scalar> features;      ///< [T, B, I] dense inputs (models without an embedding).
  std::vector<int> tokens;       ///< T·B token ids, time-major (models with an embedding).
  std::vector<int> labels;       ///< B class ids, or T·B per step (classifiers).
  Matrix<Scalar> targets;        ///< (B, K) values (regression on the last step).
  Tensor3<Scalar> step_targets;  ///< [T, B, K] values (regression at every step).

  /// \brief B, the number of sequences.
  Index batch() const { return static_cast<Index>(lengths.size()); }
  /// \brief T, the padded length: the longest length, or the features' first dimension.
  Index max_time() const {
    if (features.size() > 0) return features.dimension(0);
    return lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
  }
};

/// \brief A set of variable-length sequences with their targets, from which fit() draws
/// shuffled batches.
///
/// Every sequence must have the same form: all token sequences or all feature sequences
/// (of one width), and all with a class label, per-step labels, a target row or per-step
/// targets. add() checks this.
/// \tparam Scalar element type.
///
/// \code
/// dynrnn::SequenceDataset<float> data;
/// data.add(std::vector<int>{1, 0, 1, 1}, 3);      // tokens, one class label
/// data.add(std::vector<int>{0, 1}, 1);
/// dynrnn::SequenceBatch<float> batch;
/// data.make_batch({1, 0}, batch);                  // T = 4, B = 2, padded
/// \endcode
template <class Scalar>
class SequenceDataset {
 public:
  /// \brief How a sequence's targets are given.
  enum class TargetKind { none, label, step_labels, values, step_values };

  /// \brief Adds a token sequence with one class label.
  void add(std::vector<int> tokens, int label) { add_tokens(std::move(tokens), {label}, TargetKind::label, {}); }
  /// \brief Adds a token sequence with a class label at every step.
  /// \throws std::invalid_argument when the counts differ.
  void add(std::vector<int> tokens, std::vector<int> step_labels) {
    check_count("step_labels", step_labels.size(), tokens.size());
    add_tokens(std::move(tokens), std::move(step_labels), TargetKind::step_labels, {});
  }
  /// \brief Adds a token sequence with K target values for the sequence.
  void add(std::vector<int> tokens, const Vector<Scalar>& target) {
    add_tokens(std::move(tokens), {}, TargetKind::values, as_row(target));
  }
  /// \brief Adds a token sequence with K target values at every step, (L, K).
  void add(std::vector<int> tokens, Matrix<Scalar> step_targets) {
    check_step_targets(step_targets, Index(tokens.size()));
    add_tokens(std::move(tokens), {}, TargetKind::step_values, std::move(step_targets));
  }
  /// \brief Adds a feature sequence (L, I) with one class label.
  void add(Matrix<Scalar> features, int label) { add_features(std::move(features), {label}, TargetKind::label, {}); }
  /// \brief Adds a feature sequence (L, I) with a class label at every step.
  void add(Matrix<Scalar> features, std::vector<int> step_labels) {
    check_count("step_labels", step_labels.size(), std::size_t(features.rows()));
    add_features(std::move(features), std::move(step_labels), TargetKind::step_labels, {});
  }
  /// \brief Adds a feature sequence (L, I) with K target values for the sequence.
  void add(Matrix<Scalar> features, const Vector<Scalar>& target) {
    add_features(std::move(features), {}, TargetKind::values, as_row(target));
  }
  /// \brief Adds a feature sequence (L, I) with K target values at every step, (L, K).
  void add(Matrix<Scalar> features, Matrix<Scalar> step_targets) {
    check_step_targets(step_targets, features.rows());
    add_features(std::move(features), {}, TargetKind::step_values, std::move(step_targets));
  }

  /// \brief Number of sequences.
  std::size_t size() const { return examples_.size(); }
  /// \brief Whether the dataset holds token sequences (true) or feature sequences.
  bool has_tokens() const { return tokens_; }
  /// \brief I, the feature width (0 for token sequences or an empty dataset).
  Index feature_size() const { return feature_size_; }
  /// \brief How the targets are given.
  TargetKind target_kind() const { return kind_; }
  /// \brief The length of sequence `i`.
  int length(std::size_t i) const { return examples_.at(i).length; }

  /// \brief Fills `batch` with the sequences `indices`, in that order, padded to the longest;
  /// reuses the batch's storage.
  /// \throws std::invalid_argument for an index out of range.
  void make_batch(const std::vector<std::size_t>& indices, SequenceBatch<Scalar>& batch) const {
    constexpr const char* fn = "SequenceDataset::make_batch";
    const Index B = Index(indices.size());
    batch.lengths.resize(indices.size());
    Index T = 0;
    for (std::size_t k = 0; k < indices.size(); ++k) {
      if (indices[k] >= examples_.size())
        detail::throw_argument(fn, "indices", "< size() = " + std::to_string(examples_.size()),
                               std::to_string(indices[k]) + " at position " + std::to_string(k));
      batch.lengths[k] = examples_[indices[k]].length;
      T = std::max<Index>(T, batch.lengths[k]);
    }
    const Index K = kind_ == TargetKind::values || kind_ == TargetKind::step_values ? target_width_ : 0;
    if (tokens_) {
      batch.tokens.assign(std::size_t(T * B), 0);
      batch.features.resize(0, 0, 0);
    } else {
      batch.features.resize(T, B, feature_size_);
      batch.features.setZero();
      batch.tokens.clear();
    }
    batch.labels.assign(kind_ == TargetKind::label ? std::size_t(B)
                                                    : kind_ == TargetKind::step_labels ? std::size_t(T * B) : 0,
                        0);
    batch.targets.setZero(kind_ == TargetKind::values ? B : 0, K);
    batch.step_targets.resize(kind_ == TargetKind::step_values ? T : 0, kind_ == TargetKind::step_values ? B : 0, K);
    batch.step_targets.setZero();
    for (Index b = 0; b < B; ++b) {
      const Example& e = examples_[indices[std::size_t(b)]];
      for (Index t = 0; t < e.length; ++t) {
        if (tokens_) {
          batch.tokens[std::size_t(t * B + b)] = e.tokens[std::size_t(t)];
        } else {
          for (Index i = 0; i < feature_size_; ++i) batch.features(t, b, i) = e.features(t, i);
        }
        if (kind_ == TargetKind::step_labels) batch.labels[std::size_t(t * B + b)] = e.labels[std::size_t(t)];
        if (kind_ == TargetKind::step_values)
          for (Index k = 0; k < K; ++k) batch.step_targets(t, b, k) = e.targets(t, k);
      }
      if (kind_ == TargetKind::label) batch.labels[std::size_t(b)] = e.labels[0];
      if (kind_ == TargetKind::values) batch.targets.row(b) = e.targets.row(0);
    }
  }

  /// \brief The whole dataset as one batch, in order (for evaluation and prediction).
  SequenceBatch<Scalar> all() const {
    std::vector<std::size_t> indices(size());
    for (std::size_t i = 0; i < indices.size(); ++i) indices[i] = i;
    SequenceBatch<Scalar> batch;
    make_batch(indices, batch);
    return batch;
  }

 private:
  struct Example {
    int length = 0;
    std::vector<int> tokens;   // L ids (token sequences)
    Matrix<Scalar> features;   // (L, I) (feature sequences)
    std::vector<int> labels;   // 1 or L class ids
    Matrix<Scalar> targets;    // (1, K) or (L, K) values
  };

  static void check_count(const char* argument, std::size_t count, std::size_t length) {
    if (count != length)
      detail::throw_argument("SequenceDataset::add", argument, "one per step, " + std::to_string(length),
                             std::to_string(count));
  }

  static Matrix<Scalar> as_row(const Vector<Scalar>& target) {
    if (target.size() == 0) detail::throw_argument("SequenceDataset::add", "target", "K > 0 values", "none");
    return target.transpose();
  }

  static void check_step_targets(const Matrix<Scalar>& targets, Index length) {
    if (targets.rows() != length || targets.cols() == 0)
      detail::throw_argument("SequenceDataset::add", "step_targets",
                             "(" + std::to_string(length) + ", K) with K > 0, one row per step",
                             detail::shape_string({targets.rows(), targets.cols()}));
  }

  void check_form(bool tokens, Index features, TargetKind kind, Index width) {
    constexpr const char* fn = "SequenceDataset::add";
    if (examples_.empty()) {
      tokens_ = tokens;
      feature_size_ = features;
      kind_ = kind;
      target_width_ = width;
      return;
    }
    if (tokens != tokens_)
      detail::throw_argument(fn, tokens ? "tokens" : "features",
                             std::string("of the dataset's form, ") + (tokens_ ? "token sequences" : "feature sequences"),
                             tokens ? "a token sequence" : "a feature sequence");
    if (!tokens && features != feature_size_)
      detail::throw_argument(fn, "features", "of width " + std::to_string(feature_size_), std::to_string(features));
    if (kind != kind_ || width != target_width_)
      detail::throw_argument(fn, "targets", "of the form of the dataset's first sequence", "another form");
  }

  void add_tokens(std::vector<int> tokens, std::vector<int> labels, TargetKind kind, Matrix<Scalar> targets) {
    check_form(true, 0, kind, targets.cols());
    Example e;
    e.length = int(tokens.size());
    e.tokens = std::move(tokens);
    append(std::move(e), std::move(labels), std::move(targets));
  }

  void add_features(Matrix<Scalar> features, std::vector<int> labels, TargetKind kind, Matrix<Scalar> targets) {
    if (features.cols() == 0)
      detail::throw_argument("SequenceDataset::add", "features", "(L, I) with I > 0",
                             detail::shape_string({features.rows(), features.cols()}));
    check_form(false, features.cols(), kind, targets.cols());
    Example e;
    e.length = int(features.rows());
    e.features = std::move(features);
    append(std::move(e), std::move(labels), std::move(targets));
  }

  void append(Example&& e, std::vector<int>&& labels, Matrix<Scalar>&& targets) {
    e.labels = std::move(labels);
    e.targets = std::move(targets);
    examples_.push_back(std::move(e));
  }

  std::vector<Example> examples_;
  bool tokens_ = false;
  Index feature_size_ = 0;
  TargetKind kind_ = TargetKind::none;
  Index target_width_ = 0;
};

}  // namespace dynrnn
