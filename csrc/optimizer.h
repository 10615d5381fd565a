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
void adam_update(T* param,        // (size,) updated in place
                 T* m,            // (size,) first moment, updated in place
                 T* v,            // (size,) second moment, updated in place
                 const T* grad,   // (size,)
                 index_t size, T lr_t, T one_minus_beta1, T one_minus_beta2, T eps);

}  // namespace tinyconv
