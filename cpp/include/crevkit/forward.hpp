// Waveform forward model: DEM tiles -> simulated laser-altimeter returns.
//
// Pure C++ over raw contiguous buffers; policy (instrument presets, footprint
// and pulse shapes, validation) lives in Python (crevkit.simulate), which
// hands this kernel a footprint weight image and a sampled transmit pulse.
//
// Per tile:
//   1. h = cos(tilt) * z + tilt_x[j] + tilt_y[i]   (range toward the instrument;
//      h = z at nadir), NaN pixels excluded; h_max = highest valid point.
//   2. Each valid pixel lands at fractional bin u = lead + (h_max - h) * bins_per_metre,
//      i.e. at the nearest bin b plus an offset d in [-1/2, 1/2).  Per bin we
//      accumulate the weight moments W = sum w, M1 = sum w d, M2 = sum w d^2
//      (weight = footprint weight, optionally times the cosine of the local
//      incidence angle from the DEM gradient).
//   3. The moments are convolved with the transmit pulse p and its discrete
//      first and second differences p', p'' (a second-order Taylor shift:
//      p(t - b - d) ~ p - d p' + d^2/2 p''), a separate step so another
//      pulse costs only a convolution.  With discrete central differences
//      this keeps the zeroth, first and second moments of the return exact for
//      any sub-bin distribution (no truncation bias, no added width), and
//      the result is cut to n_samples; the tiny negative tails the expansion
//      can leave are set to 0.
//   4. Optionally normalized to unit sum; a tile with no energy in the window
//      (or with +-inf heights) gets a status code and an all-zero row.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "crevkit/parallel.hpp"

namespace crevkit::forward {

struct Options {
    int64_t n_samples = 544;        // output samples per waveform
    double lead_bins = 10.0;        // bin of the highest return
    double bins_per_metre = 6.671;  // 2 / (c * bin width)
    double cos_tilt = 1.0;          // cos(off-nadir angle); 1 at nadir
    bool tilted = false;            // apply tilt_x / tilt_y / cos_tilt
    bool incidence = false;         // weight by cos(incidence angle)
    double pixel_size = 0.5;        // metres (for gradients)
    double look[3] = {0.0, 0.0, 1.0};  // unit vector ground -> instrument (x east, y north, z up)
    bool normalize = true;          // unit-sum output
    int n_threads = 1;
};

namespace detail {

// Number of interleaved histogram copies: consecutive pixels of a smooth tile
// land in the same bin, and separate copies break that store-to-load chain.
constexpr int kCopies = 8;
constexpr int64_t kBlock = 512;

// GCC/Clang vector extensions: portable SIMD without intrinsics.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

// Effective height of pixel (i, j) as seen from the instrument.
template <bool Tilted>
inline double effective_height(float z, int64_t i, int64_t j, const Options& o, const float* tilt_x,
                               const float* tilt_y) {
    if constexpr (Tilted) {
        return o.cos_tilt * static_cast<double>(z) + static_cast<double>(tilt_x[j]) + static_cast<double>(tilt_y[i]);
    } else {
        (void)i; (void)j; (void)o; (void)tilt_x; (void)tilt_y;
        return static_cast<double>(z);
    }
}

// d z / d(axis) by central differences, one-sided next to NaN or the edge,
// 0 where both neighbours are missing (matches crevkit.reference).
inline double gradient_1d(float left, float centre, float right, bool has_left, bool has_right, double step) {
    const bool l = has_left && left == left;
    const bool r = has_right && right == right;
    if (l && r) return (static_cast<double>(right) - static_cast<double>(left)) / (2.0 * step);
    if (r) return (static_cast<double>(right) - static_cast<double>(centre)) / step;
    if (l) return (static_cast<double>(centre) - static_cast<double>(left)) / step;
    return 0.0;
}

// cos of the angle between the surface normal and the direction to the
// instrument; faces turned away from it (cos < 0) get no weight.
inline double incidence_cosine(const float* tile, int64_t ny, int64_t nx, int64_t i, int64_t j, const Options& o) {
    const float* row = tile + i * nx;
    const float z = row[j];
    const double gx = gradient_1d(j > 0 ? row[j - 1] : 0.f, z, j + 1 < nx ? row[j + 1] : 0.f, j > 0, j + 1 < nx,
                                  o.pixel_size);
    // rows run north -> south, so d/dy (north) = -d/drow
    const double grow = gradient_1d(i > 0 ? tile[(i - 1) * nx + j] : 0.f, z,
                                    i + 1 < ny ? tile[(i + 1) * nx + j] : 0.f, i > 0, i + 1 < ny, o.pixel_size);
    const double gy = -grow;
    const double c = (-gx * o.look[0] - gy * o.look[1] + o.look[2]) / std::sqrt(1.0 + gx * gx + gy * gy);
    return c > 0.0 ? c : 0.0;
}

// Highest valid height of a flat run of pixels; sets has_inf if any is +-inf.
inline double max_height(const float* z, int64_t size, bool& has_inf) {
    const float inf = std::numeric_limits<float>::infinity();
    v8f m = {-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf};
    v8i bad = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t p = 0;
    for (; p + 8 <= size; p += 8) {
        v8f v;
        std::memcpy(&v, z + p, sizeof v);
        m = v > m ? v : m;  // NaN compares false: never wins
        bad |= (v == inf) | (v == -inf);
    }
    float best = -inf;
    bool any_bad = false;
    for (int k = 0; k < 8; ++k) {
        best = m[k] > best ? m[k] : best;
        any_bad = any_bad || bad[k] != 0;
    }
    for (; p < size; ++p) {
        best = z[p] > best ? z[p] : best;
        any_bad = any_bad || z[p] == inf || z[p] == -inf;
    }
    has_inf = any_bad;
    return static_cast<double>(best);
}

// Scatter a block of (bin, w, w d, w d^2) into the interleaved copies.  Each
// bin holds its three moments side by side (16 bytes), so one pixel costs a
// single load-add-store.  Float sums: a bin collects at most a few thousand
// weights <= 1, so the relative rounding error stays near 1e-6.
inline void scatter_block(const int32_t* __restrict bins, const float* __restrict w, const float* __restrict d,
                          int64_t len, float* __restrict sums, int64_t stride) {
    v4f* __restrict h = reinterpret_cast<v4f*>(sums);
    int64_t t = 0;
    for (; t + kCopies <= len; t += kCopies) {
        for (int c = 0; c < kCopies; ++c) {
            const float wd = w[t + c] * d[t + c];
            h[c * stride + bins[t + c]] += v4f{w[t + c], wd, wd * d[t + c], 0.0f};
        }
    }
    for (; t < len; ++t) {
        const float wd = w[t] * d[t];
        h[bins[t]] += v4f{w[t], wd, wd * d[t], 0.0f};
    }
}

// Deposit one tile into `sums` (kCopies x stride bins of {W, M1, M2, 0}).
// Returns false if the tile has no valid pixel; sets has_inf on +-inf input.
template <bool Tilted, bool Incidence>
bool deposit_tile(const float* tile, int64_t ny, int64_t nx, const float* weights, const float* tilt_x,
                  const float* tilt_y, const Options& o, int64_t hist_len, float* sums, bool& has_inf) {
    const int64_t size = ny * nx;
    double hmax = max_height(tile, size, has_inf);
    if (has_inf || !(hmax > -std::numeric_limits<double>::infinity())) return false;
    if constexpr (Tilted) {
        hmax = -std::numeric_limits<double>::infinity();
        for (int64_t i = 0; i < ny; ++i)
            for (int64_t j = 0; j < nx; ++j) {
                const float z = tile[i * nx + j];
                if (z == z) hmax = std::max(hmax, effective_height<true>(z, i, j, o, tilt_x, tilt_y));
            }
    }
    // Pixels past the window (and NaN) go to a junk bin at the end (branch-free).
    const double limit = static_cast<double>(hist_len);
    const double lead = o.lead_bins;
    const double scale = o.bins_per_metre;
    const int64_t stride = hist_len + 1;
    alignas(64) int32_t bins[kBlock];
    alignas(64) float wsum[kBlock];
    alignas(64) float offset[kBlock];
    if constexpr (!Tilted && !Incidence) {
        // fast path: the tile is one flat run of pixels (the loop vectorizes;
        // positions in double so bin choices match the float64 twin)
        for (int64_t p0 = 0; p0 < size; p0 += kBlock) {
            const int64_t len = std::min(kBlock, size - p0);
            const float* __restrict z = tile + p0;
            const float* __restrict w = weights + p0;
            int32_t* __restrict bp = bins;
            float* __restrict wp = wsum;
            float* __restrict dp = offset;
            for (int64_t t = 0; t < len; ++t) {
                double u = lead + (hmax - static_cast<double>(z[t])) * scale;
                u = u < limit ? u : limit;  // NaN and far-away pixels -> junk bin
                const int32_t b = static_cast<int32_t>(u + 0.5);
                bp[t] = b;
                wp[t] = w[t];
                dp[t] = static_cast<float>(u - static_cast<double>(b));
            }
            scatter_block(bins, wsum, offset, len, sums, stride);
        }
    } else {
        for (int64_t i = 0; i < ny; ++i) {
            const float* row = tile + i * nx;
            const float* wrow = weights + i * nx;
            for (int64_t j0 = 0; j0 < nx; j0 += kBlock) {
                const int64_t len = std::min(kBlock, nx - j0);
                for (int64_t t = 0; t < len; ++t) {
                    const int64_t j = j0 + t;
                    const float z = row[j];
                    double u = lead + (hmax - effective_height<Tilted>(z, i, j, o, tilt_x, tilt_y)) * scale;
                    u = (u < limit) ? u : limit;
                    const int32_t b = static_cast<int32_t>(u + 0.5);
                    double wt = static_cast<double>(wrow[j]);
                    if constexpr (Incidence) {
                        if (z == z) wt *= incidence_cosine(tile, ny, nx, i, j, o);
                    }
                    bins[t] = b;
                    wsum[t] = static_cast<float>(wt);
                    offset[t] = static_cast<float>(u - static_cast<double>(b));
                }
                scatter_block(bins, wsum, offset, len, sums, stride);
            }
        }
    }
    return true;
}

}  // namespace detail

// Simulate n_tiles waveforms.
//   tiles:    n_tiles x ny x nx float32 heights (NaN = nodata)
//   weights:  ny x nx footprint energy weights
//   tilt_x:   nx range-tilt terms (metres) when o.tilted, else may be null; tilt_y: ny
//   pulse:    3 x pulse_len: the pulse and its first and second central
//             differences at the bin width; column pulse_centre is zero delay
//   out:      n_tiles x n_samples float32
//   status:   n_tiles codes: 0 ok, 1 no valid pixel or no energy in the window, 2 +-inf heights
inline void simulate_waveforms(const float* tiles, int64_t n_tiles, int64_t ny, int64_t nx, const float* weights,
                               const float* tilt_x, const float* tilt_y, const double* pulse, int64_t pulse_len,
                               int64_t pulse_centre, const Options& o, float* out, uint8_t* status) {
    if (n_tiles < 0 || ny <= 0 || nx <= 0) throw std::invalid_argument("tiles: bad shape");
    if (o.n_samples <= 0) throw std::invalid_argument("n_samples must be > 0");
    if (pulse_len <= 0 || pulse_centre < 0 || pulse_centre >= pulse_len)
        throw std::invalid_argument("pulse: pulse_centre must index the pulse");
    // Output sample k collects histogram bins k - (pulse_len-1-centre) .. k + centre.
    const int64_t hist_len = o.n_samples + pulse_centre;
    const int64_t stride = hist_len + 1;  // + junk bin
    const int64_t after = pulse_len - 1 - pulse_centre;
    const int64_t tile_size = ny * nx;
    const int n_threads = clamp_threads(o.n_threads);
    ParallelErrors errors;

#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        std::vector<float> sums;      // kCopies x stride x {W, M1, M2, 0}
        std::vector<double> moments;  // 3 x (after + hist_len): moments with `after` leading zeros
        std::vector<double> wave;
        errors.run([&] {
            sums.assign(static_cast<size_t>(detail::kCopies * stride * 4), 0.0f);
            moments.assign(static_cast<size_t>(3 * (after + hist_len)), 0.0);
            wave.assign(static_cast<size_t>(o.n_samples), 0.0);
        });
        const int64_t mstride = after + hist_len;
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 8)
#endif
        for (int64_t n = 0; n < n_tiles; ++n) {
            if (errors.failed()) continue;
            errors.run([&] {
                const float* tile = tiles + n * tile_size;
                float* dst = out + n * o.n_samples;
                std::fill(sums.begin(), sums.end(), 0.0f);
                bool has_inf = false, ok;
                if (o.tilted) {
                    ok = o.incidence ? detail::deposit_tile<true, true>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, sums.data(), has_inf)
                                     : detail::deposit_tile<true, false>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, sums.data(), has_inf);
                } else {
                    ok = o.incidence ? detail::deposit_tile<false, true>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, sums.data(), has_inf)
                                     : detail::deposit_tile<false, false>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, sums.data(), has_inf);
                }
                if (!ok) {
                    status[n] = has_inf ? 2 : 1;
                    std::fill(dst, dst + o.n_samples, 0.0f);
                    return;
                }
                // combine the copies in a fixed order (thread-count independent)
                for (int m = 0; m < 3; ++m) {
                    double* mom = moments.data() + m * mstride + after;
                    for (int64_t t = 0; t < hist_len; ++t) {
                        double acc = 0.0;
                        for (int c = 0; c < detail::kCopies; ++c) acc += static_cast<double>(sums[4 * (c * stride + t) + m]);
                        mom[t] = acc;
                    }
                }
                // wave[k] = sum_j (W p - M1 p' + M2/2 p'')[j] at bin k + centre - j;
                // the `after` leading zeros keep every index in range.
                std::fill(wave.begin(), wave.end(), 0.0);
                static const double coeff[3] = {1.0, -1.0, 0.5};
                for (int m = 0; m < 3; ++m) {
                    const double* mom = moments.data() + m * mstride + after;
                    const double* kernel = pulse + m * pulse_len;
                    for (int64_t j = 0; j < pulse_len; ++j) {
                        const double pj = coeff[m] * kernel[j];
                        const double* src = mom + pulse_centre - j;
                        double* wv = wave.data();
                        for (int64_t k = 0; k < o.n_samples; ++k) wv[k] += pj * src[k];
                    }
                }
                double total = 0.0;
                for (int64_t k = 0; k < o.n_samples; ++k) {
                    wave[k] = wave[k] > 0.0 ? wave[k] : 0.0;
                    total += wave[k];
                }
                const bool is_empty = !(total > 0.0);
                status[n] = is_empty ? 1 : 0;
                const double s = (o.normalize && !is_empty) ? 1.0 / total : 1.0;
                for (int64_t k = 0; k < o.n_samples; ++k) dst[k] = is_empty ? 0.0f : static_cast<float>(wave[k] * s);
            });
        }
    }
    errors.rethrow();
}

}  // namespace crevkit::forward
