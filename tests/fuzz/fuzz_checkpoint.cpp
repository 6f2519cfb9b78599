// libFuzzer target: any bytes given to the checkpoint loader and the weight importers must
// either load or throw dynrnn::CheckpointError. Any other exception, crash, leak or
// sanitizer report is a bug. Built with -DDYNRNN_FUZZ=ON (clang); see the README.
#include "../checkpoint_fixture.hpp"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static dynrnn::test::TinyModel model;  // loads overwrite it; its shapes never change
  dynrnn::safetensors::File file;
  try {
    file = dynrnn::safetensors::File::parse(std::vector<unsigned char>(data, data + size), "fuzz-input");
  } catch (const dynrnn::CheckpointError&) {
    return 0;
  }
  // A valid safetensors file: try it as a checkpoint and as each framework's weights of
  // each cell. The cells keep their shapes whatever loads into them.
  static dynrnn::GRUCell<float> gru_after(3, 4, dynrnn::GRUVariant::reset_after);
  static dynrnn::GRUCell<float> gru_before(3, 4, dynrnn::GRUVariant::reset_before);
  static dynrnn::RNNCell<float> rnn(3, 4);
  static dynrnn::LSTMCell<float> lstm_projected(3, 4, [] {
    dynrnn::LSTMOptions o;
    o.num_proj = 2;
    return o;
  }());
  static dynrnn::LSTMCell<float> lstm_peephole(3, 4, [] {
    dynrnn::LSTMOptions o;
    o.use_peepholes = true;
    o.num_proj = 3;
    return o;
  }());
  const auto attempt = [](auto&& load) {
    try {
      load();
    } catch (const dynrnn::CheckpointError&) {
    }
  };
  attempt([&] { model.ckpt.load(file); });
  attempt([&] { dynrnn::import_pytorch_lstm(model.lstm, file); });
  attempt([&] { dynrnn::import_keras_lstm(model.lstm, file); });
  attempt([&] { dynrnn::import_tensorflow_lstm(model.lstm, file); });
  attempt([&] { dynrnn::import_pytorch_lstm(lstm_projected, file); });
  attempt([&] { dynrnn::import_tensorflow_lstm(lstm_peephole, file); });
  attempt([&] { dynrnn::import_pytorch_gru(gru_after, file); });
  attempt([&] { dynrnn::import_keras_gru(gru_after, file); });
  attempt([&] { dynrnn::import_keras_gru(gru_before, file); });
  attempt([&] { dynrnn::import_tensorflow_gru(gru_before, file); });
  attempt([&] { dynrnn::import_pytorch_rnn(rnn, file); });
  attempt([&] { dynrnn::import_keras_rnn(rnn, file); });
  attempt([&] { dynrnn::import_tensorflow_rnn(rnn, file); });
  return 0;
}
