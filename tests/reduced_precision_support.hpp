// What the reduced-precision tests share: their own bfloat16 rounding, written from the
// format's definition independently of the library (which rounds through Eigen::bfloat16 and
// vcvtneps2bf16), and a scope that limits the kernels' instruction-set level.
#pragma once

#include <dynrnn/precision/cpu_isa.hpp>

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

/// Limits the kernels to `isa` for its lifetime (set_max_cpu_isa), then restores the limit.
class WithIsa {
 public:
  explicit WithIsa(CpuIsa isa) : saved_(max_cpu_isa()) { set_max_cpu_isa(isa); }
  ~WithIsa() { set_max_cpu_isa(saved_); }
  WithIsa(const WithIsa&) = delete;
  WithIsa& operator=(const WithIsa&) = delete;

 private:
  CpuIsa saved_;
};

}  // namespace dynrnn::test
