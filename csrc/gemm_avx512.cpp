// The GEMM micro-kernel and driver built for the 'avx512' instruction-set level (flags set in
// CMakeLists.txt); chosen at run time by gemm.cpp. Empty for any other architecture (a macOS
// universal2 build compiles every file for arm64 too).
#if defined(__x86_64__) || defined(_M_X64)
#define TINYCONV_ISA_NS isa_avx512
#include "gemm_kernel.inc"
#endif
