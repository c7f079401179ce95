"""Run the pipeline's stages in order, skipping the ones that are complete.

A stage is a function ``fn(ctx) -> StageCounts`` with the config sections it
reads, the inputs it hashes and the outputs it writes (relative to the run
directory).  Its key hashes its settings, its inputs and the keys of every
stage before it, so a changed setting recomputes that stage and everything
after it, and an interrupted run resumes at the first incomplete stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._atomic import atomic_write_text
from .._progress import StageCounts
from ..errors import ConfigError
from .config import load_config, validate_config
from .rundir import RunDir, hash_files, hash_json

__all__ = ["Stage", "Context", "run_pipeline", "stage_names"]

log = logging.getLogger("crevkit.pipeline")


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[["Context"], StageCounts]
    sections: tuple[str, ...] = ()  # config sections (and top-level keys) it reads
    inputs: tuple[str, ...] = ()  # top-level path keys whose files it hashes
    outputs: tuple[str, ...] = ()  # paths relative to the run directory


@dataclasses.dataclass
class Context:
    config: dict
    run: RunDir
    stage: str
    stage_index: int
    keys: dict[str, str]
    executor: Any = None  # a DaskExecutor, or None to run every stage in this process

    def seed(self, *extra: int) -> int:
        """A seed for this stage derived from the master seed: [seed, stage index, *extra]."""
        return int(np.random.SeedSequence([self.config["seed"], self.stage_index, *extra]).generate_state(1)[0])

    def section(self, name: str) -> dict:
        return self.config[name]

    def path(self, relative: str) -> Path:
        return self.run.path / relative

    @property
    def n_threads(self) -> int | None:
        return self.config["n_threads"]


def _stages() -> list[Stage]:
    from .stages import STAGES

    return STAGES


def stage_names() -> list[str]:
    return [s.name for s in _stages()]





def run_pipeline(config: str | Path | dict, *, from_stage: str | None = None, until: str | None = None,
                 force: bool = False, base_dir: str | Path = ".", stages: list[Stage] | None = None,
                 scheduler: str | None = None) -> list[StageCounts]:
    """Run (or resume) the pipeline.

    Parameters
    ----------
    config : path or dict
        A YAML config file, or an already-loaded mapping (validated here).
    from_stage : str, optional
        Recompute from this stage on (earlier complete stages are kept).
    until : str, optional
        Stop after this stage.
    force : bool
        Recompute every stage.
    stages : list of Stage, optional
        The stages to run (default: the pipeline's).
    scheduler : str, optional
        Overrides ``cluster.scheduler``: ``local``, a Dask scheduler address,
        ``slurm`` or ``pbs`` (:mod:`crevkit.pipeline.distributed`).  The
        outputs do not depend on it.

    Returns
    -------
    list of StageCounts, one per stage considered (skipped stages included).
    """
    cfg = load_config(config) if isinstance(config, (str, Path)) else validate_config(config, base_dir)
    stages = _stages() if stages is None else stages
    names = [s.name for s in stages]
    for flag, value in (("--from", from_stage), ("--until", until)):
        if value is not None and value not in names:
            raise ConfigError(f"{flag}: unknown stage {value!r} (stages: {', '.join(names)})")
    start = names.index(from_stage) if from_stage else 0
    stop = names.index(until) if until else len(names) - 1
    run = RunDir(cfg["run_dir"])
    results: list[StageCounts] = []
    with run.lock(), _executor(cfg["cluster"], scheduler) as executor:
        input_hashes = {key: hash_files(cfg[key]) for key in ("dem", "shots", "geolocation")}
        for key in ("labels",):
            input_hashes[key] = hash_files([cfg[key]]) if cfg[key] else None
        run.write_provenance(cfg, input_hashes, {"seed": cfg["seed"]})
        keys: dict[str, str] = {}
        previous = ""
        upstream_ran = False  # once a stage reruns, every later stage reruns on its fresh output
        for index, stage in enumerate(stages):
            if index > stop:
                break
            settings = {s: cfg[s] for s in stage.sections}
            key = hash_json({"stage": stage.name, "settings": settings, "seed": cfg["seed"],
                             "instrument": cfg["instrument"],
                             "inputs": {i: input_hashes[i] for i in stage.inputs}, "previous": previous})
            keys[stage.name] = key
            previous = key
            recompute = force or upstream_ran or (from_stage is not None and index >= start)
            if not recompute and run.is_complete(stage.name, key, stage.outputs):
                state = run.read_state(stage.name) or {}
                counts = StageCounts(stage.name, **{k: state.get("counts", {}).get(k, 0)
                                                    for k in ("found", "done", "skipped", "failed")})
                counts.extra["status"] = "complete, skipped"
                log.info("%s: complete, skipped", stage.name)
                results.append(counts)
                continue
            run.invalidate(stage.name)
            upstream_ran = True
            t0 = time.perf_counter()
            log.info("%s: running", stage.name)
            counts = stage.fn(Context(cfg, run, stage.name, index, keys, executor))
            counts.extra["seconds"] = round(time.perf_counter() - t0, 1)
            run.mark_complete(stage.name, key, stage.outputs, counts.as_dict())
            log.info(counts.line())
            results.append(counts)
        if executor is not None:
            _record_tasks(run.path / "tasks.json", executor.task_log)
    return results


def _record_tasks(path: Path, task_log: list[dict]) -> None:
    """``run/tasks.json``: per stage, the Dask tasks of its latest run (count, largest, seconds)."""
    tasks = json.loads(path.read_text()) if path.exists() else {}
    for entry in task_log:
        tasks[entry["stage"]] = {k: v for k, v in entry.items() if k != "stage"}
    atomic_write_text(path, json.dumps(tasks, indent=2) + "\n")


@contextlib.contextmanager
def _executor(cluster_cfg: dict, scheduler: str | None):
    from .distributed import make_executor

    executor = make_executor(cluster_cfg, scheduler)
    try:
        yield executor
    finally:
        if executor is not None:
            executor.close()
