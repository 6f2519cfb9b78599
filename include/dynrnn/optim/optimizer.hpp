// dynrnn: what every optimiser shares.
//
// An optimiser updates parameters elementwise from their gradients and keeps, per
// parameter, up to three state arrays ("slots", e.g. Adam's m and v) and a count of the
// updates applied to it. OptimizerBase holds that state and the update loop; an optimiser
// (RMSProp, Adam, AdamW, SGD, Adagrad) adds its hyper-parameters and one elementwise rule:
//
//   struct Rule : OptimizerBase<Rule, Scalar, RuleOptions> {
//     static constexpr const char* name = "Rule";
//     static constexpr bool counts_updates;      // whether update() reads `step` (checkpoints keep it)
//     SlotNames slot_names() const;              // "m", "v", nullptr for an unused slot
//     bool slot_is_state(int k) const;           // whether checkpoints must keep slot k
//     Scalar slot_start(int k) const;            // the value slot k starts at
//     void update(theta, g, SlotBlocks& s, std::int64_t step) const;  // one block of entries
//   };
//
// Which parameter a state belongs to. The state of a parameter object (a Matrix or Vector,
// as layers hold them) is keyed by the object's address and remembers where its storage
// was; an expression (a Map or a block) is keyed by the address of its first element.
//   - Storage that moved under the same object (a parameter assigned from a temporary,
//     resized and resized back) is detected and keeps its state.
//   - An object that moved together with its storage (a layer moved into a container)
//     is recognised by its storage and keeps its state.
//   - A parameter whose shape changed is refused: its state no longer fits (reset()).
// Lookups are a scan over the parameters with state (a few dozen in a model), and nothing
// allocates once every parameter has its state.
#pragma once

#include "../core/check.hpp"
#include "../core/parallel.hpp"
#include "../core/types.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <string>
#include <type_traits>

namespace dynrnn {

/// \brief One parameter's optimiser state.
/// \tparam Scalar element type.
template <class Scalar>
struct OptimizerSlots {
  using Array = Eigen::Array<Scalar, Eigen::Dynamic, 1>;  ///< One slot's storage, flat.
  Index rows = 0;          ///< Rows of the parameter.
  Index cols = 0;          ///< Columns of the parameter.
  std::int64_t step = 0;   ///< Updates applied to this parameter (Adam's bias correction counts these).
  std::array<Array, 3> arrays;  ///< Slot k, flat in the parameter's storage order; empty when the optimiser does not use it.
};

/// \brief Names of an optimiser's three slots; nullptr marks a slot it does not use.
using SlotNames = std::array<const char*, 3>;

namespace detail {
/// Marks the library's optimisers of element type Scalar (Checkpoint::add tells them by it).
template <class Scalar>
struct OptimizerTag {};
}  // namespace detail

/// \brief The shared part of every optimiser: hyper-parameters, per-parameter state and the
/// update loop.
/// \tparam Derived the optimiser (CRTP).
/// \tparam Scalar element type of the parameters.
/// \tparam Options the optimiser's hyper-parameters, a struct with a `learning_rate` field.
template <class Derived, class Scalar, class Options>
class OptimizerBase : public detail::OptimizerTag<Scalar> {
 public:
  /// \brief Per-parameter state.
  using Slots = OptimizerSlots<Scalar>;

  /// \brief The hyper-parameters in force, with the current learning rate.
  const Options& options() const { return options_; }
  /// \brief The learning rate in force.
  Scalar learning_rate() const { return options_.learning_rate; }
  /// \brief Changes the learning rate from the next update on (schedules call this).
  /// \throws std::invalid_argument unless lr >= 0 and finite.
  void set_learning_rate(Scalar lr) {
    if (!detail::non_negative_finite(lr))  // the message is built only on failure: schedules call this every step
      detail::throw_argument((std::string(Derived::name) + "::set_learning_rate").c_str(), "lr", ">= 0 and finite",
                             detail::number_string(lr));
    options_.learning_rate = lr;
  }

  /// \brief Updates one parameter in place from its gradient.
  /// \param param any writable Eigen dense object with direct access (matrix, vector, array, block, map).
  /// \param grad  an Eigen dense object of the same shape.
  /// \throws std::invalid_argument when the shapes differ, or when `param` had another shape
  /// when its state was created.
  template <class P, class G>
  void apply(Eigen::DenseBase<P>& param, const Eigen::DenseBase<G>& grad) {
    static_assert(std::is_same_v<typename P::Scalar, Scalar>, "parameter scalar differs from the optimiser's");
    static_assert(std::is_same_v<typename G::Scalar, Scalar>, "gradient scalar differs from the optimiser's");
    detail::check_shape(apply_name(), "grad", grad, param.rows(), param.cols());
    if (param.size() == 0) return;
    Slots& s = slots(param);
    ++s.step;
    if constexpr (same_storage_order<P, G>()) {
      apply_flat(s, param.derived().data(), grad.derived().data(), param.size());
    } else {
      constexpr int order = P::IsRowMajor ? Eigen::RowMajor : Eigen::ColMajor;
      using Map = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic, order>>;
      const Index rows = param.rows(), cols = param.cols();
      // An unused slot maps no storage; the rule never reads it.
      const auto map = [&](int k) { return Map(s.arrays[k].data(), s.arrays[k].size() ? rows : 0, cols); };
      std::array<Map, 3> maps{map(0), map(1), map(2)};
      // Elementwise, so large parameters are updated a block of rows per thread.
      const Index chunk = std::max<Index>(1, kParallelChunk / std::max<Index>(cols, 1));
      const Index chunks = (rows + chunk - 1) / chunk;
      const Derived& rule = derived();
      const std::int64_t step = s.step;
      detail::for_each_row(chunks, chunks > 1, [&](Index c) {
        const Index r0 = c * chunk, n = std::min(chunk, rows - r0);
        const auto block = [&](int k) { return maps[k].middleRows(maps[k].rows() ? r0 : 0, maps[k].rows() ? n : 0); };
        std::array<decltype(block(0)), 3> blocks{block(0), block(1), block(2)};
        rule.update(param.derived().middleRows(r0, n).array(), grad.derived().middleRows(r0, n).array(), blocks, step);
      });
    }
  }

  /// \brief Updates every parameter of a layer or cell from a matching gradient struct, e.g.
  /// an LSTMCell with dynamic_rnn_backward's result, or a Dense with DenseGradients.
  template <class Layer, class Grads,
            class = std::enable_if_t<!std::is_base_of_v<Eigen::EigenBase<Layer>, Layer>>>
  void apply(Layer& layer, const Grads& grads) {
    visit_parameters(layer, grads, [this](auto& param, const auto& grad) { this->apply(param, grad); });
  }

  /// \brief The state of `param`, created with the optimiser's starting values if it has none.
  /// Checkpoints save and restore the optimiser through this.
  /// \throws std::invalid_argument when `param` had another shape when its state was created.
  template <class P>
  Slots& slots(Eigen::DenseBase<P>& param) {
    if (const Entry* found = locate(param)) {
      Entry* e = const_cast<Entry*>(found);  // one of our own entries; this call may change it
      e->object = object_of(param);           // follow the parameter to where it is now
      e->data = param.derived().data();
      return e->slots;
    }
    Entry& added = entries_.emplace_back();
    added.object = object_of(param);
    added.data = param.derived().data();
    added.slots.rows = param.rows();
    added.slots.cols = param.cols();
    const SlotNames names = derived().slot_names();
    for (int k = 0; k < 3; ++k)
      if (names[k]) added.slots.arrays[k].setConstant(param.size(), derived().slot_start(k));
    return added.slots;
  }

  /// \brief The state of `param`, or nullptr when it has none; never creates state.
  /// \throws std::invalid_argument when `param` had another shape when its state was created.
  template <class P>
  const Slots* find_slots(const Eigen::DenseBase<P>& param) const {
    const Entry* e = locate(param);
    return e ? &e->slots : nullptr;
  }

  /// \brief Forgets the state of every parameter, as for a fresh optimiser.
  void reset() { entries_.clear(); }
  /// \brief Number of parameters with state.
  std::size_t slot_count() const { return entries_.size(); }

 protected:
  /// \brief Checks and keeps `options`; the optimiser checks its own fields.
  explicit OptimizerBase(const Options& options) : options_(options) {
    detail::check_non_negative_finite(Derived::name, "learning_rate", options.learning_rate);
  }

  /// \brief Default options with the given learning rate.
  static Options with_learning_rate(Scalar lr) {
    Options o;
    o.learning_rate = lr;
    return o;
  }

  /// \brief Throws std::invalid_argument naming `argument` unless `value` lies in [lo, hi)
  /// (or [lo, hi] when `closed`).
  static void check_range(const char* argument, Scalar value, Scalar lo, Scalar hi, bool closed = false) {
    const bool ok = value >= lo && (closed ? value <= hi : value < hi);
    if (!ok)
      detail::throw_argument(Derived::name, argument,
                             "in [" + detail::number_string(lo) + ", " + detail::number_string(hi) + (closed ? "]" : ")"),
                             detail::number_string(value));
  }
  /// \brief Throws std::invalid_argument naming `argument` unless `value` is finite and >= 0.
  static void check_non_negative(const char* argument, Scalar value) {
    detail::check_non_negative_finite(Derived::name, argument, value);
  }

 private:
  static constexpr Index kParallelChunk = 1 << 16;  // entries per thread's block of rows

  // Whether param and grad are matrices, vectors or arrays of their own (every layer's
  // parameters and gradients) whose storage lists their entries in the same order.
  template <class P, class G>
  static constexpr bool same_storage_order() {
    if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<P>, P> && std::is_base_of_v<Eigen::PlainObjectBase<G>, G>)
      return bool(P::IsRowMajor) == bool(G::IsRowMajor) || P::IsVectorAtCompileTime || G::IsVectorAtCompileTime;
    else
      return false;
  }

  // apply() on storage in the same order, as flat arrays (a slot's storage has that order
  // too): each rule is compiled once for every plain parameter, whatever its shape or kind,
  // where blocks of rows would compile it once per parameter type. Entry by entry the same
  // formula, but not always the same bits as blocks of rows: Eigen's packet square root
  // (EIGEN_FAST_MATH) can differ by an ulp from its scalar one, and where a chunk starts
  // decides which entries take which. The chunks do not depend on the thread count.
  void apply_flat(Slots& s, Scalar* param, const Scalar* grad, Index size) {
    using Flat = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
    using ConstFlat = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
    const Index chunks = (size + kParallelChunk - 1) / kParallelChunk;
    const Derived& rule = derived();
    const std::int64_t step = s.step;
    detail::for_each_row(chunks, chunks > 1, [&](Index c) {
      const Index i0 = c * kParallelChunk, n = std::min(kParallelChunk, size - i0);
      // An unused slot maps no storage; the rule never reads it.
      const auto slot = [&](int k) { return s.arrays[k].size() ? Flat(s.arrays[k].data() + i0, n) : Flat(nullptr, 0); };
      std::array<Flat, 3> blocks{slot(0), slot(1), slot(2)};
      rule.update(Flat(param + i0, n), ConstFlat(grad + i0, n), blocks, step);
    });
  }

  struct Entry {
    const void* object = nullptr;  // the parameter object, or null for an expression
    const void* data = nullptr;    // where its storage was at the last lookup
    Slots slots;
  };

  const Derived& derived() const { return static_cast<const Derived&>(*this); }
  static const char* apply_name() {
    static const std::string n = std::string(Derived::name) + "::apply";
    return n.c_str();
  }

  // Matrix, Vector and Array objects have an identity of their own; maps and blocks do not.
  template <class P>
  static const void* object_of(const Eigen::DenseBase<P>& param) {
    if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<P>, P>)
      return &param.derived();
    else
      return nullptr;
  }

  // The entry of `param`, or null; checks that its shape still fits.
  template <class P>
  const Entry* locate(const Eigen::DenseBase<P>& param) const {
    const void* object = object_of(param);
    const void* data = param.derived().data();
    const Entry* match = nullptr;
    if (object)  // the same object, wherever its storage is now
      for (const Entry& e : entries_)
        if (e.object == object) match = &e;
    if (!match && data)  // the same storage, under this object or another (moved) one
      for (const Entry& e : entries_)
        if (e.data == data && (e.object == nullptr) == (object == nullptr)) match = &e;
    if (!match) return nullptr;
    if (match->slots.rows != param.rows() || match->slots.cols != param.cols())
      detail::throw_argument(apply_name(), "param",
                             "of shape " + detail::shape_string({match->slots.rows, match->slots.cols}) +
                                 " as when its optimiser state was created (call reset() after resizing parameters)",
                             detail::shape_string({param.rows(), param.cols()}));
    return match;
  }

  Options options_;
  std::deque<Entry> entries_;  // deque: a parameter's Slots stay where they are as others are added
};

}  // namespace dynrnn
