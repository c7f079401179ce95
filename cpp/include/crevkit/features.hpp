// Tile features: normalization (circular mask, PCA plane removal, re-rasterization,
// optional in-plane orientation) and truncated orthonormal 2-D DCT-II.
//
// Pure C++ over raw contiguous buffers; policy (default sizes, keep selection,
// tolerance search) lives in Python (crevkit.features).  Every step has a
// NumPy twin in crevkit.reference.features implementing the same algorithm.
//
// Coordinates (metres): pixel (i, j) of an ny x nx tile sits at
//   x = (j - (nx-1)/2) * p   (east, along columns)
//   y = ((ny-1)/2 - i) * p   (north; rows run north -> south)
//   z = tile[i, j]           (up)
//
// normalize, per tile:
//   1. Input mask: pixels with (i-ci)^2 + (j-cj)^2 <= (min(ny,nx)/2)^2.
//   2. PCA of the masked (x, y, z) points (double, two-pass): centroid c and the
//      eigenvector of the smallest covariance eigenvalue = plane normal n,
//      oriented so n_z > 0 (always up).
//   3. R = the minimal rotation taking n to +z (Rodrigues about n x z): it lays
//      the plane flat without spinning the tile about the vertical.
//      p' = R (p - c); z' is the height above the best-fit plane.
//   4. Re-rasterize onto an m x m grid of the same pixel size centred on c'
//      (m = floor(min(ny,nx)/sqrt 2): the square inscribed in the mask circle).
//      For node (x', y') we need z' of the rotated surface there.  The rotated
//      surface is a graph over the old plane (moderate slopes), so invert the
//      mapping by fixed-point iteration on z':
//          z'_0 = 0
//          (sx, sy) = c_xy + (R^T (x', y', z'_k))_xy        source position
//          zs = bilinear(tile, sx, sy)                       (clamped at the edge)
//          z'_{k+1} = R_row3 . ((sx, sy, zs) - c)
//      `iterations` times (default 3).  A plane is reproduced exactly after one
//      step; the error shrinks by about sin(slope) * |local gradient| per step.
//   5. Output mask: nodes outside the inscribed circle of the m x m square,
//      (i-c0)^2 + (j-c0)^2 > (m/2)^2, carry no data of their own.  With
//      edge_fill (default) each takes the value at the rim point on its ray
//      from the centre (node offset scaled by (m/2) / |offset|, then steps 4),
//      so the tile depends only on the disc and has no jump at the rim (a jump
//      rings through a truncated DCT); without it they are 0.
//   6. Optional orientation: from the step-5 tile, the gradient structure tensor
//      J over the interior disc ((i-c0)^2+(j-c0)^2 <= (m/2 - 4)^2, separable
//      Gaussian-derivative gradients, sigma = 1 px) gives the dominant gradient direction
//      theta = atan2(2 Jxy, Jxx - Jyy) / 2 (counter-clockwise from +x').  The 180
//      degree ambiguity: theta += pi when the height moment
//      sum z'(x',y') (x' cos theta + y' sin theta) over the output disc is < 0,
//      i.e. the high side ends up on +x.  An isotropic tensor (coherence
//      < 1e-9) gives theta = 0.  Steps 4-5 are then repeated with the output grid
//      turned by theta: output node (u, v) samples x' = u cos - v sin,
//      y' = u sin + v cos, so the dominant gradient lies along +u (columns).
//      (The step-5 tile used here is computed only where step 6 reads it: the
//      disc and the filter support of the interior disc; with theta = 0 the
//      full tile is resampled again.)
//
// dct: orthonormal DCT-II, C[k, t] = a_k cos(pi (2t+1) k / (2N)), a_0 = sqrt(1/N),
// a_k = sqrt(2/N); coefficient (u, v) of a tile T is (C_y T C_x^T)[u, v], equal
// to scipy.fft.dctn(T, norm="ortho")[u, v].  Only the kept (u, v) are computed:
//   P = T C_x[:V]^T (ny x V), then D[u, :vlim(u)] = C_y[u] P[:, :vlim(u)]
// in double, each product halved by the even/odd symmetry of the basis (see
// dct_compress) and run as small dense matrix products (detail::gemm: register-
// blocked with AVX-512; rows u of one parity four at a time, as many columns
// as the block keeps).  dct_decompress runs the same steps backwards.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "crevkit/parallel.hpp"

#if defined(__AVX512F__)
// GCC 12 reports its own intrinsics' `__Y = __Y` placeholders as maybe-uninitialized.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
#endif

namespace crevkit::features {

struct NormalizeOptions {
    double pixel_size = 0.5;  // metres, input and output
    int64_t out_size = 0;     // m (output tiles are m x m)
    int iterations = 3;       // fixed-point steps of the re-rasterization
    bool orient = false;      // also normalize the in-plane orientation
    bool edge_fill = true;    // outside the output disc: rim value on the same ray (else 0)
    int n_threads = 1;
};

namespace detail {

constexpr double kPi = 3.14159265358979323846;

// Eigen-decomposition of a symmetric 3x3 matrix by cyclic Jacobi rotations.
// On return a holds (almost) a diagonal of eigenvalues, v the eigenvectors as columns.
inline void jacobi3(double a[3][3], double v[3][3]) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) v[i][j] = (i == j) ? 1.0 : 0.0;
    for (int sweep = 0; sweep < 50; ++sweep) {
        const double off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2];
        const double diag = a[0][0] * a[0][0] + a[1][1] * a[1][1] + a[2][2] * a[2][2];
        if (off <= 1e-30 * diag || off == 0.0) break;
        for (int p = 0; p < 2; ++p) {
            for (int q = p + 1; q < 3; ++q) {
                if (a[p][q] == 0.0) continue;
                const double theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
                const double c = 1.0 / std::sqrt(t * t + 1.0);
                const double s = t * c;
                for (int k = 0; k < 3; ++k) {  // A <- J^T A J
                    const double akp = a[k][p], akq = a[k][q];
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for (int k = 0; k < 3; ++k) {
                    const double apk = a[p][k], aqk = a[q][k];
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for (int k = 0; k < 3; ++k) {
                    const double vkp = v[k][p], vkq = v[k][q];
                    v[k][p] = c * vkp - s * vkq;
                    v[k][q] = s * vkp + c * vkq;
                }
            }
        }
    }
}

struct Plane {
    double c[3];     // centroid of the masked points
    double n[3];     // unit normal, n[2] >= 0
    double R[3][3];  // minimal rotation with R n = +z
};

// Columns [lo, hi) of row i inside the input mask circle (same test as the twin:
// (i-ci)^2 + (j-cj)^2 <= r^2, evaluated per pixel at the span ends).
inline void mask_span(int64_t i, int64_t nx, double ci, double cj, double r2, int64_t& lo, int64_t& hi) {
    const double di = static_cast<double>(i) - ci;
    const double rest = r2 - di * di;
    if (rest < 0) { lo = hi = 0; return; }
    const double half = std::sqrt(rest);
    lo = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(cj - half)) - 1);
    hi = std::min<int64_t>(nx, static_cast<int64_t>(std::floor(cj + half)) + 2);
    auto in = [&](int64_t j) { const double dj = static_cast<double>(j) - cj; return di * di + dj * dj <= r2; };
    while (lo < hi && !in(lo)) ++lo;
    while (hi > lo && !in(hi - 1)) --hi;
}

inline Plane fit_plane(const float* tile, int64_t ny, int64_t nx, double p) {
    const double ci = 0.5 * static_cast<double>(ny - 1), cj = 0.5 * static_cast<double>(nx - 1);
    const double rad = 0.5 * static_cast<double>(std::min(ny, nx));
    const double r2 = rad * rad;
    // pass 1: centroid.  Per row: sum z and sum j z over the span (x sums are closed-form).
    double sx = 0, sy = 0, sz = 0;
    int64_t cnt = 0;
    for (int64_t i = 0; i < ny; ++i) {
        int64_t lo, hi;
        mask_span(i, nx, ci, cj, r2, lo, hi);
        if (hi <= lo) continue;
        const float* row = tile + i * nx;
        double rz = 0.0;
        // simd reduction: a plain serial double sum is one long add-latency chain
#if CREVKIT_HAS_OPENMP
#pragma omp simd reduction(+ : rz)
#endif
        for (int64_t j = lo; j < hi; ++j) rz += static_cast<double>(row[j]);
        const int64_t n = hi - lo;
        const double di = static_cast<double>(i) - ci;
        sx += p * (0.5 * static_cast<double>(lo + hi - 1) - cj) * static_cast<double>(n);
        sy += -di * p * static_cast<double>(n);
        sz += rz;
        cnt += n;
    }
    Plane pl;
    const double inv = 1.0 / static_cast<double>(cnt);
    pl.c[0] = sx * inv; pl.c[1] = sy * inv; pl.c[2] = sz * inv;
    // pass 2: centred second moments
    double cxx = 0, cxy = 0, cxz = 0, cyy = 0, cyz = 0, czz = 0;
    for (int64_t i = 0; i < ny; ++i) {
        int64_t lo, hi;
        mask_span(i, nx, ci, cj, r2, lo, hi);
        if (hi <= lo) continue;
        const double di = static_cast<double>(i) - ci;
        const float* row = tile + i * nx;
        const double y = -di * p - pl.c[1];
        double rxx = 0, rx = 0, rxz = 0, rz = 0, rzz = 0;
#if CREVKIT_HAS_OPENMP
#pragma omp simd reduction(+ : rxx, rx, rxz, rz, rzz)
#endif
        for (int64_t j = lo; j < hi; ++j) {
            const double x = (static_cast<double>(j) - cj) * p - pl.c[0];
            const double z = static_cast<double>(row[j]) - pl.c[2];
            rxx += x * x; rx += x; rxz += x * z; rz += z; rzz += z * z;
        }
        const double n = static_cast<double>(hi - lo);
        cxx += rxx; cxy += y * rx; cxz += rxz;
        cyy += y * y * n; cyz += y * rz; czz += rzz;
    }
    double a[3][3] = {{cxx * inv, cxy * inv, cxz * inv}, {cxy * inv, cyy * inv, cyz * inv},
                      {cxz * inv, cyz * inv, czz * inv}};
    double v[3][3];
    jacobi3(a, v);
    int k = 0;
    if (a[1][1] < a[k][k]) k = 1;
    if (a[2][2] < a[k][k]) k = 2;
    double n[3] = {v[0][k], v[1][k], v[2][k]};
    const double norm = std::sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
    const double sgn = (n[2] < 0 ? -1.0 : 1.0) / norm;
    for (int t = 0; t < 3; ++t) pl.n[t] = n[t] * sgn;
    // Rodrigues: R = I + [w]x + [w]x^2 / (1 + c), w = n x z = (ny, -nx, 0), c = nz.
    const double wx = pl.n[1], wy = -pl.n[0], c = pl.n[2];
    const double f = 1.0 / (1.0 + c);
    pl.R[0][0] = 1.0 - wy * wy * f; pl.R[0][1] = wx * wy * f;       pl.R[0][2] = wy;
    pl.R[1][0] = wx * wy * f;       pl.R[1][1] = 1.0 - wx * wx * f; pl.R[1][2] = -wx;
    pl.R[2][0] = -wy;               pl.R[2][1] = wx;                pl.R[2][2] = 1.0 - (wx * wx + wy * wy) * f;
    return pl;
}

// One row of fixed-point steps (step 4) for `len` nodes with in-plane source
// offsets bx, by (arrays padded to a multiple of 8 with in-tile positions):
// zp[q] <- z' of node q after `iterations` steps, starting from z' = 0.
struct RowGeom {
    double R20, R21, R22, c0, c1, c2, inv_p, ci, cj, colmax, rowmax;
    int32_t jlast, ilast, stride;
};

inline void fixed_point_row_scalar(const float* tile, const RowGeom& g, const double* bxp, const double* byp,
                                   double* zpp, int64_t len, int iterations) {
    for (int64_t q = 0; q < len; ++q) zpp[q] = 0.0;
    for (int it = 0; it < iterations; ++it) {
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
        for (int64_t q = 0; q < len; ++q) {
            const double sx = bxp[q] + g.R20 * zpp[q];
            const double sy = byp[q] + g.R21 * zpp[q];
            double col = sx * g.inv_p + g.cj;
            double row = g.ci - sy * g.inv_p;
            col = std::min(std::max(col, 0.0), g.colmax);
            row = std::min(std::max(row, 0.0), g.rowmax);
            const int32_t j0 = std::min(static_cast<int32_t>(col), g.jlast);
            const int32_t i0 = std::min(static_cast<int32_t>(row), g.ilast);
            const double tx = col - static_cast<double>(j0);
            const double ty = row - static_cast<double>(i0);
            const int32_t idx = i0 * g.stride + j0;
            const double z00 = tile[idx], z01 = tile[idx + 1];
            const double z10 = tile[idx + g.stride], z11 = tile[idx + g.stride + 1];
            const double top = z00 + tx * (z01 - z00);
            const double bot = z10 + tx * (z11 - z10);
            const double zs = top + ty * (bot - top);
            zpp[q] = g.R20 * (sx - g.c0) + g.R21 * (sy - g.c1) + g.R22 * (zs - g.c2);
        }
    }
}

#if defined(__AVX512F__)
// The first (low) / second (high) float of each 64-bit lane, widened to double.
inline __m512d low_floats(__m512i pairs) {
    return _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_cvtepi64_epi32(pairs)));
}
inline __m512d high_floats(__m512i pairs) { return low_floats(_mm512_srli_epi64(pairs, 32)); }

// Same arithmetic as fixed_point_row_scalar, 8 nodes per vector.  The bilinear
// corners (z00, z01) and (z10, z11) are adjacent floats, so each pair comes in
// one 64-bit gather: two gathers per node instead of four (the gathers are
// the cost of this loop).  All eight lanes are in-tile (padding), no masks.
inline void fixed_point_row_avx512(const float* tile, const RowGeom& g, const double* bxp, const double* byp,
                                   double* zpp, int64_t len, int iterations) {
    const __m512d R20 = _mm512_set1_pd(g.R20), R21 = _mm512_set1_pd(g.R21), R22 = _mm512_set1_pd(g.R22);
    const __m512d c0 = _mm512_set1_pd(g.c0), c1 = _mm512_set1_pd(g.c1), c2 = _mm512_set1_pd(g.c2);
    const __m512d inv_p = _mm512_set1_pd(g.inv_p), ci = _mm512_set1_pd(g.ci), cj = _mm512_set1_pd(g.cj);
    const __m512d zero = _mm512_setzero_pd(), colmax = _mm512_set1_pd(g.colmax), rowmax = _mm512_set1_pd(g.rowmax);
    const __m256i jlast = _mm256_set1_epi32(g.jlast), ilast = _mm256_set1_epi32(g.ilast);
    const __m256i stride = _mm256_set1_epi32(g.stride);
    const double* base = reinterpret_cast<const double*>(tile);  // gather 8-byte float pairs (scale 4)
    // iterations outermost: the vectors of a step are independent, so their
    // gathers overlap (a step-inner loop would chain three gather latencies)
    for (int64_t q = 0; q < len; q += 8) _mm512_storeu_pd(zpp + q, zero);
    for (int it = 0; it < iterations; ++it) {
        for (int64_t q = 0; q < len; q += 8) {
            const __m512d zp = _mm512_loadu_pd(zpp + q);
            const __m512d sx = _mm512_fmadd_pd(R20, zp, _mm512_loadu_pd(bxp + q));
            const __m512d sy = _mm512_fmadd_pd(R21, zp, _mm512_loadu_pd(byp + q));
            __m512d col = _mm512_fmadd_pd(sx, inv_p, cj);
            __m512d row = _mm512_fnmadd_pd(sy, inv_p, ci);
            col = _mm512_min_pd(_mm512_max_pd(col, zero), colmax);
            row = _mm512_min_pd(_mm512_max_pd(row, zero), rowmax);
            const __m256i j0 = _mm256_min_epi32(_mm512_cvttpd_epi32(col), jlast);
            const __m256i i0 = _mm256_min_epi32(_mm512_cvttpd_epi32(row), ilast);
            const __m512d tx = _mm512_sub_pd(col, _mm512_cvtepi32_pd(j0));
            const __m512d ty = _mm512_sub_pd(row, _mm512_cvtepi32_pd(i0));
            const __m256i idx = _mm256_add_epi32(_mm256_mullo_epi32(i0, stride), j0);
            const __m512i top2 = _mm512_castpd_si512(_mm512_i32gather_pd(idx, base, 4));
            const __m512i bot2 = _mm512_castpd_si512(_mm512_i32gather_pd(_mm256_add_epi32(idx, stride), base, 4));
            const __m512d z00 = low_floats(top2), z01 = high_floats(top2);
            const __m512d z10 = low_floats(bot2), z11 = high_floats(bot2);
            const __m512d top = _mm512_fmadd_pd(tx, _mm512_sub_pd(z01, z00), z00);
            const __m512d bot = _mm512_fmadd_pd(tx, _mm512_sub_pd(z11, z10), z10);
            const __m512d zs = _mm512_fmadd_pd(ty, _mm512_sub_pd(bot, top), top);
            _mm512_storeu_pd(zpp + q, _mm512_fmadd_pd(R20, _mm512_sub_pd(sx, c0),
                                                      _mm512_fmadd_pd(R21, _mm512_sub_pd(sy, c1),
                                                                      _mm512_mul_pd(R22, _mm512_sub_pd(zs, c2)))));
        }
    }
}
#endif

// Per-thread work arrays of normalize (reused across tiles: a fresh ~300 kB
// allocation per tile is returned to the OS and page-faulted back each time).
struct NormalizeScratch {
    std::vector<double> bx, by, zp, A, B;
};

// Steps 4-5: resample the flattened surface onto the m x m output grid turned by
// `angle` (radians).  Nodes outside the output disc: rim value on the same ray
// (edge_fill) or 0.  Only nodes within `reach` (in nodes) of the centre are
// computed, the others set to 0 (the orientation pass needs only the disc and
// the gradient filters' support).  Row by row, nodes of a row packed, 8 at a time.
inline void resample(const float* tile, int64_t ny, int64_t nx, const Plane& pl, const NormalizeOptions& o,
                     double angle, float* out, NormalizeScratch& w, double reach = 1e300) {
    const int64_t m = o.out_size;
    const double p = o.pixel_size;
    const double c0 = 0.5 * static_cast<double>(m - 1);
    const double r2 = 0.25 * static_cast<double>(m) * static_cast<double>(m);
    // edge_fill off: nodes outside the disc are 0, no need to compute them
    const double lim2 = o.edge_fill ? std::min(reach * reach, 1e300) : std::min(reach * reach, r2);
    const double ca = std::cos(angle), sa = std::sin(angle);
    const double(&R)[3][3] = pl.R;
    RowGeom g;
    g.R20 = R[2][0]; g.R21 = R[2][1]; g.R22 = R[2][2];
    g.c0 = pl.c[0]; g.c1 = pl.c[1]; g.c2 = pl.c[2];
    g.inv_p = 1.0 / p;
    g.ci = 0.5 * static_cast<double>(ny - 1); g.cj = 0.5 * static_cast<double>(nx - 1);
    g.colmax = static_cast<double>(nx - 1); g.rowmax = static_cast<double>(ny - 1);
    g.jlast = static_cast<int32_t>(nx - 2); g.ilast = static_cast<int32_t>(ny - 2);
    g.stride = static_cast<int32_t>(nx);
    const size_t cap = static_cast<size_t>(m + 8);
    w.bx.resize(cap); w.by.resize(cap); w.zp.resize(cap);
    double* bx = w.bx.data();
    double* by = w.by.data();
    double* zp = w.zp.data();
    for (int64_t i = 0; i < m; ++i) {
        const double di = static_cast<double>(i) - c0;
        const double v = -di * p;
        float* orow = out + i * m;
        // nodes of this row within lim2: a contiguous run [jlo, jhi)
        int64_t jlo = 0, jhi = m;
        if (lim2 < 1e299) {
            const double rest = lim2 - di * di;
            if (rest < 0) { std::fill(orow, orow + m, 0.0f); continue; }
            const double half = std::sqrt(rest);
            jlo = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(c0 - half)) - 1);
            jhi = std::min<int64_t>(m, static_cast<int64_t>(std::floor(c0 + half)) + 2);
            auto in = [&](int64_t j) {
                const double dj = static_cast<double>(j) - c0;
                return di * di + dj * dj <= lim2;
            };
            while (jlo < jhi && !in(jlo)) ++jlo;
            while (jhi > jlo && !in(jhi - 1)) --jhi;
        }
        const int64_t len = jhi - jlo;
        const double c00 = pl.c[0], c01 = pl.c[1], R00 = R[0][0], R10 = R[1][0], R01 = R[0][1], R11 = R[1][1];
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
        for (int64_t q = 0; q < len; ++q) {
            const double dj = static_cast<double>(jlo + q) - c0;
            const double d2 = di * di + dj * dj;
            // radial edge extension: outside the disc, sample the rim point on the same ray
            const double f = d2 > r2 ? std::sqrt(r2 / d2) : 1.0;
            const double u = dj * p * f, vv = v * f;
            const double xp = u * ca - vv * sa;
            const double yp = u * sa + vv * ca;
            // in-plane part of the source position: c_xy + R^T (x', y', 0)
            bx[q] = c00 + R00 * xp + R10 * yp;
            by[q] = c01 + R01 * xp + R11 * yp;
        }
        const int64_t padded = (len + 7) / 8 * 8;
        for (int64_t q = len; q < padded; ++q) { bx[q] = pl.c[0]; by[q] = pl.c[1]; }  // in-tile dummies
#if defined(__AVX512F__)
        fixed_point_row_avx512(tile, g, bx, by, zp, padded, o.iterations);
#else
        fixed_point_row_scalar(tile, g, bx, by, zp, len, o.iterations);
#endif
        std::fill(orow, orow + jlo, 0.0f);
        for (int64_t q = 0; q < len; ++q) orow[jlo + q] = static_cast<float>(zp[q]);
        std::fill(orow + jhi, orow + m, 0.0f);
    }
}

// Gaussian derivative filters for the structure tensor: sigma = 1 px, taps -3..3.
// kGauss sums to 1; kDeriv[k] = k g[k] / sum(k^2 g[k]) is exact on linear ramps.
constexpr int kTaps = 3;
inline void orientation_filters(double g[2 * kTaps + 1], double w[2 * kTaps + 1]) {
    double sg = 0.0, sk = 0.0;
    for (int k = -kTaps; k <= kTaps; ++k) {
        g[k + kTaps] = std::exp(-0.5 * k * k);
        sg += g[k + kTaps];
        sk += k * k * g[k + kTaps];
    }
    for (int k = -kTaps; k <= kTaps; ++k) {
        w[k + kTaps] = k * g[k + kTaps] / sk;
        g[k + kTaps] /= sg;
    }
}

// Step 6: in-plane angle (radians) that turns the dominant gradient direction to +u.
// Gradients: separable Gaussian derivatives (sigma 1 px; central differences
// bias the angle by ~0.5 degree on sharp troughs), on nodes i, j in
// [3, m-4] within radius m/2 - 4 of the centre (the filter support stays inside the disc).
inline double orientation_angle(const float* z, int64_t m, double p, NormalizeScratch& ws) {
    const double c0 = 0.5 * static_cast<double>(m - 1);
    const double rin = 0.5 * static_cast<double>(m) - 1.0 - kTaps;
    const double rin2 = rin * rin;
    const double r2 = 0.25 * static_cast<double>(m) * static_cast<double>(m);
    double g[2 * kTaps + 1], w[2 * kTaps + 1];
    orientation_filters(g, w);
    ws.A.resize(static_cast<size_t>(m));
    ws.B.resize(static_cast<size_t>(m));
    double* A = ws.A.data();
    double* B = ws.B.data();
    double jxx = 0, jxy = 0, jyy = 0;
    const double inv_p = 1.0 / p;
    // Row by row over the inner disc: A (smoothed along columns) and B (derivative
    // towards north, up the rows) on the row's span +- kTaps, then the gradients.
    for (int64_t i = kTaps; i < m - kTaps; ++i) {
        int64_t lo, hi;
        mask_span(i, m, c0, c0, rin2, lo, hi);
        lo = std::max<int64_t>(lo, kTaps);
        hi = std::min<int64_t>(hi, m - kTaps);
        if (hi <= lo) continue;
        for (int64_t j = lo - kTaps; j < hi + kTaps; ++j) {
            double a = 0.0, b = 0.0;
            for (int k = -kTaps; k <= kTaps; ++k) {
                a += g[k + kTaps] * static_cast<double>(z[(i + k) * m + j]);
                b += w[k + kTaps] * static_cast<double>(z[(i - k) * m + j]);
            }
            A[j] = a;
            B[j] = b;
        }
        double rxx = 0, rxy = 0, ryy = 0;
#if CREVKIT_HAS_OPENMP
#pragma omp simd reduction(+ : rxx, rxy, ryy)
#endif
        for (int64_t j = lo; j < hi; ++j) {
            double gu = 0.0, gv = 0.0;
            for (int k = -kTaps; k <= kTaps; ++k) {
                gu += w[k + kTaps] * A[j + k];
                gv += g[k + kTaps] * B[j + k];
            }
            gu *= inv_p;
            gv *= inv_p;
            rxx += gu * gu; rxy += gu * gv; ryy += gv * gv;
        }
        jxx += rxx; jxy += rxy; jyy += ryy;
    }
    const double tr = jxx + jyy;
    const double aniso = std::sqrt((jxx - jyy) * (jxx - jyy) + 4.0 * jxy * jxy);
    if (!(tr > 0.0) || aniso < 1e-9 * tr) return 0.0;
    double theta = 0.5 * std::atan2(2.0 * jxy, jxx - jyy);
    const double ct = std::cos(theta), st = std::sin(theta);
    // height moment over the disc: per row sum z (dj ct - di st) p
    double mom = 0.0;
    for (int64_t i = 0; i < m; ++i) {
        int64_t lo, hi;
        mask_span(i, m, c0, c0, r2, lo, hi);
        if (hi <= lo) continue;
        const double di = static_cast<double>(i) - c0;
        const float* row = z + i * m;
        double sz = 0.0, sjz = 0.0;
#if CREVKIT_HAS_OPENMP
#pragma omp simd reduction(+ : sz, sjz)
#endif
        for (int64_t j = lo; j < hi; ++j) {
            const double zz = static_cast<double>(row[j]);
            sz += zz;
            sjz += zz * (static_cast<double>(j) - c0);
        }
        mom += p * (ct * sjz - st * di * sz);
    }
    if (mom < 0.0) theta += kPi;
    return theta;
}

// Orthonormal DCT-II basis, rows 0..rows-1 of the N-point transform (rows x N, row-major).
inline std::vector<double> dct_basis(int64_t rows, int64_t N) {
    std::vector<double> c(static_cast<size_t>(rows * N));
    const double a0 = std::sqrt(1.0 / static_cast<double>(N)), a = std::sqrt(2.0 / static_cast<double>(N));
    for (int64_t k = 0; k < rows; ++k) {
        const double ak = k == 0 ? a0 : a;
        for (int64_t t = 0; t < N; ++t) {
            // reduce the phase (2t+1)k mod 4N exactly in integers before the cosine
            const int64_t ph = ((2 * t + 1) * k) % (4 * N);
            c[static_cast<size_t>(k * N + t)] = ak * std::cos(kPi * static_cast<double>(ph) / (2.0 * static_cast<double>(N)));
        }
    }
    return c;
}

struct KeptSet {
    int64_t U = 0, V = 0;        // rows of C_y / C_x needed
    std::vector<int64_t> vlim;   // per u: 1 + largest kept v (0 if none)
};

inline KeptSet kept_set(const int64_t* u, const int64_t* v, int64_t k, int64_t ny, int64_t nx) {
    KeptSet s;
    for (int64_t t = 0; t < k; ++t) {
        if (u[t] < 0 || u[t] >= ny || v[t] < 0 || v[t] >= nx)
            throw std::invalid_argument("coefficient index (" + std::to_string(u[t]) + ", " + std::to_string(v[t]) +
                                        ") is outside the " + std::to_string(ny) + " x " + std::to_string(nx) +
                                        " tile");
        s.U = std::max(s.U, u[t] + 1);
        s.V = std::max(s.V, v[t] + 1);
    }
    s.vlim.assign(static_cast<size_t>(s.U), 0);
    for (int64_t t = 0; t < k; ++t) s.vlim[u[t]] = std::max(s.vlim[u[t]], v[t] + 1);
    return s;
}

}  // namespace detail

// Normalize n_tiles ny x nx tiles (finite heights, metres).
//   out:    n_tiles x m x m float32 (m = o.out_size)
//   normal: n_tiles x 3 unit plane normals (x east, y north, z up; z >= 0)
//   angle:  n_tiles directions turned onto +columns (radians, counter-clockwise from +x; 0 without orient)
inline void normalize_tiles(const float* tiles, int64_t n_tiles, int64_t ny, int64_t nx, const NormalizeOptions& o,
                            float* out, double* normal, double* angle) {
    if (n_tiles < 0 || ny < 2 || nx < 2) throw std::invalid_argument("tiles: bad shape");
    if (o.out_size < 2 || static_cast<double>(o.out_size) > static_cast<double>(std::min(ny, nx)) / std::sqrt(2.0) + 1e-9)
        throw std::invalid_argument("out_size must be in 2 .. min(ny, nx) / sqrt(2)");
    if (!(o.pixel_size > 0) || !std::isfinite(o.pixel_size)) throw std::invalid_argument("pixel_size must be > 0");
    if (o.iterations < 1) throw std::invalid_argument("iterations must be >= 1");
    const int64_t tile_size = ny * nx, m = o.out_size, out_tile = m * m;
    const int n_threads = clamp_threads(o.n_threads);
    ParallelErrors errors;
    // The orientation pass reads only nodes within the filter support of the
    // inner disc (radius m/2 - 1 - kTaps, plus kTaps * sqrt 2) and the disc itself.
    const double half_m = 0.5 * static_cast<double>(m);
    const double reach = std::max(half_m, half_m - 1.0 - detail::kTaps + detail::kTaps * std::sqrt(2.0)) + 1e-6;
#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        detail::NormalizeScratch ws;
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
        for (int64_t t = 0; t < n_tiles; ++t) {
            if (errors.failed()) continue;
            errors.run([&] {
                const float* tile = tiles + t * tile_size;
                float* dst = out + t * out_tile;
                const detail::Plane pl = detail::fit_plane(tile, ny, nx, o.pixel_size);
                double a = 0.0;
                if (o.orient) {
                    detail::resample(tile, ny, nx, pl, o, 0.0, dst, ws, reach);
                    a = detail::orientation_angle(dst, m, o.pixel_size, ws);
                }
                // angle 0 when not orienting or for an isotropic tile: the full tile at angle 0
                detail::resample(tile, ny, nx, pl, o, a, dst, ws);
                for (int k = 0; k < 3; ++k) normal[t * 3 + k] = pl.n[k];
                angle[t] = a;
            });
        }
    }
    errors.rethrow();
}

// Kept DCT-II coefficients: out[t, k] = dctn(tile_t, norm="ortho")[u[k], v[k]].
//
// Even/odd split (halves the work of both products): C[k, N-1-t] = (-1)^k C[k, t],
// so with s_t = x_t + x_{N-1-t} and a_t = x_t - x_{N-1-t} (t < N/2; the middle
// sample of an odd N goes to s alone), even k need only sum_t s_t C[k, t] and
// odd k only sum_t a_t C[k, t].  Applied along rows (T C_x^T) and then along
// columns (C_y P), accumulating in double.
namespace detail {

// Half-length basis, transposed: rows t < half, columns = the needed k of one parity.
inline std::vector<double> half_basis_t(const std::vector<double>& c, int64_t N, int64_t K, int parity,
                                        int64_t half, int64_t& count) {
    count = 0;
    for (int64_t k = parity; k < K; k += 2) ++count;
    std::vector<double> out(static_cast<size_t>(std::max<int64_t>(1, half * count)), 0.0);
    int64_t col = 0;
    for (int64_t k = parity; k < K; k += 2, ++col)
        for (int64_t t = 0; t < half; ++t) out[static_cast<size_t>(t * count + col)] = c[static_cast<size_t>(k * N + t)];
    return out;
}

// y[0:len] += sum_t coef[t] * B[t, 0:len] over t < nt (B row stride ld), four rows at a time.
inline void accumulate_rows(double* y, int64_t len, const double* coef, int64_t nt, const double* B, int64_t ld) {
    int64_t t = 0;
    for (; t + 4 <= nt; t += 4) {
        const double a0 = coef[t], a1 = coef[t + 1], a2 = coef[t + 2], a3 = coef[t + 3];
        const double* b0 = B + t * ld;
        const double* b1 = b0 + ld;
        const double* b2 = b1 + ld;
        const double* b3 = b2 + ld;
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
        for (int64_t q = 0; q < len; ++q) y[q] += a0 * b0[q] + a1 * b1[q] + a2 * b2[q] + a3 * b3[q];
    }
    for (; t < nt; ++t) {
        const double a0 = coef[t];
        const double* b0 = B + t * ld;
        for (int64_t q = 0; q < len; ++q) y[q] += a0 * b0[q];
    }
}

// C (M x N, row stride ldc) = A (M x K, row stride lda) B (K x N, row stride ldb), double.
// The two products of the truncated DCT.  With AVX-512: a register-blocked
// kernel, 4 rows x up to 24 columns of C in 12 accumulators per pass over K
// (each loaded B vector feeds four FMAs, C is written once); the portable
// version streams rows of B into C rows (accumulate_rows).
#if defined(__AVX512F__)
// Named accumulators, not an array: GCC 12 writes an array of vectors back to
// the stack on every step of the K loop.
template <int MR, int NV>
inline void gemm_block(const double* A, int64_t lda, const double* B, int64_t ldb, int64_t K, double* C, int64_t ldc,
                       __mmask8 last) {
    __m512d c00 = _mm512_setzero_pd(), c01 = _mm512_setzero_pd(), c02 = _mm512_setzero_pd();
    __m512d c10 = _mm512_setzero_pd(), c11 = _mm512_setzero_pd(), c12 = _mm512_setzero_pd();
    __m512d c20 = _mm512_setzero_pd(), c21 = _mm512_setzero_pd(), c22 = _mm512_setzero_pd();
    __m512d c30 = _mm512_setzero_pd(), c31 = _mm512_setzero_pd(), c32 = _mm512_setzero_pd();
    const double* a0 = A;
    const double* a1 = A + (MR > 1 ? lda : 0);
    const double* a2 = A + (MR > 2 ? 2 * lda : 0);
    const double* a3 = A + (MR > 3 ? 3 * lda : 0);
    for (int64_t k = 0; k < K; ++k) {
        const double* brow = B + k * ldb;
        const __m512d b0 = NV == 1 ? _mm512_maskz_loadu_pd(last, brow) : _mm512_loadu_pd(brow);
        const __m512d b1 = NV == 2 ? _mm512_maskz_loadu_pd(last, brow + 8) : NV > 2 ? _mm512_loadu_pd(brow + 8) : b0;
        const __m512d b2 = NV == 3 ? _mm512_maskz_loadu_pd(last, brow + 16) : b0;
        {
            const __m512d x = _mm512_set1_pd(a0[k]);
            c00 = _mm512_fmadd_pd(x, b0, c00);
            if constexpr (NV > 1) c01 = _mm512_fmadd_pd(x, b1, c01);
            if constexpr (NV > 2) c02 = _mm512_fmadd_pd(x, b2, c02);
        }
        if constexpr (MR > 1) {
            const __m512d x = _mm512_set1_pd(a1[k]);
            c10 = _mm512_fmadd_pd(x, b0, c10);
            if constexpr (NV > 1) c11 = _mm512_fmadd_pd(x, b1, c11);
            if constexpr (NV > 2) c12 = _mm512_fmadd_pd(x, b2, c12);
        }
        if constexpr (MR > 2) {
            const __m512d x = _mm512_set1_pd(a2[k]);
            c20 = _mm512_fmadd_pd(x, b0, c20);
            if constexpr (NV > 1) c21 = _mm512_fmadd_pd(x, b1, c21);
            if constexpr (NV > 2) c22 = _mm512_fmadd_pd(x, b2, c22);
        }
        if constexpr (MR > 3) {
            const __m512d x = _mm512_set1_pd(a3[k]);
            c30 = _mm512_fmadd_pd(x, b0, c30);
            if constexpr (NV > 1) c31 = _mm512_fmadd_pd(x, b1, c31);
            if constexpr (NV > 2) c32 = _mm512_fmadd_pd(x, b2, c32);
        }
    }
    auto put = [&](double* c, __m512d v0, __m512d v1, __m512d v2) {
        if constexpr (NV == 1) _mm512_mask_storeu_pd(c, last, v0);
        if constexpr (NV == 2) { _mm512_storeu_pd(c, v0); _mm512_mask_storeu_pd(c + 8, last, v1); }
        if constexpr (NV == 3) { _mm512_storeu_pd(c, v0); _mm512_storeu_pd(c + 8, v1); _mm512_mask_storeu_pd(c + 16, last, v2); }
    };
    put(C, c00, c01, c02);
    if constexpr (MR > 1) put(C + 1 * ldc, c10, c11, c12);
    if constexpr (MR > 2) put(C + 2 * ldc, c20, c21, c22);
    if constexpr (MR > 3) put(C + 3 * ldc, c30, c31, c32);
}

template <int MR>
inline void gemm_rows(const double* A, int64_t lda, const double* B, int64_t ldb, int64_t K, int64_t N, double* C,
                      int64_t ldc) {
    for (int64_t j = 0; j < N; j += 24) {
        const int64_t cols = std::min<int64_t>(24, N - j);
        const int nv = static_cast<int>((cols + 7) / 8);
        const int tail = static_cast<int>(cols - 8 * (nv - 1));
        const __mmask8 last = static_cast<__mmask8>((1u << tail) - 1u);
        if (nv == 3)
            gemm_block<MR, 3>(A, lda, B + j, ldb, K, C + j, ldc, last);
        else if (nv == 2)
            gemm_block<MR, 2>(A, lda, B + j, ldb, K, C + j, ldc, last);
        else
            gemm_block<MR, 1>(A, lda, B + j, ldb, K, C + j, ldc, last);
    }
}
#endif

inline void gemm(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B, int64_t ldb,
                 double* C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
#if defined(__AVX512F__)
    int64_t i = 0;
    for (; i + 4 <= M; i += 4) gemm_rows<4>(A + i * lda, lda, B, ldb, K, N, C + i * ldc, ldc);
    switch (M - i) {
        case 3: gemm_rows<3>(A + i * lda, lda, B, ldb, K, N, C + i * ldc, ldc); break;
        case 2: gemm_rows<2>(A + i * lda, lda, B, ldb, K, N, C + i * ldc, ldc); break;
        case 1: gemm_rows<1>(A + i * lda, lda, B, ldb, K, N, C + i * ldc, ldc); break;
        default: break;
    }
#else
    for (int64_t i = 0; i < M; ++i) {
        double* c = C + i * ldc;
        std::fill(c, c + N, 0.0);
        accumulate_rows(c, N, A + i * lda, K, B, ldb);
    }
#endif
}

}  // namespace detail

inline void dct_compress(const float* tiles, int64_t n_tiles, int64_t ny, int64_t nx, const int64_t* u,
                         const int64_t* v, int64_t k, int n_threads_req, float* out) {
    if (n_tiles < 0 || ny < 1 || nx < 1) throw std::invalid_argument("tiles: bad shape");
    if (k < 1) throw std::invalid_argument("keep at least one coefficient");
    const detail::KeptSet s = detail::kept_set(u, v, k, ny, nx);
    const int64_t U = s.U, V = s.V, tile_size = ny * nx;
    const int64_t hx_s = (nx + 1) / 2, hx_a = nx / 2;  // lengths of the symmetric / antisymmetric halves
    const int64_t hy_s = (ny + 1) / 2, hy_a = ny / 2;
    const std::vector<double> cy = detail::dct_basis(U, ny);  // U x ny
    const std::vector<double> cx = detail::dct_basis(V, nx);  // V x nx
    int64_t Ve = 0, Vo = 0;
    const std::vector<double> cxe = detail::half_basis_t(cx, nx, V, 0, hx_s, Ve);  // hx_s x Ve
    const std::vector<double> cxo = detail::half_basis_t(cx, nx, V, 1, hx_a, Vo);  // hx_a x Vo
    // per u: number of even / odd v columns needed
    std::vector<int64_t> le(static_cast<size_t>(U)), lo(static_cast<size_t>(U));
    for (int64_t uu = 0; uu < U; ++uu) {
        le[uu] = (s.vlim[uu] + 1) / 2;
        lo[uu] = s.vlim[uu] / 2;
    }
    const int64_t W = Ve + Vo;  // P row: [even v | odd v]
    const int n_threads = clamp_threads(n_threads_req);
    ParallelErrors errors;
#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        std::vector<double> P, Q, D, SA;
        errors.run([&] {
            P.assign(static_cast<size_t>(ny * W), 0.0);
            Q.assign(static_cast<size_t>(2 * hy_s * W), 0.0);
            D.assign(static_cast<size_t>(U * W), 0.0);
            SA.assign(static_cast<size_t>(2 * ny * hx_s), 0.0);
        });
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
        for (int64_t t = 0; t < n_tiles; ++t) {
            if (errors.failed()) continue;
            errors.run([&] {
                const float* tile = tiles + t * tile_size;
                // stage 1 inputs: sym[i, j] = T[i, j] + T[i, nx-1-j], anti[i, j] = T[i, j] - T[i, nx-1-j]
                const int64_t hs = hx_s;
                double* sym = SA.data();
                double* anti = SA.data() + ny * hs;
                for (int64_t i = 0; i < ny; ++i) {
                    const float* trow = tile + i * nx;
                    double* sr = sym + i * hs;
                    double* ar = anti + i * hs;
                    for (int64_t j = 0; j < hx_a; ++j) {
                        const double a = trow[j], b = trow[nx - 1 - j];
                        sr[j] = a + b;
                        ar[j] = a - b;
                    }
                    if (nx & 1) sr[hx_a] = trow[hx_a];
                }
                // stage 1: P[:, :Ve] = sym C_x,even^T, P[:, Ve:] = anti C_x,odd^T
                detail::gemm(ny, Ve, hx_s, sym, hs, cxe.data(), Ve, P.data(), W);
                if (Vo > 0) detail::gemm(ny, Vo, hx_a, anti, hs, cxo.data(), Vo, P.data() + Ve, W);
                // stage 2 inputs: Q_s[i] = P[i] + P[ny-1-i], Q_a[i] = P[i] - P[ny-1-i]
                double* qs = Q.data();
                double* qa = Q.data() + hy_s * W;
                for (int64_t i = 0; i < hy_a; ++i) {
                    const double* p0 = P.data() + i * W;
                    const double* p1 = P.data() + (ny - 1 - i) * W;
                    for (int64_t q = 0; q < W; ++q) {
                        qs[i * W + q] = p0[q] + p1[q];
                        qa[i * W + q] = p0[q] - p1[q];
                    }
                }
                if (ny & 1) std::copy(P.data() + hy_a * W, P.data() + (hy_a + 1) * W, qs + hy_a * W);
                // D[u, :] = C_y[u, :half] Q_{parity(u)}: u of one parity four at a time
                // (rows u, u+2, u+4, u+6 share Q), only as many columns as the block keeps
                for (int parity = 0; parity < 2; ++parity) {
                    const double* src = parity == 0 ? qs : qa;
                    const int64_t nt = parity == 0 ? hy_s : hy_a;
                    if (nt == 0) continue;
                    for (int64_t u0 = parity; u0 < U; u0 += 8) {
                        const int64_t rows = std::min<int64_t>(4, (U - u0 + 1) / 2);
                        int64_t ne = 0, no = 0;
                        for (int64_t r = 0; r < rows; ++r) {
                            ne = std::max(ne, le[u0 + 2 * r]);
                            no = std::max(no, lo[u0 + 2 * r]);
                        }
                        const double* crow = cy.data() + u0 * ny;
                        double* drow = D.data() + u0 * W;
                        detail::gemm(rows, ne, nt, crow, 2 * ny, src, W, drow, 2 * W);
                        detail::gemm(rows, no, nt, crow, 2 * ny, src + Ve, W, drow + Ve, 2 * W);
                    }
                }
                float* dst = out + t * k;
                for (int64_t q = 0; q < k; ++q) {
                    const int64_t vv = v[q];
                    const int64_t col = (vv & 1) ? Ve + vv / 2 : vv / 2;
                    dst[q] = static_cast<float>(D[static_cast<size_t>(u[q] * W + col)]);
                }
            });
        }
    }
    errors.rethrow();
}

// Inverse of dct_compress: tiles from their kept coefficients (the rest taken as 0).
// Same even/odd split, backwards: along x, W[u, j] and W[u, nx-1-j] are the sum
// and difference of the even-v and odd-v partial sums over j < nx/2; then the
// same along y with the even-u and odd-u rows of W.
inline void dct_decompress(const float* coeffs, int64_t n_tiles, int64_t k, const int64_t* u, const int64_t* v,
                           int64_t ny, int64_t nx, int n_threads_req, float* out) {
    if (n_tiles < 0 || ny < 1 || nx < 1) throw std::invalid_argument("shape: bad tile shape");
    if (k < 1) throw std::invalid_argument("coeffs: need at least one coefficient");
    const detail::KeptSet s = detail::kept_set(u, v, k, ny, nx);
    const int64_t U = s.U, V = s.V, tile_size = ny * nx;
    const int64_t hx_s = (nx + 1) / 2, hx_a = nx / 2, hy_s = (ny + 1) / 2, hy_a = ny / 2;
    const std::vector<double> cy = detail::dct_basis(U, ny);  // U x ny
    const std::vector<double> cx = detail::dct_basis(V, nx);  // V x nx
    const int64_t Ue = (U + 1) / 2, Uo = U / 2;
    // y basis transposed per parity: cye[i, r] = C_y[2r, i] (i < hy_s), cyo[i, r] = C_y[2r+1, i] (i < hy_a)
    std::vector<double> cye(static_cast<size_t>(std::max<int64_t>(1, hy_s * Ue)));
    std::vector<double> cyo(static_cast<size_t>(std::max<int64_t>(1, hy_a * Uo)));
    for (int64_t r = 0; r < Ue; ++r)
        for (int64_t i = 0; i < hy_s; ++i)
            cye[static_cast<size_t>(i * Ue + r)] = cy[static_cast<size_t>(2 * r * ny + i)];
    for (int64_t r = 0; r < Uo; ++r)
        for (int64_t i = 0; i < hy_a; ++i)
            cyo[static_cast<size_t>(i * Uo + r)] = cy[static_cast<size_t>((2 * r + 1) * ny + i)];
    // x basis per parity, rows = kept v of that parity: cxe[r, j] = C_x[2r, j] (j < hx_s),
    // cxo[r, j] = C_x[2r+1, j] (j < hx_a)
    const int64_t Ve = (V + 1) / 2, Vo = V / 2;
    std::vector<double> cxe(static_cast<size_t>(std::max<int64_t>(1, Ve * hx_s)));
    std::vector<double> cxo(static_cast<size_t>(std::max<int64_t>(1, Vo * hx_s)));
    for (int64_t r = 0; r < Ve; ++r)
        for (int64_t j = 0; j < hx_s; ++j)
            cxe[static_cast<size_t>(r * hx_s + j)] = cx[static_cast<size_t>(2 * r * nx + j)];
    for (int64_t r = 0; r < Vo; ++r)
        for (int64_t j = 0; j < hx_a; ++j)
            cxo[static_cast<size_t>(r * hx_s + j)] = cx[static_cast<size_t>((2 * r + 1) * nx + j)];
    const int n_threads = clamp_threads(n_threads_req);
    ParallelErrors errors;
#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        std::vector<double> De, Do, WE, WO, Wm, TE, TO;
        errors.run([&] {
            De.assign(static_cast<size_t>(U * std::max<int64_t>(1, Ve)), 0.0);
            Do.assign(static_cast<size_t>(U * std::max<int64_t>(1, Vo)), 0.0);
            WE.assign(static_cast<size_t>(U * hx_s), 0.0);
            WO.assign(static_cast<size_t>(U * hx_s), 0.0);
            Wm.assign(static_cast<size_t>(U * nx), 0.0);  // rows: even u first (Ue), then odd u (Uo)
            TE.assign(static_cast<size_t>(hy_s * nx), 0.0);
            TO.assign(static_cast<size_t>(std::max<int64_t>(1, hy_a) * nx), 0.0);
        });
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
        for (int64_t t = 0; t < n_tiles; ++t) {
            if (errors.failed()) continue;
            errors.run([&] {
                const float* src = coeffs + t * k;
                std::fill(De.begin(), De.end(), 0.0);
                std::fill(Do.begin(), Do.end(), 0.0);
                for (int64_t q = 0; q < k; ++q) {
                    const int64_t vv = v[q];
                    if (vv & 1)
                        Do[static_cast<size_t>(u[q] * Vo + vv / 2)] += static_cast<double>(src[q]);
                    else
                        De[static_cast<size_t>(u[q] * Ve + vv / 2)] += static_cast<double>(src[q]);
                }
                // stage 1 (along x): even-v and odd-v partial sums over j < nx/2, then
                // W[u, j] and W[u, nx-1-j] are their sum and difference
                detail::gemm(U, hx_s, Ve, De.data(), Ve, cxe.data(), hx_s, WE.data(), hx_s);
                if (Vo > 0)
                    detail::gemm(U, hx_a, Vo, Do.data(), Vo, cxo.data(), hx_s, WO.data(), hx_s);
                else
                    std::fill(WO.begin(), WO.end(), 0.0);
                for (int64_t uu = 0; uu < U; ++uu) {
                    double* wrow = Wm.data() + ((uu & 1) ? Ue + uu / 2 : uu / 2) * nx;
                    const double* we = WE.data() + uu * hx_s;
                    const double* wo = WO.data() + uu * hx_s;
                    for (int64_t j = 0; j < hx_a; ++j) {
                        wrow[j] = we[j] + wo[j];
                        wrow[nx - 1 - j] = we[j] - wo[j];
                    }
                    if (nx & 1) wrow[hx_a] = we[hx_a];
                }
                // stage 2 (along y): rows i and ny-1-i from the even-u and odd-u sums
                detail::gemm(hy_s, nx, Ue, cye.data(), Ue, Wm.data(), nx, TE.data(), nx);
                if (Uo > 0 && hy_a > 0)
                    detail::gemm(hy_a, nx, Uo, cyo.data(), Uo, Wm.data() + Ue * nx, nx, TO.data(), nx);
                else
                    std::fill(TO.begin(), TO.end(), 0.0);
                float* dst = out + t * tile_size;
                for (int64_t i = 0; i < hy_a; ++i) {
                    const double* te = TE.data() + i * nx;
                    const double* to = TO.data() + i * nx;
                    float* r0 = dst + i * nx;
                    float* r1 = dst + (ny - 1 - i) * nx;
                    for (int64_t j = 0; j < nx; ++j) {
                        r0[j] = static_cast<float>(te[j] + to[j]);
                        r1[j] = static_cast<float>(te[j] - to[j]);
                    }
                }
                if (ny & 1) {
                    const double* te = TE.data() + hy_a * nx;
                    float* r0 = dst + hy_a * nx;
                    for (int64_t j = 0; j < nx; ++j) r0[j] = static_cast<float>(te[j]);
                }
            });
        }
    }
    errors.rethrow();
}

}  // namespace crevkit::features
