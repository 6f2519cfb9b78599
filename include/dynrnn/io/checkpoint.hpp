// dynrnn: training checkpoints in the safetensors format.
//
// A Checkpoint is a list of named references to a program's parameters (layers,
// cells, single tensors) and optimisers. save() writes all of them, the training
// step and metadata to one file, atomically (see atomic_file.hpp); load() reads a
// file back into the same references after checking every tensor against them,
// so that a failed load changes nothing.
//
// Tensor names in the file, for `ckpt.add("lstm", cell).add("opt", rmsprop)`:
//
//   lstm/kernel            (I+H, 4H)   the cell's parameters, from for_each_parameter()
//   lstm/bias              (4H)
//   opt/lstm/kernel/ms     (I+H, 4H)   RMSProp's mean square for lstm/kernel
//   opt/lstm/kernel/mom                momentum buffer, when momentum > 0
//   opt/lstm/kernel/mg                 mean gradient, when centered
//
// Any optimiser stores the slots that carry state under its own slot names (Adam's
// "m", "v", "vmax"; SGD's "momentum"; Adagrad's "sum"; see optimizer.hpp).
//
// Metadata ("__metadata__", strings): dynrnn.format, dynrnn.version, dynrnn.scalar,
// dynrnn.step, dynrnn.layer.<prefix> (e.g. "LSTMCell(input_size=2, hidden_size=64)"),
// dynrnn.updates.<optimiser prefix>/<tensor> (the updates that parameter has had, for the
// optimisers whose rule counts them: Adam, AdamW, SGD, Adagrad), the entries
// "<prefix>.<key>" of each object registered with add_state() (a SequenceModel's training
// progress), and any entries of the program's own (Checkpoint::metadata()).
#pragma once

#include "../core/types.hpp"
#include "../core/version.hpp"
#include "../optim/optimizer.hpp"
#include "atomic_file.hpp"
#include "safetensors.hpp"

#include <charconv>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace dynrnn {

/// \brief Saves and restores parameters, optimiser slots, the training step and metadata.
///
/// \tparam Scalar element type of the registered parameters.
///
/// \code
/// dynrnn::Checkpoint<float> ckpt;
/// ckpt.add("lstm", cell).add("output", dense).add("rmsprop", optimizer);
/// ckpt.save("model.safetensors", step);             // atomic: old file or new, never half
/// std::int64_t step = ckpt.load("model.safetensors"); // all checks first, then assigns
/// \endcode
///
/// The checkpoint refers to the registered objects, which must outlive it.
template <class Scalar>
class Checkpoint {
 public:
  /// \brief Whether T is one of the library's optimisers (built on OptimizerBase).
  template <class T>
  static constexpr bool is_optimizer = std::is_base_of_v<detail::OptimizerTag<Scalar>, T>;

  /// \brief Value of the "dynrnn.format" metadata entry of files this version writes and reads.
  static constexpr const char* format = "dynrnn-checkpoint-1";

  /// \brief Registers every parameter of a layer or cell (anything with `for_each_parameter` and
  /// `description`) as "<prefix>/<parameter>".
  /// \throws std::invalid_argument when a resulting name is already registered.
  template <class Layer, std::enable_if_t<!is_optimizer<Layer>, int> = 0>
  Checkpoint& add(const std::string& prefix, Layer& layer) {
    check_new_prefix(prefix);
    layers_.push_back({prefix, [&layer] { return layer.description(); }});
    layer.for_each_parameter([&](const char* name, auto& param) { add(prefix + "/" + name, param); });
    return *this;
  }

  /// \brief Registers one matrix, stored as a 2-D tensor.
  /// \throws std::invalid_argument when `name` is already registered or empty.
  Checkpoint& add(const std::string& name, Matrix<Scalar>& m) {
    check_new_name(name);
    tensors_.push_back({name, &m, nullptr});
    return *this;
  }
  /// \brief Registers one vector, stored as a 1-D tensor.
  /// \throws std::invalid_argument when `name` is already registered or empty.
  Checkpoint& add(const std::string& name, Vector<Scalar>& v) {
    check_new_name(name);
    tensors_.push_back({name, nullptr, &v});
    return *this;
  }

  /// \brief Registers an optimiser (RMSProp, Adam, AdamW, SGD, Adagrad): the slots that carry
  /// state, for every registered tensor (whenever registered), are stored as
  /// "<prefix>/<tensor>/<slot>", with each parameter's update count where the rule uses it.
  /// \throws std::invalid_argument when `prefix` is already registered.
  template <class Opt, std::enable_if_t<is_optimizer<Opt>, int> = 0>
  Checkpoint& add(const std::string& prefix, Opt& optimizer) {
    check_new_prefix(prefix);
    Optimizer o;
    o.prefix = prefix;
    o.counts_updates = Opt::counts_updates;
    const SlotNames names = optimizer.slot_names();
    for (int k = 0; k < 3; ++k)
      if (names[k] && optimizer.slot_is_state(k)) o.stored.push_back({names[k], k});
    o.slots = [&optimizer](const Tensor& t) -> OptimizerSlots<Scalar>& {
      return t.matrix ? optimizer.slots(*t.matrix) : optimizer.slots(*t.vector);
    };
    optimizers_.push_back(std::move(o));
    return *this;
  }

  /// \brief Metadata entries: key to value.
  using Metadata = std::map<std::string, std::string>;
  /// \brief Writes an object's state as metadata entries "<prefix>.<key>".
  using SaveState = std::function<void(Metadata& entries, const std::string& prefix)>;
  /// \brief Reads an object's state back from the file's metadata: with `assign` false it only
  /// checks, and returns what is wrong ("" when nothing is); with `assign` true it assigns.
  using LoadState = std::function<std::string(const Metadata& entries, const std::string& prefix, bool assign)>;

  /// \brief Registers state that is not a tensor (counters, generator states) under `prefix`:
  /// `save` adds its entries when the checkpoint is written, and `load` checks them with the
  /// rest of the file and assigns them with the rest. Entry keys must start with "<prefix>.".
  /// \throws std::invalid_argument when `prefix` is already registered.
  Checkpoint& add_state(const std::string& prefix, SaveState save, LoadState load) {
    check_new_prefix(prefix);
    states_.push_back({prefix, std::move(save), std::move(load)});
    return *this;
  }

  /// \brief The program's own metadata, saved with the checkpoint and replaced by load(). Keys
  /// must not start with "dynrnn." nor with the prefix of an add_state() registration.
  std::map<std::string, std::string>& metadata() { return metadata_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  ///< \copydoc metadata()

  /// \brief The checkpoint as a safetensors file in memory, with `step` as the training step.
  /// Creates optimiser slots (with their starting values) for parameters that have none yet.
  /// \throws std::invalid_argument when a metadata key starts with "dynrnn.".
  std::vector<unsigned char> to_bytes(std::int64_t step) {
    safetensors::Writer w;
    for (const auto& [key, value] : metadata_) {
      if (key.rfind("dynrnn.", 0) == 0)
        throw std::invalid_argument("dynrnn::Checkpoint::save: argument 'metadata' must not use keys starting with "
                                    "'dynrnn.', got '" + key + "'");
      if (const State* state = state_of(key))
        throw std::invalid_argument("dynrnn::Checkpoint::save: argument 'metadata' must not use keys starting with '" +
                                    state->prefix + ".' (registered with add_state), got '" + key + "'");
      w.set_metadata(key, value);
    }
    for (const State& state : states_) {
      Metadata entries;
      state.save(entries, state.prefix);
      for (const auto& [key, value] : entries) {
        if (state_of(key) != &state)
          throw std::logic_error("dynrnn::Checkpoint::save: the state registered as '" + state.prefix +
                                 "' wrote the key '" + key + "', which does not start with '" + state.prefix + ".'");
        w.set_metadata(key, value);
      }
    }
    w.set_metadata("dynrnn.format", format);
    w.set_metadata("dynrnn.version", version);
    w.set_metadata("dynrnn.scalar", safetensors::dtype_name(safetensors::dtype_of<Scalar>()));
    w.set_metadata("dynrnn.step", std::to_string(step));
    for (const Layer& l : layers_) w.set_metadata("dynrnn.layer." + l.prefix, l.description());
    for (const Tensor& t : tensors_) w.add(t.name, t.shape(), t.data(), t.size());
    for (const Optimizer& o : optimizers_)
      for (const Tensor& t : tensors_) {
        OptimizerSlots<Scalar>& s = o.slots(t);
        for (const StoredSlot& slot : o.stored) w.add(slot_name(o, t, slot), t.shape(), s.arrays[slot.index].data(), t.size());
        if (o.counts_updates) w.set_metadata(updates_key(o, t), std::to_string(s.step));
      }
    return w.bytes();
  }

  /// \brief Writes the checkpoint to `path` atomically (see atomic_file.hpp) with `step` as
  /// the training step.
  /// \throws CheckpointError when the file cannot be written; `path` is then unchanged.
  void save(const std::string& path, std::int64_t step) {
    const std::vector<unsigned char> bytes = to_bytes(step);
    write_file_atomically(path, bytes.data(), bytes.size());
  }

  /// \brief Reads `path` into the registered objects and returns the saved training step.
  /// Everything is checked before anything is assigned: the file's format, the layer
  /// descriptions, the presence, dtype (F32 or F64, converted to Scalar) and shape of every
  /// expected tensor, and the absence of any other tensor.
  /// \throws CheckpointError naming the file and the problem; the objects are then unchanged.
  std::int64_t load(const std::string& path) { return load(safetensors::File::read(path)); }

  /// \brief load() from an already parsed file.
  std::int64_t load(const safetensors::File& f) {
    // Checks.
    const auto& meta = f.metadata();
    const std::string fmt = entry(f, "dynrnn.format");
    if (fmt != format) f.fail("metadata 'dynrnn.format' is '" + fmt + "', expected '" + format + "'");
    const std::int64_t step = parse_int(f, "dynrnn.step", entry(f, "dynrnn.step"));
    for (const Layer& l : layers_) {
      const std::string saved = entry(f, "dynrnn.layer." + l.prefix), ours = l.description();
      if (saved != ours) f.fail("holds " + saved + " under '" + l.prefix + "', but the model has " + ours);
    }
    std::set<std::string> expected;
    for (const Tensor& t : tensors_) {
      f.check<Scalar>(t.name, t.shape());
      expected.insert(t.name);
    }
    std::vector<std::int64_t> updates;  // per (optimiser, tensor) that counts them, in order
    for (const Optimizer& o : optimizers_)
      for (const Tensor& t : tensors_) {
        for (const StoredSlot& slot : o.stored) {
          const std::string name = slot_name(o, t, slot);
          f.check<Scalar>(name, t.shape());
          expected.insert(name);
        }
        if (o.counts_updates) {
          const std::string key = updates_key(o, t);
          updates.push_back(parse_int(f, key, entry(f, key)));
          if (updates.back() < 0) f.fail("metadata '" + key + "' is negative");
        }
      }
    for (const auto& [name, info] : f.tensors())
      if (!expected.count(name)) f.fail("holds the unexpected tensor '" + name + "'");
    for (const State& state : states_) {
      const std::string problem = state.load(meta, state.prefix, false);
      if (!problem.empty()) f.fail(problem);
    }

    // Slots first: creating one can fail (a parameter resized since its last update) and
    // changes nothing a later update would see.
    for (const Optimizer& o : optimizers_)
      for (const Tensor& t : tensors_) o.slots(t);

    // Assignment; nothing below fails on a file that passed the checks.
    for (const Tensor& t : tensors_) f.read_into(t.name, t.shape(), t.data());
    std::size_t next_update = 0;
    for (const Optimizer& o : optimizers_)
      for (const Tensor& t : tensors_) {
        OptimizerSlots<Scalar>& s = o.slots(t);
        for (const StoredSlot& slot : o.stored) f.read_into(slot_name(o, t, slot), t.shape(), s.arrays[slot.index].data());
        if (o.counts_updates) s.step = updates[next_update++];
      }
    for (const State& state : states_) state.load(meta, state.prefix, true);
    metadata_.clear();
    for (const auto& [key, value] : meta)
      if (key.rfind("dynrnn.", 0) != 0 && !state_of(key)) metadata_[key] = value;
    return step;
  }

 private:
  struct Tensor {
    std::string name;
    Matrix<Scalar>* matrix;
    Vector<Scalar>* vector;
    Scalar* data() const { return matrix ? matrix->data() : vector->data(); }
    std::size_t size() const { return std::size_t(matrix ? matrix->size() : vector->size()); }
    std::vector<std::uint64_t> shape() const {
      if (matrix) return {std::uint64_t(matrix->rows()), std::uint64_t(matrix->cols())};
      return {std::uint64_t(vector->size())};
    }
  };
  struct Layer {
    std::string prefix;
    std::function<std::string()> description;
  };
  // A stored slot: its name in the file and its index in OptimizerSlots::arrays.
  struct StoredSlot {
    const char* name;
    int index;
  };
  struct Optimizer {
    std::string prefix;
    bool counts_updates = false;                                    // whether its rule uses Slots::step
    std::vector<StoredSlot> stored;                                 // the slots that carry state
    std::function<OptimizerSlots<Scalar>&(const Tensor&)> slots;    // a tensor's state, created if needed
  };

  struct State {
    std::string prefix;
    SaveState save;
    LoadState load;
  };

  // The add_state() registration whose entries `key` belongs to, or null.
  const State* state_of(const std::string& key) const {
    for (const State& state : states_)
      if (key.size() > state.prefix.size() && key.compare(0, state.prefix.size(), state.prefix) == 0 &&
          key[state.prefix.size()] == '.')
        return &state;
    return nullptr;
  }

  static std::string entry(const safetensors::File& f, const std::string& key) {
    auto it = f.metadata().find(key);
    if (it == f.metadata().end()) f.fail("metadata '" + key + "' is missing (not a dynrnn checkpoint?)");
    return it->second;
  }
  static std::int64_t parse_int(const safetensors::File& f, const std::string& key, const std::string& text) {
    std::int64_t value = 0;
    const char* end = text.data() + text.size();
    const auto parsed = std::from_chars(text.data(), end, value);
    if (text.empty() || parsed.ec != std::errc() || parsed.ptr != end)
      f.fail("metadata '" + key + "' is '" + text + "', not an integer");
    return value;
  }

  static std::string slot_name(const Optimizer& o, const Tensor& t, const StoredSlot& slot) {
    return o.prefix + "/" + t.name + "/" + slot.name;
  }
  static std::string updates_key(const Optimizer& o, const Tensor& t) {
    return "dynrnn.updates." + o.prefix + "/" + t.name;
  }

  bool taken(const std::string& name) const {
    for (const Tensor& t : tensors_)
      if (t.name == name) return true;
    for (const Layer& l : layers_)
      if (l.prefix == name) return true;
    for (const Optimizer& o : optimizers_)
      if (o.prefix == name) return true;
    for (const State& state : states_)
      if (state.prefix == name) return true;
    return false;
  }
  void check_new_name(const std::string& name) const {
    if (name.empty() || taken(name))
      throw std::invalid_argument("dynrnn::Checkpoint::add: argument 'name' must be a new, non-empty name, got '" +
                                  name + "'");
  }
  void check_new_prefix(const std::string& prefix) const {
    if (prefix.empty() || taken(prefix))
      throw std::invalid_argument("dynrnn::Checkpoint::add: argument 'prefix' must be a new, non-empty name, got '" +
                                  prefix + "'");
  }

  std::vector<Tensor> tensors_;
  std::vector<Layer> layers_;
  std::vector<Optimizer> optimizers_;
  std::vector<State> states_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dynrnn
