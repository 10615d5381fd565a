// Window geometry shared by im2col, convolution and pooling: a 2-D sliding window of size
// (fh, fw) moved with stride (sh, sw) over an input of size (h, w) padded by (ph, pw) on each side.
#pragma once

#include "parallel.h"

namespace tinyconv {

struct Window2d {
    index_t h, w;    // input height, width (unpadded)
    index_t fh, fw;  // window height, width
    index_t sh, sw;  // stride
    index_t ph, pw;  // padding added on each side
    index_t oh() const { return (h + 2 * ph - fh) / sh + 1; }
    index_t ow() const { return (w + 2 * pw - fw) / sw + 1; }
};

// The output positions o in [0, out) whose tap k reads an in-range input coordinate, i.e.
// 0 <= o*s - p + k < in; returned as the half-open range [lo, hi) (empty when lo >= hi).
inline void valid_range(index_t in, index_t out, index_t s, index_t p, index_t k, index_t& lo,
                        index_t& hi) {
    // o*s >= p - k  ->  o >= ceil((p - k) / s)
    const index_t a = p - k;
    lo = a <= 0 ? 0 : (a + s - 1) / s;
    // o*s <= in - 1 + p - k  ->  o <= floor((in - 1 + p - k) / s)
    const index_t b = in - 1 + p - k;
    hi = b < 0 ? 0 : b / s + 1;
    if (hi > out) hi = out;
    if (lo > hi) lo = hi;
}

}  // namespace tinyconv
