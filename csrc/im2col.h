// im2col / col2im: unfold sliding windows of an NCHW image into a matrix, and fold back.
//
// Two layouts of the column matrix for one image of shape (C, H, W):
//   rows   layout (DLfS): col[(oh*OW + ow), (c*FH + fh)*FW + fw]   shape (OH*OW, C*FH*FW)
//   chans  layout (Caffe): col[(c*FH + fh)*FW + fw, (oh*OW + ow)]  shape (C*FH*FW, OH*OW)
// Padded positions read as zero. col2im accumulates every window's value into the pixel it came
// from (overlapping windows add up); contributions that land in the padding are dropped. For each
// pixel the contributions are added in (fh, fw) order, exactly as DLfS's col2im does, so results
// are independent of the thread count.
// The batch functions take/return the rows layout for N images stacked: (N*OH*OW, C*FH*FW).
#pragma once

#include "geometry.h"

namespace tinyconv {

// One image, rows layout.
template <typename T>
void im2col_rows(T* col,        // (OH*OW, C*FH*FW)
                 const T* img,  // (C, H, W)
                 index_t c, const Window2d& g);
template <typename T>
void col2im_rows(T* img,        // (C, H, W), overwritten
                 const T* col,  // (OH*OW, C*FH*FW)
                 index_t c, const Window2d& g);

// One image, chans layout (used inside convolution: it makes the GEMM operands contiguous).
template <typename T>
void im2col_chans(T* col,        // (C*FH*FW, OH*OW)
                  const T* img,  // (C, H, W)
                  index_t c, const Window2d& g);
// Only the output columns [l0, l1) of the chans layout (a tile of the GEMM's N dimension).
template <typename T>
void im2col_chans(T* col,        // (C*FH*FW, l1 - l0)
                  const T* img,  // (C, H, W)
                  index_t c, const Window2d& g, index_t l0, index_t l1);
template <typename T>
void col2im_chans(T* img,        // (C, H, W), overwritten
                  const T* col,  // (C*FH*FW, OH*OW)
                  index_t c, const Window2d& g);

// Whole batch, rows layout, parallel over images (and rows within an image).
template <typename T>
void im2col(T* col,        // (N*OH*OW, C*FH*FW)
            const T* img,  // (N, C, H, W)
            index_t n, index_t c, const Window2d& g);
template <typename T>
void col2im(T* img,        // (N, C, H, W), overwritten; the adjoint (backward) of im2col
            const T* col,  // (N*OH*OW, C*FH*FW)
            index_t n, index_t c, const Window2d& g);

// Plain loops that follow the definition, kept as an oracle for the fast versions.
template <typename T>
void im2col_reference(T* col, const T* img, index_t n, index_t c, const Window2d& g);
template <typename T>
void col2im_reference(T* img, const T* col, index_t n, index_t c, const Window2d& g);

}  // namespace tinyconv
