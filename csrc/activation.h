// Elementwise activations and their gradients, any shape (flat arrays of `size` elements).
//   relu:    y = x <= 0 ? 0 : x               dx = x <= 0 ? 0 : dout   (as DLfS: NaN propagates)
//   sigmoid: y = 1 / (1 + exp(-x))            dx = dout * y * (1 - y)
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

}  // namespace tinyconv
