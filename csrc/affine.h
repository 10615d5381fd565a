// Fully connected layer: y = x . W + b, with x (N, D), W (D, M), b (M,), y (N, M).
//   backward: dx = dout . W^T,  dW = x^T . dout,  db = column sums of dout (rows in order).
// Every product goes through the GEMM, whose sums run in a fixed order; db's column sums are
// split across threads by column, never by row, so results do not depend on the thread count.
#pragma once

#include "parallel.h"

namespace tinyconv {

template <typename T>
void affine_forward(T* y,        // (N, M)
                    const T* x,  // (N, D)
                    const T* w,  // (D, M)
                    const T* b,  // (M,)
                    index_t n, index_t d, index_t m);
template <typename T>
void affine_backward(T* dx,          // (N, D), or null to skip the input gradient
                     T* dw,          // (D, M)
                     T* db,          // (M,)
                     const T* dout,  // (N, M)
                     const T* x,     // (N, D)
                     const T* w,     // (D, M)
                     index_t n, index_t d, index_t m);

}  // namespace tinyconv
