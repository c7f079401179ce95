"""NumPy twins of the tile feature kernels (crevkit/features.hpp).

Same signatures as the public wrappers in :mod:`crevkit.features`, same
algorithm step by step (float64 throughout, float32 outputs), no compiled code.
``n_threads`` is accepted and ignored.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import features as _f
from .._validation import as_float32_array
from ..errors import CrevkitValueError

__all__ = ["normalize_tiles", "dct_compress", "dct_decompress"]


def _fit_plane(tile: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ny, nx = tile.shape
    di = np.arange(ny) - (ny - 1) / 2.0
    dj = np.arange(nx) - (nx - 1) / 2.0
    inside = di[:, None] ** 2 + dj[None, :] ** 2 <= (min(ny, nx) / 2.0) ** 2
    ii, jj = np.nonzero(inside)
    pts = np.stack([dj[jj] * p, -di[ii] * p, tile[inside].astype(np.float64)], axis=1)
    c = pts.mean(axis=0)
    q = pts - c
    cov = q.T @ q / len(q)
    _, vecs = np.linalg.eigh(cov)
    n = vecs[:, 0] / np.linalg.norm(vecs[:, 0])
    if n[2] < 0:
        n = -n
    wx, wy, cz = n[1], -n[0], n[2]
    f = 1.0 / (1.0 + cz)
    R = np.array([
        [1.0 - wy * wy * f, wx * wy * f, wy],
        [wx * wy * f, 1.0 - wx * wx * f, -wx],
        [-wy, wx, 1.0 - (wx * wx + wy * wy) * f],
    ])
    return c, n, R


def _bilinear(tile: np.ndarray, x: np.ndarray, y: np.ndarray, p: float) -> np.ndarray:
    ny, nx = tile.shape
    inv_p = 1.0 / p
    col = np.clip(x * inv_p + (nx - 1) / 2.0, 0.0, nx - 1)
    row = np.clip((ny - 1) / 2.0 - y * inv_p, 0.0, ny - 1)
    j0 = np.minimum(col.astype(np.int64), nx - 2)
    i0 = np.minimum(row.astype(np.int64), ny - 2)
    tx, ty = col - j0, row - i0
    t = tile.astype(np.float64)
    a, b = t[i0, j0], t[i0, j0 + 1]
    c, d = t[i0 + 1, j0], t[i0 + 1, j0 + 1]
    top = a + tx * (b - a)
    bot = c + tx * (d - c)
    return top + ty * (bot - top)


def _resample(tile: np.ndarray, c: np.ndarray, R: np.ndarray, p: float, m: int, iterations: int,
              angle: float, edge_fill: bool) -> np.ndarray:
    d = np.arange(m) - (m - 1) / 2.0
    d2 = d[:, None] ** 2 + d[None, :] ** 2
    r2 = m * m / 4.0
    inside = d2 <= r2
    sel = np.ones_like(inside) if edge_fill else inside
    ii, jj = np.nonzero(sel)
    u, v = d[jj] * p, -d[ii] * p
    if edge_fill:  # radial edge extension: rim point on the same ray
        dd = d2[ii, jj]
        f = np.where(dd > r2, np.sqrt(r2 / np.maximum(dd, r2)), 1.0)
        u, v = u * f, v * f
    ca, sa = math.cos(angle), math.sin(angle)
    xp = u * ca - v * sa
    yp = u * sa + v * ca
    bx = c[0] + R[0, 0] * xp + R[1, 0] * yp
    by = c[1] + R[0, 1] * xp + R[1, 1] * yp
    zp = np.zeros_like(bx)
    for _ in range(iterations):
        sx = bx + R[2, 0] * zp
        sy = by + R[2, 1] * zp
        zs = _bilinear(tile, sx, sy, p)
        zp = R[2, 0] * (sx - c[0]) + R[2, 1] * (sy - c[1]) + R[2, 2] * (zs - c[2])
    out = np.zeros((m, m), dtype=np.float32)
    out[sel] = zp
    return out


def _orientation_filters() -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-0.5 * k * k)
    w = k * g / np.sum(k * k * g)
    return g / g.sum(), w


def _orientation(z: np.ndarray, p: float) -> float:
    m = z.shape[0]
    d = np.arange(m) - (m - 1) / 2.0
    zd = z.astype(np.float64)
    g, w = _orientation_filters()
    T = 3
    # A: smoothed along columns; B: derivative towards north (rows T .. m-T-1)
    A = sum(g[k + T] * zd[T + k:m - T + k, :] for k in range(-T, T + 1))
    B = sum(w[k + T] * zd[T - k:m - T - k, :] for k in range(-T, T + 1))
    gu = sum(w[k + T] * A[:, T + k:m - T + k] for k in range(-T, T + 1)) / p
    gv = sum(g[k + T] * B[:, T + k:m - T + k] for k in range(-T, T + 1)) / p
    rin = m / 2.0 - 1.0 - T
    di, dj = d[T:m - T, None], d[None, T:m - T]
    inner = di ** 2 + dj ** 2 <= rin * rin
    gu, gv = gu[inner], gv[inner]
    jxx, jxy, jyy = np.sum(gu * gu), np.sum(gu * gv), np.sum(gv * gv)
    tr = jxx + jyy
    aniso = math.sqrt((jxx - jyy) ** 2 + 4.0 * jxy * jxy)
    if not tr > 0 or aniso < 1e-9 * tr:
        return 0.0
    theta = 0.5 * math.atan2(2.0 * jxy, jxx - jyy)
    disc = d[:, None] ** 2 + d[None, :] ** 2 <= m * m / 4.0
    proj = d[None, :] * p * math.cos(theta) - d[:, None] * p * math.sin(theta)
    if np.sum((zd * proj)[disc]) < 0:
        theta += math.pi
    return theta


def normalize_tiles(
    tiles: Any,
    pixel_size: float = 0.5,
    *,
    size: int | None = None,
    iterations: int = 3,
    orient: bool = True,
    fill: str = "edge",
    n_threads: int | None = None,
) -> _f.NormalizedTiles:
    """NumPy twin of :func:`crevkit.normalize_tiles` (same arguments and result)."""
    was_2d = np.ndim(tiles) == 2
    arr, p, m, it = _f._check_normalize_args(tiles, pixel_size, size, iterations)
    edge = _f._check_fill(fill)
    n = arr.shape[0]
    out = np.empty((n, m, m), dtype=np.float32)
    normal = np.empty((n, 3))
    angle = np.zeros(n)
    for t in range(n):
        c, nv, R = _fit_plane(arr[t], p)
        out[t] = _resample(arr[t], c, R, p, m, it, 0.0, edge)
        if orient:
            a = _orientation(out[t], p)
            if a != 0.0:
                out[t] = _resample(arr[t], c, R, p, m, it, a, edge)
            angle[t] = a
        normal[t] = nv
    slope, aspect = _f.plane_angles(normal)
    return _f._squeeze(_f.NormalizedTiles(out, slope, aspect, np.degrees(angle), normal), was_2d)


def _compress_kept(arr: np.ndarray, u: np.ndarray, v: np.ndarray, threads: int = 1) -> np.ndarray:
    ny, nx = arr.shape[1:]
    U, V = int(u.max()) + 1, int(v.max()) + 1
    cy, cx = _f.dct_basis(ny, U), _f.dct_basis(nx, V)
    d = np.einsum("ui,nij,vj->nuv", cy, arr.astype(np.float64), cx, optimize=True)
    return d[:, u, v].astype(np.float32)


def dct_compress(
    tiles: Any,
    keep: int | float | None = None,
    *,
    tolerance: float | None = None,
    metric: str = "max",
    mask: np.ndarray | None = None,
    sample: int = 256,
    seed: int = 0,
    n_threads: int | None = None,
) -> np.ndarray:
    """NumPy twin of :func:`crevkit.dct_compress` (same arguments and result)."""
    was_2d = np.ndim(tiles) == 2
    arr = _f._check_tiles(tiles)
    shape = arr.shape[1:]
    if tolerance is not None:
        if keep is not None:
            raise CrevkitValueError("give keep or tolerance, not both")
        def roundtrip(a: np.ndarray, u: np.ndarray, v: np.ndarray, threads: int) -> np.ndarray:
            return _f._dense_inverse(_compress_kept(a, u, v).astype(np.float64), a.shape[1:], u, v)

        k = _f._search_keep(arr, tolerance, metric, mask, sample, seed, 1, roundtrip)
    else:
        k = _f.resolve_keep(shape, keep)
    u, v = _f.dct_order(shape, k)
    out = _compress_kept(arr, u, v)
    return out[0] if was_2d else out


def dct_decompress(coeffs: Any, shape: tuple[int, int], *, n_threads: int | None = None) -> np.ndarray:
    """NumPy twin of :func:`crevkit.dct_decompress` (same arguments and result)."""
    ny, nx = _f._shape2(shape)
    was_1d = np.ndim(coeffs) == 1
    arr = as_float32_array(coeffs, "coeffs", ndim=(1, 2), allow_nan=False)
    arr = arr[None] if arr.ndim == 1 else arr
    if arr.shape[1] > ny * nx:
        raise CrevkitValueError(f"coeffs has {arr.shape[1]} columns, more than the {ny * nx} coefficients of a {ny} x {nx} tile")
    u, v = _f.dct_order((ny, nx), arr.shape[1])
    out = _f._dense_inverse(arr.astype(np.float64), (ny, nx), u, v).astype(np.float32)
    return out[0] if was_1d else out
