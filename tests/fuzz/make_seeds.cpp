// Writes the fuzzer's seed corpus: a valid checkpoint of the fuzz target's model, and the
// same file cut or corrupted at every header field (tests/checkpoint_fixture.hpp).
//
//   fuzz_make_seeds DIR
#include "../checkpoint_fixture.hpp"

#include <cstdio>
#include <fstream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  auto write = [&](const std::string& name, const std::vector<unsigned char>& bytes) {
    std::ofstream out(dir + "/" + name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "fuzz_make_seeds: cannot write %s/%s\n", dir.c_str(), name.c_str());
      std::exit(1);
    }
  };
  dynrnn::test::TinyModel model;
  model.fake_step(0.5);
  const std::vector<unsigned char> valid = model.ckpt.to_bytes(7);
  write("valid.safetensors", valid);
  int k = 0;
  for (const auto& c : dynrnn::test::corruptions(valid)) {
    std::string name = c.label;
    for (char& ch : name)
      if (ch == ' ' || ch == '^' || ch == '\'') ch = '_';
    write("corrupt_" + std::to_string(k++) + "_" + name + ".safetensors", c.bytes);
  }
  std::printf("fuzz_make_seeds: wrote %d files to %s\n", k + 1, dir.c_str());
  return 0;
}
