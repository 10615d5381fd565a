#include "conv.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemm.h"
#include "pool.h"

namespace tinyconv {

namespace {

bool is_pointwise(const Window2d& g) {
    return g.fh == 1 && g.fw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
}

// Images per block of the backward pass: dW and db are summed in blocks of this many images
// (fixed by the shapes, so the blocks never depend on the thread count). Small images on the flat
// path go up to 16 to a block, all on one canvas (images_per_canvas): gemm_dot's dot products
// then run over all their positions, and its fixed cost per element (adding up the vector lanes)
// shrinks to a small share.
constexpr index_t kBlock = 4, kSmallImageBlock = 16;
static_assert(kBlock <= kDotMaxSegments, "a block's canvases are gemm_dot's segments");

// Every convolution but the pointwise one (1x1, stride 1, no pad) runs on the flat path. G images
// lie side by side on a zero canvas: in padded coordinates, image i's pixel (ih, iw) sits at row
// PH + ih, column i*Sp + PW + iw, where Sp = W + PW rounded up to a multiple of the column stride
// SW, so PW (or more) zero columns lie before, between and after the images (one image's right
// padding is the next one's left padding). The canvas stores these padded rows and columns split
// by phase: padded row R = r*SH + a and column X = q*SW + b go to row r, column q of plane
// (ci, a, b), each plane Hq x Wc = ceil(Hp / SH) x ceil((PW + G*Sp) / SW). Phases no tap reads
// (a >= FH or b >= FW, when the stride is larger than the kernel) are not stored.
// Read as one flat array, every row of the canvas's im2col matrix is then a contiguous slice,
// whatever the stride: tap (ci, fh, fw) = (ci, qh*SH + a, qw*SW + b) at "wide" position
// l' = oh*Wc + col reads plane (ci, a, b) at row qh, column qw, plus l'; image i's output
// (oh, ow) is wide position oh*Wc + i*Sp/SW + ow. (With stride 1 there is one plane per channel,
// the padded images themselves.) So the GEMMs run over Lw = (OH-1)*Wc + (G-1)*Sp/SW + OW wide
// positions, packing B straight from the canvas (gemm_offsets): no column matrix is written, for
// strided convolutions either. Wide positions that are no image's output are computed and
// dropped (forward), or given a zero dout (backward). The last slice ends within the canvas:
// nothing is read past it. (In dW those zero douts meet real inputs, where an infinite input
// makes a NaN the definition does not have: see "Non-finite values" below for how such entries
// are put right.)
// Images with fewer than kFlatMinPositions wide positions go several to a canvas, up to
// kSmallImageBlock, as many as keep the canvas within kCanvasBudget elements (about L2's size);
// larger ones go one to a canvas (the canvas is the padded image). Longer rows of positions make
// the GEMMs and gemm_dot's dot products run at speed: fewer per-canvas costs (packing W, the last,
// partly empty 32-wide column tile, adding up vector lanes). Measured on Zen 4, 2 threads,
// ResNet-20 shapes: 16 to a canvas instead of one took 16 -> 16 channels at 28x28 from 3.16 to 2.78
// ms forward and 6.15 to 5.60 ms backward, 32 -> 32 at 14x14 from 3.66 to 3.02 and 7.77 to 6.12 ms;
// 7x7 images 16 to a canvas instead of 4 made 64 -> 64 forward 12 % faster.
constexpr index_t kFlatMinPositions = 1024;
constexpr index_t kCanvasBudget = index_t(1) << 18;

bool is_flat(const Window2d& g) { return !is_pointwise(g); }

struct Canvas {
    index_t G, H, W, PH, PW, SH, SW;
    index_t Ph, Pw;    // phases stored per channel (rows, columns)
    index_t Hq, Wc;    // one plane's rows and columns
    index_t Sp, step;  // padded columns per image, and the same in plane columns
    index_t OH, OW, Lw;
    Canvas(const Window2d& g, index_t images)
        : G(images), H(g.h), W(g.w), PH(g.ph), PW(g.pw), SH(g.sh), SW(g.sw),
          Ph(std::min(g.sh, g.fh)), Pw(std::min(g.sw, g.fw)),
          Hq((g.h + 2 * g.ph + g.sh - 1) / g.sh), Sp((g.w + g.pw + g.sw - 1) / g.sw * g.sw),
          step(Sp / g.sw), OH(g.oh()), OW(g.ow()) {
        Wc = (PW + G * Sp + SW - 1) / SW;
        Lw = (OH - 1) * Wc + (G - 1) * step + OW;
    }
    index_t planes(index_t c) const { return c * Ph * Pw; }
    index_t size(index_t c) const { return planes(c) * Hq * Wc; }
    // Where tap (ci, fh, fw)'s slice starts.
    index_t tap(index_t ci, index_t fh, index_t fw) const {
        return ((((ci * Ph + fh % SH) * Pw + fw % SW) * Hq) + fh / SH) * Wc + fw / SW;
    }
    index_t output(index_t i, index_t oh) const { return oh * Wc + i * step; }
    bool is_input() const {  // the canvas is x itself
        return G == 1 && PH == 0 && PW == 0 && SH == 1 && SW == 1;
    }
    bool is_output() const { return G == 1 && Wc == OW; }  // the wide output is y itself
    // Calls move(at, from, count) for every run of image i's pixels (channels c): the canvas
    // positions at + q, q < count, hold the image's (C, H, W) positions from + q*SW.
    template <typename Move>
    void for_each_run(index_t c, index_t i, Move&& move) const;
};

// Images per canvas on the flat path, for a batch of n images of c channels; see
// kFlatMinPositions. Canvases are also the backward pass's blocks, which threads take in waves:
// the count is rounded up to a multiple of 4 (fewer images each), so that 1, 2 and 4 threads
// find whole waves (100 images 16 to a canvas made 7 canvases, and the last wave kept one of two
// threads idle). The count depends on the shapes and n only, never on the thread count.
index_t images_per_canvas(const Window2d& g, index_t c, index_t n) {
    if (Canvas(g, 1).Lw >= kFlatMinPositions) return 1;
    index_t most = kSmallImageBlock;
    while (most > 1 && Canvas(g, most).size(c) > kCanvasBudget) most /= 2;
    const index_t canvases = std::min(n, ((n + most - 1) / most + 3) / 4 * 4);
    return canvases < 1 ? 1 : (n + canvases - 1) / canvases;
}

// Images per block of the backward pass: one canvas of several images, else kBlock.
index_t images_per_block(const Window2d& g, index_t c, index_t n) {
    const index_t per = is_flat(g) ? images_per_canvas(g, c, n) : 1;
    return per > 1 ? per : kBlock;
}

// Scratch for one image's worth of work, owned by one thread.
template <typename T>
struct ImageScratch {
    std::vector<T> dcol;        // (C*FH*FW, OH*OW or Lw), backward with dx only
    std::vector<T> padded;      // flat path: the canvas (C, Hp, Wc) (backward: one per canvas of a
                                // block, each reused for that canvas's dx)
    std::vector<T> wide;        // flat path: y over the wide positions (FN, Lw); backward: dout
                                // (FN, Lw rounded up to kDotMultiple), one per canvas of a block
    std::vector<index_t> taps;  // flat path: offset of each tap's slice in the canvas
    std::vector<T> gemm;        // GEMM packing buffers
    std::vector<T> conv_out;    // forward with pooling: one output plane (OH, OW), or one
                                // image's output (FN, OH*OW) (see conv_forward)
    std::vector<T> dw;          // (FN, C*FH*FW) this image's dW, backward only
    std::vector<T> db;          // (FN,)
};

// The sum of row[0, L) in a fixed order that vectorises: kLanes interleaved partial sums, then
// combined pairwise. (A plain running sum is one long dependency chain: it cost a fifth of the
// whole backward pass of a small convolution.)
template <typename T>
T row_sum(const T* row, index_t L) {
    constexpr int kLanes = 16;
    T part[kLanes] = {};
    index_t l = 0;
    for (; l + kLanes <= L; l += kLanes) {
        TINYCONV_OMP_SIMD()
        for (int j = 0; j < kLanes; ++j) part[j] += row[l + j];
    }
    for (int j = 0; l < L; ++l, ++j) part[j] += row[l];
    for (int width = kLanes / 2; width > 0; width /= 2)
        for (int j = 0; j < width; ++j) part[j] += part[j + width];
    return part[0];
}

// gemm_threads == 1: runs on the calling thread with the scratch's GEMM buffer (the caller is
// parallel over images); > 1: the GEMMs themselves go parallel (few images, many threads).
template <typename T>
void gemm_step(ImageScratch<T>& s, int gemm_threads, T* c, index_t ldc, const T* a, index_t lda,
               bool ta, const T* b, index_t ldb, bool tb, index_t m, index_t nn, index_t k,
               T beta) {
    if (gemm_threads > 1)
        gemm<T>(c, ldc, a, lda, ta, b, ldb, tb, m, nn, k, T(1), beta, gemm_threads);
    else
        gemm_serial<T>(c, ldc, a, lda, ta, b, ldb, tb, m, nn, k, T(1), beta, s.gemm.data());
}

// dst[0, n) = src[0, n) for the short rows the flat path moves (an image or output row): inline,
// because a memmove call per row cost more than the copying (1.4 ms of a 7 ms training step).
template <typename T>
inline void copy_row(T* __restrict dst, const T* __restrict src, index_t n) {
    TINYCONV_OMP_SIMD()
    for (index_t i = 0; i < n; ++i) dst[i] = src[i];
}

// Whether a[0, n) holds only finite values (v - v is 0 for a finite v, NaN for an inf or a NaN).
template <typename T>
bool all_finite(const T* a, index_t n) {
    T acc = 0;
    TINYCONV_OMP_SIMD(reduction(+ : acc))
    for (index_t i = 0; i < n; ++i) acc += a[i] - a[i];
    return acc == T(0);
}

// p[0, n) = 0 for the large buffers the flat path clears (canvases, wide douts): memset, whose
// wide stores cleared a canvas several times faster than std::fill's loop (which the compiler
// keeps to the baseline ISA). IEEE 754's +0.0 is all bits zero.
template <typename T>
inline void zero_fill(T* p, index_t n) {
    static_assert(std::numeric_limits<T>::is_iec559, "+0.0 must be all bits zero");
    std::memset(p, 0, static_cast<size_t>(n) * sizeof(T));
}

// dst[0, n) = src[0, n) + bias, then, if relu, ReLU's rule (entries <= 0 become 0, NaN stays
// NaN); dst may be src itself.
template <typename T>
inline void bias_relu_row(T* dst, const T* src, index_t n, T bias, bool relu) {
    if (relu) {
        TINYCONV_OMP_SIMD()
        for (index_t i = 0; i < n; ++i) {
            const T v = src[i] + bias;
            dst[i] = v <= T(0) ? T(0) : v;
        }
    } else {
        TINYCONV_OMP_SIMD()
        for (index_t i = 0; i < n; ++i) dst[i] = src[i] + bias;
    }
}

// The flat path's helpers (see Canvas).
template <typename Move>
void Canvas::for_each_run(index_t c, index_t i, Move&& move) const {
    const index_t X0 = i * Sp + PW;  // padded column of the image's column 0
    for (index_t b = 0; b < Pw; ++b) {
        const index_t first = SW == 1 ? 0 : ((b - X0) % SW + SW) % SW;  // (X0 + first) % SW == b
        if (first >= W) continue;
        const index_t count = (W - first + SW - 1) / SW;
        const index_t column = b * Hq * Wc + (X0 + first) / SW;
        for (index_t ci = 0; ci < c; ++ci)
            for (index_t ih = 0, a = PH % SH, r = PH / SH; ih < H; ++ih) {
                if (a < Ph)
                    move(((ci * Ph + a) * Pw * Hq + r) * Wc + column, (ci * H + ih) * W + first,
                         count);
                if (++a == SH) a = 0, ++r;
            }
    }
}

void canvas_taps(std::vector<index_t>& taps, index_t c, const Window2d& g, const Canvas& cv) {
    taps.resize(static_cast<size_t>(c * g.fh * g.fw));
    for (index_t ci = 0, k = 0; ci < c; ++ci)
        for (index_t fh = 0; fh < g.fh; ++fh)
            for (index_t fw = 0; fw < g.fw; ++fw, ++k) taps[k] = cv.tap(ci, fh, fw);
}

// Moves count values between a canvas run (contiguous) and an image row (every stride-th value):
// dst[q] = src[q * stride] (to the canvas), or dst[q * stride] = src[q] (to_image). The common
// strides get a constant stride, which the compiler vectorises (with a run-time one it kept the
// stride in memory and moved one value at a time: a fifth of a stride-2 convolution's time).
template <int kStride, bool to_image, typename T>
inline void copy_with_stride(T* __restrict dst, const T* __restrict src, index_t count) {
    for (index_t q = 0; q < count; ++q) {
        if (to_image)
            dst[q * kStride] = src[q];
        else
            dst[q] = src[q * kStride];
    }
}

template <typename T, bool to_image>
inline void copy_strided(T* dst, const T* src, index_t count, index_t stride) {
    switch (stride) {
        case 1:
            return copy_row(dst, src, count);
        case 2:
            return copy_with_stride<2, to_image>(dst, src, count);
        case 3:
            return copy_with_stride<3, to_image>(dst, src, count);
        case 4:
            return copy_with_stride<4, to_image>(dst, src, count);
        default:
            for (index_t q = 0; q < count; ++q) {
                if (to_image)
                    dst[q * stride] = src[q];
                else
                    dst[q] = src[q * stride];
            }
    }
}

// canvas[0, size + slack) = the G images x[0..G) (each (C, H, W)) on zeros.
template <typename T>
void fill_canvas(T* canvas, index_t slack, const T* x, index_t c, const Canvas& cv) {
    zero_fill(canvas, cv.size(c) + slack);
    const index_t sw = cv.SW;
    for (index_t i = 0; i < cv.G; ++i) {
        const T* image = x + i * c * cv.H * cv.W;
        cv.for_each_run(c, i, [&](index_t at, index_t from, index_t count) {
            copy_strided<T, false>(canvas + at, image + from, count, sw);
        });
    }
}

// dx[0..G) (each (C, H, W)) = the G images' pixels on the canvas (the inverse of fill_canvas);
// pixels in phases the canvas does not store get 0 (no tap reads them).
template <typename T>
void cut_out_images(T* dx, const T* canvas, index_t c, const Canvas& cv) {
    const index_t sw = cv.SW;
    for (index_t i = 0; i < cv.G; ++i) {
        T* image = dx + i * c * cv.H * cv.W;
        if (cv.Ph < cv.SH || cv.Pw < cv.SW) zero_fill(image, c * cv.H * cv.W);
        cv.for_each_run(c, i, [&](index_t at, index_t from, index_t count) {
            copy_strided<T, true>(image + from, canvas + at, count, sw);
        });
    }
}

// Non-finite values. The fast paths multiply by zeros that are no term of the definition:
// padding (on the canvas), the wide positions that are no image's output
// (a zero dout in the backward pass) and the zeros that round dot products up to kDotMultiple.
// Zero times a finite value adds nothing, but zero times an infinity or a NaN is NaN. That NaN is
// the only trace such a product can leave (NaN absorbs whatever is added to it), so an output
// that did not come out NaN is already right, and one that did is summed again over its real
// terms only, in the loops' order. The cost when every value is finite: one pass over W (forward)
// or dW (backward).

// y[i, f, oh, ow] of image x (C, H, W) by the definition, taps in the padding skipped, then the
// fused ReLU.
template <typename T>
T output_by_definition(const T* x, const T* w, T bias, index_t c, index_t f, const Window2d& g,
                       index_t oh, index_t ow, bool relu) {
    const index_t ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;
    const index_t fh_lo = std::max<index_t>(0, -ih0), fh_hi = std::min(g.fh, g.h - ih0);
    const index_t fw_lo = std::max<index_t>(0, -iw0), fw_hi = std::min(g.fw, g.w - iw0);
    T sum = bias;
    for (index_t ci = 0; ci < c; ++ci)
        for (index_t fh = fh_lo; fh < fh_hi; ++fh)
            for (index_t fw = fw_lo; fw < fw_hi; ++fw)
                sum += w[((f * c + ci) * g.fh + fh) * g.fw + fw] *
                       x[(ci * g.h + ih0 + fh) * g.w + iw0 + fw];
    return relu && sum <= T(0) ? T(0) : sum;
}

// The forward pass's repair: a padding zero meets only filter taps, so a stray NaN can only be in
// an output whose window reaches into the padding, of a filter with a non-finite tap.
struct PaddingRepair {
    std::vector<char> filter;  // per filter: whether its planes are checked; empty: none are
    index_t oh_lo = 0, oh_hi = 0, ow_lo = 0, ow_hi = 0;  // outputs whose window lies inside
    PaddingRepair() = default;                           // checks nothing
    template <typename T>
    PaddingRepair(const T* w, index_t fn, index_t c, const Window2d& g) {
        const index_t K = c * g.fh * g.fw;
        if ((g.ph == 0 && g.pw == 0) || all_finite(w, fn * K)) return;
        filter.resize(static_cast<size_t>(fn));
        for (index_t f = 0; f < fn; ++f) filter[f] = !all_finite(w + f * K, K);
        valid_range(g.h - g.fh + 1, g.oh(), g.sh, g.ph, 0, oh_lo, oh_hi);
        valid_range(g.w - g.fw + 1, g.ow(), g.sw, g.pw, 0, ow_lo, ow_hi);
    }
    bool checks(index_t f) const { return !filter.empty() && filter[f]; }
};

// Filter f's output plane yp (OH, OW) of image x (C, H, W), repaired where it came out NaN.
template <typename T>
void repair_plane(T* yp, const T* x, const T* w, T bias, index_t c, index_t f, const Window2d& g,
                  bool relu, const PaddingRepair& r) {
    const index_t OH = g.oh(), OW = g.ow();
    for (index_t oh = 0; oh < OH; ++oh) {
        const bool row_inside = oh >= r.oh_lo && oh < r.oh_hi;
        for (index_t ow = 0; ow < OW; ++ow) {
            T& out = yp[oh * OW + ow];
            if ((row_inside && ow >= r.ow_lo && ow < r.ow_hi) || out == out) continue;
            out = output_by_definition(x, w, bias, c, f, g, oh, ow, relu);
        }
    }
}

template <typename T>
void redo_nan_outputs_at_padding(T* y, const T* x, const T* w, const T* b, index_t n, index_t c,
                                 index_t fn, const Window2d& g, bool relu) {
    const PaddingRepair r(w, fn, c, g);
    if (r.filter.empty()) return;
    const index_t L = g.oh() * g.ow(), x_size = c * g.h * g.w;
#pragma omp parallel for schedule(static) num_threads(threads_for(n* fn* L, index_t(1) << 12))
    for (index_t p = 0; p < n * fn; ++p) {
        const index_t i = p / fn, f = p % fn;
        if (r.checks(f)) repair_plane(y + p * L, x + i * x_size, w, b[f], c, f, g, relu, r);
    }
}

// Inference's fused pooling (conv2d_max_pool_forward): each output plane, bias (and ReLU) added
// and repaired, is max-pooled by `window` as it leaves the GEMM, from a buffer that stays in
// cache; only the pooled planes reach memory.
struct PoolAfter {
    const Window2d& window;  // over the convolution's (OH, OW) output
    const PaddingRepair& repair;
};

// Pools filter f's output plane `plane` (OH, OW) of image x (C, H, W) into y_pooled, after the
// repair the unfused path makes over the whole output (the same bits).
template <typename T>
void pool_plane(T* y_pooled, T* plane, const T* x, const T* w, const T* b, index_t c, index_t f,
                const Window2d& g, bool relu, const PoolAfter& pool) {
    if (pool.repair.checks(f)) repair_plane(plane, x, w, b[f], c, f, g, relu, pool.repair);
    max_pool2d_forward_plane(y_pooled, plane, pool.window);
}

// G images (y, x: the first of them) on one canvas: y_wide (FN, Lw) = W . B + b, then each
// image's outputs picked out of the wide rows (and pooled, with `pool`).
template <typename T>
void forward_canvas(T* y, const T* x, index_t images, const T* w, const T* b, index_t c, index_t fn,
                    const Window2d& g, ImageScratch<T>& s, int gemm_threads, bool relu,
                    const PoolAfter* pool) {
    const Canvas cv(g, images);
    const index_t K = c * g.fh * g.fw;
    canvas_taps(s.taps, c, g, cv);
    const T* canvas = x;
    if (!cv.is_input()) {
        fill_canvas(s.padded.data(), 0, x, c, cv);
        canvas = s.padded.data();
    }
    if (cv.is_output()) {
        // The GEMM writes y itself (pooled: the image's whole output, in the scratch): the bias
        // is its starting value.
        T* out = pool ? s.conv_out.data() : y;
        for (index_t f = 0; f < fn; ++f) std::fill(out + f * cv.Lw, out + (f + 1) * cv.Lw, b[f]);
        gemm_offsets<T>(out, cv.Lw, w, K, false, canvas, s.taps.data(), fn, cv.Lw, K, T(1), T(1),
                        gemm_threads, gemm_threads > 1 ? nullptr : s.gemm.data());
        if (relu) bias_relu_row(out, out, fn * cv.Lw, T(0), true);
        if (pool)
            for (index_t f = 0; f < fn; ++f)
                pool_plane(y + f * pool->window.oh() * pool->window.ow(), out + f * cv.Lw, x, w, b,
                           c, f, g, relu, *pool);
        return;
    }
    // Else the epilogue is the copy out of the wide rows: bias (and ReLU) added on the way
    // (pooled: into a buffer that stays in cache, each plane then pooled from it). (In the GEMM's
    // tile loop instead, the bias and ReLU measured 2-11 % slower on DeepConvNet's and
    // SimpleConvNet's shapes: the copy out has to run anyway, to drop the wide positions.)
    T* out = s.wide.data();
    gemm_offsets<T>(out, cv.Lw, w, K, false, canvas, s.taps.data(), fn, cv.Lw, K, T(1), T(0),
                    gemm_threads, gemm_threads > 1 ? nullptr : s.gemm.data());
    if (pool) {
        const index_t pooled = pool->window.oh() * pool->window.ow(), x_size = c * g.h * g.w;
        T* plane = s.conv_out.data();
        for (index_t i = 0; i < images; ++i)
            for (index_t f = 0; f < fn; ++f) {
                for (index_t oh = 0; oh < cv.OH; ++oh)
                    bias_relu_row(plane + oh * cv.OW, out + f * cv.Lw + cv.output(i, oh), cv.OW,
                                  b[f], relu);
                pool_plane(y + (i * fn + f) * pooled, plane, x + i * x_size, w, b, c, f, g, relu,
                           *pool);
            }
        return;
    }
    for (index_t i = 0; i < images; ++i)
        for (index_t f = 0; f < fn; ++f)
            for (index_t oh = 0; oh < cv.OH; ++oh)
                bias_relu_row(y + ((i * fn + f) * cv.OH + oh) * cv.OW,
                              out + f * cv.Lw + cv.output(i, oh), cv.OW, b[f], relu);
}

// One image on the pointwise path: y = W . x + b, x read as it is.
template <typename T>
void forward_pointwise(T* y, const T* x, const T* w, const T* b, index_t c, index_t fn, index_t L,
                       ImageScratch<T>& s, int gemm_threads) {
    for (index_t i = 0; i < fn; ++i) std::fill(y + i * L, y + (i + 1) * L, b[i]);
    gemm_step(s, gemm_threads, y, L, w, c, false, x, L, false, fn, L, c, T(1));
}

// The flat path's backward buffers: a block's canvases (one per image, or one for the whole block
// of small images) keep their
// input and wide dout until the block's dW is done. Rows of the wide dout are padded with zeros to
// a multiple of kDotMultiple, and each canvas is followed by as many zeros, so gemm_dot reads
// whole vectors in bounds.
inline index_t dot_length(const Canvas& cv) {
    return (cv.Lw + kDotMultiple - 1) / kDotMultiple * kDotMultiple;
}

struct CanvasBackward {
    index_t per, slots, slot_size, wide_size;  // sizes for a full block (upper bounds)
    CanvasBackward(const Window2d& g, index_t c, index_t fn, index_t n)
        : per(images_per_canvas(g, c, n)), slots(per == 1 ? kBlock : 1) {
        const Canvas cv(g, per);
        slot_size = cv.size(c) + kDotMultiple;
        wide_size = fn * dot_length(cv);
    }
};

// The flat path's backward for images [first, last) of one block: the block's dW partial =
// sum over its canvases of dout_wide . B^T (one gemm_dot, canvases as segments), and, when dx is
// asked for here (see conv2d_backward), each canvas's dx from dcol (K, Lw) = W^T . dout_wide,
// folded back tap by tap onto the canvas (taps in order), then cut out image by image.
template <typename T>
void backward_block_flat(T* dx, const T* dout, const T* x, const T* w, index_t n, index_t first,
                         index_t last, index_t c, index_t fn, const Window2d& g, ImageScratch<T>& s,
                         int gemm_threads) {
    const CanvasBackward bk(g, c, fn, n);
    const index_t K = c * g.fh * g.fw, L = g.oh() * g.ow();
    const index_t x_size = c * g.h * g.w, y_size = fn * L;
    // Every canvas of the block has the same shape: one image each, or the block's only one
    // (which the last, partial block makes narrower than bk's). Its own row length Ld keeps the
    // dot products inside the zeros fill_canvas wrote: past them lies whatever an earlier call
    // left in the scratch, which could be a NaN.
    const Canvas cv(g, std::min(bk.per, last - first));
    const index_t Ld = dot_length(cv);
    const T* canvases[kBlock];
    const T* douts[kBlock];
    int count = 0;
    for (index_t i0 = first; i0 < last; i0 += bk.per, ++count) {
        T* canvas = s.padded.data() + count * bk.slot_size;
        fill_canvas(canvas, kDotMultiple, x + i0 * x_size, c, cv);
        T* dwide = s.wide.data() + count * bk.wide_size;
        zero_fill(dwide, fn * Ld);
        for (index_t i = 0; i < cv.G; ++i)
            for (index_t f = 0; f < fn; ++f)
                for (index_t oh = 0; oh < cv.OH; ++oh) {
                    const T* row = dout + (i0 + i) * y_size + (f * cv.OH + oh) * cv.OW;
                    copy_row(dwide + f * Ld + cv.output(i, oh), row, cv.OW);
                }
        canvases[count] = canvas;
        douts[count] = dwide;
    }
    canvas_taps(s.taps, c, g, cv);
    gemm_dot<T>(s.dw.data(), K, douts, Ld, canvases, s.taps.data(), count, fn, K, Ld, T(0),
                gemm_threads);
    if (!dx) return;
    T* dcol = s.dcol.data();
    const bool w_finite = all_finite(w, fn * K);
    for (int j = 0; j < count; ++j) {
        const index_t i0 = first + j * bk.per;
        gemm_step(s, gemm_threads, dcol, cv.Lw, w, K, true, douts[j], Ld, false, K, cv.Lw, fn,
                  T(0));
        T* dcanvas = s.padded.data() + j * bk.slot_size;  // the input canvas is no longer needed
        zero_fill(dcanvas, cv.size(c));
        if (w_finite) {
            // Every wide position folds back: the dropped ones carry W^T . 0 = 0 exactly, so one
            // long contiguous add per tap replaces OH*G short rows (at stride 2 the short rows
            // were a fifth of the backward pass).
            for (index_t k = 0; k < K; ++k) {
                T* __restrict dst = dcanvas + s.taps[k];
                const T* __restrict src = dcol + k * cv.Lw;
                TINYCONV_OMP_SIMD()
                for (index_t l = 0; l < cv.Lw; ++l) dst[l] += src[l];
            }
        } else {
            // A non-finite tap makes W^T . 0 a NaN at the dropped positions: real ones only.
            for (index_t k = 0; k < K; ++k)
                for (index_t i = 0; i < cv.G; ++i)
                    for (index_t oh = 0; oh < cv.OH; ++oh) {
                        T* dst = dcanvas + s.taps[k] + cv.output(i, oh);
                        const T* src = dcol + k * cv.Lw + cv.output(i, oh);
                        TINYCONV_OMP_SIMD()
                        for (index_t ow = 0; ow < cv.OW; ++ow) dst[ow] += src[ow];
                    }
        }
        cut_out_images(dx + i0 * x_size, dcanvas, c, cv);
    }
}

// The pointwise path's dx[n] (null: not asked for), and image n's share of its block's dW/db
// partials (in the scratch): the first image of a block overwrites them, the next ones add to
// them (the GEMM's beta = 1), in image order.
template <typename T>
void backward_pointwise(T* dx, const T* dout, const T* x, const T* w, index_t c, index_t fn,
                        index_t L, ImageScratch<T>& s, int gemm_threads, bool first_in_block) {
    // dW_block (FN, C) (+)= dout_n (FN, L) . x_n^T (L, C)
    gemm_step(s, gemm_threads, s.dw.data(), c, dout, L, false, x, L, true, fn, c, L,
              first_in_block ? T(0) : T(1));
    // dx_n (C, L) = W^T (C, FN) . dout_n (FN, L)
    if (dx) gemm_step(s, gemm_threads, dx, L, w, c, true, dout, L, false, c, L, fn, T(0));
}

template <typename T>
void grow(std::vector<T>& v, index_t size) {
    if (static_cast<index_t>(v.size()) < size) v.resize(static_cast<size_t>(size));
}

// `count` scratches big enough for this layer, kept across calls (one set per calling thread,
// so concurrent calls from several Python threads never share one): a training loop calls the
// same layers again and again, and fresh buffers would cost an allocation and page faults
// every time. They only grow, up to the largest layer seen.
template <typename T>
std::vector<ImageScratch<T>>& scratch_for(int count, index_t n, index_t c, index_t fn,
                                          const Window2d& g, bool backward, bool serial_gemm,
                                          bool need_dx) {
    thread_local std::vector<ImageScratch<T>> cache;
    if (static_cast<int>(cache.size()) < count) cache.resize(static_cast<size_t>(count));
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    const bool flat = is_flat(g);
    // The canvas this pass uses (the backward pass may put more images on one).
    const Canvas cv(g, !flat      ? 1
                       : backward ? CanvasBackward(g, c, fn, n).per
                                  : images_per_canvas(g, c, n));
    const index_t gemm_n = flat ? cv.Lw : L;  // the GEMMs' position dimension
    for (int t = 0; t < count; ++t) {
        ImageScratch<T>& s = cache[t];
        if (flat && backward) {
            const CanvasBackward bk(g, c, fn, n);
            grow(s.padded, bk.slots * bk.slot_size);
            grow(s.wide, bk.slots * bk.wide_size);
        } else if (flat) {
            if (!cv.is_input()) grow(s.padded, cv.size(c));
            if (!cv.is_output()) grow(s.wide, fn * cv.Lw);
        }
        if (backward && need_dx && flat) grow(s.dcol, K * gemm_n);
        if (serial_gemm) {
            index_t need = gemm_workspace_size<T>(fn, gemm_n, K);
            if (backward)
                need = std::max({need, gemm_workspace_size<T>(fn, K, gemm_n),
                                 gemm_workspace_size<T>(K, gemm_n, fn)});
            grow(s.gemm, need);
        }
        if (backward) {
            grow(s.dw, fn * K);
            grow(s.db, fn);
        }
    }
    return cache;
}

// dW[f, ci, fh, fw] by the definition: over images, then the output positions whose tap (fh, fw)
// reads inside the input, in the loops' order.
template <typename T>
T filter_gradient_by_definition(const T* dout, const T* x, index_t n, index_t c, index_t fn,
                                const Window2d& g, index_t f, index_t ci, index_t fh, index_t fw) {
    const index_t OH = g.oh(), OW = g.ow();
    index_t oh_lo, oh_hi, ow_lo, ow_hi;
    valid_range(g.h, OH, g.sh, g.ph, fh, oh_lo, oh_hi);
    valid_range(g.w, OW, g.sw, g.pw, fw, ow_lo, ow_hi);
    T sum = 0;
    for (index_t i = 0; i < n; ++i) {
        const T* d = dout + (i * fn + f) * OH * OW;
        const T* plane = x + (i * c + ci) * g.h * g.w;
        for (index_t oh = oh_lo; oh < oh_hi; ++oh) {
            const T* xrow = plane + (oh * g.sh - g.ph + fh) * g.w + fw - g.pw;
            for (index_t ow = ow_lo; ow < ow_hi; ++ow) sum += d[oh * OW + ow] * xrow[ow * g.sw];
        }
        if (sum != sum) break;  // a NaN stays NaN: the other images cannot change it
    }
    return sum;
}

// The backward pass's repair: padding and dropped wide positions meet both inputs and douts, so
// any NaN entry of dW may be stray (the pointwise path has neither; dx and db never multiply by
// them, see conv2d_backward).
template <typename T>
void redo_nan_filter_gradients(T* dw, const T* dout, const T* x, index_t n, index_t c, index_t fn,
                               const Window2d& g) {
    const index_t K = c * g.fh * g.fw;
    if (is_pointwise(g) || all_finite(dw, fn * K)) return;
#pragma omp parallel for schedule(static) \
    num_threads(threads_for(fn* K* n* g.oh() * g.ow(), index_t(1) << 15))
    for (index_t e = 0; e < fn * K; ++e) {
        if (dw[e] == dw[e]) continue;
        const index_t f = e / K, ci = e % K / (g.fh * g.fw), fh = e % (g.fh * g.fw) / g.fw,
                      fw = e % g.fw;
        dw[e] = filter_gradient_by_definition(dout, x, n, c, fn, g, f, ci, fh, fw);
    }
}

// The fast paths size and index their scratch by the geometry. module.cpp checks users'
// arguments, but routes also derive geometries of their own (dx as a transposed convolution pads
// by FH-1-PH): one outside what the paths handle must stop with an error, not write outside the
// buffers (a pad equal to the kernel there once made a negative pad and a memory abort).
void check_window(const Window2d& g) {
    if (g.h < 1 || g.w < 1 || g.fh < 1 || g.fw < 1 || g.sh < 1 || g.sw < 1 || g.ph < 0 ||
        g.pw < 0 || g.fh > g.h + 2 * g.ph || g.fw > g.w + 2 * g.pw)
        throw std::logic_error(
            "conv2d: internal error, a window the kernel does not handle: input (" +
            std::to_string(g.h) + ", " + std::to_string(g.w) + "), window (" +
            std::to_string(g.fh) + ", " + std::to_string(g.fw) + "), stride (" +
            std::to_string(g.sh) + ", " + std::to_string(g.sw) + "), pad (" + std::to_string(g.ph) +
            ", " + std::to_string(g.pw) + ")");
}

}  // namespace

namespace {

// conv2d_forward, and with `pool` conv2d_max_pool_forward.
template <typename T>
void conv_forward(T* y, const T* x, const T* w, const T* b, index_t n, index_t c, index_t fn,
                  const Window2d& g, bool relu, const Window2d* pool_window) {
    check_window(g);
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    const index_t x_size = c * g.h * g.w;
    const index_t y_size = fn * (pool_window ? pool_window->oh() * pool_window->ow() : L);
    const int threads = threads_for(n * fn * L * K, index_t(1) << 15);
    // Units of work: a canvas of images on the flat path, else (pointwise) one image.
    const bool flat = is_flat(g);
    const index_t per = flat ? images_per_canvas(g, c, n) : 1, units = (n + per - 1) / per;
    const PaddingRepair repair = pool_window ? PaddingRepair(w, fn, c, g) : PaddingRepair();
    std::optional<PoolAfter> pool;
    if (pool_window) pool.emplace(PoolAfter{*pool_window, repair});
    auto forward_unit = [&](index_t u, ImageScratch<T>& s, int gemm_threads) {
        const index_t first = u * per, count = std::min(per, n - first);
        T* yu = y + first * y_size;
        const T* xu = x + first * x_size;
        if (flat)
            return forward_canvas(yu, xu, count, w, b, c, fn, g, s, gemm_threads, relu,
                                  pool ? &*pool : nullptr);
        // Pooled, the image's output goes to the scratch first.
        T* out = pool ? s.conv_out.data() : yu;
        forward_pointwise(out, xu, w, b, c, fn, L, s, gemm_threads);
        if (relu) bias_relu_row(out, out, fn * L, T(0), true);  // in cache
        if (pool)
            for (index_t f = 0; f < fn; ++f)
                pool_plane(yu + f * (y_size / fn), out + f * L, xu, w, b, c, f, g, relu, *pool);
    };
    // Enough units for every thread: one unit per task, serial GEMMs. Else units one after
    // another, each GEMM on all threads.
    const bool per_thread = units >= threads;
    std::vector<ImageScratch<T>>& scratch =
        scratch_for<T>(per_thread ? threads : 1, n, c, fn, g, false, per_thread, false);
    // Pooled, each thread's scratch holds one output plane, or one image's whole output where
    // the GEMM writes it in one piece (pointwise, or a canvas that is the output: see
    // forward_canvas).
    if (pool)
        for (ImageScratch<T>& s : scratch)
            grow(s.conv_out, flat && !Canvas(g, per).is_output() ? L : fn * L);
    if (per_thread) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (index_t u = 0; u < units; ++u) {
#ifdef _OPENMP
            ImageScratch<T>& s = scratch[omp_get_thread_num()];
#else
            ImageScratch<T>& s = scratch[0];
#endif
            forward_unit(u, s, 1);
        }
    } else {
        for (index_t u = 0; u < units; ++u) forward_unit(u, scratch[0], threads);
    }
    if (!pool) redo_nan_outputs_at_padding(y, x, w, b, n, c, fn, g, relu);
}

}  // namespace

template <typename T>
void conv2d_forward(T* y, const T* x, const T* w, const T* b, index_t n, index_t c, index_t fn,
                    const Window2d& g, bool relu) {
    conv_forward(y, x, w, b, n, c, fn, g, relu, nullptr);
}

template <typename T>
void conv2d_max_pool_forward(T* y, const T* x, const T* w, const T* b, index_t n, index_t c,
                             index_t fn, const Window2d& g, bool relu, const Window2d& pool) {
    if (pool.h != g.oh() || pool.w != g.ow() || pool.ph >= pool.fh || pool.pw >= pool.fw)
        throw std::logic_error(
            "conv2d_max_pool_forward: internal error, the pooling window does "
            "not fit the convolution's output");
    check_window(pool);
    conv_forward(y, x, w, b, n, c, fn, g, relu, &pool);
}

template <typename T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, index_t n,
                     index_t c, index_t fn, const Window2d& g) {
    check_window(g);
    // On the flat path, dx is itself a stride-1 convolution: of dout, padded by FH-1-PH and
    // FW-1-PW, with the filters' channel axes swapped and their taps flipped. Run as one, it takes
    // the fast forward path instead of a GEMM with only FN terms per sum and a fold (16->16
    // channels, 28x28, on Zen 4: 63-81 -> 100+ GFLOP/s). Needs the pads below the kernel sizes,
    // and enough input channels to fill the GEMM's rows (with one channel, as in a first layer
    // on grey images, 7 of 8 rows of every tile would be wasted). Its padding stands for output
    // positions that do not exist: conv2d_forward's repair keeps a non-finite filter tap that
    // meets it from making a NaN. (The other routes to dx multiply real terms only: W^T . dout,
    // then the fold drops whatever lands in the padding.)
    constexpr index_t kMinChannelsForTransposedConv = 8;
    if (dx && is_flat(g) && g.sh == 1 && g.sw == 1 && g.ph < g.fh && g.pw < g.fw &&
        c >= kMinChannelsForTransposedConv) {
        conv2d_backward<T>(nullptr, dw, db, dout, x, w, n, c, fn, g);
        std::vector<T> w_swapped(static_cast<size_t>(fn * c * g.fh * g.fw)),
            zeros(static_cast<size_t>(c), T(0));
        for (index_t f = 0; f < fn; ++f)
            for (index_t ci = 0; ci < c; ++ci)
                for (index_t fh = 0; fh < g.fh; ++fh)
                    for (index_t fw = 0; fw < g.fw; ++fw)
                        w_swapped[((ci * fn + f) * g.fh + g.fh - 1 - fh) * g.fw + g.fw - 1 - fw] =
                            w[((f * c + ci) * g.fh + fh) * g.fw + fw];
        const Window2d transposed{g.oh(), g.ow(),          g.fh,           g.fw, 1,
                                  1,      g.fh - 1 - g.ph, g.fw - 1 - g.pw};
        conv2d_forward<T>(dx, dout, w_swapped.data(), zeros.data(), n, fn, c, transposed);
        return;
    }
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    const index_t x_size = c * g.h * g.w, y_size = fn * L;
    const int threads = threads_for(n * fn * L * K, index_t(1) << 15);
    std::fill(dw, dw + fn * K, T(0));
    std::fill(db, db + fn, T(0));
    // dW and db are sums over images. Images go in fixed blocks (images_per_block); a block's
    // partial is summed in one scratch, and the partials are added into dW/db in block order.
    // Threads take whole blocks, a wave of one block per thread at a time, so only one scratch per
    // thread is live and there is one synchronisation per wave rather than per image.
    const index_t per_block = images_per_block(g, c, n), blocks = (n + per_block - 1) / per_block;
    auto backward_block = [&](index_t block, ImageScratch<T>& s, int gemm_threads) {
        const index_t first = block * per_block, last = std::min(n, first + per_block);
        for (index_t i = first; i < last; ++i)
            for (index_t f = 0; f < fn; ++f) {
                const T sum = row_sum(dout + i * y_size + f * L, L);
                s.db[f] = i == first ? sum : s.db[f] + sum;
            }
        if (is_flat(g))
            return backward_block_flat(dx, dout, x, w, n, first, last, c, fn, g, s, gemm_threads);
        for (index_t i = first; i < last; ++i)
            backward_pointwise(dx ? dx + i * x_size : nullptr, dout + i * y_size, x + i * x_size, w,
                               c, fn, L, s, gemm_threads, i == first);
    };
    // Adds the partials of `count` consecutive blocks, held by scratch[0..count), in order.
    auto reduce_partials = [&](std::vector<ImageScratch<T>>& scratch, index_t count) {
#pragma omp for schedule(static)
        for (index_t e = 0; e < fn * K; ++e)
            for (index_t t = 0; t < count; ++t) dw[e] += scratch[t].dw[e];
#pragma omp single
        for (index_t f = 0; f < fn; ++f)
            for (index_t t = 0; t < count; ++t) db[f] += scratch[t].db[f];
    };
    if (blocks >= threads && threads > 1) {
        std::vector<ImageScratch<T>>& scratch =
            scratch_for<T>(threads, n, c, fn, g, true, true, dx != nullptr);
#pragma omp parallel num_threads(threads)
        {
#ifdef _OPENMP
            // The runtime may grant fewer threads than asked (OMP_THREAD_LIMIT, nesting): a
            // wave is as many blocks as the team really has.
            const int tid = omp_get_thread_num(), team = omp_get_num_threads();
#else
            const int tid = 0, team = 1;
#endif
            for (index_t wave = 0; wave < blocks; wave += team) {
                if (wave + tid < blocks) backward_block(wave + tid, scratch[tid], 1);
#pragma omp barrier
                reduce_partials(scratch, std::min<index_t>(team, blocks - wave));
            }
        }
    } else {
        // Few blocks for many threads: blocks one after another, each GEMM on all threads.
        std::vector<ImageScratch<T>>& scratch =
            scratch_for<T>(1, n, c, fn, g, true, threads <= 1, dx != nullptr);
        for (index_t block = 0; block < blocks; ++block) {
            backward_block(block, scratch[0], threads);
#pragma omp parallel num_threads(threads) if (threads > 1)
            reduce_partials(scratch, 1);
        }
    }
    redo_nan_filter_gradients(dw, dout, x, n, c, fn, g);
}

template <typename T>
void conv2d_forward_reference(T* y, const T* x, const T* w, const T* b, index_t n, index_t c,
                              index_t fn, const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow();
    for (index_t i = 0; i < n; ++i)
        for (index_t f = 0; f < fn; ++f)
            for (index_t oh = 0; oh < OH; ++oh)
                for (index_t ow = 0; ow < OW; ++ow) {
                    T sum = b[f];
                    for (index_t ci = 0; ci < c; ++ci)
                        for (index_t fh = 0; fh < g.fh; ++fh)
                            for (index_t fw = 0; fw < g.fw; ++fw) {
                                const index_t ih = oh * g.sh - g.ph + fh,
                                              iw = ow * g.sw - g.pw + fw;
                                if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
                                sum += w[((f * c + ci) * g.fh + fh) * g.fw + fw] *
                                       x[((i * c + ci) * g.h + ih) * g.w + iw];
                            }
                    y[((i * fn + f) * OH + oh) * OW + ow] = sum;
                }
}

template <typename T>
void conv2d_backward_reference(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w,
                               index_t n, index_t c, index_t fn, const Window2d& g) {
    const index_t OH = g.oh(), OW = g.ow();
    std::fill(dx, dx + n * c * g.h * g.w, T(0));
    std::fill(dw, dw + fn * c * g.fh * g.fw, T(0));
    std::fill(db, db + fn, T(0));
    for (index_t i = 0; i < n; ++i)
        for (index_t f = 0; f < fn; ++f)
            for (index_t oh = 0; oh < OH; ++oh)
                for (index_t ow = 0; ow < OW; ++ow) {
                    const T d = dout[((i * fn + f) * OH + oh) * OW + ow];
                    db[f] += d;
                    for (index_t ci = 0; ci < c; ++ci)
                        for (index_t fh = 0; fh < g.fh; ++fh)
                            for (index_t fw = 0; fw < g.fw; ++fw) {
                                const index_t ih = oh * g.sh - g.ph + fh,
                                              iw = ow * g.sw - g.pw + fw;
                                if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
                                const index_t wi = ((f * c + ci) * g.fh + fh) * g.fw + fw;
                                const index_t xi = ((i * c + ci) * g.h + ih) * g.w + iw;
                                dw[wi] += d * x[xi];
                                dx[xi] += d * w[wi];
                            }
                }
}

#define TINYCONV_INSTANTIATE(T)                                                                   \
    template void conv2d_forward<T>(T*, const T*, const T*, const T*, index_t, index_t, index_t,  \
                                    const Window2d&, bool);                                       \
    template void conv2d_max_pool_forward<T>(T*, const T*, const T*, const T*, index_t, index_t,  \
                                             index_t, const Window2d&, bool, const Window2d&);    \
    template void conv2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, index_t, index_t,  \
                                     index_t, const Window2d&);                                   \
    template void conv2d_forward_reference<T>(T*, const T*, const T*, const T*, index_t, index_t, \
                                              index_t, const Window2d&);                          \
    template void conv2d_backward_reference<T>(T*, T*, T*, const T*, const T*, const T*, index_t, \
                                               index_t, index_t, const Window2d&);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
