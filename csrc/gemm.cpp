#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <vector>

#if defined(_MSC_VER) && !defined(__clang__) && \
    (defined(TINYCONV_HAVE_AVX2) || defined(TINYCONV_HAVE_AVX512))
#include <intrin.h>  // __cpuidex, _xgetbv: MSVC's way to ask the CPU for its levels
#endif

namespace tinyconv {

// Each level's kernels, compiled from gemm_kernel.inc with that level's flags.
#define TINYCONV_DECLARE_ISA(NS)                                                                 \
    namespace NS {                                                                               \
    template <typename T>                                                                        \
    index_t workspace_size(index_t m, index_t n, index_t k);                                     \
    template <typename T>                                                                        \
    void gemm_packed(T* c, index_t ldc, const T* a, index_t rsa, index_t csa, const T* b,        \
                     index_t rsb, index_t csb, index_t m, index_t n, index_t k, T alpha, T beta, \
                     int nthreads, T* work);                                                     \
    template <typename T>                                                                        \
    void gemm_offsets_packed(T* c, index_t ldc, const T* a, index_t rsa, index_t csa,            \
                             const T* base, const index_t* offsets, index_t m, index_t n,        \
                             index_t k, T alpha, T beta, int nthreads, T* work);                 \
    template <typename T>                                                                        \
    void gemm_dot(T* c, index_t ldc, const T* const* a, index_t lda, const T* const* base,       \
                  const index_t* offsets, int segments, index_t m, index_t n, index_t k, T beta, \
                  int nthreads);                                                                 \
    }
TINYCONV_DECLARE_ISA(isa_generic)
// A level exists only for its own architecture: a macOS universal2 build compiles every file
// once for x86_64 and once for arm64, and the other architecture's level files are empty there.
#if defined(TINYCONV_HAVE_AVX2) && (defined(__x86_64__) || defined(_M_X64))
#define TINYCONV_GEMM_AVX2
TINYCONV_DECLARE_ISA(isa_avx2)
#endif
#if defined(TINYCONV_HAVE_AVX512) && (defined(__x86_64__) || defined(_M_X64))
#define TINYCONV_GEMM_AVX512
TINYCONV_DECLARE_ISA(isa_avx512)
#endif
#if defined(TINYCONV_HAVE_NEON) && (defined(__aarch64__) || defined(_M_ARM64))
#define TINYCONV_GEMM_NEON
TINYCONV_DECLARE_ISA(isa_neon)
#endif
#undef TINYCONV_DECLARE_ISA

namespace {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2, neon = 3 };

// Every level, best first.
constexpr Isa kAllIsas[] = {Isa::avx512, Isa::avx2, Isa::neon, Isa::generic};

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512:
            return "avx512";
        case Isa::avx2:
            return "avx2";
        case Isa::neon:
            return "neon";
        default:
            return "generic";
    }
}

#if defined(_MSC_VER) && !defined(__clang__) && \
    (defined(TINYCONV_GEMM_AVX2) || defined(TINYCONV_GEMM_AVX512))
// MSVC has no __builtin_cpu_supports: CPUID says what the CPU has, XGETBV whether the operating
// system saves the vector registers (AVX state: XCR0 bits 1-2; AVX-512 also bits 5-7).
bool msvc_cpu_runs(Isa isa) {
    int regs[4];
    __cpuidex(regs, 1, 0);
    const bool osxsave = regs[2] & (1 << 27), avx = regs[2] & (1 << 28), fma = regs[2] & (1 << 12);
    if (!osxsave || !avx || !fma) return false;
    const unsigned long long xcr0 = _xgetbv(0);
    if ((xcr0 & 0x6) != 0x6) return false;
    __cpuidex(regs, 7, 0);
    const unsigned ebx = static_cast<unsigned>(regs[1]);
    const bool avx2 = (ebx & (1u << 5)) != 0;
    if (isa == Isa::avx2) return avx2;
    const bool avx512 =
        (ebx & (1u << 16)) && (ebx & (1u << 17)) && (ebx & (1u << 30)) && (ebx & (1u << 31));
    return isa == Isa::avx512 && avx2 && avx512 && (xcr0 & 0xe6) == 0xe6;
}
#endif

// Whether this CPU runs a level. Nothing compiled with a level's flags may run before this says
// yes: the compiler is free to use that level's instructions anywhere in its translation unit,
// even in plain integer arithmetic (clang turns workspace_size's min/max into AVX-512 vpminsq).
bool cpu_runs(Isa isa) {
    switch (isa) {
        case Isa::generic:
            return true;
#if defined(TINYCONV_GEMM_AVX2) && (defined(__GNUC__) || defined(__clang__))
        case Isa::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#elif defined(TINYCONV_GEMM_AVX2) && defined(_MSC_VER)
        case Isa::avx2:
            return msvc_cpu_runs(isa);
#endif
#if defined(TINYCONV_GEMM_AVX512) && (defined(__GNUC__) || defined(__clang__))
        case Isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#elif defined(TINYCONV_GEMM_AVX512) && defined(_MSC_VER)
        case Isa::avx512:
            return msvc_cpu_runs(isa);
#endif
#ifdef TINYCONV_GEMM_NEON
        // Advanced SIMD is part of the AArch64 base architecture (every arm64 Linux, macOS and
        // Windows system has it): the level needs no flags and no check.
        case Isa::neon:
            return true;
#endif
        default:
            return false;
    }
}

bool parse_isa(const std::string& name, Isa& out) {
    for (Isa isa : kAllIsas) {
        if (name == isa_name(isa)) {
            out = isa;
            return true;
        }
    }
    return false;
}

Isa best_isa() {
    for (Isa isa : kAllIsas) {
        if (cpu_runs(isa)) return isa;
    }
    return Isa::generic;
}

// TINYCONV_ISA=avx2 (say) forces a level; an unknown or unsupported name falls back to the best.
Isa initial_isa() {
    Isa chosen;
    if (const char* env = std::getenv("TINYCONV_ISA")) {
        if (parse_isa(env, chosen) && cpu_runs(chosen)) return chosen;
    }
    return best_isa();
}

std::atomic<int> g_isa{static_cast<int>(initial_isa())};

// One level's entry points.
template <typename T>
struct Kernels {
    index_t (*workspace_size)(index_t m, index_t n, index_t k);
    void (*gemm_packed)(T* c, index_t ldc, const T* a, index_t rsa, index_t csa, const T* b,
                        index_t rsb, index_t csb, index_t m, index_t n, index_t k, T alpha, T beta,
                        int nthreads, T* work);
    void (*gemm_offsets_packed)(T* c, index_t ldc, const T* a, index_t rsa, index_t csa,
                                const T* base, const index_t* offsets, index_t m, index_t n,
                                index_t k, T alpha, T beta, int nthreads, T* work);
    void (*gemm_dot)(T* c, index_t ldc, const T* const* a, index_t lda, const T* const* base,
                     const index_t* offsets, int segments, index_t m, index_t n, index_t k, T beta,
                     int nthreads);
};

template <typename T>
Kernels<T> kernels_for(Isa isa) {
#define TINYCONV_KERNELS(NS)                                                                       \
    Kernels<T> {                                                                                   \
        &NS::workspace_size<T>, &NS::gemm_packed<T>, &NS::gemm_offsets_packed<T>, &NS::gemm_dot<T> \
    }
    switch (isa) {
#ifdef TINYCONV_GEMM_AVX512
        case Isa::avx512:
            return TINYCONV_KERNELS(isa_avx512);
#endif
#ifdef TINYCONV_GEMM_AVX2
        case Isa::avx2:
            return TINYCONV_KERNELS(isa_avx2);
#endif
#ifdef TINYCONV_GEMM_NEON
        case Isa::neon:
            return TINYCONV_KERNELS(isa_neon);
#endif
        default:
            return TINYCONV_KERNELS(isa_generic);
    }
#undef TINYCONV_KERNELS
}

template <typename T>
index_t workspace_size_for(Isa isa, index_t m, index_t n, index_t k) {
    return kernels_for<T>(isa).workspace_size(m, n, k);
}

template <typename T>
void gemm_packed_for(Isa isa, T* c, index_t ldc, const T* a, index_t lda, bool trans_a, const T* b,
                     index_t ldb, bool trans_b, index_t m, index_t n, index_t k, T alpha, T beta,
                     int nthreads, T* work) {
    // Strides of element (i, k) of op(A) and (k, j) of op(B) in memory.
    const index_t rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
    const index_t rsb = trans_b ? 1 : ldb, csb = trans_b ? ldb : 1;
    kernels_for<T>(isa).gemm_packed(c, ldc, a, rsa, csa, b, rsb, csb, m, n, k, alpha, beta,
                                    nthreads, work);
}

template <typename T>
void gemm_offsets_packed_for(Isa isa, T* c, index_t ldc, const T* a, index_t lda, bool trans_a,
                             const T* base, const index_t* offsets, index_t m, index_t n, index_t k,
                             T alpha, T beta, int nthreads, T* work) {
    const index_t rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
    kernels_for<T>(isa).gemm_offsets_packed(c, ldc, a, rsa, csa, base, offsets, m, n, k, alpha,
                                            beta, nthreads, work);
}

// The calling thread's packing buffer, kept between calls: a fresh megabyte-sized allocation
// per call cost more in page faults and zeroing than a layer's whole GEMM (measured: 100x4320
// by 4320x100 transposed, 1.8 ms instead of 0.5). It only grows.
template <typename T>
T* cached_workspace(index_t size) {
    thread_local std::vector<T> buffer;
    if (static_cast<index_t>(buffer.size()) < size) buffer.resize(static_cast<size_t>(size));
    return buffer.data();
}

// k == 0: the product is empty, C = beta * C.
template <typename T>
void scale_c(T* c, index_t ldc, index_t m, index_t n, T beta) {
    for (index_t i = 0; i < m; ++i) {
        T* row = c + i * ldc;
        for (index_t j = 0; j < n; ++j) row[j] = beta == T(0) ? T(0) : beta * row[j];
    }
}

}  // namespace

// The largest need of any level this CPU runs: the level may be switched (set_isa, to a level the
// CPU runs) between sizing and use. Levels the CPU cannot run are never asked: their code would
// be an illegal instruction here.
template <typename T>
index_t gemm_workspace_size(index_t m, index_t n, index_t k) {
    index_t size = 0;
    for (Isa isa : kAllIsas)
        if (cpu_runs(isa)) size = std::max(size, workspace_size_for<T>(isa, m, n, k));
    return size;
}

template <typename T>
void gemm_serial(T* c, index_t ldc, const T* a, index_t lda, bool trans_a, const T* b, index_t ldb,
                 bool trans_b, index_t m, index_t n, index_t k, T alpha, T beta, T* work) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) return scale_c(c, ldc, m, n, beta);
    gemm_packed_for<T>(static_cast<Isa>(g_isa.load()), c, ldc, a, lda, trans_a, b, ldb, trans_b, m,
                       n, k, alpha, beta, 1, work);
}

template <typename T>
void gemm(T* c, index_t ldc, const T* a, index_t lda, bool trans_a, const T* b, index_t ldb,
          bool trans_b, index_t m, index_t n, index_t k, T alpha, T beta, int nthreads) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) return scale_c(c, ldc, m, n, beta);
    const Isa isa = static_cast<Isa>(g_isa.load());
    T* work = cached_workspace<T>(workspace_size_for<T>(isa, m, n, k));
    const int threads = std::min(nthreads, threads_for(m * n * k, index_t(1) << 16));
    gemm_packed_for<T>(isa, c, ldc, a, lda, trans_a, b, ldb, trans_b, m, n, k, alpha, beta,
                       std::max(1, threads), work);
}

template <typename T>
void gemm_offsets(T* c, index_t ldc, const T* a, index_t lda, bool trans_a, const T* base,
                  const index_t* offsets, index_t m, index_t n, index_t k, T alpha, T beta,
                  int nthreads, T* work) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) return scale_c(c, ldc, m, n, beta);
    const Isa isa = static_cast<Isa>(g_isa.load());
    if (!work) work = cached_workspace<T>(workspace_size_for<T>(isa, m, n, k));
    const int threads = std::max(1, std::min(nthreads, threads_for(m * n * k, index_t(1) << 16)));
    gemm_offsets_packed_for<T>(isa, c, ldc, a, lda, trans_a, base, offsets, m, n, k, alpha, beta,
                               threads, work);
}

template <typename T>
void gemm_dot(T* c, index_t ldc, const T* const* a, index_t lda, const T* const* base,
              const index_t* offsets, int segments, index_t m, index_t n, index_t k, T beta,
              int nthreads) {
    if (m <= 0 || n <= 0) return;
    const int threads =
        std::max(1, std::min(nthreads, threads_for(m * n * k * segments, index_t(1) << 16)));
    kernels_for<T>(static_cast<Isa>(g_isa.load()))
        .gemm_dot(c, ldc, a, lda, base, offsets, segments, m, n, k, beta, threads);
}

template <typename T>
void gemm_reference(T* c, index_t ldc, const T* a, index_t lda, bool trans_a, const T* b,
                    index_t ldb, bool trans_b, index_t m, index_t n, index_t k, T alpha, T beta) {
    for (index_t i = 0; i < m; ++i) {
        for (index_t j = 0; j < n; ++j) {
            T sum = 0;
            for (index_t p = 0; p < k; ++p) {
                const T av = trans_a ? a[p * lda + i] : a[i * lda + p];
                const T bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
                sum += av * bv;
            }
            T& out = c[i * ldc + j];
            out = beta == T(0) ? alpha * sum : alpha * sum + beta * out;
        }
    }
}

std::string gemm_isa() { return isa_name(static_cast<Isa>(g_isa.load())); }

int gemm_isa_level() { return g_isa.load(std::memory_order_relaxed); }
static_assert(static_cast<int>(Isa::generic) == kIsaLevelGeneric &&
                  static_cast<int>(Isa::avx2) == kIsaLevelAvx2 &&
                  static_cast<int>(Isa::avx512) == kIsaLevelAvx512 &&
                  static_cast<int>(Isa::neon) == kIsaLevelNeon,
              "gemm.h's level numbers are gemm.cpp's Isa values");

std::string gemm_available_isas() {
    std::string out;
    for (Isa isa : kAllIsas) {
        if (!cpu_runs(isa)) continue;
        if (!out.empty()) out += ",";
        out += isa_name(isa);
    }
    return out;
}

bool gemm_set_isa(const std::string& name) {
    Isa isa;
    if (!parse_isa(name, isa) || !cpu_runs(isa)) return false;
    g_isa.store(static_cast<int>(isa));
    return true;
}

#define TINYCONV_INSTANTIATE(T)                                                                    \
    template index_t gemm_workspace_size<T>(index_t, index_t, index_t);                            \
    template void gemm_serial<T>(T*, index_t, const T*, index_t, bool, const T*, index_t, bool,    \
                                 index_t, index_t, index_t, T, T, T*);                             \
    template void gemm<T>(T*, index_t, const T*, index_t, bool, const T*, index_t, bool, index_t,  \
                          index_t, index_t, T, T, int);                                            \
    template void gemm_dot<T>(T*, index_t, const T* const*, index_t, const T* const*,              \
                              const index_t*, int, index_t, index_t, index_t, T, int);             \
    template void gemm_offsets<T>(T*, index_t, const T*, index_t, bool, const T*, const index_t*,  \
                                  index_t, index_t, index_t, T, T, int, T*);                       \
    template void gemm_reference<T>(T*, index_t, const T*, index_t, bool, const T*, index_t, bool, \
                                    index_t, index_t, index_t, T, T);
TINYCONV_INSTANTIATE(float)
TINYCONV_INSTANTIATE(double)
#undef TINYCONV_INSTANTIATE

}  // namespace tinyconv
