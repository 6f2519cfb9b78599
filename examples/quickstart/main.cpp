// The README's first program: an LSTM that counts the ones in binary sequences of 1 to 20 steps.
#include <dynrnn/dynrnn.hpp>

#include <cstdio>

int main() {
  dynrnn::Rng rng(1);
  dynrnn::SequenceDataset<float> train, test;  // variable-length token sequences with labels
  for (int i = 0; i < 12000; ++i) {
    std::vector<int> bits(dynrnn::uniform_int(rng, 1, 21));
    int ones = 0;
    for (int& bit : bits) ones += bit = int(dynrnn::uniform_int(rng, 0, 2));
    (i < 10000 ? train : test).add(bits, ones);
  }

  dynrnn::SequenceModel<dynrnn::LSTMCell<float>> model(  // Embedding -> LSTM -> Dense -> softmax
      dynrnn::Input::tokens(2, 8), dynrnn::LSTMCell<float>(8, 64), dynrnn::Output::classes(21));
  model.set_optimizer(dynrnn::Adam<float>(0.01f)).set_clip_norm(5.0f);

  dynrnn::FitOptions options;
  options.epochs = 5;
  dynrnn::fit(model, train, test, options);  // shuffles, validates, shows progress; Ctrl-C stops
  std::printf("test accuracy: %.4f\n", model.evaluate(test).accuracy);
}
