// dynrnn: which AVX-512 instructions this CPU has, and the limit on those used.
//
// The bfloat16 and int8 kernels (bfloat16_gemm.hpp, int8_gemm.hpp), the float32 tiles of a
// program built for a narrower SIMD width (core/float_avx512_tiles.hpp) and the LSTM's gate
// pass (cells/lstm_gates.hpp) are compiled for their instructions with
// __attribute__((target(...))) whatever flags the program is built with, and chosen at run
// time: a program built for any x86-64 uses AVX-512 where the CPU and the operating system
// support it, and the portable kernels elsewhere. The float32 tiles and the gate pass run at
// any level above CpuIsa::portable. Nothing is decided at configure time.
//
//   CpuIsa::portable          any CPU: the kernels built with the program's own flags
//   CpuIsa::avx512_core_vnni  AVX-512 F, BW, VL and VNNI (vpdpbusd: int8 products), with the
//                             OS saving the AVX-512 registers
//   CpuIsa::avx512_core_bf16  all of those and BF16 (vdpbf16ps: bfloat16 products)
//
// set_max_cpu_isa() lowers the level used, as oneDNN's dnnl_set_max_cpu_isa does: a test
// forces the portable kernels on a CPU that has the instructions, and a benchmark compares
// the two. The environment variable DYNRNN_MAX_CPU_ISA (read once, at the first use) sets
// the same limit from outside the program.
#pragma once

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#if (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__clang__) ? __clang_major__ >= 9 : (defined(__GNUC__) && __GNUC__ >= 10))
#include <cpuid.h>
#include <immintrin.h>
/// Defined when the compiler can build dynrnn's AVX-512 BF16 and VNNI kernels (GCC 10 or
/// clang 9 on x86); they are used only where the CPU has the instructions
/// (detected_cpu_isa()).
#define DYNRNN_X86_KERNELS 1
#endif

namespace dynrnn {

/// \brief Instruction-set levels of dynrnn's kernels chosen at run time, lowest first.
enum class CpuIsa {
  portable = 0,          ///< Any CPU: kernels built with the program's own compiler flags.
  avx512_core_vnni = 1,  ///< AVX-512 F, BW, VL and VNNI: int8 dot products (vpdpbusd).
  avx512_core_bf16 = 2,  ///< The above and BF16: bfloat16 dot products (vdpbf16ps).
};

/// \brief The level's name, as DYNRNN_MAX_CPU_ISA takes it: "portable", "avx512_core_vnni"
/// or "avx512_core_bf16".
inline const char* to_string(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512_core_vnni: return "avx512_core_vnni";
    case CpuIsa::avx512_core_bf16: return "avx512_core_bf16";
    default: return "portable";
  }
}

/// \brief The highest level this CPU and operating system support (and this compiler can
/// build): checked once with CPUID and XGETBV.
inline CpuIsa detected_cpu_isa() {
  static const CpuIsa isa = [] {
#ifdef DYNRNN_X86_KERNELS
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return CpuIsa::portable;  // OSXSAVE
    unsigned xcr0_low = 0, xcr0_high = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
    if ((xcr0_low & 0xe6) != 0xe6) return CpuIsa::portable;  // SSE, AVX, opmask and ZMM state saved
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return CpuIsa::portable;
    const bool avx512_core = (b & (1u << 16)) && (b & (1u << 30)) && (b & (1u << 31));  // F, BW, VL
    if (!avx512_core || !(c & (1u << 11))) return CpuIsa::portable;  // VNNI
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) return CpuIsa::avx512_core_bf16;
    return CpuIsa::avx512_core_vnni;
#endif
    return CpuIsa::portable;
  }();
  return isa;
}

namespace detail {

// The limit set by set_max_cpu_isa(), or -1 until the first use reads DYNRNN_MAX_CPU_ISA.
inline std::atomic<int>& max_cpu_isa_limit() {
  static std::atomic<int> limit{-1};
  return limit;
}

}  // namespace detail

/// \brief The highest level the kernels may use: set_max_cpu_isa()'s, else that of the
/// environment variable DYNRNN_MAX_CPU_ISA, else the highest there is.
/// \throws std::invalid_argument when DYNRNN_MAX_CPU_ISA names no level.
inline CpuIsa max_cpu_isa() {
  std::atomic<int>& limit = detail::max_cpu_isa_limit();
  int value = limit.load(std::memory_order_relaxed);
  if (value < 0) {
    value = int(CpuIsa::avx512_core_bf16);
    if (const char* env = std::getenv("DYNRNN_MAX_CPU_ISA"); env && *env) {
      const std::string name = env;
      value = -1;
      for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx512_core_vnni, CpuIsa::avx512_core_bf16})
        if (name == to_string(isa)) value = int(isa);
      if (value < 0)
        throw std::invalid_argument(
            "dynrnn: DYNRNN_MAX_CPU_ISA: expected \"portable\", \"avx512_core_vnni\" or \"avx512_core_bf16\", got \"" +
            name + "\"");
    }
    int unset = -1;  // a set_max_cpu_isa() meanwhile wins
    if (!limit.compare_exchange_strong(unset, value, std::memory_order_relaxed)) value = unset;
  }
  return CpuIsa(value);
}

/// \brief Limits the kernels to `isa` and below, from the next product on; for example
/// CpuIsa::portable, to compare the portable kernels with the fast ones on one machine.
/// Thread-safe. A packed operand keeps the kernels chosen when it was packed.
/// \throws std::invalid_argument when `isa` is not one of CpuIsa's levels.
inline void set_max_cpu_isa(CpuIsa isa) {
  if (int(isa) < int(CpuIsa::portable) || int(isa) > int(CpuIsa::avx512_core_bf16))
    throw std::invalid_argument("dynrnn: set_max_cpu_isa: isa: expected a CpuIsa level (0, 1 or 2), got " +
                                std::to_string(int(isa)));
  detail::max_cpu_isa_limit().store(int(isa), std::memory_order_relaxed);
}

/// \brief The level the kernels use now: the lower of detected_cpu_isa() and max_cpu_isa().
inline CpuIsa cpu_isa() {
  const CpuIsa limit = max_cpu_isa(), detected = detected_cpu_isa();
  return int(limit) < int(detected) ? limit : detected;
}

}  // namespace dynrnn
