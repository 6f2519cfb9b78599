// char_model: a character-level language model of English words, trained on a real word list.
//
// Model: Embedding(V -> E) -> 2-layer LSTM (optional dropout between the layers) ->
// Dense(H -> V) -> softmax cross-entropy at every valid step. Each word is one sequence: the input is a
// boundary token followed by the word's characters, the target at each step is the next
// character, and at the last step the boundary token (end of word). Words have different
// lengths, so every batch is ragged, and padded steps count for nothing.
//
//   char_model                                  # defaults: /usr/share/dict/words, 4 epochs
//   char_model --epochs 1 --hidden 128          # quicker
//   char_model --resume char_model.safetensors  # continue a run exactly
//   char_model --precision bfloat16             # the LSTMs' products in bfloat16 (mixed precision)
//   char_model --int8                           # also evaluate the trained model in int8
//   char_model --help
//   mpirun -np 2 char_model                     # data parallel: 2 processes share every batch
//
// RMSProp starts at --lr and is multiplied by --lr-decay after every epoch. The defaults
// (4 epochs, lr 0.01 halved per epoch, no dropout) came from short comparisons on this word
// list: a constant rate learned more slowly, and dropout 0.1 cost 0.06 bits per character
// after 4 epochs, since a model this size still underfits the list in that time.
//
// The model is a dynrnn::SequenceModel trained by dynrnn::fit(). It prints the training loss as
// it goes, the validation loss in bits per character on a held-out 5% of the words after every
// epoch (every character and the end of each word count), and 20 sampled words at the end.
// Every --checkpoint-every steps, at the end and on Ctrl-C it saves the model, the optimiser,
// the step, the position in the epoch and the dropout generator's state; --plot draws the loss
// curves.
//
// Under mpirun with several processes, fit() trains data-parallel (../common/distributed.hpp):
// each rank takes its share of every batch of --batch words, and rank 0 alone prints and writes.
#include "../common/distributed.hpp"
#include "../common/loss_plot.hpp"

#include <dynrnn/dynrnn.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Scalar = float;
using Stack = dynrnn::StackedCell<dynrnn::LSTMCell<Scalar>>;
constexpr int kBoundary = 0;  // the token before and after every word

/// The words, split into training and validation sets, and the character vocabulary.
struct Corpus {
  std::vector<std::string> train, validation;
  std::vector<char> chars;  // chars[id - 1] is the character of token id
  int id[256] = {};         // token id of each byte (0: not in the vocabulary)
  int skipped = 0;          // words with bytes outside printable ASCII

  int vocab_size() const { return int(chars.size()) + 1; }
};

Corpus load_corpus(const std::string& path, double validation_fraction, std::uint64_t seed) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open '" + path + "' (on Debian: apt-get install wamerican)");
  Corpus c;
  std::vector<std::string> words;
  bool seen[256] = {};
  for (std::string w; std::getline(in, w);) {
    if (w.empty()) continue;
    if (!std::all_of(w.begin(), w.end(), [](char ch) { return ch > ' ' && ch <= '~'; })) {
      ++c.skipped;
      continue;
    }
    for (unsigned char ch : w) seen[ch] = true;
    words.push_back(w);
  }
  if (words.size() < 20) throw std::runtime_error("'" + path + "' holds fewer than 20 usable words");
  for (int ch = 0; ch < 256; ++ch)
    if (seen[ch]) {
      c.chars.push_back(char(ch));
      c.id[ch] = int(c.chars.size());
    }
  dynrnn::Rng rng(seed);
  std::shuffle(words.begin(), words.end(), rng);
  const auto n_validation = std::max<std::size_t>(1, std::size_t(double(words.size()) * validation_fraction));
  c.validation.assign(words.begin(), words.begin() + std::ptrdiff_t(n_validation));
  c.train.assign(words.begin() + std::ptrdiff_t(n_validation), words.end());
  return c;
}

/// The words as token sequences: the input is the boundary token and the word's characters,
/// the label at each step the next character, and at the last step the boundary token.
dynrnn::SequenceDataset<Scalar> word_data(const Corpus& c, const std::vector<std::string>& words) {
  dynrnn::SequenceDataset<Scalar> data;
  for (const std::string& w : words) {
    std::vector<int> inputs{kBoundary}, labels;
    for (unsigned char ch : w) {
      inputs.push_back(c.id[ch]);
      labels.push_back(c.id[ch]);
    }
    labels.push_back(kBoundary);
    data.add(std::move(inputs), std::move(labels));
  }
  return data;
}

using Model = dynrnn::SequenceModel<Stack>;

/// Prints the validation loss in bits per character after each epoch.
struct BitsPerChar : dynrnn::FitCallback {
  void on_epoch_end(const dynrnn::FitEpoch& e, dynrnn::FitControl&) override {
    if (e.has_validation) std::printf("epoch %lld: validation %.4f bits/char\n", static_cast<long long>(e.epoch + 1),
                                      e.validation.loss / std::log(2.0));
  }
};

/// `count` words sampled one character at a time, with softmax temperature `temperature`.
std::vector<std::string> sample(Model& m, const Corpus& c, int count, double temperature, dynrnn::Rng& rng) {
  Stack& lstm = m.cell();
  lstm.set_training(false);
  std::vector<int> token(std::size_t(count), kBoundary), lengths(std::size_t(count), 1);
  std::vector<std::string> words(static_cast<std::size_t>(count));
  std::vector<bool> done(std::size_t(count), false);
  auto state = lstm.zero_state(count);
  dynrnn::DynamicRNNResult<Stack> r;
  dynrnn::Tensor3<Scalar> x;
  for (int t = 0; t < 40; ++t) {
    m.embedding()->forward_sequences(token, 1, count, x);
    dynrnn::dynamic_rnn(lstm, x, lengths, state, r, dynrnn::ForwardMode::inference);  // no backward follows
    state = r.final_state;
    const dynrnn::Matrix<Scalar> logits = m.head().forward(dynrnn::detail::as_matrix(r.outputs));
    for (int b = 0; b < count; ++b) {
      if (done[std::size_t(b)]) continue;
      const Eigen::ArrayXd z = (logits.row(b).cast<double>().transpose().array() / temperature);
      const Eigen::ArrayXd p = (z - z.maxCoeff()).exp();
      double u = dynrnn::uniform(rng, 0, p.sum());
      int next = 0;
      while (next + 1 < int(p.size()) && u >= p(next)) u -= p(next++);
      token[std::size_t(b)] = next;
      if (next == kBoundary)
        done[std::size_t(b)] = true;
      else
        words[std::size_t(b)] += c.chars[std::size_t(next - 1)];
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
  }
  return words;
}

}  // namespace

int main(int argc, char** argv) {
  examples::Distributed dist(argc, argv);
  dynrnn::Communicator* comm = dist.comm();
  CLI::App app{"Train a 2-layer LSTM character model on a word list, report bits per character, sample words"};
  std::string words_path = "/usr/share/dict/words", checkpoint_path = "char_model.safetensors", resume_path;
  std::string csv_path = "char_model_loss.csv", plot, precision_name = "float32";
  int epochs = 4, batch_size = 64, embedding_dim = 32, hidden = 256, samples = 20, log_every = 200;
  int checkpoint_every = 500, max_steps = 0;
  double dropout = 0, temperature = 0.8, require_bpc = -1, lr_decay = 0.5;
  Scalar learning_rate = 0.01f;
  std::uint64_t seed = 1;
  app.add_option("--words", words_path, "Word list, one word per line")->capture_default_str();
  app.add_option("--epochs", epochs, "Passes over the training words")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--max-steps", max_steps, "Stop after this many steps in all (0: run every epoch)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--batch", batch_size, "Words per batch")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--embedding", embedding_dim, "Embedding width")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--hidden", hidden, "LSTM units per layer")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--dropout", dropout, "Dropout between the LSTM layers while training")
      ->check(CLI::Range(0.0, 0.99))->capture_default_str();
  app.add_option("--lr", learning_rate, "RMSProp learning rate of the first epoch")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--lr-decay", lr_decay, "The learning rate is multiplied by this after every epoch")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--seed", seed, "Seed for the split, initialisation, batches, dropout and samples")
      ->capture_default_str();
  app.add_option("--samples", samples, "Words to sample at the end")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--temperature", temperature, "Softmax temperature of the samples")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--log-every", log_every, "Without a terminal, print the training loss every this many steps")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--checkpoint", checkpoint_path, "Where to save checkpoints")->capture_default_str();
  app.add_option("--checkpoint-every", checkpoint_every, "Save every this many steps and at the end (0: never)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--resume", resume_path, "Continue training from this checkpoint");
  app.add_option("--csv", csv_path, "Where to write the losses")->capture_default_str();
  app.add_option("--plot", plot, "Draw the loss curves into this PNG file (needs gnuplot)");
  app.add_option("--precision", precision_name,
                 "Arithmetic of the LSTMs' matrix products: float32, or bfloat16 (operands rounded, float32 sums)")
      ->check(CLI::IsMember({"float32", "bfloat16"}))
      ->capture_default_str();
  app.add_option("--require-bpc", require_bpc, "Exit with status 1 when the final validation bits per character exceed this");
  bool int8 = false;
  double require_int8_gap = -1;
  app.add_flag("--int8", int8,
               "Also evaluate the trained model with the LSTMs' products in int8, calibrated on 256 training words");
  app.add_option("--require-int8-gap", require_int8_gap,
                 "With --int8: exit with status 1 when int8 adds more than this many bits/char");
  CLI11_PARSE(app, argc, argv);

  Corpus corpus;
  try {
    corpus = load_corpus(words_path, 0.05, seed);
  } catch (const std::exception& e) {
    std::cerr << "char_model: " << e.what() << "\n";
    return 2;
  }
  if (batch_size < dist.size()) {
    std::cerr << "char_model: --batch " << batch_size << " must be at least the " << dist.size() << " processes\n";
    return 2;
  }
  if (int(corpus.train.size()) < batch_size) {
    std::cerr << "char_model: --batch " << batch_size << " is larger than the " << corpus.train.size()
              << " training words\n";
    return 2;
  }
  std::printf("char_model: %zu training and %zu validation words from %s (%d skipped: not printable ASCII), "
              "%d tokens\n",
              corpus.train.size(), corpus.validation.size(), words_path.c_str(), corpus.skipped,
              corpus.vocab_size());

  // Embedding(V, E) -> LSTM(H) x 2 with dropout between -> Dense(H, V) at every step.
  Model model(dynrnn::Input::tokens(corpus.vocab_size(), embedding_dim),
              Stack({dynrnn::LSTMCell<Scalar>(embedding_dim, hidden), dynrnn::LSTMCell<Scalar>(hidden, hidden)}, dropout,
                    seed * 3 + 1),
              dynrnn::Output::classes_per_step(corpus.vocab_size()), seed);
  const dynrnn::Precision precision = dynrnn::precision_from_string(precision_name, "--precision");
  model.set_precision(precision);
  const auto train = word_data(corpus, corpus.train), validation = word_data(corpus, corpus.validation);
  const long long steps_per_epoch = ((long long)(corpus.train.size()) + batch_size - 1) / batch_size;
  // The learning rate of epoch e is lr · lr_decay^e.
  model.set_optimizer(dynrnn::RMSProp<Scalar>(learning_rate))
      .set_schedule([=](std::int64_t step) { return double(learning_rate) * std::pow(lr_decay, double(step / steps_per_epoch)); });
  dynrnn::Checkpoint<Scalar> checkpoint;
  model.add_to(checkpoint);
  std::ostringstream config;
  config << "words=" << words_path << " train=" << corpus.train.size() << " batch=" << batch_size
         << " dropout=" << dropout << " lr=" << learning_rate << " lr_decay=" << lr_decay << " seed=" << seed;
  if (precision != dynrnn::Precision::float32) config << " precision=" << precision_name;
  if (!resume_path.empty()) {
    try {
      if (comm)
        dynrnn::load_checkpoint_from_root(checkpoint, resume_path, *comm);  // rank 0 reads it for all
      else
        checkpoint.load(resume_path);
    } catch (const dynrnn::CheckpointError& e) {
      std::cerr << "char_model: cannot resume: " << e.what() << "\n";
      return 2;
    }
    const auto saved = checkpoint.metadata().find("char_model.config");
    if (saved == checkpoint.metadata().end()) {
      std::cerr << "char_model: cannot resume: '" << resume_path << "' was not written by char_model\n";
      return 2;
    }
    if (saved->second != config.str())
      std::cerr << "char_model: warning: the checkpoint was trained with " << saved->second << "\n";
    std::printf("char_model: resumed from %s at step %lld\n", resume_path.c_str(),
                static_cast<long long>(model.progress().step));
  }
  checkpoint.metadata()["char_model.config"] = config.str();

  std::printf("char_model: Embedding(%d, %d) -> LSTM(%d) x 2 in %s, dropout %g -> Dense(%d, %d); RMSProp lr %g "
              "(x %g per epoch); %d epochs of %lld steps of %d words\n",
              corpus.vocab_size(), embedding_dim, hidden, precision_name.c_str(), dropout, hidden, corpus.vocab_size(),
              double(learning_rate), lr_decay, epochs, steps_per_epoch, batch_size);
  dynrnn::FitOptions options;
  options.epochs = epochs;
  options.max_steps = max_steps;
  options.batch_size = batch_size;
  options.seed = seed;
  options.log_every = log_every;
  options.communicator = comm;  // null when alone
  BitsPerChar bpc_log;
  dynrnn::CsvLog csv(csv_path, /*append=*/!resume_path.empty());
  std::vector<dynrnn::FitCallback*> callbacks{&bpc_log, &csv};
  std::optional<dynrnn::CheckpointEvery<Scalar>> saver;
  if (checkpoint_every > 0) {
    saver.emplace(checkpoint, model.progress().step, checkpoint_path, checkpoint_every);
    callbacks.push_back(&*saver);
  }
  const std::int64_t first_step = model.progress().step;
  const auto start = std::chrono::steady_clock::now();
  dynrnn::FitResult result;
  try {
    result = dynrnn::fit(model, train, validation, options, callbacks);
  } catch (const dynrnn::CheckpointError& e) {
    std::cerr << "char_model: " << e.what() << "\n";
    return dist.fail(2, "char_model: rank 0 cannot save the checkpoint");
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("trained %lld steps in %.1f s\n", static_cast<long long>(result.steps - first_step), seconds);
  // Over several ranks, each evaluates its share of the words.
  const dynrnn::Metrics final_figures =
      comm ? dynrnn::evaluate_over_ranks(model, validation, 256, *comm) : model.evaluate(validation);
  const double bpc = final_figures.loss / std::log(2.0);
  std::printf("validation: %.4f bits/char over %zu words\n", bpc, corpus.validation.size());
  if (precision != dynrnn::Precision::float32) {  // the same trained weights, evaluated in float32 too
    model.set_precision(dynrnn::Precision::float32);
    const dynrnn::Metrics f32 =
        comm ? dynrnn::evaluate_over_ranks(model, validation, 256, *comm) : model.evaluate(validation);
    std::printf("validation in float32: %.4f bits/char\n", f32.loss / std::log(2.0));
    model.set_precision(precision);
  }
  double int8_gap = 0;
  if (int8) {  // the same trained weights, the LSTMs' products in int8
    std::vector<std::size_t> first(std::min<std::size_t>(256, train.size()));
    for (std::size_t k = 0; k < first.size(); ++k) first[k] = k;
    dynrnn::SequenceBatch<Scalar> calibration;
    train.make_batch(first, calibration);
    const dynrnn::Precision trained = model.precision();
    model.set_precision(dynrnn::Precision::float32);
    model.calibrate_int8(calibration);
    model.set_precision(dynrnn::Precision::int8);
    const dynrnn::Metrics q =
        comm ? dynrnn::evaluate_over_ranks(model, validation, 256, *comm) : model.evaluate(validation);
    const double bpc8 = q.loss / std::log(2.0);
    int8_gap = bpc8 - bpc;
    std::printf("validation in int8: %.4f bits/char (%+.4f)\n", bpc8, int8_gap);
    model.set_precision(trained);
  }
  if (saver) std::printf("checkpoint: %s\n", checkpoint_path.c_str());
  if (dist.root()) examples::plot_if_asked("char_model", plot, csv_path, "char_model, " + config.str());
  if (result.interrupted) return 130;  // the shell's status for a run ended by SIGINT

  if (samples > 0) {
    dynrnn::Rng sample_rng(seed * 7 + 3);
    std::printf("samples (temperature %g):", temperature);
    for (const std::string& w : sample(model, corpus, samples, temperature, sample_rng)) std::printf(" %s", w.c_str());
    std::printf("\n");
  }
  if (require_bpc >= 0 && bpc > require_bpc) {
    std::fprintf(stderr, "char_model: validation %.4f bits/char is above the required %.4f\n", bpc, require_bpc);
    return 1;
  }
  if (int8 && require_int8_gap >= 0 && int8_gap > require_int8_gap) {
    std::fprintf(stderr, "char_model: int8 adds %.4f bits/char, more than the allowed %.4f\n", int8_gap,
                 require_int8_gap);
    return 1;
  }
  return 0;
}
