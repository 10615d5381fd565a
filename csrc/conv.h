// 2-D convolution (cross-correlation, as DLfS), NCHW, GEMM-based.
//
//   y[n, f, oh, ow] = b[f] + sum_{c, fh, fw} W[f, c, fh, fw] * xpad[n, c, oh*sh + fh, ow*sw + fw]
//
// Per image n: colT = im2col_chans(x[n]) (C*FH*FW, OH*OW), y[n] = W (FN, C*FH*FW) . colT + b.
// Backward per image: dcolT = W^T . dout[n] -> col2im -> dx[n]; dW += dout[n] . colT^T;
// db += row sums of dout[n]. A 1x1 kernel with stride 1 and no padding skips im2col (x[n] is
// already colT).
//
// Memory: per thread, one tile of colT in the forward pass (about 256 KiB, so it stays in L2), one
// image's colT and dcolT in the backward pass; never the whole batch's column matrix.
// Determinism: dW and db are sums over images, taken in fixed blocks of images (block partials
// summed image by image, then added in block order), so the result does not depend on the
// thread count.
#pragma once

#include "geometry.h"

namespace tinyconv {

template <typename T>
void conv2d_forward(T* y,        // (N, FN, OH, OW)
                    const T* x,  // (N, C, H, W)
                    const T* w,  // (FN, C, FH, FW)
                    const T* b,  // (FN,)
                    index_t n, index_t c, index_t fn, const Window2d& g);

template <typename T>
void conv2d_backward(T* dx,          // (N, C, H, W), or null to skip the input gradient
                     T* dw,          // (FN, C, FH, FW)
                     T* db,          // (FN,)
                     const T* dout,  // (N, FN, OH, OW)
                     const T* x,     // (N, C, H, W)
                     const T* w,     // (FN, C, FH, FW)
                     index_t n, index_t c, index_t fn, const Window2d& g);

// Direct six-deep loops over the definition: the oracle for the fast path.
template <typename T>
void conv2d_forward_reference(T* y, const T* x, const T* w, const T* b, index_t n, index_t c,
                              index_t fn, const Window2d& g);
template <typename T>
void conv2d_backward_reference(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w,
                               index_t n, index_t c, index_t fn, const Window2d& g);

}  // namespace tinyconv
