"""Tile features: normalization and truncated 2-D DCT compression.

Clustering raw DEM tiles groups them by regional slope and orientation rather
than by surface type, and 40,000 numbers per tile make the map slow.  This
module lays each tile's best-fit plane flat (circular mask, PCA, minimal
rotation, re-rasterization, crop, mask again) and keeps the low-frequency
coefficients of an orthonormal 2-D DCT-II.

Conventions
-----------
Pixel ``(i, j)`` of an ``ny x nx`` tile sits at ``x = (j - (nx-1)/2) * p``
(east, along columns) and ``y = ((ny-1)/2 - i) * p`` (north: rows run north to
south); heights are metres, up.

* **Plane normal** – unit vector of the least-variance principal axis of the
  masked ``(x, y, z)`` points, always pointing up (``n_z >= 0``).
* **Slope** – degrees between the normal and the vertical, ``atan2(hypot(n_x,
  n_y), n_z)``, in ``[0, 90]``.
* **Aspect** – the downslope direction in degrees clockwise from north,
  ``atan2(n_x, n_y) mod 360``, in ``[0, 360)``; 0 for an exactly flat plane.
  A plane rising to the east (``z = a x``, ``a > 0``) has aspect 270.
* **Rotation** – with ``orient=True`` (the default): the direction, in degrees
  counter-clockwise from +x (east) in the flattened tile, in ``(-90, 270]``,
  that was turned onto the +column axis (the content turns clockwise by this
  angle); 0 with ``orient=False``.  It is the dominant gradient direction
  (Gaussian-derivative structure tensor); of the two opposite choices, the one
  whose height moment ``sum z * x`` over the disc is >= 0 (high side towards
  +x) is taken.  A surface turned counter-clockwise by ``a`` gets ``rotation + a``.

Normalized tiles are ``m x m`` with ``m = floor(min(ny, nx) / sqrt(2))``
(141 for 200 x 200): the square inscribed in the input mask circle.  Pixels
outside its own inscribed circle (the disc, :func:`disc_mask`) carry the rim
value of their ray (``fill="edge"``, default) or 0 (``fill="zero"``).  The algorithm, step by
step, is documented in ``cpp/include/crevkit/features.hpp``; the NumPy twin
``crevkit.reference.normalize_tiles`` implements the same steps.

DCT coefficients are kept in zig-zag (triangle) order: ``(u, v)`` sorted by
``(u + v, u)`` where ``u`` indexes rows; the first ``k`` of that order are
kept, so ``k`` and the tile shape are all :func:`dct_decompress` needs.

Reconstruction accuracy (default ``keep``)
------------------------------------------
Errors are measured over the disc of normalized tiles (:func:`disc_mask`);
*relief* is the height range (max - min) of the normalized tile there, for a
crevassed tile essentially the deepest crevasse.  The stated tolerance, checked
by ``tests/test_features.py`` on ``crevkit.scenes`` tiles and on the synthetic
classes of ``tests/features_synth.py``:

* **No crevasses** (flat, ridges, undulations, scene surface outside crevasse
  fields): RMS <= 0.05 m and max <= 0.20 m, i.e. inside the 0.1-0.2 m vertical
  accuracy of IceBridge ATM/DMS DEMs.  What is dropped there is pixel-scale
  roughness; the max is the extreme of the dropped uncorrelated 5 cm roughness
  of the synthetic classes (measured up to 0.18 m over 424 tiles, so 0.15 m is
  no bound there), 0.02 m on the correlated roughness of the scenes.
* **Crevasses**: RMS <= 10 % of the relief (measured <= 6.4 % on 609 scene
  tiles of seeds 0-6, <= 1.5 % on the synthetic V troughs).  No absolute
  bound holds: scene crevasses are 1-10 m wide and 2-30 m deep with vertical (U) or steep (V)
  walls and abrupt ends at snow bridges, steps of metres between neighbouring
  0.5 m pixels, and a truncated DCT leaves an error proportional to the step
  at those pixels.  The max error is <= 15 % of the relief for the smooth-walled
  synthetic troughs (measured <= 11.4 %) and <= 75 % on scene tiles (measured
  10-62 %, median 29 %, i.e. 0.4 m median / 2.7 m worst RMS and 6.5 m median /
  30 m worst max; worst on slots narrower than ~4 pixels, which stay visible).
  Neither a different order (circle, anisotropic, energy-ranked: RMS within
  +-20 %) nor twice the coefficients (RMS halved, max down by a third) changes this:
  meeting 0.15 m RMS on scene U-crevasse tiles needs a median 77 % (worst
  100 %) of the coefficients.  For depth measurement use the tiles, or
  ``tolerance`` mode with a per-dataset keep; the features are for clustering.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from ._validation import as_float32_array, check_int, check_positive, resolve_threads
from .errors import CrevkitTypeError, CrevkitValueError

__all__ = [
    "NormalizedTiles",
    "normalize_tiles",
    "dct_compress",
    "dct_decompress",
    "dct_order",
    "resolve_keep",
    "choose_keep",
    "triangle_count",
    "reconstruction_errors",
    "disc_mask",
    "dct_basis",
    "normalized_size",
    "plane_angles",
    "write_features",
    "DEFAULT_KEEP",
    "SENSOR_TOLERANCE_M",
]

#: Default ``keep``: a quarter of the coefficients (about 5,000 of 141 x 141);
#: its accuracy is stated in the module documentation.
DEFAULT_KEEP = 0.25
#: GLAS height precision (metres): the default reconstruction tolerance.
SENSOR_TOLERANCE_M = 0.15
MIN_TILE = 8


class NormalizedTiles(NamedTuple):
    """Result of :func:`normalize_tiles`.

    Attributes
    ----------
    tiles : ndarray, float32, (n, m, m)
        Heights above the best-fit plane (metres); outside the disc see ``fill``.
    slope : ndarray, float64, (n,)
        Slope of the removed plane, degrees.
    aspect : ndarray, float64, (n,)
        Downslope direction of the removed plane, degrees clockwise from north.
    rotation : ndarray, float64, (n,)
        Direction turned onto the +column axis by ``orient=True`` (degrees
        counter-clockwise from east in the flattened tile), else 0.
    normal : ndarray, float64, (n, 3)
        Unit plane normals (east, north, up), up component >= 0.
    """

    tiles: np.ndarray
    slope: np.ndarray
    aspect: np.ndarray
    rotation: np.ndarray
    normal: np.ndarray


# ----------------------------------------------------------------- helpers


def normalized_size(tile_shape: tuple[int, int]) -> int:
    """Side ``m`` of a normalized tile: ``floor(min(ny, nx) / sqrt(2))`` (141 for 200 x 200)."""
    return int(math.floor(min(tile_shape) / math.sqrt(2.0) + 1e-9))


def disc_mask(size: int) -> np.ndarray:
    """Boolean ``size x size`` mask of the disc kept in a normalized tile."""
    c0 = (size - 1) / 2.0
    d = np.arange(size) - c0
    return d[:, None] ** 2 + d[None, :] ** 2 <= size * size / 4.0


def plane_angles(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope and aspect (degrees) of unit plane normals ``(n, 3)`` (see module docs)."""
    normal = np.asarray(normal, dtype=np.float64)
    horiz = np.hypot(normal[:, 0], normal[:, 1])
    slope = np.degrees(np.arctan2(horiz, normal[:, 2]))
    aspect = np.degrees(np.arctan2(normal[:, 0], normal[:, 1])) % 360.0
    aspect = np.where(horiz > 0, aspect, 0.0)
    aspect = np.where(aspect >= 360.0, 0.0, aspect)
    return slope, aspect


def _check_tiles(tiles: Any, name: str = "tiles") -> np.ndarray:
    arr = as_float32_array(tiles, name, ndim=(2, 3), allow_nan=False)
    return arr[None] if arr.ndim == 2 else arr


def _check_normalize_args(tiles: Any, pixel_size: Any, size: Any, iterations: Any) -> tuple[np.ndarray, float, int, int]:
    arr = _check_tiles(tiles)
    ny, nx = arr.shape[1:]
    if min(ny, nx) < MIN_TILE:
        raise CrevkitValueError(f"tiles are too small: {ny} x {nx} pixels, need at least {MIN_TILE} x {MIN_TILE}")
    p = check_positive(pixel_size, "pixel_size")
    m_max = normalized_size((ny, nx))
    m = m_max if size is None else check_int(size, "size", minimum=2, maximum=m_max)
    it = check_int(iterations, "iterations", minimum=1, maximum=100)
    return arr, p, m, it


def _check_fill(fill: Any) -> bool:
    if fill not in ("edge", "zero"):
        raise CrevkitValueError(f"fill must be 'edge' or 'zero', got {fill!r}")
    return fill == "edge"


def _squeeze(result: NormalizedTiles, was_2d: bool) -> NormalizedTiles:
    if not was_2d:
        return result
    return NormalizedTiles(*(a[0] for a in result))


# ----------------------------------------------------------------- normalize


def normalize_tiles(
    tiles: Any,
    pixel_size: float = 0.5,
    *,
    size: int | None = None,
    iterations: int = 3,
    orient: bool = True,
    fill: str = "edge",
    n_threads: int | None = None,
) -> NormalizedTiles:
    """Lay each tile's best-fit plane flat and re-rasterize it on a fixed grid.

    Parameters
    ----------
    tiles : array_like, (n, ny, nx) or (ny, nx)
        Heights in metres, finite (converted once to float32 C-contiguous).
    pixel_size : float
        Pixel size in metres (input and output), default 0.5.
    size : int, optional
        Output side ``m``; default and maximum ``floor(min(ny, nx) / sqrt(2))``.
    iterations : int
        Fixed-point steps when inverting the rotation (default 3; a plane is
        exact after 1, rough tiles on steep slopes need more).
    orient : bool
        Also turn the dominant gradient direction to the +column axis, the high
        side towards +x (rule in ``cpp/include/crevkit/features.hpp``, step 6).
        On by default: on synthetic tiles of four classes in random orientations
        it raised k-means purity from about 0.5 to 0.64 and nearest-neighbour
        class accuracy from about 0.65 to 0.97 (``crevkit.benchmarks.features``).
        It doubles the cost of normalization.
    fill : {"edge", "zero"}
        Pixels outside the output disc: ``"edge"`` (default) repeats the rim
        value along each ray from the centre, so the tile depends on the disc
        only and has no jump at the rim (a jump rings through a truncated DCT
        and breaks the 0.15 m tolerance); ``"zero"`` sets them to 0.
    n_threads : int, optional
        OpenMP threads; ``None`` or 0 uses every usable core.

    Returns
    -------
    NormalizedTiles
        ``tiles`` (n, m, m) float32 plus per-tile ``slope``, ``aspect``,
        ``rotation`` (degrees) and ``normal``; a 2-D input gives unbatched fields.

    Raises
    ------
    CrevkitTypeError
        Non-numeric input.
    CrevkitValueError
        Wrong dimensionality, NaN/inf heights, tiles smaller than 8 x 8, bad
        ``pixel_size``, ``size`` or ``iterations``.
    """
    from . import _core

    was_2d = np.ndim(tiles) == 2
    arr, p, m, it = _check_normalize_args(tiles, pixel_size, size, iterations)
    edge = _check_fill(fill)
    threads = resolve_threads(n_threads)
    out, normal, angle = _core.normalize_tiles(arr, p, m, it, bool(orient), edge, threads)
    slope, aspect = plane_angles(normal)
    return _squeeze(NormalizedTiles(out, slope, aspect, np.degrees(angle), normal), was_2d)


# ----------------------------------------------------------------- DCT


def dct_order(shape: tuple[int, int], k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zig-zag order of DCT coefficients: ``(u, v)`` sorted by ``(u + v, u)``.

    Parameters
    ----------
    shape : (int, int)
        Tile shape ``(ny, nx)``; ``u`` indexes rows, ``v`` columns.
    k : int, optional
        Return only the first ``k`` indices (default all ``ny * nx``).

    Returns
    -------
    (u, v) : two int64 arrays
    """
    ny, nx = _shape2(shape)
    uu, vv = _zigzag(ny, nx)
    if k is not None:
        k = check_int(k, "k", minimum=1, maximum=ny * nx)
        uu, vv = uu[:k], vv[:k]
    return uu.copy(), vv.copy()


@functools.lru_cache(maxsize=16)
def _zigzag(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    uu, vv = np.meshgrid(np.arange(ny, dtype=np.int64), np.arange(nx, dtype=np.int64), indexing="ij")
    uu, vv = uu.ravel(), vv.ravel()
    order = np.lexsort((uu, uu + vv))
    uu, vv = uu[order], vv[order]
    uu.flags.writeable = False
    vv.flags.writeable = False
    return uu, vv


def triangle_count(shape: tuple[int, int], diagonals: int) -> int:
    """Number of coefficients with ``u + v < diagonals`` in a ``shape`` tile."""
    ny, nx = _shape2(shape)
    d = np.arange(min(diagonals, ny + nx - 1))
    # coefficients on diagonal s: u from max(0, s-nx+1) to min(s, ny-1)
    per = np.minimum(d, ny - 1) - np.maximum(0, d - nx + 1) + 1
    return int(per.sum())


def _shape2(shape: Any) -> tuple[int, int]:
    try:
        ny, nx = shape
    except (TypeError, ValueError):
        raise CrevkitValueError(f"shape must be a pair (ny, nx), got {shape!r}") from None
    if isinstance(ny, bool) or isinstance(nx, bool) or not isinstance(ny, numbers.Integral) or not isinstance(nx, numbers.Integral):
        raise CrevkitTypeError(f"shape must hold two integers, got {shape!r}")
    if ny < 1 or nx < 1:
        raise CrevkitValueError(f"shape must be positive, got {shape!r}")
    return int(ny), int(nx)


def resolve_keep(shape: tuple[int, int], keep: int | float | None = None) -> int:
    """Number of kept coefficients for ``keep`` (count or fraction) and a tile ``shape``.

    ``keep`` is an ``int`` count in ``1 .. ny*nx``, or a ``float`` fraction in
    ``(0, 1]`` of ``ny*nx`` (rounded, at least 1); ``None`` means
    :data:`DEFAULT_KEEP`.
    """
    ny, nx = _shape2(shape)
    total = ny * nx
    if keep is None:
        keep = DEFAULT_KEEP
    if isinstance(keep, bool):
        raise CrevkitTypeError("keep must be an int count or a float fraction, got bool")
    if isinstance(keep, numbers.Integral):
        return check_int(keep, "keep", minimum=1, maximum=total)
    if isinstance(keep, numbers.Real):
        frac = float(keep)
        if not (0.0 < frac <= 1.0):
            raise CrevkitValueError(f"keep as a fraction must be in (0, 1], got {keep!r}")
        return max(1, min(total, int(round(frac * total))))
    raise CrevkitTypeError(f"keep must be an int count or a float fraction, got {type(keep).__name__}")


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
    """Low-frequency orthonormal 2-D DCT-II coefficients of each tile.

    Only the kept coefficients are computed (two small matrix products per tile,
    accumulated in float64): coefficient ``k`` of a tile equals
    ``scipy.fft.dctn(tile, norm="ortho")[u[k], v[k]]`` with ``(u, v) =
    dct_order(tile.shape, K)``.

    Parameters
    ----------
    tiles : array_like, (n, ny, nx) or (ny, nx)
        Finite heights (converted once to float32 C-contiguous).
    keep : int or float, optional
        Count (int) or fraction of ``ny*nx`` (float in (0, 1]) of coefficients,
        first in zig-zag order.  Default :data:`DEFAULT_KEEP` (a quarter).
    tolerance : float, optional
        Height tolerance in metres instead of ``keep``: the smallest full
        triangle ``u + v < d`` whose reconstruction error (``metric``) on a
        random ``sample`` of the tiles is at most ``tolerance`` (see
        :func:`choose_keep`).  Give ``keep`` or ``tolerance``, not both.
    metric : {"max", "rms"}
        Error used with ``tolerance``: the largest per-tile max or RMS error.
    mask : ndarray of bool, (ny, nx), optional
        Pixels over which errors are measured with ``tolerance`` (default: all;
        for normalized tiles pass ``disc_mask(m)``).
    sample : int
        Tiles drawn (without replacement, ``seed``) for the tolerance search.
    seed : int
        Seed of that draw.
    n_threads : int, optional
        OpenMP threads; ``None`` or 0 uses every usable core.

    Returns
    -------
    ndarray, float32, (n, K) (or (K,) for a single 2-D tile)

    Raises
    ------
    CrevkitTypeError, CrevkitValueError
        Bad tiles (dtype, dimensionality, NaN), bad ``keep``/``tolerance``.
    """
    from . import _core

    was_2d = np.ndim(tiles) == 2
    arr = _check_tiles(tiles)
    shape = arr.shape[1:]
    threads = resolve_threads(n_threads)
    if tolerance is not None:
        if keep is not None:
            raise CrevkitValueError("give keep or tolerance, not both")
        k = choose_keep(arr, tolerance, metric=metric, mask=mask, sample=sample, seed=seed, n_threads=threads)
    else:
        k = resolve_keep(shape, keep)
    u, v = dct_order(shape, k)
    out = _core.dct_compress(arr, u, v, threads)
    return out[0] if was_2d else out


def dct_decompress(coeffs: Any, shape: tuple[int, int], *, n_threads: int | None = None) -> np.ndarray:
    """Tiles from their first ``K`` zig-zag DCT coefficients (the rest taken as 0).

    Parameters
    ----------
    coeffs : array_like, (n, K) or (K,)
        Output of :func:`dct_compress` (converted once to float32).
    shape : (int, int)
        Tile shape ``(ny, nx)``.
    n_threads : int, optional
        OpenMP threads; ``None`` or 0 uses every usable core.

    Returns
    -------
    ndarray, float32, (n, ny, nx) (or (ny, nx) for 1-D ``coeffs``)
    """
    from . import _core

    ny, nx = _shape2(shape)
    was_1d = np.ndim(coeffs) == 1
    arr = as_float32_array(coeffs, "coeffs", ndim=(1, 2), allow_nan=False)
    if arr.ndim == 1:
        arr = arr[None]
    k = arr.shape[1]
    if k > ny * nx:
        raise CrevkitValueError(f"coeffs has {k} columns, more than the {ny * nx} coefficients of a {ny} x {nx} tile")
    u, v = dct_order((ny, nx), k)
    out = _core.dct_decompress(arr, u, v, ny, nx, resolve_threads(n_threads))
    return out[0] if was_1d else out


def reconstruction_errors(
    tiles: Any, coeffs: Any, *, mask: np.ndarray | None = None, n_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile RMS and max absolute error (metres) of the DCT reconstruction.

    Parameters
    ----------
    tiles : array_like, (n, ny, nx)
        The tiles that were compressed.
    coeffs : array_like, (n, K)
        Their coefficients from :func:`dct_compress`.
    mask : ndarray of bool, (ny, nx), optional
        Pixels to measure over (default all).

    Returns
    -------
    (rms, max) : two float64 arrays of shape (n,)
    """
    arr = _check_tiles(tiles)
    c = as_float32_array(coeffs, "coeffs", ndim=(1, 2), allow_nan=False)
    c = c[None] if c.ndim == 1 else c
    if c.shape[0] != arr.shape[0]:
        raise CrevkitValueError(f"coeffs has {c.shape[0]} rows for {arr.shape[0]} tiles")
    rec = dct_decompress(c, arr.shape[1:], n_threads=n_threads)
    diff = rec.astype(np.float64) - arr
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != arr.shape[1:]:
            raise CrevkitValueError(f"mask shape {mask.shape} differs from the tile shape {arr.shape[1:]}")
        diff = diff[:, mask]
    else:
        diff = diff.reshape(len(diff), -1)
    return np.sqrt(np.mean(diff * diff, axis=1)), np.max(np.abs(diff), axis=1)


def choose_keep(
    tiles: Any,
    tolerance: float = SENSOR_TOLERANCE_M,
    *,
    metric: str = "max",
    mask: np.ndarray | None = None,
    sample: int = 256,
    seed: int = 0,
    n_threads: int | None = None,
) -> int:
    """Smallest zig-zag triangle meeting a height tolerance on a sample of tiles.

    Searches the number of diagonals ``d`` (bisection; the error falls as
    ``d`` grows, strictly for RMS by Parseval, in practice for max) for the
    smallest ``d`` with ``max over sampled tiles of metric_error <= tolerance``
    and returns ``triangle_count(shape, d)``.

    Parameters
    ----------
    tiles : array_like, (n, ny, nx)
        Tiles (e.g. a batch of normalized tiles) representative of the dataset.
    tolerance : float
        Metres (default 0.15, the GLAS precision).
    metric : {"max", "rms"}
        Per-tile error to bound.
    mask, sample, seed, n_threads
        As in :func:`dct_compress`.

    Returns
    -------
    int
        Number of coefficients to keep.
    """
    from . import _core

    def roundtrip(arr: np.ndarray, u: np.ndarray, v: np.ndarray, threads: int) -> np.ndarray:
        c = _core.dct_compress(arr, u, v, threads)
        return _core.dct_decompress(c, u, v, arr.shape[1], arr.shape[2], threads)

    return _search_keep(tiles, tolerance, metric, mask, sample, seed, n_threads, roundtrip)


def _search_keep(tiles: Any, tolerance: Any, metric: str, mask: Any, sample: Any, seed: int,
                 n_threads: int | None, roundtrip: Any) -> int:
    """Bisection behind :func:`choose_keep`.

    ``roundtrip(arr, u, v, threads)`` compresses to the kept ``(u, v)`` and
    reconstructs (the kernels, or the NumPy twins).
    """
    tol = check_positive(tolerance, "tolerance")
    if metric not in ("max", "rms"):
        raise CrevkitValueError(f"metric must be 'max' or 'rms', got {metric!r}")
    arr = _check_tiles(tiles)
    n_sample = check_int(sample, "sample", minimum=1)
    threads = resolve_threads(n_threads)
    if arr.shape[0] > n_sample:
        idx = np.sort(np.random.default_rng(seed).choice(arr.shape[0], n_sample, replace=False))
        arr = np.ascontiguousarray(arr[idx])
    shape = arr.shape[1:]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape:
            raise CrevkitValueError(f"mask shape {mask.shape} differs from the tile shape {shape}")
    u_all, v_all = dct_order(shape)
    def worst(d: int) -> float:
        k = triangle_count(shape, d)
        rec = roundtrip(arr, np.ascontiguousarray(u_all[:k]), np.ascontiguousarray(v_all[:k]), threads)
        diff = rec.astype(np.float64) - arr
        diff = diff[:, mask] if mask is not None else diff.reshape(len(diff), -1)
        err = np.sqrt(np.mean(diff * diff, axis=1)) if metric == "rms" else np.max(np.abs(diff), axis=1)
        return float(err.max())

    lo, hi = 1, shape[0] + shape[1] - 1  # hi keeps everything (error ~ float32 rounding)
    if worst(hi) > tol:
        raise CrevkitValueError(f"tolerance {tol} m cannot be met even with every coefficient")
    while lo < hi:
        mid = (lo + hi) // 2
        if worst(mid) <= tol:
            hi = mid
        else:
            lo = mid + 1
    return triangle_count(shape, lo)


def dct_basis(n: int, rows: int | None = None) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``C[k, t] = a_k cos(pi (2t+1) k / (2n))`` (rows x n, float64)."""
    rows = n if rows is None else rows
    k = np.arange(rows, dtype=np.int64)[:, None]
    t = np.arange(n, dtype=np.int64)[None, :]
    phase = ((2 * t + 1) * k) % (4 * n)  # exact integer phase reduction, as in the kernel
    c = np.cos(np.pi * phase / (2.0 * n)) * math.sqrt(2.0 / n)
    c[0] = math.sqrt(1.0 / n)
    return c


def _dense_inverse(coeffs: np.ndarray, shape: tuple[int, int], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """float64 inverse DCT of kept coefficients (NumPy; used by the keep search and the twin)."""
    ny, nx = shape
    U, V = int(u.max()) + 1, int(v.max()) + 1
    d = np.zeros((coeffs.shape[0], U, V))
    d[:, u, v] = coeffs
    cy, cx = dct_basis(ny, U), dct_basis(nx, V)
    return np.einsum("ui,nuv,vj->nij", cy, d, cx, optimize=True)


# ----------------------------------------------------------------- tile store -> features


FEATURES_ZARR = "features.zarr"
FEATURES_TABLE = "features.parquet"


def _open_tiles(source: Any) -> tuple[Any, str]:
    """A (n, ny, nx) array-like read lazily from a Zarr array/group path, an .npy file, or an array."""
    from pathlib import Path

    from .errors import InputFileError

    if not isinstance(source, (str, Path)):
        if getattr(source, "ndim", None) != 3:
            raise CrevkitValueError(f"tiles must be 3-dimensional (n, ny, nx), got shape {getattr(source, 'shape', None)}")
        return source, type(source).__name__
    path = Path(source)
    if not path.exists():
        raise InputFileError(f"{path}: no such tile store")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise InputFileError(f"{path}: not a readable .npy file ({exc})") from None
    else:
        import zarr

        try:
            node = zarr.open(str(path), mode="r")
        except Exception as exc:  # zarr raises several types for "not a store"
            raise InputFileError(f"{path}: not a Zarr array or group ({exc})") from None
        if isinstance(node, zarr.Group):
            arrays = {name: a for name, a in node.arrays() if a.ndim == 3}
            if "tiles" in arrays:
                node = arrays["tiles"]
            elif len(arrays) == 1:
                node = next(iter(arrays.values()))
            else:
                raise InputFileError(f"{path}: Zarr group without a 'tiles' array (3-D arrays: {sorted(arrays)})")
        arr = node
    if arr.ndim != 3:
        raise InputFileError(f"{path}: tiles must be 3-D (n, ny, nx), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputFileError(f"{path}: tiles must hold real numbers, got dtype {arr.dtype}")
    return arr, str(path)


def _find_index(source: Any, index: Any, n: int) -> Any:
    """The tile index table (pandas) aligned with the cube rows, or None."""
    from pathlib import Path

    import pandas as pd

    from .errors import InputFileError

    if index is None:
        if not isinstance(source, (str, Path)):
            return None
        path = Path(source)
        for cand in (path / "index.parquet", path.parent / "index.parquet"):
            if cand.is_file():
                index = cand
                break
        else:
            return None
    index = Path(index)
    try:
        table = pd.read_parquet(index)
    except Exception as exc:
        raise InputFileError(f"{index}: not a readable Parquet table ({exc})") from None
    if "tile_id" not in table.columns:
        raise InputFileError(f"{index}: no 'tile_id' column")
    if "row" in table.columns:
        table = table.sort_values("row")
    if len(table) != n:
        raise InputFileError(f"{index}: {len(table)} rows for {n} tiles in the store")
    return table.reset_index(drop=True)


FEATURE_COLUMNS = ("slope_deg", "aspect_deg", "rotation_deg", "rms_error_m", "max_error_m")


def feature_keep(tiles: Any, *, keep: int | float | None = None, tolerance: float | None = None,
                 metric: str = "max", sample: int = 256, seed: int = 0, source_name: str = "tiles",
                 pixel_size: float = 0.5, iterations: int = 3, orient: bool = True, fill: str = "edge",
                 n_threads: int | None = None) -> int:
    """The coefficient count :func:`write_features` keeps for this cube.

    With ``tolerance``, :func:`choose_keep` on ``sample`` normalized tiles drawn
    with ``seed`` (read from ``tiles``); otherwise :func:`resolve_keep` of ``keep``.
    """
    n, ny, nx = (int(v) for v in tiles.shape)
    m = normalized_size((ny, nx))
    if tolerance is None:
        return resolve_keep((m, m), keep)
    if keep is not None:
        raise CrevkitValueError("give keep or tolerance, not both")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(n, check_int(sample, "sample", minimum=1)), replace=False))
    block = np.asarray(tiles.oindex[rows] if hasattr(tiles, "oindex") else tiles[rows])
    block = block[np.isfinite(block).all(axis=(1, 2))]
    if len(block) == 0:
        raise CrevkitValueError(f"{source_name}: no finite tile in the sample for the tolerance search")
    norm_kw = dict(pixel_size=pixel_size, iterations=iterations, orient=orient, fill=fill, n_threads=n_threads)
    return choose_keep(normalize_tiles(block, **norm_kw).tiles, tolerance, metric=metric, mask=disc_mask(m),
                       sample=len(block), n_threads=n_threads)


def _feature_batch(block: np.ndarray, k: int, mask: np.ndarray, norm_kw: dict) -> dict:
    """Features and per-tile columns of one float32 batch (non-finite tiles: NaN rows, ok False)."""
    good = np.isfinite(block).all(axis=(1, 2))
    out = {"features": np.full((block.shape[0], k), np.nan, dtype=np.float32), "ok": good}
    for name in FEATURE_COLUMNS:
        out[name] = np.full(block.shape[0], np.nan)
    if good.any():
        res = normalize_tiles(np.ascontiguousarray(block[good]), **norm_kw)
        threads = norm_kw["n_threads"]
        coeffs = dct_compress(res.tiles, k, n_threads=threads)
        rms, mx = reconstruction_errors(res.tiles, coeffs, mask=mask, n_threads=threads)
        out["features"][good] = coeffs
        for name, values in zip(FEATURE_COLUMNS, (res.slope, res.aspect, res.rotation, rms, mx)):
            out[name][good] = values
    return out


def write_feature_part(tiles: Any, start: int, stop: int, path: Any, *, k: int, pixel_size: float = 0.5,
                       orient: bool = True, fill: str = "edge", iterations: int = 3,
                       batch_size: int = 256, n_threads: int | None = None) -> dict:
    """Features of rows ``[start, stop)`` into one ``.npz`` part, atomically (a distributed task).

    Returns ``{"done": .., "failed": ..}``.  :func:`write_features` with
    ``feature_parts`` assembles the parts in row order.
    """
    from ._atomic import atomic_path

    ny, nx = (int(v) for v in tiles.shape[1:])
    mask = disc_mask(normalized_size((ny, nx)))
    norm_kw = dict(pixel_size=pixel_size, iterations=iterations, orient=orient, fill=fill,
                   n_threads=resolve_threads(n_threads))
    pieces = [_feature_batch(np.asarray(tiles[a:min(stop, a + batch_size)], dtype=np.float32), k, mask, norm_kw)
              for a in range(start, stop, batch_size)]
    merged = {key: np.concatenate([p[key] for p in pieces]) for key in pieces[0]}
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **merged)
    return {"done": int(merged["ok"].sum()), "failed": int((~merged["ok"]).sum())}


def _feature_part_batches(paths: Any, n: int, k: int):
    """(start, stop, part) from ``.npz`` parts that follow each other and cover ``n`` rows."""
    start = 0
    for path in paths:
        with np.load(path) as z:
            part = {key: z[key] for key in z.files}
        rows = part["features"].shape[0]
        if part["features"].shape[1] != k or start + rows > n:
            raise CrevkitValueError(f"feature part {path}: shape {part['features'].shape} does not fit rows "
                                    f"{start}.. of {n} with keep {k}")
        yield start, start + rows, part
        start += rows
    if start != n:
        raise CrevkitValueError(f"feature parts cover {start} rows, the cube has {n}")


def write_features(
    tiles: Any,
    out_dir: Any,
    *,
    pixel_size: float = 0.5,
    keep: int | float | None = None,
    tolerance: float | None = None,
    metric: str = "max",
    orient: bool = True,
    fill: str = "edge",
    iterations: int = 3,
    batch_size: int = 256,
    sample: int = 256,
    seed: int = 0,
    index: Any = None,
    n_threads: int | None = None,
    show_progress: bool | None = None,
    feature_parts: Any = None,
) -> Any:
    """Tile store -> feature matrix (Zarr) + per-tile table (Parquet), streamed in batches.

    Each batch is read, normalized (:func:`normalize_tiles`), compressed
    (:func:`dct_compress`) and checked (RMS and max reconstruction error over the
    disc, :func:`reconstruction_errors`); the whole cube is never in memory.

    Parameters
    ----------
    tiles : path or array-like
        A Zarr array (or a group holding a 3-D ``tiles`` array), an ``.npy``
        stack (memory-mapped), or any ``(n, ny, nx)`` array-like with slicing.
    out_dir : path
        Receives ``features.zarr`` (float32 ``(n, K)``, zig-zag order, attributes
        record the settings) and ``features.parquet`` (``row``, ``tile_id`` when
        an index is found, ``slope_deg``, ``aspect_deg``, ``rotation_deg``,
        ``rms_error_m``, ``max_error_m``, ``ok``).  Both are written atomically,
        the table last: its presence means the stage finished.
    keep, tolerance, metric
        As in :func:`dct_compress`; with ``tolerance`` the count is chosen once
        (:func:`choose_keep`) on ``sample`` normalized tiles drawn with ``seed``
        and then used for every tile.  Default: ``keep=DEFAULT_KEEP``.
    pixel_size, orient, fill, iterations
        As in :func:`normalize_tiles`.
    batch_size : int
        Tiles per batch (and rows per Zarr chunk).
    index : path, optional
        ``index.parquet`` with a ``tile_id`` column (sorted by ``row`` when it has
        one); by default looked up beside / inside the tile store.
    n_threads : int, optional
        OpenMP threads for the kernels.
    show_progress : bool, optional
        Force the progress bar on or off (default: when stderr is a terminal).
    feature_parts : sequence of paths, optional
        ``.npz`` files written by :func:`write_feature_part` covering the rows in
        order (distributed tasks): assembled instead of computed; no tile is read.

    Returns
    -------
    crevkit._progress.StageCounts
        found / done / failed tiles (a tile with NaN or inf heights fails: its
        feature row and errors are NaN, ``ok`` is False), plus ``keep``.
    """
    from pathlib import Path

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    from ._atomic import atomic_dir, atomic_path
    from ._progress import StageCounts, progress

    arr, source_name = _open_tiles(tiles)
    n, ny, nx = (int(s) for s in arr.shape)
    if n == 0:
        raise CrevkitValueError(f"{source_name}: the tile store is empty")
    if min(ny, nx) < MIN_TILE:
        raise CrevkitValueError(f"tiles are too small: {ny} x {nx} pixels, need at least {MIN_TILE} x {MIN_TILE}")
    bs = check_int(batch_size, "batch_size", minimum=1)
    table_index = _find_index(tiles, index, n)
    threads = resolve_threads(n_threads)
    m = normalized_size((ny, nx))
    mask = disc_mask(m)
    norm_kw = dict(pixel_size=pixel_size, iterations=iterations, orient=orient, fill=fill, n_threads=threads)

    def read(rows: np.ndarray | slice) -> np.ndarray:
        block = arr.oindex[rows] if isinstance(rows, np.ndarray) and hasattr(arr, "oindex") else arr[rows]
        return np.asarray(block)

    k = feature_keep(arr, keep=keep, tolerance=tolerance, metric=metric, sample=sample, seed=seed,
                     source_name=source_name, **norm_kw)

    def batches():
        if feature_parts is not None:
            yield from _feature_part_batches(feature_parts, n, k)
            return
        for start in range(0, n, bs):
            stop = min(n, start + bs)
            yield start, stop, _feature_batch(np.asarray(read(slice(start, stop)), dtype=np.float32), k, mask, norm_kw)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = {name: np.full(n, np.nan) for name in ("slope_deg", "aspect_deg", "rotation_deg", "rms_error_m", "max_error_m")}
    ok = np.zeros(n, dtype=bool)
    counts = StageCounts("features", found=n)
    with atomic_dir(out_dir / FEATURES_ZARR) as tmp:
        zout = zarr.open_array(str(tmp), mode="w", shape=(n, k), chunks=(min(bs, n), k), dtype="float32")
        zout.attrs.update({
            "crevkit_stage": "features", "source": source_name, "n_tiles": n, "keep": k,
            "tile_shape": [m, m], "input_shape": [ny, nx], "pixel_size": float(pixel_size),
            "orient": bool(orient), "fill": fill, "iterations": int(iterations),
            "order": "zig-zag: (u, v) sorted by (u + v, u), u = row; crevkit.features.dct_order",
            "error_region": "disc (crevkit.features.disc_mask)",
        })
        total = len(feature_parts) if feature_parts is not None else -(-n // bs)
        for start, stop, part in progress(batches(), desc="features", total=total, unit="batch", disable=(
                None if show_progress is None else not show_progress)):
            good = part["ok"]
            feats = part["features"]
            for name in cols:
                cols[name][start:stop] = part[name]
            ok[start:stop] = good
            zout[start:stop] = feats
            counts.done += int(good.sum())
            counts.failed += int((~good).sum())
    table = pd.DataFrame({"row": np.arange(n, dtype=np.int64)})
    if table_index is not None:
        table["tile_id"] = table_index["tile_id"].to_numpy()
    for name, values in cols.items():
        table[name] = values.astype(np.float32)
    table["ok"] = ok
    with atomic_path(out_dir / FEATURES_TABLE, suffix=".parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
    counts.extra["keep"] = k
    if ok.any():
        counts.extra["max_error_m"] = round(float(np.nanmax(cols["max_error_m"])), 4)
    return counts.report()
