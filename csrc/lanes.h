// Fixed-order sums in double (header only), shared by the reductions of batchnorm.cpp and pool.cpp.
//
// A sum runs in kLanes independent accumulators (kLanes doubles) starting at +0, carried from
// one run of values to the next: element j of every kLanes-wide chunk of a run goes to lane j; the
// r < kLanes leftover elements of a run go to the last r lanes (they are added as the run's last
// kLanes elements, with +0 in the lanes already done: adding +0 changes no lane, since a lane that
// starts at +0 never becomes -0), or, in a run shorter than kLanes, to lanes 0, 1, ... Then
// lanes_total adds the lanes in one fixed tree. The result depends only on the values and on how
// they are cut into runs, never on the thread that computes it or on where the data lies in
// memory: bitwise reproducible. Accumulating in double keeps float32 sums accurate to ~1e-16
// relative to their terms.
//
// The loop over the lanes of a chunk is the one vectorised (there is no reduction for the compiler
// to reorder), the leftovers too; every term is evaluated at an index inside the run.
#pragma once

#include "leaf_isa.h"
#include "parallel.h"

namespace tinyconv {

constexpr int kLanes = 8;

// acc_io[j] += term(i) for the i of [0, len) that go to lane j (acc_io: kLanes doubles). The lanes
// are worked on in a local copy, which the compiler keeps in registers: acc_io may alias the data.
template <typename Term>
TINYCONV_LEAF void add_run(double* acc_io, index_t len, Term&& term) {
    double acc[kLanes];
    for (int j = 0; j < kLanes; ++j) acc[j] = acc_io[j];
    index_t i = 0;
    for (; i + kLanes <= len; i += kLanes) {
        TINYCONV_OMP_SIMD()
        for (int j = 0; j < kLanes; ++j) acc[j] += term(i + j);
    }
    if (i < len && len >= kLanes) {  // the last kLanes elements, those not yet added in their lanes
        const index_t last = len - kLanes, first_new = kLanes - (len - i);
        TINYCONV_OMP_SIMD()
        for (int j = 0; j < kLanes; ++j) {
            const double t = term(last + j);
            acc[j] += j >= first_new ? t : 0.0;
        }
    } else {
        for (int j = 0; i < len; ++i, ++j) acc[j] += term(i);
    }
    for (int j = 0; j < kLanes; ++j) acc_io[j] = acc[j];
}

// Two sums in one pass over the data: terms(i, a, b) sets the terms of i for a_io and b_io.
template <typename Terms>
TINYCONV_LEAF void add_run_pairs(double* a_io, double* b_io, index_t len, Terms&& terms) {
    double acc_a[kLanes], acc_b[kLanes];
    for (int j = 0; j < kLanes; ++j) {
        acc_a[j] = a_io[j];
        acc_b[j] = b_io[j];
    }
    index_t i = 0;
    for (; i + kLanes <= len; i += kLanes) {
        TINYCONV_OMP_SIMD()
        for (int j = 0; j < kLanes; ++j) {
            double a, b;
            terms(i + j, a, b);
            acc_a[j] += a;
            acc_b[j] += b;
        }
    }
    if (i < len && len >= kLanes) {
        const index_t last = len - kLanes, first_new = kLanes - (len - i);
        TINYCONV_OMP_SIMD()
        for (int j = 0; j < kLanes; ++j) {
            double a, b;
            terms(last + j, a, b);
            acc_a[j] += j >= first_new ? a : 0.0;
            acc_b[j] += j >= first_new ? b : 0.0;
        }
    } else {
        for (int j = 0; i < len; ++i, ++j) {
            double a, b;
            terms(i, a, b);
            acc_a[j] += a;
            acc_b[j] += b;
        }
    }
    for (int j = 0; j < kLanes; ++j) {
        a_io[j] = acc_a[j];
        b_io[j] = acc_b[j];
    }
}

inline double lanes_total(const double* acc) {
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

}  // namespace tinyconv
