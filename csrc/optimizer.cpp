#include "optimizer.h"

#include <cmath>

namespace tinyconv {

template <typename T>
void adam_update(T* param, T* m, T* v, const T* grad, index_t size, T lr_t, T one_minus_beta1,
                 T one_minus_beta2, T eps) {
#pragma omp parallel for simd schedule(static) num_threads(threads_for(size, index_t(1) << 16))
    for (index_t i = 0; i < size; ++i) {
        const T g = grad[i];
        const T mi = m[i] + one_minus_beta1 * (g - m[i]);
        const T vi = v[i] + one_minus_beta2 * (g * g - v[i]);
        m[i] = mi;
        v[i] = vi;
        param[i] -= (lr_t * mi) / (std::sqrt(vi) + eps);
    }
}

template void adam_update<float>(float*, float*, float*, const float*, index_t, float, float, float, float);
template void adam_update<double>(double*, double*, double*, const double*, index_t, double, double, double,
                                  double);

}  // namespace tinyconv
