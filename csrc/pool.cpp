#include "pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "lanes.h"

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
    const index_t H = g.h, W = g.w, FH = g.fh, FW = g.fw, SH = g.sh, SW = g.sw, PH = g.ph,
                  PW = g.pw;
#pragma omp parallel for schedule(static) \
    num_threads(threads_for(planes* OH* OW* FH* FW, kPlaneGrain))
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

// Like for_each_window, but the whole (unclipped) windows of each output row go to run(p, oh,
// ow_begin, ow_end, h0) in one call, so an unrolled, vectorised loop can take them; windows that
// padding clips go to window(p, o, h_lo, h_hi, w_lo, w_hi) one by one.
template <typename Run, typename Window>
void for_each_window_run(index_t planes, const Window2d& g, Run&& run, Window&& window) {
    const index_t OH = g.oh(), OW = g.ow();
    const index_t H = g.h, W = g.w, FH = g.fh, FW = g.fw, SH = g.sh, SW = g.sw, PH = g.ph,
                  PW = g.pw;
    // Columns whose window lies inside [0, W): ow*SW - PW >= 0 and ow*SW - PW + FW <= W.
    const index_t whole_lo = std::min(OW, (PW + SW - 1) / SW);
    const index_t whole_hi =
        W + PW - FW < 0 ? whole_lo : std::max(whole_lo, std::min(OW, (W + PW - FW) / SW + 1));
#pragma omp parallel for schedule(static) \
    num_threads(threads_for(planes* OH* OW* FH* FW, kPlaneGrain))
    for (index_t p = 0; p < planes; ++p) {
        for (index_t oh = 0; oh < OH; ++oh) {
            const index_t h0 = oh * SH - PH;
            const index_t h_lo = std::max<index_t>(h0, 0), h_hi = std::min(h0 + FH, H);
            const bool rows_whole = h_lo == h0 && h_hi == h0 + FH;
            const index_t run_lo = rows_whole ? whole_lo : OW, run_hi = rows_whole ? whole_hi : OW;
            for (index_t ow = 0; ow < OW; ++ow) {
                if (ow == run_lo && run_lo < run_hi) {
                    run(p, oh, run_lo, run_hi, h0);
                    ow = run_hi - 1;
                    continue;
                }
                const index_t w0 = ow * SW - PW;
                window(p, oh * OW + ow, h_lo, h_hi, std::max<index_t>(w0, 0), std::min(w0 + FW, W));
            }
        }
    }
}

// Integer of the same width as T: the winner's offset travels in vector lanes beside the values.
template <typename T>
using LaneIndex = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;

// Whole FH x FW windows at columns [ow_lo, ow_hi) of one output row (top input row h0), stride
// SW: y[ow] and, if argmax is not null, argmax[ow]. The same winner as window_argmax: once the
// running best is a NaN nothing replaces it, else a NaN or a strictly larger value does.
template <int FH, int FW, int SW, typename T>
void whole_windows_max(T* y, std::int64_t* argmax, const T* plane, index_t W, index_t h0,
                       index_t PW, index_t ow_lo, index_t ow_hi) {
    const T* top = plane + h0 * W;
    if (argmax) {
        const LaneIndex<T> row_step = static_cast<LaneIndex<T>>(W);  // the caller checked H*W fits
        TINYCONV_OMP_SIMD()
        for (index_t ow = ow_lo; ow < ow_hi; ++ow) {
            const index_t w0 = ow * SW - PW;
            T best = top[w0];
            LaneIndex<T> offset = 0;
#pragma GCC unroll 9
            for (int tap = 1; tap < FH * FW; ++tap) {  // one flat loop: unrolled before vectorising
                const T v = top[(tap / FW) * W + tap % FW + w0];
                const LaneIndex<T> at = (tap / FW) * row_step + tap % FW;
                // "v > best or v is NaN, unless best is NaN" in the form GCC vectorises.
                const bool take = !(v <= best) && best == best;
                best = take ? v : best;
                offset = take ? at : offset;
            }
            y[ow] = best;
            argmax[ow] = h0 * W + w0 + offset;
        }
    } else {
        TINYCONV_OMP_SIMD()
        for (index_t ow = ow_lo; ow < ow_hi; ++ow) {
            const index_t w0 = ow * SW - PW;
            T best = top[w0];
#pragma GCC unroll 9
            for (int tap = 1; tap < FH * FW; ++tap) {
                const T v = top[(tap / FW) * W + tap % FW + w0];
                best = !(v <= best) && best == best ? v : best;
            }
            y[ow] = best;
        }
    }
}

// Calls f(FH, FW, SW), window size and horizontal stride as compile-time constants, for the
// pooling shapes CNNs use (2x2 stride 2, 3x3 stride 2 or 1): the loads then have a constant
// stride, which the vectoriser turns into shuffles instead of element-by-element gathers. Other
// shapes get (0, 0, 0): the generic loops only.
template <typename F>
void with_window_shape(const Window2d& g, F&& f) {
    using one = std::integral_constant<int, 1>;
    using two = std::integral_constant<int, 2>;
    using three = std::integral_constant<int, 3>;
    using any = std::integral_constant<int, 0>;
    if (g.fh == 2 && g.fw == 2 && g.sw == 2)
        f(two{}, two{}, two{});
    else if (g.fh == 3 && g.fw == 3 && g.sw == 2)
        f(three{}, three{}, two{});
    else if (g.fh == 3 && g.fw == 3 && g.sw == 1)
        f(three{}, three{}, one{});
    else
        f(any{}, any{}, any{});
}

// y (and argmax, if not null) of every window: the unrolled runs for the sizes that have one.
// (At the GEMM's vector level through leaf_isa.h the pooling measured slower: GCC's AVX-512 and
// AVX2 code for the stride-2 loads of 2x2/2 windows took 4.8x and 1.7x the baseline's time.)
template <int FH, int FW, int SW, typename T>
void max_pool_windows(T* y, std::int64_t* argmax, const T* x, index_t planes, const Window2d& g) {
    const index_t plane_size = g.h * g.w, out_size = g.oh() * g.ow(), W = g.w, OW = g.ow();
    auto window = [&](index_t p, index_t o, index_t h_lo, index_t h_hi, index_t w_lo,
                      index_t w_hi) {
        const T* plane = x + p * plane_size;
        if (argmax)
            window_argmax(plane, W, h_lo, h_hi, w_lo, w_hi, y[p * out_size + o],
                          argmax[p * out_size + o]);
        else
            y[p * out_size + o] = window_max(plane, W, h_lo, h_hi, w_lo, w_hi);
    };
    if constexpr (FH == 0) {
        for_each_window(planes, g, window);
    } else {
        const index_t PW = g.pw;
        auto run = [&](index_t p, index_t oh, index_t ow_lo, index_t ow_hi, index_t h0) {
            const index_t row = p * out_size + oh * OW;
            whole_windows_max<FH, FW, SW>(y + row, argmax ? argmax + row : nullptr,
                                          x + p * plane_size, W, h0, PW, ow_lo, ow_hi);
        };
        for_each_window_run(planes, g, run, window);
    }
}

// One plane on the calling thread, values only: the windows of for_each_window_run and the code
// of max_pool_windows for one plane, without the parallel loop (a nested parallel region per
// plane made the fused convolution + pooling 1.9x slower). The loops are written out again on
// purpose: routing max_pool_windows itself through a shared per-plane function made its argmax
// variant 1.1-1.2x slower (GCC's code for the parallel loop changed).
template <int FH, int FW, int SW, typename T>
void max_pool_one_plane(T* y, const T* x, const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow(), H = g.h, W = g.w, SH = g.sh, PH = g.ph, PW = g.pw;
    const index_t fh = g.fh, fw = g.fw, sw = g.sw;
    const index_t whole_lo = std::min(OW, (PW + sw - 1) / sw);
    const index_t whole_hi =
        W + PW - fw < 0 ? whole_lo : std::max(whole_lo, std::min(OW, (W + PW - fw) / sw + 1));
    for (index_t oh = 0; oh < OH; ++oh) {
        const index_t h0 = oh * SH - PH;
        const index_t h_lo = std::max<index_t>(h0, 0), h_hi = std::min(h0 + fh, H);
        const bool runs = FH != 0 && h_lo == h0 && h_hi == h0 + fh && whole_lo < whole_hi;
        for (index_t ow = 0; ow < OW; ++ow) {
            if constexpr (FH != 0) {
                if (runs && ow == whole_lo) {
                    whole_windows_max<FH, FW, SW>(y + oh * OW, nullptr, x, W, h0, PW, whole_lo,
                                                  whole_hi);
                    ow = whole_hi - 1;
                    continue;
                }
            }
            const index_t w0 = ow * sw - PW;
            y[oh * OW + ow] =
                window_max(x, W, h_lo, h_hi, std::max<index_t>(w0, 0), std::min(w0 + fw, W));
        }
    }
}

}  // namespace

template <typename T>
void max_pool2d_forward_plane(T* y, const T* x, const Window2d& g) {
    with_window_shape(g, [&](auto fh, auto fw, auto sw) {
        max_pool_one_plane<decltype(fh)::value, decltype(fw)::value, decltype(sw)::value>(y, x, g);
    });
}

template <typename T>
void max_pool2d_forward(T* y, std::int64_t* argmax, const T* x, index_t n, index_t c,
                        const Window2d& g) {
    with_window_shape(g, [&](auto fh, auto fw, auto sw) {
        max_pool_windows<decltype(fh)::value, decltype(fw)::value, decltype(sw)::value>(
            y, argmax, x, n * c, g);
    });
}

namespace {

// dx of every plane, from the winners found again in x: the unrolled runs for the sizes that
// have one. (A function template, as for the forward pass, not a generic lambda: GCC 8 stops with
// an internal error on this body inside one.)
template <int FH, int FW, int SW, typename T>
void max_pool_backward_windows(T* dx, const T* dout, const T* x, index_t planes, const Window2d& g,
                               bool through_relu) {
    const index_t plane_size = g.h * g.w, out_size = g.oh() * g.ow(), W = g.w, OW = g.ow();
    // Each plane is visited by one thread, its windows in order: the scatter is race-free and
    // adds up overlapping windows in a fixed order.
    auto window = [&](index_t p, index_t o, index_t h_lo, index_t h_hi, index_t w_lo,
                      index_t w_hi) {
        T best;
        std::int64_t at;
        window_argmax(x + p * plane_size, W, h_lo, h_hi, w_lo, w_hi, best, at);
        if (!(through_relu && best <= T(0))) dx[p * plane_size + at] += dout[p * out_size + o];
    };
    if constexpr (FH == 0) {
        for_each_window(planes, g, window);
    } else {
        const index_t PW = g.pw;
        auto run = [&](index_t p, index_t oh, index_t ow_lo, index_t ow_hi, index_t h0) {
            constexpr index_t kChunk = 64;  // winners found a chunk at a time, then scattered
            T best[kChunk];
            std::int64_t at[kChunk];
            T* dxp = dx + p * plane_size;
            const T* dp = dout + p * out_size + oh * OW;
            for (index_t lo = ow_lo; lo < ow_hi; lo += kChunk) {
                const index_t hi = std::min(ow_hi, lo + kChunk);
                whole_windows_max<FH, FW, SW>(best - lo, at - lo, x + p * plane_size, W, h0, PW, lo,
                                              hi);
                for (index_t ow = lo; ow < hi; ++ow)
                    if (!(through_relu && best[ow - lo] <= T(0))) dxp[at[ow - lo]] += dp[ow];
            }
        };
        for_each_window_run(planes, g, run, window);
    }
}

}  // namespace

template <typename T>
void max_pool2d_backward_from_input(T* dx, const T* dout, const T* x, index_t n, index_t c,
                                    const Window2d& g, bool through_relu) {
    std::fill(dx, dx + n * c * g.h * g.w, T(0));
    with_window_shape(g, [&](auto fh, auto fw, auto sw) {
        max_pool_backward_windows<decltype(fh)::value, decltype(fw)::value, decltype(sw)::value>(
            dx, dout, x, n * c, g, through_relu);
    });
}

template <typename T>
bool max_pool2d_backward(T* dx, const T* dout, const std::int64_t* argmax, index_t planes,
                         index_t plane_size, index_t out_plane_size, const T* relu_output) {
    const index_t L = out_plane_size;
    bool in_range = true;
#pragma omp parallel for schedule(static) \
    num_threads(threads_for(planes*(L + plane_size), kPlaneGrain)) reduction(&& : in_range)
    for (index_t p = 0; p < planes; ++p) {
        T* dxp = dx + p * plane_size;
        std::fill(dxp, dxp + plane_size, T(0));
        const T* dp = dout + p * L;
        const std::int64_t* ap = argmax + p * L;
        const T* gate = relu_output ? relu_output + p * plane_size : nullptr;
        for (index_t l = 0; l < L; ++l) {
            const std::int64_t at = ap[l];
            if (at < 0 || at >= plane_size) {  // never written: the caller reports it
                in_range = false;
                continue;
            }
            if (gate && gate[at] <= T(0)) continue;  // the ReLU before blocks it
            dxp[at] += dp[l];
        }
    }
    return in_range;
}

template <typename T>
void avg_pool2d_forward(T* y, const T* x, index_t n, index_t c, const Window2d& g) {
    const index_t plane_size = g.h * g.w, out_size = g.oh() * g.ow(), W = g.w;
    const T area = T(g.fh * g.fw);
    for_each_window(
        n * c, g,
        [&](index_t p, index_t o, index_t h_lo, index_t h_hi, index_t w_lo, index_t w_hi) {
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
    for_each_window(
        n * c, g,
        [&](index_t p, index_t o, index_t h_lo, index_t h_hi, index_t w_lo, index_t w_hi) {
            T* plane = dx + p * plane_size;
            const T share = dout[p * out_size + o] / area;
            for (index_t ih = h_lo; ih < h_hi; ++ih)
                for (index_t iw = w_lo; iw < w_hi; ++iw) plane[ih * W + iw] += share;
        });
}

template <typename T>
void global_avg_pool2d_forward(T* y, const T* x, index_t planes, index_t plane_size) {
    const double area = static_cast<double>(plane_size);
#pragma omp parallel for schedule(static) num_threads(threads_for(planes* plane_size, kPlaneGrain))
    for (index_t p = 0; p < planes; ++p) {
        const T* in = x + p * plane_size;
        double acc[kLanes] = {};
        add_run(acc, plane_size, [in](index_t i) { return static_cast<double>(in[i]); });
        y[p] = static_cast<T>(lanes_total(acc) / area);
    }
}

template <typename T>
void global_avg_pool2d_backward(T* dx, const T* dout, index_t planes, index_t plane_size) {
    const double area = static_cast<double>(plane_size);
#pragma omp parallel for schedule(static) num_threads(threads_for(planes* plane_size, kPlaneGrain))
    for (index_t p = 0; p < planes; ++p) {
        const T share = static_cast<T>(static_cast<double>(dout[p]) / area);
        std::fill(dx + p * plane_size, dx + (p + 1) * plane_size, share);
    }
}

namespace {
// The taps t of output position o whose input coordinate o*s - p + t lies in [0, size), as the
// half-open range [lo, hi): the reference loops visit only these, because a window may be far
// larger than its input (2**20 taps a side over a 4x4 image, nearly all of them padding).
void real_taps(index_t o, index_t s, index_t p, index_t k, index_t size, index_t& lo, index_t& hi) {
    lo = std::max<index_t>(0, p - o * s);
    hi = std::min<index_t>(k, size + p - o * s);
}
}  // namespace

template <typename T>
void max_pool2d_forward_reference(T* y, std::int64_t* argmax, const T* x, index_t n, index_t c,
                                  const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow();
    for (index_t p = 0; p < n * c; ++p)
        for (index_t oh = 0; oh < OH; ++oh)
            for (index_t ow = 0; ow < OW; ++ow) {
                bool found = false;
                T best = 0;
                index_t best_at = 0, fh_lo, fh_hi, fw_lo, fw_hi;
                real_taps(oh, g.sh, g.ph, g.fh, g.h, fh_lo, fh_hi);
                real_taps(ow, g.sw, g.pw, g.fw, g.w, fw_lo, fw_hi);
                for (index_t fh = fh_lo; fh < fh_hi; ++fh)
                    for (index_t fw = fw_lo; fw < fw_hi; ++fw) {
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
                index_t fh_lo, fh_hi, fw_lo, fw_hi;
                real_taps(oh, g.sh, g.ph, g.fh, g.h, fh_lo, fh_hi);
                real_taps(ow, g.sw, g.pw, g.fw, g.w, fw_lo, fw_hi);
                for (index_t fh = fh_lo; fh < fh_hi; ++fh)
                    for (index_t fw = fw_lo; fw < fw_hi; ++fw) {
                        const index_t ih = oh * g.sh - g.ph + fh, iw = ow * g.sw - g.pw + fw;
                        if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w)
                            sum += x[(p * g.h + ih) * g.w + iw];
                    }
                y[(p * OH + oh) * OW + ow] = sum / T(g.fh * g.fw);
            }
}

template <typename T>
void global_avg_pool2d_forward_reference(T* y, const T* x, index_t planes, index_t plane_size) {
    for (index_t p = 0; p < planes; ++p) {
        double sum = 0.0;
        for (index_t i = 0; i < plane_size; ++i) sum += x[p * plane_size + i];
        y[p] = static_cast<T>(sum / static_cast<double>(plane_size));
    }
}

#define TINYCONV_INSTANTIATE(T)                                                                  \
    template void max_pool2d_forward<T>(T*, std::int64_t*, const T*, index_t, index_t,           \
                                        const Window2d&);                                        \
    template void max_pool2d_forward_plane<T>(T*, const T*, const Window2d&);                    \
    template void max_pool2d_backward_from_input<T>(T*, const T*, const T*, index_t, index_t,    \
                                                    const Window2d&, bool);                      \
    template bool max_pool2d_backward<T>(T*, const T*, const std::int64_t*, index_t, index_t,    \
                                         index_t, const T*);                                     \
    template void avg_pool2d_forward<T>(T*, const T*, index_t, index_t, const Window2d&);        \
    template void avg_pool2d_backward<T>(T*, const T*, index_t, index_t, const Window2d&);       \
    template void max_pool2d_forward_reference<T>(T*, std::int64_t*, const T*, index_t, index_t, \
                                                  const Window2d&);                              \
    template void avg_pool2d_forward_reference<T>(T*, const T*, index_t, index_t,                \
                                                  const Window2d&);                              \
    template void global_avg_pool2d_forward<T>(T*, const T*, index_t, index_t);                  \
    template void global_avg_pool2d_backward<T>(T*, const T*, index_t, index_t);                 \
    template void global_avg_pool2d_forward_reference<T>(T*, const T*, index_t, index_t);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
