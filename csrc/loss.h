// Softmax and softmax + cross-entropy loss over the rows of an (N, K) logit matrix.
//
//   softmax(x)[i, k] = exp(x[i,k] - m_i) / sum_j exp(x[i,j] - m_i),   m_i = max_j x[i, j]
//   loss = (1/N) sum_i sum_k t[i,k] * (lse_i - x[i,k]),  lse_i = m_i + log sum_j exp(x[i,j] - m_i)
// Targets are integer labels (t[i] in [0, K), i.e. one-hot rows) or an (N, K) distribution.
// Subtracting the row maximum keeps exp in range for any finite logits. The loss is summed over
// rows in row order, so it does not depend on the thread count.
//   backward: dx = (softmax(x) - t) * dout / N
#pragma once

#include <cstdint>

#include "parallel.h"

namespace tinyconv {

template <typename T>
void softmax_forward(T* y,        // (N, K)
                     const T* x,  // (N, K)
                     index_t n, index_t k);

// Returns the mean loss; y receives softmax(x). Exactly one of labels / targets is non-null.
template <typename T>
T softmax_cross_entropy_forward(T* y,                        // (N, K)
                                const T* x,                  // (N, K)
                                const std::int64_t* labels,  // (N,) in [0, K), or null
                                const T* targets,            // (N, K), or null
                                index_t n, index_t k);
template <typename T>
void softmax_cross_entropy_backward(T* dx,                       // (N, K)
                                    const T* y,                  // (N, K) softmax output
                                    const std::int64_t* labels,  // (N,) or null
                                    const T* targets,            // (N, K) or null
                                    T dout, index_t n, index_t k);

}  // namespace tinyconv
