"""Benchmark: shots read per second by each reader.

Files: a synthetic GLAH01 (+ GLAH06-like) set written by
:func:`crevkit.synth_shots.synthesize_shots` over a cheap planar stand-in
scene, and the real GLAH06 / LVIS / GEDI files where they can be found
(``$CREVKIT_REAL_DATA``, else ``../shared/data/real`` from the working
directory or from the repository).  Throughput = shots / median wall time of
one full read into a :class:`crevkit.shot_table.ShotTable`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from . import median_time

__all__ = ["run"]


class _Plane:
    bounds = (-190_000.0, -2_280_000.0, -170_000.0, -2_279_000.0)

    def height(self, x, y):
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        return 1000.0 + 0.01 * (x - self.bounds[0])

    def crevassed_fraction(self, x, y, radius):
        return np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)


def _real_dir() -> Path | None:
    cands = [os.environ.get("CREVKIT_REAL_DATA"), "../shared/data/real",
             str(Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real")]
    for c in cands:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def run(quick: bool = False) -> str:
    """Markdown section: shots/s of each reader."""
    from ..readers import read_gedi_l1b, read_glah01, read_glah06, read_lvis
    from ..synth_shots import synthesize_shots

    repeat = 3 if quick else 5
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = synthesize_shots(_Plane(), tmp, n_tracks=2 if quick else 8, seed=0, max_track_angle=1.0)
        n = len(read_glah01(paths.glah01))
        t = median_time(lambda: read_glah01(paths.glah01), repeat=repeat)
        rows.append(("read_glah01 (1 Hz positions)", paths.glah01.name, n, t))
        t = median_time(lambda: read_glah01(paths.glah01, geolocation=paths.glah06), repeat=repeat)
        rows.append(("read_glah01 + GLAH06 join", paths.glah01.name, n, t))
    real = _real_dir()
    if real is not None:
        for name, fn in (("GLAH06_634_2115_001_1288_1_01_0001.H5", read_glah06),
                         ("lvis_example1.pls", read_lvis),
                         ("GEDI01_B_2019108080338_O01964_T05337_02_003_01_sub.h5", read_gedi_l1b)):
            p = real / name
            if p.exists():
                n = len(fn(p))
                rows.append((fn.__name__, name, n, median_time(lambda: fn(p), repeat=repeat)))
    lines = ["## readers", "", "Shots read into a ShotTable per second (one process, one thread).", "",
             "| reader | file | shots | median s | shots/s |", "|---|---|---:|---:|---:|"]
    for reader, name, n, t in rows:
        lines.append(f"| {reader} | {name} | {n} | {t:.4f} | {n / t:,.0f} |")
    if real is None:
        lines += ["", "Real files not found (set CREVKIT_REAL_DATA): only the synthetic GLAH01 was read."]
    return "\n".join(lines) + "\n"
