#include "conv.h"

#include <algorithm>
#include <vector>

#include "gemm.h"
#include "im2col.h"

namespace tinyconv {

namespace {

bool is_pointwise(const Window2d& g) {
    return g.fh == 1 && g.fw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
}

// Scratch for one image's worth of work, owned by one thread.
template <typename T>
struct ImageScratch {
    std::vector<T> col;   // (C*FH*FW, OH*OW) (forward: one tile of columns), unused for pointwise
    std::vector<T> dcol;  // same shape, backward only
    std::vector<T> gemm;  // GEMM packing buffers
    std::vector<T> dw;    // (FN, C*FH*FW) this image's dW, backward only
    std::vector<T> db;    // (FN,)
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
#pragma omp simd
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

// Output columns per forward tile: the tile's column matrix (K x width) stays in L2 (about
// 256 KiB), so the GEMM packs it from cache instead of memory. Every output element still sums
// over k in the same order, so tiling does not change a single bit of y.
template <typename T>
index_t forward_tile_width(index_t K, index_t L) {
    const index_t most = std::max<index_t>(64, (index_t(256) << 10) / static_cast<index_t>(sizeof(T)) / std::max<index_t>(K, 1));
    const index_t tiles = (L + most - 1) / most;
    const index_t width = (L + tiles - 1) / tiles;  // equal tiles, none left tiny
    return std::min(L, (width + 31) / 32 * 32);
}

template <typename T>
void forward_image(T* y, const T* x, const T* w, const T* b, index_t c, index_t fn,
                   const Window2d& g, ImageScratch<T>& s, int gemm_threads) {
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    for (index_t f = 0; f < fn; ++f) std::fill(y + f * L, y + (f + 1) * L, b[f]);
    if (is_pointwise(g)) {
        gemm_step(s, gemm_threads, y, L, w, K, false, x, L, false, fn, L, K, T(1));
        return;
    }
    const index_t tile = forward_tile_width<T>(K, L);
    for (index_t l0 = 0; l0 < L; l0 += tile) {
        const index_t width = std::min(tile, L - l0);
        im2col_chans(s.col.data(), x, c, g, l0, l0 + width);
        gemm_step(s, gemm_threads, y + l0, L, w, K, false, s.col.data(), width, false, fn, width, K, T(1));
    }
}

// dx[n], and image n's share of its block's dW/db partials (in the scratch): the first image of a
// block overwrites them, the next ones add to them (the GEMM's beta = 1), in image order.
template <typename T>
void backward_image(T* dx, const T* dout, const T* x, const T* w, index_t c, index_t fn,
                    const Window2d& g, ImageScratch<T>& s, int gemm_threads, bool first_in_block) {
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    const bool pointwise = is_pointwise(g);
    const T* col = x;
    if (!pointwise) {
        im2col_chans(s.col.data(), x, c, g);
        col = s.col.data();
    }
    // dW_block (FN, K) (+)= dout_n (FN, L) . col^T (L, K)
    gemm_step(s, gemm_threads, s.dw.data(), K, dout, L, false, col, L, true, fn, K, L,
              first_in_block ? T(0) : T(1));
    for (index_t f = 0; f < fn; ++f) {
        const T sum = row_sum(dout + f * L, L);
        s.db[f] = first_in_block ? sum : s.db[f] + sum;
    }
    if (!dx) return;  // the caller does not need the input gradient (first layer)
    // dcol (K, L) = W^T (K, FN) . dout_n (FN, L)
    T* dcol = pointwise ? dx : s.dcol.data();
    gemm_step(s, gemm_threads, dcol, L, w, K, true, dout, L, false, K, L, fn, T(0));
    if (!pointwise) col2im_chans(dx, dcol, c, g);
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
std::vector<ImageScratch<T>>& scratch_for(int count, index_t c, index_t fn, const Window2d& g,
                                          bool backward, bool serial_gemm, bool need_dx) {
    thread_local std::vector<ImageScratch<T>> cache;
    if (static_cast<int>(cache.size()) < count) cache.resize(static_cast<size_t>(count));
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    for (int t = 0; t < count; ++t) {
        ImageScratch<T>& s = cache[t];
        if (!is_pointwise(g)) {
            // The forward pass unfolds one tile of columns at a time, the backward pass the image.
            grow(s.col, K * (backward ? L : forward_tile_width<T>(K, L)));
            if (backward && need_dx) grow(s.dcol, K * L);
        }
        if (serial_gemm) {
            index_t need = gemm_workspace_size<T>(fn, L, K);
            if (backward)
                need = std::max({need, gemm_workspace_size<T>(fn, K, L), gemm_workspace_size<T>(K, L, fn)});
            grow(s.gemm, need);
        }
        if (backward) {
            grow(s.dw, fn * K);
            grow(s.db, fn);
        }
    }
    return cache;
}

}  // namespace

template <typename T>
void conv2d_forward(T* y, const T* x, const T* w, const T* b, index_t n, index_t c, index_t fn,
                    const Window2d& g) {
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    const index_t x_size = c * g.h * g.w, y_size = fn * L;
    const int threads = threads_for(n * fn * L * K, index_t(1) << 15);
    if (n >= threads) {
        // Enough images for every thread: one image per task, serial GEMMs.
        std::vector<ImageScratch<T>>& scratch = scratch_for<T>(threads, c, fn, g, false, true, false);
#pragma omp parallel for schedule(static) num_threads(threads)
        for (index_t i = 0; i < n; ++i) {
#ifdef _OPENMP
            ImageScratch<T>& s = scratch[omp_get_thread_num()];
#else
            ImageScratch<T>& s = scratch[0];
#endif
            forward_image(y + i * y_size, x + i * x_size, w, b, c, fn, g, s, 1);
        }
    } else {
        ImageScratch<T>& s = scratch_for<T>(1, c, fn, g, false, false, false)[0];
        for (index_t i = 0; i < n; ++i)
            forward_image(y + i * y_size, x + i * x_size, w, b, c, fn, g, s, threads);
    }
}

template <typename T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, index_t n,
                     index_t c, index_t fn, const Window2d& g) {
    const index_t L = g.oh() * g.ow(), K = c * g.fh * g.fw;
    const index_t x_size = c * g.h * g.w, y_size = fn * L;
    const int threads = threads_for(n * fn * L * K, index_t(1) << 15);
    std::fill(dw, dw + fn * K, T(0));
    std::fill(db, db + fn, T(0));
    // dW and db are sums over images. Images go in fixed blocks of kBlock (a constant, so the
    // blocks never depend on the thread count); a block's partial is summed image by image in
    // one scratch, and the partials are added into dW/db in block order. Threads take whole
    // blocks, a wave of one block per thread at a time, so only one scratch per thread is live
    // and there is one synchronisation per wave rather than per image.
    constexpr index_t kBlock = 4;
    const index_t blocks = (n + kBlock - 1) / kBlock;
    auto backward_block = [&](index_t block, ImageScratch<T>& s, int gemm_threads) {
        const index_t first = block * kBlock, last = std::min(n, first + kBlock);
        for (index_t i = first; i < last; ++i)
            backward_image(dx ? dx + i * x_size : nullptr, dout + i * y_size, x + i * x_size, w, c,
                           fn, g, s, gemm_threads, i == first);
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
        std::vector<ImageScratch<T>>& scratch = scratch_for<T>(threads, c, fn, g, true, true, dx != nullptr);
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
        std::vector<ImageScratch<T>>& scratch = scratch_for<T>(1, c, fn, g, true, threads <= 1, dx != nullptr);
        for (index_t block = 0; block < blocks; ++block) {
            backward_block(block, scratch[0], threads);
#pragma omp parallel num_threads(threads) if (threads > 1)
            reduce_partials(scratch, 1);
        }
    }
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
                                const index_t ih = oh * g.sh - g.ph + fh, iw = ow * g.sw - g.pw + fw;
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
                                const index_t ih = oh * g.sh - g.ph + fh, iw = ow * g.sw - g.pw + fw;
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
                                    const Window2d&);                                             \
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
