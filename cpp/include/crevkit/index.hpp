// Exact re-ranking of approximate neighbours: the full-dimension distance of
// each query to each of its candidate library vectors.
//
// Pure C++ over raw contiguous buffers; the index itself (hnswlib graph, PCA,
// alignment, validation) lives in Python (crevkit.index).  The library
// vectors and the queries are unit length, so the squared Euclidean distance
// is 2 - 2 q.v, clamped at 0 against rounding.
//
// The cost is the gather: each candidate is a random row of a library that
// does not fit in cache, so the next rows are prefetched while the current
// one is multiplied.  A dot product sums in VW lanes (a fixed order that
// depends only on d), then the lanes in index order: results do not depend on
// the thread count or on how the queries are split between calls.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "crevkit/parallel.hpp"

namespace crevkit::index {

namespace detail {

constexpr int64_t VW = 16;  // lanes of the dot product (one AVX-512 register, two AVX2 ones)
constexpr int64_t AHEAD = 2;  // candidates prefetched ahead of the one being multiplied

typedef float vf __attribute__((vector_size(VW * 4)));

inline void prefetch_row(const float* row, int64_t d) {
    const char* p = reinterpret_cast<const char*>(row);
    for (int64_t b = 0; b < d * 4; b += 64) __builtin_prefetch(p + b, 0, 1);
}

inline float dot(const float* __restrict a, const float* __restrict b, int64_t d) {
    vf acc{};
    int64_t j = 0;
    for (; j + VW <= d; j += VW) {
        vf x, y;
        std::memcpy(&x, a + j, sizeof(vf));
        std::memcpy(&y, b + j, sizeof(vf));
        acc += x * y;
    }
    float lane[VW];
    std::memcpy(lane, &acc, sizeof(vf));
    for (; j < d; ++j) lane[j % VW] += a[j] * b[j];
    float s = 0.0f;
    for (int64_t l = 0; l < VW; ++l) s += lane[l];
    return s;
}

}  // namespace detail

// out[i, j] = max(2 - 2 queries[i] . vectors[labels[i, j]], 0) for i < m, j < c.
// vectors: n x d, queries: m x d, labels: m x c (row numbers of vectors).
// Throws std::invalid_argument if a label is outside [0, n).
inline void rerank_distances(const float* vectors, int64_t n, int64_t d, const float* queries, int64_t m,
                             const int64_t* labels, int64_t c, int n_threads, float* out) {
    for (int64_t t = 0; t < m * c; ++t)
        if (labels[t] < 0 || labels[t] >= n)
            throw std::invalid_argument("labels: entry " + std::to_string(t) + " is " + std::to_string(labels[t]) +
                                        ", outside the " + std::to_string(n) + " library rows");
    const int threads = clamp_threads(n_threads);
    (void)threads;
#if CREVKIT_HAS_OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && m > 1)
#endif
    for (int64_t i = 0; i < m; ++i) {
        const int64_t* lab = labels + i * c;
        const float* q = queries + i * d;
        for (int64_t j = 0; j < std::min<int64_t>(detail::AHEAD, c); ++j) detail::prefetch_row(vectors + lab[j] * d, d);
        for (int64_t j = 0; j < c; ++j) {
            if (j + detail::AHEAD < c) detail::prefetch_row(vectors + lab[j + detail::AHEAD] * d, d);
            const float s = detail::dot(q, vectors + lab[j] * d, d);
            out[i * c + j] = std::max(2.0f - 2.0f * s, 0.0f);
        }
    }
}

}  // namespace crevkit::index
