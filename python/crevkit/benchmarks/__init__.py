"""Benchmarks, shipped so that ``crevkit bench`` works after installation.

Each module ``crevkit.benchmarks.<area>`` has ``run(quick: bool = False) -> str``
returning a markdown section (a table plus the conditions: data, threads,
library versions, medians).  :func:`run_all` runs them in one process, one
after the other, and prefixes a header describing the machine.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import time

__all__ = ["AREAS", "run_all", "machine_header", "median_time"]

# in pipeline order
AREAS = ["forward", "tiles", "readers", "index", "denoise", "features", "som", "distributed"]


def median_time(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def machine_header(command: str) -> str:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from .. import __version__, _core

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return "\n".join([
        "# crevkit benchmark results",
        "",
        f"Produced by `{command}` on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- machine: {cpu}, {os.cpu_count()} logical cores, load average at start {load[0]:.2f}",
        f"- crevkit {__version__} (OpenMP: {_core._has_openmp}), Python {platform.python_version()}, NumPy {np.__version__}",
        "- times are medians of repeated runs in one process; throughput = items / median wall time",
        "",
    ])


def run_all(areas: list[str] | None = None, quick: bool = False, command: str = "crevkit bench") -> str:
    """Run the benchmarks of ``areas`` (default: all available) and return markdown."""
    parts = [machine_header(command)]
    for area in areas or AREAS:
        try:
            module = importlib.import_module(f"{__name__}.{area}")
        except ImportError as exc:
            parts.append(f"## {area}\n\nnot available in this build ({exc}).\n")
            continue
        t0 = time.perf_counter()
        parts.append(module.run(quick=quick).rstrip() + f"\n\n(section took {time.perf_counter() - t0:.0f} s)\n")
    return "\n".join(parts)
