// Per-channel batch normalisation of NCHW tensors (BatchNorm2d), forward and backward.
//
// Each channel c is normalised over its m = N*H*W values:
//   xhat = (x - mean[c]) * invstd[c],  invstd = 1 / sqrt(var + eps),  y = gamma[c] * xhat + beta[c]
// Training: mean and the biased variance var are the batch's (the variance by a second pass over
// (x - mean)^2, not E[x^2] - mean^2, which cancels), summed in double for float32 too. The running
// statistics are updated as running = momentum * running + (1 - momentum) * batch (momentum is the
// weight of the old value, DLfS's convention), the variance multiplied by m / (m - 1) when
// `unbiased` (PyTorch's running_var; the caller ensures m >= 2 then). m == 0 (an empty batch):
// mean and invstd are NaN and the running statistics stay as they are (as PyTorch leaves them).
// Inference: mean = running_mean, var = running_var; nothing is updated.
// The outputs are computed from mean and invstd rounded to T, exactly the values returned, so
// that the backward pass, given them, differentiates the function that was evaluated:
//   y = (x - mean) * (invstd * gamma) + beta            (in T; relu: y <= 0 becomes 0, NaN stays)
// Backward (dy = dout, or 0 where relu_output <= 0 when the forward had a fused ReLU):
//   dbeta = sum dy,  dgamma = sum dy * xhat
//   train: dx = gamma * invstd / m * (m * dy - sum dy - xhat * sum dy * xhat)
//   inference (the statistics are constants): dx = dy * gamma * invstd
//
// Determinism: a channel's m values, in (n, h, w) order, are cut into fixed blocks of
// kBatchNormBlock values; each block is summed in fixed-order lanes (lanes.h) and the block sums
// are added in block order. Channels go to threads whole, or, when there are few channels for the
// threads, blocks do (and their sums are added in order afterwards): the same bits either way.
// The elementwise passes that need no sums (inference, and after the sums of split channels) run
// over the tensor in memory order; every element's value depends on its channel's constants only.
#pragma once

#include "parallel.h"

namespace tinyconv {

// Values per reduction block of a channel (also the unit of work when blocks go to threads).
constexpr index_t kBatchNormBlock = 4096;

template <typename T>
void batch_norm2d_forward(T* y,             // (N, C, H, W)
                          T* mean,          // (C,) out: the mean used
                          T* invstd,        // (C,) out: 1 / sqrt(var + eps) used
                          T* running_mean,  // (C,) read; updated in place when train
                          T* running_var,   // (C,) read; updated in place when train
                          const T* x,       // (N, C, H, W)
                          const T* gamma,   // (C,)
                          const T* beta,    // (C,)
                          index_t n, index_t c, index_t plane,  // plane = H*W
                          bool train, double momentum, double eps, bool unbiased, bool relu);

template <typename T>
void batch_norm2d_backward(T* dx,                 // (N, C, H, W)
                           T* dgamma,             // (C,)
                           T* dbeta,              // (C,)
                           const T* dout,         // (N, C, H, W)
                           const T* x,            // (N, C, H, W) the forward input
                           const T* gamma,        // (C,)
                           const T* mean,         // (C,) as returned by the forward pass
                           const T* invstd,       // (C,) as returned by the forward pass
                           const T* relu_output,  // (N, C, H, W) the forward output, or null
                           index_t n, index_t c, index_t plane, bool train);

// Loops straight from the definitions (sequential sums in double), the oracles.
template <typename T>
void batch_norm2d_forward_reference(T* y, T* mean, T* invstd, T* running_mean, T* running_var,
                                    const T* x, const T* gamma, const T* beta, index_t n, index_t c,
                                    index_t plane, bool train, double momentum, double eps,
                                    bool unbiased, bool relu);
template <typename T>
void batch_norm2d_backward_reference(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x,
                                     const T* gamma, const T* mean, const T* invstd,
                                     const T* relu_output, index_t n, index_t c, index_t plane,
                                     bool train);

}  // namespace tinyconv
