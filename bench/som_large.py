"""Streamed SOM fit over a large memmapped feature matrix: wall, CPU time, peak memory.

The issue's large case: a 40 x 40 map, 10 epochs, over 250,000 x 5,000 float32
features (5 GB) read from a ``.npy`` on disk through ``numpy.memmap`` (crevkit
streams it in blocks of rows; nothing of X is copied into memory).  The data
(20 Gaussian clusters, seeded) is generated chunkwise into ``--path`` once and
reused by later runs with the same shape and seed.

Full run (about 5 GB in /tmp; target under 6 minutes on 2 cores)::

    PYTHONPATH=python python bench/som_large.py

Development check at a tenth of the rows (prints a linear extrapolation)::

    PYTHONPATH=python python bench/som_large.py --rows 25000

Reported: wall and process CPU seconds of ``fit`` (PCA init and the
validation / mean pass included), wall per epoch, GFLOP of the distance
products per CPU-second, peak anonymous resident memory (RssAnon, sampled;
the memmapped file's page cache is not counted) and the process's peak RSS
(VmHWM, which does count mapped file pages), and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class _PeakAnon:
    """Peak RssAnon (KiB) sampled every 20 ms in a thread (the kernels release the GIL)."""

    def __init__(self) -> None:
        self.base = _status_kib("RssAnon")
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kib("RssAnon"))
            time.sleep(0.02)

    def __enter__(self) -> "_PeakAnon":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _status_kib("RssAnon"))


def make_data(path: Path, n: int, d: int, n_clusters: int = 20, seed: int = 0, block: int = 10_000) -> None:
    """Write an (n, d) float32 ``.npy`` of clustered data chunkwise (seeded; reused if already there)."""
    meta_path = path.with_suffix(".json")
    meta = {"n": n, "d": d, "n_clusters": n_clusters, "seed": seed, "format": 1}
    if path.exists() and meta_path.exists():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return
        except ValueError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32) * 2.0
    X = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    t0 = time.perf_counter()
    for s in range(0, n, block):
        m = min(block, n - s)
        part = centres[rng.integers(0, n_clusters, m)]
        part += rng.standard_normal((m, d), dtype=np.float32)
        X[s:s + m] = part
    X.flush()
    del X
    os.replace(tmp, path)  # complete file or none
    meta_path.write_text(json.dumps(meta))
    print(f"generated {path} ({n:,} x {d:,} float32, {n * d * 4 / 2**30:.1f} GiB) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=250_000, help="samples (default 250,000)")
    ap.add_argument("--features", type=int, default=5_000)
    ap.add_argument("--map", default="40x40", help="ROWSxCOLS (default 40x40)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="0: all usable cores")
    ap.add_argument("--path", type=Path, default=None,
                    help="data file (default /tmp/crevkit-som-large-<rows>x<features>.npy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delete", action="store_true", help="delete the data file afterwards")
    a = ap.parse_args(argv)

    from crevkit.som import SelfOrganizingMap

    n, d = a.rows, a.features
    rows, cols = (int(v) for v in a.map.lower().split("x"))
    path = a.path or Path(f"/tmp/crevkit-som-large-{n}x{d}.npy")
    make_data(path, n, d, seed=a.seed)
    X = np.load(path, mmap_mode="r")
    assert X.shape == (n, d) and X.dtype == np.float32

    load0 = os.getloadavg()
    som = SelfOrganizingMap(rows, cols, epochs=a.epochs, init="pca", seed=a.seed, n_threads=a.threads or None)
    with _PeakAnon() as mem:
        c0, t0 = time.process_time(), time.perf_counter()
        som.fit(X)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    load1 = os.getloadavg()
    k = rows * cols
    gflop = 2.0 * n * d * k * a.epochs / 1e9
    bound = k * d * 12 / 2**20
    print(f"SOM {rows}x{cols}, {a.epochs} epochs, X {n:,} x {d:,} float32 memmap ({path}), "
          f"{som._check_params()['n_threads']} threads")
    print(f"  wall {wall:.1f} s ({wall / a.epochs:.2f} s/epoch), CPU {cpu:.1f} s, "
          f"{gflop / cpu:.1f} GFLOP per CPU-s, {gflop / wall:.1f} GFLOP per wall-s")
    print(f"  peak RssAnon above start {(mem.peak - mem.base) / 1024:.0f} MiB "
          f"(K*D*12 bytes = {bound:.0f} MiB), VmHWM {_status_kib('VmHWM') / 1024:.0f} MiB (includes mapped X pages)")
    print(f"  QE (last epoch's start) {som.history_[-1]['quantization_error']:.4f}, "
          f"TE {som.history_[-1]['topographic_error']:.4f}")
    print(f"  load average before {load0[0]:.2f}, after {load1[0]:.2f} (1-min) on {os.cpu_count()} CPUs")
    if n < 250_000:
        s = 250_000 / n
        print(f"  linear extrapolation to 250,000 rows (PCA init uses <= 10k rows either way, so this is an "
              f"upper bound): wall {wall * s / 60:.1f} min, CPU {cpu * s / 60:.1f} min")
    if a.delete:
        del X
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
