// count_ones: train an LSTM to count the ones in a variable-length binary sequence.
//
// Model: Embedding(2 -> 2) -> LSTM(H) -> last valid output -> Dense(H -> 15) -> softmax,
// a dynrnn::SequenceModel trained one generated batch at a time with train_step().
// Each batch holds sequences of random length in [3, 15), padded to the longest; the
// target is the number of ones, so the padding zeros must not be counted: dynamic_rnn
// never reads them.
//
//   count_ones                      # defaults: 1000 steps, batch 50, RMSProp lr 0.01
//   count_ones --optimizer adam --clip-norm 5   # Adam, gradients clipped to a global norm of 5
//   count_ones --task seed          # ones then padding, target = length
//   count_ones --steps 2000 --resume count_ones.safetensors   # continue a run
//   count_ones --plot count_ones.png   # draw the loss curves (needs gnuplot)
//   count_ones --precision bfloat16     # the LSTM's products in bfloat16 (mixed precision)
//   count_ones --int8                   # also evaluate the trained model with int8 products
//   count_ones --help
//   mpirun -np 2 count_ones         # data parallel: 2 processes share every batch of 50
//
// Every 200 steps (and at the end) the model, the optimiser's slots, the step and the
// data generator's state are saved to a checkpoint; --resume continues from one exactly
// as if the run had never stopped.
//
// Under mpirun with several processes it trains data-parallel (../common/distributed.hpp):
// every rank draws the same global batch and trains on its share of the sequences, the
// gradients are averaged over the ranks, and rank 0 alone prints, writes the CSV and the
// checkpoints. The result is that of one process on the same batches.
#include "../common/distributed.hpp"
#include "../common/loss_plot.hpp"

#include <dynrnn/dynrnn.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Scalar = float;
constexpr int kMinLength = 3;   // sequence lengths are drawn from [kMinLength, kMaxLength)
constexpr int kMaxLength = 15;
constexpr int kClasses = 15;    // counts 0..14

enum class Task { random_bits, seed };

/// A batch of `batch_size` sequences with lengths in [kMinLength, kMaxLength), padded to
/// the longest: tokens[t * B + b] is the bit of row b at step t (0 at padding), and the label
/// is the number of ones.
void make_batch(Task task, int batch_size, dynrnn::Rng& rng, dynrnn::SequenceBatch<Scalar>& b) {
  b.lengths.resize(std::size_t(batch_size));
  for (int& len : b.lengths) len = int(dynrnn::uniform_int(rng, kMinLength, kMaxLength));
  const int max_time = *std::max_element(b.lengths.begin(), b.lengths.end());
  b.tokens.assign(std::size_t(max_time * batch_size), 0);
  b.labels.assign(std::size_t(batch_size), 0);
  for (int r = 0; r < batch_size; ++r)
    for (int t = 0; t < b.lengths[std::size_t(r)]; ++t) {
      const int bit = task == Task::seed ? 1 : int(dynrnn::uniform_int(rng, 0, 2));
      b.tokens[std::size_t(t * batch_size + r)] = bit;
      b.labels[std::size_t(r)] += bit;
    }
}

using Model = dynrnn::SequenceModel<dynrnn::LSTMCell<Scalar>>;

/// Gives `model` the optimiser called `name`, with the example's learning rate for it unless
/// `lr` > 0.
void set_optimizer(Model& model, const std::string& name, Scalar lr) {
  if (name == "adam") {
    model.set_optimizer(dynrnn::Adam<Scalar>(lr > 0 ? lr : Scalar(0.01)));
  } else if (name == "adamw") {
    model.set_optimizer(dynrnn::AdamW<Scalar>(lr > 0 ? lr : Scalar(0.01)));
  } else if (name == "sgd") {
    dynrnn::SGDOptions<Scalar> o;
    o.learning_rate = lr > 0 ? lr : Scalar(0.1);
    o.momentum = Scalar(0.9);
    o.nesterov = true;
    model.set_optimizer(dynrnn::SGD<Scalar>(o));
  } else {
    model.set_optimizer(dynrnn::RMSProp<Scalar>(lr > 0 ? lr : Scalar(0.01)));  // TensorFlow 1.x RMSProp
  }
}

/// Share of rows of `logits` whose largest entry is at the target's index; over every rank's
/// rows when `comm` is given.
double accuracy(const dynrnn::Matrix<Scalar>& logits, const std::vector<int>& targets, dynrnn::Communicator* comm) {
  double counts[2] = {0, double(logits.rows())};  // correct, rows
  for (dynrnn::Index r = 0; r < logits.rows(); ++r) {
    dynrnn::Index best;
    logits.row(r).maxCoeff(&best);
    counts[0] += best == targets[std::size_t(r)];
  }
  if (comm) comm->allreduce_sum(counts, 2);
  return counts[0] / counts[1];
}

/// The model's figures on `batch`: over every rank's share of it when `comm` is given.
dynrnn::Metrics evaluate(Model& model, const dynrnn::SequenceBatch<Scalar>& batch, dynrnn::Communicator* comm,
                         dynrnn::SequenceBatch<Scalar>& share) {
  if (!comm) return model.evaluate(batch);
  dynrnn::shard_batch(batch, comm->rank(), comm->size(), share);
  return dynrnn::reduce_metrics(model.evaluate(share), *comm);
}

}  // namespace

int main(int argc, char** argv) {
  examples::Distributed dist(argc, argv);
  dynrnn::Communicator* comm = dist.comm();
  CLI::App app{"Train an LSTM to count the ones in variable-length binary sequences (dynrnn example)."};
  std::string task_name = "random";
  int steps = 1000, batch_size = 50, hidden = 64, eval_size = 1000, log_every = 20;
  float learning_rate = 0, clip_norm = 0;
  std::string optimizer = "rmsprop";
  std::uint64_t seed = 1;
  std::string csv_path = "count_ones_loss.csv", reduction_name = "mean";
  std::string checkpoint_path = "count_ones.safetensors", resume_path;
  int checkpoint_every = 200, validate_every = 100;
  std::string plot, precision_name = "float32";
  double require_accuracy = -1;
  app.add_option("--task", task_name, "random: random bits, target = number of ones; "
                                      "seed: the notebook's data, ones then padding, target = length")
      ->check(CLI::IsMember({"random", "seed"}))
      ->capture_default_str();
  app.add_option("--steps", steps, "Training steps")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--batch", batch_size, "Sequences per batch")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--optimizer", optimizer,
                 "rmsprop (TensorFlow 1.x), adam or adamw (PyTorch's), sgd (momentum 0.9, Nesterov)")
      ->check(CLI::IsMember({"rmsprop", "adam", "adamw", "sgd"}))
      ->capture_default_str();
  app.add_option("--lr", learning_rate, "Learning rate [default: 0.01, and 0.1 for sgd]")->check(CLI::PositiveNumber);
  app.add_option("--clip-norm", clip_norm, "Clip the gradients to this global L2 norm; 0: no clipping")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--hidden", hidden, "LSTM hidden units")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seed", seed, "Seed for initialisation and data")->capture_default_str();
  app.add_option("--loss", reduction_name, "Batch loss: mean over the batch, or sum (the notebook's tf.reduce_sum)")
      ->check(CLI::IsMember({"sum", "mean"}))
      ->capture_default_str();
  // The last --csv and --checkpoint win, so that scripts can set defaults and users override them.
  app.add_option("--csv", csv_path,
                 "Where to write the loss curve (step,loss,accuracy,validation_loss,validation_accuracy)")
      ->capture_default_str()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--eval", eval_size, "Held-out sequences evaluated at the end")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--log-every", log_every, "Print progress every N steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--checkpoint", checkpoint_path, "Where to save checkpoints (safetensors)")
      ->capture_default_str()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--checkpoint-every", checkpoint_every, "Save a checkpoint every N steps and at the end; 0: never")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--resume", resume_path, "Continue training from this checkpoint, up to --steps in all");
  app.add_option("--validate-every", validate_every,
                 "Evaluate a fixed validation batch of 500 sequences every N steps (CSV columns 4-5); 0: never")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--precision", precision_name,
                 "Arithmetic of the LSTM's matrix products: float32, or bfloat16 (operands rounded, float32 sums)")
      ->check(CLI::IsMember({"float32", "bfloat16"}))
      ->capture_default_str();
  bool int8 = false;
  app.add_flag("--int8", int8,
               "Also evaluate the trained model with its products in int8, calibrated on 256 training sequences "
               "(--require-accuracy then applies to both)");
  app.add_option("--plot", plot, "Draw the loss curves into this PNG file (needs gnuplot)");
  app.add_option("--require-accuracy", require_accuracy,
                 "Exit with status 1 when the held-out accuracy is below this value");
  CLI11_PARSE(app, argc, argv);
  if (batch_size < dist.size() || eval_size < dist.size()) {
    std::fprintf(stderr, "count_ones: --batch %d and --eval %d must be at least the %d processes\n", batch_size,
                 eval_size, dist.size());
    return 2;
  }

  const Task task = task_name == "seed" ? Task::seed : Task::random_bits;
  const auto reduction = reduction_name == "mean" ? dynrnn::Reduction::mean : dynrnn::Reduction::sum;
  std::ofstream csv;  // rank 0's (the other ranks write nothing)
  if (dist.root()) {
    csv.open(csv_path);
    if (!csv) {
      std::cerr << "count_ones: cannot open '" << csv_path << "' for writing\n";
      return dist.fail(2, "count_ones: rank 0 cannot write its CSV");
    }
    csv << "step,loss,accuracy,validation_loss,validation_accuracy\n";
  }

  dynrnn::Output output = dynrnn::Output::classes(kClasses);
  output.reduction = reduction;
  // Embedding(2 -> 2) -> LSTM(H) -> last valid output -> Dense(H -> 15), weights from `seed`.
  Model model(dynrnn::Input::tokens(2, 2), dynrnn::LSTMCell<Scalar>(2, hidden), output, seed);
  const dynrnn::Precision precision = dynrnn::precision_from_string(precision_name, "--precision");
  model.set_precision(precision);
  set_optimizer(model, optimizer, learning_rate);
  model.set_clip_norm(clip_norm);
  dynrnn::Checkpoint<Scalar> checkpoint;
  model.add_to(checkpoint);
  const Scalar lr = model.learning_rate();
  // Disjoint streams: training batches, the validation batch, the held-out batch.
  dynrnn::Rng train_rng(seed * 2 + 1), eval_rng(seed * 2 + 2), validation_rng(seed * 2 + 3);
  dynrnn::SequenceBatch<Scalar> batch, validation, share;  // share: this rank's part of a batch
  make_batch(task, 500, validation_rng, validation);

  // What must match for a resumed run to continue the same curve; the layer sizes are
  // checked by the checkpoint itself.
  std::ostringstream config;
  config << "task=" << task_name << " batch=" << batch_size << " optimizer=" << optimizer << " lr=" << lr
         << " clip_norm=" << clip_norm << " loss=" << reduction_name << " seed=" << seed;
  if (precision != dynrnn::Precision::float32) config << " precision=" << precision_name;
  if (!resume_path.empty()) {
    try {
      if (comm)
        dynrnn::load_checkpoint_from_root(checkpoint, resume_path, *comm);  // rank 0 reads it for all
      else
        checkpoint.load(resume_path);
    } catch (const dynrnn::CheckpointError& e) {
      std::cerr << "count_ones: cannot resume: " << e.what() << "\n";
      return 2;
    }
    const auto& meta = checkpoint.metadata();
    auto rng_state = meta.find("count_ones.train_rng");
    auto saved_config = meta.find("count_ones.config");
    if (rng_state == meta.end() || saved_config == meta.end()) {
      std::cerr << "count_ones: cannot resume: '" << resume_path << "' was not written by count_ones\n";
      return 2;
    }
    std::istringstream rng_text(rng_state->second);
    if (!(rng_text >> train_rng)) {
      std::cerr << "count_ones: cannot resume: '" << resume_path << "' holds a corrupt count_ones.train_rng\n";
      return 2;
    }
    if (saved_config->second != config.str())
      std::cerr << "count_ones: warning: resuming a run made with " << saved_config->second << " with "
                << config.str() << "; the loss curve will differ from an uninterrupted run\n";
    std::printf("count_ones: resumed from %s at step %lld\n", resume_path.c_str(),
                static_cast<long long>(model.progress().step));
  }
  if (comm) {  // every rank starts from rank 0's model, and averages its gradients with the others
    dynrnn::broadcast_model(model, *comm);
    model.set_communicator(comm);
  }
  const int first_step = int(model.progress().step) + 1;
  auto save_checkpoint = [&](int step) {
    std::ostringstream rng_state;
    rng_state << train_rng;
    checkpoint.metadata()["count_ones.train_rng"] = rng_state.str();
    checkpoint.metadata()["count_ones.config"] = config.str();
    if (dist.root()) checkpoint.save(checkpoint_path, step);
  };

  std::printf("count_ones: task %s, %d steps, batch %d, LSTM H=%d in %s, %s lr %g%s, seed %llu\n",
              task_name.c_str(), steps, batch_size, hidden, precision_name.c_str(), optimizer.c_str(), double(lr),
              clip_norm > 0 ? (", clip norm " + std::to_string(clip_norm)).c_str() : "",
              static_cast<unsigned long long>(seed));
  if (comm) std::printf("count_ones: data parallel over %d processes, %d or %d sequences each\n", comm->size(),
                        batch_size / comm->size(), (batch_size + comm->size() - 1) / comm->size());
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto window_start = start;
  csv.precision(std::numeric_limits<double>::max_digits10);  // exact, for comparing runs
  for (int step = first_step; step <= steps; ++step) {
    make_batch(task, batch_size, train_rng, batch);  // the global batch, the same on every rank
    if (comm) dynrnn::shard_batch(batch, comm->rank(), comm->size(), share);
    const dynrnn::SequenceBatch<Scalar>& mine = comm ? share : batch;
    const double loss = model.train_step(mine);
    const double acc = accuracy(model.outputs(), mine.labels, comm);
    csv << step << ',' << loss << ',' << acc << ',';
    if (validate_every > 0 && (step % validate_every == 0 || step == steps)) {
      const dynrnn::Metrics v = evaluate(model, validation, comm, share);
      csv << v.loss << ',' << v.accuracy;
    } else {
      csv << ',';
    }
    csv << '\n';
    if (step % log_every == 0 || step == steps) {
      const auto now = Clock::now();
      const double seconds = std::chrono::duration<double>(now - window_start).count();
      const int in_window = std::min(step - first_step + 1, step % log_every == 0 ? log_every : step % log_every);
      std::printf("step %5d  loss %9.4f  batch accuracy %.3f  %7.1f steps/s\n", step, loss, acc, in_window / seconds);
      std::fflush(stdout);
      window_start = now;
    }
    if (checkpoint_every > 0 && (step % checkpoint_every == 0 || step == steps)) {
      try {
        save_checkpoint(step);
      } catch (const dynrnn::CheckpointError& e) {
        std::cerr << "count_ones: " << e.what() << "\n";
        return dist.fail(2, "count_ones: rank 0 cannot save the checkpoint");
      }
    }
  }
  if (first_step > steps) std::printf("count_ones: the checkpoint is already at step %d of %d\n", first_step - 1, steps);
  const double train_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  csv.close();
  std::printf("trained %d steps in %.2f s; loss curve written to %s\n", std::max(0, steps - first_step + 1),
              train_seconds, csv_path.c_str());
  if (checkpoint_every > 0 && first_step <= steps) std::printf("checkpoint: %s\n", checkpoint_path.c_str());
  if (dist.root()) examples::plot_if_asked("count_ones", plot, csv_path, "count ones, " + config.str(), 1, 3);

  make_batch(task, eval_size, eval_rng, batch);
  const double acc = evaluate(model, batch, comm, share).accuracy;
  std::printf("held-out accuracy: %.4f\n", acc);
  if (precision != dynrnn::Precision::float32) {  // the same trained weights, evaluated in float32 too
    model.set_precision(dynrnn::Precision::float32);
    std::printf("held-out accuracy in float32: %.4f\n", evaluate(model, batch, comm, share).accuracy);
    model.set_precision(precision);
  }
  if (require_accuracy >= 0 && acc < require_accuracy) {  // every rank sees the same accuracy
    std::fprintf(stderr, "count_ones: held-out accuracy %.4f is below the required %.4f\n", acc, require_accuracy);
    return 1;
  }
  if (int8) {  // the same trained weights, the LSTM's products in int8
    dynrnn::Rng calibration_rng(seed * 2 + 4);
    dynrnn::SequenceBatch<Scalar> calibration;
    make_batch(task, 256, calibration_rng, calibration);
    const dynrnn::Precision trained = model.precision();
    model.set_precision(dynrnn::Precision::float32);
    model.calibrate_int8(calibration);
    model.set_precision(dynrnn::Precision::int8);
    const double acc8 = evaluate(model, batch, comm, share).accuracy;
    std::printf("held-out accuracy in int8: %.4f (input bound %.3g)\n", acc8, double(model.cell().int8_input_bound()));
    model.set_precision(trained);
    if (require_accuracy >= 0 && acc8 < require_accuracy) {
      std::fprintf(stderr, "count_ones: held-out accuracy in int8 %.4f is below the required %.4f\n", acc8,
                   require_accuracy);
      return 1;
    }
  }
  return 0;
}
