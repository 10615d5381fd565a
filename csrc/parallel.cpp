#include "parallel.h"

#include <algorithm>
#include <atomic>

namespace tinyconv {

namespace {
int initial_threads() {
#ifdef _OPENMP
    return std::max(1, omp_get_max_threads());
#else
    return 1;
#endif
}
std::atomic<int> g_num_threads{initial_threads()};
}  // namespace

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) { g_num_threads.store(std::max(1, n), std::memory_order_relaxed); }

int threads_for(index_t work, index_t grain) {
    const index_t useful = std::max<index_t>(1, work / std::max<index_t>(1, grain));
    return static_cast<int>(std::min<index_t>(num_threads(), useful));
}

}  // namespace tinyconv
