// Batch self-organizing map kernels: best-matching units and the batch update.
//
// Pure C++ over raw contiguous buffers; policy (defaults, validation, init,
// radius schedule, streaming over Zarr / memmap blocks, save / load) lives in
// Python (crevkit.som).  Two entry points:
//
//   bmu_accumulate  For each sample x (a row of X) find the best and second
//                   best node of a *centred* codebook Wc (= W - mu) by
//                       argmin_k  |w_k|^2 - 2 (x - mu) . w_k
//                   using a cache-blocked, register-tiled float32 matrix
//                   product (6 x 16 micro-kernel, packed panels) fused with
//                   the best-two selection: per chunk of rows only a
//                   chunk x node-block tile of products exists, never an
//                   N x K matrix.  Ties go to the lowest node index.  The two
//                   winners' distances are then recomputed exactly (double
//                   accumulation of (x - mu - w)^2), so they are never
//                   negative and carry no cancellation error.  Optionally the
//                   centred rows are added to per-node double sums.
//   smooth          The batch update W_k = sum_j h_jk S_j / sum_j h_jk n_j from
//                   per-node sums S and counts n: a separable pass for the
//                   Gaussian neighbourhood (rectangular and hexagonal, plain
//                   or toroidal) and a sparse windowed pass for the bubble.
//                   Nodes with zero total neighbourhood weight keep their
//                   weights.
//
// Centring (the caller subtracts the data mean mu from the codebook and passes
// mu here) is what keeps float32 distances meaningful when the data mean is
// large relative to its spread: |x|^2 - 2 x.w + |w|^2 in float32 then loses
// the best node.
//
// Determinism: a dot product's summation order depends only on D (the fixed
// KC blocking along the features), never on the row's chunk or the thread, and
// per-node sums add samples in index order (bmu_accumulate adds each chunk in
// an ordered region, accumulate splits the feature axis between threads).
// Results are bit-identical for any thread count and any chunk size.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "crevkit/parallel.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#endif

namespace crevkit::som {

// Micro-kernel shape: MR x NR accumulators of VW floats must fit the vector
// registers with room for NR / VW operands and a broadcast.  AVX-512 has 32
// registers of 16 floats: 12 x 32 (24 accumulators) measured ~10 % faster
// than 6 x 16 of 8-float vectors at 20 x 20 and 40 x 40 maps, and at the
// machine's sgemm rate.  Elsewhere (AVX2: 16 registers of 8 floats) 6 x 16.
#ifndef CREVKIT_SOM_KC
#define CREVKIT_SOM_KC 512
#endif
#if defined(__AVX512F__)
#ifndef CREVKIT_SOM_NR
#define CREVKIT_SOM_NR 32
#endif
#ifndef CREVKIT_SOM_VW
#define CREVKIT_SOM_VW 16
#endif
#ifndef CREVKIT_SOM_MR
#define CREVKIT_SOM_MR 12
#endif
#else
#ifndef CREVKIT_SOM_NR
#define CREVKIT_SOM_NR 16
#endif
#ifndef CREVKIT_SOM_VW
#define CREVKIT_SOM_VW 8
#endif
#ifndef CREVKIT_SOM_MR
#define CREVKIT_SOM_MR 6
#endif
#endif
#ifndef CREVKIT_SOM_NC
#define CREVKIT_SOM_NC 512
#endif

namespace detail {

constexpr int64_t MR = CREVKIT_SOM_MR;  // micro-tile rows (samples)
constexpr int64_t NR = CREVKIT_SOM_NR;  // micro-tile columns (nodes): NR / VW vectors
constexpr int64_t VW = CREVKIT_SOM_VW;  // floats per vector register
constexpr int64_t KC = CREVKIT_SOM_KC;  // feature block (packed A / B panels along D)
constexpr int64_t NC = CREVKIT_SOM_NC;   // node block (C tile width)

typedef float vf __attribute__((vector_size(VW * 4)));

// Per-call scratch (per thread: a slice of the chunk, a tile of products, the
// smoothing's buffers).  Buffers from 64 KiB up are mapped and unmapped
// directly: from malloc, glibc's dynamic mmap threshold (raised to ~30 MiB
// once a codebook-sized NumPy array is freed) keeps them in the OpenMP
// threads' arenas after free, resident and counted against the memory budget
// (measured: ~50 MiB above the codebook and the sums over a 40 x 40 x 5,000
// epoch with whole-chunk buffers, ~15 MiB with slices).  A mapping costs a
// few page faults per call, nothing next to the products.
constexpr size_t kMapBytes = size_t{64} << 10;

template <class T>
struct BufferDeleter {
    size_t bytes = 0;
    void operator()(T* p) const {
#if defined(__unix__) || defined(__APPLE__)
        if (bytes >= kMapBytes) {
            munmap(p, bytes);
            return;
        }
#endif
        std::free(p);
    }
};
template <class T>
using ScratchBuffer = std::unique_ptr<T, BufferDeleter<T>>;

// n elements of T, 64-byte aligned, uninitialized (mapped ones are zero).
template <class T>
ScratchBuffer<T> scratch(int64_t n) {
    const size_t bytes = ((static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T) + 63) / 64) * 64;
#if defined(__unix__) || defined(__APPLE__)
    if (bytes >= kMapBytes) {
        void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        return ScratchBuffer<T>(static_cast<T*>(p), BufferDeleter<T>{bytes});  // page aligned
    }
#endif
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    return ScratchBuffer<T>(static_cast<T*>(p), BufferDeleter<T>{bytes});
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Lanes of the |x - mu|^2 partial sums (see pack_a).
constexpr int64_t XN_LANES = 8;

// Copy features [p0, p0 + kc) of rows [0, m) of X (row stride d), centred by
// mean, row-major: dst[i * kc + (j - p0)].  Rows past m (up to m_pad, a
// multiple of MR) are zero.  The micro-kernel broadcasts its MR rows from MR
// short row segments, so no transpose is needed: packing is a vectorized
// centred copy (a transposed MR-row panel cost ~10 % of a 20 x 20 map's
// search).  bmu_accumulate keeps either one such slice per thread,
// repacked for every node block, or, on large maps, the chunk's slices side
// by side, each packed once.  If lanes is given, feature j of row i is added
// to lanes[i * XN_LANES + (j - p0) % XN_LANES] while the row is being read
// anyway; called with p0 increasing and summed in lane order by
// finish_norms, that gives |x_i - mu|^2 in a fixed order (it depends only on
// d), with XN_LANES independent chains instead of one long dependent one.
inline void pack_a_block(const float* X, int64_t m, int64_t d, int64_t p0, int64_t kc, const float* mean, float* dst,
                         double* lanes = nullptr) {
    const int64_t m_pad = round_up(m, MR);
    constexpr int64_t L = XN_LANES;
    const float* mu = mean + p0;
    for (int64_t i = 0; i < m; ++i) {
        const float* row = X + i * d + p0;
        float* out = dst + i * kc;
        for (int64_t k = 0; k < kc; ++k) out[k] = row[k] - mu[k];
        if (lanes) {
            double* ln = lanes + i * L;
            int64_t k0 = 0;
            for (; k0 + L <= kc; k0 += L)
                for (int64_t l = 0; l < L; ++l)
                    ln[l] += static_cast<double>(out[k0 + l]) * static_cast<double>(out[k0 + l]);
            for (int64_t l = 0; k0 + l < kc; ++l)
                ln[l] += static_cast<double>(out[k0 + l]) * static_cast<double>(out[k0 + l]);
        }
    }
    std::fill(dst + m * kc, dst + m_pad * kc, 0.0f);
}

// xn[i] = sum of row i's XN_LANES lanes, in lane order.
inline void finish_norms(const double* lanes, int64_t m, double* xn) {
    for (int64_t i = 0; i < m; ++i) {
        double t = 0.0;
        for (int64_t l = 0; l < XN_LANES; ++l) t += lanes[i * XN_LANES + l];
        xn[i] = t;
    }
}

// Offset of (node, feature j) in the packed codebook layout (see pack_codebook).
inline int64_t packed_offset(int64_t node, int64_t j, int64_t n_nodes, int64_t d) {
    const int64_t k_pad = round_up(n_nodes, NR);
    const int64_t p0 = (j / KC) * KC;
    const int64_t kc = std::min(KC, d - p0);
    return p0 * k_pad + (node / NR) * kc * NR + (j - p0) * NR + node % NR;
}

// C[MR x NR] (row stride ldc) += A_rows . B_panel over kc features (A: MR rows of kc, contiguous):
// MR x NV vector accumulators, one broadcast of A per row and feature.
inline void micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
                         int64_t ldc) {
    constexpr int64_t NV = NR / VW;
    vf acc[MR][NV];
#pragma GCC unroll 16
    for (int64_t r = 0; r < MR; ++r)
#pragma GCC unroll 8
        for (int64_t v = 0; v < NV; ++v) acc[r][v] = vf{};
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
        vf bv[NV];
#pragma GCC unroll 8
        for (int64_t v = 0; v < NV; ++v) std::memcpy(&bv[v], b + k * NR + v * VW, sizeof(vf));
#pragma GCC unroll 16
        for (int64_t r = 0; r < MR; ++r) {
            const float ar = a[r * kc + k];
#pragma GCC unroll 8
            for (int64_t v = 0; v < NV; ++v) acc[r][v] += ar * bv[v];
        }
    }
#pragma GCC unroll 16
    for (int64_t r = 0; r < MR; ++r) {
        float* cr = c + r * ldc;
#pragma GCC unroll 8
        for (int64_t v = 0; v < NV; ++v) {
            vf t;
            std::memcpy(&t, cr + v * VW, sizeof(vf));
            t += acc[r][v];
            std::memcpy(cr + v * VW, &t, sizeof(vf));
        }
    }
}

}  // namespace detail

// Number of floats of the packed codebook layout for n_nodes x d.
inline int64_t packed_size(int64_t n_nodes, int64_t d) { return detail::round_up(n_nodes, detail::NR) * d; }

// The packed layout: for each feature block p0 = 0, KC, 2 KC, ... (kc = its
// width) the nodes in NR-node micro-panels, feature-major inside a panel:
//     P[p0 * K_pad + (k / NR) * kc * NR + (j - p0) * NR + k % NR] = W[k, j]
// with K_pad = n_nodes rounded up to NR (padding nodes are zero).  It is the
// matrix product's B operand, so a fit keeps its (centred) codebook in this
// layout and never repacks it.
inline void pack_codebook(const float* W, int64_t n_nodes, int64_t d, float* P, int n_threads) {
    using namespace detail;
    const int64_t k_pad = round_up(n_nodes, NR);
    const int nt = clamp_threads(n_threads);
#if CREVKIT_HAS_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (int64_t j0 = 0; j0 < k_pad; j0 += NR) {
        for (int64_t p0 = 0; p0 < d; p0 += KC) {
            const int64_t kc = std::min(KC, d - p0);
            float* panel = P + p0 * k_pad + j0 * kc;
            for (int64_t jj = 0; jj < NR; ++jj) {
                const int64_t node = j0 + jj;
                if (node < n_nodes) {
                    const float* w = W + node * d + p0;
                    for (int64_t k = 0; k < kc; ++k) panel[k * NR + jj] = w[k];
                } else {
                    for (int64_t k = 0; k < kc; ++k) panel[k * NR + jj] = 0.0f;
                }
            }
        }
    }
    (void)nt;
}

// Inverse of pack_codebook, adding `offset` (d values, may be null) to every row.
inline void unpack_codebook(const float* P, int64_t n_nodes, int64_t d, const float* offset, float* W,
                            int n_threads) {
    using namespace detail;
    const int64_t k_pad = round_up(n_nodes, NR);
    const int nt = clamp_threads(n_threads);
#if CREVKIT_HAS_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (int64_t node = 0; node < n_nodes; ++node) {
        for (int64_t p0 = 0; p0 < d; p0 += KC) {
            const int64_t kc = std::min(KC, d - p0);
            const float* panel = P + p0 * k_pad + (node / NR) * kc * NR + node % NR;
            float* w = W + node * d + p0;
            for (int64_t k = 0; k < kc; ++k) w[k] = panel[k * NR] + (offset ? offset[p0 + k] : 0.0f);
        }
    }
    (void)nt;
}

// |w_k|^2 of each node of the packed centred codebook (double accumulation in
// feature order, stored as float).  A micro-panel's NR nodes are summed
// together (NR independent chains over contiguous memory), not node by node
// at a stride of NR floats.
inline void node_norms(const float* P, int64_t n_nodes, int64_t d, float* out, int n_threads) {
    using namespace detail;
    const int64_t k_pad = round_up(n_nodes, NR);
    const int nt = clamp_threads(n_threads);
#if CREVKIT_HAS_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (int64_t g0 = 0; g0 < k_pad; g0 += NR) {
        double s[NR] = {};
        for (int64_t p0 = 0; p0 < d; p0 += KC) {
            const int64_t kc = std::min(KC, d - p0);
            const float* w = P + p0 * k_pad + g0 * kc;
            for (int64_t j = 0; j < kc; ++j)
                for (int64_t jj = 0; jj < NR; ++jj)
                    s[jj] += static_cast<double>(w[j * NR + jj]) * static_cast<double>(w[j * NR + jj]);
        }
        for (int64_t jj = 0; jj < NR && g0 + jj < n_nodes; ++jj) out[g0 + jj] = static_cast<float>(s[jj]);
    }
    (void)nt;
}

// Add the centred rows x_i - mu to sums[bmu[i]] (double) and 1 to counts[bmu[i]],
// samples in index order; threads split the feature axis (deterministic).
inline void accumulate(const float* X, int64_t n, int64_t d, const float* mean, const int64_t* bmu,
                       int64_t n_nodes, double* sums, double* counts, int n_threads) {
    const int nt = clamp_threads(n_threads);
    constexpr int64_t kBlock = 512;
    const int64_t n_blocks = (d + kBlock - 1) / kBlock;
    ParallelErrors errors;
#if CREVKIT_HAS_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (int64_t b = 0; b < n_blocks; ++b) {
        if (errors.failed()) continue;
        errors.run([&] {
            const int64_t j0 = b * kBlock, j1 = std::min(d, j0 + kBlock);
            for (int64_t i = 0; i < n; ++i) {
                const int64_t node = bmu[i];
                if (node < 0 || node >= n_nodes)
                    throw std::invalid_argument("bmu: node index " + std::to_string(node) + " at row " +
                                                std::to_string(i) + " is outside 0 .. " +
                                                std::to_string(n_nodes - 1));
                const float* x = X + i * d;
                double* s = sums + node * d;
                for (int64_t j = j0; j < j1; ++j) s[j] += static_cast<double>(x[j] - mean[j]);
            }
        });
    }
    (void)nt;
    // A bad index leaves sums partly updated; the caller discards them with the error.
    errors.rethrow();
    for (int64_t i = 0; i < n; ++i) counts[bmu[i]] += 1.0;
}

// Best and second-best node of every row of X (n x d) against the centred
// codebook in packed layout P (n_nodes x d, see pack_codebook) with norms wn;
// mean is the centring vector.
//   bmu, second: node indices (second = -1 when n_nodes == 1)
//   d1, d2:      exact Euclidean distances (d2 = +inf when n_nodes == 1)
// If sums (n_nodes x d, double) and counts (n_nodes) are given, the centred
// rows are accumulated into them (as accumulate does: samples in index order).
inline void bmu_accumulate(const float* X, int64_t n, int64_t d, const float* mean, const float* P, const float* wn,
                           int64_t n_nodes, int64_t chunk_rows, int64_t* bmu, int64_t* second, float* d1, float* d2,
                           double* sums, double* counts, int n_threads, bool exact_distances = true) {
    using namespace detail;
    if (n < 0 || d <= 0 || n_nodes <= 0) throw std::invalid_argument("bmu_accumulate: bad shape");
    if (chunk_rows <= 0) throw std::invalid_argument("chunk_rows must be > 0");
    const int nt = clamp_threads(n_threads);
    // Chunk size never changes a result (see the header comment); only cap it
    // so that every thread gets work when n is small.
    const int64_t chunk = round_up(std::min<int64_t>(chunk_rows, std::max<int64_t>(MR, (n + nt - 1) / nt)), MR);
    const int64_t n_chunks = (n + chunk - 1) / chunk;
    const int64_t k_pad = round_up(n_nodes, NR);
    const int64_t nc_max = std::min(NC, k_pad);
    // Packing: on large maps (many node blocks, a chunk under 1/64 of the
    // codebook) each chunk is packed once, whole, and reused by every node
    // block (repacking a slice per node block cost ~7 % of a 200 x 300
    // search: the copy is memory-bound, the products are not).  Otherwise one
    // KC slice at a time, repacked per node block: per thread chunk x KC
    // floats instead of chunk x D (40 x 40 x 5,000: 0.5 MiB instead of 4.6,
    // against the memory budget of codebook, sums and one chunk).
    const bool whole_chunk = k_pad > NC && chunk * 64 <= k_pad;
    const float inf = std::numeric_limits<float>::infinity();
    ParallelErrors errors;

#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        ScratchBuffer<float> a_pack, c_tile;
        std::vector<float> best1, best2;
        std::vector<int64_t> idx1, idx2;
        std::vector<std::array<int64_t, 2>> pairs;
        std::vector<double> exact, xnv, xn_lanes;
        errors.run([&] {
            a_pack = scratch<float>(chunk * (whole_chunk ? d : std::min(KC, d)));
            c_tile = scratch<float>(chunk * nc_max);
            best1.resize(chunk); best2.resize(chunk); idx1.resize(chunk); idx2.resize(chunk);
            pairs.reserve(2 * chunk);
            exact.resize(2 * chunk);
            xnv.resize(chunk);
            xn_lanes.resize(chunk * XN_LANES);
        });
        // ordered: a chunk's rows are added to the per-node sums right after
        // its search, while the chunk is still in cache, but in chunk order
        // (so in sample order per node, whatever the thread count); the
        // other threads keep searching meanwhile.
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 1) ordered
#endif
        for (int64_t ch = 0; ch < n_chunks; ++ch) {
            if (errors.failed()) continue;
            const int64_t r0 = ch * chunk;
            const int64_t m = std::min(chunk, n - r0);
            const float* Xc = X + r0 * d;
            errors.run([&] {
                const int64_t m_pad = round_up(m, MR);
                double* lanes = exact_distances ? nullptr : xn_lanes.data();
                if (lanes) std::fill(lanes, lanes + m * XN_LANES, 0.0);
                std::fill(best1.begin(), best1.end(), inf);
                std::fill(best2.begin(), best2.end(), inf);
                std::fill(idx1.begin(), idx1.end(), int64_t{-1});
                std::fill(idx2.begin(), idx2.end(), int64_t{-1});
                for (int64_t n0 = 0; n0 < k_pad; n0 += NC) {
                    const int64_t nc_pad = std::min(NC, k_pad - n0);
                    const int64_t nc = std::min(nc_pad, n_nodes - n0);
                    float* C = c_tile.get();
                    std::fill(C, C + m_pad * nc_pad, 0.0f);
                    for (int64_t p0 = 0; p0 < d; p0 += KC) {
                        const int64_t kc = std::min(KC, d - p0);
                        float* A = a_pack.get() + (whole_chunk ? p0 * m_pad : 0);
                        if (!whole_chunk || n0 == 0) pack_a_block(Xc, m, d, p0, kc, mean, A, n0 == 0 ? lanes : nullptr);
                        const float* Bblk = P + p0 * k_pad + n0 * kc;
                        for (int64_t j0 = 0; j0 < nc_pad; j0 += NR) {
                            const float* B = Bblk + j0 * kc;
                            for (int64_t i0 = 0; i0 < m_pad; i0 += MR)
                                micro_kernel(kc, A + i0 * kc, B, C + i0 * nc_pad + j0, nc_pad);
                        }
                    }
                    // best two of this node block, scanning nodes in increasing order
                    // (strict < keeps the lowest index on ties)
                    for (int64_t i = 0; i < m; ++i) {
                        const float* ci = C + i * nc_pad;
                        float b1 = best1[i], b2 = best2[i];
                        int64_t k1 = idx1[i], k2 = idx2[i];
                        for (int64_t j = 0; j < nc; ++j) {
                            const float v = wn[n0 + j] - 2.0f * ci[j];
                            if (v < b1) {
                                b2 = b1; k2 = k1; b1 = v; k1 = n0 + j;
                            } else if (v < b2) {
                                b2 = v; k2 = n0 + j;
                            }
                        }
                        best1[i] = b1; best2[i] = b2; idx1[i] = k1; idx2[i] = k2;
                    }
                }
                if (lanes) finish_norms(lanes, m, xnv.data());
                for (int64_t i = 0; i < m; ++i)
                    if (idx1[i] < 0) idx1[i] = 0;  // only if every product was NaN (input is validated upstream)
                if (!exact_distances) {
                    // |x - mu|^2 + (|w|^2 - 2 (x - mu).w), clamped at 0 (float32 products: cancellation
                    // error ~ eps32 * (|x - mu|^2 + |w|^2); used for the training history only)
                    for (int64_t i = 0; i < m; ++i) {
                        const double xn = xnv[i];
                        bmu[r0 + i] = idx1[i];
                        second[r0 + i] = idx2[i];
                        d1[r0 + i] = static_cast<float>(std::sqrt(std::max(0.0, xn + static_cast<double>(best1[i]))));
                        d2[r0 + i] = idx2[i] >= 0
                                         ? static_cast<float>(std::sqrt(std::max(0.0, xn + static_cast<double>(best2[i]))))
                                         : inf;
                    }
                    return;
                }
                // Exact distances to the two winners.  The packed codebook
                // stores a node's features NR floats apart, so the (row, node)
                // pairs are visited grouped by micro-panel: each panel is read
                // once per feature block while it sits in L1.
                pairs.clear();
                for (int64_t i = 0; i < m; ++i) {
                    pairs.push_back({idx1[i], 2 * i});
                    if (idx2[i] >= 0) pairs.push_back({idx2[i], 2 * i + 1});
                }
                std::sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) {
                    return a[0] / NR < b[0] / NR || (a[0] / NR == b[0] / NR && a[1] < b[1]);
                });
                std::fill(exact.begin(), exact.begin() + 2 * m, 0.0);
                for (int64_t p0 = 0; p0 < d; p0 += KC) {
                    const int64_t kc = std::min(KC, d - p0);
                    const float* mu = mean + p0;
                    for (const auto& pr : pairs) {
                        const int64_t node = pr[0], slot = pr[1];
                        const float* w = P + p0 * k_pad + (node / NR) * kc * NR + node % NR;
                        const float* x = Xc + (slot / 2) * d + p0;
                        double acc = 0.0;
                        for (int64_t k = 0; k < kc; ++k) {
                            const double diff = static_cast<double>(x[k] - mu[k]) - static_cast<double>(w[k * NR]);
                            acc += diff * diff;
                        }
                        exact[slot] += acc;
                    }
                }
                for (int64_t i = 0; i < m; ++i) {
                    bmu[r0 + i] = idx1[i];
                    second[r0 + i] = idx2[i];
                    d1[r0 + i] = static_cast<float>(std::sqrt(exact[2 * i]));
                    d2[r0 + i] = idx2[i] >= 0 ? static_cast<float>(std::sqrt(exact[2 * i + 1])) : inf;
                }
            });
            if (sums != nullptr && counts != nullptr) {
#if CREVKIT_HAS_OPENMP
#pragma omp ordered
#endif
                {
                    if (!errors.failed())
                        errors.run([&] {
                            for (int64_t i = 0; i < m; ++i) {
                                const int64_t node = bmu[r0 + i];
                                const float* x = Xc + i * d;
                                double* __restrict s = sums + node * d;
                                for (int64_t j = 0; j < d; ++j) s[j] += static_cast<double>(x[j] - mean[j]);
                                counts[node] += 1.0;
                            }
                        });
                }
            }
        }
    }
    errors.rethrow();
}

// ---------------------------------------------------------------------------
// Map geometry and the neighbourhood update.

enum class Topology : int { Rectangular = 0, Hexagonal = 1 };
enum class Neighborhood : int { Gaussian = 0, Bubble = 1 };

// Node k = r * cols + c sits at (x, y) = (c, r) on a rectangular map and at
// (c + 0.5 * (r odd), r * sqrt(3) / 2) on a hexagonal one ("odd-r" offset
// rows), so all six hexagonal neighbours are at distance 1.0 exactly in
// exact arithmetic.  Toroidal maps wrap x with period cols and y with period
// rows (times sqrt(3)/2 for hexagonal maps, which need an even row count).
struct Geometry {
    int64_t rows = 1, cols = 1;
    Topology topology = Topology::Rectangular;
    bool toroidal = false;

    double ystep() const { return topology == Topology::Hexagonal ? std::sqrt(3.0) / 2.0 : 1.0; }
    double xshift(int64_t r) const { return (topology == Topology::Hexagonal && (r & 1)) ? 0.5 : 0.0; }
    // |dx| along x between column cs of row rs and column cd of row rd (wrapped if toroidal)
    double dx(int64_t rs, int64_t cs, int64_t rd, int64_t cd) const {
        double t = std::fabs(static_cast<double>(cs - cd) + xshift(rs) - xshift(rd));
        if (toroidal) {
            const double period = static_cast<double>(cols);
            t = std::fmod(t, period);
            t = std::min(t, period - t);
        }
        return t;
    }
    double dy(int64_t rs, int64_t rd) const {
        double t = std::fabs(static_cast<double>(rs - rd)) * ystep();
        if (toroidal) {
            const double period = static_cast<double>(rows) * ystep();
            t = std::fmod(t, period);
            t = std::min(t, period - t);
        }
        return t;
    }
};

// Per-axis Gaussian factor, zero beyond 8 sigma (< 1.3e-14): the same rule as crevkit.reference.som.
inline double gauss_factor(double t, double sigma) {
    if (t > 8.0 * sigma) return 0.0;
    return std::exp(-(t * t) / (2.0 * sigma * sigma));
}

// Bubble: weight 1 where the squared map distance is <= sigma^2 (+1e-9 for rounding), else 0.
inline bool in_bubble(double d2, double sigma) { return d2 <= sigma * sigma + 1e-9; }

namespace detail {

typedef double v8d __attribute__((vector_size(64)));

// out[t][v] = sum_{s0 <= s < s1} W[s * 4 + t] * B[s * 32 + v]   (t < 4, v < 32), s in
// increasing order: a 4 x 32 register tile (16 accumulators of 8 doubles, enough
// independent chains to hide the FMA latency) of the separable smoothing's
// matrix products.  W is a packed strip of four targets' weights, B holds 32
// features per source, both contiguous.
// With widx, source s takes its weights from W + widx[s] * 4 (the compacted
// sources of the pass along x keep their columns' weights without a gather).
// noinline: inlined into its caller, GCC 12 kept spilling accumulators inside the loop.
__attribute__((noinline)) inline void tile4x32(int64_t s0, int64_t s1, const double* __restrict W, const double* __restrict B,
                     double out[4][32], const int64_t* __restrict widx = nullptr) {
    // sixteen named accumulators (an array of vectors made GCC spill some to the stack)
    v8d a00{}, a01{}, a02{}, a03{}, a10{}, a11{}, a12{}, a13{};
    v8d a20{}, a21{}, a22{}, a23{}, a30{}, a31{}, a32{}, a33{};
    for (int64_t s = s0; s < s1; ++s) {
        v8d b0, b1, b2, b3;
        const double* bs = B + s * 32;
        std::memcpy(&b0, bs, sizeof(v8d));
        std::memcpy(&b1, bs + 8, sizeof(v8d));
        std::memcpy(&b2, bs + 16, sizeof(v8d));
        std::memcpy(&b3, bs + 24, sizeof(v8d));
        const double* w = W + (widx ? widx[s] : s) * 4;
        const double w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
        a00 += w0 * b0; a01 += w0 * b1; a02 += w0 * b2; a03 += w0 * b3;
        a10 += w1 * b0; a11 += w1 * b1; a12 += w1 * b2; a13 += w1 * b3;
        a20 += w2 * b0; a21 += w2 * b1; a22 += w2 * b2; a23 += w2 * b3;
        a30 += w3 * b0; a31 += w3 * b1; a32 += w3 * b2; a33 += w3 * b3;
    }
    const v8d* acc[4][4] = {{&a00, &a01, &a02, &a03}, {&a10, &a11, &a12, &a13},
                            {&a20, &a21, &a22, &a23}, {&a30, &a31, &a32, &a33}};
    for (int t = 0; t < 4; ++t)
        for (int v = 0; v < 4; ++v) std::memcpy(out[t] + v * 8, acc[t][v], sizeof(v8d));
}

// Precomputed weights of the separable Gaussian: per (source parity, target
// parity) a cols x cols_pad matrix along x, per target-row parity a
// rows x (its target rows, padded to 4) matrix along y, and for every tile of
// four targets the range of sources with a non-zero weight.  wxp / wyp hold
// the same weights packed per tile of four targets ([tile][source][4]), the
// layout tile4x32 streams.
struct GaussPlan {
    static constexpr int64_t W = 32;  // features per block (4 tiles of 8)
    int64_t rows = 0, cols = 0, npar = 1, cols_pad = 0;
    int64_t max_xwin = 0;  // widest source range along x of a tile of four targets
    // from this window on, the pass along x reads only sources with hits (measured: narrower, compacting costs more)
    static constexpr int64_t kSkipWindow = 48;
    std::vector<double> wx, wxp;
    std::vector<int64_t> xlo, xhi;
    std::vector<int64_t> trows[2];
    std::vector<double> wy[2], wyp[2];
    std::vector<int64_t> ylo[2], yhi[2];
    int64_t nt_pad[2] = {0, 0};

    GaussPlan(const Geometry& g, double sigma) : rows(g.rows), cols(g.cols) {
        npar = g.topology == Topology::Hexagonal ? 2 : 1;
        cols_pad = round_up(cols, 4);
        const int64_t nct = cols_pad / 4;
        wx.assign(npar * npar * cols * cols_pad, 0.0);
        xlo.assign(npar * npar * nct, 0);
        xhi.assign(npar * npar * nct, 0);
        for (int64_t ps = 0; ps < npar; ++ps)
            for (int64_t pd = 0; pd < npar; ++pd) {
                const int64_t m = ps * npar + pd;
                double* w = wx.data() + m * cols * cols_pad;
                for (int64_t cs = 0; cs < cols; ++cs)
                    for (int64_t cd = 0; cd < cols; ++cd) w[cs * cols_pad + cd] = gauss_factor(g.dx(ps, cs, pd, cd), sigma);
                for (int64_t ct = 0; ct < nct; ++ct) {
                    int64_t lo = cols, hi = 0;
                    for (int64_t cs = 0; cs < cols; ++cs)
                        for (int64_t t = 0; t < 4; ++t)
                            if (w[cs * cols_pad + ct * 4 + t] != 0.0) { lo = std::min(lo, cs); hi = std::max(hi, cs + 1); }
                    xlo[m * nct + ct] = lo < hi ? lo : 0;
                    xhi[m * nct + ct] = lo < hi ? hi : 0;
                    max_xwin = std::max(max_xwin, xhi[m * nct + ct] - xlo[m * nct + ct]);
                }
            }
        for (int64_t p = 0; p < npar; ++p) {
            for (int64_t r = 0; r < rows; ++r)
                if (npar == 1 || (r & 1) == p) trows[p].push_back(r);
            const int64_t nt = static_cast<int64_t>(trows[p].size());
            nt_pad[p] = round_up(std::max<int64_t>(nt, 1), 4);
            wy[p].assign(rows * nt_pad[p], 0.0);
            for (int64_t rs = 0; rs < rows; ++rs)
                for (int64_t t = 0; t < nt; ++t) wy[p][rs * nt_pad[p] + t] = gauss_factor(g.dy(rs, trows[p][t]), sigma);
            const int64_t ntt = nt_pad[p] / 4;
            ylo[p].assign(ntt, 0);
            yhi[p].assign(ntt, 0);
            for (int64_t tt = 0; tt < ntt; ++tt) {
                int64_t lo = rows, hi = 0;
                for (int64_t rs = 0; rs < rows; ++rs)
                    for (int64_t t = 0; t < 4; ++t)
                        if (wy[p][rs * nt_pad[p] + tt * 4 + t] != 0.0) { lo = std::min(lo, rs); hi = std::max(hi, rs + 1); }
                ylo[p][tt] = lo < hi ? lo : 0;
                yhi[p][tt] = lo < hi ? hi : 0;
            }
            wyp[p].assign(rows * nt_pad[p], 0.0);
            for (int64_t tt = 0; tt < ntt; ++tt)
                for (int64_t rs = 0; rs < rows; ++rs)
                    for (int64_t t = 0; t < 4; ++t)
                        wyp[p][(tt * rows + rs) * 4 + t] = wy[p][rs * nt_pad[p] + tt * 4 + t];
        }
        wxp.assign(wx.size(), 0.0);
        for (int64_t m = 0; m < npar * npar; ++m)
            for (int64_t ct = 0; ct < nct; ++ct)
                for (int64_t cs = 0; cs < cols; ++cs)
                    for (int64_t t = 0; t < 4; ++t)
                        wxp[((m * nct + ct) * cols + cs) * 4 + t] = wx[m * cols * cols_pad + cs * cols_pad + ct * 4 + t];
    }
    int64_t tbuf_size() const { return rows * npar * cols_pad * W; }
    int64_t srcbuf_size() const { return cols * W; }
};

// Per map row, the columns of the nodes with hits (count != 0), in increasing
// order: CSR, ptr has rows + 1 entries.
struct HitList {
    std::vector<int64_t> ptr, cols;
    HitList(const double* counts, int64_t rows, int64_t n_cols) : ptr(rows + 1, 0) {
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t c = 0; c < n_cols; ++c)
                if (counts[r * n_cols + c] != 0.0) cols.push_back(c);
            ptr[r + 1] = static_cast<int64_t>(cols.size());
        }
        cols.push_back(0);  // data() stays valid when no node has a hit
    }
};

// Gaussian smoothing of features [0, w) (w <= 32) of src (node rows, stride ld),
// emit(node, values, b0, nb) receives features b0 .. b0 + nb of a node.
// With wide windows the pass along x reads only the source nodes listed in
// hits (per row r, columns hits.cols[hits.ptr[r] .. hits.ptr[r + 1]), in
// increasing order: the nodes with hits).  A node without hits has an
// all-zero sum, and skipping a zero term leaves every partial sum unchanged,
// so the result is the dense one (the sign of an exact zero aside).  On a
// large map most nodes have no hit (10,000 samples on a 200 x 300 map hit at
// most a sixth): their rows of src are never read, which was most of this
// pass's time (a strided walk over all of src for every feature block).
// srcbuf (cols * W): caller's scratch.
template <class Emit>
void gaussian_block(const GaussPlan& pl, const double* src, int64_t ld, int64_t w, const HitList& hits, double* tbuf,
                    double* srcbuf, Emit&& emit) {
    constexpr int64_t W = GaussPlan::W;
    static_assert(W == 32, "tile4x32 covers a whole feature block");
    const int64_t rows = pl.rows, cols = pl.cols, npar = pl.npar, cols_pad = pl.cols_pad, nct = cols_pad / 4;
    double out[4][32];
    // step 1: along x, per source row, for each target parity
    for (int64_t r = 0; r < rows; ++r) {
        // the row's sources with hits, compacted (dense: every source); with
        // narrow windows (late epochs) there is little to skip and the plain
        // copy is faster
        const bool dense = pl.max_xwin < GaussPlan::kSkipWindow;
        const int64_t* hs = hits.cols.data() + hits.ptr[r];
        const int64_t h = dense ? cols : hits.ptr[r + 1] - hits.ptr[r];
        for (int64_t i = 0; i < h; ++i) {
            const double* s = src + (r * cols + (dense ? i : hs[i])) * ld;
            double* dst = srcbuf + i * W;
            for (int64_t b = 0; b < W; ++b) dst[b] = b < w ? s[b] : 0.0;
        }
        const bool compact = h < cols;  // else srcbuf holds every column in place
        const int64_t ps = npar == 2 ? (r & 1) : 0;
        for (int64_t pd = 0; pd < npar; ++pd) {
            const int64_t m = ps * npar + pd;
            // tbuf layout [pd][target column cd][source row r][W]: step 2 reads a
            // column's values over all source rows as one contiguous strip
            for (int64_t ct = 0; ct < nct; ++ct) {
                const int64_t lo = pl.xlo[m * nct + ct], hi = pl.xhi[m * nct + ct];
                const double* wt = pl.wxp.data() + (m * nct + ct) * cols * 4;
                if (!compact) {
                    tile4x32(lo, hi, wt, srcbuf, out);
                } else {
                    // sources lo <= hs[i] < hi, in increasing order
                    const int64_t i0 = std::lower_bound(hs, hs + h, lo) - hs;
                    const int64_t i1 = std::lower_bound(hs + i0, hs + h, hi) - hs;
                    tile4x32(i0, i1, wt, srcbuf, out, hs);
                }
                for (int64_t i = 0; i < 4 && ct * 4 + i < cols; ++i)
                    std::memcpy(tbuf + ((pd * cols_pad + ct * 4 + i) * rows + r) * W, out[i], W * sizeof(double));
            }
        }
    }
    // step 2: along y, per target-row parity and target column
    for (int64_t p = 0; p < npar; ++p) {
        const int64_t nt = static_cast<int64_t>(pl.trows[p].size());
        const int64_t ntt = pl.nt_pad[p] / 4;
        for (int64_t cd = 0; cd < cols; ++cd) {
            const double* B = tbuf + (p * cols_pad + cd) * rows * W;
            for (int64_t tt = 0; tt < ntt; ++tt) {
                tile4x32(pl.ylo[p][tt], pl.yhi[p][tt], pl.wyp[p].data() + tt * rows * 4, B, out);
                for (int64_t i = 0; i < 4 && tt * 4 + i < nt; ++i) emit(pl.trows[p][tt * 4 + i] * cols + cd, out[i], 0, w);
            }
        }
    }
}

// Bubble neighbourhood, sparse: each target node sums the sources inside the
// radius, found in a window of rows / columns around it.
template <class Emit>
void bubble_sparse(const double* src, int64_t ld, int64_t width, const Geometry& g, double sigma,
                   std::vector<double>& acc, Emit&& emit) {
    const int64_t rows = g.rows, cols = g.cols;
    const int64_t rwin = static_cast<int64_t>(std::floor(sigma / g.ystep())) + 1;
    const int64_t cwin = static_cast<int64_t>(std::floor(sigma)) + 1;
    for (int64_t rd = 0; rd < rows; ++rd) {
        for (int64_t cd = 0; cd < cols; ++cd) {
            std::fill(acc.begin(), acc.begin() + width, 0.0);
            auto visit_row = [&](int64_t rs) {
                const double ddy = g.dy(rs, rd);
                auto visit = [&](int64_t cs) {
                    const double ddx = g.dx(rs, cs, rd, cd);
                    if (!in_bubble(ddx * ddx + ddy * ddy, sigma)) return;
                    const double* s = src + (rs * cols + cs) * ld;
                    for (int64_t b = 0; b < width; ++b) acc[b] += s[b];
                };
                if (g.toroidal && 2 * cwin + 1 < cols) {
                    for (int64_t o = -cwin; o <= cwin; ++o) visit(((cd + o) % cols + cols) % cols);
                } else if (g.toroidal) {
                    for (int64_t cs = 0; cs < cols; ++cs) visit(cs);
                } else {
                    for (int64_t cs = std::max<int64_t>(0, cd - cwin); cs <= std::min(cols - 1, cd + cwin); ++cs)
                        visit(cs);
                }
            };
            if (g.toroidal && 2 * rwin + 1 < rows) {
                for (int64_t o = -rwin; o <= rwin; ++o) visit_row(((rd + o) % rows + rows) % rows);
            } else if (g.toroidal) {
                for (int64_t rs = 0; rs < rows; ++rs) visit_row(rs);
            } else {
                for (int64_t rs = std::max<int64_t>(0, rd - rwin); rs <= std::min(rows - 1, rd + rwin); ++rs)
                    visit_row(rs);
            }
            emit(rd * cols + cd, acc.data());
        }
    }
}

}  // namespace detail

// Batch update.  sums: n_nodes x d centred per-node sums (double), counts:
// per-node hit counts; a node with count 0 has an all-zero sum by
// construction, and the Gaussian path does not read such rows (they may be
// untouched, never-faulted pages).  P (the centred codebook in packed layout) is overwritten with
// sum_j h_jk sums_j / sum_j h_jk counts_j where that denominator is > 0 and
// kept otherwise.  Returns the number of nodes kept.  Threads split the
// feature axis, so the result does not depend on the thread count.
inline int64_t smooth(const double* sums, const double* counts, int64_t d, const Geometry& g, Neighborhood nb,
                      double sigma, float* P, int n_threads) {
    if (g.rows <= 0 || g.cols <= 0) throw std::invalid_argument("map must have rows, cols >= 1");
    if (!(sigma > 0.0) || !std::isfinite(sigma)) throw std::invalid_argument("sigma must be finite and > 0");
    if (g.toroidal && g.topology == Topology::Hexagonal && (g.rows % 2) != 0)
        throw std::invalid_argument("a toroidal hexagonal map needs an even number of rows");
    const int64_t n_nodes = g.rows * g.cols;

    std::unique_ptr<detail::GaussPlan> plan;
    if (nb == Neighborhood::Gaussian) plan = std::make_unique<detail::GaussPlan>(g, sigma);

    // denominators sum_j h_jk counts_j (width 1), by the same code path as the numerators
    std::vector<double> den(n_nodes, 0.0);
    const detail::HitList hits(counts, g.rows, g.cols);
    if (plan) {
        auto tbuf = detail::scratch<double>(plan->tbuf_size());
        auto srcbuf = detail::scratch<double>(plan->srcbuf_size());
        detail::gaussian_block(*plan, counts, 1, 1, hits, tbuf.get(), srcbuf.get(),
                               [&](int64_t k, const double* v, int64_t, int64_t) { den[k] = v[0]; });
    } else {
        std::vector<double> acc(1);
        detail::bubble_sparse(counts, 1, 1, g, sigma, acc, [&](int64_t k, const double* v) { den[k] = v[0]; });
    }
    int64_t kept = 0;
    for (int64_t k = 0; k < n_nodes; ++k) kept += den[k] > 0.0 ? 1 : 0;

    const int64_t width = nb == Neighborhood::Gaussian ? detail::GaussPlan::W : 256;
    static_assert(detail::KC % detail::GaussPlan::W == 0 && detail::KC % 256 == 0, "smoothing widths must divide KC");
    const int64_t n_blocks = (d + width - 1) / width;
    const int nt = clamp_threads(n_threads);
    ParallelErrors errors;
#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        detail::ScratchBuffer<double> tbuf, srcbuf;
        detail::ScratchBuffer<float> obuf;
        std::vector<double> acc;
        errors.run([&] {
            if (plan) {
                tbuf = detail::scratch<double>(plan->tbuf_size());
                srcbuf = detail::scratch<double>(plan->srcbuf_size());
                obuf = detail::scratch<float>(n_nodes * width);
            } else {
                acc.resize(width);
            }
        });
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
            if (errors.failed()) continue;
            errors.run([&] {
                const int64_t j0 = blk * width;
                const int64_t w = std::min(width, d - j0);
                // j0 .. j0 + w lies inside one KC block of the packed layout (width divides KC)
                auto emit = [&](int64_t k, const double* v, int64_t b0, int64_t nbv) {
                    if (!(den[k] > 0.0)) return;  // no neighbourhood weight: keep the node
                    float* out = P + detail::packed_offset(k, j0 + b0, n_nodes, d);
                    const double dk = den[k];
                    for (int64_t b = 0; b < nbv; ++b) out[b * detail::NR] = static_cast<float>(v[b] / dk);
                };
                if (plan) {
                    // collect node-major, then write the packed layout panel by panel (sequentially)
                    float* ob = obuf.get();
                    auto collect = [&](int64_t k, const double* v, int64_t b0, int64_t nbv) {
                        const double dk = den[k];
                        for (int64_t b = 0; b < nbv; ++b) ob[k * width + b0 + b] = static_cast<float>(v[b] / dk);
                    };
                    detail::gaussian_block(*plan, sums + j0, d, w, hits, tbuf.get(), srcbuf.get(),
                                           collect);
                    const int64_t k_pad = detail::round_up(n_nodes, detail::NR);
                    for (int64_t g0 = 0; g0 < k_pad; g0 += detail::NR) {
                        float* base = P + detail::packed_offset(g0, j0, n_nodes, d);
                        for (int64_t b = 0; b < w; ++b)
                            for (int64_t jj = 0; jj < detail::NR; ++jj) {
                                const int64_t k = g0 + jj;
                                if (k < n_nodes && den[k] > 0.0) base[b * detail::NR + jj] = ob[k * width + b];
                            }
                    }
                } else
                    detail::bubble_sparse(sums + j0, d, w, g, sigma, acc,
                                          [&](int64_t k, const double* v) { emit(k, v, 0, w); });
            });
        }
    }
    errors.rethrow();
    return n_nodes - kept;
}

}  // namespace crevkit::som
