"""Where a SOM epoch's time goes: kernel phases vs a plain NumPy sgemm of the same shapes.

Usage: PYTHONPATH=python python bench/som_profile.py [--maps 20x20,40x40,200x300] [--reps 3]

Per map (10k x 5000 float32, clustered), interleaved repetitions, medians:
  sgemm      X @ W.T through NumPy/OpenBLAS (all threads), in 2048-row chunks (same FLOPs as an epoch's search)
  search     som_bmu without sums (pack + fused GEMM + best-two, float32 expansion distances)
  accumulate som_accumulate (per-node double sums)
  bmu+acc    som_bmu with sums (what fit runs per epoch)
  smooth     som_smooth (Gaussian, sigma = the first epoch's radius)
  epoch      a SelfOrganizingMap.fit with epochs=1 (Python, validation pass, pack / unpack included)
  fit10      a 10-epoch fit (radius from half the map to 1), reported per epoch
Wall and process CPU seconds; GFLOP rates count 2 N D K per epoch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def _data(n, d, k=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 2.0
    X = centres[rng.integers(0, k, n)]
    X += rng.standard_normal((n, d), dtype=np.float32)
    return X


def _t(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--maps", default="20x20,40x40,200x300")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=5_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-epoch", action="store_true")
    ap.add_argument("--phases", default="", help="comma-separated subset of the phases")
    a = ap.parse_args()

    from threadpoolctl import threadpool_limits

    from crevkit import _core
    from crevkit._validation import resolve_threads
    from crevkit.som import SelfOrganizingMap

    nt = resolve_threads(a.threads or None)
    X = _data(a.n, a.d)
    n, d = X.shape
    mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    print(f"# N={n} D={d} threads={nt} load: {os.getloadavg()}", flush=True)
    for spec in a.maps.split(","):
        rows, cols = map(int, spec.split("x"))
        k = rows * cols
        rng = np.random.default_rng(1)
        W = X[rng.choice(n, k, replace=k > n)] + 0.1 * rng.standard_normal((k, d), dtype=np.float32)
        Wc = W - mean
        packed = _core.som_pack(Wc, nt)
        sums = np.zeros((k, d))
        counts = np.zeros(k)
        flops = 2.0 * n * d * k
        sigma = max(1.0, (max(rows, cols) - 1) / 2.0)
        res = {key: [] for key in ("sgemm", "search", "accumulate", "bmu+acc", "smooth", "epoch", "fit10")}

        def sgemm():
            with threadpool_limits(nt):
                for s in range(0, n, 2048):
                    X[s:s + 2048] @ W.T

        def search():
            _core.som_bmu(X, mean, packed, k, None, None, 240, nt, False)

        bmu = _core.som_bmu(X, mean, packed, k, None, None, 240, nt, False)[0]

        def acc():
            _core.som_accumulate(X, mean, bmu, sums, counts, nt)

        def bmuacc():
            _core.som_bmu(X, mean, packed, k, sums, counts, 240, nt, False)

        pk = packed.copy()

        def smooth():
            _core.som_smooth(sums, counts, pk, rows, cols, 0, False, 0, sigma, nt)

        def epoch():
            SelfOrganizingMap(rows, cols, epochs=1, init=W, n_threads=nt).fit(X)

        def fit10():
            SelfOrganizingMap(rows, cols, epochs=10, init=W, radius0=sigma, n_threads=nt).fit(X)

        fns = [("sgemm", sgemm), ("search", search), ("accumulate", acc), ("bmu+acc", bmuacc), ("smooth", smooth)]
        if not a.skip_epoch:
            fns.append(("epoch", epoch))
            fns.append(("fit10", fit10))
        if a.phases:
            fns = [f for f in fns if f[0] in a.phases.split(",")]
        for _ in range(a.reps):
            for name, fn in fns:
                res[name].append(_t(fn))
        print(f"## {rows}x{cols} (K={k}, {flops / 1e9:.0f} GFLOP per epoch), load {os.getloadavg()[0]:.2f}")
        print(f"{'phase':<11} {'wall s':>8} {'CPU s':>8} {'GFLOP/CPU-s':>12} {'GFLOP/wall-s':>13}")
        for name, _ in fns:
            per = 10.0 if name == "fit10" else 1.0  # reported per epoch
            w = statistics.median(r[0] for r in res[name]) / per
            c = statistics.median(r[1] for r in res[name]) / per
            g = f"{flops / c / 1e9:12.1f} {flops / w / 1e9:13.1f}" if name not in ("accumulate", "smooth") else ""
            print(f"{name:<11} {w:8.3f} {c:8.3f} {g}", flush=True)
        del packed, pk, sums, W, Wc


if __name__ == "__main__":
    main()
