// common.h: the vectorisation macros and the evaluation modes shared by every
// kernel header.  Build without -ffast-math (see vector_math.h).
#pragma once

#define MLIP_SIMD _Pragma("omp simd")
#define MLIP_PRAGMA(text) _Pragma(#text)
#define MLIP_SIMD_SUM(...) MLIP_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#define MLIP_RESTRICT __restrict__

namespace mlip::native {

// kValues: G; kVjp: sum_f cot[f] dG_f/dr_ij; kJvp: sum dG/dr . tan
enum Mode { kValues, kVjp, kJvp };

}  // namespace mlip::native
