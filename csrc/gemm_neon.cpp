// The GEMM micro-kernel and driver built for the 'neon' instruction-set level: AArch64 Advanced
// SIMD intrinsics, 8 x 12 (float) or 8 x 6 (double) tiles; chosen at run time by gemm.cpp. Empty
// for any other architecture (a macOS universal2 build compiles every file for x86_64 too).
#if defined(__aarch64__) || defined(_M_ARM64)
#define TINYCONV_ISA_NS isa_neon
#define TINYCONV_NEON_KERNEL
#include "gemm_kernel.inc"
#endif
