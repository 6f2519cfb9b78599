// The tests' own bfloat16 rounding, written from the format's definition, independently of
// the library (which rounds through Eigen::bfloat16 and vcvtneps2bf16).
#pragma once

#include <cstdint>
#include <cstring>

namespace dynrnn::test {

/// x rounded to the nearest bfloat16, ties to even (for finite x).
inline float bf16(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

}  // namespace dynrnn::test
