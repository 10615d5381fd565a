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

namespace {
constexpr index_t kGrain = index_t(1) << 16;
}

template <typename T>
void sgd_update(T* param, const T* grad, index_t size, T lr) {
#pragma omp parallel for simd schedule(static) num_threads(threads_for(size, kGrain))
    for (index_t i = 0; i < size; ++i) param[i] -= lr * grad[i];
}

template <typename T>
void momentum_update(T* param, T* v, const T* grad, index_t size, T lr, T momentum, bool nesterov,
                     T momentum_sq, T nesterov_step) {
    if (nesterov) {
#pragma omp parallel for simd schedule(static) num_threads(threads_for(size, kGrain))
        for (index_t i = 0; i < size; ++i) {
            const T g = grad[i];
            const T vi = v[i] * momentum - lr * g;
            v[i] = vi;
            param[i] = (param[i] + momentum_sq * vi) - nesterov_step * g;
        }
    } else {
#pragma omp parallel for simd schedule(static) num_threads(threads_for(size, kGrain))
        for (index_t i = 0; i < size; ++i) {
            const T vi = v[i] * momentum - lr * grad[i];
            v[i] = vi;
            param[i] += vi;
        }
    }
}

template <typename T>
void adaptive_update(T* param, T* h, const T* grad, index_t size, T lr, bool rmsprop, T decay,
                     T one_minus_decay, T eps) {
#pragma omp parallel for simd schedule(static) num_threads(threads_for(size, kGrain))
    for (index_t i = 0; i < size; ++i) {
        const T g = grad[i];
        const T hi = rmsprop ? h[i] * decay + (one_minus_decay * g) * g : h[i] + g * g;
        h[i] = hi;
        param[i] -= (lr * g) / (std::sqrt(hi) + eps);
    }
}

template void sgd_update<float>(float*, const float*, index_t, float);
template void sgd_update<double>(double*, const double*, index_t, double);
template void momentum_update<float>(float*, float*, const float*, index_t, float, float, bool, float, float);
template void momentum_update<double>(double*, double*, const double*, index_t, double, double, bool, double,
                                      double);
template void adaptive_update<float>(float*, float*, const float*, index_t, float, bool, float, float, float);
template void adaptive_update<double>(double*, double*, const double*, index_t, double, bool, double, double,
                                      double);
template void adam_update<float>(float*, float*, float*, const float*, index_t, float, float, float, float);
template void adam_update<double>(double*, double*, double*, const double*, index_t, double, double, double,
                                  double);

}  // namespace tinyconv
