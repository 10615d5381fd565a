#include "optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace tinyconv {

template <typename T>
void adam_update(T* param, T* m, T* v, const T* grad, index_t size, T lr_t, T one_minus_beta1,
                 T one_minus_beta2, T eps) {
    TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static)
                                       num_threads(threads_for(size, index_t(1) << 16)))
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
    TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static) num_threads(threads_for(size, kGrain)))
    for (index_t i = 0; i < size; ++i) param[i] -= lr * grad[i];
}

template <typename T>
void momentum_update(T* param, T* v, const T* grad, index_t size, T lr, T momentum, bool nesterov,
                     T momentum_sq, T nesterov_step) {
    if (nesterov) {
        TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static) num_threads(threads_for(size, kGrain)))
        for (index_t i = 0; i < size; ++i) {
            const T g = grad[i];
            const T vi = v[i] * momentum - lr * g;
            v[i] = vi;
            param[i] = (param[i] + momentum_sq * vi) - nesterov_step * g;
        }
    } else {
        TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static) num_threads(threads_for(size, kGrain)))
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
    TINYCONV_OMP_PARALLEL_FOR_SIMD(schedule(static) num_threads(threads_for(size, kGrain)))
    for (index_t i = 0; i < size; ++i) {
        const T g = grad[i];
        const T hi = rmsprop ? h[i] * decay + (one_minus_decay * g) * g : h[i] + g * g;
        h[i] = hi;
        param[i] -= (lr * g) / (std::sqrt(hi) + eps);
    }
}

namespace {
// The exponent field of a float lies in one 32-bit word -- the whole float, or the high word of a
// double -- so the checks below read one uint32 per element and use integer operations only (SSE2
// has no 64-bit compare: 4x faster for double than testing all 64 bits; and no floating-point
// compare that a compiler could fold away). With e the exponent field (bits 23..30 of a float's
// word, 20..30 of a double's high word):
//   x is NaN or infinite        <=>  e == all ones (255 for float, 2047 for double)
//   x * x overflows (or is NaN)  <=>  e >= 127 + 64 for float (|x| >= 2^64), 1023 + 512 for double:
//     the largest float below 2^64 is (1 - 2^-24) * 2^64, whose square (1 - 2^-23 + 2^-48) * 2^128
//     is below FLT_MAX = (1 - 2^-24) * 2^128, so it rounds to a finite value; likewise for double.
// "e >= limit" is tested by adding (2^bits - limit) to the masked exponent: the sum carries into
// bit 31 exactly when e >= limit, so OR-ing the sums over a chunk and testing bit 31 once finds any
// such element with four integer operations per element (load, and, add, or).
template <typename T>
struct ExponentWord;
template <>
struct ExponentWord<float> {
    static constexpr std::uint32_t mask = 0x7f800000u;
    static constexpr int shift = 23, nonfinite = 255, square_overflow = 127 + 64, end = 256;
    static constexpr std::size_t offset = 0;
};
template <>
struct ExponentWord<double> {
    static constexpr std::uint32_t mask = 0x7ff00000u;
    static constexpr int shift = 20, nonfinite = 2047, square_overflow = 1023 + 512, end = 2048;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    static constexpr std::size_t offset = 0;
#else
    static constexpr std::size_t offset = 4;  // little-endian (x86, ARM, every MSVC target)
#endif
};
constexpr std::uint32_t kCarryBit = 0x80000000u;

// The masked exponent word of element i plus the bias: bit 31 set <=> exponent >= the limit.
template <typename T>
inline std::uint32_t biased_exponent(const unsigned char* bytes, index_t i, std::uint32_t bias) {
    std::uint32_t word;
    std::memcpy(&word, bytes + i * index_t(sizeof(T)) + ExponentWord<T>::offset, sizeof word);
    return (word & ExponentWord<T>::mask) + bias;
}
}  // namespace

template <typename T>
index_t find_nonfinite(const T* values, index_t size, bool squared) {
    static_assert(std::numeric_limits<T>::is_iec559, "IEEE 754 float or double");
    using Word = ExponentWord<T>;
    const int limit = squared ? Word::square_overflow : Word::nonfinite;
    const std::uint32_t bias = std::uint32_t(Word::end - limit) << Word::shift;
    const auto* bytes = reinterpret_cast<const unsigned char*>(values);
    const index_t chunks = (size + kGrain - 1) / kGrain;
    // Pass 1, vectorised: per chunk, the OR of the biased exponents; the first chunk whose OR has
    // bit 31 set is an integer min over chunks, the same for any thread count and schedule. (A
    // critical section, entered only by a chunk that failed, instead of reduction(min), which
    // OpenMP 2.0 and so MSVC lack.)
    index_t first_bad_chunk = chunks;
#pragma omp parallel for schedule(static) num_threads(threads_for(size, kGrain))
    for (index_t chunk = 0; chunk < chunks; ++chunk) {
        const index_t begin = chunk * kGrain, end = std::min(size, begin + kGrain);
        std::uint32_t any = 0;
        TINYCONV_OMP_SIMD(reduction(| : any))
        for (index_t i = begin; i < end; ++i) any |= biased_exponent<T>(bytes, i, bias);
        if (any & kCarryBit) {
#pragma omp critical(tinyconv_first_bad_chunk)
            first_bad_chunk = std::min(first_bad_chunk, chunk);
        }
    }
    if (first_bad_chunk == chunks) return -1;
    // Pass 2, only on failure: the exact index within that chunk (same test, element by element).
    const index_t begin = first_bad_chunk * kGrain, end = std::min(size, begin + kGrain);
    for (index_t i = begin; i < end; ++i)
        if (biased_exponent<T>(bytes, i, bias) & kCarryBit) return i;
    return -1;  // not reached: pass 1 found one in this chunk
}

template <typename T>
index_t find_nonfinite_reference(const T* values, index_t size, bool squared) {
    for (index_t i = 0; i < size; ++i)
        if (!std::isfinite(squared ? values[i] * values[i] : values[i])) return i;
    return -1;
}

template void sgd_update<float>(float*, const float*, index_t, float);
template void sgd_update<double>(double*, const double*, index_t, double);
template void momentum_update<float>(float*, float*, const float*, index_t, float, float, bool,
                                     float, float);
template void momentum_update<double>(double*, double*, const double*, index_t, double, double,
                                      bool, double, double);
template void adaptive_update<float>(float*, float*, const float*, index_t, float, bool, float,
                                     float, float);
template void adaptive_update<double>(double*, double*, const double*, index_t, double, bool,
                                      double, double, double);
template void adam_update<float>(float*, float*, float*, const float*, index_t, float, float, float,
                                 float);
template void adam_update<double>(double*, double*, double*, const double*, index_t, double, double,
                                  double, double);
template index_t find_nonfinite<float>(const float*, index_t, bool);
template index_t find_nonfinite<double>(const double*, index_t, bool);
template index_t find_nonfinite_reference<float>(const float*, index_t, bool);
template index_t find_nonfinite_reference<double>(const double*, index_t, bool);

}  // namespace tinyconv
