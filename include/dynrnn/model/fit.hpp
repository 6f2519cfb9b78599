// dynrnn: fit(), the training loop of a SequenceModel, and its callbacks.
//
// fit() runs epochs over a SequenceDataset: each epoch shuffles the sequences with a seeded,
// portable generator, trains on batches of them, then evaluates the validation set, if any.
// Around that loop:
//   - progress: a live line on a terminal (step/total, loss, steps/s, ETA), plain lines every
//     so many steps otherwise (FitOptions::verbose);
//   - callbacks (FitCallback): EarlyStopping on the validation loss, CheckpointEvery N steps,
//     CsvLog of the losses and metrics, or a program's own;
//   - interrupts: SIGINT (Ctrl-C) ends the loop after the current step; the callbacks are told
//     (CheckpointEvery saves), and fit() returns with FitResult::interrupted set. The handler is
//     installed for the duration of fit() only, and the previous one is restored.
//   - data parallelism: with FitOptions::communicator, every rank runs fit() on the same
//     dataset; each takes its share of every global batch of batch_size sequences and of the
//     validation set, the gradients and figures are averaged over the ranks, rank 0's model is
//     copied to all first, and only rank 0 prints and writes (FitCallback::on_communicator).
//     The result is the one process training on the same global batches would reach.
//   - resumption: where training stands (step, epoch, position in the epoch, the shuffling
//     generator, the early-stopping record) lives in the model's TrainingProgress, which the
//     model's checkpoint holds (SequenceModel::add_to). After loading one, fit() continues
//     with the same batches in the same order, so the run is bit for bit the one that was
//     never interrupted.
#pragma once

#include "../core/check.hpp"
#include "../core/random.hpp"
#include "../distributed/data_parallel.hpp"
#include "../io/checkpoint.hpp"
#include "sequence_data.hpp"
#include "sequence_model.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>
#define DYNRNN_HAVE_ISATTY 1
#endif

namespace dynrnn {

/// \brief How fit() runs.
struct FitOptions {
  std::int64_t epochs = 10;             ///< Epochs in all, counting those done before a resume.
  std::int64_t max_steps = 0;           ///< Stop after this many steps in all; 0: no limit.
  Index batch_size = 32;                ///< Sequences per batch (the last batch of an epoch may hold fewer).
  Index validation_batch_size = 256;    ///< Sequences per batch when evaluating the validation set.
  std::uint64_t seed = 1;               ///< Seeds the shuffling of the training set.
  bool verbose = true;                  ///< Print progress to `out`.
  std::FILE* out = stdout;              ///< Where progress goes.
  std::int64_t log_every = 0;           ///< Without a terminal: a line every N steps (0: 10 per epoch).
  bool handle_interrupt = true;         ///< Stop cleanly on SIGINT (see the file comment).
  /// Data parallelism over these ranks (see the file comment); null: this process alone.
  /// batch_size is then the global batch, which needs at least one sequence per rank.
  Communicator* communicator = nullptr;
};

/// \brief What a callback learns after each training step.
struct FitStep {
  std::int64_t step = 0;               ///< Updates so far, this one included.
  std::int64_t epoch = 0;              ///< The epoch, from 0.
  std::int64_t batch_in_epoch = 0;     ///< Batches of the epoch done, this one included.
  std::int64_t batches_per_epoch = 0;  ///< Batches in an epoch.
  double loss = 0;                     ///< This batch's loss.
};

/// \brief What a callback learns after each epoch.
struct FitEpoch {
  std::int64_t epoch = 0;         ///< The epoch just finished, from 0.
  std::int64_t step = 0;          ///< Updates so far.
  double train_loss = 0;          ///< Mean batch loss over the epoch's batches (those run since a resume).
  bool has_validation = false;    ///< Whether a validation set was evaluated.
  Metrics validation;             ///< Its loss and accuracy.
};

/// \brief Lets callbacks end training: set `stop` (fit() then returns after the current step
/// or epoch), and say why in `reason`.
struct FitControl {
  bool stop = false;   ///< Set to end training.
  std::string reason;  ///< Why, for the summary line.
};

/// \brief A hook into fit(). Calls happen between steps, never inside one.
class FitCallback {
 public:
  virtual ~FitCallback() = default;
  /// \brief Before on_train_begin(): the ranks fit() trains over (SingleProcess when alone).
  /// Callbacks that write files or print do so on rank 0 only (comm.is_root()).
  virtual void on_communicator(const Communicator& /*comm*/) {}
  /// \brief Before the first step (also after a resume).
  virtual void on_train_begin() {}
  /// \brief After each training step.
  virtual void on_step_end(const FitStep&, FitControl&) {}
  /// \brief After each epoch, once the validation set has been evaluated.
  virtual void on_epoch_end(const FitEpoch&, FitControl&) {}
  /// \brief When fit() ends, however it ends; `interrupted` after a SIGINT.
  virtual void on_train_end(bool /*interrupted*/) {}
};

/// \brief How fit() ended.
struct FitResult {
  std::int64_t steps = 0;         ///< Updates so far (the model's progress().step).
  std::int64_t epochs = 0;        ///< Completed epochs.
  bool interrupted = false;       ///< Ended by SIGINT.
  bool stopped = false;           ///< Ended by a callback (e.g. EarlyStopping).
  std::string reason;             ///< The callback's reason.
  double last_loss = std::numeric_limits<double>::quiet_NaN();  ///< The last batch's loss.
  bool has_validation = false;    ///< Whether `validation` holds the last epoch's figures.
  Metrics validation;             ///< The last validation figures.
};

/// \brief Stops training when the validation loss has not improved by more than `min_delta`
/// for `patience` epochs. Its record lives in the model's TrainingProgress, so a resumed run
/// stops where the uninterrupted one would.
template <class Cell>
class EarlyStopping : public FitCallback {
 public:
  /// \throws std::invalid_argument for patience < 1 or a negative or NaN min_delta.
  EarlyStopping(SequenceModel<Cell>& model, std::int64_t patience, double min_delta = 0)
      : model_(model), patience_(patience), min_delta_(min_delta) {
    detail::check_positive("EarlyStopping", "patience", patience);
    detail::check_non_negative_finite("EarlyStopping", "min_delta", min_delta);
  }
  void on_epoch_end(const FitEpoch& e, FitControl& control) override {
    if (!e.has_validation) return;
    TrainingProgress& p = model_.progress();
    if (!p.has_best || e.validation.loss < p.best_validation - min_delta_) {
      p.best_validation = e.validation.loss;
      p.has_best = true;
      p.epochs_without_improvement = 0;
      return;
    }
    if (++p.epochs_without_improvement >= patience_) {
      control.stop = true;
      std::ostringstream why;
      why << "early stopping: the validation loss has not improved on " << p.best_validation << " for "
          << p.epochs_without_improvement << " epochs";
      control.reason = why.str();
    }
  }

 private:
  SequenceModel<Cell>& model_;
  std::int64_t patience_;
  double min_delta_;
};

/// \brief Saves a checkpoint every `every` steps, at the end of training and when it is
/// interrupted. Saves are atomic (Checkpoint::save), so a crash leaves the previous file.
template <class Scalar>
class CheckpointEvery : public FitCallback {
 public:
  /// \param checkpoint what to save (a model registered with SequenceModel::add_to, and
  ///                   anything else the program adds); it must outlive the callback.
  /// \param step       the model's step counter (model.progress().step), saved as the checkpoint's step.
  /// \param path       the file.
  /// \param every      steps between saves; 0 saves only at the end and on interrupt.
  CheckpointEvery(Checkpoint<Scalar>& checkpoint, const std::int64_t& step, std::string path, std::int64_t every)
      : checkpoint_(checkpoint), step_(step), path_(std::move(path)), every_(every) {
    detail::check_non_negative("CheckpointEvery", "every", every);
    if (path_.empty()) detail::throw_argument("CheckpointEvery", "path", "a file name", "an empty string");
  }
  void on_communicator(const Communicator& comm) override { writes_ = comm.is_root(); }
  void on_step_end(const FitStep& s, FitControl&) override {
    if (every_ > 0 && s.step % every_ == 0) save();
  }
  void on_train_end(bool) override {
    if (saved_step_ != step_) save();
  }
  /// \brief The file.
  const std::string& path() const { return path_; }

 private:
  void save() {
    if (!writes_) return;
    checkpoint_.save(path_, step_);
    saved_step_ = step_;
  }
  Checkpoint<Scalar>& checkpoint_;
  const std::int64_t& step_;
  std::string path_;
  std::int64_t every_;
  std::int64_t saved_step_ = -1;
  bool writes_ = true;  // false on the ranks other than 0
};

/// \brief Writes a CSV of the training loss at every step and the validation figures after
/// every epoch: `step,epoch,train_loss,validation_loss,validation_accuracy`, with the fields a
/// row does not have left empty. Values are written in full precision. A resumed run appends.
/// The file is written from on_train_begin() on, and over several ranks by rank 0 only.
class CsvLog : public FitCallback {
 public:
  /// \param path the file; created with a header, or appended to when `append` and it exists.
  /// \throws std::runtime_error when the file cannot be opened for writing.
  explicit CsvLog(const std::string& path, bool append = false) : path_(path), append_(append) {
    if (!std::ofstream(path, std::ios::app))  // creates it, and leaves what it holds for now
      throw std::runtime_error("dynrnn::CsvLog: cannot open '" + path + "' for writing");
  }
  void on_communicator(const Communicator& comm) override { writes_ = comm.is_root(); }
  void on_train_begin() override {
    if (!writes_ || file_.is_open()) return;
    std::ifstream existing(path_);
    const bool header = !(append_ && existing.good() && existing.peek() != std::ifstream::traits_type::eof());
    file_.open(path_, append_ ? std::ios::app : std::ios::trunc);
    if (!file_) throw std::runtime_error("dynrnn::CsvLog: cannot open '" + path_ + "' for writing");
    file_.precision(std::numeric_limits<double>::max_digits10);
    if (header) file_ << "step,epoch,train_loss,validation_loss,validation_accuracy\n";
  }
  void on_step_end(const FitStep& s, FitControl&) override {
    if (file_.is_open()) file_ << s.step << ',' << s.epoch << ',' << s.loss << ",,\n";
  }
  void on_epoch_end(const FitEpoch& e, FitControl&) override {
    if (!e.has_validation || !file_.is_open()) return;
    file_ << e.step << ',' << e.epoch << ",," << e.validation.loss << ',';
    if (e.validation.accuracy >= 0) file_ << e.validation.accuracy;
    file_ << '\n';
    file_.flush();
  }
  void on_train_end(bool) override {
    if (file_.is_open()) file_.flush();
  }
  /// \brief The file.
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool append_;
  bool writes_ = true;  // false on the ranks other than 0
  std::ofstream file_;
};

namespace detail {

// SIGINT while fit() runs: the handler only sets a flag, which the loop reads between steps.
inline volatile std::sig_atomic_t& interrupt_flag() {
  static volatile std::sig_atomic_t flag = 0;
  return flag;
}
inline void on_fit_interrupt(int) { interrupt_flag() = 1; }

// Installs on_fit_interrupt for SIGINT and restores the previous handler when destroyed.
class InterruptGuard {
 public:
  explicit InterruptGuard(bool active) : active_(active) {
    if (!active_) return;
    interrupt_flag() = 0;
    previous_ = std::signal(SIGINT, on_fit_interrupt);
  }
  ~InterruptGuard() {
    if (active_ && previous_ != SIG_ERR) std::signal(SIGINT, previous_);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  bool interrupted() const { return active_ && interrupt_flag() != 0; }

 private:
  bool active_;
  void (*previous_)(int) = SIG_DFL;
};

// Fisher-Yates with the portable uniform_int, so that every platform shuffles alike.
inline void shuffle(std::vector<std::size_t>& v, Rng& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[std::size_t(uniform_int(rng, 0, std::int64_t(i)))]);
}

inline std::string duration_string(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const long s = long(seconds + 0.5);
  char text[32];
  if (s >= 3600)
    std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
  return text;
}

// The progress display: a line rewritten in place on a terminal, plain lines otherwise.
class FitProgress {
 public:
  FitProgress(const FitOptions& o, std::int64_t total_steps, std::int64_t batches_per_epoch)
      : out_(o.verbose ? o.out : nullptr), total_(total_steps), per_epoch_(batches_per_epoch),
        every_(o.log_every > 0 ? o.log_every : std::max<std::int64_t>(1, batches_per_epoch / 10)) {
#ifdef DYNRNN_HAVE_ISATTY
    tty_ = out_ && isatty(fileno(out_));
#endif
    start_ = last_ = Clock::now();
  }
  void step(const FitStep& s, std::int64_t first_step) {
    if (!out_) return;
    const auto now = Clock::now();
    const double elapsed = seconds(start_, now);
    const double rate = double(s.step - first_step) / std::max(elapsed, 1e-9);
    const bool due = tty_ ? seconds(last_, now) >= 0.1 || s.batch_in_epoch == per_epoch_
                          : (s.step % every_ == 0 || s.batch_in_epoch == per_epoch_);
    if (!due) return;
    last_ = now;
    std::fprintf(out_, "%sepoch %lld  step %lld/%lld  loss %.4f  %.1f steps/s  ETA %s%s", tty_ ? "\r\033[K" : "",
                 static_cast<long long>(s.epoch + 1), static_cast<long long>(s.step), static_cast<long long>(total_),
                 s.loss, rate, duration_string(double(total_ - s.step) / std::max(rate, 1e-9)).c_str(),
                 tty_ ? "" : "\n");
    std::fflush(out_);
  }
  void epoch(const FitEpoch& e) {
    if (!out_) return;
    std::fprintf(out_, "%sepoch %lld done  step %lld  train loss %.4f", tty_ ? "\r\033[K" : "",
                 static_cast<long long>(e.epoch + 1), static_cast<long long>(e.step), e.train_loss);
    if (e.has_validation) {
      std::fprintf(out_, "  validation loss %.4f", e.validation.loss);
      if (e.validation.accuracy >= 0) std::fprintf(out_, "  accuracy %.4f", e.validation.accuracy);
    }
    std::fprintf(out_, "\n");
    std::fflush(out_);
  }
  void message(const std::string& text) {
    if (!out_) return;
    std::fprintf(out_, "%s%s\n", tty_ ? "\r\033[K" : "", text.c_str());
    std::fflush(out_);
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }
  std::FILE* out_;
  std::int64_t total_, per_epoch_, every_;
  bool tty_ = false;
  Clock::time_point start_, last_;
};

}  // namespace detail

/// \brief Trains `model` on `train` for options.epochs epochs, validating on `validation`
/// (may be empty) after each; see the file comment.
///
/// \param callbacks called in order; they must outlive the call.
/// \return how training ended.
/// \throws std::invalid_argument for an empty training set, options out of range, or data
/// that does not fit the model (the model is then unchanged).
///
/// \code
/// dynrnn::Checkpoint<float> ckpt;
/// model.add_to(ckpt);
/// dynrnn::EarlyStopping<dynrnn::LSTMCell<float>> early(model, /*patience=*/3);
/// dynrnn::CheckpointEvery<float> saver(ckpt, model.progress().step, "model.safetensors", 500);
/// dynrnn::CsvLog csv("loss.csv");
/// dynrnn::FitOptions options;
/// options.epochs = 20;
/// auto result = dynrnn::fit(model, train, validation, options, {&early, &saver, &csv});
/// \endcode
template <class Cell>
FitResult fit(SequenceModel<Cell>& model, const SequenceDataset<typename Cell::Scalar>& train,
              const SequenceDataset<typename Cell::Scalar>& validation, const FitOptions& options,
              const std::vector<FitCallback*>& callbacks = {}) {
  using Scalar = typename Cell::Scalar;
  constexpr const char* fn = "fit";
  if (train.size() == 0) detail::throw_argument(fn, "train", "a non-empty dataset", "0 sequences");
  detail::check_non_negative(fn, "options.epochs", options.epochs);
  detail::check_positive(fn, "options.batch_size", options.batch_size);
  detail::check_positive(fn, "options.validation_batch_size", options.validation_batch_size);
  detail::check_non_negative(fn, "options.log_every", options.log_every);
  detail::check_non_negative(fn, "options.max_steps", options.max_steps);
  for (FitCallback* c : callbacks)
    if (!c) detail::throw_argument(fn, "callbacks", "non-null pointers", "a null pointer");
  Communicator* comm = options.communicator && options.communicator->size() > 1 ? options.communicator : nullptr;
  const int rank = comm ? comm->rank() : 0, ranks = comm ? comm->size() : 1;
  if (options.batch_size < ranks)
    detail::throw_argument(fn, "options.batch_size", "at least one sequence per rank (>= " + std::to_string(ranks) + ")",
                           std::to_string(options.batch_size));

  const std::size_t n = train.size(), batch = std::size_t(options.batch_size);
  const std::int64_t per_epoch = std::int64_t((n + batch - 1) / batch);
  TrainingProgress& p = model.progress();
  if (p.batch_in_epoch > per_epoch)
    detail::throw_argument(fn, "model.progress().batch_in_epoch",
                           "at most the " + std::to_string(per_epoch) + " batches of an epoch of this dataset",
                           std::to_string(p.batch_in_epoch));

  // Over several ranks: every rank starts from rank 0's model, and the model averages its
  // gradients over them for the duration of the call.
  struct CommunicatorScope {
    SequenceModel<Cell>& model;
    Communicator* previous;
    ~CommunicatorScope() { model.set_communicator(previous, model.data_parallel_options()); }
  } scope{model, model.communicator()};
  if (comm) {
    broadcast_model(model, *comm);
    model.set_communicator(comm, model.data_parallel_options());
  }
  // Whether any rank says so; a tiny collective, for the rare decisions outside a step.
  const auto any_rank = [&](bool yes) {
    double v = yes ? 1 : 0;
    if (comm) comm->allreduce_sum(&v, 1);
    return v > 0;
  };

  FitResult result;
  detail::InterruptGuard interrupt(options.handle_interrupt);
  const std::int64_t total = options.max_steps > 0 ? std::min(options.epochs * per_epoch, options.max_steps)
                                                  : options.epochs * per_epoch;
  FitOptions shown = options;
  shown.verbose = options.verbose && rank == 0;
  detail::FitProgress progress(shown, total, per_epoch);
  const auto reached_max_steps = [&] { return options.max_steps > 0 && p.step >= options.max_steps; };
  FitControl control;
  SingleProcess alone;
  for (FitCallback* c : callbacks) c->on_communicator(comm ? *comm : static_cast<const Communicator&>(alone));
  for (FitCallback* c : callbacks) c->on_train_begin();
  const std::int64_t first_step = p.step;

  std::vector<std::size_t> order(n), indices;
  SequenceBatch<Scalar> b;
  while (p.epoch < options.epochs && !control.stop && !result.interrupted && !reached_max_steps()) {
    // The epoch's order: from the generator's state at its start, saved so a resume redraws it.
    Rng rng(options.seed);
    if (p.epoch_rng.empty()) {
      std::ostringstream state;
      state << rng;
      p.epoch_rng = state.str();
    } else {
      std::istringstream state(p.epoch_rng);
      state >> rng;
    }
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    detail::shuffle(order, rng);

    double loss_sum = 0;
    std::int64_t loss_count = 0;
    while (p.batch_in_epoch < per_epoch) {
      // The global batch, and this rank's share of it.
      const std::size_t first = std::size_t(p.batch_in_epoch) * batch, last = std::min(n, first + batch);
      const auto share = shard_of(Index(last - first), rank, ranks);
      indices.assign(order.begin() + std::ptrdiff_t(first + std::size_t(share.begin)),
                     order.begin() + std::ptrdiff_t(first + std::size_t(share.end)));
      train.make_batch(indices, b);
      bool stop = interrupt.interrupted();  // over several ranks: whether any rank was interrupted
      const double loss = double(model.train_step(b, comm ? &stop : nullptr));
      ++p.batch_in_epoch;
      loss_sum += loss;
      ++loss_count;
      result.last_loss = loss;
      const FitStep s{p.step, p.epoch, p.batch_in_epoch, per_epoch, loss};
      progress.step(s, first_step);
      for (FitCallback* c : callbacks) c->on_step_end(s, control);
      if (comm ? stop : interrupt.interrupted()) result.interrupted = true;
      if (control.stop || result.interrupted || reached_max_steps()) break;
    }
    if (p.batch_in_epoch < per_epoch) break;  // stopped inside the epoch

    // The epoch is complete: the next one starts from the generator where this one left it.
    FitEpoch e;
    e.epoch = p.epoch;
    e.step = p.step;
    e.train_loss = loss_count ? loss_sum / double(loss_count) : std::numeric_limits<double>::quiet_NaN();
    if (validation.size() > 0) {
      e.has_validation = true;
      e.validation = comm ? evaluate_over_ranks(model, validation, options.validation_batch_size, *comm)
                          : model.evaluate(validation, options.validation_batch_size);
      result.has_validation = true;
      result.validation = e.validation;
    }
    ++p.epoch;
    p.batch_in_epoch = 0;
    std::ostringstream state;
    state << rng;
    p.epoch_rng = state.str();
    progress.epoch(e);
    for (FitCallback* c : callbacks) c->on_epoch_end(e, control);
    if (any_rank(interrupt.interrupted())) result.interrupted = true;
  }

  result.steps = p.step;
  result.epochs = p.epoch;
  result.stopped = control.stop;
  result.reason = control.reason;
  for (FitCallback* c : callbacks) c->on_train_end(result.interrupted);
  if (result.interrupted)
    progress.message("interrupted at step " + std::to_string(p.step) + "; training can resume from there");
  else if (result.stopped)
    progress.message(result.reason);
  return result;
}

}  // namespace dynrnn
