// Fused parameter updates: one pass over the arrays instead of NumPy's one pass per operator.
//
//   adam (DLfS's formulation, bias correction folded into lr_t):
//     m += (1 - beta1) * (g - m);  v += (1 - beta2) * (g*g - v);  p -= lr_t * m / (sqrt(v) + eps)
// Each element is computed with the same operations in the same order and precision as DLfS's
// NumPy code (this file is compiled without FMA contraction), so the results are bitwise equal.
#pragma once

#include "parallel.h"

namespace tinyconv {

template <typename T>
void adam_update(T* param,        // (size,) updated in place
                 T* m,            // (size,) first moment, updated in place
                 T* v,            // (size,) second moment, updated in place
                 const T* grad,   // (size,)
                 index_t size, T lr_t, T one_minus_beta1, T one_minus_beta2, T eps);

}  // namespace tinyconv
