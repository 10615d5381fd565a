#include "loss.h"

#include <cmath>
#include <vector>

namespace tinyconv {

namespace {

constexpr index_t kRowGrain = 1 << 14;

// y_row = softmax(x_row); returns the row's log-sum-exp.
template <typename T>
T softmax_row(T* y, const T* x, index_t k) {
    T m = x[0];
    for (index_t j = 1; j < k; ++j) m = x[j] > m ? x[j] : m;
    T sum = 0;
    for (index_t j = 0; j < k; ++j) {
        y[j] = std::exp(x[j] - m);
        sum += y[j];
    }
    const T inv = T(1) / sum;
    TINYCONV_OMP_SIMD()
    for (index_t j = 0; j < k; ++j) y[j] *= inv;
    return m + std::log(sum);
}

}  // namespace

template <typename T>
void softmax_forward(T* y, const T* x, index_t n, index_t k) {
#pragma omp parallel for schedule(static) num_threads(threads_for(n* k, kRowGrain))
    for (index_t i = 0; i < n; ++i) softmax_row(y + i * k, x + i * k, k);
}

template <typename T>
T softmax_cross_entropy_forward(T* y, const T* x, const std::int64_t* labels, const T* targets,
                                index_t n, index_t k) {
    std::vector<T> row_loss(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) num_threads(threads_for(n* k, kRowGrain))
    for (index_t i = 0; i < n; ++i) {
        const T* xi = x + i * k;
        const T lse = softmax_row(y + i * k, xi, k);
        if (labels) {
            row_loss[i] = lse - xi[labels[i]];
        } else {
            const T* ti = targets + i * k;
            T s = 0;
            for (index_t j = 0; j < k; ++j)
                if (ti[j] != T(0)) s += ti[j] * (lse - xi[j]);
            row_loss[i] = s;
        }
    }
    T total = 0;
    for (index_t i = 0; i < n; ++i) total += row_loss[i];
    return total / T(n);
}

template <typename T>
void softmax_cross_entropy_backward(T* dx, const T* y, const std::int64_t* labels, const T* targets,
                                    T dout, index_t n, index_t k) {
    const T scale = dout / T(n);
#pragma omp parallel for schedule(static) num_threads(threads_for(n* k, kRowGrain))
    for (index_t i = 0; i < n; ++i) {
        const T* yi = y + i * k;
        T* di = dx + i * k;
        if (labels) {
            TINYCONV_OMP_SIMD()
            for (index_t j = 0; j < k; ++j) di[j] = yi[j] * scale;
            di[labels[i]] = (yi[labels[i]] - T(1)) * scale;
        } else {
            const T* ti = targets + i * k;
            TINYCONV_OMP_SIMD()
            for (index_t j = 0; j < k; ++j) di[j] = (yi[j] - ti[j]) * scale;
        }
    }
}

#define TINYCONV_INSTANTIATE(T)                                                                  \
    template void softmax_forward<T>(T*, const T*, index_t, index_t);                            \
    template T softmax_cross_entropy_forward<T>(T*, const T*, const std::int64_t*, const T*,     \
                                                index_t, index_t);                               \
    template void softmax_cross_entropy_backward<T>(T*, const T*, const std::int64_t*, const T*, \
                                                    T, index_t, index_t);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
