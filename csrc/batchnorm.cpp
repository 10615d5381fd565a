#include "batchnorm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "lanes.h"

namespace tinyconv {

namespace {

// Elements worth a thread (as the elementwise kernels).
constexpr index_t kElementGrain = 1 << 15;

// The two sums of a backward pass (sum dy, sum dy * (x - mean)) of a block or a channel.
struct TermPair {
    double first, second;
};

// Elements per task of the elementwise passes over the whole tensor (in memory order: long streams,
// even where a plane is short).
constexpr index_t kElementChunk = 1 << 14;

// The C channels of an (N, C, H*W) tensor, each a sequence of m = N*H*W values in (n, h, w) order
// cut into blocks of kBatchNormBlock values.
struct Channels {
    index_t n, c, plane;

    index_t m() const { return n * plane; }
    index_t blocks() const { return (m() + kBatchNormBlock - 1) / kBatchNormBlock; }

    // Calls run(offset, len) for the runs of block k of channel ch (its parts of H*W planes), in
    // order; offset counts elements from the start of the tensor. The loop, with run and the
    // run helpers above inlined into it, is compiled for the GEMM's vector level (leaf_isa.h):
    // one dispatch per block, not per run (7x7 planes make runs of 49 values).
    template <typename Run>
    void for_each_run(index_t ch, index_t k, Run&& run) const {
        run_leaf([&]() TINYCONV_LEAF_LAMBDA {
            index_t lo = k * kBatchNormBlock;
            const index_t hi = std::min(lo + kBatchNormBlock, m());
            index_t image = lo / plane, at = lo % plane;
            while (lo < hi) {
                const index_t len = std::min(hi - lo, plane - at);
                run((image * c + ch) * plane + at, len);
                lo += len;
                ++image;
                at = 0;
            }
        });
    }

    // run(ch, offset, len) for the parts of planes in the elements [begin, end) of the tensor,
    // at the GEMM's vector level as for_each_run.
    template <typename Run>
    void for_each_plane_part(index_t begin, index_t end, Run&& run) const {
        run_leaf([&]() TINYCONV_LEAF_LAMBDA {
            for (index_t at = begin; at < end;) {
                const index_t p = at / plane, len = std::min(end - at, (p + 1) * plane - at);
                run(p % c, at, len);
                at += len;
            }
        });
    }
};

// An elementwise pass over the whole tensor in memory order, split into equal chunks.
template <typename Run>
void for_each_plane_part_parallel(const Channels& g, int threads, Run&& run) {
    const index_t total = g.n * g.c * g.plane, chunks = (total + kElementChunk - 1) / kElementChunk;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (index_t k = 0; k < chunks; ++k)
        g.for_each_plane_part(k * kElementChunk, std::min(total, (k + 1) * kElementChunk), run);
}

// Whole channels to threads (each thread runs every pass over its channels, whose values stay in
// cache between the passes), or blocks (few channels for the threads, or a share that does not
// divide evenly, and channels long enough to split).
bool split_channels(const Channels& g, int threads) {
    return threads > 1 && g.blocks() > 1 && g.c < 4 * threads && g.c % threads != 0;
}

// The sum over block k of channel ch of what add(acc, offset, len) adds for each run.
template <typename Add>
double block_sum(const Channels& g, index_t ch, index_t k, Add&& add) {
    double acc[kLanes] = {};
    g.for_each_run(ch, k, [&](index_t offset, index_t len) { add(acc, offset, len); });
    return lanes_total(acc);
}

// Two sums at once, as block_sum.
template <typename Add>
TermPair block_sums(const Channels& g, index_t ch, index_t k, Add&& add) {
    double a[kLanes] = {}, b[kLanes] = {};
    g.for_each_run(ch, k, [&](index_t offset, index_t len) { add(a, b, offset, len); });
    return TermPair{lanes_total(a), lanes_total(b)};
}

// ---------------------------------------------------------------------------------------------
// The work on one run of values (part of one plane), shared by every route so that the routes
// give the same bits.

// Inlined into the loops of Channels, which run at the GEMM's vector level (leaf_isa.h).
template <typename T>
TINYCONV_LEAF void add_values(double* acc, const T* p, index_t len) {
    add_run(acc, len, [p](index_t i) TINYCONV_LEAF_LAMBDA { return static_cast<double>(p[i]); });
}

template <typename T>
TINYCONV_LEAF void add_squares(double* acc, const T* p, index_t len, double centre) {
    add_run(acc, len, [p, centre](index_t i) TINYCONV_LEAF_LAMBDA {
        const double d = static_cast<double>(p[i]) - centre;
        return d * d;
    });
}

// Same-size unsigned integer, for selecting the bits of a float without a branch.
template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

// dout, or +0 where the fused ReLU's output is <= 0 (relu_backward's rule: NaN passes). As a mask
// on the bits: a conditional here keeps the compiler from vectorising the sums.
template <bool Gated, typename T>
TINYCONV_LEAF T gradient_in(const T* dout, const T* gate, index_t i) {
    const T d = dout[i];
    if constexpr (Gated) {
        const T r = gate[i];
        Bits<T> bits;
        std::memcpy(&bits, &d, sizeof(T));
        bits &= Bits<T>(0) - static_cast<Bits<T>>(!(r <= T(0)));
        T out;
        std::memcpy(&out, &bits, sizeof(T));
        return out;
    } else {
        return d;
    }
}

// sum dy and sum dy * (x - centre) over a run.
template <bool Gated, typename T>
TINYCONV_LEAF void add_gradient_terms(double* dy_acc, double* dy_xc_acc, const T* d, const T* v,
                                      const T* r, index_t len, double centre) {
    add_run_pairs(dy_acc, dy_xc_acc, len,
                  [=](index_t i, double& dy_term, double& dy_xc_term) TINYCONV_LEAF_LAMBDA {
                      const double dy = gradient_in<Gated>(d, r, i);
                      dy_term = dy;
                      dy_xc_term = dy * (static_cast<double>(v[i]) - centre);
                  });
}

// y = (x - centre) * scale + shift, then relu_forward's rule when Relu.
template <bool Relu, typename T>
TINYCONV_LEAF void normalise_run(T* y, const T* x, index_t len, T centre, T scale, T shift) {
    TINYCONV_OMP_SIMD()
    for (index_t i = 0; i < len; ++i) {
        const T v = (x[i] - centre) * scale + shift;
        y[i] = Relu ? (v <= T(0) ? T(0) : v) : v;
    }
}

// Per-channel constants of the backward pass, rounded to T:
//   train: dx = ((dy - dy_mean) - (x - centre) * projection) * scale;  inference: dx = dy * scale.
template <typename T>
struct GradientCoefficients {
    T centre, scale, dy_mean, projection;
};

template <bool Gated, bool Train, typename T>
TINYCONV_LEAF void input_gradient_run(T* dx, const T* d, const T* v, const T* r, index_t len,
                                      const GradientCoefficients<T>& q) {
    const T centre = q.centre, scale = q.scale, dy_mean = q.dy_mean, projection = q.projection;
    TINYCONV_OMP_SIMD()
    for (index_t i = 0; i < len; ++i) {
        const T dy = gradient_in<Gated>(d, r, i);
        if constexpr (Train)
            dx[i] = ((dy - dy_mean) - (v[i] - centre) * projection) * scale;
        else
            dx[i] = dy * scale;
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Forward

template <typename T>
void batch_norm2d_forward(T* y, T* mean, T* invstd, T* running_mean, T* running_var, const T* x,
                          const T* gamma, const T* beta, index_t n, index_t c, index_t plane,
                          bool train, double momentum, double eps, bool unbiased, bool relu) {
    const Channels g{n, c, plane};
    const index_t blocks = g.blocks(), m = g.m();
    const int threads = threads_for(n * c * plane, kElementGrain);

    // Training: the batch statistics of channel ch from its mean (in double) and its sum of
    // squared deviations.
    auto set_statistics = [&](index_t ch, double centre, double squares) {
        const double var = squares / static_cast<double>(m);
        mean[ch] = static_cast<T>(centre);
        invstd[ch] = static_cast<T>(1.0 / std::sqrt(var + eps));
        if (m == 0) return;  // nothing was seen: the running statistics stay
        const double batch_var = unbiased ? squares / static_cast<double>(m - 1) : var;
        running_mean[ch] = static_cast<T>(momentum * static_cast<double>(running_mean[ch]) +
                                          (1.0 - momentum) * centre);
        running_var[ch] = static_cast<T>(momentum * static_cast<double>(running_var[ch]) +
                                         (1.0 - momentum) * batch_var);
    };
    auto normalise = [&](index_t ch, index_t offset, index_t len) {
        const T centre = mean[ch], scale = invstd[ch] * gamma[ch], shift = beta[ch];
        if (relu)
            normalise_run<true>(y + offset, x + offset, len, centre, scale, shift);
        else
            normalise_run<false>(y + offset, x + offset, len, centre, scale, shift);
    };

    if (!train) {
        for (index_t ch = 0; ch < c; ++ch) {
            mean[ch] = running_mean[ch];
            invstd[ch] =
                static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps));
        }
        for_each_plane_part_parallel(g, threads, normalise);
        return;
    }
    auto add_x = [&](double* acc, index_t offset, index_t len) {
        add_values(acc, x + offset, len);
    };
    auto add_squares_of = [&](double centre) {
        return [&, centre](double* acc, index_t offset, index_t len) {
            add_squares(acc, x + offset, len, centre);
        };
    };
    if (!split_channels(g, threads)) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (index_t ch = 0; ch < c; ++ch) {
            double sum = 0.0, squares = 0.0;
            for (index_t k = 0; k < blocks; ++k) sum += block_sum(g, ch, k, add_x);
            const double centre = sum / static_cast<double>(m);
            for (index_t k = 0; k < blocks; ++k)
                squares += block_sum(g, ch, k, add_squares_of(centre));
            set_statistics(ch, centre, squares);
            for (index_t k = 0; k < blocks; ++k)
                g.for_each_run(ch, k,
                               [&](index_t offset, index_t len) { normalise(ch, offset, len); });
        }
        return;
    }
    // The same sums, block by block across threads, then added in block order.
    const index_t tasks = c * blocks;
    std::vector<double> partial(static_cast<size_t>(tasks)), centre(static_cast<size_t>(c));
    auto channel_total = [&](index_t ch) {
        double total = 0.0;
        for (index_t k = 0; k < blocks; ++k) total += partial[ch * blocks + k];
        return total;
    };
#pragma omp parallel for schedule(static) num_threads(threads)
    for (index_t t = 0; t < tasks; ++t) partial[t] = block_sum(g, t / blocks, t % blocks, add_x);
    for (index_t ch = 0; ch < c; ++ch) centre[ch] = channel_total(ch) / static_cast<double>(m);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (index_t t = 0; t < tasks; ++t)
        partial[t] = block_sum(g, t / blocks, t % blocks, add_squares_of(centre[t / blocks]));
    for (index_t ch = 0; ch < c; ++ch) set_statistics(ch, centre[ch], channel_total(ch));
    for_each_plane_part_parallel(g, threads, normalise);
}

// ---------------------------------------------------------------------------------------------
// Backward

namespace {

template <bool Gated, typename T>
void backward(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma, const T* mean,
              const T* invstd, const T* gate, const Channels& g, bool train) {
    const index_t c = g.c, plane = g.plane, blocks = g.blocks(), m = g.m();
    const int threads = threads_for(g.n * c * plane, kElementGrain);

    // dbeta, dgamma and the constants of dx for channel ch from its two sums.
    auto finish = [&](index_t ch, double dy_sum, double dy_xc_sum) {
        const double istd = static_cast<double>(invstd[ch]);
        dbeta[ch] = static_cast<T>(dy_sum);
        dgamma[ch] =
            m > 0 ? static_cast<T>(dy_xc_sum * istd) : T(0);  // an empty sum, even if invstd is NaN
        GradientCoefficients<T> q{mean[ch], gamma[ch] * invstd[ch], T(0), T(0)};
        if (train && m > 0) {
            q.dy_mean = static_cast<T>(dy_sum / static_cast<double>(m));
            q.projection = static_cast<T>(dy_xc_sum * istd * istd / static_cast<double>(m));
        }
        return q;
    };
    auto add_terms = [&](double* dy_acc, double* dy_xc_acc, index_t ch, index_t offset,
                         index_t len) {
        add_gradient_terms<Gated>(dy_acc, dy_xc_acc, dout + offset, x + offset,
                                  Gated ? gate + offset : nullptr, len,
                                  static_cast<double>(mean[ch]));
    };
    auto input_gradient = [&](index_t offset, index_t len, const GradientCoefficients<T>& q) {
        const T* r = Gated ? gate + offset : nullptr;
        if (train)
            input_gradient_run<Gated, true>(dx + offset, dout + offset, x + offset, r, len, q);
        else
            input_gradient_run<Gated, false>(dx + offset, dout + offset, x + offset, r, len, q);
    };

    if (!split_channels(g, threads)) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (index_t ch = 0; ch < c; ++ch) {
            const GradientCoefficients<T> scale_only{mean[ch], gamma[ch] * invstd[ch], T(0),
                                                     T(0)};  // inference
            TermPair sums{0.0, 0.0};
            for (index_t k = 0; k < blocks; ++k) {
                // Inference: dx needs no sums, and is made block by block beside them (in cache).
                if (!train)
                    g.for_each_run(ch, k, [&](index_t offset, index_t len) {
                        input_gradient(offset, len, scale_only);
                    });
                const TermPair part =
                    block_sums(g, ch, k, [&](double* a, double* b, index_t offset, index_t len) {
                        add_terms(a, b, ch, offset, len);
                    });
                sums.first += part.first;
                sums.second += part.second;
            }
            const GradientCoefficients<T> q = finish(ch, sums.first, sums.second);
            if (train)
                for (index_t k = 0; k < blocks; ++k)
                    g.for_each_run(ch, k, [&](index_t offset, index_t len) {
                        input_gradient(offset, len, q);
                    });
        }
        return;
    }
    // Few channels: the sums block by block across threads, added in block order; then dx over
    // the whole tensor.
    std::vector<double> dy_partial(static_cast<size_t>(c * blocks)),
        dy_xc_partial(static_cast<size_t>(c * blocks));
    std::vector<GradientCoefficients<T>> q(static_cast<size_t>(c));
    const index_t tasks = c * blocks;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (index_t t = 0; t < tasks; ++t) {
        const TermPair part = block_sums(g, t / blocks, t % blocks,
                                         [&](double* a, double* b, index_t offset, index_t len) {
                                             add_terms(a, b, t / blocks, offset, len);
                                         });
        dy_partial[t] = part.first;
        dy_xc_partial[t] = part.second;
    }
    for (index_t ch = 0; ch < c; ++ch) {
        double dy_sum = 0.0, dy_xc_sum = 0.0;
        for (index_t k = 0; k < blocks; ++k) {
            dy_sum += dy_partial[ch * blocks + k];
            dy_xc_sum += dy_xc_partial[ch * blocks + k];
        }
        q[ch] = finish(ch, dy_sum, dy_xc_sum);
    }
    for_each_plane_part_parallel(g, threads, [&](index_t ch, index_t offset, index_t len) {
        input_gradient(offset, len, q[ch]);
    });
}

}  // namespace

template <typename T>
void batch_norm2d_backward(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma,
                           const T* mean, const T* invstd, const T* relu_output, index_t n,
                           index_t c, index_t plane, bool train) {
    const Channels g{n, c, plane};
    if (relu_output)
        backward<true>(dx, dgamma, dbeta, dout, x, gamma, mean, invstd, relu_output, g, train);
    else
        backward<false>(dx, dgamma, dbeta, dout, x, gamma, mean, invstd, relu_output, g, train);
}

// ---------------------------------------------------------------------------------------------
// The oracles

template <typename T>
void batch_norm2d_forward_reference(T* y, T* mean, T* invstd, T* running_mean, T* running_var,
                                    const T* x, const T* gamma, const T* beta, index_t n, index_t c,
                                    index_t plane, bool train, double momentum, double eps,
                                    bool unbiased, bool relu) {
    const index_t m = n * plane;
    auto at = [&](index_t image, index_t ch, index_t i) { return (image * c + ch) * plane + i; };
    for (index_t ch = 0; ch < c; ++ch) {
        if (train) {
            double sum = 0.0;
            for (index_t image = 0; image < n; ++image)
                for (index_t i = 0; i < plane; ++i) sum += x[at(image, ch, i)];
            const double mu = sum / static_cast<double>(m);
            double squares = 0.0;
            for (index_t image = 0; image < n; ++image)
                for (index_t i = 0; i < plane; ++i)
                    squares += (x[at(image, ch, i)] - mu) * (x[at(image, ch, i)] - mu);
            mean[ch] = static_cast<T>(mu);
            invstd[ch] = static_cast<T>(1.0 / std::sqrt(squares / static_cast<double>(m) + eps));
            if (m > 0) {
                const double batch_var = squares / static_cast<double>(unbiased ? m - 1 : m);
                running_mean[ch] =
                    static_cast<T>(momentum * running_mean[ch] + (1.0 - momentum) * mu);
                running_var[ch] =
                    static_cast<T>(momentum * running_var[ch] + (1.0 - momentum) * batch_var);
            }
        } else {
            mean[ch] = running_mean[ch];
            invstd[ch] =
                static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps));
        }
        for (index_t image = 0; image < n; ++image)
            for (index_t i = 0; i < plane; ++i) {
                const double xhat =
                    (static_cast<double>(x[at(image, ch, i)]) - mean[ch]) * invstd[ch];
                const T v = static_cast<T>(xhat * gamma[ch] + beta[ch]);
                y[at(image, ch, i)] = relu && v <= T(0) ? T(0) : v;
            }
    }
}

template <typename T>
void batch_norm2d_backward_reference(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x,
                                     const T* gamma, const T* mean, const T* invstd,
                                     const T* relu_output, index_t n, index_t c, index_t plane,
                                     bool train) {
    const double m = static_cast<double>(n * plane);
    auto at = [&](index_t image, index_t ch, index_t i) { return (image * c + ch) * plane + i; };
    auto dy_at = [&](index_t j) {
        return relu_output && relu_output[j] <= T(0) ? 0.0 : static_cast<double>(dout[j]);
    };
    for (index_t ch = 0; ch < c; ++ch) {
        double dy_sum = 0.0, dy_xhat_sum = 0.0;
        for (index_t image = 0; image < n; ++image)
            for (index_t i = 0; i < plane; ++i) {
                const index_t j = at(image, ch, i);
                dy_sum += dy_at(j);
                dy_xhat_sum += dy_at(j) * (x[j] - static_cast<double>(mean[ch])) * invstd[ch];
            }
        dbeta[ch] = static_cast<T>(dy_sum);
        dgamma[ch] = static_cast<T>(dy_xhat_sum);
        const double scale = static_cast<double>(gamma[ch]) * invstd[ch];
        for (index_t image = 0; image < n; ++image)
            for (index_t i = 0; i < plane; ++i) {
                const index_t j = at(image, ch, i);
                const double xhat = (x[j] - static_cast<double>(mean[ch])) * invstd[ch];
                dx[j] =
                    static_cast<T>(train ? scale / m * (m * dy_at(j) - dy_sum - xhat * dy_xhat_sum)
                                         : dy_at(j) * scale);
            }
    }
}

#define TINYCONV_INSTANTIATE(T)                                                                  \
    template void batch_norm2d_forward<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*,      \
                                          index_t, index_t, index_t, bool, double, double, bool, \
                                          bool);                                                 \
    template void batch_norm2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,   \
                                           const T*, const T*, index_t, index_t, index_t, bool); \
    template void batch_norm2d_forward_reference<T>(T*, T*, T*, T*, T*, const T*, const T*,      \
                                                    const T*, index_t, index_t, index_t, bool,   \
                                                    double, double, bool, bool);                 \
    template void batch_norm2d_backward_reference<T>(T*, T*, T*, const T*, const T*, const T*,   \
                                                     const T*, const T*, const T*, index_t,      \
                                                     index_t, index_t, bool);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
