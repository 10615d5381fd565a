#include "affine.h"

#include <algorithm>

#include "gemm.h"

namespace tinyconv {

template <typename T>
void affine_forward(T* y, const T* x, const T* w, const T* b, index_t n, index_t d, index_t m) {
    for (index_t i = 0; i < n; ++i) std::copy(b, b + m, y + i * m);
    gemm<T>(y, m, x, d, false, w, m, false, n, m, d, T(1), T(1), num_threads());
}

template <typename T>
void affine_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, index_t n,
                     index_t d, index_t m) {
    if (dx) gemm<T>(dx, d, dout, m, false, w, m, true, n, d, m, T(1), T(0), num_threads());
    gemm<T>(dw, m, x, d, true, dout, m, false, d, m, n, T(1), T(0), num_threads());
    // Column blocks per thread; each column is summed down the rows in order.
    constexpr index_t kBlock = 64;
    const index_t blocks = (m + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) num_threads(threads_for(n* m, index_t(1) << 15))
    for (index_t blk = 0; blk < blocks; ++blk) {
        const index_t j0 = blk * kBlock, j1 = std::min(m, j0 + kBlock);
        std::fill(db + j0, db + j1, T(0));
        for (index_t i = 0; i < n; ++i) {
            const T* row = dout + i * m;
            TINYCONV_OMP_SIMD()
            for (index_t j = j0; j < j1; ++j) db[j] += row[j];
        }
    }
}

#define TINYCONV_INSTANTIATE(T)                                                                   \
    template void affine_forward<T>(T*, const T*, const T*, const T*, index_t, index_t, index_t); \
    template void affine_backward<T>(T*, T*, T*, const T*, const T*, const T*, index_t, index_t,  \
                                     index_t);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
