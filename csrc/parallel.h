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
