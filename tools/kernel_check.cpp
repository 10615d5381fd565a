// The C++ kernels against their plain-loop oracles, without Python: built from csrc/ (all of it but
// module.cpp) by tools/cross_check.sh, for this machine and cross-compiled for AArch64 (run under
// qemu-aarch64). Exit status 0 when every check holds, 1 otherwise; one line per failure.
//
// What is compared, at every GEMM level the CPU runs (gemm_set_isa), with 1 and 3 threads:
// - gemm, both orientations of A and B, several alpha and beta, against the definition summed in k
//   order, each product added as the level adds it: one fused multiply-add (std::fma) per term on
//   the levels that fuse (neon; generic on AArch64, where the compiler contracts the kernel's
//   c + a * b; avx2 and avx512), else a rounded product then a rounded sum. Bitwise when there is
//   one k block (k <= KC = 256) and beta == 0: the same operations in the same order. Otherwise
//   (several k blocks are summed per block; beta * c + alpha * sum may be fused either way round)
//   within the rounding-error bound (k + 2) eps sum(|alpha a b|) + |beta c|. Also against
//   csrc's gemm_reference within that bound (the compiler decides how that loop rounds: GCC for
//   AArch64 fuses it in some layouts and not in others).
// - the neon level against the generic level: bitwise, every shape (the same sums of the same
//   products in the same order, fused in both); also for gemm_offsets and gemm_dot.
// - gemm_offsets against gemm on the materialised B: bitwise (its documented contract).
// - gemm_dot against a double-precision loop: within the bound above.
// - convolution forward and backward, max / average / global average pooling and batch
//   normalisation (forward, backward) against their reference loops: max pooling bitwise (values
//   and argmax), the others within a relative tolerance (fp64 1e-10, fp32 1e-4, as the Python
//   tests).
// Built with -ffp-contract=off, so that the unfused sums here stay unfused.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "batchnorm.h"
#include "conv.h"
#include "gemm.h"
#include "parallel.h"
#include "pool.h"

using namespace tinyconv;

namespace {

int g_failures = 0, g_checks = 0;
double g_worst_ratio = 0;  // largest |error| / bound seen by a tolerance check

void fail(const std::string& what) {
    if (++g_failures <= 400) std::printf("FAIL %s\n", what.c_str());
}

template <typename T>
const char* type_name() {
    return sizeof(T) == 4 ? "float32" : "float64";
}

template <typename T>
std::vector<T> random_values(std::mt19937_64& rng, index_t size) {
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<T> out(static_cast<size_t>(size));
    for (auto& v : out) v = static_cast<T>(dist(rng));
    return out;
}

template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename T>
void check_bitwise(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
    ++g_checks;
    if (bitwise_equal(got, want)) return;
    size_t i = 0;
    while (i < got.size() && std::memcmp(&got[i], &want[i], sizeof(T)) == 0) ++i;
    char buf[160];
    std::snprintf(buf, sizeof buf, " (bitwise): first difference at %zu: %.17g vs %.17g", i,
                  i < got.size() ? double(got[i]) : 0.0, i < want.size() ? double(want[i]) : 0.0);
    fail(what + buf);
}

// |got - want| <= bound[i] for every i.
template <typename T>
void check_bound(const std::vector<T>& got, const std::vector<T>& want,
                 const std::vector<double>& bound, const std::string& what) {
    ++g_checks;
    for (size_t i = 0; i < got.size(); ++i) {
        const double err = std::fabs(double(got[i]) - double(want[i]));
        if (!(err <= bound[i])) {
            char buf[160];
            std::snprintf(buf, sizeof buf, ": element %zu: %.17g vs %.17g (bound %.3g)", i,
                          double(got[i]), double(want[i]), bound[i]);
            return fail(what + buf);
        }
        if (bound[i] > 0 && err / bound[i] > g_worst_ratio) g_worst_ratio = err / bound[i];
    }
}

// Relative tolerance of the Python tests: fp64 1e-10, fp32 1e-4, scaled by the largest |want|.
template <typename T>
void check_close(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
    const double tol = sizeof(T) == 4 ? 1e-4 : 1e-10;
    double scale = 1.0;
    for (T v : want) scale = std::fmax(scale, std::fabs(double(v)));
    check_bound(got, want, std::vector<double>(want.size(), tol * scale), what);
}

// Whether a level's GEMM adds each product with a fused multiply-add (see the file comment).
bool level_fuses(const std::string& isa) {
#if defined(__aarch64__)
    return !isa.empty();
#else
    return isa != "generic";
#endif
}

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    const std::string list = gemm_available_isas();
    size_t start = 0;
    while (start <= list.size()) {
        const size_t comma = list.find(',', start);
        const size_t end = comma == std::string::npos ? list.size() : comma;
        if (end > start) out.push_back(list.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

struct GemmShape {
    index_t m, n, k;
};

// Shapes around the tiles (MR = 8; NR = 12 / 6 for neon floats / doubles, 8 / 4 generic on
// AArch64), the k blocks (KC = 256), the M blocks (MC = 128) and the N panels (NC = 128 NR:
// 1536 neon floats), and the small-product path (m n k <= 2^15 with contiguous B rows).
const GemmShape kGemmShapes[] = {
    {1, 1, 1},     {1, 12, 3},    {8, 12, 1},     {8, 12, 256},  {7, 11, 5},    {9, 13, 17},
    {16, 24, 33},  {17, 25, 257}, {3, 100, 40},   {100, 3, 40},  {33, 37, 64},  {64, 64, 64},
    {31, 47, 255}, {15, 6, 300},  {130, 70, 257}, {129, 13, 31}, {200, 9, 520}, {24, 1600, 12},
    {12, 800, 20}, {5, 5, 1000},  {97, 61, 129},  {40, 36, 100}, {2, 1537, 3},  {160, 25, 11},
};

template <typename T>
void gemm_case(const GemmShape& s, bool ta, bool tb, T alpha, T beta, std::mt19937_64& rng,
               const std::vector<std::string>& isas) {
    const index_t m = s.m, n = s.n, k = s.k;
    const index_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2, ldc = n + 3;  // strides > widths
    const std::vector<T> a = random_values<T>(rng, (ta ? k : m) * lda);
    const std::vector<T> b = random_values<T>(rng, (tb ? n : k) * ldb);
    const std::vector<T> c0 = random_values<T>(rng, m * ldc);
    std::vector<T> reference = c0;
    gemm_reference<T>(reference.data(), ldc, a.data(), lda, ta, b.data(), ldb, tb, m, n, k, alpha,
                      beta);
    // The k-order sums, fused and not (used bitwise when beta == 0), and the error bound per
    // element: (k + 2) eps (|alpha| sum_p |a b| + |beta c|).
    std::vector<T> fused = c0, unfused = c0;
    std::vector<double> bound(c0.size(), 0.0);
    const double eps = std::numeric_limits<T>::epsilon();
    for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j) {
            T sum_fused = 0, sum_unfused = 0;
            double mag = 0;
            for (index_t p = 0; p < k; ++p) {
                const T av = ta ? a[p * lda + i] : a[i * lda + p],
                        bv = tb ? b[j * ldb + p] : b[p * ldb + j];
                sum_fused = std::fma(av, bv, sum_fused);
                const T product = av * bv;
                sum_unfused = sum_unfused + product;
                mag += std::fabs(double(av) * double(bv));
            }
            const index_t at = i * ldc + j;
            fused[at] = alpha * sum_fused;
            unfused[at] = alpha * sum_unfused;
            bound[at] = double(k + 2) * eps *
                        (std::fabs(double(alpha)) * mag + std::fabs(double(beta) * double(c0[at])));
        }
    char label[200];
    std::snprintf(label, sizeof label,
                  "gemm %s m=%lld n=%lld k=%lld trans_a=%d trans_b=%d alpha=%g beta=%g",
                  type_name<T>(), (long long)m, (long long)n, (long long)k, ta, tb, double(alpha),
                  double(beta));
    std::vector<T> generic_result;
    for (const std::string& isa : isas) {
        gemm_set_isa(isa);
        for (int threads : {1, 3}) {
            std::vector<T> got = c0;
            gemm<T>(got.data(), ldc, a.data(), lda, ta, b.data(), ldb, tb, m, n, k, alpha, beta,
                    threads);
            const std::string what =
                std::string(label) + " isa=" + isa + " threads=" + std::to_string(threads);
            if (k <= 256 && beta == T(0))
                check_bitwise(
                    got, level_fuses(isa) ? fused : unfused,
                    what + (level_fuses(isa) ? " vs fused k-order sum" : " vs k-order sum"));
            check_bound(got, reference, bound, what + " vs gemm_reference");
            if (isa == "generic" && threads == 1) generic_result = got;
        }
    }
    // neon against generic: the levels come best first, so generic (last) ran after neon. Rerun
    // neon now that generic's result is known.
    for (const std::string& isa : isas) {
        if (isa != "neon") continue;
        gemm_set_isa(isa);
        std::vector<T> got = c0;
        gemm<T>(got.data(), ldc, a.data(), lda, ta, b.data(), ldb, tb, m, n, k, alpha, beta, 2);
        check_bitwise(got, generic_result, std::string(label) + " neon vs generic");
    }
}

// gemm_offsets against gemm on the materialised B; k rows of B at arbitrary offsets into `base`.
template <typename T>
void gemm_offsets_case(index_t m, index_t n, index_t k, std::mt19937_64& rng,
                       const std::vector<std::string>& isas) {
    const index_t base_size = 4 * n + 3 * k + 50;
    const std::vector<T> base = random_values<T>(rng, base_size);
    std::uniform_int_distribution<index_t> offset(0, base_size - n);
    std::vector<index_t> offsets(static_cast<size_t>(k));
    for (auto& o : offsets) o = offset(rng);
    std::vector<T> b(static_cast<size_t>(k * n));
    for (index_t p = 0; p < k; ++p)
        for (index_t j = 0; j < n; ++j) b[p * n + j] = base[offsets[p] + j];
    const std::vector<T> a = random_values<T>(rng, m * k);
    const std::vector<T> c0 = random_values<T>(rng, m * n);
    char label[120];
    std::snprintf(label, sizeof label, "gemm_offsets %s m=%lld n=%lld k=%lld", type_name<T>(),
                  (long long)m, (long long)n, (long long)k);
    std::vector<T> generic_result, neon_result;
    for (const std::string& isa : isas) {
        gemm_set_isa(isa);
        std::vector<T> want = c0, got = c0;
        gemm<T>(want.data(), n, a.data(), k, false, b.data(), n, false, m, n, k, T(1), T(1), 2);
        gemm_offsets<T>(got.data(), n, a.data(), k, false, base.data(), offsets.data(), m, n, k,
                        T(1), T(1), 2, nullptr);
        check_bitwise(got, want, std::string(label) + " isa=" + isa + " vs gemm");
        if (isa == "generic") generic_result = got;
        if (isa == "neon") neon_result = got;
    }
    if (!neon_result.empty())
        check_bitwise(neon_result, generic_result, std::string(label) + " neon vs generic");
}

// gemm_dot: C = beta C + sum_s A_s B_s^T, k a multiple of kDotMultiple.
template <typename T>
void gemm_dot_case(index_t m, index_t n, index_t k, int segments, T beta, std::mt19937_64& rng,
                   const std::vector<std::string>& isas) {
    const index_t lda = k + 4;
    std::vector<std::vector<T>> a_data, base_data;
    std::vector<const T*> a_ptrs, base_ptrs;
    const index_t base_size = n * k + 40;
    std::uniform_int_distribution<index_t> offset(0, base_size - k);
    std::vector<index_t> offsets(static_cast<size_t>(n));
    for (auto& o : offsets) o = offset(rng);
    for (int s = 0; s < segments; ++s) {
        a_data.push_back(random_values<T>(rng, m * lda));
        base_data.push_back(random_values<T>(rng, base_size));
    }
    for (int s = 0; s < segments; ++s) {
        a_ptrs.push_back(a_data[s].data());
        base_ptrs.push_back(base_data[s].data());
    }
    const std::vector<T> c0 = random_values<T>(rng, m * n);
    std::vector<T> want(c0.size());
    std::vector<double> bound(c0.size());
    const double eps = std::numeric_limits<T>::epsilon();
    for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j) {
            double sum = 0, mag = 0;
            for (int s = 0; s < segments; ++s)
                for (index_t p = 0; p < k; ++p) {
                    const double prod =
                        double(a_data[s][i * lda + p]) * double(base_data[s][offsets[j] + p]);
                    sum += prod;
                    mag += std::fabs(prod);
                }
            want[i * n + j] = static_cast<T>(double(beta) * double(c0[i * n + j]) + sum);
            mag += std::fabs(double(beta) * double(c0[i * n + j]));
            bound[i * n + j] = double(segments * k + 2) * eps * mag;
        }
    char label[120];
    std::snprintf(label, sizeof label, "gemm_dot %s m=%lld n=%lld k=%lld segments=%d beta=%g",
                  type_name<T>(), (long long)m, (long long)n, (long long)k, segments, double(beta));
    std::vector<T> generic_result, neon_result;
    for (const std::string& isa : isas) {
        gemm_set_isa(isa);
        std::vector<T> got = c0;
        gemm_dot<T>(got.data(), n, a_ptrs.data(), lda, base_ptrs.data(), offsets.data(), segments,
                    m, n, k, beta, 3);
        check_bound(got, want, bound, std::string(label) + " isa=" + isa + " vs double loop");
        if (isa == "generic") generic_result = got;
        if (isa == "neon") neon_result = got;
    }
    if (!neon_result.empty())
        check_bitwise(neon_result, generic_result, std::string(label) + " neon vs generic");
}

struct ConvShape {
    index_t n, c, h, w, fn, fh, fw, sh, sw, ph, pw;
};

// A flat stride-1 convolution (channels >= 8 and >= 16, a partial block of 16 images), a strided
// one through im2col + GEMM, a 1x1 filter, a rectangular one.
const ConvShape kConvShapes[] = {
    {17, 8, 6, 6, 16, 3, 3, 1, 1, 1, 1},   {3, 16, 9, 9, 8, 3, 3, 2, 2, 1, 1},
    {2, 3, 5, 5, 4, 1, 1, 1, 1, 0, 0},     {4, 5, 12, 10, 9, 3, 2, 1, 2, 1, 0},
    {2, 20, 14, 14, 24, 5, 5, 1, 1, 2, 2},
};

template <typename T>
void conv_case(const ConvShape& s, std::mt19937_64& rng, const std::string& isa) {
    const Window2d g{s.h, s.w, s.fh, s.fw, s.sh, s.sw, s.ph, s.pw};
    const index_t x_size = s.n * s.c * s.h * s.w, w_size = s.fn * s.c * s.fh * s.fw;
    const index_t y_size = s.n * s.fn * g.oh() * g.ow();
    const std::vector<T> x = random_values<T>(rng, x_size), w = random_values<T>(rng, w_size);
    const std::vector<T> b = random_values<T>(rng, s.fn), dout = random_values<T>(rng, y_size);
    std::vector<T> y(y_size), y_ref(y_size);
    conv2d_forward<T>(y.data(), x.data(), w.data(), b.data(), s.n, s.c, s.fn, g);
    conv2d_forward_reference<T>(y_ref.data(), x.data(), w.data(), b.data(), s.n, s.c, s.fn, g);
    char label[160];
    std::snprintf(
        label, sizeof label,
        "conv %s n=%lld c=%lld %lldx%lld fn=%lld %lldx%lld stride %lld,%lld pad %lld,%lld isa=%s",
        type_name<T>(), (long long)s.n, (long long)s.c, (long long)s.h, (long long)s.w,
        (long long)s.fn, (long long)s.fh, (long long)s.fw, (long long)s.sh, (long long)s.sw,
        (long long)s.ph, (long long)s.pw, isa.c_str());
    check_close(y, y_ref, std::string(label) + " forward");
    std::vector<T> dx(x_size), dw(w_size), db(s.fn), dx_ref(x_size), dw_ref(w_size), db_ref(s.fn);
    conv2d_backward<T>(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), s.n, s.c,
                       s.fn, g);
    conv2d_backward_reference<T>(dx_ref.data(), dw_ref.data(), db_ref.data(), dout.data(), x.data(),
                                 w.data(), s.n, s.c, s.fn, g);
    check_close(dx, dx_ref, std::string(label) + " dx");
    check_close(dw, dw_ref, std::string(label) + " dW");
    check_close(db, db_ref, std::string(label) + " db");
}

// Pooling and batch normalisation: their vectorised loops (lanes.h's fixed-order sums, the
// element-wise passes) against the reference loops.
template <typename T>
void pool_and_batchnorm_cases(std::mt19937_64& rng) {
    const index_t n = 3, c = 5, h = 13, w = 11;
    const std::vector<T> x = random_values<T>(rng, n * c * h * w);
    for (const Window2d& g : {Window2d{h, w, 2, 2, 2, 2, 0, 0}, Window2d{h, w, 3, 3, 2, 1, 1, 1}}) {
        const index_t y_size = n * c * g.oh() * g.ow();
        std::vector<T> y(y_size), y_ref(y_size);
        std::vector<std::int64_t> arg(y_size), arg_ref(y_size);
        max_pool2d_forward<T>(y.data(), arg.data(), x.data(), n, c, g);
        max_pool2d_forward_reference<T>(y_ref.data(), arg_ref.data(), x.data(), n, c, g);
        const std::string label = std::string("pool ") + type_name<T>() + " window " +
                                  std::to_string(g.fh) + " stride " + std::to_string(g.sh) + "," +
                                  std::to_string(g.sw);
        check_bitwise(y, y_ref, label + " max values");
        check_bitwise(arg, arg_ref, label + " max argmax");
        avg_pool2d_forward<T>(y.data(), x.data(), n, c, g);
        avg_pool2d_forward_reference<T>(y_ref.data(), x.data(), n, c, g);
        check_close(y, y_ref, label + " average");
    }
    std::vector<T> gy(n * c), gy_ref(n * c);
    global_avg_pool2d_forward<T>(gy.data(), x.data(), n * c, h * w);
    global_avg_pool2d_forward_reference<T>(gy_ref.data(), x.data(), n * c, h * w);
    check_close(gy, gy_ref, std::string("global average pool ") + type_name<T>());

    // Batch normalisation over planes longer and shorter than the 8 lanes, ReLU fused and not.
    for (index_t plane : {index_t(143), index_t(5)}) {
        const index_t size = n * c * plane;
        const std::vector<T> xb = random_values<T>(rng, size), dout = random_values<T>(rng, size);
        const std::vector<T> gamma = random_values<T>(rng, c), beta = random_values<T>(rng, c);
        for (bool relu : {false, true}) {
            std::vector<T> y(size), y_ref(size), mean(c), mean_ref(c), invstd(c), invstd_ref(c);
            std::vector<T> rm(c, T(0.1)), rv(c, T(0.9)), rm_ref = rm, rv_ref = rv;
            batch_norm2d_forward<T>(y.data(), mean.data(), invstd.data(), rm.data(), rv.data(),
                                    xb.data(), gamma.data(), beta.data(), n, c, plane, true, 0.1,
                                    1e-5, true, relu);
            batch_norm2d_forward_reference<T>(
                y_ref.data(), mean_ref.data(), invstd_ref.data(), rm_ref.data(), rv_ref.data(),
                xb.data(), gamma.data(), beta.data(), n, c, plane, true, 0.1, 1e-5, true, relu);
            const std::string label = std::string("batchnorm ") + type_name<T>() + " plane " +
                                      std::to_string(plane) + (relu ? " relu" : "");
            check_close(y, y_ref, label + " y");
            check_close(mean, mean_ref, label + " mean");
            check_close(invstd, invstd_ref, label + " invstd");
            check_close(rv, rv_ref, label + " running_var");
            std::vector<T> dx(size), dx_ref(size), dg(c), dg_ref(c), dbt(c), dbt_ref(c);
            const T* relu_out = relu ? y.data() : nullptr;
            batch_norm2d_backward<T>(dx.data(), dg.data(), dbt.data(), dout.data(), xb.data(),
                                     gamma.data(), mean.data(), invstd.data(), relu_out, n, c,
                                     plane, true);
            batch_norm2d_backward_reference<T>(dx_ref.data(), dg_ref.data(), dbt_ref.data(),
                                               dout.data(), xb.data(), gamma.data(), mean.data(),
                                               invstd.data(), relu_out, n, c, plane, true);
            check_close(dx, dx_ref, label + " dx");
            check_close(dg, dg_ref, label + " dgamma");
            check_close(dbt, dbt_ref, label + " dbeta");
        }
    }
}

template <typename T>
void run_all(const std::vector<std::string>& isas) {
    std::mt19937_64 rng(sizeof(T));
    const T alphas[] = {T(1), T(0.5), T(-1.5), T(1)}, betas[] = {T(0), T(0), T(0.75), T(1)};
    for (const GemmShape& s : kGemmShapes) {
        // Large shapes (slow under qemu) with two of the pairs: one bitwise, one with beta.
        const int step = s.m * s.n * s.k <= 100000 ? 1 : 2;
        for (int t = 0; t < 4; ++t)
            for (int ab = 0; ab < 4; ab += step)
                gemm_case<T>(s, t & 1, t & 2, alphas[ab], betas[ab], rng, isas);
    }
    for (const GemmShape& s : {GemmShape{8, 12, 9}, GemmShape{19, 37, 300}, GemmShape{64, 100, 27},
                               GemmShape{3, 2000, 9}})
        gemm_offsets_case<T>(s.m, s.n, s.k, rng, isas);
    for (const GemmShape& s :
         {GemmShape{4, 5, 16}, GemmShape{9, 11, 48}, GemmShape{16, 27, 96}, GemmShape{1, 3, 16}})
        for (int segments : {1, 3, 16})
            for (T beta : {T(0), T(1)}) gemm_dot_case<T>(s.m, s.n, s.k, segments, beta, rng, isas);
    for (const std::string& isa : isas) {
        gemm_set_isa(isa);
        for (const ConvShape& s : kConvShapes) conv_case<T>(s, rng, isa);
    }
    pool_and_batchnorm_cases<T>(rng);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "--levels") {  // the levels this build offers here
        std::printf("%s\n", gemm_available_isas().c_str());
        return 0;
    }
    const std::vector<std::string> isas = available_isas();
    std::printf("kernel_check: GEMM levels %s (in use: %s), %d threads\n",
                gemm_available_isas().c_str(), gemm_isa().c_str(), num_threads());
    set_num_threads(3);
    run_all<float>(isas);
    run_all<double>(isas);
    std::printf(
        "kernel_check: %d checks, %d failed; worst error / bound of the tolerance checks: %.3g\n",
        g_checks, g_failures, g_worst_ratio);
    return g_failures == 0 ? 0 : 1;
}
