"""SOM benchmark: crevkit vs the NumPy GEMM batch SOM, somoclu and MiniSom on the same data.

All contenders start from the same initial codebook (crevkit's PCA init) and
use a rectangular map with a Gaussian neighbourhood, radius linearly from
half the map's extent to 1.  Reported per contender: wall and CPU seconds
(process CPU time, all threads), peak resident memory above the data X
(sampled every 5 ms), quantization error (mean distance to the BMU) and
topographic error (best and second-best node not neighbours), both measured
with crevkit on the full data.  Contenders too slow to run to the end are
timed on part of the work and extrapolated linearly; the table says so and
gives no QE / TE for them.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["run"]


@dataclass
class Row:
    name: str
    map: str
    epochs_run: float
    epochs: int
    wall: float
    cpu: float
    mem: float | None = None
    qe: float | None = None
    te: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def scale(self) -> float:
        return self.epochs / self.epochs_run


class _PeakRSS:
    """Peak RSS above the starting value, sampled in a thread (kernels release the GIL)."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> "_PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def above(self) -> float:
        return (self.peak - self.base) / 2**20


def _timed(fn):
    import gc

    gc.collect()
    with _PeakRSS() as mem:
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return out, wall, cpu, mem.above


def _data(n: int, d: int, n_clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32) * 2.0
    labels = rng.integers(0, n_clusters, n)
    X = centres[labels]
    X += rng.standard_normal((n, d), dtype=np.float32)
    return X


def _quality(X, codebook, rows, cols) -> tuple[float, float]:
    from ..som import SelfOrganizingMap

    som = SelfOrganizingMap(rows, cols)
    som.codebook_ = np.ascontiguousarray(codebook, dtype=np.float32).reshape(rows, cols, X.shape[1])
    som.mean_ = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    som.n_features_in_ = X.shape[1]
    b, s, d1, _ = som._search(X)
    return float(np.mean(d1, dtype=np.float64)), som._count_non_adjacent(b, s, rows, cols) / len(b)


def _sgemm_rate(d: int, k: int, m: int = 2048) -> float:
    """NumPy (BLAS) float32 GFLOP per CPU-second on one thread for an m x d by d x k product."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(1)
    A = rng.standard_normal((m, d), dtype=np.float32)
    B = rng.standard_normal((k, d), dtype=np.float32)
    with threadpool_limits(1):
        A @ B.T
        best = np.inf
        for _ in range(3):
            c0 = time.process_time()
            A @ B.T
            best = min(best, time.process_time() - c0)
    return 2.0 * m * d * k / best / 1e9


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _run_map(X, rows, cols, epochs, threads, peers: dict, rows_out: list, notes: list) -> None:
    from threadpoolctl import threadpool_limits

    from ..reference.som import fit_gemm
    from ..som import SelfOrganizingMap

    n, d = X.shape
    k = rows * cols
    label = f"{rows}×{cols}"
    radius0 = max(1.0, (max(rows, cols) - 1) / 2.0)
    init = SelfOrganizingMap(rows, cols, init="pca", seed=0)._initial_codebook(
        X, X.mean(axis=0, dtype=np.float64), rows, cols)  # float32

    # crevkit
    ck_epochs = peers.get("crevkit_epochs", epochs)
    som = SelfOrganizingMap(rows, cols, epochs=ck_epochs, init=init, radius0=radius0, radius_final=1.0,
                            n_threads=threads)
    _, wall, cpu, mem = _timed(lambda: som.fit(X))
    qe, te = _quality(X, som.codebook_, rows, cols) if ck_epochs == epochs else (None, None)
    rows_out.append(Row("crevkit", label, ck_epochs, epochs, wall, cpu, mem, qe, te,
                        "" if ck_epochs == epochs else f"{ck_epochs} of {epochs} epochs timed, ×{epochs / ck_epochs:g}"))

    # NumPy GEMM batch SOM (float32 BLAS distances, centred, separable update)
    np_epochs = peers.get("numpy_epochs", epochs)
    with threadpool_limits(threads):
        (cb, _), wall, cpu, mem = _timed(lambda: fit_gemm(X, init, rows, cols, epochs=np_epochs, radius0=radius0))
    qe, te = _quality(X, cb, rows, cols) if np_epochs == epochs else (None, None)
    rows_out.append(Row("NumPy GEMM batch SOM", label, np_epochs, epochs, wall, cpu, mem, qe, te,
                        "" if np_epochs == epochs else f"{np_epochs} of {epochs} epochs timed, ×{epochs / np_epochs:g}"))

    # somoclu (dense CPU kernel, OpenMP)
    so_epochs = peers.get("somoclu_epochs", 0)
    if not so_epochs:
        notes.append(f"somoclu {label}: not run (too slow for this run: its dense update is nodes² · D per epoch)")
    if so_epochs:
        try:
            import somoclu

            def fit_somoclu():
                s = somoclu.Somoclu(cols, rows, kerneltype=0, maptype="planar", gridtype="rectangular",
                                    neighborhood="gaussian", initialcodebook=init.copy(), compactsupport=False,
                                    verbose=0)
                s.train(X, epochs=so_epochs, radius0=radius0, radiusN=1.0, radiuscooling="linear",
                        scale0=1.0, scaleN=1.0, scalecooling="linear")
                return s

            with threadpool_limits(threads, user_api="openmp"):
                s, wall, cpu, mem = _timed(fit_somoclu)
            full = so_epochs == epochs
            qe, te = _quality(X, s.codebook.reshape(k, d), rows, cols) if full else (None, None)
            rows_out.append(Row("somoclu", label, so_epochs, epochs, wall, cpu, mem, qe, te,
                                "" if full else f"{so_epochs} of {epochs} epochs timed, ×{epochs / so_epochs:g}"))
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            notes.append(f"somoclu {label}: could not run ({type(exc).__name__}: {exc})")

    # MiniSom (online updates, NumPy)
    ms_iters = peers.get("minisom_iterations", 0)
    if ms_iters:
        try:
            from minisom import MiniSom

            total_iters = n * epochs

            def fit_minisom():
                ms = MiniSom(rows, cols, d, sigma=radius0, learning_rate=0.5, neighborhood_function="gaussian",
                             random_seed=0)
                ms._weights = init.reshape(rows, cols, d).astype(np.float64)
                ms.train(X, ms_iters, random_order=False, verbose=False)
                return ms

            with threadpool_limits(threads):
                ms, wall, cpu, mem = _timed(fit_minisom)
            full = ms_iters == total_iters
            qe, te = _quality(X, ms.get_weights().reshape(k, d), rows, cols) if full else (None, None)
            rows_out.append(Row("MiniSom (online)", label, epochs * ms_iters / total_iters, epochs, wall, cpu, mem,
                                qe, te, "" if full else f"{ms_iters} of {total_iters} updates timed, "
                                f"×{total_iters / ms_iters:g}"))
        except Exception as exc:
            notes.append(f"MiniSom {label}: could not run ({type(exc).__name__}: {exc})")


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def run(quick: bool = False) -> str:
    """Run the SOM benchmark and return a markdown section (table + conditions)."""
    from .._validation import resolve_threads

    threads = resolve_threads(None)
    if quick:
        n, d, epochs = 2000, 256, 3
        maps = [(10, 10, {"somoclu_epochs": 1, "minisom_iterations": 200}),
                (20, 20, {"somoclu_epochs": 1, "minisom_iterations": 100})]
    else:
        n, d, epochs = 10_000, 5_000, 10
        maps = [(20, 20, {"somoclu_epochs": 1, "minisom_iterations": 200}),
                (40, 40, {"somoclu_epochs": 1, "minisom_iterations": 50}),
                (200, 300, {"crevkit_epochs": 1, "numpy_epochs": 1, "minisom_iterations": 2})]
    X = _data(n, d, 20)
    rows_out: list[Row] = []
    notes: list[str] = []
    for rows, cols, peers in maps:
        _run_map(X, rows, cols, epochs, threads, peers, rows_out, notes)
    rate = _sgemm_rate(d, 1600 if not quick else 400)

    lines = [f"## Self-organizing map (`crevkit.SelfOrganizingMap`){' — quick run' if quick else ''}", ""]
    lines += [f"Data: {n:,} × {d:,} float32, 20 Gaussian clusters; {epochs} epochs, rectangular map, Gaussian "
              f"neighbourhood, radius linear from (max(rows, cols) − 1)/2 to 1, same initial codebook (PCA) for all; "
              f"{threads} thread(s) for every contender (OpenMP / BLAS limited with threadpoolctl). "
              "Times scaled to the full run where only part was timed (column *note*); QE/TE only for complete runs.",
              ""]
    lines += ["| map | contender | wall s | CPU s | CPU s / epoch | GFLOP per CPU-s (distance products) | "
              "memory above X (MiB) | QE | TE | note |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    base = {}
    for r in rows_out:
        k = int(r.map.split("×")[0]) * int(r.map.split("×")[1])
        flops = 2.0 * n * d * k * r.epochs_run
        if r.name == "crevkit":
            base[r.map] = r
        lines.append(f"| {r.map} | {r.name} | {r.wall * r.scale:,.1f} | {r.cpu * r.scale:,.1f} | "
                     f"{r.cpu / r.epochs_run:,.2f} | {flops / r.cpu / 1e9:,.1f} | {_fmt(r.mem, ',.0f')} | "
                     f"{_fmt(r.qe, '.4f')} | {_fmt(r.te, '.4f')} | {r.note} |")
    lines.append("")
    lines.append(f"Machine float32 GEMM rate (NumPy/OpenBLAS, one thread, 2048 × {d} by {d} × "
                 f"{1600 if not quick else 400}): **{rate:.1f} GFLOP per CPU-second**.")
    for label, ck in base.items():
        k = int(label.split("×")[0]) * int(label.split("×")[1])
        eff = 2.0 * n * d * k * ck.epochs_run / ck.cpu / 1e9
        rel = []
        for r in rows_out:
            if r.map == label and r.name != "crevkit":
                rel.append(f"{r.name} {r.cpu * r.scale / (ck.cpu * ck.scale):.1f}×")
        lines.append(f"- {label}: crevkit runs the distance products at {eff:.1f} GFLOP per CPU-s "
                     f"({100 * eff / rate:.0f}% of the sgemm rate, whole epochs including the update); "
                     f"CPU time of the others relative to crevkit: {', '.join(rel) or '—'}; "
                     f"memory bound K·D·12 bytes = {k * d * 12 / 2**20:,.0f} MiB.")
    lines.append("")
    import platform

    import numpy

    lines.append(f"Versions: crevkit {_version('crevkit') if _version('crevkit') != 'not installed' else 'dev'}, "
                 f"numpy {numpy.__version__}, somoclu {_version('somoclu')}, MiniSom {_version('minisom')}, "
                 f"Python {platform.python_version()}; CPU {platform.machine()}, {os.cpu_count()} logical cores "
                 f"(shared machine: other jobs may have run at the same time).")
    for note in notes:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"
