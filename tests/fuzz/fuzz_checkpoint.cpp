// libFuzzer target: any bytes given to the checkpoint loader and the LSTM importers must
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
  // A valid safetensors file: try it as a checkpoint and as each framework's LSTM weights.
  try {
    model.ckpt.load(file);
  } catch (const dynrnn::CheckpointError&) {
  }
  try {
    dynrnn::import_pytorch_lstm(model.lstm, file);
  } catch (const dynrnn::CheckpointError&) {
  }
  try {
    dynrnn::import_keras_lstm(model.lstm, file);
  } catch (const dynrnn::CheckpointError&) {
  }
  try {
    dynrnn::import_tensorflow_lstm(model.lstm, file);
  } catch (const dynrnn::CheckpointError&) {
  }
  return 0;
}
