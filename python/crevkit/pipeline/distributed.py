"""Where the batch stages run: in this process, or on a Dask cluster.

``cluster.scheduler`` in the config (or ``crevkit run --scheduler``) picks it:

- ``local`` (default): every stage runs in this process, as before; Dask is
  not imported and need not be installed.
- a scheduler address (``tcp://host:8786``): the batch stages are cut into
  tasks of ``cluster.tiles_per_task`` tiles or ``cluster.shots_per_task``
  shots (a DEM frame per task for tiling) and sent to that cluster.
- ``slurm`` / ``pbs``: a dask-jobqueue cluster is built from the ``cluster``
  section (:func:`make_jobqueue_cluster`) and scaled to ``cluster.jobs`` jobs.

Each task writes only its own part file, atomically (write to a temporary
name, then rename), and returns a few counts; a task that a killed worker
retries rewrites the same part with the same bytes.  The client then
assembles the parts into the stage's usual output, streaming one part at a
time, so the outputs (and every later stage) are the ones a local run
writes.  Global steps (index build, denoiser training, SOM, OPTICS, labels,
maps, report) run once, on the client.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError

__all__ = ["dask_available", "make_executor", "make_jobqueue_cluster", "DaskExecutor", "jobqueue_kwargs"]

log = logging.getLogger("crevkit.pipeline")

LOCAL = "local"
JOBQUEUE = ("slurm", "pbs")


def dask_available() -> bool:
    """Whether ``dask.distributed`` can be imported (the optional ``crevkit[dask]`` extra)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def _require_dask(what: str) -> None:
    if not dask_available():
        raise ConfigError(f"{what}: needs dask.distributed (pip install 'crevkit[dask]'); "
                          "use cluster.scheduler: local to run in this process")


def jobqueue_kwargs(cluster_cfg: dict) -> dict:
    """The keyword arguments handed to ``dask_jobqueue.SLURMCluster`` / ``PBSCluster``."""
    kw: dict[str, Any] = {
        "cores": cluster_cfg["cores"],
        "processes": cluster_cfg["processes"],
        "memory": cluster_cfg["memory"],
        "walltime": cluster_cfg["walltime"],
        "job_extra_directives": list(cluster_cfg["job_extra_directives"]),
        # one thread per kernel call: the worker's processes are the parallelism
        "job_script_prologue": [f"export OMP_NUM_THREADS={cluster_cfg['task_threads']}",
                                "export OMP_WAIT_POLICY=PASSIVE"],
    }
    for key in ("queue", "account", "interface", "local_directory", "log_directory"):
        if cluster_cfg.get(key):
            kw[key] = cluster_cfg[key]
    return kw


def make_jobqueue_cluster(cluster_cfg: dict):
    """Build (not scale) the dask-jobqueue cluster object that ``cluster.scheduler`` names.

    Parameters
    ----------
    cluster_cfg : dict
        The validated ``cluster`` section; ``scheduler`` is ``slurm`` or ``pbs``.

    Returns
    -------
    dask_jobqueue.SLURMCluster or dask_jobqueue.PBSCluster
        Not yet scaled: no job is submitted until ``.scale(jobs=...)``.
    """
    kind = cluster_cfg["scheduler"]
    if kind not in JOBQUEUE:
        raise ConfigError(f"config: cluster.scheduler {kind!r} is not a batch scheduler ({', '.join(JOBQUEUE)})")
    _require_dask(f"cluster.scheduler: {kind}")
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(f"cluster.scheduler: {kind} needs dask-jobqueue (pip install dask-jobqueue)") from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    return cls(**jobqueue_kwargs(cluster_cfg))


class DaskExecutor:
    """Runs batch tasks on a ``distributed.Client``; reports progress; retries lost tasks.

    Parameters
    ----------
    client : distributed.Client
    retries : int
        Times a task that raised is resubmitted.  Tasks lost with a killed
        worker are rescheduled by the scheduler itself (up to its
        ``allowed-failures``).
    task_threads : int
        OpenMP / torch threads each task uses.
    owned : list
        Objects (cluster, client) closed by :meth:`close`.
    """

    def __init__(self, client: Any, *, retries: int = 3, task_threads: int = 1, owned: Sequence[Any] = ()):
        self.client = client
        self.retries = retries
        self.task_threads = task_threads
        self._owned = list(owned)
        self.task_log: list[dict] = []  # per stage: tasks, seconds, biggest task
        link = getattr(client, "dashboard_link", None)
        log.info("dask: %s (dashboard: %s)", client.scheduler.address if client.scheduler else client, link)
        print(f"crevkit: running on Dask {client.scheduler.address}; dashboard: {link}", flush=True)

    def map(self, fn: Callable[..., dict], tasks: Sequence[dict], *, desc: str, size_key: str = "n") -> list[dict]:
        """Run ``fn(**task)`` for every task; return their (small) results in task order."""
        from distributed import as_completed

        from .._progress import progress

        if not tasks:
            return []
        t0 = time.perf_counter()
        token = f"{desc}-{os.getpid()}-{time.time_ns()}"
        futures = self.client.map(_call, [fn] * len(tasks), tasks, key=[f"crevkit-{token}-{i}" for i in range(len(tasks))],
                                  retries=self.retries, pure=False)
        order = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(tasks)
        try:
            for fut in progress(as_completed(futures), desc=desc, total=len(futures), unit="task"):
                results[order[fut.key]] = fut.result()
        finally:
            for fut in futures:
                fut.release()
        sizes = [int(t.get(size_key, 0)) for t in tasks]
        self.task_log.append({"stage": desc, "tasks": len(tasks), "largest_task": max(sizes),
                              "seconds": round(time.perf_counter() - t0, 2)})
        return results

    def close(self) -> None:
        for obj in reversed(self._owned):
            try:
                obj.close()
            except Exception:  # pragma: no cover - best effort on shutdown
                log.debug("closing %r failed", obj, exc_info=True)


def _call(fn: Callable[..., dict], task: dict) -> dict:
    return fn(**task)


def make_executor(cluster_cfg: dict, scheduler: str | None = None) -> DaskExecutor | None:
    """The executor ``cluster.scheduler`` (or the ``scheduler`` override) names; None for ``local``."""
    kind = scheduler if scheduler is not None else cluster_cfg["scheduler"]
    if kind in (None, "", LOCAL):
        return None
    _require_dask(f"cluster.scheduler: {kind}")
    from distributed import Client

    cfg = dict(cluster_cfg, scheduler=kind)
    owned: list[Any] = []
    if kind in JOBQUEUE:
        cluster = make_jobqueue_cluster(cfg)
        owned.append(cluster)
        cluster.scale(jobs=cfg["jobs"])
        client = Client(cluster)
    else:
        try:
            client = Client(kind, timeout=cfg["connect_timeout"])
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cluster.scheduler: cannot reach the Dask scheduler at {kind} ({exc})") from None
    owned.append(client)
    return DaskExecutor(client, retries=cfg["retries"], task_threads=cfg["task_threads"], owned=owned)


# ------------------------------------------------------------------ parts

def part_dir(run_path: Path, stage: str, key: str) -> Path:
    """``run/_parts/<stage>-<key>``: this stage key's part files (older keys' parts are removed)."""
    root = run_path / "_parts"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{stage}-*"):
        if old.name != f"{stage}-{key[:16]}":
            shutil.rmtree(old, ignore_errors=True)
    path = root / f"{stage}-{key[:16]}"
    path.mkdir(exist_ok=True)
    return path


def remove_parts(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
