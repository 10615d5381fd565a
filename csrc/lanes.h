// Fixed-order sums in double (header only), shared by the reductions of batchnorm.cpp and pool.cpp.
//
// A sum runs in kLanes independent accumulators, `double acc[kLanes]` starting at +0: element j of
// every kLanes-wide chunk of a run goes to lane j, the leftover elements of a run to lanes 0, 1, ...
// Then lanes_total adds the lanes in one fixed tree. The result depends only on the values and on
// how they are cut into runs, never on the thread that computes it or on where the data lies in
// memory: bitwise reproducible. Accumulating in double keeps float32 sums accurate to ~1e-16
// relative to their terms.
//
// The loop over the lanes of a chunk is the one vectorised (there is no reduction for the compiler
// to reorder). A run's leftovers are added as one more chunk whose missing lanes add +0, which
// changes no lane (a lane starting at +0 never becomes -0), so that short runs (a 7x7 plane) need
// no scalar loop; every term is evaluated at an index inside the run.
#pragma once

#include "parallel.h"

namespace tinyconv {

constexpr int kLanes = 8;

// acc[j] += term(i) for the i of [0, len) that go to lane j.
template <typename Term>
inline void add_run(double (&acc)[kLanes], index_t len, Term&& term) {
    index_t i = 0;
    for (; i + kLanes <= len; i += kLanes) {
#pragma omp simd
        for (int j = 0; j < kLanes; ++j) acc[j] += term(i + j);
    }
    if (i < len) {
        const index_t rest = len - i;
#pragma omp simd
        for (int j = 0; j < kLanes; ++j) {
            const double t = term(j < rest ? i + j : len - 1);
            acc[j] += j < rest ? t : 0.0;
        }
    }
}

// Two sums in one pass over the data: terms(i, a, b) sets the terms of i for acc_a and acc_b.
template <typename Terms>
inline void add_run_pairs(double (&acc_a)[kLanes], double (&acc_b)[kLanes], index_t len, Terms&& terms) {
    index_t i = 0;
    for (; i + kLanes <= len; i += kLanes) {
#pragma omp simd
        for (int j = 0; j < kLanes; ++j) {
            double a, b;
            terms(i + j, a, b);
            acc_a[j] += a;
            acc_b[j] += b;
        }
    }
    if (i < len) {
        const index_t rest = len - i;
#pragma omp simd
        for (int j = 0; j < kLanes; ++j) {
            double a, b;
            terms(j < rest ? i + j : len - 1, a, b);
            acc_a[j] += j < rest ? a : 0.0;
            acc_b[j] += j < rest ? b : 0.0;
        }
    }
}

inline double lanes_total(const double (&acc)[kLanes]) {
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

}  // namespace tinyconv
