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
// Metadata ("__metadata__", strings): dynrnn.format, dynrnn.version, dynrnn.scalar,
// dynrnn.step, dynrnn.layer.<prefix> (e.g. "LSTMCell(input_size=2, hidden_size=64)"),
// and any entries of the program's own (Checkpoint::metadata()).
#pragma once

#include "../core/types.hpp"
#include "../core/version.hpp"
#include "../optim/rmsprop.hpp"
#include "atomic_file.hpp"
#include "safetensors.hpp"

#include <charconv>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
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
  /// \brief Value of the "dynrnn.format" metadata entry of files this version writes and reads.
  static constexpr const char* format = "dynrnn-checkpoint-1";

  /// \brief Registers every parameter of a layer or cell (anything with `for_each_parameter` and
  /// `description`) as "<prefix>/<parameter>".
  /// \throws std::invalid_argument when a resulting name is already registered.
  template <class Layer>
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

  /// \brief Registers an optimiser: its slots for every registered tensor (whenever registered)
  /// are stored as "<prefix>/<tensor>/<slot>".
  /// \throws std::invalid_argument when `prefix` is already registered.
  Checkpoint& add(const std::string& prefix, RMSProp<Scalar>& optimizer) {
    check_new_prefix(prefix);
    optimizers_.push_back({prefix, &optimizer});
    return *this;
  }

  /// \brief The program's own metadata, saved with the checkpoint and replaced by load(). Keys
  /// must not start with "dynrnn.".
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
      w.set_metadata(key, value);
    }
    w.set_metadata("dynrnn.format", format);
    w.set_metadata("dynrnn.version", version);
    w.set_metadata("dynrnn.scalar", safetensors::dtype_name(safetensors::dtype_of<Scalar>()));
    w.set_metadata("dynrnn.step", std::to_string(step));
    for (const Layer& l : layers_) w.set_metadata("dynrnn.layer." + l.prefix, l.description());
    for (const Tensor& t : tensors_) w.add(t.name, t.shape(), t.data(), t.size());
    for (const Optimizer& o : optimizers_)
      for (const Tensor& t : tensors_)
        for_each_slot(o, t, [&](const std::string& name, SlotArray& slot) {
          w.add(name, t.shape(), slot.data(), t.size());
        });
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
    const std::string step_text = entry(f, "dynrnn.step");
    std::int64_t step = 0;
    const char* end = step_text.data() + step_text.size();
    const auto parsed = std::from_chars(step_text.data(), end, step);
    if (step_text.empty() || parsed.ec != std::errc() || parsed.ptr != end)
      f.fail("metadata 'dynrnn.step' is '" + step_text + "', not an integer");
    for (const Layer& l : layers_) {
      const std::string saved = entry(f, "dynrnn.layer." + l.prefix), ours = l.description();
      if (saved != ours) f.fail("holds " + saved + " under '" + l.prefix + "', but the model has " + ours);
    }
    std::set<std::string> expected;
    for (const Tensor& t : tensors_) {
      f.check<Scalar>(t.name, t.shape());
      expected.insert(t.name);
    }
    for (const Optimizer& o : optimizers_)
      for (const Tensor& t : tensors_)
        for (const StoredSlot& slot : stored_slots(o)) {
          const std::string name = slot_name(o, t, slot);
          f.check<Scalar>(name, t.shape());
          expected.insert(name);
        }
    for (const auto& [name, info] : f.tensors())
      if (!expected.count(name)) f.fail("holds the unexpected tensor '" + name + "'");

    // Slots first: creating one can fail (a parameter resized since its last update) and
    // changes nothing a later update would see.
    for (const Optimizer& o : optimizers_)
      for (const Tensor& t : tensors_) for_each_slot(o, t, [](const std::string&, auto&) {});

    // Assignment; nothing below fails on a file that passed the checks.
    for (const Tensor& t : tensors_) f.read_into(t.name, t.shape(), t.data());
    for (const Optimizer& o : optimizers_)
      for (const Tensor& t : tensors_)
        for_each_slot(o, t, [&](const std::string& name, SlotArray& slot) {
          f.read_into(name, t.shape(), slot.data());
        });
    metadata_.clear();
    for (const auto& [key, value] : meta)
      if (key.rfind("dynrnn.", 0) != 0) metadata_[key] = value;
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
  struct Optimizer {
    std::string prefix;
    RMSProp<Scalar>* rmsprop;
  };

  static std::string entry(const safetensors::File& f, const std::string& key) {
    auto it = f.metadata().find(key);
    if (it == f.metadata().end()) f.fail("metadata '" + key + "' is missing (not a dynrnn checkpoint?)");
    return it->second;
  }

  using SlotArray = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  using SlotMember = SlotArray RMSProp<Scalar>::Slots::*;
  struct StoredSlot {
    const char* name;
    SlotMember member;
  };

  // The slots of `o` that carry state, and so are stored: the one list both the checks and
  // the assignments of load() and save() follow.
  static std::vector<StoredSlot> stored_slots(const Optimizer& o) {
    using Slots = typename RMSProp<Scalar>::Slots;
    std::vector<StoredSlot> slots{{"ms", &Slots::ms}};
    if (o.rmsprop->momentum_is_state()) slots.push_back({"mom", &Slots::mom});
    if (o.rmsprop->mean_gradient_is_state()) slots.push_back({"mg", &Slots::mg});
    return slots;
  }
  static std::string slot_name(const Optimizer& o, const Tensor& t, const StoredSlot& slot) {
    return o.prefix + "/" + t.name + "/" + slot.name;
  }

  // Calls f(name, slot array) for each stored slot of tensor t, creating the slots if needed.
  template <class F>
  void for_each_slot(const Optimizer& o, const Tensor& t, F&& f) const {
    auto& s = t.matrix ? o.rmsprop->slots(*t.matrix) : o.rmsprop->slots(*t.vector);
    for (const StoredSlot& slot : stored_slots(o)) f(slot_name(o, t, slot), s.*slot.member);
  }

  bool taken(const std::string& name) const {
    for (const Tensor& t : tensors_)
      if (t.name == name) return true;
    for (const Layer& l : layers_)
      if (l.prefix == name) return true;
    for (const Optimizer& o : optimizers_)
      if (o.prefix == name) return true;
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
  std::map<std::string, std::string> metadata_;
};

}  // namespace dynrnn
