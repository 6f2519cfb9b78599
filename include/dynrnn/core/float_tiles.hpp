// dynrnn: the tiles a float32 product runs on, chosen at run time.
//
// PanelKernel (panel_kernel.hpp) takes its register tiles as a parameter. Its own,
// EigenTiles, are built on Eigen's packets for the SIMD width the program is compiled for:
// SSE2 in a program built without -march, as a CMake project that links dynrnn::dynrnn is by
// default. For float, wider tiles compiled with __attribute__((target(...))) are chosen
// instead when the CPU has them and they are wider than the program's own:
//
//   cpu_isa() (precision/cpu_isa.hpp)   tiles                                  lanes
//   CpuIsa::avx512_core and above       FloatAvx512Tiles (float_avx512_tiles.hpp)   16
//   CpuIsa::avx2                        FloatAvx2Tiles (float_avx2_tiles.hpp)       8
//   CpuIsa::portable                    EigenTiles<float>, the program's own
//
// A program built for a width at least that of the level's tiles (-march=native on the same
// CPU, say) keeps its own tiles. double always does: it is there for gradient checks.
// PackedRightGemm<float> chooses at pack() (its isa() tells which) and Gemm<float>'s products
// Aᵀ·B at each product. The tiles sum every element of C in the same order, with fused
// multiply-adds in all three but SSE2's, so results differ between them by roundings alone.
#pragma once

#include "float_avx2_tiles.hpp"
#include "float_avx512_tiles.hpp"
#include "panel_kernel.hpp"
#include "types.hpp"

#include "../precision/cpu_isa.hpp"  // DYNRNN_X86_KERNELS, cpu_isa()

#include <type_traits>

namespace dynrnn::detail {

#ifdef DYNRNN_X86_KERNELS
/// True when the program's own float tiles are narrower than FloatAvx512Tiles: built without
/// -mavx512f (or -march for a CPU with it).
inline constexpr bool kRuntimeFloatAvx512Tiles = PanelKernel<float>::kPacket < FloatAvx512Tiles::kPacket;
/// True when the program's own float tiles are narrower than FloatAvx2Tiles: built without
/// -mavx (or -march for a CPU with it).
inline constexpr bool kRuntimeFloatAvx2Tiles = PanelKernel<float>::kPacket < FloatAvx2Tiles::kPacket;
#else
inline constexpr bool kRuntimeFloatAvx512Tiles = false;  ///< No tiles to choose at run time.
inline constexpr bool kRuntimeFloatAvx2Tiles = false;    ///< No tiles to choose at run time.
#endif

/// The tiles a float product set up now runs on (see the file comment): CpuIsa::avx512_core
/// for FloatAvx512Tiles, CpuIsa::avx2 for FloatAvx2Tiles, CpuIsa::portable for the
/// program's own.
inline CpuIsa float_tiles() {
  if constexpr (kRuntimeFloatAvx512Tiles || kRuntimeFloatAvx2Tiles) {
    const CpuIsa isa = cpu_isa();
    if (kRuntimeFloatAvx512Tiles && isa >= CpuIsa::avx512_core) return CpuIsa::avx512_core;
    if (kRuntimeFloatAvx2Tiles && isa >= CpuIsa::avx2) return CpuIsa::avx2;
  }
  return CpuIsa::portable;
}

/// Calls f(kernel) with a PanelKernel value of the kernel a product of Scalar runs on:
/// for float, that of `tiles` (from float_tiles()); else, and for CpuIsa::portable,
/// PanelKernel<Scalar> with the program's own tiles.
template <class Scalar, class F>
void with_panel_kernel(CpuIsa tiles, F&& f) {
#ifdef DYNRNN_X86_KERNELS
  if constexpr (std::is_same_v<Scalar, float>) {
    if constexpr (kRuntimeFloatAvx512Tiles) {
      if (tiles == CpuIsa::avx512_core) return f(PanelKernel<float, FloatAvx512Tiles>{});
    }
    if constexpr (kRuntimeFloatAvx2Tiles) {
      if (tiles == CpuIsa::avx2) return f(PanelKernel<float, FloatAvx2Tiles>{});
    }
  }
#endif
  (void)tiles;
  f(PanelKernel<Scalar>{});
}

/// Rows per tile of the kernel with_panel_kernel<Scalar>(tiles, f) runs: the granule in
/// which its callers share rows between threads, so that every share but the last fills
/// whole tiles.
template <class Scalar>
Index tile_rows(CpuIsa tiles) {
  Index rows = 0;
  with_panel_kernel<Scalar>(tiles, [&](auto kernel) { rows = decltype(kernel)::kRows; });
  return rows;
}

}  // namespace dynrnn::detail
