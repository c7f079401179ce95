"""Batch self-organizing map (Kohonen map) over feature vectors.

:class:`SelfOrganizingMap` organizes tile feature vectors (e.g. DCT
coefficients) on a 2-D map so that neighbouring nodes look alike.  It follows
the scikit-learn estimator contract: ``__init__`` only stores its arguments,
``fit`` validates them and returns ``self``, learned attributes end in ``_``.

Algorithm (batch SOM, one pass over the data per epoch)
-------------------------------------------------------
For every sample the best-matching unit (BMU) is the node whose weight vector
is nearest in Euclidean distance; then every node moves to the
neighbourhood-weighted mean of the samples::

    w_k  <-  sum_j h(j, k) S_j / sum_j h(j, k) n_j

where ``S_j`` is the sum and ``n_j`` the count of the samples whose BMU is
node ``j``.  A node with zero total neighbourhood weight keeps its weights.

Numerics (what the C++ kernel guarantees)
-----------------------------------------
* The data mean is subtracted from the data and from the codebook before any
  product: ``|x|^2 - 2 x.w + |w|^2`` in float32 loses the BMU when the mean is
  large relative to the spread.  Distances are ``|x - mu - (w - mu)|``.
* The search runs in float32 (a cache-blocked matrix product fused with a
  best-two selection; no ``N x nodes`` matrix is ever stored).  The chosen
  BMU's exact squared distance exceeds the true float64 minimum by at most
  :func:`bmu_tolerance` (a bound on the float32 rounding of the products);
  the reported distances of the best and second-best nodes are recomputed
  exactly (double accumulation), so they are never negative.
* Ties go to the lowest node index.
* Per-node sums are accumulated in double precision in sample order, and the
  dot products' summation order depends only on the number of features, so a
  fit gives the same bits for any ``n_threads`` and ``chunk_rows``.

Map geometry
------------
Node ``k = r * cols + c``.  On a rectangular map it sits at ``(x, y) = (c, r)``;
on a hexagonal map ("odd-r" offset rows) at ``(c + 0.5 * (r % 2), r * sqrt(3) / 2)``,
so all six hexagonal neighbours are at distance 1.0.  Toroidal maps wrap x
with period ``cols`` and y with period ``rows`` (times ``sqrt(3)/2``; a
toroidal hexagonal map needs an even number of rows).

Neighbourhoods, for radius ``sigma``:

* ``"gaussian"``: ``h = gx(|dx|) * gy(|dy|)`` with ``g(t) = exp(-t^2 / (2 sigma^2))``,
  each factor set to 0 beyond ``8 sigma`` (< 1.3e-14); evaluated separably
  (cost ``nodes * (rows + cols) * D`` instead of ``nodes^2 * D``).
* ``"bubble"``: ``h = 1`` where ``dx^2 + dy^2 <= sigma^2 (+1e-9)``, else 0;
  evaluated sparsely over a window around each node (cost
  ``nodes * (nodes within sigma) * D``).

Radius schedule over ``epochs`` epochs ``e = 0 .. epochs - 1`` with
``t = e / (epochs - 1)`` (``t = 0`` when ``epochs == 1``, i.e. a single epoch
uses ``radius0``): ``"linear"``: ``radius0 + (radius_final - radius0) t``;
``"exponential"``: ``radius0 * (radius_final / radius0) ** t``.

Input
-----
``X`` is an ``(n_samples, n_features)`` array: a NumPy array, a
``numpy.memmap`` or a Zarr (or h5py) array.  Anything that is not an in-memory
float32 C-contiguous array is read in blocks of rows (a streamed fit over a
matrix larger than memory); float64, integer or non-contiguous input is
converted to float32 block by block (the one documented conversion).  NaN or
infinite values raise :class:`crevkit.CrevkitValueError` naming ``X``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._atomic import atomic_write_bytes
from ._validation import blas_threads, check_int, check_positive, resolve_threads
from .errors import CrevkitTypeError, CrevkitValueError, IndexIntegrityError, InputFileError

__all__ = ["SelfOrganizingMap", "node_positions", "map_distance_squared", "radius_schedule", "bmu_tolerance"]

_FORMAT = "crevkit-som"
_FORMAT_VERSION = 1
_TOPOLOGIES = {"rectangular": 0, "hexagonal": 1}
_NEIGHBORHOODS = {"gaussian": 0, "bubble": 1}
_COOLINGS = ("linear", "exponential")
# rows per block when X must be read or converted in pieces (~64 MiB of float32)
_BLOCK_BYTES = 64 * 2**20
_HEX_DY = math.sqrt(3.0) / 2.0


# --------------------------------------------------------------------------- geometry


def node_positions(rows: int, cols: int, topology: str = "rectangular") -> np.ndarray:
    """Physical ``(x, y)`` position of every node, shape ``(rows * cols, 2)`` (see the module docs)."""
    r, c = np.divmod(np.arange(rows * cols, dtype=np.int64), cols)
    if topology == "hexagonal":
        return np.stack([c + 0.5 * (r % 2), r * _HEX_DY], axis=1)
    return np.stack([c.astype(np.float64), r.astype(np.float64)], axis=1)


def _axis_distances(rows: int, cols: int, topology: str, toroidal: bool, a: np.ndarray,
                    b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``|dx|, |dy|`` between nodes ``a`` and ``b`` (broadcasting), wrapped on toroidal maps."""
    ra, ca = np.divmod(np.asarray(a, dtype=np.int64), cols)
    rb, cb = np.divmod(np.asarray(b, dtype=np.int64), cols)
    hexa = topology == "hexagonal"
    shift_a = 0.5 * (ra % 2) if hexa else 0.0
    shift_b = 0.5 * (rb % 2) if hexa else 0.0
    ystep = _HEX_DY if hexa else 1.0
    dx = np.abs((ca - cb) + (shift_a - shift_b))
    dy = np.abs(ra - rb) * ystep
    if toroidal:
        px, py = float(cols), rows * ystep
        dx = np.fmod(dx, px)
        dx = np.minimum(dx, px - dx)
        dy = np.fmod(dy, py)
        dy = np.minimum(dy, py - dy)
    return np.asarray(dx, dtype=np.float64), np.asarray(dy, dtype=np.float64)


def map_distance_squared(rows: int, cols: int, topology: str, toroidal: bool, a: Any, b: Any) -> np.ndarray:
    """Squared map distance between node indices ``a`` and ``b`` (broadcasting)."""
    dx, dy = _axis_distances(rows, cols, topology, toroidal, a, b)
    return dx * dx + dy * dy


def radius_schedule(radius0: float, radius_final: float, epochs: int, cooling: str) -> np.ndarray:
    """Neighbourhood radius of each epoch (see the module docs)."""
    if epochs == 1:
        return np.array([float(radius0)])
    t = np.arange(epochs, dtype=np.float64) / (epochs - 1)
    if cooling == "linear":
        return radius0 + (radius_final - radius0) * t
    return radius0 * (radius_final / radius0) ** t


def bmu_tolerance(x_centred_sq: np.ndarray, w_centred_sq_max: float, n_features: int) -> np.ndarray:
    """Largest excess of the float32 search's choice over the true minimum squared distance.

    The search compares ``|w|^2 - 2 x.w`` computed in float32 over centred
    vectors; each term's rounding error is bounded by ``n_features * eps32``
    times ``|x|^2 + |w|^2`` (the standard dot-product bound, |2 x.w| <=
    |x|^2 + |w|^2), and two candidates are compared, hence::

        tol = 2 * (n_features + 2) * eps32 * (|x - mu|^2 + max_k |w_k - mu|^2)

    Where two nodes' exact squared distances differ by less than this, the
    search may pick either; elsewhere it picks the exact argmin.
    """
    eps = float(np.finfo(np.float32).eps)
    return 2.0 * (n_features + 2) * eps * (np.asarray(x_centred_sq, dtype=np.float64) + float(w_centred_sq_max))


def _neighbour_pairs(rows: int, cols: int, topology: str, toroidal: bool) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (a, b), a != b, of lattice neighbours (map distance 1)."""
    k = np.arange(rows * cols, dtype=np.int64)
    r, c = np.divmod(k, cols)
    if topology == "hexagonal":
        even = [(0, -1), (0, 1), (-1, -1), (-1, 0), (1, -1), (1, 0)]
        odd = [(0, -1), (0, 1), (-1, 0), (-1, 1), (1, 0), (1, 1)]
        offsets = [(np.where(r % 2 == 0, e[0], o[0]), np.where(r % 2 == 0, e[1], o[1])) for e, o in zip(even, odd)]
    else:
        offsets = [(np.zeros_like(r), np.full_like(r, d)) for d in (-1, 1)]
        offsets += [(np.full_like(r, d), np.zeros_like(r)) for d in (-1, 1)]
    a_list, b_list = [], []
    for dr, dc in offsets:
        rr, cc = r + dr, c + dc
        if toroidal:
            rr, cc = rr % rows, cc % cols
            ok = np.ones_like(rr, dtype=bool)
        else:
            ok = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
        b = rr * cols + cc
        ok &= b != k
        a_list.append(k[ok])
        b_list.append(b[ok])
    a = np.concatenate(a_list)
    b = np.concatenate(b_list)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


# --------------------------------------------------------------------------- input


def _as_source(X: Any, name: str = "X") -> Any:
    """Return X as something with .shape, .dtype and row slicing, validated as a 2-D numeric matrix."""
    if isinstance(X, (str, bytes, os.PathLike)) or X is None:
        raise CrevkitTypeError(f"{name} must be a numeric 2-D array (ndarray, memmap or Zarr array), "
                               f"got {type(X).__name__}")
    if not isinstance(X, np.ndarray) and not (hasattr(X, "shape") and hasattr(X, "dtype")
                                              and hasattr(X, "__getitem__")):
        X = np.asarray(X)
    dtype = np.dtype(X.dtype)
    if dtype == object or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise CrevkitTypeError(f"{name} must hold real numbers, got dtype {dtype}")
    if len(X.shape) != 2:
        raise CrevkitValueError(f"{name} must be 2-dimensional (n_samples, n_features), got shape {tuple(X.shape)}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise CrevkitValueError(f"{name} is empty (shape {tuple(X.shape)})")
    return X


def _resolve_chunk_rows(chunk_rows: int | None, n_nodes: int) -> int:
    """The ``chunk_rows`` parameter, ``None`` resolved by map size (see :class:`SelfOrganizingMap`)."""
    if chunk_rows is None:
        return 480 if n_nodes >= 8192 else 240
    return check_int(chunk_rows, "chunk_rows", minimum=1, maximum=1 << 20)


def _in_memory_f32(X: Any) -> bool:
    return (isinstance(X, np.ndarray) and not isinstance(X, np.memmap) and X.dtype == np.float32
            and X.flags.c_contiguous)


def _block_rows(X: Any, chunk_rows: int) -> int:
    d = int(X.shape[1])
    rows = max(chunk_rows, _BLOCK_BYTES // (4 * d))
    rows = -(-rows // chunk_rows) * chunk_rows
    zchunks = getattr(X, "chunks", None)
    if isinstance(zchunks, tuple) and zchunks and isinstance(zchunks[0], numbers.Integral) and zchunks[0] > 0:
        rows = -(-rows // int(zchunks[0])) * int(zchunks[0])
    return rows


def _blocks(X: Any, chunk_rows: int, *, check: bool, name: str = "X",
            whole: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_row, float32 C-contiguous block)``; check=True rejects NaN / inf naming ``name``."""
    n = int(X.shape[0])
    if whole and _in_memory_f32(X) and not check:
        yield 0, X
        return
    step = _block_rows(X, chunk_rows)
    for start in range(0, n, step):
        block = np.ascontiguousarray(X[start:start + step], dtype=np.float32)
        if check:
            sub = max(1, (4 * 2**20) // (4 * block.shape[1]))  # check ~4 MiB at a time (small temporaries)
            for s0 in range(0, block.shape[0], sub):
                part = block[s0:s0 + sub]
                if not np.isfinite(part).all():
                    bad = start + s0 + int(np.argwhere(~np.isfinite(part))[0, 0])
                    raise CrevkitValueError(f"{name} contains NaN or infinite values (first at row {bad}); "
                                            "remove or impute those samples first")
        yield start, block


def _read_rows(X: Any, idx: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """Rows ``idx`` (sorted) of X as ``dtype`` (default float64)."""
    if isinstance(X, np.ndarray):
        return np.asarray(X[idx], dtype=dtype)
    oindex = getattr(X, "oindex", None)
    if oindex is not None:
        return np.asarray(oindex[idx, :], dtype=dtype)
    return np.asarray(X[idx], dtype=dtype)  # h5py: sorted fancy index


def _streamed_pca(X: Any, idx: np.ndarray, mean64: np.ndarray, n_comp: int, seed: int,
                  n_iter: int = 6, oversample: int = 10, block_bytes: int = 2**20):
    """Leading principal axes of rows ``idx`` of X, reading them in blocks.

    Randomized subspace iteration on the Gram operator ``SᵀS`` of the centred
    sample ``S`` (Halko, Martinsson & Tropp 2011): each iteration is one pass
    over the sample, ``Z = Σ_blocks Bᵀ(B Q)``, then a QR; a last pass gives the
    Rayleigh–Ritz projection.  Only one float32 block of rows (``block_bytes``)
    and ``d × (n_comp + oversample)`` matrices exist at a time, never the
    sample itself (10,000 × 5,000 float64 would be 400 MB, more than the
    codebook and the per-node sums of a 40 × 40 map together).  The products
    with a block are float32 (an initial codebook needs no more; it keeps the
    passes at the speed of reading the sample), the sums over blocks and the
    small factorizations float64.  The blocks depend only on ``d``, so an
    in-memory and a streamed X give the same bits.

    Returns ``(singular_values, components)``: shapes ``(n_comp,)`` and
    ``(n_comp, d)``, each component's largest-magnitude entry positive.
    """
    d = int(mean64.shape[0])
    n_sub = int(idx.shape[0])
    ell = min(d, n_sub, n_comp + oversample)
    step = max(1, block_bytes // (4 * d))
    rng = np.random.default_rng(seed)
    mean32 = mean64.astype(np.float32)

    def gram_times(Q: np.ndarray) -> np.ndarray:
        Z = np.zeros_like(Q)
        q32 = Q.astype(np.float32)
        for s0 in range(0, n_sub, step):
            B = _read_rows(X, idx[s0:s0 + step], np.float32)
            B -= mean32
            Z += B.T @ (B @ q32)
        return Z

    Q, _ = np.linalg.qr(rng.standard_normal((d, ell)))
    for _ in range(n_iter):
        Q, _ = np.linalg.qr(gram_times(Q))
    Z = gram_times(Q)
    evals, U = np.linalg.eigh(Q.T @ Z)  # ascending
    order = np.argsort(evals)[::-1][:n_comp]
    comps = (Q @ U[:, order]).T
    sign = np.sign(comps[np.arange(n_comp), np.abs(comps).argmax(axis=1)])
    comps *= np.where(sign == 0, 1.0, sign)[:, None]
    return np.sqrt(np.clip(evals[order], 0.0, None)), comps


# --------------------------------------------------------------------------- estimator


class SelfOrganizingMap:
    """Batch self-organizing map (C++ / OpenMP kernel, float32).

    Parameters
    ----------
    rows, cols : int
        Map size (``rows * cols`` nodes, >= 1 each).
    topology : {"rectangular", "hexagonal"}
        Lattice (see the module docs for node positions).
    toroidal : bool
        Wrap the map at its edges (hexagonal maps then need an even ``rows``).
    neighborhood : {"gaussian", "bubble"}
        Neighbourhood function of the batch update.
    radius0 : float or None
        Radius of the first epoch; ``None`` means ``max(1, max(map width, map height) / 2)``.
    radius_final : float
        Radius of the last epoch (> 0).
    cooling : {"linear", "exponential"}
        Radius schedule between ``radius0`` and ``radius_final``.
    epochs : int
        Passes over the data (>= 1).
    init : {"pca", "sample"} or array
        ``"pca"``: the plane of the first two principal components (of up to
        10,000 random samples), the longer map axis along the first;
        ``"sample"``: random distinct samples (with replacement if there are
        fewer samples than nodes); an array of shape ``(rows, cols, D)`` or
        ``(rows * cols, D)``: that codebook.  The initial codebook is float32.
    seed : int
        Seed of ``numpy.random.default_rng`` (init only; the fit itself is deterministic).
    n_threads : int or None
        OpenMP threads (None or 0: all usable cores).  Results do not depend on it.
    chunk_rows : int or None
        Rows per kernel chunk (the working set of one thread); results do not depend on it.
        ``None``: 240, or 480 on maps of 8,192 nodes or more (each chunk streams the whole
        codebook from memory, so larger chunks amortize that on large maps).

    Attributes
    ----------
    codebook_ : ndarray, shape (rows, cols, n_features), float32
    mean_ : ndarray, shape (n_features,), float32 -- the data mean used for centring
    n_features_in_ : int
    n_samples_seen_ : int
    radii_ : ndarray -- radius of each epoch
    history_ : list of dict -- per epoch: radius, quantization and topographic error of
        the codebook the epoch started from (measured during its BMU pass, distances from the
        clamped float32 expansion), nodes kept
    """

    def __init__(self, rows: int = 10, cols: int = 10, topology: str = "rectangular", toroidal: bool = False,
                 neighborhood: str = "gaussian", radius0: float | None = None, radius_final: float = 1.0,
                 cooling: str = "linear", epochs: int = 10, init: Any = "pca", seed: int = 0,
                 n_threads: int | None = None, chunk_rows: int | None = None) -> None:
        self.rows = rows
        self.cols = cols
        self.topology = topology
        self.toroidal = toroidal
        self.neighborhood = neighborhood
        self.radius0 = radius0
        self.radius_final = radius_final
        self.cooling = cooling
        self.epochs = epochs
        self.init = init
        self.seed = seed
        self.n_threads = n_threads
        self.chunk_rows = chunk_rows

    # ---- scikit-learn contract
    _PARAMS = ("rows", "cols", "topology", "toroidal", "neighborhood", "radius0", "radius_final", "cooling",
               "epochs", "init", "seed", "n_threads", "chunk_rows")

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters (scikit-learn contract)."""
        return {p: getattr(self, p) for p in self._PARAMS}

    def set_params(self, **params: Any) -> "SelfOrganizingMap":
        """Set constructor parameters (scikit-learn contract)."""
        for key, value in params.items():
            if key not in self._PARAMS:
                raise CrevkitValueError(f"unknown parameter {key!r}; valid: {', '.join(self._PARAMS)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        return f"SelfOrganizingMap(rows={self.rows!r}, cols={self.cols!r}, topology={self.topology!r})"

    # ---- validation
    def _check_params(self) -> dict:
        rows = check_int(self.rows, "rows", minimum=1, maximum=1 << 20)
        cols = check_int(self.cols, "cols", minimum=1, maximum=1 << 20)
        if rows * cols > 1 << 26:
            raise CrevkitValueError(f"rows * cols = {rows * cols} nodes is too many (max {1 << 26})")
        if self.topology not in _TOPOLOGIES:
            raise CrevkitValueError(f"topology must be one of {sorted(_TOPOLOGIES)}, got {self.topology!r}")
        if not isinstance(self.toroidal, (bool, np.bool_)):
            raise CrevkitTypeError(f"toroidal must be a bool, got {type(self.toroidal).__name__}")
        if self.toroidal and self.topology == "hexagonal" and rows % 2:
            raise CrevkitValueError(f"a toroidal hexagonal map needs an even number of rows, got rows={rows}")
        if self.neighborhood not in _NEIGHBORHOODS:
            raise CrevkitValueError(f"neighborhood must be one of {sorted(_NEIGHBORHOODS)}, got {self.neighborhood!r}")
        if self.cooling not in _COOLINGS:
            raise CrevkitValueError(f"cooling must be one of {list(_COOLINGS)}, got {self.cooling!r}")
        epochs = check_int(self.epochs, "epochs", minimum=1, maximum=1 << 20)
        radius_final = check_positive(self.radius_final, "radius_final")
        if self.radius0 is None:
            pos = node_positions(rows, cols, self.topology)
            extent = float(max(np.ptp(pos[:, 0]), np.ptp(pos[:, 1])))
            radius0 = max(1.0, extent / 2.0)
        else:
            radius0 = check_positive(self.radius0, "radius0")
        if isinstance(self.init, str):
            if self.init not in ("pca", "sample"):
                raise CrevkitValueError(f"init must be 'pca', 'sample' or an array, got {self.init!r}")
        check_int(self.seed, "seed", minimum=0)
        n_threads = resolve_threads(self.n_threads)
        chunk_rows = _resolve_chunk_rows(self.chunk_rows, rows * cols)
        return dict(rows=rows, cols=cols, epochs=epochs, radius0=radius0, radius_final=radius_final,
                    n_threads=n_threads, chunk_rows=chunk_rows)

    def _check_fitted(self) -> None:
        if not hasattr(self, "codebook_"):
            raise CrevkitValueError("this SelfOrganizingMap is not fitted yet: call fit(X) or load() first")

    @property
    def n_nodes(self) -> int:
        """Number of map nodes, ``rows * cols``."""
        return int(self.rows) * int(self.cols)

    # ---- kernel hooks (crevkit.reference.som overrides these with float64 NumPy)
    _codebook_dtype = np.float32

    def _kern_prepare(self, codebook: np.ndarray, mean: np.ndarray, n_threads: int, *, owned: bool) -> Any:
        """Kernel state from a (nodes, D) codebook: centred (float32, in place when ``owned``) and packed."""
        from . import _core

        centred = codebook if owned and codebook.dtype == np.float32 else np.array(codebook, dtype=np.float32)
        np.subtract(centred, mean, out=centred)
        return _core.som_pack(centred, n_threads)

    def _kern_bmu(self, state: Any, block: np.ndarray, mean: np.ndarray, sums: np.ndarray | None,
                  counts: np.ndarray | None, n_nodes: int, chunk_rows: int, n_threads: int):
        from . import _core

        # during a fit (sums given) the distances only feed history_: the expansion is enough there
        return _core.som_bmu(block, mean, state, n_nodes, sums, counts, chunk_rows, n_threads, sums is None)

    def _kern_smooth(self, state: Any, sums: np.ndarray, counts: np.ndarray, sigma: float, rows: int, cols: int,
                     n_threads: int) -> int:
        from . import _core

        return int(_core.som_smooth(sums, counts, state, rows, cols, _TOPOLOGIES[self.topology],
                                    bool(self.toroidal), _NEIGHBORHOODS[self.neighborhood], float(sigma), n_threads))

    def _kern_finish(self, state: Any, mean: np.ndarray, n_nodes: int, d: int, n_threads: int) -> np.ndarray:
        from . import _core

        return _core.som_unpack(state, n_nodes, d, mean, n_threads)

    def _kern_mean(self, mean64: np.ndarray) -> np.ndarray:
        return mean64.astype(np.float32)

    # ---- init
    def _initial_codebook(self, X: Any, mean64: np.ndarray, rows: int, cols: int) -> np.ndarray:
        n, d = int(X.shape[0]), int(X.shape[1])
        k = rows * cols
        if not isinstance(self.init, str):
            init = np.asarray(self.init)
            if init.dtype == object or not (np.issubdtype(init.dtype, np.floating)
                                            or np.issubdtype(init.dtype, np.integer)):
                raise CrevkitTypeError(f"init must hold real numbers, got dtype {init.dtype}")
            if init.shape not in ((rows, cols, d), (k, d)):
                raise CrevkitValueError(f"init must have shape ({rows}, {cols}, {d}) or ({k}, {d}) "
                                        f"(map rows, cols, X's features), got {init.shape}")
            init = np.array(init.reshape(k, d), dtype=np.float32)
            if not np.isfinite(init).all():
                raise CrevkitValueError("init contains NaN or infinite values")
            return init
        rng = np.random.default_rng(self.seed)
        if self.init == "sample":
            idx = rng.choice(n, size=k, replace=n < k)
            order = np.argsort(idx, kind="stable")
            rows_read = _read_rows(X, idx[order])
            out = np.empty((k, d), dtype=np.float32)
            out[order] = rows_read
            return out
        # PCA plane
        n_sub = min(n, 10_000)
        idx = np.arange(n) if n_sub == n else np.sort(rng.choice(n, size=n_sub, replace=False))
        n_comp = min(2, d, n_sub - 1) if n_sub > 1 else 0
        if n_comp == 0 or k == 1:
            return np.repeat(mean64[None, :].astype(np.float32), k, axis=0)
        # one BLAS thread: the products are thin (d x 12), and every extra BLAS
        # thread keeps its own work buffer resident (measured: 4 MiB with two)
        with blas_threads(1):
            return self._pca_codebook(X, idx, mean64, rows, cols, n_comp)

    def _pca_codebook(self, X: Any, idx: np.ndarray, mean64: np.ndarray, rows: int, cols: int,
                      n_comp: int) -> np.ndarray:
        n_sub, d, k = int(idx.shape[0]), int(mean64.shape[0]), rows * cols
        svals, vt = _streamed_pca(X, idx, mean64, n_comp, int(self.seed))
        std = svals / math.sqrt(n_sub)
        pos = node_positions(rows, cols, self.topology)
        coords = []
        for axis in range(2):
            p = pos[:, axis] - pos[:, axis].mean()
            span = np.abs(p).max()
            coords.append(p / span if span > 0 else np.zeros_like(p))
        extent = np.ptp(pos, axis=0)
        long_axis = 0 if extent[0] >= extent[1] else 1
        coef = np.stack([coords[long_axis], coords[1 - long_axis]], axis=1)[:, :n_comp] * std  # (k, n_comp)
        # float64 arithmetic, float32 result, in row blocks (the codebook may be large)
        out = np.empty((k, d), dtype=np.float32)
        step = max(1, 2**20 // (8 * d))  # small temporaries: freed large blocks stay resident
        for s0 in range(0, k, step):
            out[s0:s0 + step] = mean64 + coef[s0:s0 + step] @ vt
        return out

    # ---- fit
    def fit(self, X: Any, y: Any = None) -> "SelfOrganizingMap":
        """Train the map on ``X`` (n_samples, n_features); returns ``self``.

        ``X`` may be an in-memory array, a ``numpy.memmap`` or a Zarr/h5py
        array; the latter two are streamed in blocks of rows (see the module
        docs).  Memory above X: the codebook (float32) and per-node sums
        (float64), i.e. ``nodes * D * 12`` bytes at most (rows of nodes that
        never get a hit are never written, so large maps stay well under it),
        plus per thread a tile of products and a slice of its chunk
        (``chunk_rows * 512`` floats each; on large maps, where a chunk is
        under 1/64 of the codebook, the whole packed chunk), and one block
        when X must be read or converted.
        """
        p = self._check_params()
        X = _as_source(X)
        n, d = int(X.shape[0]), int(X.shape[1])
        rows, cols, k = p["rows"], p["cols"], p["rows"] * p["cols"]
        n_threads, chunk_rows = p["n_threads"], p["chunk_rows"]

        # pass 1: validate (finite) and the float64 data mean
        total = np.zeros(d, dtype=np.float64)
        for _, block in _blocks(X, chunk_rows, check=True):
            total += block.sum(axis=0, dtype=np.float64)
        mean64 = total / n
        mean = self._kern_mean(mean64)

        init = self._initial_codebook(X, mean64, rows, cols)  # (k, d) float32, ours
        state = self._kern_prepare(init, mean, n_threads, owned=True)
        del init
        radii = radius_schedule(p["radius0"], p["radius_final"], p["epochs"], self.cooling)
        # np.zeros maps untouched zero pages: only rows of nodes that get hits are
        # ever written (the Gaussian smoothing reads no other row, and reading an
        # untouched page maps nothing), and only those are reset between epochs;
        # on a large map most of ``sums`` stays unmapped
        sums = np.zeros((k, d), dtype=np.float64)
        counts = np.zeros(k, dtype=np.float64)
        history = []
        for sigma in radii:
            sums[np.flatnonzero(counts)] = 0.0
            counts.fill(0.0)
            qe_sum, te_count = 0.0, 0
            for _, block in _blocks(X, chunk_rows, check=False):
                bmu, second, d1, _ = self._kern_bmu(state, block, mean, sums, counts, k, chunk_rows, n_threads)
                qe_sum += float(np.sum(d1, dtype=np.float64))
                te_count += self._count_non_adjacent(bmu, second, rows, cols)
            kept = self._kern_smooth(state, sums, counts, float(sigma), rows, cols, n_threads)
            history.append({"radius": float(sigma), "quantization_error": qe_sum / n,
                            "topographic_error": te_count / n if k > 1 else float("nan"),
                            "nodes_kept": int(kept)})
        del sums, counts
        self.codebook_ = self._kern_finish(state, mean, k, d, n_threads).reshape(rows, cols, d)
        self.mean_ = mean
        self.n_features_in_ = d
        self.n_samples_seen_ = n
        self.radii_ = radii
        self.history_ = history
        return self

    def fit_transform(self, X: Any, y: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    # ---- queries
    def _count_non_adjacent(self, bmu: np.ndarray, second: np.ndarray, rows: int, cols: int) -> int:
        if rows * cols == 1:
            return 0
        d2 = map_distance_squared(rows, cols, self.topology, bool(self.toroidal), bmu, second)
        return int(np.count_nonzero(d2 > 1.0 + 1e-9))

    def _search(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(bmu, second, d1, d2) for every row of X against the fitted codebook."""
        self._check_fitted()
        X = _as_source(X)
        d = self.n_features_in_
        if int(X.shape[1]) != d:
            raise CrevkitValueError(f"X has {X.shape[1]} features but the map was trained on {d}")
        n_threads = resolve_threads(self.n_threads)
        k = self.codebook_.shape[0] * self.codebook_.shape[1]
        chunk_rows = _resolve_chunk_rows(self.chunk_rows, k)
        mean = self.mean_
        state = self._kern_prepare(self.codebook_.reshape(k, d), mean, n_threads, owned=False)
        n = int(X.shape[0])
        out = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32))
        for start, block in _blocks(X, chunk_rows, check=True):
            res = self._kern_bmu(state, block, mean, None, None, k, chunk_rows, n_threads)
            for o, r in zip(out, res):
                o[start:start + block.shape[0]] = r
        return out

    def bmu(self, X: Any, return_distance: bool = False):
        """Best-matching node of each sample (flat index ``row * cols + col``; ties -> lowest index).

        With ``return_distance=True`` returns ``(bmu, distance)`` where the
        distance (float32) is the exact Euclidean distance to that node.
        """
        b, _, d1, _ = self._search(X)
        return (b, d1) if return_distance else b

    def transform(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(bmu, distance)`` for every sample: best node index (int64) and its distance (float32)."""
        b, _, d1, _ = self._search(X)
        return b, d1

    def node_coordinates(self, nodes: Any = None) -> np.ndarray:
        """``(row, col)`` of flat node indices (all nodes by default), shape ``(n, 2)``."""
        k = np.arange(self.n_nodes) if nodes is None else np.asarray(nodes, dtype=np.int64)
        return np.stack(np.divmod(k, int(self.cols)), axis=-1)

    def quantization_error(self, X: Any) -> float:
        """Mean Euclidean distance from each sample to its best-matching node."""
        _, _, d1, _ = self._search(X)
        return float(np.mean(d1, dtype=np.float64))

    def topographic_error(self, X: Any) -> float:
        """Share of samples whose best and second-best nodes are not map neighbours.

        Neighbours: map distance 1 (4 on rectangular, 6 on hexagonal maps,
        wrapped on toroidal maps).  NaN for a one-node map (no second node).
        """
        b, s, _, _ = self._search(X)
        k = self.n_nodes
        if k == 1:
            return float("nan")
        return self._count_non_adjacent(b, s, int(self.rows), int(self.cols)) / len(b)

    def hit_map(self, X: Any) -> np.ndarray:
        """Number of samples per node, shape ``(rows, cols)`` (int64)."""
        b = self.bmu(X)
        return np.bincount(b, minlength=self.n_nodes).reshape(int(self.rows), int(self.cols))

    def umatrix(self) -> np.ndarray:
        """Mean distance from each node's weights to its map neighbours', shape ``(rows, cols)`` (float64)."""
        self._check_fitted()
        rows, cols = int(self.rows), int(self.cols)
        k, d = rows * cols, self.n_features_in_
        w = self.codebook_.reshape(k, d)
        a, b = _neighbour_pairs(rows, cols, self.topology, bool(self.toroidal))
        total = np.zeros(k)
        step = max(1, (32 * 2**20) // (8 * d))
        for s in range(0, len(a), step):
            aa, bb = a[s:s + step], b[s:s + step]
            diff = w[aa].astype(np.float64) - w[bb].astype(np.float64)
            np.add.at(total, aa, np.sqrt(np.einsum("ij,ij->i", diff, diff)))
        n_nb = np.bincount(a, minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.where(n_nb > 0, total / np.maximum(n_nb, 1), 0.0)
        return u.reshape(rows, cols)

    # ---- persistence
    def _metadata(self) -> dict:
        from . import __version__

        params = self.get_params()
        if not isinstance(params["init"], str):
            params["init"] = "array"
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "crevkit_version": __version__,
            "class": type(self).__name__,
            "params": params,
            "n_features": int(self.n_features_in_),
            "n_samples_seen": int(self.n_samples_seen_),
            "codebook_shape": list(self.codebook_.shape),
            "codebook_dtype": str(self.codebook_.dtype),
            "radii": [float(r) for r in self.radii_],
            "history": self.history_,
        }

    @staticmethod
    def _checksum(codebook: np.ndarray, mean: np.ndarray) -> str:
        h = hashlib.sha256()
        for arr in (codebook, mean):
            h.update(str(arr.dtype).encode())
            h.update(repr(tuple(arr.shape)).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the map to ``path`` (one ``.npz``: codebook, mean, JSON metadata with sha256), atomically."""
        self._check_fitted()
        path = Path(path)
        meta = self._metadata()
        meta["sha256"] = self._checksum(self.codebook_, self.mean_)
        buf = io.BytesIO()
        np.savez(buf, codebook=self.codebook_, mean=self.mean_,
                 metadata=np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8))
        atomic_write_bytes(path, buf.getvalue())  # fsync'd, size-checked
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, n_features: int | None = None) -> "SelfOrganizingMap":
        """Read a map written by :meth:`save`; checks format, checksum and (if given) ``n_features``."""
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"{path}: no such SOM file")
        try:
            with np.load(path, allow_pickle=False) as z:
                codebook, mean = z["codebook"], z["mean"]
                meta = json.loads(bytes(z["metadata"]).decode("utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise InputFileError(f"{path}: not a crevkit SOM file ({exc})") from None
        if meta.get("format") != _FORMAT:
            raise InputFileError(f"{path}: not a crevkit SOM file (format {meta.get('format')!r})")
        if meta.get("format_version", 0) > _FORMAT_VERSION:
            raise InputFileError(f"{path}: SOM format version {meta.get('format_version')} is newer than this "
                                 f"crevkit understands ({_FORMAT_VERSION}); upgrade crevkit")
        if cls._checksum(codebook, mean) != meta.get("sha256"):
            raise IndexIntegrityError(f"{path}: codebook checksum mismatch (file corrupt or edited)")
        d = int(meta["n_features"])
        if codebook.ndim != 3 or codebook.shape[2] != d or mean.shape != (d,):
            raise IndexIntegrityError(f"{path}: codebook shape {codebook.shape} does not match its metadata")
        if n_features is not None and int(n_features) != d:
            raise CrevkitValueError(f"{path}: the map has {d} features, expected n_features={n_features}")
        params = dict(meta["params"])
        if params.get("init") == "array":
            params["init"] = "pca"
        som = cls(**params)
        som.codebook_ = codebook
        som.mean_ = mean
        som.n_features_in_ = d
        som.n_samples_seen_ = int(meta.get("n_samples_seen", 0))
        som.radii_ = np.asarray(meta.get("radii", []), dtype=np.float64)
        som.history_ = list(meta.get("history", []))
        return som
