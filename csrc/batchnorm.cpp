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

// The two sums of a backward pass (sum dy, sum dy * (x - mean)), per block or per channel.
struct TermPair {
    double first, second;
};

// Elements worth a thread (as the elementwise kernels).
constexpr index_t kElementGrain = 1 << 15;

// The C channels of an (N, C, H*W) tensor, each a sequence of m = N*H*W values in (n, h, w) order
// cut into blocks of kBatchNormBlock values.
struct Channels {
    index_t n, c, plane;

    index_t m() const { return n * plane; }
    index_t blocks() const { return (m() + kBatchNormBlock - 1) / kBatchNormBlock; }

    // Calls run(offset, len) for the contiguous runs (parts of one H*W plane) of block k of
    // channel ch, in order; offset counts elements from the start of the tensor.
    template <typename Run>
    void for_each_run(index_t ch, index_t k, Run&& run) const {
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
    }
};

// Whole channels to threads (each thread runs every phase of its channels, whose values stay in
// cache between the phases), or blocks (few channels for the threads, or a share that does not
// divide evenly, and channels long enough to split).
bool split_channels(const Channels& g, int threads) {
    return threads > 1 && g.blocks() > 1 && g.c < 4 * threads && g.c % threads != 0;
}

// f(t) for every block t = ch * blocks + k of every channel, blocks split across threads.
template <typename F>
void for_each_block(const Channels& g, int threads, F&& f) {
    const index_t tasks = g.c * g.blocks();
#pragma omp parallel for schedule(static) num_threads(threads)
    for (index_t t = 0; t < tasks; ++t) f(t);
}

template <typename T>
double block_sum(const Channels& g, const T* x, index_t ch, index_t k) {
    double acc[kLanes] = {};
    g.for_each_run(ch, k, [&](index_t offset, index_t len) {
        const T* p = x + offset;
        add_run(acc, len, [p](index_t i) { return static_cast<double>(p[i]); });
    });
    return lanes_total(acc);
}

template <typename T>
double block_squares(const Channels& g, const T* x, index_t ch, index_t k, double centre) {
    double acc[kLanes] = {};
    g.for_each_run(ch, k, [&](index_t offset, index_t len) {
        const T* p = x + offset;
        add_run(acc, len, [p, centre](index_t i) {
            const double d = static_cast<double>(p[i]) - centre;
            return d * d;
        });
    });
    return lanes_total(acc);
}

template <bool Relu, typename T>
void block_normalise(const Channels& g, T* y, const T* x, index_t ch, index_t k, T centre, T scale, T shift) {
    g.for_each_run(ch, k, [&](index_t offset, index_t len) {
        T* out = y + offset;
        const T* in = x + offset;
#pragma omp simd
        for (index_t i = 0; i < len; ++i) {
            const T v = (in[i] - centre) * scale + shift;
            out[i] = Relu ? (v <= T(0) ? T(0) : v) : v;  // relu_forward's rule
        }
    });
}

// Same-size unsigned integer, for selecting the bits of a float without a branch.
template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

// dout, or +0 where the fused ReLU's output is <= 0 (relu_backward's rule: NaN passes). As a mask
// on the bits: a conditional here keeps the compiler from vectorising the sums.
template <bool Gated, typename T>
inline T gradient_in(const T* dout, const T* gate, index_t i) {
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

// sum dy and sum dy * (x - centre) over block k of channel ch.
template <bool Gated, typename T>
TermPair block_gradient_sums(const Channels& g, const T* dout, const T* x, const T* gate, index_t ch, index_t k,
                             T centre) {
    double dy_sum[kLanes] = {}, dy_xc_sum[kLanes] = {};
    const double mu = centre;
    g.for_each_run(ch, k, [&](index_t offset, index_t len) {
        const T *d = dout + offset, *v = x + offset, *r = Gated ? gate + offset : nullptr;
        add_run_pairs(dy_sum, dy_xc_sum, len, [=](index_t i, double& dy_term, double& dy_xc_term) {
            const double dy = gradient_in<Gated>(d, r, i);
            dy_term = dy;
            dy_xc_term = dy * (static_cast<double>(v[i]) - mu);
        });
    });
    return TermPair{lanes_total(dy_sum), lanes_total(dy_xc_sum)};
}

// Per-channel constants of the backward pass, rounded to T:
//   train: dx = ((dy - dy_mean) - (x - centre) * projection) * scale;  inference: dx = dy * scale.
template <typename T>
struct GradientCoefficients {
    T centre, scale, dy_mean, projection;
};

template <bool Gated, bool Train, typename T>
void block_input_gradient(const Channels& g, T* dx, const T* dout, const T* x, const T* gate, index_t ch, index_t k,
                          const GradientCoefficients<T>& q) {
    const T centre = q.centre, scale = q.scale, dy_mean = q.dy_mean, projection = q.projection;
    g.for_each_run(ch, k, [&](index_t offset, index_t len) {
        T* out = dx + offset;
        const T *d = dout + offset, *v = x + offset, *r = Gated ? gate + offset : nullptr;
#pragma omp simd
        for (index_t i = 0; i < len; ++i) {
            const T dy = gradient_in<Gated>(d, r, i);
            if constexpr (Train)
                out[i] = ((dy - dy_mean) - (v[i] - centre) * projection) * scale;
            else
                out[i] = dy * scale;
        }
    });
}

// Inference: the gradient sums and dx in one pass (dx does not depend on the sums).
template <bool Gated, typename T>
TermPair block_inference_gradient(const Channels& g, T* dx, const T* dout, const T* x, const T* gate, index_t ch,
                                  index_t k, T centre, T scale) {
    block_input_gradient<Gated, false>(g, dx, dout, x, gate, ch, k, GradientCoefficients<T>{centre, scale, T(0), T(0)});
    return block_gradient_sums<Gated>(g, dout, x, gate, ch, k, centre);
}

}  // namespace

template <typename T>
void batch_norm2d_forward(T* y, T* mean, T* invstd, T* running_mean, T* running_var, const T* x, const T* gamma,
                          const T* beta, index_t n, index_t c, index_t plane, bool train, double momentum, double eps,
                          bool unbiased, bool relu) {
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
        running_mean[ch] = static_cast<T>(momentum * static_cast<double>(running_mean[ch]) + (1.0 - momentum) * centre);
        running_var[ch] = static_cast<T>(momentum * static_cast<double>(running_var[ch]) + (1.0 - momentum) * batch_var);
    };
    auto normalise = [&](index_t ch, index_t k) {
        const T centre = mean[ch], scale = invstd[ch] * gamma[ch], shift = beta[ch];
        if (relu)
            block_normalise<true>(g, y, x, ch, k, centre, scale, shift);
        else
            block_normalise<false>(g, y, x, ch, k, centre, scale, shift);
    };

    if (!train) {
        for (index_t ch = 0; ch < c; ++ch) {
            mean[ch] = running_mean[ch];
            invstd[ch] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps));
        }
        for_each_block(g, threads, [&](index_t t) { normalise(t / blocks, t % blocks); });
        return;
    }
    if (!split_channels(g, threads)) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (index_t ch = 0; ch < c; ++ch) {
            double sum = 0.0, squares = 0.0;
            for (index_t k = 0; k < blocks; ++k) sum += block_sum(g, x, ch, k);
            const double centre = sum / static_cast<double>(m);
            for (index_t k = 0; k < blocks; ++k) squares += block_squares(g, x, ch, k, centre);
            set_statistics(ch, centre, squares);
            for (index_t k = 0; k < blocks; ++k) normalise(ch, k);
        }
        return;
    }
    // The same sums, block by block across threads, then added in block order.
    std::vector<double> partial(static_cast<size_t>(c * blocks)), centre(static_cast<size_t>(c));
    for_each_block(g, threads, [&](index_t t) { partial[t] = block_sum(g, x, t / blocks, t % blocks); });
    for (index_t ch = 0; ch < c; ++ch) {
        double sum = 0.0;
        for (index_t k = 0; k < blocks; ++k) sum += partial[ch * blocks + k];
        centre[ch] = sum / static_cast<double>(m);
    }
    for_each_block(g, threads, [&](index_t t) {
        partial[t] = block_squares(g, x, t / blocks, t % blocks, centre[t / blocks]);
    });
    for (index_t ch = 0; ch < c; ++ch) {
        double squares = 0.0;
        for (index_t k = 0; k < blocks; ++k) squares += partial[ch * blocks + k];
        set_statistics(ch, centre[ch], squares);
    }
    for_each_block(g, threads, [&](index_t t) { normalise(t / blocks, t % blocks); });
}

namespace {

template <bool Gated, typename T>
void backward(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma, const T* mean, const T* invstd,
              const T* gate, const Channels& g, bool train) {
    const index_t c = g.c, blocks = g.blocks(), m = g.m();
    const int threads = threads_for(g.n * c * g.plane, kElementGrain);

    // dbeta, dgamma and the constants of dx for channel ch from its two sums.
    auto finish = [&](index_t ch, TermPair sums) {
        const double istd = static_cast<double>(invstd[ch]);
        dbeta[ch] = static_cast<T>(sums.first);
        dgamma[ch] = m > 0 ? static_cast<T>(sums.second * istd) : T(0);  // an empty sum, even if invstd is NaN
        GradientCoefficients<T> q{mean[ch], gamma[ch] * invstd[ch], T(0), T(0)};
        if (m > 0) {
            q.dy_mean = static_cast<T>(sums.first / static_cast<double>(m));
            q.projection = static_cast<T>(sums.second * istd * istd / static_cast<double>(m));
        }
        return q;
    };
    auto add = [](TermPair& total, TermPair part) {
        total.first += part.first;
        total.second += part.second;
    };

    if (!train) {  // one pass: dx = dy * gamma * invstd, and the sums beside it
        if (!split_channels(g, threads)) {
#pragma omp parallel for schedule(static) num_threads(threads)
            for (index_t ch = 0; ch < c; ++ch) {
                TermPair sums{0.0, 0.0};
                const T scale = gamma[ch] * invstd[ch];
                for (index_t k = 0; k < blocks; ++k)
                    add(sums, block_inference_gradient<Gated>(g, dx, dout, x, gate, ch, k, mean[ch], scale));
                finish(ch, sums);
            }
            return;
        }
        std::vector<TermPair> partial(static_cast<size_t>(c * blocks));
        for_each_block(g, threads, [&](index_t t) {
            const index_t ch = t / blocks;
            partial[t] = block_inference_gradient<Gated>(g, dx, dout, x, gate, ch, t % blocks, mean[ch],
                                                         T(gamma[ch] * invstd[ch]));
        });
        for (index_t ch = 0; ch < c; ++ch) {
            TermPair sums{0.0, 0.0};
            for (index_t k = 0; k < blocks; ++k) add(sums, partial[ch * blocks + k]);
            finish(ch, sums);
        }
        return;
    }
    if (!split_channels(g, threads)) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (index_t ch = 0; ch < c; ++ch) {
            TermPair sums{0.0, 0.0};
            for (index_t k = 0; k < blocks; ++k) add(sums, block_gradient_sums<Gated>(g, dout, x, gate, ch, k, mean[ch]));
            const GradientCoefficients<T> q = finish(ch, sums);
            for (index_t k = 0; k < blocks; ++k) block_input_gradient<Gated, true>(g, dx, dout, x, gate, ch, k, q);
        }
        return;
    }
    std::vector<TermPair> partial(static_cast<size_t>(c * blocks));
    std::vector<GradientCoefficients<T>> coefficients(static_cast<size_t>(c));
    for_each_block(g, threads, [&](index_t t) {
        partial[t] = block_gradient_sums<Gated>(g, dout, x, gate, t / blocks, t % blocks, mean[t / blocks]);
    });
    for (index_t ch = 0; ch < c; ++ch) {
        TermPair sums{0.0, 0.0};
        for (index_t k = 0; k < blocks; ++k) add(sums, partial[ch * blocks + k]);
        coefficients[ch] = finish(ch, sums);
    }
    for_each_block(g, threads, [&](index_t t) {
        block_input_gradient<Gated, true>(g, dx, dout, x, gate, t / blocks, t % blocks, coefficients[t / blocks]);
    });
}

}  // namespace

template <typename T>
void batch_norm2d_backward(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma, const T* mean,
                           const T* invstd, const T* relu_output, index_t n, index_t c, index_t plane, bool train) {
    const Channels g{n, c, plane};
    if (relu_output)
        backward<true>(dx, dgamma, dbeta, dout, x, gamma, mean, invstd, relu_output, g, train);
    else
        backward<false>(dx, dgamma, dbeta, dout, x, gamma, mean, invstd, relu_output, g, train);
}

template <typename T>
void batch_norm2d_forward_reference(T* y, T* mean, T* invstd, T* running_mean, T* running_var, const T* x,
                                    const T* gamma, const T* beta, index_t n, index_t c, index_t plane, bool train,
                                    double momentum, double eps, bool unbiased, bool relu) {
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
                for (index_t i = 0; i < plane; ++i) squares += (x[at(image, ch, i)] - mu) * (x[at(image, ch, i)] - mu);
            mean[ch] = static_cast<T>(mu);
            invstd[ch] = static_cast<T>(1.0 / std::sqrt(squares / static_cast<double>(m) + eps));
            if (m > 0) {
                const double batch_var = squares / static_cast<double>(unbiased ? m - 1 : m);
                running_mean[ch] = static_cast<T>(momentum * running_mean[ch] + (1.0 - momentum) * mu);
                running_var[ch] = static_cast<T>(momentum * running_var[ch] + (1.0 - momentum) * batch_var);
            }
        } else {
            mean[ch] = running_mean[ch];
            invstd[ch] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps));
        }
        for (index_t image = 0; image < n; ++image)
            for (index_t i = 0; i < plane; ++i) {
                const double xhat = (static_cast<double>(x[at(image, ch, i)]) - mean[ch]) * invstd[ch];
                const T v = static_cast<T>(xhat * gamma[ch] + beta[ch]);
                y[at(image, ch, i)] = relu && v <= T(0) ? T(0) : v;
            }
    }
}

template <typename T>
void batch_norm2d_backward_reference(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma,
                                     const T* mean, const T* invstd, const T* relu_output, index_t n, index_t c,
                                     index_t plane, bool train) {
    const double m = static_cast<double>(n * plane);
    auto at = [&](index_t image, index_t ch, index_t i) { return (image * c + ch) * plane + i; };
    auto dy_at = [&](index_t j) { return relu_output && relu_output[j] <= T(0) ? 0.0 : static_cast<double>(dout[j]); };
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
                dx[j] = static_cast<T>(train ? scale / m * (m * dy_at(j) - dy_sum - xhat * dy_xhat_sum) : dy_at(j) * scale);
            }
    }
}

#define TINYCONV_INSTANTIATE(T)                                                                                 \
    template void batch_norm2d_forward<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*, index_t, index_t,   \
                                          index_t, bool, double, double, bool, bool);                           \
    template void batch_norm2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,        \
                                           const T*, index_t, index_t, index_t, bool);                          \
    template void batch_norm2d_forward_reference<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*, index_t,  \
                                                    index_t, index_t, bool, double, double, bool, bool);        \
    template void batch_norm2d_backward_reference<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                                     const T*, const T*, index_t, index_t, index_t, bool);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
