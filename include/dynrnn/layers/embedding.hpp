// dynrnn: embedding lookup table.
//
// Dimensions: V vocabulary size, D embedding width, N looked-up ids.
//
// Ids are a flat list, so a time-major [T, B] id grid (id of row b at step t at
// index t*B + b) embeds straight into a [T, B, D] tensor for dynamic_rnn:
//
//   Tensor3<float> x = emb.forward_sequences(ids, T, B);
//
// Padded positions need a valid id (0 will do). dynamic_rnn never reads them and
// returns exactly zero gradient there, so they change nothing in training.
#pragma once

#include "../core/check.hpp"
#include "../core/random.hpp"
#include "../core/types.hpp"

#include <string>
#include <vector>

namespace dynrnn {

/// \brief Gradient of an Embedding's table.
/// \tparam Scalar element type.
template <class Scalar>
struct EmbeddingGradients {
  Matrix<Scalar> table;  ///< (V, D) dLoss/dtable.

  EmbeddingGradients() = default;
  /// \brief Zero gradient for a table of the given size.
  EmbeddingGradients(Index vocab_size, Index dim) : table(Matrix<Scalar>::Zero(vocab_size, dim)) {}
  /// \brief Sets the gradient to zero, keeping the shape.
  void setZero() { table.setZero(); }
};

/// \brief Lookup table mapping integer ids in [0, V) to rows of a (V, D) matrix.
///
/// \tparam Scalar `float` or `double`.
///
/// \code
/// dynrnn::Embedding<float> emb(/*vocab_size=*/2, /*dim=*/2);
/// dynrnn::Matrix<float> rows = emb.forward({0, 1, 1});      // (3, 2)
/// \endcode
template <class Scalar_>
class Embedding {
 public:
  using Scalar = Scalar_;                       ///< Element type.
  using Gradients = EmbeddingGradients<Scalar>; ///< Parameter gradient type.

  /// \brief Seed used by the constructor's initialisation.
  static constexpr std::uint64_t default_seed = 0xe3bed;

  /// \brief Creates a table drawn uniformly from [-0.05, 0.05) with Rng(default_seed)
  /// (Keras' default embedding initialiser).
  /// \param vocab_size V (> 0).
  /// \param dim D (> 0).
  Embedding(Index vocab_size, Index dim) {
    detail::check_positive("Embedding", "vocab_size", vocab_size);
    detail::check_positive("Embedding", "dim", dim);
    table_.resize(vocab_size, dim);
    Rng rng(default_seed);
    reset_parameters(rng);
  }

  /// \brief Redraws the table uniformly from [-0.05, 0.05).
  void reset_parameters(Rng& rng) { fill_uniform(table_, rng, 0.05); }

  Index vocab_size() const { return table_.rows(); }  ///< V.
  Index dim() const { return table_.cols(); }         ///< D.

  /// \brief The table, (V, D); row v is the embedding of id v.
  Matrix<Scalar>& table() { return table_; }
  const Matrix<Scalar>& table() const { return table_; }  ///< \copydoc table()

  /// \brief Calls `f(name, parameter)` for "table"; checkpoints use this.
  template <class F>
  void for_each_parameter(F&& f) {
    f("table", table_);
  }
  /// \brief The layer's kind and sizes, e.g. "Embedding(vocab_size=2, dim=2)".
  std::string description() const {
    return "Embedding(vocab_size=" + std::to_string(vocab_size()) + ", dim=" + std::to_string(dim()) + ")";
  }

  /// \brief Zero gradient shaped like the table.
  Gradients make_gradients() const { return Gradients(vocab_size(), dim()); }

  /// \brief Looks up each id.
  /// \param ids N ids, each in [0, V).
  /// \return (N, D), row n = table row ids[n].
  Matrix<Scalar> forward(const std::vector<int>& ids) const {
    Matrix<Scalar> y;
    forward(ids, y);
    return y;
  }

  /// \brief forward() into `y`, reusing its storage.
  void forward(const std::vector<int>& ids, Matrix<Scalar>& y) const {
    check_ids("Embedding::forward", ids);
    y.resize(static_cast<Index>(ids.size()), dim());
    lookup(ids, y);
  }

  /// \brief Looks up a time-major [T, B] grid of ids (id of row b at step t at t*B + b).
  /// \return [T, B, D], ready for dynamic_rnn.
  Tensor3<Scalar> forward_sequences(const std::vector<int>& ids, Index max_time, Index batch) const {
    Tensor3<Scalar> y;
    forward_sequences(ids, max_time, batch, y);
    return y;
  }

  /// \brief forward_sequences() into `y`, reusing its storage.
  void forward_sequences(const std::vector<int>& ids, Index max_time, Index batch, Tensor3<Scalar>& y) const {
    constexpr const char* fn = "Embedding::forward_sequences";
    check_grid(fn, ids, max_time, batch);
    check_ids(fn, ids);
    y.resize(max_time, batch, dim());  // reallocates only when the size changes
    auto flat = detail::as_matrix(y);
    lookup(ids, flat);
  }

  /// \brief Adds dLoss/dtable to `grads`: row ids[n] of the table receives dy row n.
  /// \param ids the ids forward() was given.
  /// \param dy (N, D) dLoss/d looked-up rows.
  /// \param grads gradient, added to.
  void backward(const std::vector<int>& ids, const Eigen::Ref<const Matrix<Scalar>>& dy,
                Gradients& grads) const {
    constexpr const char* fn = "Embedding::backward";
    check_ids(fn, ids);
    detail::check_shape(fn, "dy", dy, static_cast<Index>(ids.size()), dim());
    detail::check_shape(fn, "grads.table", grads.table, vocab_size(), dim());
    for (std::size_t n = 0; n < ids.size(); ++n) grads.table.row(ids[n]) += dy.row(Index(n));
  }

  /// \brief backward() for forward_sequences(): `dy` is [T, B, D], e.g. dynamic_rnn's input gradient.
  void backward_sequences(const std::vector<int>& ids, const Tensor3<Scalar>& dy, Gradients& grads) const {
    check_grid("Embedding::backward_sequences", ids, dy.dimension(0), dy.dimension(1));
    backward(ids, detail::as_matrix(dy), grads);
  }

 private:
  template <class Out>
  void lookup(const std::vector<int>& ids, Out& y) const {
    for (std::size_t n = 0; n < ids.size(); ++n) y.row(Index(n)) = table_.row(ids[n]);
  }

  void check_ids(const char* function, const std::vector<int>& ids) const {
    for (std::size_t n = 0; n < ids.size(); ++n)
      if (ids[n] < 0 || ids[n] >= vocab_size())
        detail::throw_argument(function, "ids", "in [0, " + std::to_string(vocab_size()) + ") (vocab_size)",
                               "ids[" + std::to_string(n) + "] = " + std::to_string(ids[n]));
  }

  static void check_grid(const char* function, const std::vector<int>& ids, Index max_time, Index batch) {
    if (static_cast<Index>(ids.size()) != max_time * batch)
      detail::throw_argument(function, "ids",
                             "of size max_time * batch = " + std::to_string(max_time * batch),
                             "size " + std::to_string(ids.size()));
  }

  Matrix<Scalar> table_;  // (V, D)
};

/// \brief Visits the (parameter, gradient) pair of an Embedding; optimisers use this.
template <class Scalar, class F>
void visit_parameters(Embedding<Scalar>& layer, const EmbeddingGradients<Scalar>& g, F&& f) {
  f(layer.table(), g.table);
}

/// \brief Calls f(gradient) for each parameter gradient of an Embedding (empty ones included);
/// clip_by_global_norm() and clip_by_value() use this.
template <class Scalar, class F>
void for_each_gradient(EmbeddingGradients<Scalar>& g, F&& f) {
  f(g.table);
}

}  // namespace dynrnn
