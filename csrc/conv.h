// 2-D convolution (cross-correlation, as DLfS), NCHW, GEMM-based.
//
//   y[n, f, oh, ow] = b[f] + sum_{c, fh, fw} W[f, c, fh, fw] * xpad[n, c, oh*sh + fh, ow*sw + fw]
//
// Per image n, with colT = im2col_chans(x[n]) (C*FH*FW, OH*OW): y[n] = W (FN, C*FH*FW) . colT + b;
// backward: dW += dout[n] . colT^T, db += row sums of dout[n], dx[n] = col2im(W^T . dout[n]).
// Two ways to get colT into the GEMMs:
//   pointwise (1x1, stride 1, no pad): colT is x[n] itself.
//   flat (everything else): images lie on a zero canvas with their padding (one per canvas, or
//     up to 16 side by side when small), split into stride phases when strided (padded row
//     r*SH + a, column q*SW + b go to plane (c, a, b) at (r, q)), read as one flat array, where
//     every row of colT is a contiguous slice: the GEMM packs straight from the canvas (an
//     implicit GEMM) and colT is never written. The filter gradient is a tile of dot products
//     (gemm_dot); dx at stride 1 is a convolution of dout with flipped, channel-swapped filters
//     on this same path (with >= 8 input channels and pads below the kernel), else
//     W^T . dout folded back onto the canvas. Outputs are computed over "wide" rows of the
//     canvas width and the real columns picked out (see conv.cpp).
//
// Memory: per thread, a few per-image buffers (on the flat backward path, one block's canvases and
// wide douts: 4 images, or one canvas of up to 16 small ones, within an L2-sized budget); never
// the whole batch's column matrix.
// Non-finite values reach only the outputs whose definition has them as a term: padding and the
// positions the flat path computes and drops never contribute 0 * inf (see conv.cpp).
// Geometry: h, w, window, stride >= 1, pads >= 0, window within the padded input (module.cpp
// checks users' arguments); anything else throws std::logic_error before any buffer is touched.
// Determinism: dW and db are sums over images, taken in fixed blocks (4 images, or one canvas of
// small ones, its size set by the shapes and the batch size; block partials summed in a fixed
// order, then added in block order), so the result does not depend on the thread count.
#pragma once

#include "geometry.h"

namespace tinyconv {

// relu: y = max(y, 0) as each output leaves the kernel (the epilogue of a Convolution -> ReLU
// pair), with ReLU's rule: entries <= 0 become 0, NaN stays NaN.
template <typename T>
void conv2d_forward(T* y,        // (N, FN, OH, OW)
                    const T* x,  // (N, C, H, W)
                    const T* w,  // (FN, C, FH, FW)
                    const T* b,  // (FN,)
                    index_t n, index_t c, index_t fn, const Window2d& g, bool relu = false);

// Inference: the convolution (bias, ReLU if relu) then max pooling by `pool` over its (OH, OW)
// output, fused: each output plane is pooled as it leaves the GEMM, from a per-thread buffer, and
// only the pooled planes are written (the full output never reaches memory). The same bits as
// conv2d_forward followed by max_pool2d_forward (pool.h). pool: h, w = OH, OW; pads below the
// window, as max pooling needs.
template <typename T>
void conv2d_max_pool_forward(T* y,        // (N, FN, POH, POW): pool.oh(), pool.ow()
                             const T* x,  // (N, C, H, W)
                             const T* w,  // (FN, C, FH, FW)
                             const T* b,  // (FN,)
                             index_t n, index_t c, index_t fn, const Window2d& g, bool relu,
                             const Window2d& pool);

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
