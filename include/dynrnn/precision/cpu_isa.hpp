// dynrnn: which SIMD instructions this CPU has, and the limit on those used.
//
// The bfloat16 and int8 kernels (bfloat16_gemm.hpp, int8_gemm.hpp), the float32 tiles of a
// program built for a narrower SIMD width (core/float_tiles.hpp) and the LSTM's gate pass
// (cells/lstm_gates.hpp) are compiled for their instructions with
// __attribute__((target(...))) whatever flags the program is built with, and chosen at run
// time: a program built for any x86-64 uses AVX2 or AVX-512 where the CPU and the operating
// system support them, and the portable kernels elsewhere. Nothing is decided at configure
// time.
//
//   CpuIsa::portable          any CPU: the kernels built with the program's own flags
//   CpuIsa::avx2              AVX2 and FMA, with the OS saving the AVX registers: float32
//                             tiles of 8 lanes (most desktop CPUs of the last ten years)
//   CpuIsa::avx512_core       AVX-512 F, BW and VL, with the OS saving the AVX-512
//                             registers: float32 tiles of 16 lanes and the LSTM's gate pass
//   CpuIsa::avx512_core_vnni  all of those and VNNI (vpdpbusd: int8 products)
//   CpuIsa::avx512_core_bf16  all of those and BF16 (vdpbf16ps: bfloat16 products)
//
// Each level has every instruction of the levels below it; a kernel runs at its own level
// and above. set_max_cpu_isa() lowers the level used, as oneDNN's dnnl_set_max_cpu_isa does:
// a test forces the portable kernels on a CPU that has the instructions, and a benchmark
// compares the two, or runs an AVX-512 machine as an AVX2 one. The environment variable
// DYNRNN_MAX_CPU_ISA (read once, at the first use) sets the same limit from outside the
// program.
#pragma once

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#if (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__clang__) ? __clang_major__ >= 9 : (defined(__GNUC__) && __GNUC__ >= 10))
#include <cpuid.h>
#include <immintrin.h>
/// Defined when the compiler can build dynrnn's AVX2, AVX-512, BF16 and VNNI kernels (GCC 10
/// or clang 9 on x86); they are used only where the CPU has the instructions
/// (detected_cpu_isa()).
#define DYNRNN_X86_KERNELS 1
#endif

namespace dynrnn {

/// \brief Instruction-set levels of dynrnn's kernels chosen at run time, lowest first.
enum class CpuIsa {
  portable = 0,          ///< Any CPU: kernels built with the program's own compiler flags.
  avx2 = 1,              ///< AVX2 and FMA: float32 tiles of 8 lanes.
  avx512_core = 2,       ///< AVX-512 F, BW and VL: float32 tiles of 16 lanes, the LSTM's gate pass.
  avx512_core_vnni = 3,  ///< The above and VNNI: int8 dot products (vpdpbusd).
  avx512_core_bf16 = 4,  ///< The above and BF16: bfloat16 dot products (vdpbf16ps).
};

/// \brief Every level, lowest first.
inline constexpr CpuIsa kCpuIsaLevels[] = {CpuIsa::portable, CpuIsa::avx2, CpuIsa::avx512_core,
                                           CpuIsa::avx512_core_vnni, CpuIsa::avx512_core_bf16};

/// \brief The level's name, as DYNRNN_MAX_CPU_ISA takes it: "portable", "avx2",
/// "avx512_core", "avx512_core_vnni" or "avx512_core_bf16".
inline const char* to_string(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512_core: return "avx512_core";
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
    const bool fma = c & (1u << 12);
    unsigned xcr0_low = 0, xcr0_high = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
    if ((xcr0_low & 0x6) != 0x6) return CpuIsa::portable;  // SSE and AVX state saved
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return CpuIsa::portable;
    if (!fma || !(b & (1u << 5))) return CpuIsa::portable;  // AVX2
    const bool avx512_core = (b & (1u << 16)) && (b & (1u << 30)) && (b & (1u << 31));  // F, BW, VL
    if (!avx512_core || (xcr0_low & 0xe0) != 0xe0) return CpuIsa::avx2;  // opmask and ZMM state saved
    if (!(c & (1u << 11))) return CpuIsa::avx512_core;                    // VNNI
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
      for (CpuIsa isa : kCpuIsaLevels)
        if (name == to_string(isa)) value = int(isa);
      if (value < 0)
        throw std::invalid_argument(
            "dynrnn: DYNRNN_MAX_CPU_ISA: expected \"portable\", \"avx2\", \"avx512_core\", \"avx512_core_vnni\" or "
            "\"avx512_core_bf16\", got \"" +
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
    throw std::invalid_argument("dynrnn: set_max_cpu_isa: isa: expected a CpuIsa level (0 to 4), got " +
                                std::to_string(int(isa)));
  detail::max_cpu_isa_limit().store(int(isa), std::memory_order_relaxed);
}

/// \brief The level the kernels use now: the lower of detected_cpu_isa() and max_cpu_isa().
inline CpuIsa cpu_isa() {
  const CpuIsa limit = max_cpu_isa(), detected = detected_cpu_isa();
  return int(limit) < int(detected) ? limit : detected;
}

}  // namespace dynrnn
