// Thread-count control shared by every kernel, and small helpers for OpenMP regions.
//
// Contract: kernels never read omp_get_max_threads() directly; they ask num_threads(), which is
// the process-wide setting made by tinyconv.set_num_threads() (initially the OpenMP default,
// i.e. OMP_NUM_THREADS or the number of cores). Work splits never depend on the thread count in a
// way that changes floating-point results: every reduction runs in a fixed order.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

// OpenMP beyond version 2.0 goes through these macros. MSVC's /openmp implements OpenMP 2.0 and
// rejects `simd` (error C3001), so there the simd hints are left out (its auto-vectoriser works on
// its own) and `parallel for simd` is `parallel for`. Elsewhere (GCC, Clang, MinGW; also in a
// build without the OpenMP runtime, through -fopenmp-simd) they are the pragmas. The code uses no
// other construct newer than 2.0: no collapse (loops over tiles are flattened by hand), no min or
// max reductions, loop variables signed.
#if defined(_MSC_VER) && !defined(__clang__)
#define TINYCONV_OMP_SIMD(clauses)
#define TINYCONV_OMP_PARALLEL_FOR_SIMD(clauses) __pragma(omp parallel for clauses)
#else
#define TINYCONV_PRAGMA(text) _Pragma(#text)
#define TINYCONV_OMP_SIMD(clauses) TINYCONV_PRAGMA(omp simd clauses)
#define TINYCONV_OMP_PARALLEL_FOR_SIMD(clauses) TINYCONV_PRAGMA(omp parallel for simd clauses)
#endif

namespace tinyconv {

using index_t = std::int64_t;

// The number of threads kernels use (>= 1).
int num_threads();
// Sets it; n >= 1 (checked by the caller).
void set_num_threads(int n);
// Threads worth using for `work` units of roughly `grain` cost each: small problems stay serial,
// because waking threads costs more than it saves.
int threads_for(index_t work, index_t grain = 1);

}  // namespace tinyconv
