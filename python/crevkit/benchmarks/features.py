"""Benchmark of the tile feature kernels (normalize, DCT compress/decompress).

Compares the C++ kernels on 1 and 2 threads with their NumPy twins
(:mod:`crevkit.reference`) and, for the DCT, with ``scipy.fft.dctn`` followed
by slicing out the kept coefficients; all on the same synthetic 200 x 200
tiles at 0.5 m.  Also measures whether in-plane orientation normalization
improves cluster purity (the reason ``orient`` is on by default).

``run(quick=True)`` is a smoke-sized run (seconds); ``run()`` takes about a
minute on two cores.  Timings are medians over repeats of whole batches.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import numpy as np

CLASSES = ("flat", "ridges", "crevasses", "undulations")


def synthetic_tiles(n: int, seed: int = 0, size: int = 200, pixel_size: float = 0.5,
                    max_slope_deg: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` zero-mean float32 tiles of four surface classes in random orientations.

    Classes: flat (roughness only), sinusoidal ridges (15-30 m), V-shaped
    crevasse troughs (2-5 m deep, 3-6 m wide, 12-25 m apart), smooth
    undulations; each on a random regional plane (0-``max_slope_deg``) with
    5 cm white roughness.  Returns ``(tiles, labels)``.
    """
    rng = np.random.default_rng(seed)
    d = (np.arange(size) - (size - 1) / 2.0) * pixel_size
    x, y = d[None, :], -d[:, None]
    labels = rng.integers(0, len(CLASSES), n)
    tiles = np.empty((n, size, size), np.float32)
    for t, k in enumerate(labels):
        g = np.tan(np.radians(rng.uniform(0, max_slope_deg)))
        a = rng.uniform(0, 2 * np.pi)
        z = g * (np.cos(a) * x + np.sin(a) * y) + 0.05 * rng.standard_normal((size, size))
        az = rng.uniform(0, 2 * np.pi)
        s = np.cos(az) * x + np.sin(az) * y
        if CLASSES[k] == "ridges":
            z = z + rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * s / rng.uniform(15, 30) + rng.uniform(0, 6.3))
        elif CLASSES[k] == "crevasses":
            spacing, width = rng.uniform(12, 25), rng.uniform(3, 6)
            dist = np.abs((s + rng.uniform(0, spacing) + spacing / 2) % spacing - spacing / 2)
            z = z - rng.uniform(2, 5) * np.clip(1 - dist / (width / 2), 0, None)
        elif CLASSES[k] == "undulations":
            for _ in range(6):
                kk, aa = 2 * np.pi / rng.uniform(40, 160), rng.uniform(0, 2 * np.pi)
                z = z + rng.uniform(1, 3) / np.sqrt(6) * np.cos(kk * (np.cos(aa) * x + np.sin(aa) * y) + rng.uniform(0, 6.3))
        tiles[t] = z - z.mean()
    return tiles, labels


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and median process CPU seconds of ``fn()`` over ``repeats`` runs."""
    fn()  # warm-up (first-touch allocations, thread pool start)
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _blas_limit(threads: int):
    """Limit BLAS/OpenMP pools used by NumPy (the twins) to ``threads`` (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def purity(features: np.ndarray, labels: np.ndarray, n_clusters: int, seed: int = 0) -> tuple[float, float]:
    """(k-means cluster purity, leave-one-out 1-NN accuracy) of ``features`` against ``labels``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances

    f = np.asarray(features, dtype=np.float64)
    km = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit(f)
    pur = sum(np.bincount(labels[km.labels_ == c]).max() for c in np.unique(km.labels_)) / len(labels)
    dist = pairwise_distances(f)
    np.fill_diagonal(dist, np.inf)
    nn = labels[np.argmin(dist, axis=1)]
    return float(pur), float(np.mean(nn == labels))


def run(quick: bool = False) -> str:
    """Run the benchmark; return a markdown section (table + conditions)."""
    import scipy
    import scipy.fft

    from .. import _core
    from .. import features as F
    from .. import reference as ref

    n = 32 if quick else 256
    n_twin = 4 if quick else 16
    repeats = 3 if quick else 5
    tiles, labels = synthetic_tiles(n, seed=1)
    m = F.normalized_size(tiles.shape[1:])
    k = F.resolve_keep((m, m))
    u, v = F.dct_order((m, m), k)
    norm = F.normalize_tiles(tiles, n_threads=2).tiles
    rows: list[tuple[str, str, int, float, float]] = []
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    def add(stage: str, impl: str, threads: int, batch: int, fn: Callable[[], object]) -> None:
        with _blas_limit(threads):
            wall, cpu = _median_time(fn, repeats)
        rows.append((stage, impl, threads, batch / wall, 1e3 * cpu / batch))

    nd = "normalize (orient=True, default)"
    for th in (1, 2):
        add(nd, "crevkit kernel", th, n, lambda th=th: F.normalize_tiles(tiles, n_threads=th))
    add(nd, "NumPy twin", 1, n_twin, lambda: ref.normalize_tiles(tiles[:n_twin]))
    for th in (1, 2):
        add("normalize orient=False", "crevkit kernel", th, n,
            lambda th=th: F.normalize_tiles(tiles, orient=False, n_threads=th))
    add("normalize orient=False", "NumPy twin", 1, n_twin, lambda: ref.normalize_tiles(tiles[:n_twin], orient=False))
    for th in (1, 2):
        add(f"dct_compress keep={k}", "crevkit kernel", th, n, lambda th=th: F.dct_compress(norm, k, n_threads=th))
    add(f"dct_compress keep={k}", "NumPy twin", 1, n, lambda: ref.dct_compress(norm, k))
    for th in (1, 2):
        add(f"dct_compress keep={k}", "scipy.fft.dctn + slice", th, n,
            lambda th=th: scipy.fft.dctn(norm, axes=(1, 2), norm="ortho", workers=th)[:, u, v])
    coeffs = F.dct_compress(norm, k, n_threads=2)
    for th in (1, 2):
        add(f"dct_decompress keep={k}", "crevkit kernel", th, n,
            lambda th=th: F.dct_decompress(coeffs, (m, m), n_threads=th))
    add(f"dct_decompress keep={k}", "NumPy twin", 1, n, lambda: ref.dct_decompress(coeffs, (m, m)))

    def rate(stage: str, impl: str, th: int) -> float:
        return next(r[3] for r in rows if r[0] == stage and r[1] == impl and r[2] == th)

    def cpu_ms(stage: str, impl: str, th: int) -> float:
        return next(r[4] for r in rows if r[0] == stage and r[1] == impl and r[2] == th)

    lines = ["## Tile features (normalize, DCT)", ""]
    lines.append("| stage | implementation | threads | tiles/s (median wall) | wall ms/tile | CPU ms/tile (all threads) |")
    lines.append("|---|---|---:|---:|---:|---:|")
    for stage, impl, th, r, c in rows:
        lines.append(f"| {stage} | {impl} | {th} | {r:,.0f} | {1e3 / r:.3f} | {c:.3f} |")
    lines.append("")
    nk = f"dct_compress keep={k}"
    per_tile_2 = 1.0 / rate(nd, "crevkit kernel", 2) + 1.0 / rate(nk, "crevkit kernel", 2)
    per_tile_1 = 1.0 / rate(nd, "crevkit kernel", 1) + 1.0 / rate(nk, "crevkit kernel", 1)
    twin_1 = 1.0 / rate(nd, "NumPy twin", 1) + 1.0 / rate(nk, "NumPy twin", 1)
    lines.append(f"- normalize (default, orient=True) + compress: {1e3 * per_tile_1:.3f} ms/tile on 1 thread, "
                 f"{1e3 * per_tile_2:.3f} ms/tile on 2 threads; 250,000 tiles on 2 threads ≈ "
                 f"{250_000 * per_tile_2 / 60:.1f} min (kernels only, no I/O); "
                 f"{twin_1 / per_tile_1:.0f}× the NumPy twins on 1 thread (wall).")
    cpu_1 = cpu_ms(nd, "crevkit kernel", 1) + cpu_ms(nk, "crevkit kernel", 1)
    cpu_twin = cpu_ms(nd, "NumPy twin", 1) + cpu_ms(nk, "NumPy twin", 1)
    lines.append(f"- by CPU time (robust to other jobs on a shared machine): {cpu_1:.3f} ms/tile per core for "
                 f"normalize + compress, i.e. 250,000 tiles ≈ {250_000 * cpu_1 / 2e3 / 60:.1f} min on 2 fully "
                 f"available cores; {cpu_twin / cpu_1:.0f}× the NumPy twins.")
    lines.append(f"- conditions: {n} synthetic 200×200 float32 tiles (0.5 m; flat, ridges, V-troughs, "
                 f"undulations; 0–3° regional slope) → {m}×{m}, keep {k} coefficients (zig-zag); "
                 f"NumPy twin timed on {n_twin} tiles for normalize; median of {repeats} repeats after a warm-up; "
                 f"threads as listed (OpenMP {'on' if _core._has_openmp else 'off'}; "
                 f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}); "
                 f"{os.cpu_count()} CPUs visible, {platform.processor() or platform.machine()}; "
                 f"numpy {np.__version__}, scipy {scipy.__version__}.")

    # orientation normalization and cluster purity
    np_ = 64 if quick else 400
    ptiles, plabels = synthetic_tiles(np_, seed=2)
    lines.append("")
    lines.append(f"Cluster purity ({np_} synthetic tiles, {len(CLASSES)} classes in random orientations; k-means "
                 f"with {2 * len(CLASSES)} clusters, 4 inits; 1-NN = leave-one-out nearest-neighbour class accuracy, "
                 f"Euclidean on the features):")
    lines.append("")
    lines.append("| features | k-means purity | 1-NN accuracy |")
    lines.append("|---|---:|---:|")
    raw = F.dct_compress(np.ascontiguousarray(ptiles[:, 29:170, 29:170]), k, n_threads=2)
    p_raw = purity(raw, plabels, 2 * len(CLASSES))
    lines.append(f"| raw tiles (centre {m}×{m} crop), DCT keep {k} | {p_raw[0]:.3f} | {p_raw[1]:.3f} |")
    # orientation normalization is the default because of this comparison
    for orient in (False, True):
        nt = F.normalize_tiles(ptiles, orient=orient, n_threads=2).tiles
        feats = F.dct_compress(nt, k, n_threads=2)
        p = purity(feats, plabels, 2 * len(CLASSES))
        lines.append(f"| normalized, orient={orient}, DCT keep {k} | {p[0]:.3f} | {p[1]:.3f} |")
    lines.append("")
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(f"Timings taken on a shared machine (1-min load average {load_before:.1f} before, "
                 f"{load_after:.1f} after, on {os.cpu_count()} CPUs): wall-clock rates are indicative only; "
                 f"BLAS pools limited to the listed threads with threadpoolctl.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(run(quick="--quick" in sys.argv))
