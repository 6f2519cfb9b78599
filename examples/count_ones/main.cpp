// count_ones: train an LSTM to count the ones in a variable-length binary sequence.
//
// Model: Embedding(2 -> 2) -> LSTM(H) -> last valid output -> Dense(H -> 15) -> softmax.
// Each batch holds sequences of random length in [3, 15), padded to the longest; the
// target is the number of ones, so the padding zeros must not be counted: dynamic_rnn
// never reads them.
//
//   count_ones                      # defaults: 1000 steps, batch 50, RMSProp lr 0.01
//   count_ones --optimizer adam --clip-norm 5   # Adam, gradients clipped to a global norm of 5
//   count_ones --task seed          # ones then padding, target = length
//   count_ones --steps 2000 --resume count_ones.safetensors   # continue a run
//   count_ones --help
//
// Every 200 steps (and at the end) the model, the optimiser's slots, the step and the
// data generator's state are saved to a checkpoint; --resume continues from one exactly
// as if the run had never stopped.
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
#include <variant>
#include <vector>

namespace {

using Scalar = float;
constexpr int kMinLength = 3;   // sequence lengths are drawn from [kMinLength, kMaxLength)
constexpr int kMaxLength = 15;
constexpr int kClasses = 15;    // counts 0..14

enum class Task { random_bits, seed };

/// A time-major batch: ids[t * B + b] is the token of row b at step t (0 at padding).
struct Batch {
  dynrnn::Index max_time = 0, batch = 0;
  std::vector<int> ids, lengths, targets;
};

Batch make_batch(Task task, int batch_size, dynrnn::Rng& rng) {
  Batch b;
  b.batch = batch_size;
  b.lengths.resize(batch_size);
  for (int& len : b.lengths) len = int(dynrnn::uniform_int(rng, kMinLength, kMaxLength));
  b.max_time = *std::max_element(b.lengths.begin(), b.lengths.end());
  b.ids.assign(b.max_time * b.batch, 0);
  b.targets.assign(batch_size, 0);
  for (int r = 0; r < batch_size; ++r)
    for (int t = 0; t < b.lengths[r]; ++t) {
      const int bit = task == Task::seed ? 1 : int(dynrnn::uniform_int(rng, 0, 2));
      b.ids[t * batch_size + r] = bit;
      b.targets[r] += bit;
    }
  return b;
}

/// The optimisers --optimizer chooses from; all share one interface.
using Optimizer = std::variant<dynrnn::RMSProp<Scalar>, dynrnn::Adam<Scalar>, dynrnn::AdamW<Scalar>, dynrnn::SGD<Scalar>>;

/// The optimiser called `name`, with the example's learning rate for it unless `lr` > 0.
Optimizer make_optimizer(const std::string& name, Scalar lr) {
  if (name == "adam") return dynrnn::Adam<Scalar>(lr > 0 ? lr : Scalar(0.01));
  if (name == "adamw") return dynrnn::AdamW<Scalar>(lr > 0 ? lr : Scalar(0.01));
  if (name == "sgd") {
    dynrnn::SGDOptions<Scalar> o;
    o.learning_rate = lr > 0 ? lr : Scalar(0.1);
    o.momentum = Scalar(0.9);
    o.nesterov = true;
    return dynrnn::SGD<Scalar>(o);
  }
  return dynrnn::RMSProp<Scalar>(lr > 0 ? lr : Scalar(0.01));  // TensorFlow 1.x RMSProp
}

struct Model {
  dynrnn::Embedding<Scalar> embedding{2, 2};
  dynrnn::LSTMCell<Scalar> lstm;
  dynrnn::Dense<Scalar> output;
  Optimizer opt;
  Scalar clip_norm;                       // global-norm clipping of all gradients; 0: none
  dynrnn::Checkpoint<Scalar> checkpoint;  // refers to the members above

  Model(int hidden, std::uint64_t seed, const std::string& optimizer, Scalar learning_rate, Scalar max_norm)
      : lstm(2, hidden), output(hidden, kClasses), opt(make_optimizer(optimizer, learning_rate)), clip_norm(max_norm) {
    dynrnn::Rng rng(seed);
    embedding.reset_parameters(rng);
    lstm.reset_parameters(rng);
    output.reset_parameters(rng);
    checkpoint.add("embedding", embedding).add("lstm", lstm).add("output", output);
    // The optimiser's slots under its own name ("rmsprop" as before, "adam", ...).
    std::visit([&](auto& o) { checkpoint.add(optimizer, o); }, opt);
  }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  dynrnn::Matrix<Scalar> logits(const Batch& b) const {
    const auto x = embedding.forward_sequences(b.ids, b.max_time, b.batch);
    const auto fwd = dynrnn::dynamic_rnn(lstm, x, b.lengths);
    return output.forward(dynrnn::gather_last_outputs(fwd.outputs, b.lengths));
  }
};

double accuracy(const dynrnn::Matrix<Scalar>& logits, const std::vector<int>& targets) {
  int correct = 0;
  for (dynrnn::Index r = 0; r < logits.rows(); ++r) {
    dynrnn::Index best;
    logits.row(r).maxCoeff(&best);
    correct += best == targets[r];
  }
  return double(correct) / double(logits.rows());
}

struct StepResult {
  double loss, accuracy;
};

/// One training step's activations and gradients, kept from step to step: a step allocates
/// nothing unless its max_time differs from the previous step's, which resizes the padded
/// tensors (see the README's section on speed).
struct TrainStep {
  dynrnn::Tensor3<Scalar> x, d_outputs;                    // [T, B, 2], [T, B, H]
  dynrnn::DynamicRNNResult<dynrnn::LSTMCell<Scalar>> fwd;  // outputs [T, B, H] and the cache
  dynrnn::DynamicRNNGradients<dynrnn::LSTMCell<Scalar>> d_lstm;
  dynrnn::LSTMState<Scalar> zero;                          // initial state and d_final, (B, H)
  dynrnn::Matrix<Scalar> last, logits, d_last;             // (B, H), (B, 15), (B, H)
  dynrnn::SoftmaxCrossEntropy<Scalar> ce;
  dynrnn::DenseGradients<Scalar> d_output;
  dynrnn::EmbeddingGradients<Scalar> d_embedding;

  explicit TrainStep(const Model& m)
      : d_lstm(m.lstm), d_output(m.output.make_gradients()), d_embedding(m.embedding.make_gradients()) {}

  StepResult run(Model& m, const Batch& b, dynrnn::Reduction reduction) {
    if (zero.h.rows() != b.batch) zero = m.lstm.zero_state(b.batch);
    // Forward.
    m.embedding.forward_sequences(b.ids, b.max_time, b.batch, x);
    dynrnn::dynamic_rnn(m.lstm, x, b.lengths, zero, fwd);
    dynrnn::gather_last_outputs(fwd.outputs, b.lengths, last);
    m.output.forward(last, logits);
    dynrnn::softmax_cross_entropy(logits, b.targets, reduction, ce);

    // Backward; parameter gradients add up, so they start from zero.
    d_output.setZero();
    d_lstm.setZero();
    d_embedding.setZero();
    m.output.backward(last, ce.d_logits, d_output, d_last);
    dynrnn::gather_last_outputs_backward(d_last, b.lengths, b.max_time, d_outputs);
    dynrnn::dynamic_rnn_backward(m.lstm, fwd, d_outputs, zero, d_lstm);
    m.embedding.backward_sequences(b.ids, d_lstm.inputs, d_embedding);

    if (m.clip_norm > 0) dynrnn::clip_by_global_norm(m.clip_norm, d_lstm, d_output, d_embedding);
    std::visit(
        [&](auto& opt) {
          opt.apply(m.lstm, d_lstm);
          opt.apply(m.output, d_output);
          opt.apply(m.embedding, d_embedding);
        },
        m.opt);
    return {double(ce.loss), accuracy(logits, b.targets)};
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train an LSTM to count the ones in variable-length binary sequences (dynrnn example)."};
  std::string task_name = "random";
  int steps = 1000, batch_size = 50, hidden = 64, eval_size = 1000, log_every = 20;
  float learning_rate = 0, clip_norm = 0;
  std::string optimizer = "rmsprop";
  std::uint64_t seed = 1;
  std::string csv_path = "count_ones_loss.csv", reduction_name = "mean";
  std::string checkpoint_path = "count_ones.safetensors", resume_path;
  int checkpoint_every = 200;
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
  app.add_option("--csv", csv_path, "Where to write the loss curve (step,loss,accuracy)")
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
  app.add_option("--require-accuracy", require_accuracy,
                 "Exit with status 1 when the held-out accuracy is below this value");
  CLI11_PARSE(app, argc, argv);

  const Task task = task_name == "seed" ? Task::seed : Task::random_bits;
  const auto reduction = reduction_name == "mean" ? dynrnn::Reduction::mean : dynrnn::Reduction::sum;
  std::ofstream csv(csv_path);
  if (!csv) {
    std::cerr << "count_ones: cannot open '" << csv_path << "' for writing\n";
    return 2;
  }
  csv << "step,loss,accuracy\n";

  Model model(hidden, seed, optimizer, learning_rate, clip_norm);
  const Scalar lr = std::visit([](const auto& o) { return o.learning_rate(); }, model.opt);
  dynrnn::Rng train_rng(seed * 2 + 1), eval_rng(seed * 2 + 2);  // disjoint streams

  // What must match for a resumed run to continue the same curve; the layer sizes are
  // checked by the checkpoint itself.
  std::ostringstream config;
  config << "task=" << task_name << " batch=" << batch_size << " optimizer=" << optimizer << " lr=" << lr
         << " clip_norm=" << clip_norm << " loss=" << reduction_name << " seed=" << seed;
  int first_step = 1;
  if (!resume_path.empty()) {
    std::int64_t saved_step = 0;
    try {
      saved_step = model.checkpoint.load(resume_path);
    } catch (const dynrnn::CheckpointError& e) {
      std::cerr << "count_ones: cannot resume: " << e.what() << "\n";
      return 2;
    }
    const auto& meta = model.checkpoint.metadata();
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
    first_step = int(saved_step) + 1;
    std::printf("count_ones: resumed from %s at step %d\n", resume_path.c_str(), int(saved_step));
  }
  auto save_checkpoint = [&](int step) {
    std::ostringstream rng_state;
    rng_state << train_rng;
    model.checkpoint.metadata()["count_ones.train_rng"] = rng_state.str();
    model.checkpoint.metadata()["count_ones.config"] = config.str();
    model.checkpoint.save(checkpoint_path, step);
  };

  std::printf("count_ones: task %s, %d steps, batch %d, LSTM H=%d, %s lr %g%s, seed %llu\n", task_name.c_str(),
              steps, batch_size, hidden, optimizer.c_str(), double(lr),
              clip_norm > 0 ? (", clip norm " + std::to_string(clip_norm)).c_str() : "",
              static_cast<unsigned long long>(seed));
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto window_start = start;
  csv.precision(std::numeric_limits<double>::max_digits10);  // exact, for comparing runs
  TrainStep step_state(model);
  for (int step = first_step; step <= steps; ++step) {
    const Batch b = make_batch(task, batch_size, train_rng);
    const StepResult r = step_state.run(model, b, reduction);
    csv << step << ',' << r.loss << ',' << r.accuracy << '\n';
    if (step % log_every == 0 || step == steps) {
      const auto now = Clock::now();
      const double seconds = std::chrono::duration<double>(now - window_start).count();
      const int in_window = std::min(step - first_step + 1, step % log_every == 0 ? log_every : step % log_every);
      std::printf("step %5d  loss %9.4f  batch accuracy %.3f  %7.1f steps/s\n", step, r.loss, r.accuracy,
                  in_window / seconds);
      std::fflush(stdout);
      window_start = now;
    }
    if (checkpoint_every > 0 && (step % checkpoint_every == 0 || step == steps)) {
      try {
        save_checkpoint(step);
      } catch (const dynrnn::CheckpointError& e) {
        std::cerr << "count_ones: " << e.what() << "\n";
        return 2;
      }
    }
  }
  if (first_step > steps) std::printf("count_ones: the checkpoint is already at step %d of %d\n", first_step - 1, steps);
  const double train_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("trained %d steps in %.2f s; loss curve written to %s\n", std::max(0, steps - first_step + 1),
              train_seconds, csv_path.c_str());
  if (checkpoint_every > 0 && first_step <= steps) std::printf("checkpoint: %s\n", checkpoint_path.c_str());

  const Batch held_out = make_batch(task, eval_size, eval_rng);
  const double acc = accuracy(model.logits(held_out), held_out.targets);
  std::printf("held-out accuracy: %.4f\n", acc);
  if (require_accuracy >= 0 && acc < require_accuracy) {
    std::fprintf(stderr, "count_ones: held-out accuracy %.4f is below the required %.4f\n", acc, require_accuracy);
    return 1;
  }
  return 0;
}
