// dynrnn: a row-major matrix that keeps its storage when it shrinks.
//
// An Eigen::Matrix frees and reallocates its storage at every change of size. The packed
// buffers of a time loop hold one row per valid (row, step) pair, so their size follows
// the sum of the batch's lengths, which changes from batch to batch in training. A
// ReusableMatrix is an Eigen::Map over storage that only grows: once it has held the
// largest batch, resizing it for any other batch allocates nothing. Its storage comes from
// and returns to the buffer cache (buffer_cache.hpp), so that results created and dropped
// call after call reuse the same memory too. Growing leaves the values uninitialised, as
// Eigen's resize does.
//
// A ReusableMatrix may also view memory it does not own (view()). dynamic_rnn does so for
// the length of a call: an inference pass over a batch whose rows all run every step reads
// the caller's inputs and writes the result's outputs where they are, instead of copying
// them to and from the packed layout, which is then the same layout. A StackedCell's layers
// view the inputs and outputs next to them in the same cache, from one pass to the next.
#pragma once

#include "buffer_cache.hpp"
#include "check.hpp"
#include "types.hpp"

#include <cstddef>
#include <limits>
#include <new>
#include <string>
#include <utility>

namespace dynrnn {

/// \brief A row-major matrix whose storage only grows: resize() to a size no larger than
/// the largest it has had reuses the storage, where an Eigen::Matrix would reallocate.
///
/// It is an `Eigen::Map`, so it takes part in Eigen expressions like a Matrix: blocks, rows,
/// arithmetic, `Eigen::Ref` arguments. Assigning an expression resizes it to the
/// expression's shape first, as assigning to a Matrix does. The packed buffers of the
/// cells' caches and workspaces are ReusableMatrix objects.
///
/// \tparam Scalar element type.
///
/// \code
/// dynrnn::ReusableMatrix<float> m;
/// m.resize(300, 64);   // allocates
/// m.resize(120, 64);   // reuses the storage
/// m = dynrnn::Matrix<float>::Zero(200, 64);
/// \endcode
template <class Scalar>
class ReusableMatrix : public Eigen::Map<Matrix<Scalar>, Eigen::AlignedMax> {
 public:
  using Base = Eigen::Map<Matrix<Scalar>, Eigen::AlignedMax>;  ///< The view of the current shape.

  /// \brief An empty matrix, with no storage.
  ReusableMatrix() : Base(nullptr, 0, 0) {}
  /// \brief An uninitialised (rows, cols) matrix.
  /// \throws std::invalid_argument when a size is negative.
  ReusableMatrix(Index rows, Index cols) : Base(nullptr, 0, 0) { resize(rows, cols); }
  /// \brief A copy with storage of its own.
  ReusableMatrix(const ReusableMatrix& other) : Base(nullptr, 0, 0) { assign(other); }
  /// \brief Takes over `other`'s storage; `other` is left empty.
  ReusableMatrix(ReusableMatrix&& other) noexcept : Base(nullptr, 0, 0) { swap(other); }
  /// \brief Gives the storage back to the buffer cache.
  ~ReusableMatrix() { detail::BufferCache::instance().give(storage_); }
  /// \brief Copies `other`'s shape and elements.
  ReusableMatrix& operator=(const ReusableMatrix& other) {
    if (this != &other) assign(other);
    return *this;
  }
  /// \brief Exchanges storage with `other`.
  ReusableMatrix& operator=(ReusableMatrix&& other) noexcept {
    swap(other);
    return *this;
  }
  /// \brief Takes the shape and the values of an Eigen expression, which must not read
  /// this matrix.
  template <class Derived>
  ReusableMatrix& operator=(const Eigen::DenseBase<Derived>& other) {
    assign(other.derived());
    return *this;
  }

  /// \brief Gives the matrix the shape (rows, cols); allocates only when it holds more
  /// elements than it ever has. The values are unspecified afterwards. A view (view())
  /// stays one when it has at least rows · cols elements; otherwise it ends first.
  /// \throws std::invalid_argument when a size is negative.
  void resize(Index rows, Index cols) {
    detail::check_non_negative("ReusableMatrix::resize", "rows", rows);
    detail::check_non_negative("ReusableMatrix::resize", "cols", cols);
    const auto size = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
    if (cols != 0 && size / static_cast<std::size_t>(cols) != static_cast<std::size_t>(rows))
      throw std::bad_alloc();
    if (view_ && size <= view_size_) return reseat(rows, cols);
    view_ = nullptr;
    view_size_ = 0;
    if (size > capacity_of(storage_)) {
      if (size > std::numeric_limits<std::size_t>::max() / sizeof(Scalar)) throw std::bad_alloc();
      auto& cache = detail::BufferCache::instance();
      const Block grown = cache.take(size * sizeof(Scalar));  // the old values need not survive
      cache.give(storage_);
      storage_ = grown;
    }
    reseat(rows, cols);
  }

  /// \brief How many elements the storage holds, at least rows() * cols().
  Index capacity() const { return static_cast<Index>(capacity_of(storage_)); }

  /// \brief Exchanges shapes and storage (and views) with `other`.
  void swap(ReusableMatrix& other) noexcept {
    const Index rows = this->rows(), cols = this->cols();
    std::swap(storage_, other.storage_);
    std::swap(view_, other.view_);
    std::swap(view_size_, other.view_size_);
    reseat(other.rows(), other.cols());
    other.reseat(rows, cols);
  }

  /// \brief Makes the matrix a (rows, cols) view of `data`: rows · cols row-major elements
  /// that stay the caller's, who keeps them alive until end_view(). The matrix's own storage
  /// waits, untouched. A resize() within the view's size keeps the view. A larger resize()
  /// ends it, and so does assigning a matrix or an expression: a copy always gets storage of
  /// its own, and so does a copy of this matrix.
  /// \throws std::invalid_argument when a size is negative, or `data` is null and the view
  /// has elements.
  void view(Scalar* data, Index rows, Index cols) {
    detail::check_non_negative("ReusableMatrix::view", "rows", rows);
    detail::check_non_negative("ReusableMatrix::view", "cols", cols);
    const auto size = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
    if (!data && size > 0)
      detail::throw_argument("ReusableMatrix::view", "data", "memory for " + std::to_string(size) + " elements",
                             "a null pointer");
    view_ = data;
    view_size_ = data ? size : 0;
    reseat(rows, cols);
  }

  /// \brief Whether the matrix views memory it does not own (view()).
  bool is_view() const { return view_ != nullptr; }

  /// \brief Ends a view (view()) without allocating: the matrix is empty, (0, 0), in storage
  /// of its own again. Does nothing to a matrix that is not a view.
  void drop_view() noexcept {
    if (!view_) return;
    view_ = nullptr;
    view_size_ = 0;
    reseat(0, 0);
  }

  /// \brief Ends a view (view()): the matrix keeps its shape, in storage of its own again,
  /// with unspecified values; it allocates only when it never held that many elements. Does
  /// nothing to a matrix that is not a view.
  void end_view() {
    if (!view_) return;
    view_ = nullptr;
    view_size_ = 0;
    resize(this->rows(), this->cols());
  }

 private:
  using Block = detail::BufferCache::Block;

  static std::size_t capacity_of(const Block& block) { return block.bytes / sizeof(Scalar); }

  template <class Other>
  void assign(const Other& other) {
    view_ = nullptr;  // a copy has storage of its own
    view_size_ = 0;
    resize(other.rows(), other.cols());
    Base::operator=(other);
  }

  // Points the Map at the storage with a new shape: Eigen's documented way of changing
  // what a Map views, and what Eigen::Ref does to its own Map base.
  void reseat(Index rows, Index cols) noexcept {
    ::new (static_cast<Base*>(this)) Base(view_ ? view_ : static_cast<Scalar*>(storage_.data), rows, cols);
  }

  Block storage_;
  Scalar* view_ = nullptr;     // the memory viewed, or null
  std::size_t view_size_ = 0;  // its elements
};

namespace detail {

/// Makes `m` a view (ReusableMatrix::view()) of `from`'s elements in `from`'s shape, for
/// an object that reads another's packed operand without copying it (PackedRightGemm::share()
/// and the reduced-precision products' share()). `m` is only ever read while it views them:
/// the packing functions end the view (drop_view()) before they write.
template <class T>
void view_for_reading(ReusableMatrix<T>& m, const ReusableMatrix<T>& from) {
  m.view(const_cast<T*>(from.data()), from.rows(), from.cols());
}

/// Makes `m` a flat buffer (a column) of at least `size` elements, keeping its storage and
/// contents when it already holds that many: the reduced-precision products' workspaces.
template <class T>
void grow_flat(ReusableMatrix<T>& m, Index size) {
  if (m.size() < size) m.resize(size, 1);
}

}  // namespace detail
}  // namespace dynrnn
