#include "activation.h"

#include <cmath>

namespace tinyconv {

namespace {
constexpr index_t kElementGrain = 1 << 15;
}

template <typename T>
void relu_forward(T* y, const T* x, index_t size) {
    TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static) num_threads(threads_for(size, kElementGrain)))
    for (index_t i = 0; i < size; ++i) y[i] = x[i] <= T(0) ? T(0) : x[i];
}

template <typename T>
void relu_backward(T* dx, const T* dout, const T* x, index_t size) {
    TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static) num_threads(threads_for(size, kElementGrain)))
    for (index_t i = 0; i < size; ++i) {
        // Both loads up front: a load behind the condition keeps GCC from vectorising (it
        // cannot prove dout[i] readable), and a scalar branch on random signs mispredicts.
        const T d = dout[i], v = x[i];
        dx[i] = v <= T(0) ? T(0) : d;
    }
}

template <typename T>
void sigmoid_forward(T* y, const T* x, index_t size) {
#pragma omp parallel for schedule(static) num_threads(threads_for(size, kElementGrain / 8))
    for (index_t i = 0; i < size; ++i) {
        const T v = x[i];
        if (v >= T(0)) {
            y[i] = T(1) / (T(1) + std::exp(-v));
        } else {
            const T e = std::exp(v);
            y[i] = e / (T(1) + e);
        }
    }
}

template <typename T>
void sigmoid_backward(T* dx, const T* dout, const T* y, index_t size) {
    TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static) num_threads(threads_for(size, kElementGrain)))
    for (index_t i = 0; i < size; ++i) dx[i] = dout[i] * (T(1) - y[i]) * y[i];
}

template <typename T>
void add_forward(T* y, const T* a, const T* b, index_t size, bool relu) {
    if (relu) {
        TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static)
                                           num_threads(threads_for(size, kElementGrain)))
        for (index_t i = 0; i < size; ++i) {
            const T v = a[i] + b[i];
            y[i] = v <= T(0) ? T(0) : v;  // relu_forward's rule
        }
    } else {
        TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static)
                                           num_threads(threads_for(size, kElementGrain)))
        for (index_t i = 0; i < size; ++i) y[i] = a[i] + b[i];
    }
}

#define TINYCONV_INSTANTIATE(T)                                         \
    template void relu_forward<T>(T*, const T*, index_t);               \
    template void relu_backward<T>(T*, const T*, const T*, index_t);    \
    template void sigmoid_forward<T>(T*, const T*, index_t);            \
    template void sigmoid_backward<T>(T*, const T*, const T*, index_t); \
    template void add_forward<T>(T*, const T*, const T*, index_t, bool);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
