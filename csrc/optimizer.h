// Fused parameter updates: one pass over the arrays instead of NumPy's one pass per operator.
//
//   sgd:       p -= lr * g
//   momentum:  v = momentum*v - lr*g;  p += v
//   nesterov:  v = momentum*v - lr*g;  p += momentum^2 * v;  p -= (1 + momentum) * lr * g
//   adagrad:   h += g*g;  p -= lr * g / (sqrt(h) + eps)
//   rmsprop:   h = decay*h + (1 - decay) * g * g;  p -= lr * g / (sqrt(h) + eps)
//   adam (DLfS's formulation, bias correction folded into lr_t):
//     m += (1 - beta1) * (g - m);  v += (1 - beta2) * (g*g - v);  p -= lr_t * m / (sqrt(v) + eps)
// Scalar factors arrive already combined as DLfS's Python code combines them (momentum^2,
// (1 + momentum) * lr, 1 - decay, ...) and are rounded to T once, as NumPy does with Python floats.
// Each element is computed with the same operations in the same order and precision as DLfS's
// NumPy code (this file is compiled without FMA contraction), so the results are bitwise equal.
//
// find_nonfinite lets a caller refuse an update before it starts: one vectorised read of a
// gradient, cheaper than any update pass, so a training loop can check every gradient first and
// leave the parameters and the optimizer state untouched. With squared == true it also flags
// entries whose square overflows: AdaGrad, RMSprop and Adam square gradients, and Adam's second
// moment, once infinite, turns NaN on the next step (inf - inf).
#pragma once

#include "parallel.h"

namespace tinyconv {

template <typename T>
void sgd_update(T* param, const T* grad, index_t size, T lr);

// nesterov == false: momentum; true: Nesterov (momentum_sq = momentum^2, step = (1 + momentum)*lr).
template <typename T>
void momentum_update(T* param, T* v, const T* grad, index_t size, T lr, T momentum, bool nesterov,
                     T momentum_sq, T nesterov_step);

// decay == 1 and one_minus_decay == 1: AdaGrad (h += g*g); otherwise RMSprop.
template <typename T>
void adaptive_update(T* param, T* h, const T* grad, index_t size, T lr, bool rmsprop, T decay,
                     T one_minus_decay, T eps);

template <typename T>
void adam_update(T* param,       // (size,) updated in place
                 T* m,           // (size,) first moment, updated in place
                 T* v,           // (size,) second moment, updated in place
                 const T* grad,  // (size,)
                 index_t size, T lr_t, T one_minus_beta1, T one_minus_beta2, T eps);

// The index of the first element x of values[0, size) for which x (squared == false) or x * x
// (squared == true) is NaN or infinite, or -1 when there is none. Exact (an integer test on the
// exponent field), and the same answer for any thread count (chunks combine by an integer minimum).
template <typename T>
index_t find_nonfinite(const T* values,  // (size,)
                       index_t size, bool squared);

// Plain loop with std::isfinite(x) or std::isfinite(x * x): the oracle of find_nonfinite.
template <typename T>
index_t find_nonfinite_reference(const T* values, index_t size, bool squared);

}  // namespace tinyconv
