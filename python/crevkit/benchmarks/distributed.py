"""The pipeline locally vs on a 2-process Dask LocalCluster: wall time, per-stage tasks, same outputs.

On a 2-core machine only the overhead is measurable (the cluster's workers
share the same two cores the local run uses through OpenMP).  Both runs use
the same inputs and config; the second also checks that every output is
byte-identical to the first.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["run", "compare_runs"]

COMPARED = ["tiles/index.parquet", "library/library.json", "features/features.parquet", "shots/denoised.npy",
            "results/matches.npz", "results/shots.parquet", "maps/crevasse_probability_2004.tif",
            "maps/crevasse_probability_2007.tif", "maps/change_2004_2007.tif"]


def compare_runs(a: Path, b: Path) -> list[str]:
    """The outputs in :data:`COMPARED` whose bytes differ between two run directories."""
    return [rel for rel in COMPARED if (a / rel).read_bytes() != (b / rel).read_bytes()]


def _timed_run(root: Path, scheduler: str | None, overrides: dict, small: bool) -> tuple[float, dict]:
    """Wall seconds of :func:`crevkit.demo.run_demo` (inputs already prepared) and each stage's seconds."""
    from ..demo import run_demo
    from ..pipeline import stage_names
    from ..pipeline.rundir import RunDir

    t0 = time.perf_counter()
    run_demo(root, small=small, config_overrides=overrides, scheduler=scheduler)
    wall = time.perf_counter() - t0
    run = RunDir(root / "run")
    return wall, {name: run.read_state(name)["counts"].get("seconds", 0.0) for name in stage_names()}


def run(quick: bool = False, small: bool | None = None) -> str:
    """Markdown section: local vs LocalCluster(n_workers=2, processes=True) on the demo scene."""
    from distributed import LocalCluster

    from ..demo import prepare_demo

    small = quick if small is None else small
    overrides = {"cluster": {"tiles_per_task": 256, "shots_per_task": 2048}}
    root = Path(tempfile.mkdtemp(prefix="crevkit-bench-dask-"))
    try:
        prepare_demo(root, small=small, config_overrides=overrides)  # the scene once, outside the timings
        wall_local, st_local = _timed_run(root, None, overrides, small)
        os.rename(root / "run", root / "run-local")
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster:
            wall_dask, st_dask = _timed_run(root, cluster.scheduler_address, overrides, small)
        tasks = json.loads((root / "run" / "tasks.json").read_text())
        differ = compare_runs(root / "run-local", root / "run")
        metrics = json.loads((root / "run-local" / "report" / "metrics.json").read_text())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    scene = "small test scene" if small else "default demo scene"
    lines = [f"## Dask LocalCluster vs local ({scene})", "",
             "| stage | local s | LocalCluster s | tasks | largest task |", "|---|---:|---:|---:|---:|"]
    for name in st_local:
        t = tasks.get(name, {})
        unit = "frame" if name == "tile" else ("tiles" if name in ("simulate", "features") else "shots")
        lines.append(f"| {name} | {st_local[name]:.1f} | {st_dask.get(name, float('nan')):.1f} | "
                     f"{t.get('tasks', '–')} | {str(t.get('largest_task', '–')) + ' ' + unit if t else 'client'} |")
    over = (wall_dask / wall_local - 1) * 100
    lines += ["", f"- whole run: local {wall_local:.1f} s, LocalCluster(n_workers=2, processes=True, threads_per_worker=1) "
              f"{wall_dask:.1f} s: overhead {over:+.0f}%",
              f"- outputs byte-identical: {'yes' if not differ else 'NO: ' + ', '.join(differ)} ({len(COMPARED)} files compared)",
              f"- task sizes: cluster.tiles_per_task={overrides['cluster']['tiles_per_task']}, "
              f"shots_per_task={overrides['cluster']['shots_per_task']}; kernels in tasks use 1 thread, "
              "the local run uses both cores in every kernel",
              f"- load average at the end: {os.getloadavg()[0]:.2f}",
              f"- the run's own evaluation (report/metrics.json, {metrics['shots_evaluated']} shots with truth): "
              f"AUC {metrics['auc']:.3f} (Brier {metrics['brier']:.3f}) on noisy shots, {metrics['auc_clean']:.3f} "
              f"(Brier {metrics['brier_clean']:.3f}) with clean waveforms; cluster purity {metrics['cluster_purity']:.2f} "
              f"({metrics['n_clusters']} clusters); change map on {metrics['change']['n_cells']} cells: accuracy "
              f"{metrics['change']['accuracy']:.2f}, appeared recall {metrics['change']['appeared_recall']:.2f}, "
              f"vanished recall {metrics['change']['vanished_recall']:.2f}",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m crevkit.benchmarks.distributed [--small]
    import sys

    print(run(small="--small" in sys.argv))
