"""Run configuration: a YAML file validated against a schema.

Unknown keys, wrong types and missing input files are refused with a
one-line :class:`crevkit.ConfigError` naming the key or path.  Paths and
globs are relative to the config file's folder.  ``crevkit init`` writes
:func:`template` — every key with its default and a comment.

Note: the OPTICS stage's section is ``clustering:``; ``cluster:`` is
reserved for where the stages run (local or a Dask scheduler).
"""

from __future__ import annotations

import copy
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["Key", "SCHEMA", "load_config", "validate_config", "template", "resolve_inputs"]


@dataclass(frozen=True)
class Key:
    types: tuple[type, ...]
    default: Any
    doc: str
    choices: tuple | None = None
    items: tuple[type, ...] | None = None  # a list's element types (numbers: > 0)


def _k(types, default, doc, choices=None, items=None) -> Key:
    return Key(types if isinstance(types, tuple) else (types,), default, doc, choices, items)


NUM = (int, float)
OPT_INT = (int, type(None))
OPT_STR = (str, type(None))

# section -> key -> Key ; top-level scalars live under "" .
SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "run_dir": _k(str, "run", "run directory (relative to this file)"),
        "seed": _k(int, 0, "master seed: every stage derives its own from it"),
        "instrument": _k(str, "glas", "forward-model preset", ("glas", "lvis", "gedi")),
        "dem": _k(list, [], "DEM GeoTIFF files or globs"),
        "shots": _k(list, [], "waveform files or globs (GLAH01 .H5, LVIS .pls, GEDI L1B .h5, shot tables)"),
        "geolocation": _k(list, [], "GLAH06/12/14 files or globs with precise 40 Hz positions (optional)"),
        "labels": _k(OPT_STR, None, "labels CSV (cluster_id,label or tile_id,label); empty: stop after the label kit"),
        "truth": _k(OPT_STR, None, "optional truth folder (synthetic scenes) for the evaluation table"),
        "n_threads": _k(OPT_INT, None, "threads for the kernels (default: all cores)"),
    },
    "cluster": {
        "scheduler": _k(str, "local", "'local' (this process), a Dask scheduler address (tcp://host:8786), 'slurm' or 'pbs'"),
        "tiles_per_task": _k(int, 2048, "tiles per Dask task (simulate, features)"),
        "shots_per_task": _k(int, 8192, "shots per Dask task (denoise, match)"),
        "task_threads": _k(int, 1, "OpenMP / torch threads per Dask task (worker processes are the parallelism)"),
        "retries": _k(int, 3, "times a failed Dask task is resubmitted"),
        "connect_timeout": _k(str, "30s", "how long to wait for a Dask scheduler address"),
        "jobs": _k(int, 1, "slurm/pbs: batch jobs to start (each a set of workers)"),
        "cores": _k(int, 8, "slurm/pbs: cores per job"),
        "processes": _k(int, 8, "slurm/pbs: worker processes per job"),
        "memory": _k(str, "32GB", "slurm/pbs: memory per job"),
        "walltime": _k(str, "02:00:00", "slurm/pbs: job walltime"),
        "queue": _k(OPT_STR, None, "slurm partition / pbs queue"),
        "account": _k(OPT_STR, None, "slurm/pbs account to charge"),
        "interface": _k(OPT_STR, None, "network interface the workers use (e.g. ib0)"),
        "local_directory": _k(OPT_STR, None, "workers' scratch folder"),
        "log_directory": _k(OPT_STR, None, "folder for the jobs' logs"),
        "job_extra_directives": _k(list, [], "extra #SBATCH / #PBS lines"),
    },
    "tile": {
        "resolution": _k(NUM, 0.5, "target pixel size (m)"),
        "tile_size_m": _k(NUM, 100.0, "tile edge (m)"),
        "crs": _k(OPT_STR, "EPSG:3413", "run CRS; frames in another CRS are refused unless reproject"),
        "reproject": _k(bool, False, "reproject frames in another CRS instead of refusing them"),
        "batch_size": _k(int, 512, "tiles per written batch"),
    },
    "simulate": {
        "batch_size": _k(int, 4096, "tiles per forward-model batch"),
        "incidence_weighting": _k(bool, False, "cos-incidence weighting from DEM gradients"),
        "off_nadir_angle": _k(NUM, 0.0, "off-nadir pointing (degrees), as a range tilt"),
    },
    "index": {
        "transform": _k(str, "sqrt", "matching space", ("sqrt", "linear")),
        "alignment": _k(str, "centroid", "canonical alignment of library and queries", ("centroid", "leading_edge", "none")),
        "M": _k(int, 16, "HNSW graph degree"),
        "ef_construction": _k(int, 200, "HNSW build beam"),
        "ef": _k(int, 32, "HNSW query beam"),
        "rerank": _k(int, 32, "candidates re-ranked exactly in full dimension"),
        "deterministic": _k(bool, True, "one-thread graph build: the same graph, hence the same matches, every run "
                            "(false: all threads, about twice as fast, matches may differ between runs)"),
    },
    "noise_model": {
        "max_vectors": _k(int, 200000, "noise vectors kept in the pool"),
    },
    "denoiser": {
        "enabled": _k(bool, True, "train and apply the learned denoiser (false: classical smoothing)"),
        "steps": _k(int, 1500, "training steps"),
        "batch_size": _k(int, 256, "training batch size"),
        "neighbour_weight": _k((int, float), 0.0, "weight of the label-free neighbourhood term (crevkit.denoise."
                                                  "Denoiser, whose own default is 0.004: +1 point of SNR >= 20 "
                                                  "retrieval on the benchmark, but no gain on the default scene)"),
    },
    "denoise": {  # inference only: changing it does not retrain the denoiser
        "blend": _k((str, bool), "auto", "how the network's output is mixed with a noise-floored matched filter "
                                         "(crevkit.denoise.blend_with_classical): floor, max (keeps the network's "
                                         "weak tail), none, or auto: the one whose matches best recover the "
                                         "labelled tiles' labels (crevkit.blend_calibration; true = floor, "
                                         "false = none)",
                    ("auto", "floor", "max", "none", True, False)),
    },
    "match": {
        "k": _k(int, 30, "matches per shot"),
        "library_copies": _k(list, [14.0, 30.0, 70.0], "peak SNRs of noisy copies of the library, denoised as the "
                             "shots are and matched beside it, like with like (crevkit.denoise.noisy_library_copies; "
                             "benchmark: +1 point of SNR >= 20 retrieval); [] = the clean library only", items=NUM),
        "batch_size": _k(int, 8192, "shots per query batch"),
    },
    "features": {
        "keep": _k((int, float), 0.25, "DCT coefficients kept: a count or a fraction of the normalized tile"),
        "tolerance": _k((int, float, type(None)), None, "instead of keep: the fewest coefficients whose RMS error is under this (m)"),
        "batch_size": _k(int, 512, "tiles per batch"),
    },
    "som": {
        "rows": _k(int, 20, "map rows"),
        "cols": _k(int, 20, "map columns"),
        "epochs": _k(int, 10, "batch epochs"),
        "topology": _k(str, "hexagonal", "node grid", ("rectangular", "hexagonal")),
    },
    "clustering": {
        "min_samples": _k(int, 2, "OPTICS min_samples (over map nodes)"),
        "xi": _k(NUM, 0.02, "OPTICS xi (steepness that ends a cluster)"),
        "use": _k(str, "codebook", "what OPTICS sees", ("codebook", "positions", "both")),
    },
    "label": {
        "per_cluster": _k(int, 16, "tiles per cluster mosaic"),
        "suggest": _k(bool, True, "pre-fill the template with a rule-based suggestion"),
    },
    "probability": {
        "weighting": _k(str, "inverse_distance", "vote weighting", ("uniform", "inverse_distance", "softmax")),
        "snr_half": _k(NUM, 20.0, "shot SNR at which its matches and the labelled tiles' base rate weigh the same "
                                  "(weak shots pulled toward the prior; 0: off)"),
        "neighbour_radius": _k(NUM, 250.0, "spatial prior: a shot's prior is the reliability-weighted mean share of "
                                           "the other shots of its map period within this distance (m, x/y), "
                                           "with the base rate as prior_weight shots; 0: the global base rate"),
        "prior_weight": _k(NUM, 0.5, "weight of the labelled tiles' base rate in the spatial prior, in shots"),
        "neighbour_kernel": _k(str, "gaussian", "neighbour weight by distance d: flat (1) or gaussian "
                                            "(exp(-d^2 / (2 (R/2)^2)), cut at neighbour_radius)",
                               ("flat", "gaussian")),
    },
    "map": {
        "cell_size": _k(NUM, 1000.0, "raster cell (m)"),
        "period": _k(str, "year", "map period", ("year", "season")),
        "min_shots": _k(int, 3, "cells with fewer shots are masked in the change rasters"),
    },
    "report": {},
}

PATH_KEYS = ("dem", "shots", "geolocation")


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list",
             type(None): "empty"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check(section: str, key: str, value: Any, spec: Key) -> Any:
    where = f"{section}.{key}" if section else key
    if isinstance(value, bool) and bool not in spec.types:
        raise ConfigError(f"config: {where} must be {_type_name(spec.types)}, got {value!r}")
    if list in spec.types and isinstance(value, str):
        value = [value]
    if not isinstance(value, spec.types):
        raise ConfigError(f"config: {where} must be {_type_name(spec.types)}, got {value!r}")
    if spec.items is not None:
        for item in value:
            if isinstance(item, bool) or not isinstance(item, spec.items) or (isinstance(item, (int, float))
                                                                             and not 0 < item < float("inf")):
                raise ConfigError(f"config: {where} must be a list of {_type_name(spec.items)}s > 0, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"config: {where} must be one of {list(spec.choices)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("seed",) and value < 0:
        raise ConfigError(f"config: {where} must be >= 0, got {value!r}")
    return value


def validate_config(raw: dict | None, base_dir: str | os.PathLike = ".") -> dict:
    """Fill defaults, check keys and types; return the resolved config (paths absolute)."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError("config: the file must hold a mapping of keys to values")
    out: dict[str, Any] = {}
    for key, spec in SCHEMA[""].items():
        out[key] = copy.deepcopy(spec.default)
    for section, keys in SCHEMA.items():
        if section:
            out[section] = {k: copy.deepcopy(s.default) for k, s in keys.items()}
    for key, value in raw.items():
        if key in SCHEMA[""]:
            out[key] = _check("", key, value, SCHEMA[""][key])
        elif key in SCHEMA:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config: {key} must be a section (a mapping), got {value!r}")
            for sub, subvalue in value.items():
                if sub not in SCHEMA[key]:
                    valid = ", ".join(SCHEMA[key]) or "none"
                    raise ConfigError(f"config: unknown key {key}.{sub} (valid: {valid})")
                out[key][sub] = _check(key, sub, subvalue, SCHEMA[key][sub])
        else:
            raise ConfigError(f"config: unknown key {key!r} (valid: {', '.join(k for k in SCHEMA[''])}, "
                              f"and sections {', '.join(s for s in SCHEMA if s)})")
    base = Path(base_dir)
    out["run_dir"] = str((base / out["run_dir"]).resolve())
    for key in ("labels", "truth"):
        if out[key]:
            path = (base / out[key]).resolve()
            if not path.exists():
                raise ConfigError(f"config: {key}: {path} does not exist")
            out[key] = str(path)
    for key in PATH_KEYS:
        out[key] = [str(p) for p in resolve_inputs(out[key], base, key)]
    return out


def resolve_inputs(patterns: list[str], base: Path, key: str) -> list[Path]:
    """Expand globs relative to ``base``; a pattern that matches nothing is an error."""
    files: list[Path] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(f"config: {key} entries must be strings, got {pattern!r}")
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            raise ConfigError(f"config: {key}: no file matches {full}")
        files += [Path(m).resolve() for m in matches]
    return files


def load_config(path: str | os.PathLike) -> dict:
    """Read and validate a YAML config file."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config: {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise ConfigError(f"config: {path} is not valid YAML" + (f" (line {line + 1})" if line is not None else "")) from None
    return validate_config(raw, path.parent)


def template() -> str:
    """A commented config with every key at its default."""
    import yaml

    lines = ["# crevkit run configuration (crevkit run THIS_FILE). Paths are relative to this file.", ""]
    for key, spec in SCHEMA[""].items():
        lines.append(f"# {spec.doc}" + (f" ({', '.join(spec.choices)})" if spec.choices else ""))
        lines.append(yaml.safe_dump({key: spec.default}, default_flow_style=True).strip().strip("{}"))
    for section, keys in SCHEMA.items():
        if not section:
            continue
        lines += ["", f"{section}:"]
        for key, spec in keys.items():
            lines.append(f"  # {spec.doc}" + (f" ({', '.join(map(str, spec.choices))})" if spec.choices else ""))
            lines.append("  " + yaml.safe_dump({key: spec.default}, default_flow_style=True).strip().strip("{}"))
        if not keys:
            lines[-1] = f"{section}: {{}}"
    return "\n".join(lines) + "\n"
