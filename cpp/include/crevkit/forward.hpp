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
//      i.e. at the nearest bin b plus an offset d in [-1/2, 1/2].  Per bin we
//      accumulate the weight moments W = sum w, M1 = sum w d, M2 = sum w d^2
//      (weight = footprint weight, optionally times the cosine of the local
//      incidence angle from the DEM gradient).  h, u, b and d are computed in
//      float32 with one rounding per operation, in the order written here
//      (b = round half to even): crevkit.reference does exactly the same, so
//      both put every pixel in the same bin with the same offset.
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
//
// Speed (GLAS, 200 x 200 tiles): the cost is the per-pixel scatter into the
// histogram.  Pixels go through in groups of 16: AVX-512 turns a group into
// ready-made {w, w d, w d^2, 0} entries and histogram byte offsets in a small
// ring buffer while an earlier group is added to the histogram, one
// load-add-store per pixel (without AVX-512: the same in strips of 256, the
// bin loop vectorized by the compiler).  The min/max pass reads the tile
// once; while a tile is binned the next one is read ahead into cache.  Only
// the bins a tile can reach ([bin of h_max, bin of h_min]) are combined,
// convolved and cleared.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

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

// Interleaved histogram copies (bin-major: the copies of one bin are
// adjacent): consecutive pixels of a smooth tile land in the same bin, and
// separate copies break that store-to-load chain.
constexpr int kCopies = 8;
constexpr int kBinShift = 7;  // log2(kCopies * 16 bytes)
static_assert((1 << kBinShift) == kCopies * 16, "one bin = kCopies vectors of 16 bytes");
constexpr int64_t kConvBlock = 16;   // output samples held in registers by the convolution

// GCC/Clang vector extension: one histogram entry {W, M1, M2, 0}.
typedef float v4f __attribute__((vector_size(16)));

// Per-strip constants, all float32 (see step 2 above).
struct BinMap {
    float hmax, lead, scale, limit;
};

// Fractional bin of height h: lead + (hmax - h) * scale, capped at the junk
// bin `limit` (NaN goes there too: NaN < limit is false).
inline float bin_position(float h, const BinMap& m) {
    const float u = m.lead + (m.hmax - h) * m.scale;
    return u < m.limit ? u : m.limit;
}

// Lowest and highest non-NaN value of a flat run (lo > hi if there is none).
inline void min_max(const float* z, int64_t size, float& lo, float& hi) {
    const float inf = std::numeric_limits<float>::infinity();
    float l = inf, h = -inf;
    int64_t p = 0;
#if defined(__AVX512F__)
    // max(v, m) returns m when v is NaN (second operand), so NaN never wins
    __m512 l0 = _mm512_set1_ps(inf), l1 = l0, h0 = _mm512_set1_ps(-inf), h1 = h0;
    for (; p + 32 <= size; p += 32) {
        const __m512 a = _mm512_loadu_ps(z + p), b = _mm512_loadu_ps(z + p + 16);
        l0 = _mm512_min_ps(a, l0);
        h0 = _mm512_max_ps(a, h0);
        l1 = _mm512_min_ps(b, l1);
        h1 = _mm512_max_ps(b, h1);
    }
    l = _mm512_reduce_min_ps(_mm512_min_ps(l0, l1));
    h = _mm512_reduce_max_ps(_mm512_max_ps(h0, h1));
#else
    // vector extension: a compare and a select per 8 values (NaN compares false)
    typedef float v8f __attribute__((vector_size(32)));
    v8f vl = {inf, inf, inf, inf, inf, inf, inf, inf}, vh = -vl;
    for (; p + 8 <= size; p += 8) {
        v8f v;
        std::memcpy(&v, z + p, sizeof v);
        vl = v < vl ? v : vl;
        vh = v > vh ? v : vh;
    }
    for (int k = 0; k < 8; ++k) {
        l = vl[k] < l ? vl[k] : l;
        h = vh[k] > h ? vh[k] : h;
    }
#endif
    for (; p < size; ++p) {
        l = z[p] < l ? z[p] : l;
        h = z[p] > h ? z[p] : h;
    }
    lo = l;
    hi = h;
}

// Add one entry: a single load-add-store.
inline void scatter_one(char* base, uint32_t off, v4f vec) { *reinterpret_cast<v4f*>(base + off) += vec; }

// Deposit a run of pixels (heights h, weights w) into the histogram `hist`
// (bins x kCopies entries).  A pixel's copy is its index modulo kCopies, so
// one tile always sums in the same order.  `ahead` is read ahead for the
// next tile (a cache hint only: one line per 16 pixels).
inline void deposit_run(const float* __restrict h, const float* __restrict w, int64_t len, const BinMap& m,
                        v4f* __restrict hist, const float* ahead) {
    char* base = reinterpret_cast<char*>(hist);
    int64_t t = 0;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    static_assert(kCopies == 8, "the copy pattern below is for 8 copies");
    const int64_t groups = len / 16;
    if (groups > 0) {
        const __m512 vmax = _mm512_set1_ps(m.hmax), vlead = _mm512_set1_ps(m.lead);
        const __m512 vscale = _mm512_set1_ps(m.scale), vlimit = _mm512_set1_ps(m.limit);
        // {w, wd} pairs, then {w, wd, wd2, 0} quadruples (zero-masked 4th lane)
        const __m512i pair_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        const __m512i pair_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        const __m512i quad0 = _mm512_setr_epi32(0, 1, 16, 0, 2, 3, 17, 0, 4, 5, 18, 0, 6, 7, 19, 0);
        const __m512i quad1 = _mm512_setr_epi32(8, 9, 20, 0, 10, 11, 21, 0, 12, 13, 22, 0, 14, 15, 23, 0);
        const __m512i quad2 = _mm512_setr_epi32(0, 1, 24, 0, 2, 3, 25, 0, 4, 5, 26, 0, 6, 7, 27, 0);
        const __m512i quad3 = _mm512_setr_epi32(8, 9, 28, 0, 10, 11, 29, 0, 12, 13, 30, 0, 14, 15, 31, 0);
        const __mmask16 keep3 = 0x7777;
        const __m512i copy = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 0, 16, 32, 48, 64, 80, 96, 112);
        // Group g (16 pixels) -> 16 {w, wd, wd2, 0} entries and histogram byte offsets.
        auto entries = [&](int64_t g, v4f* vec, uint32_t* off) {
            const int64_t p = g * 16;
            __builtin_prefetch(ahead + p, 0, 3);
            const __m512 z = _mm512_loadu_ps(h + p);
            const __m512 wv = _mm512_loadu_ps(w + p);
            // same operations as bin_position (no contraction: -ffp-contract=off)
            __m512 u = _mm512_add_ps(vlead, _mm512_mul_ps(_mm512_sub_ps(vmax, z), vscale));
            u = _mm512_min_ps(u, vlimit);                      // NaN -> limit (second operand)
            const __m512i b = _mm512_cvtps_epi32(u);           // nearest, ties to even (default MXCSR)
            const __m512 d = _mm512_reduce_ps(u, 0x08);        // u - nearest(u), exact
            const __m512 wd = _mm512_mul_ps(wv, d);
            const __m512 wd2 = _mm512_mul_ps(wd, d);
            const __m512 lo = _mm512_permutex2var_ps(wv, pair_lo, wd);
            const __m512 hi = _mm512_permutex2var_ps(wv, pair_hi, wd);
            float* dst = reinterpret_cast<float*>(vec);
            _mm512_store_ps(dst, _mm512_maskz_permutex2var_ps(keep3, lo, quad0, wd2));
            _mm512_store_ps(dst + 16, _mm512_maskz_permutex2var_ps(keep3, lo, quad1, wd2));
            _mm512_store_ps(dst + 32, _mm512_maskz_permutex2var_ps(keep3, hi, quad2, wd2));
            _mm512_store_ps(dst + 48, _mm512_maskz_permutex2var_ps(keep3, hi, quad3, wd2));
            _mm512_store_si512(reinterpret_cast<void*>(off), _mm512_add_epi32(_mm512_slli_epi32(b, kBinShift), copy));
        };
        // One load-add-store per pixel, in asm: the loop is bound by memory
        // operations, and GCC spends extra ones (a separate address add, one
        // 32-bit load per offset) where indexed addressing and one 64-bit load
        // per two offsets do.  "memory": the asm reads the ring buffer and
        // reads and writes the histogram.
        auto scatter = [&](const v4f* vec, const uint32_t* off) {
            for (int c = 0; c < 16; c += 2) {
                uint64_t pair;
                asm volatile("movq %1, %0" : "=r"(pair) : "m"(*reinterpret_cast<const uint64_t*>(off + c)) : "memory");
                __m128 sum;
                asm volatile("vmovaps %[v], %[s]\n\t"
                             "vaddps (%[b],%[o]), %[s], %[s]\n\t"
                             "vmovaps %[s], (%[b],%[o])"
                             : [s] "=&v"(sum)
                             : [b] "r"(base), [o] "r"(pair & 0xffffffffu), [v] "m"(vec[c])
                             : "memory");
                asm volatile("vmovaps %[v], %[s]\n\t"
                             "vaddps (%[b],%[o]), %[s], %[s]\n\t"
                             "vmovaps %[s], (%[b],%[o])"
                             : [s] "=&v"(sum)
                             : [b] "r"(base), [o] "r"(pair >> 32), [v] "m"(vec[c + 1])
                             : "memory");
            }
        };
        // Software-pipelined: the vector work for group g runs while group
        // g - kLag is scattered from a small ring buffer, so the FP units and
        // the load/store ports work at the same time.  The lag keeps the
        // 16-byte reloads away from the group's 64-byte stores (measured on
        // Zen 4: lag 1 ~30% slower, 4 a few % faster than 2).
        constexpr int kLag = 4, kRing = 8;
        alignas(64) v4f vec[kRing][16];
        alignas(64) uint32_t off[kRing][16];
        for (int64_t g = 0; g < groups + kLag; ++g) {
            if (g < groups) entries(g, vec[g % kRing], off[g % kRing]);
            if (g >= kLag) scatter(vec[(g - kLag) % kRing], off[(g - kLag) % kRing]);
        }
        t = groups * 16;
    }
#else
    (void)ahead;
#endif
    // Portable path (and the last < 16 pixels): bins and offsets for a strip
    // in a loop the compiler vectorizes, then the scatter.
    constexpr int64_t kStrip = 256;
    alignas(64) float dv[kStrip];
    alignas(64) uint32_t ov[kStrip];
    for (; t < len; t += kStrip) {
        const int64_t n = std::min(kStrip, len - t);
        const float* __restrict hs = h + t;
        for (int64_t i = 0; i < n; ++i) {
            const float u = bin_position(hs[i], m);
            // nearest integer, ties to even (like cvtps2dq and np.rint), by
            // adding and removing 2^23: exact for 0 <= u < 2^23 and vectorizes
            // without SSE4.1; larger floats are integers already
            const float b = u < 8388608.0f ? (u + 8388608.0f) - 8388608.0f : u;
            dv[i] = u - b;                      // exact
            ov[i] = (static_cast<uint32_t>(static_cast<int32_t>(b)) << kBinShift) +
                    static_cast<uint32_t>((t + i) % kCopies) * 16u;
        }
        const float* __restrict ws = w + t;
        for (int64_t i = 0; i < n; ++i) {
            const float wd = ws[i] * dv[i];
            scatter_one(base, ov[i], v4f{ws[i], wd, wd * dv[i], 0.0f});
        }
    }
}

// wave[0 .. kConvBlock) = sum_m sum_j kern_m[j] * src_m[k - j], clipped at 0,
// with src_m = src + m * mstride; the block stays in registers.
inline void convolve_block(const double* src, int64_t mstride, const double* kern, int64_t pulse_len,
                           double* wave) {
    static_assert(kConvBlock == 16, "16 accumulators");
#if defined(__AVX512F__)
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (int m = 0; m < 3; ++m) {
        const double* sm = src + m * mstride;
        const double* km = kern + m * pulse_len;
        for (int64_t j = 0; j < pulse_len; ++j) {
            const __m512d pj = _mm512_set1_pd(km[j]);
            a0 = _mm512_fmadd_pd(pj, _mm512_loadu_pd(sm - j), a0);
            a1 = _mm512_fmadd_pd(pj, _mm512_loadu_pd(sm - j + 8), a1);
        }
    }
    _mm512_storeu_pd(wave, _mm512_max_pd(a0, _mm512_setzero_pd()));
    _mm512_storeu_pd(wave + 8, _mm512_max_pd(a1, _mm512_setzero_pd()));
#else
    // 4-wide vector extension (AVX2 registers; split in two on SSE2)
    typedef double v4d __attribute__((vector_size(32)));
    v4d a[4] = {};
    for (int m = 0; m < 3; ++m) {
        const double* sm = src + m * mstride;
        const double* km = kern + m * pulse_len;
        for (int64_t j = 0; j < pulse_len; ++j) {
            const double pj = km[j];
            for (int q = 0; q < 4; ++q) {
                v4d x;
                std::memcpy(&x, sm - j + 4 * q, sizeof x);
                a[q] += pj * x;
            }
        }
    }
    const v4d zero = {};
    for (int q = 0; q < 4; ++q) {
        const v4d r = a[q] > zero ? a[q] : zero;
        std::memcpy(wave + 4 * q, &r, sizeof r);
    }
#endif
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

// Effective heights of row i (float32: (cos_tilt * z + tilt_x[j]) + tilt_y[i]).
inline void tilted_row(const float* row, int64_t nx, float cos_tilt, const float* tilt_x, float ty, float* out) {
    for (int64_t j = 0; j < nx; ++j) out[j] = (cos_tilt * row[j] + tilt_x[j]) + ty;
}

// Per-thread scratch.
struct Workspace {
    std::vector<v4f> hist;       // (hist_len + 1) bins x kCopies, junk bin last; zero between tiles
    std::vector<double> moments; // 3 x mstride: `after` leading zeros, W/M1/M2, kConvBlock trailing zeros
    std::vector<double> wave;    // n_samples + kConvBlock
    std::vector<float> hrow, wrow;  // one row of heights / weights (tilted or incidence tiles)
};

// Deposit one tile into ws.hist.  Returns the status (0 ok, 1 no valid pixel,
// 2 +-inf heights) and, when 0, the bin range [b_lo, b_hi] that may hold
// deposits (b_hi may be the junk bin hist_len).
template <bool Tilted, bool Incidence>
int deposit_tile(const float* tile, int64_t ny, int64_t nx, const float* weights, const float* tilt_x,
                 const float* tilt_y, const Options& o, int64_t hist_len, const float* ahead, Workspace& ws,
                 int64_t& b_lo, int64_t& b_hi) {
    const int64_t size = ny * nx;
    float zlo, zhi;
    min_max(tile, size, zlo, zhi);
    const float inf = std::numeric_limits<float>::infinity();
    if (zhi == inf || zlo == -inf) return 2;
    if (!(zlo <= zhi)) return 1;
    const float cos_tilt = static_cast<float>(o.cos_tilt);
    float hlo = zlo, hhi = zhi;
    if constexpr (Tilted) {
        hlo = inf;
        hhi = -inf;
        for (int64_t i = 0; i < ny; ++i) {
            tilted_row(tile + i * nx, nx, cos_tilt, tilt_x, tilt_y[i], ws.hrow.data());
            float l, h;
            min_max(ws.hrow.data(), nx, l, h);
            hlo = std::min(hlo, l);
            hhi = std::max(hhi, h);
        }
    }
    const BinMap m{hhi, static_cast<float>(o.lead_bins), static_cast<float>(o.bins_per_metre),
                   static_cast<float>(hist_len)};
    // bin_position is monotone in h, so every valid pixel lands in [b_lo, b_hi]
    b_lo = static_cast<int64_t>(std::nearbyint(bin_position(hhi, m)));
    b_hi = static_cast<int64_t>(std::nearbyint(bin_position(hlo, m)));
    v4f* hist = ws.hist.data();
    if constexpr (!Tilted && !Incidence) {
        // fast path: the tile is one flat run of pixels
        deposit_run(tile, weights, size, m, hist, ahead);
    } else {
        float* hrow = ws.hrow.data();
        float* wrow = ws.wrow.data();
        for (int64_t i = 0; i < ny; ++i) {
            const float* row = tile + i * nx;
            const float* h = row;
            const float* w = weights + i * nx;
            if constexpr (Tilted) {
                tilted_row(row, nx, cos_tilt, tilt_x, tilt_y[i], hrow);
                h = hrow;
            }
            if constexpr (Incidence) {
                for (int64_t j = 0; j < nx; ++j)
                    wrow[j] = row[j] == row[j] ? static_cast<float>(static_cast<double>(w[j]) *
                                                                    incidence_cosine(tile, ny, nx, i, j, o))
                                               : w[j];
                w = wrow;
            }
            deposit_run(h, w, nx, m, hist, ahead + i * nx);
        }
    }
    return 0;
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
    using detail::kConvBlock;
    using detail::kCopies;
    if (n_tiles < 0 || ny <= 0 || nx <= 0) throw std::invalid_argument("tiles: bad shape");
    if (o.n_samples <= 0) throw std::invalid_argument("n_samples must be > 0");
    if (pulse_len <= 0 || pulse_centre < 0 || pulse_centre >= pulse_len)
        throw std::invalid_argument("pulse: pulse_centre must index the pulse");
    // Output sample k collects histogram bins k - (pulse_len-1-centre) .. k + centre.
    const int64_t hist_len = o.n_samples + pulse_centre;
    // histogram byte offsets are uint32
    if (hist_len + 1 > (int64_t{1} << (32 - detail::kBinShift)))
        throw std::invalid_argument("n_samples + pulse_centre: window too long (at most 33554430 bins)");
    const int64_t after = pulse_len - 1 - pulse_centre;
    const int64_t mstride = after + hist_len + kConvBlock;
    const int64_t tile_size = ny * nx;
    const int64_t n_out = o.n_samples;
    const int n_threads = clamp_threads(o.n_threads);
    // the pulse kernels with their Taylor coefficients (W p - M1 p' + M2/2 p'')
    std::vector<double> kernels(static_cast<size_t>(3 * pulse_len));
    static const double coeff[3] = {1.0, -1.0, 0.5};
    for (int m = 0; m < 3; ++m)
        for (int64_t j = 0; j < pulse_len; ++j) kernels[m * pulse_len + j] = coeff[m] * pulse[m * pulse_len + j];
    ParallelErrors errors;

#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        detail::Workspace ws;
        errors.run([&] {
            ws.hist.assign(static_cast<size_t>((hist_len + 1) * kCopies), detail::v4f{0.f, 0.f, 0.f, 0.f});
            ws.moments.assign(static_cast<size_t>(3 * mstride), 0.0);
            ws.wave.assign(static_cast<size_t>(n_out + kConvBlock), 0.0);
            if (o.tilted || o.incidence) {
                ws.hrow.assign(static_cast<size_t>(nx), 0.f);
                ws.wrow.assign(static_cast<size_t>(nx), 0.f);
            }
        });
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 8)
#endif
        for (int64_t n = 0; n < n_tiles; ++n) {
            if (errors.failed()) continue;
            errors.run([&] {
                const float* tile = tiles + n * tile_size;
                float* dst = out + n * n_out;
                // read ahead into the (likely) next tile of this thread while this one is binned
                const float* ahead = n + 1 < n_tiles ? tile + tile_size : tile;
                int64_t b_lo = 0, b_hi = -1;
                int code;
                if (o.tilted) {
                    code = o.incidence ? detail::deposit_tile<true, true>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, ahead, ws, b_lo, b_hi)
                                       : detail::deposit_tile<true, false>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, ahead, ws, b_lo, b_hi);
                } else {
                    code = o.incidence ? detail::deposit_tile<false, true>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, ahead, ws, b_lo, b_hi)
                                       : detail::deposit_tile<false, false>(tile, ny, nx, weights, tilt_x, tilt_y, o, hist_len, ahead, ws, b_lo, b_hi);
                }
                double total = 0.0;
                int64_t k_lo = 0, k_hi = -1;
                if (code == 0) {
                    // combine the copies in a fixed order (thread-count independent),
                    // bins inside the window only
                    const int64_t t_hi = std::min(b_hi, hist_len - 1);
                    double* mom = ws.moments.data() + after;
                    for (int64_t t = b_lo; t <= t_hi; ++t) {
                        const detail::v4f* e = ws.hist.data() + t * kCopies;
                        static_assert(kCopies == 8, "pairwise sum of 8 copies");
                        const detail::v4f sum = ((e[0] + e[1]) + (e[2] + e[3])) + ((e[4] + e[5]) + (e[6] + e[7]));
                        mom[t] = static_cast<double>(sum[0]);
                        mom[mstride + t] = static_cast<double>(sum[1]);
                        mom[2 * mstride + t] = static_cast<double>(sum[2]);
                    }
                    // wave[k] = sum_m sum_j kernel_m[j] * moment_m[k + centre - j] for the
                    // samples that bins [b_lo, t_hi] reach; the zero padding of
                    // `moments` keeps every index in range
                    if (t_hi >= b_lo) {
                        k_lo = std::max<int64_t>(0, b_lo - pulse_centre);
                        k_hi = std::min<int64_t>(n_out - 1, t_hi + after);
                    }
                    double* wave = ws.wave.data();
                    for (int64_t k0 = k_lo; k0 <= k_hi; k0 += kConvBlock)
                        detail::convolve_block(ws.moments.data() + after + pulse_centre + k0, mstride,
                                               kernels.data(), pulse_len, wave + k0);
                    for (int64_t k = k_lo; k <= k_hi; ++k) total += wave[k];
                    for (int m = 0; m < 3; ++m)
                        std::fill(mom + m * mstride + b_lo, mom + m * mstride + std::max(t_hi + 1, b_lo), 0.0);
                    // leave the histogram zero for the next tile (junk bin included)
                    std::fill(ws.hist.data() + b_lo * kCopies, ws.hist.data() + (b_hi + 1) * kCopies,
                              detail::v4f{0.f, 0.f, 0.f, 0.f});
                    std::fill(ws.hist.data() + hist_len * kCopies, ws.hist.data() + (hist_len + 1) * kCopies,
                              detail::v4f{0.f, 0.f, 0.f, 0.f});
                }
                const bool is_empty = code != 0 || !(total > 0.0);
                status[n] = code != 0 ? static_cast<uint8_t>(code) : (is_empty ? 1 : 0);
                if (is_empty) {
                    std::fill(dst, dst + n_out, 0.0f);
                    return;
                }
                const double s = o.normalize ? 1.0 / total : 1.0;
                const double* wave = ws.wave.data();
                std::fill(dst, dst + k_lo, 0.0f);
                for (int64_t k = k_lo; k <= k_hi; ++k) dst[k] = static_cast<float>(wave[k] * s);
                std::fill(dst + k_hi + 1, dst + n_out, 0.0f);
            });
        }
    }
    errors.rethrow();
}

}  // namespace crevkit::forward
