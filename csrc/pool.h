// Max and average pooling over (pool_h, pool_w) windows, NCHW, each (n, c) plane independently.
//
// Max: padded positions never win (they act as -inf, like PyTorch; DLfS pads with zeros). The
// caller guarantees pad < pool in each direction, so every window holds at least one real input.
// Ties go to the first maximum in row-major window order (as np.argmax); a NaN wins (propagates).
// argmax holds the flat index h*W + w of the winner inside its input plane.
// Average: padded positions count as zeros; every window divides by pool_h * pool_w.
// Global average (one window the size of the plane, output (N, C)): see below.
// Backward passes scatter into dx plane by plane, in a fixed order: overlapping windows
// accumulate, and the result does not depend on the thread count.
#pragma once

#include <cstdint>

#include "geometry.h"

namespace tinyconv {

template <typename T>
void max_pool2d_forward(T* y,                  // (N, C, OH, OW)
                        std::int64_t* argmax,  // (N, C, OH, OW), or null: values only (faster)
                        const T* x,            // (N, C, H, W)
                        index_t n, index_t c, const Window2d& g);
// One plane, values only, on the calling thread: the same windows, code and bits as
// max_pool2d_forward's. For callers that are parallel already and pool a plane they just made (a
// convolution whose output is pooled as it leaves the GEMM, conv.h).
template <typename T>
void max_pool2d_forward_plane(T* y,        // (OH, OW)
                              const T* x,  // (H, W)
                              const Window2d& g);
// Finds each window's winner again from x (the forward input) and scatters dout there: no argmax
// array is kept between the passes (less memory, and inference never computes one).
// through_relu: x is a ReLU's output, and dx is that ReLU's backward pass too (a winner whose
// value is <= 0 gets nothing; the same bits as the two passes one after the other).
template <typename T>
void max_pool2d_backward_from_input(T* dx,          // (N, C, H, W)
                                    const T* dout,  // (N, C, OH, OW)
                                    const T* x,     // (N, C, H, W)
                                    index_t n, index_t c, const Window2d& g, bool through_relu);

// Needs only the plane sizes: argmax already says where each output came from. Returns false if
// an argmax entry lies outside [0, H*W): that entry is skipped (nothing is written out of bounds)
// and the caller reports it, so the check costs no separate pass.
template <typename T>
bool max_pool2d_backward(T* dx,                       // (N, C, H, W)
                         const T* dout,               // (N, C, OH, OW)
                         const std::int64_t* argmax,  // (N, C, OH, OW), each in [0, H*W)
                         index_t planes,              // N*C
                         index_t plane_size,          // H*W
                         index_t out_plane_size,      // OH*OW
                         const T* relu_output);       // (N, C, H, W) or null, as through_relu above

template <typename T>
void avg_pool2d_forward(T* y,        // (N, C, OH, OW)
                        const T* x,  // (N, C, H, W)
                        index_t n, index_t c, const Window2d& g);
template <typename T>
void avg_pool2d_backward(T* dx,          // (N, C, H, W)
                         const T* dout,  // (N, C, OH, OW)
                         index_t n, index_t c, const Window2d& g);

// Global average pooling: y[n, c] = the mean of the plane x[n, c] (summed in double in fixed-order
// lanes, lanes.h; one thread per plane). Backward: every dx[n, c, h, w] = dout[n, c] / (H*W),
// divided in double and rounded once.
template <typename T>
void global_avg_pool2d_forward(T* y,                                 // (N, C)
                               const T* x,                           // (N, C, H, W)
                               index_t planes, index_t plane_size);  // N*C, H*W
template <typename T>
void global_avg_pool2d_backward(T* dx,          // (N, C, H, W)
                                const T* dout,  // (N, C)
                                index_t planes, index_t plane_size);

// Loops straight from the definition (every window position checked), the oracle.
template <typename T>
void max_pool2d_forward_reference(T* y, std::int64_t* argmax, const T* x, index_t n, index_t c,
                                  const Window2d& g);
template <typename T>
void avg_pool2d_forward_reference(T* y, const T* x, index_t n, index_t c, const Window2d& g);
template <typename T>
void global_avg_pool2d_forward_reference(T* y, const T* x, index_t planes, index_t plane_size);

}  // namespace tinyconv
