// dynrnn: SequenceModel, a whole recurrent network with its training step.
//
//   inputs ─► [Embedding] ─► recurrent cell (dynamic_rnn) ─► head (Dense) ─► loss
//
// Dimensions: T max_time, B batch, I the cell's input width, H the cell's output width,
// K outputs (classes or values), V vocabulary.
//
// - Inputs: dense features [T, B, I] (Input::features), or token ids through an
//   Embedding(V, I) (Input::tokens).
// - Recurrent part: any cell that dynamic_rnn runs: LSTMCell with its options, GRUCell,
//   RNNCell, StackedCell with dropout; or a BidirectionalStack, several bidirectional layers
//   each reading both directions of the one below. Dropout is on in train_step only.
// - Output: the last valid output of each sequence through Dense(H, K) (many-to-one), or
//   every valid step through it, padding masked (many-to-many); softmax cross-entropy on
//   class ids or mean squared error on values (Output).
// - Optimiser: any of the library's (RMSProp, Adam, AdamW, SGD, Adagrad), with optional
//   global-norm clipping and a learning-rate schedule.
//
// train_step() does exactly what a hand-written step with the buffer-reusing overloads does
// (forward, loss, backward, clipping, update), with every buffer kept in the model: after the
// first batch of a shape, a step allocates nothing. With a Communicator (set_communicator,
// distributed/), the step is one rank's share of a data-parallel step: the gradients are
// averaged over the ranks, weighted by the samples each rank's loss averaged over, before
// clipping and the update, so every rank applies the update one process would make on the
// whole global batch. evaluate() and predict() run the forward
// pass only, in inference mode. fit() (fit.hpp) runs epochs over a SequenceDataset.
#pragma once

#include "../cells/stacked_cell.hpp"
#include "../core/check.hpp"
#include "../core/random.hpp"
#include "../core/types.hpp"
#include "../distributed/communicator.hpp"
#include "../distributed/gradient_buckets.hpp"
#include "../io/checkpoint.hpp"
#include "../layers/dense.hpp"
#include "../layers/embedding.hpp"
#include "../losses/mean_squared_error.hpp"
#include "../losses/reduction.hpp"
#include "../losses/sequence_mean_squared_error.hpp"
#include "../losses/sequence_softmax_cross_entropy.hpp"
#include "../losses/softmax_cross_entropy.hpp"
#include "../optim/adagrad.hpp"
#include "../optim/adam.hpp"
#include "../optim/clip.hpp"
#include "../optim/rmsprop.hpp"
#include "../optim/sgd.hpp"
#include "../rnn/bidirectional_stack.hpp"
#include "../rnn/dynamic_rnn.hpp"
#include "../rnn/last_outputs.hpp"
#include "sequence_data.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace dynrnn {

/// \brief What a SequenceModel reads: dense features, or token ids through an embedding.
struct Input {
  Index size = 0;   ///< I, the features per step the cell reads (the embedding's width for tokens).
  Index vocab = 0;  ///< V for token inputs; 0 for dense features.

  /// \brief Dense features [T, B, size].
  static Input features(Index size) { return {size, 0}; }
  /// \brief Token ids in [0, vocab), looked up in an Embedding(vocab, dim).
  static Input tokens(Index vocab, Index dim) { return {dim, vocab}; }
};

/// \brief What a SequenceModel predicts and the loss it trains with.
struct Output {
  /// \brief Where the head reads the recurrent outputs.
  enum class Head {
    last_step,   ///< each sequence's last valid output (many-to-one)
    every_step,  ///< every valid step (many-to-many), padding masked
  };
  /// \brief The training loss.
  enum class Loss {
    softmax_cross_entropy,  ///< class ids, on logits
    mean_squared_error,     ///< values
  };

  Index size = 0;                                 ///< K, classes or values.
  Head head = Head::last_step;                    ///< \copybrief Head
  Loss loss = Loss::softmax_cross_entropy;        ///< \copybrief Loss
  Reduction reduction = Reduction::mean;          ///< How the batch loss is reduced.

  /// \brief One class in [0, classes) per sequence (SequenceBatch::labels, B of them).
  static Output classes(Index classes) { return {classes, Head::last_step, Loss::softmax_cross_entropy}; }
  /// \brief One class per valid step (SequenceBatch::labels, T·B time-major).
  static Output classes_per_step(Index classes) { return {classes, Head::every_step, Loss::softmax_cross_entropy}; }
  /// \brief `size` values per sequence (SequenceBatch::targets, (B, size)).
  static Output values(Index size) { return {size, Head::last_step, Loss::mean_squared_error}; }
  /// \brief `size` values per valid step (SequenceBatch::step_targets, [T, B, size]).
  static Output values_per_step(Index size) { return {size, Head::every_step, Loss::mean_squared_error}; }
};

/// \brief Any of the library's optimisers; SequenceModel::set_optimizer takes each of them.
template <class Scalar>
using AnyOptimizer = std::variant<RMSProp<Scalar>, Adam<Scalar>, AdamW<Scalar>, SGD<Scalar>, Adagrad<Scalar>>;

/// \brief Loss and, for classifiers, accuracy over a batch or a dataset.
struct Metrics {
  double loss = 0;       ///< Mean loss per sequence (last-step head) or per valid step (every step).
  double accuracy = -1;  ///< Share of correct argmax predictions; -1 for regression.
  Index count = 0;       ///< Sequences or valid steps the figures are over.
};

/// \brief Where training stands: saved in checkpoints so that fit() resumes exactly.
struct TrainingProgress {
  std::int64_t step = 0;           ///< Optimiser updates so far.
  std::int64_t epoch = 0;          ///< Completed epochs.
  std::int64_t batch_in_epoch = 0; ///< Batches of the current epoch already trained on.
  std::string epoch_rng;           ///< The shuffling generator's state at the start of the epoch.
  double best_validation = 0;      ///< Best validation loss so far (early stopping).
  std::int64_t epochs_without_improvement = 0;  ///< Epochs since it improved.
  bool has_best = false;           ///< Whether best_validation holds a value.
};

/// \brief How a SequenceModel sums its gradients over the ranks of a data-parallel job
/// (SequenceModel::set_communicator).
struct DataParallelOptions {
  /// Start summing the head's gradients while the recurrent part's backward pass still runs.
  bool overlap = true;
  /// Size of the buckets the gradients are copied into and summed in, one call each.
  std::size_t bucket_bytes = std::size_t(16) << 20;
};

namespace detail {
template <class T, class = void>
struct has_training_mode : std::false_type {};
template <class T>
struct has_training_mode<T, std::void_t<decltype(std::declval<T&>().set_training(true))>> : std::true_type {};

// How a SequenceModel runs its recurrent part: a cell through dynamic_rnn from the zero state.
template <class Cell>
struct RecurrentRunner {
  using Scalar = typename Cell::Scalar;
  using Result = DynamicRNNResult<Cell>;
  using Gradients = DynamicRNNGradients<Cell>;

  static Gradients make_gradients(const Cell& cell) { return Gradients(cell); }
  static const Tensor3<Scalar>& outputs(const Result& r) { return r.outputs; }
  void forward(const Cell& cell, const Tensor3<Scalar>& x, const std::vector<int>& lengths, Result& r,
               ForwardMode mode) {
    const Index B = x.dimension(1);
    if (rows != B) {
      zero = cell.zero_state(B);
      rows = B;
    }
    dynamic_rnn(cell, x, lengths, zero, r, mode);
  }
  void backward(const Cell& cell, const Result& r, const Tensor3<Scalar>& d_outputs, Gradients& g,
                InputGradients input_gradients) {
    dynamic_rnn_backward(cell, r, d_outputs, zero, g, input_gradients);
  }

  typename Cell::State zero;  // (B, H): the initial state and the final-state gradient
  Index rows = -1;            // B of zero
};

// A BidirectionalStack through its own forward and backward.
template <class Cell>
struct RecurrentRunner<BidirectionalStack<Cell>> {
  using Stack = BidirectionalStack<Cell>;
  using Scalar = typename Cell::Scalar;
  using Result = typename Stack::Result;
  using Gradients = typename Stack::Gradients;

  static Gradients make_gradients(const Stack& stack) { return stack.make_gradients(); }
  static const Tensor3<Scalar>& outputs(const Result& r) { return r.top(); }
  void forward(const Stack& stack, const Tensor3<Scalar>& x, const std::vector<int>& lengths, Result& r,
               ForwardMode mode) {
    stack.forward(x, lengths, r, mode);
  }
  void backward(const Stack& stack, const Result& r, const Tensor3<Scalar>& d_outputs, Gradients& g,
                InputGradients input_gradients) {
    stack.backward(r, d_outputs, g, input_gradients);
  }
};
}  // namespace detail

/// \brief A recurrent network for sequence classification or regression, with its optimiser
/// and its training step; see the file comment.
///
/// \tparam Cell a recurrent cell: LSTMCell<float>, GRUCell<double>, StackedCell<...>, ...
///
/// The model refers to its own members from checkpoints (add_to), so it is neither copied
/// nor moved.
///
/// \code
/// dynrnn::SequenceModel<dynrnn::LSTMCell<float>> model(
///     dynrnn::Input::tokens(2, 2), dynrnn::LSTMCell<float>(2, 64), dynrnn::Output::classes(15));
/// model.set_optimizer(dynrnn::Adam<float>(0.01f));
/// float loss = model.train_step(batch);         // a SequenceBatch<float>
/// dynrnn::Metrics m = model.evaluate(held_out);  // loss and accuracy
/// \endcode
template <class Cell>
class SequenceModel {
 public:
  using Scalar = typename Cell::Scalar;  ///< Element type.

  /// \brief A model with a new head Dense(H, K), all weights drawn from Rng(seed): the
  /// embedding, then the cell, then the head.
  /// \throws std::invalid_argument when the input does not fit the cell or a size is not positive.
  SequenceModel(const Input& input, Cell cell, const Output& output, std::uint64_t seed = 1)
      : SequenceModel(input, std::move(cell), Dense<Scalar>(positive_output(output), 1), output, seed, true) {}

  /// \brief A model with a given head (e.g. imported weights); nothing is redrawn.
  /// \throws std::invalid_argument when the head's input is not the cell's output width, its
  /// output not output.size, or the input does not fit the cell.
  SequenceModel(const Input& input, Cell cell, Dense<Scalar> head, const Output& output)
      : SequenceModel(input, std::move(cell), std::move(head), output, 0, false) {}

  SequenceModel(const SequenceModel&) = delete;
  SequenceModel& operator=(const SequenceModel&) = delete;

  /// \brief Chooses the optimiser (any of AnyOptimizer's). Its state starts empty; call it
  /// before add_to(), whose checkpoint then refers to it.
  template <class Optimizer>
  SequenceModel& set_optimizer(Optimizer optimizer) {
    static_assert(std::is_constructible_v<AnyOptimizer<Scalar>, Optimizer>,
                  "set_optimizer takes one of AnyOptimizer's optimisers, of the model's Scalar");
    if (registered_)
      throw std::logic_error("dynrnn::SequenceModel::set_optimizer: a checkpoint refers to the current optimizer "
                             "(add_to was called); choose the optimizer first");
    optimizer_.emplace(std::move(optimizer));
    // The update and the checkpoint entry are compiled for this optimiser alone.
    optimizer_index_ = optimizer_->index();
    update_ = &SequenceModel::update<Optimizer>;
    add_optimizer_ = &SequenceModel::add_optimizer<Optimizer>;
    return *this;
  }
  /// \brief Clips all gradients together to this global L2 norm before each update; 0: no clipping.
  /// \throws std::invalid_argument for a negative or NaN norm.
  SequenceModel& set_clip_norm(Scalar max_norm) {
    detail::check_non_negative_finite("SequenceModel::set_clip_norm", "max_norm", max_norm);
    clip_norm_ = max_norm;
    return *this;
  }
  /// \brief A learning-rate schedule, called with the update's step (0 for the first) before
  /// each update: StepDecay, CosineDecay, ... or any callable from std::int64_t to Scalar.
  template <class Schedule>
  SequenceModel& set_schedule(Schedule schedule) {
    schedule_ = [s = std::move(schedule)](std::int64_t step) { return Scalar(s(step)); };
    return *this;
  }

  /// \brief Makes train_step() a rank's share of a data-parallel step over `comm` (see the
  /// file comment); null goes back to one process. The model keeps the pointer: `comm` must
  /// outlive its use. This call communicates nothing: give every rank the same parameters
  /// first (broadcast_model() in distributed/data_parallel.hpp; fit() does it).
  SequenceModel& set_communicator(Communicator* comm, const DataParallelOptions& options = {}) {
    comm_ = comm && comm->size() > 1 ? comm : nullptr;
    if (options.bucket_bytes != parallel_options_.bucket_bytes) buckets_ = GradientBuckets<Scalar>(options.bucket_bytes);
    parallel_options_ = options;
    return *this;
  }
  /// \brief How train_step() sums gradients over the ranks.
  const DataParallelOptions& data_parallel_options() const { return parallel_options_; }
  /// \brief The communicator train_step() averages over, or null.
  Communicator* communicator() const { return comm_; }

  /// \brief One training step on `batch`: forward, loss, backward, clipping, update.
  /// \param stop with a communicator: on entry, whether this rank wants training to stop; on
  ///             return, whether any rank does (fit() stops every rank at the same step so).
  /// \return the batch loss (reduced as Output::reduction says); with a communicator, the
  /// loss of the global batch, the same on every rank.
  /// \throws std::invalid_argument when the batch does not fit the model (shapes, label count,
  /// a label out of range, lengths outside [0, T], or an empty share of a global batch); the
  /// model is then unchanged.
  /// \throws std::logic_error when no optimiser was chosen, or optimizer() was assigned an
  /// optimiser of another type than set_optimizer's.
  Scalar train_step(const SequenceBatch<Scalar>& batch, bool* stop = nullptr) {
    check_optimizer("train_step");
    if (comm_ && batch.batch() == 0)
      detail::throw_argument("SequenceModel::train_step", "batch", "at least one sequence on every rank", "0");
    set_training(true);
    Scalar loss = forward_loss(batch, "SequenceModel::train_step", ForwardMode::training);
    if (comm_) {
      // Mean losses are means over this rank's samples: weigh each rank by its count.
      const bool mean = output_.reduction == Reduction::mean;
      const Scalar weight = mean ? Scalar(local_count(batch)) : Scalar(1);
      buckets_.begin(weight);
      backward(batch, true);
      Scalar extras[3] = {weight, weight * loss, Scalar(stop && *stop ? 1 : 0)};
      buckets_.finish(*comm_, extras, 3);
      // No valid step on any rank: a zero loss and gradient, as one process computes then.
      const Scalar scale = !mean ? Scalar(1) : extras[0] > Scalar(0) ? Scalar(1) / extras[0] : Scalar(0);
      buckets_.unpack(scale);
      loss = extras[1] * scale;
      if (stop) *stop = extras[2] > Scalar(0);
    } else {
      backward(batch);
    }
    if (clip_norm_ > 0) clip();
    if (schedule_) {
      const Scalar lr = schedule_(progress_.step);
      std::visit([&](auto& opt) { opt.set_learning_rate(lr); }, *optimizer_);
    }
    (this->*update_)();
    ++progress_.step;
    return loss;
  }

  /// \brief Loss (and accuracy for classifiers) on one batch, in inference mode.
  /// \throws std::invalid_argument when the batch does not fit the model.
  Metrics evaluate(const SequenceBatch<Scalar>& batch) {
    set_training(false);
    Metrics m;
    m.loss = double(forward_loss(batch, "SequenceModel::evaluate", ForwardMode::inference));
    const bool ce = output_.loss == Output::Loss::softmax_cross_entropy;
    // Every-step losses count the valid steps they reduced over.
    m.count = output_.head == Output::Head::every_step ? (ce ? step_ce_.steps : step_mse_.steps) : batch.batch();
    if (output_.reduction == Reduction::sum && m.count > 0) m.loss /= double(m.count);
    if (ce) m.accuracy = accuracy(batch);
    return m;
  }

  /// \brief evaluate() over a whole dataset, in batches of `batch_size`: figures weighted by
  /// each batch's count.
  Metrics evaluate(const SequenceDataset<Scalar>& data, Index batch_size = 256) {
    return evaluate(data, batch_size, 0, data.size());
  }

  /// \brief evaluate() over the sequences [begin, end) of `data` (a rank's share, say).
  /// \throws std::invalid_argument unless begin <= end <= data.size().
  Metrics evaluate(const SequenceDataset<Scalar>& data, Index batch_size, std::size_t begin, std::size_t end) {
    detail::check_positive("SequenceModel::evaluate", "batch_size", batch_size);
    if (begin > end || end > data.size())
      detail::throw_argument("SequenceModel::evaluate", "end",
                             "in [begin, " + std::to_string(data.size()) + "] with begin <= end",
                             "begin " + std::to_string(begin) + ", end " + std::to_string(end));
    Metrics total;
    double loss = 0, correct = 0;
    std::vector<std::size_t> indices;
    for (std::size_t first = begin; first < end; first += std::size_t(batch_size)) {
      indices.clear();
      for (std::size_t i = first; i < std::min(end, first + std::size_t(batch_size)); ++i) indices.push_back(i);
      data.make_batch(indices, eval_batch_);
      const Metrics m = evaluate(eval_batch_);
      loss += m.loss * double(m.count);
      correct += m.accuracy * double(m.count);
      total.count += m.count;
    }
    if (total.count > 0) {
      total.loss = loss / double(total.count);
      if (output_.loss == Output::Loss::softmax_cross_entropy) total.accuracy = correct / double(total.count);
    }
    return total;
  }

  /// \brief The head's outputs for a last-step model: (B, K) logits (classifiers) or values.
  /// Targets in the batch are not needed. Runs in inference mode.
  /// \throws std::invalid_argument when the inputs do not fit, or the model predicts every step.
  Matrix<Scalar> predict(const SequenceBatch<Scalar>& batch) {
    if (output_.head != Output::Head::last_step)
      detail::throw_argument("SequenceModel::predict", "model", "a model with Output::Head::last_step",
                             "Output::Head::every_step (use predict_steps)");
    set_training(false);
    run_forward(batch, "SequenceModel::predict", ForwardMode::inference);
    return y_;
  }

  /// \brief The head's outputs at every step for an every-step model: [T, B, K], exactly 0
  /// at padded steps. Runs in inference mode.
  Tensor3<Scalar> predict_steps(const SequenceBatch<Scalar>& batch) {
    if (output_.head != Output::Head::every_step)
      detail::throw_argument("SequenceModel::predict_steps", "model", "a model with Output::Head::every_step",
                             "Output::Head::last_step (use predict)");
    set_training(false);
    run_forward(batch, "SequenceModel::predict_steps", ForwardMode::inference);
    Tensor3<Scalar> y = y_steps_;
    for (Index b = 0; b < y.dimension(1); ++b)
      for (Index t = batch.lengths[std::size_t(b)]; t < y.dimension(0); ++t)
        for (Index k = 0; k < y.dimension(2); ++k) y(t, b, k) = Scalar(0);
    return y;
  }

  /// \brief Registers the whole model in `checkpoint` under `prefix`: the embedding, the
  /// cell, the head, the optimiser's slots and the training progress (step, epoch, data
  /// position, early-stopping record, dropout generator), so that loading it resumes exactly.
  /// The model must be given its optimiser first.
  /// \throws std::logic_error without an optimiser, or when optimizer() was assigned one of
  /// another type than set_optimizer's; std::invalid_argument when `prefix` is taken.
  void add_to(Checkpoint<Scalar>& checkpoint, const std::string& prefix = "model") {
    check_optimizer("add_to");
    if (embedding_) checkpoint.add(prefix + "/embedding", *embedding_);
    checkpoint.add(prefix + "/cell", cell_).add(prefix + "/head", head_);
    (this->*add_optimizer_)(checkpoint, prefix);
    checkpoint.add_state(
        prefix, [this](typename Checkpoint<Scalar>::Metadata& meta, const std::string& p) { save_progress(meta, p); },
        [this](const typename Checkpoint<Scalar>::Metadata& meta, const std::string& p, bool assign) {
          return load_progress(meta, p, assign);
        });
    registered_ = true;
  }

  /// \brief The head's outputs from the last train_step, evaluate or predict: (B, K) for a
  /// last-step model, (T·B, K) time-major rows for an every-step model (padded rows hold the
  /// head's bias). Logits for classifiers.
  const Matrix<Scalar>& outputs() const { return y_; }

  /// \brief The recurrent cell.
  Cell& cell() { return cell_; }
  const Cell& cell() const { return cell_; }  ///< \copydoc cell()
  /// \brief The precision of the cell's matrix products (PrecisionSetting):
  /// Precision::float32 (the default), Precision::bfloat16 (mixed-precision training and
  /// inference with float32 weights, optimiser state and head) or Precision::int8 (inference,
  /// after calibrate_int8()).
  Precision precision() const { return cell_.precision(); }
  /// \brief Sets the cell's precision, from the next train_step, evaluate or predict on. In
  /// Precision::int8, train_step throws.
  /// \throws std::invalid_argument as the cell's set_precision() does.
  void set_precision(Precision precision) { cell_.set_precision(precision); }
  /// \brief Finds the int8 bounds of every cell from the inputs each sees over a forward pass
  /// of each batch, run in the current precision (PrecisionSetting::begin_int8_calibration());
  /// a few hundred representative sequences are enough. Then set_precision(Precision::int8).
  /// Targets in the batches are not needed. Runs in inference mode.
  /// \throws std::invalid_argument when `batches` is empty or a batch does not fit the model.
  void calibrate_int8(const std::vector<const SequenceBatch<Scalar>*>& batches) {
    constexpr const char* fn = "SequenceModel::calibrate_int8";
    if (batches.empty()) detail::throw_argument(fn, "batches", "at least one batch", "none");
    for (const SequenceBatch<Scalar>* batch : batches) {  // all checked before the bounds change
      if (!batch) detail::throw_argument(fn, "batches", "pointers to batches", "a null pointer");
      check_batch(*batch, fn, false);
    }
    set_training(false);
    cell_.begin_int8_calibration();
    for (const SequenceBatch<Scalar>* batch : batches) run_forward(*batch, fn, ForwardMode::inference);
    cell_.end_int8_calibration();
  }
  /// \brief calibrate_int8() over one batch.
  void calibrate_int8(const SequenceBatch<Scalar>& batch) { calibrate_int8({&batch}); }
  /// \brief The head, Dense(H, K).
  Dense<Scalar>& head() { return head_; }
  const Dense<Scalar>& head() const { return head_; }  ///< \copydoc head()
  /// \brief The embedding of a token model; null for dense inputs.
  Embedding<Scalar>* embedding() { return embedding_ ? &*embedding_ : nullptr; }
  /// \brief The optimiser, or null before set_optimizer. Its options and state may be changed
  /// through it; another optimiser is chosen with set_optimizer() only (train_step and add_to
  /// refuse one assigned here).
  AnyOptimizer<Scalar>* optimizer() { return optimizer_ ? &*optimizer_ : nullptr; }
  /// \brief The output specification.
  const Output& output() const { return output_; }
  /// \brief The input specification.
  const Input& input() const { return input_; }
  /// \brief Where training stands (fit() keeps it up to date).
  TrainingProgress& progress() { return progress_; }
  const TrainingProgress& progress() const { return progress_; }  ///< \copydoc progress()
  /// \brief The learning rate in force (0 before set_optimizer).
  Scalar learning_rate() const {
    return optimizer_ ? std::visit([](const auto& o) { return o.learning_rate(); }, *optimizer_) : Scalar(0);
  }

 private:
  // Throws std::logic_error without an optimiser, or when optimizer() was assigned another
  // kind of optimiser than set_optimizer chose (its update was not compiled).
  void check_optimizer(const char* fn) const {
    if (!optimizer_)
      throw std::logic_error(std::string("dynrnn::SequenceModel::") + fn + ": no optimizer; call set_optimizer first");
    if (optimizer_->index() != optimizer_index_)
      throw std::logic_error(std::string("dynrnn::SequenceModel::") + fn +
                             ": the optimizer was replaced through optimizer(); choose it with set_optimizer");
  }

  // One update of every parameter by the chosen optimiser, and its checkpoint entry: one
  // instantiation per optimiser a program chooses, where a visit of AnyOptimizer would
  // compile all five into every program.
  template <class Optimizer>
  void update() {
    Optimizer& opt = std::get<Optimizer>(*optimizer_);
    opt.apply(cell_, d_cell_);
    opt.apply(head_, d_head_);
    if (embedding_) opt.apply(*embedding_, d_embedding_);
  }
  template <class Optimizer>
  void add_optimizer(Checkpoint<Scalar>& checkpoint, const std::string& prefix) {
    checkpoint.add(prefix + "/" + Optimizer::name, std::get<Optimizer>(*optimizer_));
  }

  static Index positive_output(const Output& output) {
    detail::check_positive("SequenceModel", "output.size", output.size);
    return output.size;
  }

  SequenceModel(const Input& input, Cell cell, Dense<Scalar> head, const Output& output, std::uint64_t seed,
                bool draw)
      : input_(input), output_(output), cell_(std::move(cell)), head_(std::move(head)) {
    constexpr const char* fn = "SequenceModel";
    detail::check_positive(fn, "input.size", input.size);
    detail::check_non_negative(fn, "input.vocab", input.vocab);
    positive_output(output);
    if (input.size != cell_.input_size())
      detail::throw_argument(fn, "input.size", "the cell's input size " + std::to_string(cell_.input_size()),
                             std::to_string(input.size));
    if (draw) head_ = Dense<Scalar>(cell_.output_size(), output.size);
    if (head_.input_size() != cell_.output_size())
      detail::throw_argument(fn, "head", "a Dense whose input size is the cell's output width " +
                                             std::to_string(cell_.output_size()),
                             "input size " + std::to_string(head_.input_size()));
    if (head_.output_size() != output.size)
      detail::throw_argument(fn, "head", "a Dense with output.size = " + std::to_string(output.size) + " outputs",
                             std::to_string(head_.output_size()));
    if (output.head != Output::Head::last_step && output.head != Output::Head::every_step)
      detail::throw_argument(fn, "output.head", "Output::Head::last_step or every_step",
                             std::to_string(int(output.head)));
    if (output.loss != Output::Loss::softmax_cross_entropy && output.loss != Output::Loss::mean_squared_error)
      detail::throw_argument(fn, "output.loss", "Output::Loss::softmax_cross_entropy or mean_squared_error",
                             std::to_string(int(output.loss)));
    if (input.vocab > 0) embedding_.emplace(input.vocab, input.size);
    if (draw) {
      Rng rng(seed);
      if (embedding_) embedding_->reset_parameters(rng);
      cell_.reset_parameters(rng);
      head_.reset_parameters(rng);
    }
    d_cell_ = Runner::make_gradients(cell_);
    d_head_ = head_.make_gradients();
    if (embedding_) d_embedding_ = embedding_->make_gradients();
  }

  void set_training(bool training) {
    if constexpr (detail::has_training_mode<Cell>::value) cell_.set_training(training);
    (void)training;
  }

  // Checks that the batch's inputs and targets fit the model; throws naming the member.
  void check_batch(const SequenceBatch<Scalar>& batch, const char* fn, bool targets) const {
    const Index B = batch.batch(), T = batch.max_time();
    if (embedding_) {
      if (Index(batch.tokens.size()) != T * B)
        detail::throw_argument(fn, "batch.tokens",
                               "T x B = " + std::to_string(T) + " x " + std::to_string(B) + " ids (time-major)",
                               std::to_string(batch.tokens.size()));
    } else {
      detail::check_shape(fn, "batch.features", batch.features, T, B, input_.size);
    }
    detail::check_lengths(fn, batch.lengths, B, T);
    if (!targets) return;
    const bool steps = output_.head == Output::Head::every_step;
    if (output_.loss == Output::Loss::softmax_cross_entropy) {
      const Index expected = steps ? T * B : B;
      if (Index(batch.labels.size()) != expected)
        detail::throw_argument(fn, "batch.labels",
                               steps ? "T x B = " + std::to_string(expected) + " class ids (one per step, time-major)"
                                     : std::to_string(expected) + " class ids (one per sequence)",
                               std::to_string(batch.labels.size()));
    } else if (steps) {
      detail::check_shape(fn, "batch.step_targets", batch.step_targets, T, B, output_.size);
    } else {
      detail::check_shape(fn, "batch.targets", batch.targets, B, output_.size);
    }
  }

  // The cell's inputs for this batch: the features, or the embedded tokens.
  const Tensor3<Scalar>& inputs(const SequenceBatch<Scalar>& batch) {
    if (!embedding_) return batch.features;
    embedding_->forward_sequences(batch.tokens, batch.max_time(), batch.batch(), x_);
    return x_;
  }

  // Forward through the head into y_ (B, K) or y_steps_ [T, B, K].
  // An inference pass (evaluate, predict, calibration) keeps nothing for backward.
  void run_forward(const SequenceBatch<Scalar>& batch, const char* fn, ForwardMode mode, bool targets = false) {
    check_batch(batch, fn, targets);
    const Index B = batch.batch();
    runner_.forward(cell_, inputs(batch), batch.lengths, fwd_, mode);
    const Tensor3<Scalar>& outputs = Runner::outputs(fwd_);
    if (output_.head == Output::Head::last_step) {
      gather_last_outputs(outputs, batch.lengths, last_);
      head_.forward(last_, y_);
    } else {
      head_.forward(detail::as_matrix(outputs), y_);
      y_steps_.resize(outputs.dimension(0), B, output_.size);
      detail::as_matrix(y_steps_) = y_;
    }
  }

  // Forward and loss; keeps the loss's gradient for backward().
  Scalar forward_loss(const SequenceBatch<Scalar>& batch, const char* fn, ForwardMode mode) {
    run_forward(batch, fn, mode, true);
    const bool steps = output_.head == Output::Head::every_step;
    if (output_.loss == Output::Loss::softmax_cross_entropy) {
      if (steps) {
        sequence_softmax_cross_entropy(y_steps_, batch.labels, batch.lengths, output_.reduction, step_ce_);
        return step_ce_.loss;
      }
      softmax_cross_entropy(y_, batch.labels, output_.reduction, ce_);
      return ce_.loss;
    }
    if (steps) {
      sequence_mean_squared_error(y_steps_, batch.step_targets, batch.lengths, output_.reduction, step_mse_);
      return step_mse_.loss;
    }
    mean_squared_error(y_, batch.targets, output_.reduction, mse_);
    return mse_.loss;
  }

  // The samples the loss of the last forward_loss() averaged over: sequences, or valid steps.
  Index local_count(const SequenceBatch<Scalar>& batch) const {
    if (output_.head == Output::Head::last_step) return batch.batch();
    return output_.loss == Output::Loss::softmax_cross_entropy ? step_ce_.steps : step_mse_.steps;
  }

  // Gradients of the loss forward_loss() computed; parameter gradients start from zero. With
  // `pack`, each is packed into buckets_ as soon as it is complete, and the head's, complete
  // first, start their sum while the recurrent part runs (DataParallelOptions::overlap).
  void backward(const SequenceBatch<Scalar>& batch, bool pack = false) {
    d_head_.setZero();
    d_cell_.setZero();
    if (embedding_) d_embedding_.setZero();
    const bool ce = output_.loss == Output::Loss::softmax_cross_entropy;
    const Tensor3<Scalar>& outputs = Runner::outputs(fwd_);
    if (output_.head == Output::Head::last_step) {
      head_.backward(last_, ce ? ce_.d_logits : mse_.d_predictions, d_head_, d_last_);
      gather_last_outputs_backward(d_last_, batch.lengths, outputs.dimension(0), d_outputs_);
    } else {
      const Tensor3<Scalar>& dy = ce ? step_ce_.d_logits : step_mse_.d_predictions;
      head_.backward(detail::as_matrix(outputs), detail::as_matrix(dy), d_head_, d_rows_);
      d_outputs_.resize(outputs.dimensions());
      detail::as_matrix(d_outputs_) = d_rows_;
    }
    if (pack) {
      buckets_.add(d_head_);
      if (parallel_options_.overlap) buckets_.start(*comm_);
    }
    runner_.backward(cell_, fwd_, d_outputs_, d_cell_, embedding_ ? InputGradients::compute : InputGradients::skip);
    if (embedding_) embedding_->backward_sequences(batch.tokens, d_cell_.inputs, d_embedding_);
    if (pack) {
      buckets_.add(d_cell_);
      if (embedding_) buckets_.add(d_embedding_);
    }
  }

  void clip() {
    if (embedding_)
      clip_by_global_norm(clip_norm_, d_cell_, d_head_, d_embedding_);
    else
      clip_by_global_norm(clip_norm_, d_cell_, d_head_);
  }

  // Share of correct argmax predictions over the sequences or valid steps of the last forward.
  double accuracy(const SequenceBatch<Scalar>& batch) const {
    Index correct = 0, count = 0;
    const auto argmax = [](const auto& row) {
      Index best = 0;
      row.maxCoeff(&best);
      return best;
    };
    if (output_.head == Output::Head::last_step) {
      for (Index b = 0; b < y_.rows(); ++b) correct += argmax(y_.row(b)) == batch.labels[std::size_t(b)];
      count = y_.rows();
    } else {
      const Index B = batch.batch();
      for (Index b = 0; b < B; ++b)
        for (Index t = 0; t < batch.lengths[std::size_t(b)]; ++t) {
          correct += argmax(y_.row(t * B + b)) == batch.labels[std::size_t(t * B + b)];
          ++count;
        }
    }
    return count ? double(correct) / double(count) : 0.0;
  }

  void save_progress(typename Checkpoint<Scalar>::Metadata& meta, const std::string& p) const {
    std::ostringstream best;
    best.precision(17);
    best << progress_.best_validation;
    meta[p + ".step"] = std::to_string(progress_.step);
    meta[p + ".epoch"] = std::to_string(progress_.epoch);
    meta[p + ".batch_in_epoch"] = std::to_string(progress_.batch_in_epoch);
    meta[p + ".epoch_rng"] = progress_.epoch_rng;
    meta[p + ".best_validation"] = progress_.has_best ? best.str() : "none";
    meta[p + ".epochs_without_improvement"] = std::to_string(progress_.epochs_without_improvement);
    if constexpr (detail::has_training_mode<Cell>::value) {
      std::ostringstream rng;
      rng << const_cast<Cell&>(cell_).rng();
      meta[p + ".dropout_rng"] = rng.str();
    }
  }

  // Checks (assign false) or reads (assign true) the progress; returns what is wrong, or "".
  std::string load_progress(const typename Checkpoint<Scalar>::Metadata& meta, const std::string& p, bool assign) {
    TrainingProgress q;
    const auto get = [&](const char* key, std::string& out) {
      const auto it = meta.find(p + "." + key);
      if (it == meta.end()) return false;
      out = it->second;
      return true;
    };
    const auto get_int = [&](const char* key, std::int64_t& out) {
      std::string text;
      if (!get(key, text)) return false;
      std::istringstream in(text);
      return bool(in >> out) && in.peek() == std::char_traits<char>::eof() && out >= 0;
    };
    std::string best, dropout_rng;
    if (!get_int("step", q.step) || !get_int("epoch", q.epoch) || !get_int("batch_in_epoch", q.batch_in_epoch) ||
        !get_int("epochs_without_improvement", q.epochs_without_improvement) || !get("epoch_rng", q.epoch_rng) ||
        !get("best_validation", best))
      return "metadata '" + p + ".*' (the model's training progress) is missing or malformed";
    if (best != "none") {
      std::istringstream in(best);
      if (!(in >> q.best_validation)) return "metadata '" + p + ".best_validation' is malformed";
      q.has_best = true;
    }
    if (!q.epoch_rng.empty()) {
      std::istringstream in(q.epoch_rng);
      Rng probe;
      if (!(in >> probe)) return "metadata '" + p + ".epoch_rng' is malformed";
    }
    Rng dropout;
    if constexpr (detail::has_training_mode<Cell>::value) {
      if (!get("dropout_rng", dropout_rng)) return "metadata '" + p + ".dropout_rng' is missing";
      std::istringstream in(dropout_rng);
      if (!(in >> dropout)) return "metadata '" + p + ".dropout_rng' is malformed";
    }
    if (assign) {
      progress_ = q;
      if constexpr (detail::has_training_mode<Cell>::value) cell_.rng() = dropout;
    }
    return "";
  }

  Input input_;
  Output output_;
  Cell cell_;
  Dense<Scalar> head_;
  std::optional<Embedding<Scalar>> embedding_;
  std::optional<AnyOptimizer<Scalar>> optimizer_;
  std::size_t optimizer_index_ = 0;                                                 // set_optimizer's choice
  void (SequenceModel::*update_)() = nullptr;                                      // update<its type>
  void (SequenceModel::*add_optimizer_)(Checkpoint<Scalar>&, const std::string&) = nullptr;  // add_optimizer<its type>
  Scalar clip_norm_ = Scalar(0);
  std::function<Scalar(std::int64_t)> schedule_;
  TrainingProgress progress_;
  bool registered_ = false;
  Communicator* comm_ = nullptr;  // data parallelism: the ranks train_step() averages over
  DataParallelOptions parallel_options_;
  GradientBuckets<Scalar> buckets_{parallel_options_.bucket_bytes};

  // Buffers kept from step to step.
  using Runner = detail::RecurrentRunner<Cell>;
  Runner runner_;                        // runs the recurrent part (and keeps its zero states)
  Tensor3<Scalar> x_;                    // [T, B, I] embedded tokens
  typename Runner::Result fwd_;          // outputs [T, B, H] and the cache
  typename Runner::Gradients d_cell_;
  Matrix<Scalar> last_, d_last_;         // (B, H)
  Matrix<Scalar> y_, d_rows_;            // (B, K) or (T·B, K); (T·B, H)
  Tensor3<Scalar> y_steps_, d_outputs_;  // [T, B, K], [T, B, H]
  SoftmaxCrossEntropy<Scalar> ce_;
  MeanSquaredError<Scalar> mse_;
  SequenceSoftmaxCrossEntropy<Scalar> step_ce_;
  SequenceMeanSquaredError<Scalar> step_mse_;
  DenseGradients<Scalar> d_head_;
  EmbeddingGradients<Scalar> d_embedding_;
  SequenceBatch<Scalar> eval_batch_;
};

}  // namespace dynrnn
