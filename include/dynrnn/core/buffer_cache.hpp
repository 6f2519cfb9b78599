// dynrnn: the cache of large buffers that keeps fresh results from costing fresh pages.
//
// The overloads that return a result (auto fwd = dynamic_rnn(cell, x, lengths)) build new
// packed buffers in every call, tens of megabytes at the larger shapes, and free them when
// the result goes out of scope. Handed straight back to the C library, such blocks are
// returned to the kernel (glibc maps every block above its mmap threshold afresh, and trims
// the top of its heap), so every call paid for mapping, faulting in and zeroing its pages
// again: 25-55% of a step at the benchmark shapes. Blocks of at least kMinCachedBytes go
// through this cache instead. A freed block waits here for the next request it fits, so a
// loop that creates and drops results of the same shapes reuses the same memory.
//
// Bounds: the cache never holds more than the most memory its blocks have ever had in use at
// once (a loop's working set, not more), nor more than set_buffer_cache_limit(). When a
// block given back does not fit within them, the blocks given back longest ago make room:
// a program whose shapes grow (small batches first, then large ones) keeps its new working
// set cached instead of the old one, which no request fits any more. It is one
// cache for the process, guarded by a mutex, so results may be created and destroyed on any
// thread. It changes nothing outside dynrnn: the C library's settings are untouched.
//
// The results' padded tensors (fwd.outputs, g.inputs: [T, B, H]) are Eigen::Tensors, which
// allocate from the C library themselves and take no allocator, so their memory cannot come
// from this cache. glibc gave such blocks back to the kernel too, depending on what else the
// program held on its heap: a training loop of `auto fwd = dynamic_rnn(...)` and
// `auto g = dynamic_rnn_backward(...)` in bfloat16 at the benchmarks' M shape took 47 ms a
// step against 26 with the results kept. So a result gives its padded tensor to a
// TensorPool when it is destroyed, and the next result of the same size takes it: the tensor
// object moves, with its memory. The pools count in cached_buffer_bytes(), obey
// set_buffer_cache_limit() and are emptied by release_cached_buffers().
#pragma once

#include "types.hpp"

#include <Eigen/Core>

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <utility>

namespace dynrnn {
namespace detail {

/// Process-wide cache of large aligned blocks (see the file comment).
class BufferCache {
 public:
  /// Smaller blocks go straight to the C library, which keeps them in its own free lists.
  static constexpr std::size_t kMinCachedBytes = std::size_t(64) << 10;
  /// A cached block serves a request of at least half its size, so that a small request
  /// does not take a large block that a large request would then miss.
  static constexpr std::size_t kMaxWaste = 2;

  /// A block of memory, aligned for Eigen's vectorised access.
  struct Block {
    void* data = nullptr;   ///< The memory, or null for an empty block.
    std::size_t bytes = 0;  ///< Its size, at least the size requested.
  };

  /// The process's cache. Never destroyed, so that results in static storage may still give
  /// their blocks back while the program exits.
  static BufferCache& instance() {
    static BufferCache* cache = new BufferCache;
    return *cache;
  }

  /// A block of at least `bytes` bytes: a cached block that fits, or a new one.
  /// \throws std::bad_alloc when memory runs out.
  Block take(std::size_t bytes) {
    if (bytes == 0) return {};
    if (bytes >= kMinCachedBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      std::size_t best = kSlots;
      for (std::size_t i = 0; i < kSlots; ++i) {
        const std::size_t size = slots_[i].block.bytes;
        if (slots_[i].block.data && size >= bytes && size / kMaxWaste <= bytes &&
            (best == kSlots || size < slots_[best].block.bytes))
          best = i;
      }
      if (best != kSlots) {
        const Block block = slots_[best].block;
        slots_[best] = {};
        cached_ -= block.bytes;
        note_in_use(block.bytes);
        return block;
      }
      note_in_use(bytes);
    }
    Block block{Eigen::internal::aligned_malloc(bytes), bytes};  // throws std::bad_alloc
    return block;
  }

  /// Takes back a block from take(): it is kept for a later request when the bounds allow
  /// it, after freeing the blocks given back longest ago if they must make room; it is freed
  /// when it alone exceeds the bounds.
  void give(Block block) noexcept {
    if (!block.data) return;
    if (block.bytes >= kMinCachedBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      in_use_ -= block.bytes;
      if (block.bytes <= bound()) {
        Slot* free_slot = nullptr;
        while (true) {
          Slot* oldest = nullptr;
          free_slot = nullptr;
          for (Slot& slot : slots_) {
            if (!slot.block.data)
              free_slot = &slot;
            else if (!oldest || slot.given < oldest->given)
              oldest = &slot;
          }
          if (free_slot && cached_ + block.bytes <= bound()) break;
          cached_ -= oldest->block.bytes;  // not null: the cache holds a block while it lacks room
          Eigen::internal::aligned_free(oldest->block.data);
          oldest->block = {};
        }
        *free_slot = {block, ++clock_};
        cached_ += block.bytes;
        return;
      }
    }
    Eigen::internal::aligned_free(block.data);
  }

  /// Frees every cached block; returns how many bytes that gave back.
  std::size_t release() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::size_t released = cached_;
    for (Slot& slot : slots_) {
      if (slot.block.data) Eigen::internal::aligned_free(slot.block.data);
      slot = {};
    }
    cached_ = 0;
    return released;
  }

  /// Bytes held in the cache, not in use.
  std::size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  /// The most bytes the cache may hold (set_limit()), without the bound by its peak use.
  std::size_t limit() {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_;
  }

  /// Sets the most bytes the cache may hold, freeing blocks until it holds no more.
  void set_limit(std::size_t bytes) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = bytes;
    for (Slot& slot : slots_) {
      if (cached_ <= bound()) break;
      if (!slot.block.data) continue;
      cached_ -= slot.block.bytes;
      Eigen::internal::aligned_free(slot.block.data);
      slot = {};
    }
  }

 private:
  static constexpr std::size_t kSlots = 64;

  struct Slot {
    Block block;             // empty when the slot is free
    std::uint64_t given = 0;  // when give() stored it, in calls of give() that stored a block
  };

  BufferCache() = default;

  std::size_t bound() const { return peak_in_use_ < limit_ ? peak_in_use_ : limit_; }
  void note_in_use(std::size_t bytes) {
    in_use_ += bytes;
    if (in_use_ > peak_in_use_) peak_in_use_ = in_use_;
  }

  std::mutex mutex_;
  std::array<Slot, kSlots> slots_{};
  std::uint64_t clock_ = 0;      // blocks stored by give() so far
  std::size_t cached_ = 0;       // bytes in slots_
  std::size_t in_use_ = 0;       // bytes of cacheable blocks handed out and not given back
  std::size_t peak_in_use_ = 0;  // the most in_use_ has been
  std::size_t limit_ = std::numeric_limits<std::size_t>::max();
};

/// Process-wide pool of the results' padded tensors (see the file comment), one per Scalar.
/// Its bounds are the buffer cache's: it holds no more than the most memory that tensors
/// sized through it have had in use at once, nor more than set_buffer_cache_limit(), and at
/// most kSlots tensors of at least BufferCache::kMinCachedBytes each. When a tensor given
/// back does not fit, the tensors given back longest ago make room.
template <class Scalar>
class TensorPool {
 public:
  /// How many tensors the pool holds at most: a bidirectional layer's forward and backward
  /// pass alone drop seven.
  static constexpr std::size_t kSlots = 32;

  /// The pool for Scalar. Never destroyed, so that results in static storage may still give
  /// their tensors back while the program exits.
  static TensorPool& instance() {
    static TensorPool* pool = new TensorPool;
    return *pool;
  }

  /// Resizes t to [d0, d1, d2]. When t does not already hold that many entries, it takes a
  /// pooled tensor that does, or allocates. The entries' values are unspecified.
  /// \throws std::bad_alloc when memory runs out.
  void resize(Tensor3<Scalar>& t, Index d0, Index d1, Index d2) {
    const Index size = d0 * d1 * d2;
    if (t.size() == size) {  // the same memory, perhaps in another shape
      t.resize(d0, d1, d2);
      return;
    }
    const std::size_t old_bytes = bytes_of(t.size()), bytes = bytes_of(size);
    const bool counted = bytes >= BufferCache::kMinCachedBytes;
    if (counted) {
      std::lock_guard<std::mutex> lock(mutex_);
      for (Slot& slot : slots_) {
        if (slot.tensor.size() != size) continue;
        cached_ -= bytes;
        std::swap(t, slot.tensor);        // moves the two tensors' memory, copies nothing
        slot.tensor = Tensor3<Scalar>();  // frees t's old memory, if it had any
        break;
      }
    }
    t.resize(d0, d1, d2);  // allocates only when it took no pooled tensor; may throw
    if (counted || old_bytes >= BufferCache::kMinCachedBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      not_in_use(old_bytes);  // freed by the swap or by t.resize()
      if (counted) {
        in_use_ += bytes;
        if (in_use_ > peak_in_use_) peak_in_use_ = in_use_;
      }
    }
  }

  /// Takes t's memory into the pool, leaving t empty, when it is large enough and fits the
  /// bounds; otherwise leaves t as it is.
  void give(Tensor3<Scalar>& t) noexcept {
    const std::size_t bytes = bytes_of(t.size());
    if (bytes < BufferCache::kMinCachedBytes) return;
    const std::size_t limit = BufferCache::instance().limit();  // before this pool's lock
    std::lock_guard<std::mutex> lock(mutex_);
    not_in_use(bytes);
    const std::size_t bound = peak_in_use_ < limit ? peak_in_use_ : limit;
    if (bytes > bound) return;
    while (true) {
      Slot* oldest = nullptr;
      Slot* free_slot = nullptr;
      for (Slot& slot : slots_) {
        if (slot.tensor.size() == 0)
          free_slot = &slot;
        else if (!oldest || slot.given < oldest->given)
          oldest = &slot;
      }
      if (free_slot && cached_ + bytes <= bound) {
        std::swap(free_slot->tensor, t);
        free_slot->given = ++clock_;
        cached_ += bytes;
        return;
      }
      drop(*oldest);  // not null: the pool holds a tensor while it lacks room
    }
  }

  /// Frees every pooled tensor; returns how many bytes that gave back.
  std::size_t release() noexcept { return trim(0); }

  /// Frees the tensors given back longest ago until the pool holds at most `bytes`; returns
  /// how many bytes that gave back.
  std::size_t trim(std::size_t bytes) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::size_t before = cached_;
    while (cached_ > bytes) {
      Slot* oldest = nullptr;
      for (Slot& slot : slots_)
        if (slot.tensor.size() != 0 && (!oldest || slot.given < oldest->given)) oldest = &slot;
      drop(*oldest);  // not null while cached_ > 0
    }
    return before - cached_;
  }

  /// Bytes held in the pool.
  std::size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

 private:
  struct Slot {
    Tensor3<Scalar> tensor;   // empty when the slot is free
    std::uint64_t given = 0;  // when give() stored it, in calls of give() that stored a tensor
  };

  TensorPool() = default;

  static std::size_t bytes_of(Index size) { return std::size_t(size) * sizeof(Scalar); }

  // A tensor of `bytes` leaves use. Small tensors are not counted, nor are tensors not sized
  // through resize() (a copied result's), hence the floor at 0.
  void not_in_use(std::size_t bytes) {
    if (bytes >= BufferCache::kMinCachedBytes) in_use_ = bytes < in_use_ ? in_use_ - bytes : 0;
  }

  void drop(Slot& slot) noexcept {
    cached_ -= bytes_of(slot.tensor.size());
    slot.tensor = Tensor3<Scalar>();  // a move: frees the tensor's memory
  }

  std::mutex mutex_;
  std::array<Slot, kSlots> slots_{};
  std::uint64_t clock_ = 0;      // tensors stored by give() so far
  std::size_t cached_ = 0;       // bytes in slots_
  std::size_t in_use_ = 0;       // bytes of tensors sized through resize() and not given back
  std::size_t peak_in_use_ = 0;  // the most in_use_ has been
};

}  // namespace detail

/// \brief Bytes that dynrnn keeps cached for later results: blocks that results and
/// workspaces no longer use, and the padded tensors of results destroyed (see
/// core/buffer_cache.hpp).
inline std::size_t cached_buffer_bytes() {
  return detail::BufferCache::instance().cached_bytes() + detail::TensorPool<float>::instance().cached_bytes() +
         detail::TensorPool<double>::instance().cached_bytes();
}

/// \brief Gives every cached block back to the C library, for a program that has finished
/// with dynrnn or is about to need its memory elsewhere. Later calls fill the cache again.
/// \return how many bytes were released.
///
/// \code
/// { auto fwd = dynrnn::dynamic_rnn(cell, x, lengths); /* ... */ }
/// dynrnn::release_cached_buffers();   // the freed result's blocks go back to the system
/// \endcode
inline std::size_t release_cached_buffers() {
  return detail::BufferCache::instance().release() + detail::TensorPool<float>::instance().release() +
         detail::TensorPool<double>::instance().release();
}

/// \brief Caps how many bytes the cache may hold; 0 turns caching off. Without a cap it holds
/// at most the most memory its blocks have ever been in use at once.
inline void set_buffer_cache_limit(std::size_t bytes) {
  detail::BufferCache::instance().set_limit(bytes);
  detail::TensorPool<float>::instance().trim(bytes);
  detail::TensorPool<double>::instance().trim(bytes);
}

}  // namespace dynrnn
