// GEMM: C = alpha * op(A) * op(B) + beta * C, op = identity or transpose, row-major storage.
//
// Shapes: op(A) is (m, k), op(B) is (k, n), C is (m, n). lda/ldb/ldc are row strides of the
// matrices as stored (A stored (m, k) with lda >= k, or (k, m) with lda >= m when trans_a).
// beta == 0 means C is write-only (NaNs in C do not propagate), as in BLAS.
//
// The fast path is Goto/BLIS style: A and B are packed into MR-row / NR-column slivers
// (blocks MC x KC and KC x NC sized for L2 and L3), and a register-tiled micro-kernel computes one
// MR x NR tile. The micro-kernel is compiled once per instruction-set level (see gemm_kernel.inc)
// and chosen at run time. Every element of C is a sum over k in a fixed order (k blocks of KC in
// sequence), so results are bitwise identical for any thread count. Small products (at most 2^15
// multiply-adds, B's rows contiguous) skip packing: rows of C accumulated serially.
#pragma once

#include <string>

#include "parallel.h"

namespace tinyconv {

// nthreads: threads to use inside this call (1 when the caller is already parallel).
template <typename T>
void gemm(T* c, index_t ldc,                      // (m, n)
          const T* a, index_t lda, bool trans_a,  // op(A): (m, k)
          const T* b, index_t ldb, bool trans_b,  // op(B): (k, n)
          index_t m, index_t n, index_t k, T alpha, T beta, int nthreads);

// Workspace-explicit variant for callers inside their own parallel region: `work` must hold
// gemm_workspace_size<T>(m, n, k) elements. Runs on the calling thread only and allocates nothing.
template <typename T>
index_t gemm_workspace_size(index_t m, index_t n, index_t k);
template <typename T>
void gemm_serial(T* c, index_t ldc, const T* a, index_t lda, bool trans_a, const T* b, index_t ldb,
                 bool trans_b, index_t m, index_t n, index_t k, T alpha, T beta, T* work);

// GEMM whose op(B) is made of slices of one array: op(B)(p, j) = base[offsets[p] + j], k offsets.
// This is the im2col matrix of a stride-1 convolution over a flattened, zero-padded image (each
// im2col row is a contiguous slice of it), packed without ever writing the matrix out. The same
// arithmetic, in the same order, as gemm() on the materialised B. `work`: gemm_workspace_size<T>(m,
// n, k) elements, or null (allocated here). nthreads as for gemm().
template <typename T>
void gemm_offsets(T* c, index_t ldc,                      // (m, n)
                  const T* a, index_t lda, bool trans_a,  // op(A): (m, k)
                  const T* base, const index_t* offsets,  // op(B): (k, n)
                  index_t m, index_t n, index_t k, T alpha, T beta, int nthreads, T* work);

// C (m, n) = beta * C + sum over segments s of A_s (m, k) . B_s^T, row j of B_s at
// base[s] + offsets[j] (B_s is (n, k)): dot products of contiguous rows, no packing. For products
// whose operands both run along k (a convolution's filter gradient, one segment per image), where
// packing would transpose the larger operand. k must be a multiple of kDotMultiple (pad with
// zeros); 1 <= segments <= kDotMaxSegments. Not bitwise equal to gemm() (another summation order),
// but the same for any thread count.
constexpr index_t kDotMultiple = 16;
constexpr int kDotMaxSegments = 16;
template <typename T>
void gemm_dot(T* c, index_t ldc,                             // (m, n)
              const T* const* a, index_t lda,                // segments x (m, k)
              const T* const* base, const index_t* offsets,  // segments x (n, k) by offsets
              int segments, index_t m, index_t n, index_t k, T beta, int nthreads);

// Triple loop that follows the definition: the oracle for the fast path.
template <typename T>
void gemm_reference(T* c, index_t ldc, const T* a, index_t lda, bool trans_a, const T* b,
                    index_t ldb, bool trans_b, index_t m, index_t n, index_t k, T alpha, T beta);

// Instruction-set level of the micro-kernel in use: "avx512", "avx2", "neon" or "generic".
std::string gemm_isa();
// The same as a number (leaf_isa.h dispatches on it): one of the kIsaLevel constants.
constexpr int kIsaLevelGeneric = 0, kIsaLevelAvx2 = 1, kIsaLevelAvx512 = 2, kIsaLevelNeon = 3;
int gemm_isa_level();
// Levels this CPU (and this build) can run, best first.
std::string gemm_available_isas();
// Selects a level by name; returns false if it is unknown or not runnable here.
bool gemm_set_isa(const std::string& name);

}  // namespace tinyconv
