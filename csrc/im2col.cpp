#include "im2col.h"

#include <algorithm>

namespace tinyconv {

template <typename T>
void im2col_rows(T* col, const T* img, index_t c, const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow(), K = c * g.fh * g.fw;
    for (index_t oh = 0; oh < OH; ++oh) {
        for (index_t ow = 0; ow < OW; ++ow) {
            T* dst = col + (oh * OW + ow) * K;
            const index_t ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;
            // Taps fw in [fw_lo, fw_hi) read inside the row; the rest is padding.
            const index_t fw_lo = std::max<index_t>(0, -iw0);
            const index_t fw_hi = std::min<index_t>(g.fw, g.w - iw0);
            for (index_t ci = 0; ci < c; ++ci) {
                const T* plane = img + ci * g.h * g.w;
                for (index_t fh = 0; fh < g.fh; ++fh, dst += g.fw) {
                    const index_t ih = ih0 + fh;
                    if (ih < 0 || ih >= g.h || fw_lo >= fw_hi) {
                        std::fill(dst, dst + g.fw, T(0));
                        continue;
                    }
                    const T* src = plane + ih * g.w + iw0;
                    for (index_t fw = 0; fw < fw_lo; ++fw) dst[fw] = T(0);
                    TINYCONV_OMP_SIMD()
                    for (index_t fw = fw_lo; fw < fw_hi; ++fw) dst[fw] = src[fw];
                    for (index_t fw = std::max(fw_hi, fw_lo); fw < g.fw; ++fw) dst[fw] = T(0);
                }
            }
        }
    }
}

namespace {
// Folds channel ci of one image's rows-layout columns into `plane` (H, W), which must be zeroed.
// (fh, fw) outermost: every pixel receives its contributions in tap order, as DLfS does.
template <typename T>
void col2im_rows_plane(T* plane, const T* col, index_t c, index_t ci, const Window2d& g) {
    const index_t OW = g.ow(), K = c * g.fh * g.fw;
    for (index_t fh = 0; fh < g.fh; ++fh) {
        index_t oh_lo, oh_hi;
        valid_range(g.h, g.oh(), g.sh, g.ph, fh, oh_lo, oh_hi);
        for (index_t fw = 0; fw < g.fw; ++fw) {
            index_t ow_lo, ow_hi;
            valid_range(g.w, OW, g.sw, g.pw, fw, ow_lo, ow_hi);
            const index_t k = (ci * g.fh + fh) * g.fw + fw;
            for (index_t oh = oh_lo; oh < oh_hi; ++oh) {
                T* dst = plane + (oh * g.sh - g.ph + fh) * g.w + (fw - g.pw);
                const T* src = col + oh * OW * K + k;
                for (index_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow * g.sw] += src[ow * K];
            }
        }
    }
}
}  // namespace

template <typename T>
void col2im_rows(T* img, const T* col, index_t c, const Window2d& g) {
    std::fill(img, img + c * g.h * g.w, T(0));
    for (index_t ci = 0; ci < c; ++ci) col2im_rows_plane(img + ci * g.h * g.w, col, c, ci, g);
}

template <typename T>
void im2col_chans(T* col, const T* img, index_t c, const Window2d& g, index_t l0, index_t l1) {
    const index_t OW = g.ow(), width = l1 - l0;
    for (index_t ci = 0; ci < c; ++ci) {
        const T* plane = img + ci * g.h * g.w;
        for (index_t fh = 0; fh < g.fh; ++fh) {
            index_t oh_lo, oh_hi;
            valid_range(g.h, g.oh(), g.sh, g.ph, fh, oh_lo, oh_hi);
            for (index_t fw = 0; fw < g.fw; ++fw) {
                index_t ow_lo, ow_hi;
                valid_range(g.w, OW, g.sw, g.pw, fw, ow_lo, ow_hi);
                T* row = col + ((ci * g.fh + fh) * g.fw + fw) * width;
                // The columns [l0, l1) cover part of one output row, whole rows, part of a row.
                index_t oh = l0 / OW, ow_a = l0 % OW;
                for (index_t l = l0; l < l1; ++oh, ow_a = 0) {
                    const index_t ow_b = std::min(OW, ow_a + (l1 - l));
                    T* dst = row + (l - l0) - ow_a;  // dst[ow] is output column ow of row oh
                    const bool row_inside = oh >= oh_lo && oh < oh_hi;
                    const index_t lo = row_inside ? std::max(ow_a, ow_lo) : ow_b;
                    const index_t hi = row_inside ? std::max(lo, std::min(ow_b, ow_hi)) : ow_b;
                    for (index_t ow = ow_a; ow < lo; ++ow) dst[ow] = T(0);
                    if (lo < hi) {
                        const T* src = plane + (oh * g.sh - g.ph + fh) * g.w + (fw - g.pw);
                        if (g.sw == 1) {
                            // Rows are short (OW values): an inline loop beats a memcpy call.
                            TINYCONV_OMP_SIMD()
                            for (index_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow];
                        } else {
                            const index_t s = g.sw;
                            TINYCONV_OMP_SIMD()
                            for (index_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * s];
                        }
                    }
                    for (index_t ow = hi; ow < ow_b; ++ow) dst[ow] = T(0);
                    l += ow_b - ow_a;
                }
            }
        }
    }
}

template <typename T>
void im2col_chans(T* col, const T* img, index_t c, const Window2d& g) {
    im2col_chans(col, img, c, g, 0, g.oh() * g.ow());
}

template <typename T>
void col2im_chans(T* img, const T* col, index_t c, const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow(), L = OH * OW;
    std::fill(img, img + c * g.h * g.w, T(0));
    for (index_t ci = 0; ci < c; ++ci) {
        T* plane = img + ci * g.h * g.w;
        for (index_t fh = 0; fh < g.fh; ++fh) {
            index_t oh_lo, oh_hi;
            valid_range(g.h, OH, g.sh, g.ph, fh, oh_lo, oh_hi);
            for (index_t fw = 0; fw < g.fw; ++fw) {
                index_t ow_lo, ow_hi;
                valid_range(g.w, OW, g.sw, g.pw, fw, ow_lo, ow_hi);
                const T* row = col + ((ci * g.fh + fh) * g.fw + fw) * L;
                for (index_t oh = oh_lo; oh < oh_hi; ++oh) {
                    T* dst = plane + (oh * g.sh - g.ph + fh) * g.w + (fw - g.pw);
                    const T* src = row + oh * OW;
                    if (g.sw == 1) {
                        TINYCONV_OMP_SIMD()
                        for (index_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow] += src[ow];
                    } else {
                        const index_t s = g.sw;
                        for (index_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow * s] += src[ow];
                    }
                }
            }
        }
    }
}

template <typename T>
void im2col(T* col, const T* img, index_t n, index_t c, const Window2d& g) {
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    const index_t img_size = c * g.h * g.w;
    // One task per image: each writes its own disjoint block of rows.
#pragma omp parallel for schedule(static) num_threads(threads_for(n* L* K, 1 << 14))
    for (index_t i = 0; i < n; ++i) im2col_rows(col + i * L * K, img + i * img_size, c, g);
}

template <typename T>
void col2im(T* img, const T* col, index_t n, index_t c, const Window2d& g) {
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    const index_t plane_size = g.h * g.w;
    // One task per (image, channel) plane: planes are disjoint, and inside a plane the order of
    // accumulation is fixed, so any thread count gives the same bits.
#pragma omp parallel for schedule(static) num_threads(threads_for(n* L* K, 1 << 14))
    for (index_t p = 0; p < n * c; ++p) {
        T* plane = img + p * plane_size;
        std::fill(plane, plane + plane_size, T(0));
        col2im_rows_plane(plane, col + (p / c) * L * K, c, p % c, g);
    }
}

template <typename T>
void im2col_reference(T* col, const T* img, index_t n, index_t c, const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow(), K = c * g.fh * g.fw;
    for (index_t i = 0; i < n; ++i)
        for (index_t oh = 0; oh < OH; ++oh)
            for (index_t ow = 0; ow < OW; ++ow)
                for (index_t ci = 0; ci < c; ++ci)
                    for (index_t fh = 0; fh < g.fh; ++fh)
                        for (index_t fw = 0; fw < g.fw; ++fw) {
                            const index_t ih = oh * g.sh - g.ph + fh, iw = ow * g.sw - g.pw + fw;
                            const bool inside = ih >= 0 && ih < g.h && iw >= 0 && iw < g.w;
                            col[((i * OH + oh) * OW + ow) * K + (ci * g.fh + fh) * g.fw + fw] =
                                inside ? img[((i * c + ci) * g.h + ih) * g.w + iw] : T(0);
                        }
}

template <typename T>
void col2im_reference(T* img, const T* col, index_t n, index_t c, const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow(), K = c * g.fh * g.fw;
    std::fill(img, img + n * c * g.h * g.w, T(0));
    for (index_t i = 0; i < n; ++i)
        for (index_t ci = 0; ci < c; ++ci)
            for (index_t fh = 0; fh < g.fh; ++fh)
                for (index_t fw = 0; fw < g.fw; ++fw)
                    for (index_t oh = 0; oh < OH; ++oh)
                        for (index_t ow = 0; ow < OW; ++ow) {
                            const index_t ih = oh * g.sh - g.ph + fh, iw = ow * g.sw - g.pw + fw;
                            if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
                            img[((i * c + ci) * g.h + ih) * g.w + iw] +=
                                col[((i * OH + oh) * OW + ow) * K + (ci * g.fh + fh) * g.fw + fw];
                        }
}

#define TINYCONV_INSTANTIATE(T)                                                              \
    template void im2col_rows<T>(T*, const T*, index_t, const Window2d&);                    \
    template void col2im_rows<T>(T*, const T*, index_t, const Window2d&);                    \
    template void im2col_chans<T>(T*, const T*, index_t, const Window2d&);                   \
    template void im2col_chans<T>(T*, const T*, index_t, const Window2d&, index_t, index_t); \
    template void col2im_chans<T>(T*, const T*, index_t, const Window2d&);                   \
    template void im2col<T>(T*, const T*, index_t, index_t, const Window2d&);                \
    template void col2im<T>(T*, const T*, index_t, index_t, const Window2d&);                \
    template void im2col_reference<T>(T*, const T*, index_t, index_t, const Window2d&);      \
    template void col2im_reference<T>(T*, const T*, index_t, index_t, const Window2d&);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
