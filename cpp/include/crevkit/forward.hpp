// Waveform forward model: DEM tiles -> simulated laser-altimeter returns.
//
// Pure C++ over raw contiguous buffers; policy (instrument presets, footprint
// and pulse shapes, validation) lives in Python (crevkit.simulate), which
// hands this kernel a footprint weight image and a sampled transmit pulse.
//
// Per tile:
//   1. h = cos(tilt) * z + tilt_x[j] + tilt_y[i]   (range toward the instrument;
//      h = z at nadir), NaN pixels excluded; h_max = highest valid point.
//   2. Each valid pixel lands at fractional bin u = lead + (h_max - h) * bins_per_metre
//      and is split linearly between bins floor(u) and floor(u)+1 ("cloud in
//      cell"), so the histogram's first moment is exact (no truncation bias).
//      Weight = footprint weight (optionally times the cosine of the local
//      incidence angle from the DEM gradient).
//   3. The histogram is convolved with the sampled transmit pulse (a separate
//      step: another pulse costs only a convolution) and cut to n_samples.
//   4. Optionally normalized to unit sum; a tile with no energy in the window
//      is flagged in `empty` and left all-zero.
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
// land in the same bin, and four copies break that store-to-load chain.
constexpr int kCopies = 4;

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

template <bool Tilted, bool Incidence>
void deposit_tile(const float* tile, int64_t ny, int64_t nx, const float* weights, const float* tilt_x,
                  const float* tilt_y, const Options& o, int64_t hist_len, double* hist4) {
    // pass 1: highest valid effective height
    double hmax = -std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < ny; ++i) {
        const float* row = tile + i * nx;
        if constexpr (!Tilted) {
            float m = -std::numeric_limits<float>::infinity();
            for (int64_t j = 0; j < nx; ++j) m = row[j] > m ? row[j] : m;  // NaN never wins
            hmax = std::max(hmax, static_cast<double>(m));
        } else {
            for (int64_t j = 0; j < nx; ++j) {
                if (row[j] == row[j]) hmax = std::max(hmax, effective_height<true>(row[j], i, j, o, tilt_x, tilt_y));
            }
        }
    }
    if (!(hmax > -std::numeric_limits<double>::infinity())) return;  // no valid pixel

    // Pixels past the window go to two junk bins at the end (branch-free).
    const double limit = static_cast<double>(hist_len);
    const double lead = o.lead_bins;
    const double scale = o.bins_per_metre;
    constexpr int64_t kBlock = 256;
    int32_t bins[kBlock];
    double w_lo[kBlock], w_hi[kBlock];
    for (int64_t i = 0; i < ny; ++i) {
        const float* row = tile + i * nx;
        const float* wrow = weights + i * nx;
        for (int64_t j0 = 0; j0 < nx; j0 += kBlock) {
            const int64_t len = std::min(kBlock, nx - j0);
            // vectorizable part: positions and split weights
            for (int64_t t = 0; t < len; ++t) {
                const int64_t j = j0 + t;
                const float z = row[j];
                double u = lead + (hmax - effective_height<Tilted>(z, i, j, o, tilt_x, tilt_y)) * scale;
                u = (u < limit) ? u : limit;  // NaN and far-away pixels -> junk
                const int32_t b = static_cast<int32_t>(u);
                const double f = u - static_cast<double>(b);
                double w = static_cast<double>(wrow[j]);
                if constexpr (Incidence) {
                    if (z == z) w *= incidence_cosine(tile, ny, nx, i, j, o);
                }
                bins[t] = b;
                w_lo[t] = w - w * f;
                w_hi[t] = w * f;
            }
            // scatter: interleaved copies break store-forwarding chains
            for (int64_t t = 0; t < len; ++t) {
                double* h = hist4 + (t & (kCopies - 1)) * (hist_len + 2);
                h[bins[t]] += w_lo[t];
                h[bins[t] + 1] += w_hi[t];
            }
        }
    }
}

}  // namespace detail

// Simulate n_tiles waveforms.
//   tiles:    n_tiles x ny x nx float32 heights (NaN = nodata)
//   weights:  ny x nx footprint energy weights
//   tilt_x:   nx range-tilt terms (metres) when o.tilted, else may be null; tilt_y: ny
//   pulse:    pulse_len samples at the bin width; pulse[pulse_centre] is zero delay
//   out:      n_tiles x n_samples float32; empty: n_tiles flags (1 = no energy)
inline void simulate_waveforms(const float* tiles, int64_t n_tiles, int64_t ny, int64_t nx, const float* weights,
                               const float* tilt_x, const float* tilt_y, const double* pulse, int64_t pulse_len,
                               int64_t pulse_centre, const Options& o, float* out, uint8_t* empty) {
    if (n_tiles < 0 || ny <= 0 || nx <= 0) throw std::invalid_argument("tiles: bad shape");
    if (o.n_samples <= 0) throw std::invalid_argument("n_samples must be > 0");
    if (pulse_len <= 0 || pulse_centre < 0 || pulse_centre >= pulse_len)
        throw std::invalid_argument("pulse: pulse_centre must index the pulse");
    // Output sample k collects histogram bins k - (pulse_len-1-centre) .. k + centre.
    const int64_t hist_len = o.n_samples + pulse_centre;
    const int64_t stride = hist_len + 2;
    const int64_t tile_size = ny * nx;
    const int n_threads = clamp_threads(o.n_threads);
    ParallelErrors errors;

#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        std::vector<double> hist4;
        std::vector<double> hist;
        std::vector<double> wave;
        errors.run([&] {
            hist4.assign(static_cast<size_t>(detail::kCopies * stride), 0.0);
            hist.assign(static_cast<size_t>(hist_len), 0.0);
            wave.assign(static_cast<size_t>(o.n_samples), 0.0);
        });
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 8)
#endif
        for (int64_t n = 0; n < n_tiles; ++n) {
            if (errors.failed()) continue;
            errors.run([&] {
                const float* tile = tiles + n * tile_size;
                std::fill(hist4.begin(), hist4.end(), 0.0);
                if (o.tilted) {
                    if (o.incidence)
                        detail::deposit_tile<true, true>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, hist4.data());
                    else
                        detail::deposit_tile<true, false>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, hist4.data());
                } else {
                    if (o.incidence)
                        detail::deposit_tile<false, true>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, hist4.data());
                    else
                        detail::deposit_tile<false, false>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, hist4.data());
                }
                for (int64_t t = 0; t < hist_len; ++t) {
                    double s = 0.0;
                    for (int c = 0; c < detail::kCopies; ++c) s += hist4[c * stride + t];
                    hist[t] = s;
                }
                // convolution with the pulse, window only
                const int64_t after = pulse_len - 1 - pulse_centre;
                double total = 0.0;
                for (int64_t k = 0; k < o.n_samples; ++k) {
                    const int64_t t0 = std::max<int64_t>(0, k - after);
                    const int64_t t1 = std::min<int64_t>(hist_len - 1, k + pulse_centre);
                    double acc = 0.0;
                    // pulse index m = k - t + centre
                    for (int64_t t = t0; t <= t1; ++t) acc += hist[t] * pulse[k - t + pulse_centre];
                    wave[k] = acc;
                    total += acc;
                }
                float* dst = out + n * o.n_samples;
                const bool is_empty = !(total > 0.0);
                empty[n] = is_empty ? 1 : 0;
                const double s = (o.normalize && !is_empty) ? 1.0 / total : 1.0;
                for (int64_t k = 0; k < o.n_samples; ++k) dst[k] = is_empty ? 0.0f : static_cast<float>(wave[k] * s);
            });
        }
    }
    errors.rethrow();
}

}  // namespace crevkit::forward
