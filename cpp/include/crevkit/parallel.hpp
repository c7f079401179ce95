// OpenMP helpers shared by the kernels.  Pure C++: no Python here.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>

#if CREVKIT_HAS_OPENMP
#include <omp.h>
#endif

namespace crevkit {

inline int clamp_threads(int n_threads) {
#if CREVKIT_HAS_OPENMP
    return std::max(1, n_threads);
#else
    (void)n_threads;
    return 1;
#endif
}

// An exception must not escape an OpenMP region (that is std::terminate):
// capture the first one inside the loop, rethrow it after the region.
class ParallelErrors {
public:
    template <class F>
    void run(F&& body) noexcept {
        if (failed_.load(std::memory_order_relaxed)) return;
        try {
            body();
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!error_) error_ = std::current_exception();
            failed_.store(true, std::memory_order_relaxed);
        }
    }
    bool failed() const { return failed_.load(std::memory_order_relaxed); }
    void rethrow() const {
        if (error_) std::rethrow_exception(error_);
    }

private:
    std::atomic<bool> failed_{false};
    std::mutex mutex_;
    std::exception_ptr error_;
};

}  // namespace crevkit
