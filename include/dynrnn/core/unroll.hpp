// dynrnn: DYNRNN_UNROLL, which fully unrolls the loop after it.
//
// The kernels' tiles loop over their rows and registers with counts known at compile time.
// Unrolled, every index is a constant and the accumulator arrays stay in registers (clang
// does not unroll them otherwise, and GCC not at -O2), and a tile's prefetches of C are all
// issued.
#pragma once

#if defined(__clang__)
#define DYNRNN_UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define DYNRNN_UNROLL _Pragma("GCC unroll 32")
#else
#define DYNRNN_UNROLL
#endif
