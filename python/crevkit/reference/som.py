"""Float64 NumPy twin of the SOM kernels (crevkit.som), and a float32 NumPy GEMM baseline.

:class:`SelfOrganizingMap` here has the same signature and semantics as
:class:`crevkit.SelfOrganizingMap` (it shares its validation, init, radius
schedule and streaming), but its kernels are plain NumPy in float64: the BMU
is the exact argmin (ties to the lowest index) and the batch update uses the
dense ``nodes x nodes`` neighbourhood matrix.  Use it on small maps: it is the
reference the C++ kernel is tested against, not a fast path.

:func:`fit_gemm` is the "NumPy batch SOM with GEMM distances" baseline of the
benchmarks: float32, centred, chunked BLAS products, separable Gaussian update.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..som import SelfOrganizingMap as _CompiledSOM
from ..som import _axis_distances, radius_schedule

__all__ = ["SelfOrganizingMap", "neighborhood_matrix", "bmu_search", "batch_update", "fit_gemm"]


def neighborhood_matrix(rows: int, cols: int, topology: str, toroidal: bool, neighborhood: str,
                        sigma: float) -> np.ndarray:
    """Dense ``h[j, k]`` (source node j, target node k), float64, same rules as the C++ kernel."""
    k = np.arange(rows * cols)
    dx, dy = _axis_distances(rows, cols, topology, toroidal, k[:, None], k[None, :])
    if neighborhood == "gaussian":
        gx = np.where(dx > 8.0 * sigma, 0.0, np.exp(-(dx * dx) / (2.0 * sigma * sigma)))
        gy = np.where(dy > 8.0 * sigma, 0.0, np.exp(-(dy * dy) / (2.0 * sigma * sigma)))
        return gx * gy
    return (dx * dx + dy * dy <= sigma * sigma + 1e-9).astype(np.float64)


def bmu_search(X: np.ndarray, codebook: np.ndarray, mean: np.ndarray | None = None,
               chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact float64 best and second-best nodes: ``(bmu, second, d1, d2)``; ties to the lowest index."""
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(codebook, dtype=np.float64).reshape(-1, X.shape[1])
    mu = X.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
    Wc = W - mu
    wn = np.einsum("ij,ij->i", Wc, Wc)
    n, k = X.shape[0], W.shape[0]
    bmu = np.empty(n, np.int64)
    second = np.full(n, -1, np.int64)
    d1 = np.empty(n)
    d2 = np.full(n, np.inf)
    for s in range(0, n, chunk):
        xc = X[s:s + chunk] - mu
        dist = wn[None, :] - 2.0 * (xc @ Wc.T)
        b = np.argmin(dist, axis=1)
        bmu[s:s + chunk] = b
        diff = xc - Wc[b]
        d1[s:s + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        if k > 1:
            dist[np.arange(len(b)), b] = np.inf
            b2 = np.argmin(dist, axis=1)
            second[s:s + chunk] = b2
            diff = xc - Wc[b2]
            d2[s:s + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return bmu, second, d1, d2


def batch_update(X: np.ndarray, bmu: np.ndarray, codebook: np.ndarray, rows: int, cols: int, topology: str,
                 toroidal: bool, neighborhood: str, sigma: float) -> np.ndarray:
    """One batch update from given BMUs, float64: nodes with zero neighbourhood weight keep their weights."""
    X = np.asarray(X, dtype=np.float64)
    W = np.array(codebook, dtype=np.float64).reshape(rows * cols, X.shape[1])
    k = rows * cols
    sums = np.zeros_like(W)
    np.add.at(sums, bmu, X)
    counts = np.bincount(bmu, minlength=k).astype(np.float64)
    h = neighborhood_matrix(rows, cols, topology, toroidal, neighborhood, sigma)
    den = h.T @ counts
    num = h.T @ sums
    ok = den > 0
    W[ok] = num[ok] / den[ok, None]
    return W


class SelfOrganizingMap(_CompiledSOM):
    """Float64 NumPy twin of :class:`crevkit.SelfOrganizingMap` (same parameters and methods)."""

    _codebook_dtype = np.float64

    def _kern_mean(self, mean64: np.ndarray) -> np.ndarray:
        return mean64.copy()

    def _kern_prepare(self, codebook: np.ndarray, mean: np.ndarray, n_threads: int, *, owned: bool) -> Any:
        return np.asarray(codebook, dtype=np.float64) - mean

    def _kern_bmu(self, state, block, mean, sums, counts, n_nodes, chunk_rows, n_threads):
        xc = np.asarray(block, dtype=np.float64) - mean
        b, s, d1, d2 = bmu_search(xc, state, mean=np.zeros(xc.shape[1]))
        if sums is not None:
            np.add.at(sums, b, xc)
            counts += np.bincount(b, minlength=n_nodes)
        return b, s, d1, d2

    def _kern_smooth(self, state, sums, counts, sigma, rows, cols, n_threads) -> int:
        h = neighborhood_matrix(rows, cols, self.topology, bool(self.toroidal), self.neighborhood, sigma)
        den = h.T @ counts
        num = h.T @ sums
        ok = den > 0
        state[ok] = num[ok] / den[ok, None]
        return int(np.count_nonzero(~ok))

    def _kern_finish(self, state, mean, n_nodes, d, n_threads) -> np.ndarray:
        return state + mean


def _separable_gaussian(sums: np.ndarray, rows: int, cols: int, sigma: float) -> np.ndarray:
    """Rectangular, non-toroidal Gaussian smoothing of (rows*cols, m) sums, separably (float32/64 as given)."""
    def g(n):
        t = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]).astype(np.float64)
        return np.where(t > 8 * sigma, 0.0, np.exp(-t * t / (2 * sigma * sigma))).astype(sums.dtype)
    s = sums.reshape(rows, cols, -1)
    t = np.einsum("cd,rcm->rdm", g(cols), s, optimize=True)
    return np.einsum("rs,rdm->sdm", g(rows), t, optimize=True).reshape(rows * cols, -1)


def fit_gemm(X: np.ndarray, init: np.ndarray, rows: int, cols: int, epochs: int = 10,
             radius0: float | None = None, radius_final: float = 1.0, cooling: str = "linear",
             chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """NumPy batch SOM baseline (rectangular, Gaussian): float32 BLAS distances on centred data.

    Returns ``(codebook (rows*cols, D) float32, bmu of the last epoch)``.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    k = rows * cols
    mu = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    W = np.asarray(init, dtype=np.float32).reshape(k, d) - mu
    if radius0 is None:
        radius0 = max(1.0, (max(rows, cols) - 1) / 2.0)
    bmu = np.empty(n, np.int64)
    for sigma in radius_schedule(radius0, radius_final, epochs, cooling):
        wn = np.einsum("ij,ij->i", W, W)
        sums = np.zeros((k, d), np.float32)
        for s in range(0, n, chunk):
            xc = X[s:s + chunk] - mu
            dist = xc @ W.T
            dist *= -2.0
            dist += wn
            b = np.argmin(dist, axis=1)
            bmu[s:s + chunk] = b
            order = np.argsort(b, kind="stable")
            bs = b[order]
            starts = np.flatnonzero(np.r_[True, bs[1:] != bs[:-1]])
            sums[bs[starts]] += np.add.reduceat(xc[order], starts, axis=0)
        counts = np.bincount(bmu, minlength=k).astype(np.float32)
        num = _separable_gaussian(sums, rows, cols, sigma)
        den = _separable_gaussian(counts[:, None], rows, cols, sigma)[:, 0]
        ok = den > 0
        W[ok] = num[ok] / den[ok, None]
    return W + mu, bmu
