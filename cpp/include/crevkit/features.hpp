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
//   P = T C_x[:V]^T (ny x V), then D[u, :vlim(u)] = C_y[u] P[:, :vlim(u)]  (double).
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

// Bilinear sample of an ny x nx tile at metric (x, y), clamped to the pixel-centre box.
inline double bilinear(const float* tile, int64_t ny, int64_t nx, double cx, double cy, double inv_p, double x,
                       double y) {
    double col = x * inv_p + cx;
    double row = cy - y * inv_p;
    col = std::min(std::max(col, 0.0), static_cast<double>(nx - 1));
    row = std::min(std::max(row, 0.0), static_cast<double>(ny - 1));
    const int64_t j0 = std::min<int64_t>(static_cast<int64_t>(col), nx - 2);
    const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(row), ny - 2);
    const double tx = col - static_cast<double>(j0);
    const double ty = row - static_cast<double>(i0);
    const float* r0 = tile + i0 * nx + j0;
    const float* r1 = r0 + nx;
    const double top = static_cast<double>(r0[0]) + tx * (static_cast<double>(r0[1]) - static_cast<double>(r0[0]));
    const double bot = static_cast<double>(r1[0]) + tx * (static_cast<double>(r1[1]) - static_cast<double>(r1[0]));
    return top + ty * (bot - top);
}

struct Plane {
    double c[3];     // centroid of the masked points
    double n[3];     // unit normal, n[2] >= 0
    double R[3][3];  // minimal rotation with R n = +z
};

inline Plane fit_plane(const float* tile, int64_t ny, int64_t nx, double p) {
    const double ci = 0.5 * static_cast<double>(ny - 1), cj = 0.5 * static_cast<double>(nx - 1);
    const double rad = 0.5 * static_cast<double>(std::min(ny, nx));
    const double r2 = rad * rad;
    double sx = 0, sy = 0, sz = 0;
    int64_t cnt = 0;
    for (int64_t i = 0; i < ny; ++i) {
        const double di = static_cast<double>(i) - ci;
        const float* row = tile + i * nx;
        for (int64_t j = 0; j < nx; ++j) {
            const double dj = static_cast<double>(j) - cj;
            if (di * di + dj * dj <= r2) {
                sx += dj * p;
                sy += -di * p;
                sz += static_cast<double>(row[j]);
                ++cnt;
            }
        }
    }
    Plane pl;
    const double inv = 1.0 / static_cast<double>(cnt);
    pl.c[0] = sx * inv; pl.c[1] = sy * inv; pl.c[2] = sz * inv;
    double cxx = 0, cxy = 0, cxz = 0, cyy = 0, cyz = 0, czz = 0;
    for (int64_t i = 0; i < ny; ++i) {
        const double di = static_cast<double>(i) - ci;
        const float* row = tile + i * nx;
        const double y = -di * p - pl.c[1];
        for (int64_t j = 0; j < nx; ++j) {
            const double dj = static_cast<double>(j) - cj;
            if (di * di + dj * dj <= r2) {
                const double x = dj * p - pl.c[0];
                const double z = static_cast<double>(row[j]) - pl.c[2];
                cxx += x * x; cxy += x * y; cxz += x * z;
                cyy += y * y; cyz += y * z; czz += z * z;
            }
        }
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
// `angle` (radians).  Nodes outside the output disc are 0.
inline void resample(const float* tile, int64_t ny, int64_t nx, const Plane& pl, const NormalizeOptions& o,
                     double angle, float* out) {
    const int64_t m = o.out_size;
    const double p = o.pixel_size, inv_p = 1.0 / p;
    const double ci = 0.5 * static_cast<double>(ny - 1), cj = 0.5 * static_cast<double>(nx - 1);
    const double c0 = 0.5 * static_cast<double>(m - 1);
    const double r2 = 0.25 * static_cast<double>(m) * static_cast<double>(m);
    const double ca = std::cos(angle), sa = std::sin(angle);
    const double(&R)[3][3] = pl.R;
    for (int64_t i = 0; i < m; ++i) {
        const double di = static_cast<double>(i) - c0;
        const double v = -di * p;
        for (int64_t j = 0; j < m; ++j) {
            const double dj = static_cast<double>(j) - c0;
            double u = dj * p, w = v;
            const double d2 = di * di + dj * dj;
            if (d2 > r2) {
                if (!o.edge_fill) {
                    out[i * m + j] = 0.0f;
                    continue;
                }
                // radial edge extension: sample the rim point on the same ray
                const double f = std::sqrt(r2 / d2);
                u *= f;
                w *= f;
            }
            const double xp = u * ca - w * sa;
            const double yp = u * sa + w * ca;
            // in-plane part of the source position: c_xy + R^T (x', y', 0)
            const double bx = pl.c[0] + R[0][0] * xp + R[1][0] * yp;
            const double by = pl.c[1] + R[0][1] * xp + R[1][1] * yp;
            double zp = 0.0;
            for (int it = 0; it < o.iterations; ++it) {
                const double sx = bx + R[2][0] * zp;
                const double sy = by + R[2][1] * zp;
                const double zs = bilinear(tile, ny, nx, cj, ci, inv_p, sx, sy);
                zp = R[2][0] * (sx - pl.c[0]) + R[2][1] * (sy - pl.c[1]) + R[2][2] * (zs - pl.c[2]);
            }
            out[i * m + j] = static_cast<float>(zp);
        }
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
//   angle:  n_tiles in-plane turn applied (radians, counter-clockwise; 0 without orient)
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
inline void dct_compress(const float* tiles, int64_t n_tiles, int64_t ny, int64_t nx, const int64_t* u,
                         const int64_t* v, int64_t k, int n_threads_req, float* out) {
    if (n_tiles < 0 || ny < 1 || nx < 1) throw std::invalid_argument("tiles: bad shape");
    if (k < 1) throw std::invalid_argument("keep at least one coefficient");
    const detail::KeptSet s = detail::kept_set(u, v, k, ny, nx);
    const std::vector<double> cy = detail::dct_basis(s.U, ny);  // U x ny
    const std::vector<double> cxb = detail::dct_basis(s.V, nx);  // V x nx
    // transposed x basis: nx x V, so P[i, :] accumulates contiguous rows
    std::vector<double> cxt(static_cast<size_t>(nx * s.V));
    for (int64_t vv = 0; vv < s.V; ++vv)
        for (int64_t j = 0; j < nx; ++j) cxt[static_cast<size_t>(j * s.V + vv)] = cxb[static_cast<size_t>(vv * nx + j)];
    const int64_t tile_size = ny * nx, U = s.U, V = s.V;
    const int n_threads = clamp_threads(n_threads_req);
    ParallelErrors errors;
#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        std::vector<double> P, D;
        errors.run([&] {
            P.assign(static_cast<size_t>(ny * V), 0.0);
            D.assign(static_cast<size_t>(U * V), 0.0);
        });
#if CREVKIT_HAS_OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
        for (int64_t t = 0; t < n_tiles; ++t) {
            if (errors.failed()) continue;
            errors.run([&] {
                const float* tile = tiles + t * tile_size;
                // P = T C_x^T   (ny x V)
                for (int64_t i = 0; i < ny; ++i) {
                    double* prow = P.data() + i * V;
                    std::fill(prow, prow + V, 0.0);
                    const float* trow = tile + i * nx;
                    int64_t j = 0;
                    for (; j + 4 <= nx; j += 4) {
                        const double t0 = trow[j], t1 = trow[j + 1], t2 = trow[j + 2], t3 = trow[j + 3];
                        const double* c0 = cxt.data() + j * V;
                        const double* c1 = c0 + V;
                        const double* c2 = c1 + V;
                        const double* c3 = c2 + V;
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
                        for (int64_t q = 0; q < V; ++q) prow[q] += t0 * c0[q] + t1 * c1[q] + t2 * c2[q] + t3 * c3[q];
                    }
                    for (; j < nx; ++j) {
                        const double t0 = trow[j];
                        const double* c0 = cxt.data() + j * V;
                        for (int64_t q = 0; q < V; ++q) prow[q] += t0 * c0[q];
                    }
                }
                // D[u, :vlim(u)] = C_y[u] P[:, :vlim(u)]
                for (int64_t uu = 0; uu < U; ++uu) {
                    const int64_t lim = s.vlim[uu];
                    if (lim == 0) continue;
                    double* drow = D.data() + uu * V;
                    std::fill(drow, drow + lim, 0.0);
                    const double* crow = cy.data() + uu * ny;
                    int64_t i = 0;
                    for (; i + 4 <= ny; i += 4) {
                        const double a0 = crow[i], a1 = crow[i + 1], a2 = crow[i + 2], a3 = crow[i + 3];
                        const double* p0 = P.data() + i * V;
                        const double* p1 = p0 + V;
                        const double* p2 = p1 + V;
                        const double* p3 = p2 + V;
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
                        for (int64_t q = 0; q < lim; ++q) drow[q] += a0 * p0[q] + a1 * p1[q] + a2 * p2[q] + a3 * p3[q];
                    }
                    for (; i < ny; ++i) {
                        const double a0 = crow[i];
                        const double* p0 = P.data() + i * V;
                        for (int64_t q = 0; q < lim; ++q) drow[q] += a0 * p0[q];
                    }
                }
                float* dst = out + t * k;
                for (int64_t q = 0; q < k; ++q) dst[q] = static_cast<float>(D[static_cast<size_t>(u[q] * V + v[q])]);
            });
        }
    }
    errors.rethrow();
}

// Inverse of dct_compress: tiles from their kept coefficients (the rest taken as 0).
inline void dct_decompress(const float* coeffs, int64_t n_tiles, int64_t k, const int64_t* u, const int64_t* v,
                           int64_t ny, int64_t nx, int n_threads_req, float* out) {
    if (n_tiles < 0 || ny < 1 || nx < 1) throw std::invalid_argument("shape: bad tile shape");
    if (k < 1) throw std::invalid_argument("coeffs: need at least one coefficient");
    const detail::KeptSet s = detail::kept_set(u, v, k, ny, nx);
    const std::vector<double> cy = detail::dct_basis(s.U, ny);  // U x ny
    const std::vector<double> cx = detail::dct_basis(s.V, nx);  // V x nx
    const int64_t U = s.U, V = s.V, tile_size = ny * nx;
    const int n_threads = clamp_threads(n_threads_req);
    ParallelErrors errors;
#if CREVKIT_HAS_OPENMP
#pragma omp parallel num_threads(n_threads)
#endif
    {
        std::vector<double> D, W, T;
        errors.run([&] {
            D.assign(static_cast<size_t>(U * V), 0.0);
            W.assign(static_cast<size_t>(U * nx), 0.0);
            T.assign(static_cast<size_t>(nx), 0.0);
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
                // W = D C_x (U x nx)
                for (int64_t uu = 0; uu < U; ++uu) {
                    double* wrow = W.data() + uu * nx;
                    std::fill(wrow, wrow + nx, 0.0);
                    const double* drow = D.data() + uu * V;
                    for (int64_t vv = 0; vv < s.vlim[uu]; ++vv) {
                        const double d = drow[vv];
                        if (d == 0.0) continue;
                        const double* crow = cx.data() + vv * nx;
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
                        for (int64_t j = 0; j < nx; ++j) wrow[j] += d * crow[j];
                    }
                }
                // tile = C_y^T W (ny x nx)
                float* dst = out + t * tile_size;
                for (int64_t i = 0; i < ny; ++i) {
                    std::fill(T.begin(), T.end(), 0.0);
                    for (int64_t uu = 0; uu < U; ++uu) {
                        const double c = cy[static_cast<size_t>(uu * ny + i)];
                        const double* wrow = W.data() + uu * nx;
#if CREVKIT_HAS_OPENMP
#pragma omp simd
#endif
                        for (int64_t j = 0; j < nx; ++j) T[j] += c * wrow[j];
                    }
                    for (int64_t j = 0; j < nx; ++j) dst[i * nx + j] = static_cast<float>(T[j]);
                }
            });
        }
    }
    errors.rethrow();
}

}  // namespace crevkit::features
