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
//   char_model --help
//
// RMSProp starts at --lr and is multiplied by --lr-decay after every epoch. The defaults
// (4 epochs, lr 0.01 halved per epoch, no dropout) came from short comparisons on this word
// list: a constant rate learned more slowly, and dropout 0.1 cost 0.06 bits per character
// after 4 epochs, since a model this size still underfits the list in that time.
//
// It prints the training loss as it goes, the validation loss in bits per character on a
// held-out 5% of the words after every epoch (every character and the end of each word
// count), and 20 sampled words at the end. Every --checkpoint-every steps and at the end it
// saves the model, the optimiser, the step and the dropout generator's state.
#include <dynrnn/dynrnn.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
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

/// A time-major batch of words: step t of row b at t·B + b.
struct Batch {
  dynrnn::Index max_time = 0, batch = 0;
  std::vector<int> inputs, targets, lengths;
};

void make_batch(const Corpus& c, const std::vector<std::string>& words, const std::size_t* index, int count,
                Batch& b) {
  b.batch = count;
  b.lengths.resize(std::size_t(count));
  for (int r = 0; r < count; ++r) b.lengths[std::size_t(r)] = int(words[index[r]].size()) + 1;
  b.max_time = *std::max_element(b.lengths.begin(), b.lengths.end());
  b.inputs.assign(std::size_t(b.max_time * b.batch), kBoundary);
  b.targets.assign(std::size_t(b.max_time * b.batch), kBoundary);
  for (int r = 0; r < count; ++r) {
    const std::string& w = words[index[r]];
    for (std::size_t t = 0; t < w.size(); ++t) {
      const int token = c.id[static_cast<unsigned char>(w[t])];
      b.inputs[(t + 1) * std::size_t(count) + std::size_t(r)] = token;  // the input after t chars
      b.targets[t * std::size_t(count) + std::size_t(r)] = token;        // predicted from t chars
    }
  }
}

struct Model {
  dynrnn::Embedding<Scalar> embedding;
  Stack lstm;
  dynrnn::Dense<Scalar> output;
  dynrnn::RMSProp<Scalar> opt;
  dynrnn::Checkpoint<Scalar> checkpoint;  // refers to the members above

  Model(int vocab, int embedding_dim, int hidden, double dropout, Scalar learning_rate, std::uint64_t seed)
      : embedding(vocab, embedding_dim),
        lstm({dynrnn::LSTMCell<Scalar>(embedding_dim, hidden), dynrnn::LSTMCell<Scalar>(hidden, hidden)}, dropout,
             seed * 3 + 1),
        output(hidden, vocab),
        opt(learning_rate) {
    dynrnn::Rng rng(seed);
    embedding.reset_parameters(rng);
    for (auto& layer : lstm.layers()) layer.reset_parameters(rng);
    output.reset_parameters(rng);
    checkpoint.add("embedding", embedding).add("lstm", lstm).add("output", output).add("rmsprop", opt);
  }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
};

/// Forward (and in training, backward and update) of one batch, reusing every buffer.
struct Step {
  dynrnn::Tensor3<Scalar> x, logits, d_outputs;
  dynrnn::DynamicRNNResult<Stack> fwd;
  dynrnn::Matrix<Scalar> logits_rows, d_rows;
  dynrnn::SequenceSoftmaxCrossEntropy<Scalar> ce;
  dynrnn::EmbeddingGradients<Scalar> d_embedding;
  dynrnn::DynamicRNNGradients<Stack> d_lstm;
  dynrnn::DenseGradients<Scalar> d_output;
  Stack::State zero;  // the initial state and the final-state gradient, for batches of zero.h rows

  explicit Step(const Model& m)
      : d_embedding(m.embedding.make_gradients()), d_lstm(m.lstm), d_output(m.output.make_gradients()) {}

  /// Mean loss in nats per valid step of the batch; with `train`, one RMSProp update.
  double run(Model& m, const Batch& b, bool train) {
    m.lstm.set_training(train);
    if (zero.layers.empty() || zero.layers[0].h.rows() != b.batch) zero = m.lstm.zero_state(b.batch);
    m.embedding.forward_sequences(b.inputs, b.max_time, b.batch, x);
    dynrnn::dynamic_rnn(m.lstm, x, b.lengths, zero, fwd);
    m.output.forward(dynrnn::detail::as_matrix(fwd.outputs), logits_rows);
    logits.resize(b.max_time, b.batch, m.output.output_size());
    dynrnn::detail::as_matrix(logits) = logits_rows;
    dynrnn::sequence_softmax_cross_entropy(logits, b.targets, b.lengths, dynrnn::Reduction::mean, ce);
    if (!train) return double(ce.loss);

    d_embedding.setZero();
    d_lstm.setZero();
    d_output.setZero();
    m.output.backward(dynrnn::detail::as_matrix(fwd.outputs), dynrnn::detail::as_matrix(ce.d_logits), d_output,
                      d_rows);
    d_outputs.resize(fwd.outputs.dimensions());
    dynrnn::detail::as_matrix(d_outputs) = d_rows;
    dynrnn::dynamic_rnn_backward(m.lstm, fwd, d_outputs, zero, d_lstm);
    m.embedding.backward_sequences(b.inputs, d_lstm.inputs, d_embedding);
    m.opt.apply(m.embedding, d_embedding);
    m.opt.apply(m.lstm, d_lstm);
    m.opt.apply(m.output, d_output);
    return double(ce.loss);
  }
};

/// Validation loss in bits per character: every predicted character and end of word counts once.
double bits_per_char(Model& m, const Corpus& c, Step& step, int batch_size) {
  std::vector<std::size_t> index(c.validation.size());
  std::iota(index.begin(), index.end(), std::size_t(0));
  Batch b;
  double nats = 0;
  long long steps = 0;
  for (std::size_t i = 0; i < index.size(); i += std::size_t(batch_size)) {
    const int count = int(std::min<std::size_t>(std::size_t(batch_size), index.size() - i));
    make_batch(c, c.validation, index.data() + i, count, b);
    nats += step.run(m, b, /*train=*/false) * double(step.ce.steps);
    steps += step.ce.steps;
  }
  return nats / double(steps) / std::log(2.0);
}

/// `count` words sampled one character at a time, with softmax temperature `temperature`.
std::vector<std::string> sample(Model& m, const Corpus& c, int count, double temperature, dynrnn::Rng& rng) {
  m.lstm.set_training(false);
  std::vector<int> token(std::size_t(count), kBoundary), lengths(std::size_t(count), 1);
  std::vector<std::string> words(static_cast<std::size_t>(count));
  std::vector<bool> done(std::size_t(count), false);
  auto state = m.lstm.zero_state(count);
  dynrnn::DynamicRNNResult<Stack> r;
  dynrnn::Tensor3<Scalar> x;
  for (int t = 0; t < 40; ++t) {
    m.embedding.forward_sequences(token, 1, count, x);
    dynrnn::dynamic_rnn(m.lstm, x, lengths, state, r);
    state = r.final_state;
    const dynrnn::Matrix<Scalar> logits = m.output.forward(dynrnn::detail::as_matrix(r.outputs));
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
  CLI::App app{"Train a 2-layer LSTM character model on a word list, report bits per character, sample words"};
  std::string words_path = "/usr/share/dict/words", checkpoint_path = "char_model.safetensors", resume_path;
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
  app.add_option("--log-every", log_every, "Print the training loss every this many steps")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--checkpoint", checkpoint_path, "Where to save checkpoints")->capture_default_str();
  app.add_option("--checkpoint-every", checkpoint_every, "Save every this many steps and at the end (0: never)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--resume", resume_path, "Continue training from this checkpoint");
  app.add_option("--require-bpc", require_bpc, "Exit with status 1 when the final validation bits per character exceed this");
  CLI11_PARSE(app, argc, argv);

  Corpus corpus;
  try {
    corpus = load_corpus(words_path, 0.05, seed);
  } catch (const std::exception& e) {
    std::cerr << "char_model: " << e.what() << "\n";
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

  Model model(corpus.vocab_size(), embedding_dim, hidden, dropout, learning_rate, seed);
  const long long steps_per_epoch = (long long)(corpus.train.size()) / batch_size;
  long long total_steps = steps_per_epoch * epochs;
  if (max_steps > 0) total_steps = std::min<long long>(total_steps, max_steps);
  std::ostringstream config;
  config << "words=" << words_path << " train=" << corpus.train.size() << " batch=" << batch_size
         << " dropout=" << dropout << " lr=" << learning_rate << " lr_decay=" << lr_decay << " seed=" << seed;
  long long first_step = 1;
  if (!resume_path.empty()) {
    try {
      first_step = model.checkpoint.load(resume_path) + 1;
    } catch (const dynrnn::CheckpointError& e) {
      std::cerr << "char_model: cannot resume: " << e.what() << "\n";
      return 2;
    }
    const auto& meta = model.checkpoint.metadata();
    const auto rng_state = meta.find("char_model.dropout_rng"), saved = meta.find("char_model.config");
    std::istringstream rng_text(rng_state == meta.end() ? "" : rng_state->second);
    if (saved == meta.end() || !(rng_text >> model.lstm.rng())) {
      std::cerr << "char_model: cannot resume: '" << resume_path << "' was not written by char_model\n";
      return 2;
    }
    if (saved->second != config.str())
      std::cerr << "char_model: warning: the checkpoint was trained with " << saved->second << "\n";
    std::printf("char_model: resumed from %s at step %lld\n", resume_path.c_str(), first_step - 1);
  }
  const auto save = [&](long long step) {
    std::ostringstream rng_state;
    rng_state << model.lstm.rng();
    model.checkpoint.metadata()["char_model.dropout_rng"] = rng_state.str();
    model.checkpoint.metadata()["char_model.config"] = config.str();
    model.checkpoint.save(checkpoint_path, step);
  };

  std::printf("char_model: Embedding(%d, %d) -> LSTM(%d) x 2, dropout %g -> Dense(%d, %d); RMSProp lr %g "
              "(x %g per epoch); %lld steps of %d words (%lld per epoch)\n",
              corpus.vocab_size(), embedding_dim, hidden, dropout, hidden, corpus.vocab_size(), double(learning_rate),
              lr_decay, total_steps, batch_size, steps_per_epoch);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto window = start;
  Step step_state(model);
  Batch batch;
  std::vector<std::size_t> order(corpus.train.size());
  long long order_epoch = -1;
  double window_loss = 0;
  int window_steps = 0;
  for (long long step = first_step; step <= total_steps; ++step) {
    // The batches of an epoch come from a shuffle seeded by the epoch, so a resumed run
    // continues with exactly the batches the uninterrupted run would have used.
    const long long epoch = (step - 1) / steps_per_epoch, in_epoch = (step - 1) % steps_per_epoch;
    if (epoch != order_epoch) {
      model.opt.set_learning_rate(Scalar(double(learning_rate) * std::pow(lr_decay, double(epoch))));
      std::iota(order.begin(), order.end(), std::size_t(0));
      dynrnn::Rng shuffle_rng(seed * 1000003 + std::uint64_t(epoch));
      std::shuffle(order.begin(), order.end(), shuffle_rng);
      order_epoch = epoch;
    }
    make_batch(corpus, corpus.train, order.data() + in_epoch * batch_size, batch_size, batch);
    window_loss += step_state.run(model, batch, /*train=*/true);
    ++window_steps;
    if (step % log_every == 0 || step == total_steps) {
      const double seconds = std::chrono::duration<double>(Clock::now() - window).count();
      std::printf("step %6lld  epoch %lld  train %.3f bits/char  %6.1f steps/s\n", step, epoch + 1,
                  window_loss / window_steps / std::log(2.0), window_steps / seconds);
      std::fflush(stdout);
      window = Clock::now();
      window_loss = 0;
      window_steps = 0;
    }
    if (in_epoch + 1 == steps_per_epoch || step == total_steps) {
      std::printf("epoch %lld: validation %.4f bits/char\n", epoch + 1, bits_per_char(model, corpus, step_state, 256));
      std::fflush(stdout);
    }
    if (checkpoint_every > 0 && (step % checkpoint_every == 0 || step == total_steps)) {
      try {
        save(step);
      } catch (const dynrnn::CheckpointError& e) {
        std::cerr << "char_model: " << e.what() << "\n";
        return 2;
      }
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("trained %lld steps in %.1f s\n", std::max(0LL, total_steps - first_step + 1), seconds);
  const double bpc = bits_per_char(model, corpus, step_state, 256);
  std::printf("validation: %.4f bits/char over %zu words\n", bpc, corpus.validation.size());
  if (checkpoint_every > 0 && first_step <= total_steps) std::printf("checkpoint: %s\n", checkpoint_path.c_str());

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
  return 0;
}
