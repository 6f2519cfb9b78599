// adding_problem: the test of long-range memory from Hochreiter and Schmidhuber's LSTM paper.
//
// Each step holds two features: a value drawn uniformly from [0, 1) and a marker. Exactly two
// steps are marked, one in the first half of the sequence and one in the second; the target is
// the sum of their two values. Lengths vary, drawn from [T/2, T], so the model must carry the
// first marked value across up to T steps of noise and padding never counts. Predicting the
// mean, 1, gives a mean squared error of 1/6 = 0.167; the task counts as solved below 0.01.
//
// Model: LSTM(H) -> last valid output -> Dense(H -> 1) -> mean squared error; Adam with the
// gradients clipped to a global norm; all through SequenceModel and fit().
//
//   adding_problem                          # T = 100, until the validation MSE is below 0.01
//   adding_problem --max-time 200 --plot adding.png
//   adding_problem --resume adding_problem.safetensors      # continue a run exactly
//   adding_problem --precision bfloat16     # the LSTM's products in bfloat16 (mixed precision)
//   adding_problem --int8                   # also evaluate the trained model with int8 products
//   adding_problem --help
#include "../common/loss_plot.hpp"

#include <dynrnn/dynrnn.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

namespace {

using Scalar = float;
using Model = dynrnn::SequenceModel<dynrnn::LSTMCell<Scalar>>;

/// `count` sequences of the adding problem with lengths in [max_time / 2, max_time].
dynrnn::SequenceDataset<Scalar> adding_data(std::size_t count, int max_time, dynrnn::Rng& rng) {
  dynrnn::SequenceDataset<Scalar> data;
  for (std::size_t i = 0; i < count; ++i) {
    const int length = int(dynrnn::uniform_int(rng, max_time / 2, max_time + 1));
    dynrnn::Matrix<Scalar> steps(length, 2);  // (value, marker) per step
    for (int t = 0; t < length; ++t) steps(t, 0) = Scalar(dynrnn::uniform01(rng));
    steps.col(1).setZero();
    const int first = int(dynrnn::uniform_int(rng, 0, length / 2));
    const int second = int(dynrnn::uniform_int(rng, length / 2, length));
    steps(first, 1) = steps(second, 1) = 1;
    dynrnn::Vector<Scalar> target(1);
    target(0) = steps(first, 0) + steps(second, 0);
    data.add(std::move(steps), target);
  }
  return data;
}

/// Ends training once the validation loss is below `target`.
struct StopAtLoss : dynrnn::FitCallback {
  double target;
  explicit StopAtLoss(double t) : target(t) {}
  void on_epoch_end(const dynrnn::FitEpoch& e, dynrnn::FitControl& control) override {
    if (e.has_validation && e.validation.loss < target) {
      control.stop = true;
      control.reason = "validation MSE " + std::to_string(e.validation.loss) + " is below " + std::to_string(target);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train an LSTM on the adding problem, a test of long-range memory (dynrnn example)."};
  int max_time = 100, hidden = 64, epochs = 60, batch = 50, train_size = 10000, seed = 1, patience = 10;
  float learning_rate = 0.002f, clip_norm = 1.0f, stop_below = 0.01f;
  double require_mse = -1;
  std::string csv_path = "adding_problem_loss.csv", checkpoint_path = "adding_problem.safetensors", resume_path, plot;
  std::string precision_name = "float32";
  int checkpoint_every = 500;
  app.add_option("--max-time,-T", max_time, "Longest sequence; lengths are drawn from [T/2, T]")
      ->check(CLI::Range(4, 100000))
      ->capture_default_str();
  app.add_option("--hidden", hidden, "LSTM hidden units")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--epochs", epochs, "Most epochs over the training set")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--batch", batch, "Sequences per batch")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--train-size", train_size, "Training sequences")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--lr", learning_rate, "Adam's learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--clip-norm", clip_norm, "Clip the gradients to this global L2 norm; 0: no clipping")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--stop-below", stop_below, "Stop once the validation MSE is below this; 0: run every epoch")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--patience", patience, "Stop after this many epochs without a better validation MSE")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", seed, "Seed for the weights, the data and the shuffling")->capture_default_str();
  app.add_option("--csv", csv_path, "Where to write the losses")->capture_default_str();
  app.add_option("--plot", plot, "Draw the loss curves into this PNG file (needs gnuplot)");
  app.add_option("--checkpoint", checkpoint_path, "Where to save checkpoints")->capture_default_str();
  app.add_option("--checkpoint-every", checkpoint_every, "Save every N steps (and at the end, and on Ctrl-C)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--resume", resume_path, "Continue training from this checkpoint");
  app.add_option("--precision", precision_name,
                 "Arithmetic of the LSTM's matrix products: float32, or bfloat16 (operands rounded, float32 sums)")
      ->check(CLI::IsMember({"float32", "bfloat16"}))
      ->capture_default_str();
  bool int8 = false;
  app.add_flag("--int8", int8,
               "Also evaluate the trained model with its products in int8, calibrated on the first 256 training "
               "sequences (--require-mse then applies to both)");
  app.add_option("--require-mse", require_mse, "Exit with status 1 when the test MSE is not below this value");
  CLI11_PARSE(app, argc, argv);

  // Disjoint data streams from one seed; the test set is drawn afresh, never trained on.
  dynrnn::Rng train_rng(std::uint64_t(seed) * 3 + 1), validation_rng(std::uint64_t(seed) * 3 + 2),
      test_rng(std::uint64_t(seed) * 3 + 3);
  const auto train = adding_data(std::size_t(train_size), max_time, train_rng);
  const auto validation = adding_data(1000, max_time, validation_rng);
  const auto test = adding_data(2000, max_time, test_rng);

  Model model(dynrnn::Input::features(2), dynrnn::LSTMCell<Scalar>(2, hidden), dynrnn::Output::values(1),
              std::uint64_t(seed));
  const dynrnn::Precision precision = dynrnn::precision_from_string(precision_name, "--precision");
  model.set_precision(precision);
  model.set_optimizer(dynrnn::Adam<Scalar>(learning_rate)).set_clip_norm(clip_norm);
  dynrnn::Checkpoint<Scalar> checkpoint;
  model.add_to(checkpoint);
  if (!resume_path.empty()) {
    try {
      checkpoint.load(resume_path);
    } catch (const dynrnn::CheckpointError& e) {
      std::cerr << "adding_problem: cannot resume: " << e.what() << "\n";
      return 2;
    }
    std::printf("adding_problem: resumed from %s at step %lld (epoch %lld)\n", resume_path.c_str(),
                static_cast<long long>(model.progress().step), static_cast<long long>(model.progress().epoch + 1));
  }

  std::printf("adding_problem: T = %d (lengths %d..%d), %d training sequences, LSTM H=%d in %s, Adam lr %g, "
              "clip %g\n",
              max_time, max_time / 2, max_time, train_size, hidden, precision_name.c_str(), double(learning_rate),
              double(clip_norm));
  std::printf("predicting 1 for every sequence gives a test MSE of %.4f\n", [&] {
    const auto all = test.all();
    return double((all.targets.array() - 1).square().mean());
  }());

  dynrnn::FitOptions options;
  options.epochs = epochs;
  options.batch_size = batch;
  options.seed = std::uint64_t(seed);
  dynrnn::CsvLog csv(csv_path, /*append=*/!resume_path.empty());
  dynrnn::CheckpointEvery<Scalar> saver(checkpoint, model.progress().step, checkpoint_path, checkpoint_every);
  dynrnn::EarlyStopping<dynrnn::LSTMCell<Scalar>> early(model, patience);
  StopAtLoss stop(stop_below);
  std::vector<dynrnn::FitCallback*> callbacks{&csv, &saver, &early};
  if (stop_below > 0) callbacks.push_back(&stop);

  const auto start = std::chrono::steady_clock::now();
  dynrnn::FitResult result;
  try {
    result = dynrnn::fit(model, train, validation, options, callbacks);
  } catch (const dynrnn::CheckpointError& e) {
    std::cerr << "adding_problem: " << e.what() << "\n";
    return 2;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const dynrnn::Metrics m = model.evaluate(test);
  std::printf("trained to step %lld (%lld epochs) in %.1f s; checkpoint: %s; losses: %s\n",
              static_cast<long long>(result.steps), static_cast<long long>(result.epochs), seconds,
              checkpoint_path.c_str(), csv_path.c_str());
  std::printf("test MSE: %.5f over %lld sequences\n", m.loss, static_cast<long long>(m.count));
  if (precision != dynrnn::Precision::float32) {  // the same trained weights, evaluated in float32 too
    model.set_precision(dynrnn::Precision::float32);
    std::printf("test MSE in float32: %.5f\n", model.evaluate(test).loss);
    model.set_precision(precision);
  }
  double mse8 = 0;
  if (int8) {  // the same trained weights, the LSTM's products in int8
    std::vector<std::size_t> first(std::min<std::size_t>(256, train.size()));
    std::iota(first.begin(), first.end(), std::size_t(0));
    dynrnn::SequenceBatch<Scalar> calibration;
    train.make_batch(first, calibration);
    model.set_precision(dynrnn::Precision::float32);
    model.calibrate_int8(calibration);
    model.set_precision(dynrnn::Precision::int8);
    mse8 = model.evaluate(test).loss;
    std::printf("test MSE in int8: %.5f (input bound %.3g)\n", mse8, double(model.cell().int8_input_bound()));
    model.set_precision(precision);
  }
  examples::plot_if_asked("adding_problem", plot, csv_path, "adding problem, T = " + std::to_string(max_time));
  if (result.interrupted) return 130;  // the shell's status for a run ended by SIGINT
  if (require_mse >= 0 && !(m.loss < require_mse)) {
    std::fprintf(stderr, "adding_problem: test MSE %.5f is not below the required %.5f\n", m.loss, require_mse);
    return 1;
  }
  if (int8 && require_mse >= 0 && !(mse8 < require_mse)) {
    std::fprintf(stderr, "adding_problem: test MSE in int8 %.5f is not below the required %.5f\n", mse8,
                 require_mse);
    return 1;
  }
  return 0;
}
