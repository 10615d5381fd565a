// The GEMM micro-kernel and driver built for the 'generic' instruction-set level (flags set in
// CMakeLists.txt); chosen at run time by gemm.cpp.
#define TINYCONV_ISA_NS isa_generic
#include "gemm_kernel.inc"
