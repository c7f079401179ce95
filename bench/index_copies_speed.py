"""Query speed of an index alone and with three copies of every library row (``crevkit.IndexWithCopies``).

50,000 library waveforms (``crevkit.evaluate_matching.synthetic_library``), 150,000 copies (each row moved by
up to 2 samples and roughened, standing in for denoised noisy copies), 20,000 queries, k = 30, 2 threads,
default index parameters; the median of three timed passes after a warm-up.

Usage::

    PYTHONPATH=python python bench/index_copies_speed.py
"""

from __future__ import annotations

import time

import numpy as np

from crevkit.evaluate_matching import synthetic_library
from crevkit.index import IndexWithCopies, WaveformIndex, shift_waveforms


def main() -> None:
    waves, _ = synthetic_library(70000, 3, lead_ns=10.0)
    library, queries = waves[:50000], waves[50000:]
    rng = np.random.default_rng(0)
    copies = np.concatenate([np.clip(shift_waveforms(library, rng.uniform(-2, 2, len(library)))
                                     + rng.normal(0, 2e-4, library.shape), 0, None)
                             for _ in range(3)]).astype(np.float32)
    t0 = time.perf_counter()
    index = WaveformIndex.build(library, n_threads=2)
    t1 = time.perf_counter()
    both = IndexWithCopies.build(index, copies, n_threads=2)
    t2 = time.perf_counter()
    print(f"build: library {t1 - t0:.1f} s, copies {t2 - t1:.1f} s (2 threads)")
    for name, ix in (("library (50,000)", index), ("library + 3 copies (200,000 waveforms)", both)):
        ix.query(queries[:2000], k=30, n_threads=2)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            ix.query(queries, k=30, n_threads=2)
            times.append(time.perf_counter() - t)
        print(f"{name}: {len(queries) / np.median(times):,.0f} queries/s (2 threads, median of 3)")


if __name__ == "__main__":
    main()
