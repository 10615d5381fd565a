// The GEMM micro-kernel and driver built for the 'avx512' instruction-set level (flags set in
// CMakeLists.txt); chosen at run time by gemm.cpp.
#define TINYCONV_ISA_NS isa_avx512
#include "gemm_kernel.inc"
