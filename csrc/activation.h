// Elementwise activations and their gradients, any shape (flat arrays of `size` elements).
//   relu:    y = x <= 0 ? 0 : x               dx = x <= 0 ? 0 : dout   (as DLfS: NaN propagates)
//   sigmoid: y = 1 / (1 + exp(-x))            dx = dout * y * (1 - y)
//   add:     y = a + b, or relu(a + b)        (a residual block's skip connection; its gradient is
//                                              dout for both inputs, through relu_backward if
//                                              fused)
// sigmoid is evaluated as exp(x) / (1 + exp(x)) for x < 0 so that exp never overflows.
#pragma once

#include "parallel.h"

namespace tinyconv {

template <typename T>
void relu_forward(T* y, const T* x, index_t size);
template <typename T>
void relu_backward(T* dx, const T* dout, const T* x, index_t size);

template <typename T>
void sigmoid_forward(T* y, const T* x, index_t size);
template <typename T>
void sigmoid_backward(T* dx, const T* dout, const T* y, index_t size);

// y may be a or b itself (each element is read before it is written).
template <typename T>
void add_forward(T* y, const T* a, const T* b, index_t size, bool relu);

}  // namespace tinyconv
