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
//
// dct: orthonormal DCT-II, C[k, t] = a_k cos(pi (2t+1) k / (2N)), a_0 = sqrt(1/N),
// a_k = sqrt(2/N); coefficient (u, v) of a tile T is (C_y T C_x^T)[u, v], equal
// to scipy.fft.dctn(T, norm="ortho")[u, v].  Only the kept (u, v) are computed:
//   P = T C_x[:V]^T (ny x V), then D[u, :vlim(u)] = C_y[u] P[:, :vlim(u)]
// in double, each product halved by the even/odd symmetry of the basis (see
// dct_compress).  dct_decompress runs the same steps backwards.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "crevkit/parallel.hpp"

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

// Steps 4-5: resample the flattened surface onto the m x m output grid turned by
// `angle` (radians).  Nodes outside the output disc: rim value on the same ray
// (edge_fill) or 0.  Row by row, branch-free inner loops (SIMD gathers).
inline void resample(const float* tile, int64_t ny, int64_t nx, const Plane& pl, const NormalizeOptions& o,
                     double angle, float* out) {
    const int64_t m = o.out_size;
    const double p = o.pixel_size, inv_p = 1.0 / p;
    const double ci = 0.5 * static_cast<double>(ny - 1), cj = 0.5 * static_cast<double>(nx - 1);
    const double c0 = 0.5 * static_cast<double>(m - 1);
    const double r2 = 0.25 * static_cast<double>(m) * static_cast<double>(m);
    const double ca = std::cos(angle), sa = std::sin(angle);
    const double(&R)[3][3] = pl.R;
    const double colmax = static_cast<double>(nx - 1), rowmax = static_cast<double>(ny - 1);
    const int32_t jlast = static_cast<int32_t>(nx - 2), ilast = static_cast<int32_t>(ny - 2);
    const int32_t stride = static_cast<int32_t>(nx);
    std::vector<double> bx(static_cast<size_t>(m)), by(static_cast<size_t>(m)), zp(static_cast<size_t>(m));
    std::vector<unsigned char> keep(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) {
        const double di = static_cast<double>(i) - c0;
        const double v = -di * p;
        for (int64_t j = 0; j < m; ++j) {
            const double dj = static_cast<double>(j) - c0;
            double u = dj * p, w = v;
            const double d2 = di * di + dj * dj;
            keep[j] = 1;
            if (d2 > r2) {
                if (!o.edge_fill) keep[j] = 0;
                // radial edge extension: sample the rim point on the same ray
                const double f = std::sqrt(r2 / d2);
                u *= f;
                w *= f;
            }
            const double xp = u * ca - w * sa;
            const double yp = u * sa + w * ca;
            // in-plane part of the source position: c_xy + R^T (x', y', 0)
            bx[j] = pl.c[0] + R[0][0] * xp + R[1][0] * yp;
            by[j] = pl.c[1] + R[0][1] * xp + R[1][1] * yp;
            zp[j] = 0.0;
        }
        double* zpp = zp.data();
        const double* bxp = bx.data();
        const double* byp = by.data();
        for (int it = 0; it < o.iterations; ++it) {
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
            for (int64_t j = 0; j < m; ++j) {
                const double sx = bxp[j] + R[2][0] * zpp[j];
                const double sy = byp[j] + R[2][1] * zpp[j];
                double col = sx * inv_p + cj;
                double row = ci - sy * inv_p;
                col = std::min(std::max(col, 0.0), colmax);
                row = std::min(std::max(row, 0.0), rowmax);
                const int32_t j0 = std::min(static_cast<int32_t>(col), jlast);
                const int32_t i0 = std::min(static_cast<int32_t>(row), ilast);
                const double tx = col - static_cast<double>(j0);
                const double ty = row - static_cast<double>(i0);
                const int32_t idx = i0 * stride + j0;
                const double z00 = tile[idx], z01 = tile[idx + 1];
                const double z10 = tile[idx + stride], z11 = tile[idx + stride + 1];
                const double top = z00 + tx * (z01 - z00);
                const double bot = z10 + tx * (z11 - z10);
                const double zs = top + ty * (bot - top);
                zpp[j] = R[2][0] * (sx - pl.c[0]) + R[2][1] * (sy - pl.c[1]) + R[2][2] * (zs - pl.c[2]);
            }
        }
        float* orow = out + i * m;
        for (int64_t j = 0; j < m; ++j) orow[j] = keep[j] ? static_cast<float>(zp[j]) : 0.0f;
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
inline double orientation_angle(const float* z, int64_t m, double p) {
    const double c0 = 0.5 * static_cast<double>(m - 1);
    const double rin = 0.5 * static_cast<double>(m) - 1.0 - kTaps;
    const double rin2 = rin * rin;
    const double r2 = 0.25 * static_cast<double>(m) * static_cast<double>(m);
    double g[2 * kTaps + 1], w[2 * kTaps + 1];
    orientation_filters(g, w);
    // A: smoothed along columns (vertical); B: derivative towards north (up the rows)
    std::vector<double> A(static_cast<size_t>(m * m), 0.0), B(static_cast<size_t>(m * m), 0.0);
    for (int64_t i = kTaps; i < m - kTaps; ++i) {
        for (int64_t j = 0; j < m; ++j) {
            double a = 0.0, b = 0.0;
            for (int k = -kTaps; k <= kTaps; ++k) {
                a += g[k + kTaps] * static_cast<double>(z[(i + k) * m + j]);
                b += w[k + kTaps] * static_cast<double>(z[(i - k) * m + j]);
            }
            A[static_cast<size_t>(i * m + j)] = a;
            B[static_cast<size_t>(i * m + j)] = b;
        }
    }
    double jxx = 0, jxy = 0, jyy = 0;
    const double inv_p = 1.0 / p;
    for (int64_t i = kTaps; i < m - kTaps; ++i) {
        const double di = static_cast<double>(i) - c0;
        for (int64_t j = kTaps; j < m - kTaps; ++j) {
            const double dj = static_cast<double>(j) - c0;
            if (di * di + dj * dj > rin2) continue;
            double gu = 0.0, gv = 0.0;
            for (int k = -kTaps; k <= kTaps; ++k) {
                gu += w[k + kTaps] * A[static_cast<size_t>(i * m + j + k)];
                gv += g[k + kTaps] * B[static_cast<size_t>(i * m + j + k)];
            }
            gu *= inv_p;
            gv *= inv_p;
            jxx += gu * gu; jxy += gu * gv; jyy += gv * gv;
        }
    }
    const double tr = jxx + jyy;
    const double aniso = std::sqrt((jxx - jyy) * (jxx - jyy) + 4.0 * jxy * jxy);
    if (!(tr > 0.0) || aniso < 1e-9 * tr) return 0.0;
    double theta = 0.5 * std::atan2(2.0 * jxy, jxx - jyy);
    const double ct = std::cos(theta), st = std::sin(theta);
    double mom = 0.0;
    for (int64_t i = 0; i < m; ++i) {
        const double di = static_cast<double>(i) - c0;
        for (int64_t j = 0; j < m; ++j) {
            const double dj = static_cast<double>(j) - c0;
            if (di * di + dj * dj > r2) continue;
            mom += static_cast<double>(z[i * m + j]) * (dj * p * ct - di * p * st);
        }
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
#if CREVKIT_HAS_OPENMP
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 4)
#endif
    for (int64_t t = 0; t < n_tiles; ++t) {
        if (errors.failed()) continue;
        errors.run([&] {
            const float* tile = tiles + t * tile_size;
            float* dst = out + t * out_tile;
            const detail::Plane pl = detail::fit_plane(tile, ny, nx, o.pixel_size);
            detail::resample(tile, ny, nx, pl, o, 0.0, dst);
            double a = 0.0;
            if (o.orient) {
                a = detail::orientation_angle(dst, m, o.pixel_size);
                if (a != 0.0) detail::resample(tile, ny, nx, pl, o, a, dst);
            }
            for (int k = 0; k < 3; ++k) normal[t * 3 + k] = pl.n[k];
            angle[t] = a;
        });
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

// Two outputs sharing the B rows: y0 += sum_t c0[t] B[t], y1 += sum_t c1[t] B[t]
// (each loaded B vector feeds two FMAs).
inline void accumulate_rows2(double* y0, double* y1, int64_t len, const double* c0, const double* c1, int64_t nt,
                             const double* B, int64_t ld) {
    int64_t t = 0;
    for (; t + 2 <= nt; t += 2) {
        const double a0 = c0[t], a1 = c0[t + 1], b0 = c1[t], b1 = c1[t + 1];
        const double* r0 = B + t * ld;
        const double* r1 = r0 + ld;
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
        for (int64_t q = 0; q < len; ++q) {
            const double x0 = r0[q], x1 = r1[q];
            y0[q] += a0 * x0 + a1 * x1;
            y1[q] += b0 * x0 + b1 * x1;
        }
    }
    for (; t < nt; ++t) {
        const double a0 = c0[t], b0 = c1[t];
        const double* r0 = B + t * ld;
        for (int64_t q = 0; q < len; ++q) {
            y0[q] += a0 * r0[q];
            y1[q] += b0 * r0[q];
        }
    }
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
        std::vector<double> P, Q, D, sym, anti;
        errors.run([&] {
            P.assign(static_cast<size_t>(ny * W), 0.0);
            Q.assign(static_cast<size_t>(2 * hy_s * W), 0.0);
            D.assign(static_cast<size_t>(U * W), 0.0);
            sym.assign(static_cast<size_t>(2 * hx_s), 0.0);
            anti.assign(static_cast<size_t>(2 * hx_s), 0.0);
        });
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
        for (int64_t t = 0; t < n_tiles; ++t) {
            if (errors.failed()) continue;
            errors.run([&] {
                const float* tile = tiles + t * tile_size;
                // stage 1: P[i, :] = T[i, :] C_x^T, even and odd v separately
                // two rows at a time: sym/anti hold rows i (first half) and i+1 (second half)
                const int64_t hs = hx_s;
                for (int64_t i = 0; i < ny; i += 2) {
                    const int64_t rows = std::min<int64_t>(2, ny - i);
                    for (int64_t r = 0; r < rows; ++r) {
                        const float* trow = tile + (i + r) * nx;
                        double* sr = sym.data() + r * hs;
                        double* ar = anti.data() + r * hs;
                        for (int64_t j = 0; j < hx_a; ++j) {
                            const double a = trow[j], b = trow[nx - 1 - j];
                            sr[j] = a + b;
                            ar[j] = a - b;
                        }
                        if (nx & 1) sr[hx_a] = trow[hx_a];
                    }
                    double* p0 = P.data() + i * W;
                    std::fill(p0, p0 + rows * W, 0.0);
                    if (rows == 2) {
                        double* p1 = p0 + W;
                        detail::accumulate_rows2(p0, p1, Ve, sym.data(), sym.data() + hs, hx_s, cxe.data(), Ve);
                        if (Vo > 0)
                            detail::accumulate_rows2(p0 + Ve, p1 + Ve, Vo, anti.data(), anti.data() + hs, hx_a,
                                                     cxo.data(), Vo);
                    } else {
                        detail::accumulate_rows(p0, Ve, sym.data(), hx_s, cxe.data(), Ve);
                        if (Vo > 0) detail::accumulate_rows(p0 + Ve, Vo, anti.data(), hx_a, cxo.data(), Vo);
                    }
                }
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
                // D[u, :] = C_y[u, :half] Q_{parity(u)}, only the columns kept for this u
                for (int64_t uu = 0; uu < U; ++uu) {
                    if (s.vlim[uu] == 0) continue;
                    const bool even = (uu & 1) == 0;
                    const double* src = even ? qs : qa;
                    const int64_t nt = even ? hy_s : hy_a;
                    const double* crow = cy.data() + uu * ny;
                    double* drow = D.data() + uu * W;
                    std::fill(drow, drow + Ve, 0.0);
                    std::fill(drow + Ve, drow + W, 0.0);
                    detail::accumulate_rows(drow, le[uu], crow, nt, src, W);
                    if (lo[uu] > 0) detail::accumulate_rows(drow + Ve, lo[uu], crow, nt, src + Ve, W);
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
    const int n_threads = clamp_threads(n_threads_req);
    ParallelErrors errors;
#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        std::vector<double> D, Wm, half, te, to;
        errors.run([&] {
            D.assign(static_cast<size_t>(U * V), 0.0);
            Wm.assign(static_cast<size_t>(U * nx), 0.0);  // rows: even u first (Ue), then odd u (Uo)
            half.assign(static_cast<size_t>(2 * hx_s), 0.0);
            te.assign(static_cast<size_t>(nx), 0.0);
            to.assign(static_cast<size_t>(nx), 0.0);
        });
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
        for (int64_t t = 0; t < n_tiles; ++t) {
            if (errors.failed()) continue;
            errors.run([&] {
                const float* src = coeffs + t * k;
                std::fill(D.begin(), D.end(), 0.0);
                for (int64_t q = 0; q < k; ++q) D[static_cast<size_t>(u[q] * V + v[q])] += static_cast<double>(src[q]);
                // stage 1 (along x): W[u, :] from the even-v and odd-v partial sums
                for (int64_t uu = 0; uu < U; ++uu) {
                    double* wrow = Wm.data() + ((uu & 1) ? Ue + uu / 2 : uu / 2) * nx;
                    double* we = half.data();
                    double* wo = half.data() + hx_s;
                    std::fill(we, we + 2 * hx_s, 0.0);
                    const double* drow = D.data() + uu * V;
                    for (int64_t vv = 0; vv < s.vlim[uu]; ++vv) {
                        const double d = drow[vv];
                        if (d == 0.0) continue;
                        const double* crow = cx.data() + vv * nx;
                        double* acc = (vv & 1) ? wo : we;
                        const int64_t len = (vv & 1) ? hx_a : hx_s;
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
                        for (int64_t j = 0; j < len; ++j) acc[j] += d * crow[j];
                    }
                    for (int64_t j = 0; j < hx_a; ++j) {
                        wrow[j] = we[j] + wo[j];
                        wrow[nx - 1 - j] = we[j] - wo[j];
                    }
                    if (nx & 1) wrow[hx_a] = we[hx_a];
                }
                // stage 2 (along y): rows i and ny-1-i from the even-u and odd-u sums
                float* dst = out + t * tile_size;
                const double* wev = Wm.data();
                const double* wod = Wm.data() + Ue * nx;
                for (int64_t i = 0; i < hy_s; ++i) {
                    std::fill(te.begin(), te.end(), 0.0);
                    detail::accumulate_rows(te.data(), nx, cye.data() + i * Ue, Ue, wev, nx);
                    const bool pair = i < hy_a;
                    if (pair) {
                        std::fill(to.begin(), to.end(), 0.0);
                        if (Uo > 0) detail::accumulate_rows(to.data(), nx, cyo.data() + i * Uo, Uo, wod, nx);
                        float* r0 = dst + i * nx;
                        float* r1 = dst + (ny - 1 - i) * nx;
                        for (int64_t j = 0; j < nx; ++j) {
                            r0[j] = static_cast<float>(te[j] + to[j]);
                            r1[j] = static_cast<float>(te[j] - to[j]);
                        }
                    } else {
                        float* r0 = dst + i * nx;
                        for (int64_t j = 0; j < nx; ++j) r0[j] = static_cast<float>(te[j]);
                    }
                }
            });
        }
    }
    errors.rethrow();
}

}  // namespace crevkit::features
