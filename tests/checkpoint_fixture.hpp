// A small model with a checkpoint, and a catalogue of damaged checkpoint files, shared by
// the checkpoint tests and the fuzzer's seed corpus (tests/fuzz/).
#pragma once

#include <dynrnn/dynrnn.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace dynrnn::test {

/// LSTM(2 -> 3) and Dense(3 -> 2) in double, RMSProp with momentum and centering so that
/// every kind of slot is stored, and a checkpoint over all of them.
struct TinyModel {
  LSTMCell<double> lstm{2, 3};
  Dense<double> dense{3, 2};
  RMSProp<double> opt{[] {
    auto o = RMSPropOptions<double>::tensorflow(0.01);
    o.momentum = 0.5;
    o.centered = true;
    return o;
  }()};
  Checkpoint<double> ckpt;

  TinyModel(const TinyModel&) = delete;  // the checkpoint refers to this object's members
  TinyModel& operator=(const TinyModel&) = delete;

  explicit TinyModel(std::uint64_t seed = 7) {
    Rng rng(seed);
    lstm.reset_parameters(rng);
    dense.reset_parameters(rng);
    fill_uniform(lstm.bias(), rng, 0.5);
    ckpt.add("lstm", lstm).add("dense", dense).add("opt", opt);
  }

  /// One RMSProp update of every parameter from made-up gradients, so that slots exist and
  /// differ from their starting values.
  void fake_step(double scale) {
    Rng rng(std::uint64_t(scale * 1000));
    LSTMGradients<double> gl = lstm.make_gradients();
    DenseGradients<double> gd = dense.make_gradients();
    fill_uniform(gl.kernel, rng, scale);
    fill_uniform(gl.bias, rng, scale);
    fill_uniform(gd.weight, rng, scale);
    fill_uniform(gd.bias, rng, scale);
    opt.apply(lstm, gl);
    opt.apply(dense, gd);
  }

  /// Every parameter and slot value, in a fixed order, for bitwise comparisons.
  std::vector<double> state() {
    std::vector<double> v;
    auto append = [&](auto& p) {
      v.insert(v.end(), p.data(), p.data() + p.size());
      auto& s = opt.slots(p);
      for (auto& a : s.arrays) v.insert(v.end(), a.data(), a.data() + a.size());
    };
    append(lstm.kernel());
    append(lstm.bias());
    append(dense.weight());
    append(dense.bias());
    return v;
  }
};

/// A damaged file and a fragment its CheckpointError message must contain.
struct Corruption {
  std::string label;
  std::vector<unsigned char> bytes;
  std::string fragment;
};

/// Damaged variants of `valid`, a file written by TinyModel's checkpoint at step 7: cut at
/// the header length, in the header and in the data; a corrupt header length; and the header
/// edited at every field (JSON syntax, duplicate key, dtype, shape, data_offsets, metadata).
inline std::vector<Corruption> corruptions(const std::vector<unsigned char>& valid) {
  const std::uint64_t n = safetensors::read_le64(valid.data());
  const std::string header(valid.begin() + 8, valid.begin() + 8 + std::ptrdiff_t(n));
  const std::vector<unsigned char> data(valid.begin() + 8 + std::ptrdiff_t(n), valid.end());

  auto assemble = [&](const std::string& h, std::uint64_t length) {
    std::vector<unsigned char> out;
    safetensors::append_le64(out, length);
    out.insert(out.end(), h.begin(), h.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
  };
  auto with_header = [&](const std::string& h) { return assemble(h, h.size()); };
  auto replace = [&](std::string from, std::string to) {
    std::string h = header;
    const std::size_t at = h.find(from);
    if (at == std::string::npos) return std::string("(pattern '" + from + "' not in header)");
    return h.replace(at, from.size(), to);
  };
  auto cut = [&](std::size_t size) { return std::vector<unsigned char>(valid.begin(), valid.begin() + std::ptrdiff_t(size)); };

  std::vector<Corruption> c;
  c.push_back({"empty file", {}, "shorter than the 8-byte header length"});
  c.push_back({"cut inside the header length", cut(5), "shorter than the 8-byte header length"});
  c.push_back({"cut after the header length", cut(8), "exceeds the 0 bytes after it"});
  c.push_back({"cut inside the header", cut(8 + n / 2), "exceeds"});
  c.push_back({"cut after the header", cut(8 + n), "file is truncated"});
  c.push_back({"cut inside the data", cut(valid.size() - 1), "file is truncated"});
  auto extra = valid;
  extra.push_back(0);
  c.push_back({"trailing byte", extra, "trailing bytes"});
  c.push_back({"header length 2^64-1", assemble(header, ~std::uint64_t(0)), "header length 18446744073709551615 exceeds"});
  const std::string unpadded = header.substr(0, header.find_last_not_of(' ') + 1);
  c.push_back({"header length one short", assemble(unpadded, unpadded.size() - 1), "not valid JSON"});
  c.push_back({"header length one long", assemble(header, n + 1), "not valid JSON"});
  // Only spaces may follow the JSON object. A NUL would end the JSON parser's input early
  // and let anything after it through unread.
  const std::string tail("\0not JSON ]]}{ \xff\xfe", 17);
  c.push_back({"NUL and bytes after the JSON", with_header(unpadded + tail),
               "NUL byte at file offset " + std::to_string(8 + unpadded.size())});
  c.push_back({"newline after the JSON", with_header(unpadded + "\n   "),
               "ends with byte 0x0a at file offset " + std::to_string(8 + unpadded.size())});
  c.push_back({"raw NUL inside a metadata string",
               with_header(replace("dynrnn-checkpoint-1", std::string("dynrnn-checkpoint\0", 18) + "1")),
               "NUL byte at file offset"});
  // An escaped NUL is valid JSON; the strings keep it and so compare unequal.
  c.push_back({"escaped NUL in the format", with_header(replace("dynrnn-checkpoint-1", "dynrnn-checkpoint-1\\u0000x")),
               "metadata 'dynrnn.format' is"});
  c.push_back({"escaped NUL in the step", with_header(replace("\"dynrnn.step\":\"7\"", "\"dynrnn.step\":\"7\\u0000\"")),
               "not an integer"});
  c.push_back({"header length 0", assemble(header, 0), "does not start with '{'"});
  c.push_back({"header is an array", with_header("[" + header.substr(1)), "does not start with '{'"});
  c.push_back({"JSON syntax", with_header(replace(",\"dense/weight\"", ";\"dense/weight\"")), "not valid JSON"});
  c.push_back({"invalid UTF-8", with_header(replace("dense/weight", "dense/we\xff\xfeht")), "not valid JSON"});
  c.push_back({"tensor entry not an object", with_header("{\"a\":1}" + std::string(header.size() - 7, ' ')), "'a' is not a JSON object"});
  c.push_back({"repeated key", with_header(replace("\"dtype\":\"F64\"", "\"dtype\":\"F64\",\"dtype\":\"F64\"")), "repeats the key 'dtype'"});
  c.push_back({"unknown field", with_header(replace("\"dtype\":\"F64\"", "\"dtype\":\"F64\",\"extra\":1")), "unknown field 'extra'"});
  c.push_back({"missing dtype", with_header(replace("\"dtype\":\"F64\",", "")), "no string 'dtype'"});
  c.push_back({"unknown dtype", with_header(replace("\"dtype\":\"F64\"", "\"dtype\":\"F33\"")), "unknown dtype 'F33'"});
  c.push_back({"dtype of another size", with_header(replace("\"dtype\":\"F64\"", "\"dtype\":\"F32\"")), "need 8"});
  c.push_back({"integer dtype", with_header(replace("\"dtype\":\"F64\"", "\"dtype\":\"I64\"")), "has dtype I64, expected F32 or F64"});
  c.push_back({"missing shape", with_header(replace(",\"shape\":[2]", "")), "no array 'shape'"});
  c.push_back({"negative shape", with_header(replace("\"shape\":[2]", "\"shape\":[-2]")), "not a non-negative integer"});
  c.push_back({"overflowing shape", with_header(replace("\"shape\":[2]", "\"shape\":[4294967296,4294967296,16]")), "overflows 64 bits"});
  c.push_back({"shape of another size", with_header(replace("\"shape\":[2]", "\"shape\":[3]")), "need 24"});
  c.push_back({"transposed shape", with_header(replace("\"shape\":[3,2]", "\"shape\":[2,3]")), "'dense/weight' has shape [2, 3], expected [3, 2]"});
  c.push_back({"missing data_offsets", with_header(replace("\"data_offsets\":[0,16],", "")), "no 'data_offsets'"});
  c.push_back({"fractional offset", with_header(replace("[0,16]", "[0,16.5]")), "no 'data_offsets'"});
  c.push_back({"offset past 2^64", with_header(replace("[0,16]", "[0,18446744073709551616]")), "no 'data_offsets'"});
  c.push_back({"offsets reversed", with_header(replace("[0,16]", "[16,0]")), "end before they begin"});
  c.push_back({"offsets past the end", with_header(replace("[0,16]", "[18446744073709551599,18446744073709551615]")), "file is truncated"});
  c.push_back({"offsets leave a hole", with_header(replace("[0,16]", "[8,24]")), "belong to no tensor"});
  c.push_back({"offsets overlap", with_header(replace("[16,64]", "[8,56]")), "overlaps another tensor"});
  c.push_back({"metadata not an object", with_header(replace("{\"__metadata__\":", "{\"__metadata__\":1,\"__metadata_x__\":")), "'__metadata__' is not an object"});
  c.push_back({"metadata value not a string", with_header(replace("\"dynrnn.step\":\"7\"", "\"dynrnn.step\":7")), "metadata 'dynrnn.step' is not a string"});
  c.push_back({"missing format", with_header(replace("\"dynrnn.format\"", "\"dynrnn.formax\"")), "metadata 'dynrnn.format' is missing"});
  c.push_back({"other format", with_header(replace("dynrnn-checkpoint-1", "dynrnn-checkpoint-9")), "expected 'dynrnn-checkpoint-1'"});
  c.push_back({"step not an integer", with_header(replace("\"dynrnn.step\":\"7\"", "\"dynrnn.step\":\"7x\"")), "'dynrnn.step' is '7x', not an integer"});
  c.push_back({"step overflows", with_header(replace("\"dynrnn.step\":\"7\"", "\"dynrnn.step\":\"99999999999999999999\"")), "not an integer"});
  c.push_back({"other layer sizes", with_header(replace("hidden_size=3", "hidden_size=5")), "holds LSTMCell(input_size=2, hidden_size=5) under 'lstm'"});
  return c;
}

}  // namespace dynrnn::test
