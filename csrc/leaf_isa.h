// Leaf loops at the CPU's vector width (header only).
//
// Only the GEMM is compiled once per instruction-set level (gemm_kernel.inc); everything else is
// built for the baseline (SSE2 on x86-64), so its vector loops use 128-bit registers. Batch
// norm's loops over runs of values go through run_leaf instead: it calls the loop from a function
// compiled for the level the GEMM runs at (gemm_isa_level(), so TINYCONV_ISA and set_isa switch
// both), into which the loop and the helpers marked TINYCONV_LEAF are inlined and vectorised for
// that level (on Zen 4, ResNet-20 shapes: forward 6-31 % and backward 5-40 % faster, float64
// most). The convolution's canvas copies measured no faster this way and stay at the baseline.
//
// Why this cannot run AVX-512 code on a CPU without it (gemm_kernel.inc's warning): no file is
// compiled with level flags here; only the run_* functions carry a target attribute, and they are
// templates on the caller's lambda type, so every instantiation is unique to its call site.
// Anything the inlined loop calls out of line (std::fill, memset) is the baseline version.
// Bits: the loops do the same operations in the same order at every level (no reductions the
// compiler may reorder, and the files that do arithmetic are compiled with -ffp-contract=off, so
// FMA being available changes nothing), so every level gives the same results.
#pragma once

#include "gemm.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define TINYCONV_LEAF inline __attribute__((always_inline))
#define TINYCONV_LEAF_LAMBDA __attribute__((always_inline))
#define TINYCONV_LEAF_DISPATCH 1
#else
#define TINYCONV_LEAF inline
#define TINYCONV_LEAF_LAMBDA
#define TINYCONV_LEAF_DISPATCH 0
#endif

namespace tinyconv {

#if TINYCONV_LEAF_DISPATCH && defined(TINYCONV_HAVE_AVX512)
template <typename F>
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))) void run_avx512(
    const F& loop) {
    loop();
}
#endif
#if TINYCONV_LEAF_DISPATCH && defined(TINYCONV_HAVE_AVX2)
template <typename F>
__attribute__((target("avx2,fma"))) void run_avx2(const F& loop) {
    loop();
}
#endif

// loop() (a lambda marked TINYCONV_LEAF_LAMBDA whose body calls TINYCONV_LEAF functions), compiled
// for the level the GEMM runs at.
template <typename F>
inline void run_leaf(const F& loop) {
#if TINYCONV_LEAF_DISPATCH
    switch (gemm_isa_level()) {
#if defined(TINYCONV_HAVE_AVX512)
        case kIsaLevelAvx512:
            return run_avx512(loop);
#endif
#if defined(TINYCONV_HAVE_AVX2)
        case kIsaLevelAvx2:
            return run_avx2(loop);
#endif
        default:
            break;
    }
#endif
    loop();
}

}  // namespace tinyconv
