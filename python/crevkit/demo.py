"""The built-in demo: a synthetic scene, two campaigns, the whole pipeline, a report.

``crevkit demo`` (and ``make demo``) makes a crevassed glacier scene with
truth, the same scene a few years later with crevassing changed, synthetic
GLAS shots (GLAH01 layout) for both campaigns, runs the pipeline up to the
tiles, labels 300 tiles from the truth (standing in for a person labelling
a few hundred), and runs the rest: maps, change map, report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["prepare_demo", "run_demo", "labels_from_truth"]

log = logging.getLogger("crevkit.demo")

DEMO_SCENE = dict(length_m=6_000.0, width_m=1_200.0, n_frames=8, crevasse_density=0.35)
SMALL_SCENE = dict(length_m=1_600.0, width_m=700.0, n_frames=3, crevasse_density=0.5)


def prepare_demo(root: str | Path, *, seed: int = 0, years: tuple[int, int] = (2004, 2007), n_tracks: int = 12,
                 small: bool = False, config_overrides: dict[str, Any] | None = None) -> Path:
    """Write the demo's inputs and config under ``root``; returns the config path."""
    import yaml

    from ._atomic import atomic_write_text
    from .scenes import make_scene
    from .synth_shots import synthesize_shots

    root = Path(root)
    inputs = root / "inputs"
    params = SMALL_SCENE if small else DEMO_SCENE
    for epoch, year in enumerate(years):
        scene = make_scene(seed=seed, epoch=epoch, **params)
        dem_dir = inputs / f"dem_{year}"
        if not (dem_dir / ".done").exists():
            scene.write_frames(dem_dir)
            (dem_dir / ".done").write_text("ok\n")
        shot_dir = inputs / f"shots_{year}"
        if not (shot_dir / ".done").exists():
            synthesize_shots(scene, shot_dir, n_tracks=n_tracks,
                             seed=seed + epoch, year=year)
            (shot_dir / ".done").write_text("ok\n")
    config = {
        "run_dir": "run",
        "seed": seed,
        "instrument": "glas",
        "dem": [f"inputs/dem_{y}/frame_[0-9][0-9][0-9].tif" for y in years],
        "shots": [f"inputs/shots_{y}/*GLAH01*.H5" for y in years],
        "geolocation": [f"inputs/shots_{y}/*GLAH06*.H5" for y in years],
        "truth": "inputs",
        "som": {"rows": 12 if small else 20, "cols": 12 if small else 20, "epochs": 10},
        "map": {"cell_size": 250.0, "min_shots": 2},
        "denoiser": {"steps": 300 if small else 1500},
    }
    for key, value in (config_overrides or {}).items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    path = root / "crevkit.yaml"
    atomic_write_text(path, "# crevkit demo configuration (written by crevkit demo)\n" + yaml.safe_dump(config, sort_keys=False))
    return path


def labels_from_truth(store_dir: str | Path, out_csv: str | Path, *, n: int = 300, seed: int = 0,
                      threshold: float = 0.05) -> Path:
    """Label ``n`` random tiles from the scene truth (``tile_id,label``), like a person would."""
    import pandas as pd

    from ._atomic import atomic_path
    from .tiles import TileStore

    index = TileStore(store_dir).index
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(index), size=min(n, len(index)), replace=False)
    truth = index["truth_crevassed_fraction"].to_numpy()[rows]
    labels = np.where(truth >= threshold, "crevasse", "other")
    with atomic_path(out_csv, suffix=".csv") as tmp:
        pd.DataFrame({"tile_id": index["tile_id"].to_numpy()[rows], "label": labels}).to_csv(tmp, index=False)
    return Path(out_csv)


def run_demo(root: str | Path = "demo-run", *, seed: int = 0, small: bool = False,
             config_overrides: dict[str, Any] | None = None, scheduler: str | None = None) -> Path:
    """Prepare and run the demo; returns the report's path.

    ``scheduler`` overrides ``cluster.scheduler`` (a Dask scheduler address
    runs the batch stages there; the outputs are the same).
    """
    import yaml

    from ._atomic import atomic_write_text
    from .pipeline import run_pipeline

    root = Path(root)
    config_path = prepare_demo(root, seed=seed, small=small, config_overrides=config_overrides)
    run_pipeline(config_path, until="tile", scheduler=scheduler)
    labels = labels_from_truth(root / "run" / "tiles", root / "inputs" / "labels.csv", seed=seed)
    config = yaml.safe_load(config_path.read_text())
    config["labels"] = str(labels.relative_to(root))
    atomic_write_text(config_path, "# crevkit demo configuration (written by crevkit demo)\n" + yaml.safe_dump(config, sort_keys=False))
    run_pipeline(config_path, scheduler=scheduler)
    return root / "run" / "report" / "index.html"
