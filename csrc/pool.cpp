#include "pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

namespace tinyconv {

namespace {
// Grain for plane-parallel loops: a plane of this many outputs is worth a thread.
constexpr index_t kPlaneGrain = 1 << 12;
}  // namespace

namespace {

// Same-size unsigned integer, for branch-free selects on the bits of a float.
template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

// take ? a : b without a branch (the comparisons feeding `take` are unpredictable on real data).
template <typename T>
inline T select(bool take, T a, T b) {
    Bits<T> ia, ib;
    std::memcpy(&ia, &a, sizeof(T));
    std::memcpy(&ib, &b, sizeof(T));
    const Bits<T> mask = Bits<T>(0) - static_cast<Bits<T>>(take);
    const Bits<T> r = (ia & mask) | (ib & ~mask);
    T out;
    std::memcpy(&out, &r, sizeof(T));
    return out;
}

inline std::int64_t select(bool take, std::int64_t a, std::int64_t b) {
    const std::int64_t mask = -static_cast<std::int64_t>(take);
    return (a & mask) | (b & ~mask);
}

}  // namespace

namespace {

// The winner of one window [h_lo, h_hi) x [w_lo, w_hi) (its real inputs only: padding never
// wins): the first maximum in row-major order, or the first NaN if there is one.
// Three short dependency chains rather than one long one: the running maximum (a plain max,
// which the compiler turns into maxss/maxsd), its position (branch-free select), and the
// position of the first NaN.
template <typename T>
inline void window_argmax(const T* plane, index_t W, index_t h_lo, index_t h_hi, index_t w_lo,
                          index_t w_hi, T& best_out, std::int64_t& at_out) {
    std::int64_t best_at = h_lo * W + w_lo, nan_at = -1;
    T best = plane[best_at];
    for (index_t ih = h_lo; ih < h_hi; ++ih) {
        const T* row = plane + ih * W;
        for (index_t iw = w_lo; iw < w_hi; ++iw) {
            const T v = row[iw];
            const std::int64_t at = ih * W + iw;
            const bool larger = v > best;  // a tie keeps the earlier one
            best_at = select(larger, at, best_at);
            best = larger ? v : best;
            nan_at = select((v != v) & (nan_at < 0), at, nan_at);
        }
    }
    if (nan_at >= 0) {
        best_at = nan_at;
        best = plane[nan_at];
    }
    best_out = best;
    at_out = best_at;
}

// The window's maximum only (a NaN anywhere makes it NaN).
template <typename T>
inline T window_max(const T* plane, index_t W, index_t h_lo, index_t h_hi, index_t w_lo,
                    index_t w_hi) {
    T best = plane[h_lo * W + w_lo];
    bool nan = false;
    for (index_t ih = h_lo; ih < h_hi; ++ih) {
        const T* row = plane + ih * W;
        for (index_t iw = w_lo; iw < w_hi; ++iw) {
            const T v = row[iw];
            best = v > best ? v : best;
            nan |= v != v;
        }
    }
    return nan ? std::numeric_limits<T>::quiet_NaN() : best;
}

// Calls visit(p, oh, ow, h_lo, h_hi, w_lo, w_hi) for every output window of every plane, planes
// split across threads. The geometry is copied into locals first: int64 stores (argmax) could
// alias Window2d's fields and force the compiler to reload them after every store.
template <typename Visit>
void for_each_window(index_t planes, const Window2d& g, Visit&& visit) {
    const index_t OH = g.oh(), OW = g.ow();
    const index_t H = g.h, W = g.w, FH = g.fh, FW = g.fw, SH = g.sh, SW = g.sw, PH = g.ph, PW = g.pw;
#pragma omp parallel for schedule(static) num_threads(threads_for(planes * OH * OW * FH * FW, kPlaneGrain))
    for (index_t p = 0; p < planes; ++p) {
        for (index_t oh = 0; oh < OH; ++oh) {
            const index_t h0 = oh * SH - PH;
            const index_t h_lo = std::max<index_t>(h0, 0), h_hi = std::min(h0 + FH, H);
            for (index_t ow = 0; ow < OW; ++ow) {
                const index_t w0 = ow * SW - PW;
                const index_t w_lo = std::max<index_t>(w0, 0), w_hi = std::min(w0 + FW, W);
                visit(p, oh * OW + ow, h_lo, h_hi, w_lo, w_hi);
            }
        }
    }
}

}  // namespace

template <typename T>
void max_pool2d_forward(T* y, std::int64_t* argmax, const T* x, index_t n, index_t c,
                        const Window2d& g) {
    const index_t plane_size = g.h * g.w, out_size = g.oh() * g.ow(), W = g.w;
    if (argmax) {
        for_each_window(n * c, g, [&](index_t p, index_t o, index_t h_lo, index_t h_hi, index_t w_lo, index_t w_hi) {
            window_argmax(x + p * plane_size, W, h_lo, h_hi, w_lo, w_hi, y[p * out_size + o],
                          argmax[p * out_size + o]);
        });
    } else {
        for_each_window(n * c, g, [&](index_t p, index_t o, index_t h_lo, index_t h_hi, index_t w_lo, index_t w_hi) {
            y[p * out_size + o] = window_max(x + p * plane_size, W, h_lo, h_hi, w_lo, w_hi);
        });
    }
}

template <typename T>
void max_pool2d_backward_from_input(T* dx, const T* dout, const T* x, index_t n, index_t c,
                                    const Window2d& g) {
    const index_t plane_size = g.h * g.w, out_size = g.oh() * g.ow(), W = g.w;
    std::fill(dx, dx + n * c * plane_size, T(0));
    // Each plane is visited by one thread, its windows in order: the scatter is race-free and
    // adds up overlapping windows in a fixed order.
    for_each_window(n * c, g, [&](index_t p, index_t o, index_t h_lo, index_t h_hi, index_t w_lo, index_t w_hi) {
        T best;
        std::int64_t at;
        window_argmax(x + p * plane_size, W, h_lo, h_hi, w_lo, w_hi, best, at);
        dx[p * plane_size + at] += dout[p * out_size + o];
    });
}

template <typename T>
void max_pool2d_backward(T* dx, const T* dout, const std::int64_t* argmax, index_t planes,
                         index_t plane_size, index_t out_plane_size) {
    const index_t L = out_plane_size;
#pragma omp parallel for schedule(static) num_threads(threads_for(planes * (L + plane_size), kPlaneGrain))
    for (index_t p = 0; p < planes; ++p) {
        T* dxp = dx + p * plane_size;
        std::fill(dxp, dxp + plane_size, T(0));
        const T* dp = dout + p * L;
        const std::int64_t* ap = argmax + p * L;
        for (index_t l = 0; l < L; ++l) dxp[ap[l]] += dp[l];
    }
}

template <typename T>
void avg_pool2d_forward(T* y, const T* x, index_t n, index_t c, const Window2d& g) {
    const index_t plane_size = g.h * g.w, out_size = g.oh() * g.ow(), W = g.w;
    const T area = T(g.fh * g.fw);
    for_each_window(n * c, g, [&](index_t p, index_t o, index_t h_lo, index_t h_hi, index_t w_lo, index_t w_hi) {
        const T* plane = x + p * plane_size;
        T sum = 0;
        for (index_t ih = h_lo; ih < h_hi; ++ih)
            for (index_t iw = w_lo; iw < w_hi; ++iw) sum += plane[ih * W + iw];
        y[p * out_size + o] = sum / area;
    });
}

template <typename T>
void avg_pool2d_backward(T* dx, const T* dout, index_t n, index_t c, const Window2d& g) {
    const index_t plane_size = g.h * g.w, out_size = g.oh() * g.ow(), W = g.w;
    const T area = T(g.fh * g.fw);
    std::fill(dx, dx + n * c * plane_size, T(0));
    // One thread per plane, windows in order: overlapping shares add up in a fixed order.
    for_each_window(n * c, g, [&](index_t p, index_t o, index_t h_lo, index_t h_hi, index_t w_lo, index_t w_hi) {
        T* plane = dx + p * plane_size;
        const T share = dout[p * out_size + o] / area;
        for (index_t ih = h_lo; ih < h_hi; ++ih)
            for (index_t iw = w_lo; iw < w_hi; ++iw) plane[ih * W + iw] += share;
    });
}

template <typename T>
void max_pool2d_forward_reference(T* y, std::int64_t* argmax, const T* x, index_t n, index_t c,
                                  const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow();
    for (index_t p = 0; p < n * c; ++p)
        for (index_t oh = 0; oh < OH; ++oh)
            for (index_t ow = 0; ow < OW; ++ow) {
                bool found = false;
                T best = 0;
                index_t best_at = 0;
                for (index_t fh = 0; fh < g.fh; ++fh)
                    for (index_t fw = 0; fw < g.fw; ++fw) {
                        const index_t ih = oh * g.sh - g.ph + fh, iw = ow * g.sw - g.pw + fw;
                        if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
                        const T v = x[(p * g.h + ih) * g.w + iw];
                        if (!found || (!std::isnan(best) && (v > best || std::isnan(v)))) {
                            best = v;
                            best_at = ih * g.w + iw;
                            found = true;
                        }
                    }
                y[(p * OH + oh) * OW + ow] = best;
                argmax[(p * OH + oh) * OW + ow] = best_at;
            }
}

template <typename T>
void avg_pool2d_forward_reference(T* y, const T* x, index_t n, index_t c, const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow();
    for (index_t p = 0; p < n * c; ++p)
        for (index_t oh = 0; oh < OH; ++oh)
            for (index_t ow = 0; ow < OW; ++ow) {
                T sum = 0;
                for (index_t fh = 0; fh < g.fh; ++fh)
                    for (index_t fw = 0; fw < g.fw; ++fw) {
                        const index_t ih = oh * g.sh - g.ph + fh, iw = ow * g.sw - g.pw + fw;
                        if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) sum += x[(p * g.h + ih) * g.w + iw];
                    }
                y[(p * OH + oh) * OW + ow] = sum / T(g.fh * g.fw);
            }
}

#define TINYCONV_INSTANTIATE(T)                                                                   \
    template void max_pool2d_forward<T>(T*, std::int64_t*, const T*, index_t, index_t,            \
                                        const Window2d&);                                         \
    template void max_pool2d_backward_from_input<T>(T*, const T*, const T*, index_t, index_t,     \
                                                    const Window2d&);                             \
    template void max_pool2d_backward<T>(T*, const T*, const std::int64_t*, index_t, index_t,     \
                                         index_t);                                                \
    template void avg_pool2d_forward<T>(T*, const T*, index_t, index_t, const Window2d&);         \
    template void avg_pool2d_backward<T>(T*, const T*, index_t, index_t, const Window2d&);        \
    template void max_pool2d_forward_reference<T>(T*, std::int64_t*, const T*, index_t, index_t,  \
                                                  const Window2d&);                               \
    template void avg_pool2d_forward_reference<T>(T*, const T*, index_t, index_t, const Window2d&);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
