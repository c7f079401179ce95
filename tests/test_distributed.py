"""The pipeline on Dask distributed: same outputs as a local run, a killed worker changes nothing,
the batch-scheduler cluster objects come from the config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import zarr

from crevkit.errors import ConfigError
from crevkit.pipeline.config import validate_config
from crevkit.pipeline.distributed import jobqueue_kwargs, make_executor

# several tasks per stage on the small scene (a few hundred tiles, ~170 shots)
OVERRIDES = {"som": {"rows": 8, "cols": 8, "epochs": 4}, "denoiser": {"steps": 100}, "match": {"k": 15},
             "cluster": {"tiles_per_task": 64, "shots_per_task": 48},
             "simulate": {"batch_size": 64}, "features": {"batch_size": 64}}

# outputs compared byte for byte (tables, rasters, arrays written by np.save / np.savez)
BYTE_IDENTICAL = ["tiles/index.parquet", "clusters/tile_labels.parquet", "results/shots.parquet",
                  "library/library.parquet", "features/features.parquet", "shots/denoised.npy",
                  "shots/denoised_max.npy", "results/blend_calibration.json",
                  "results/matches.npz", "som/som.npz", "som/bmu.npz"]


def _cluster(**kw):
    distributed = pytest.importorskip("distributed")
    return distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0",
                                    **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The small demo run locally, on a 2-process LocalCluster, and again with a worker killed mid-run."""
    pytest.importorskip("distributed")
    from crevkit.demo import run_demo

    root = tmp_path_factory.mktemp("dask")
    out = {}
    run_demo(root, small=True, config_overrides=OVERRIDES)
    out["local"] = root / "run-local"
    os.rename(root / "run", out["local"])
    with _cluster() as cluster:
        run_demo(root, small=True, config_overrides=OVERRIDES, scheduler=cluster.scheduler_address)
    out["dask"] = root / "run-dask"
    os.rename(root / "run", out["dask"])

    with _cluster() as cluster:
        from distributed import Client

        with Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
        killed: list[str] = []

        def killer():
            # kill a worker as soon as the denoise stage has written a first part: mid-stage
            deadline = time.time() + 600
            while time.time() < deadline and not killed:
                try:  # the parts folder comes and goes under us
                    parts = list((root / "run" / "_parts").glob("denoise-*/part-*.npy"))
                except OSError:
                    parts = []
                if parts:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(str(parts[0]))
                    return
                time.sleep(0.01)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        run_demo(root, small=True, config_overrides=OVERRIDES, scheduler=cluster.scheduler_address)
        thread.join(timeout=1)
    out["killed"] = root / "run-killed"
    out["kill_note"] = killed
    os.rename(root / "run", out["killed"])
    return out


def _same_outputs(a: Path, b: Path) -> None:
    for rel in BYTE_IDENTICAL:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for rel in ("library/waveforms.zarr", "features/features.zarr"):
        za, zb = zarr.open_array(str(a / rel), mode="r"), zarr.open_array(str(b / rel), mode="r")
        assert za.shape == zb.shape and za.chunks == zb.chunks, rel
        np.testing.assert_array_equal(za[:], zb[:], err_msg=rel)
    rasters = sorted(p.name for p in (a / "maps").glob("*.tif"))
    assert len(rasters) == 3 and rasters == sorted(p.name for p in (b / "maps").glob("*.tif"))
    for name in rasters:  # COGs: the same bytes, hence the same grid, tags and values
        assert (a / "maps" / name).read_bytes() == (b / "maps" / name).read_bytes(), name
        with rasterio.open(b / "maps" / name) as src:
            assert src.crs.to_epsg() == 3413 and np.isfinite(src.read(1)).any(), name
    assert not (b / "_parts").exists() or not any((b / "_parts").iterdir())
    for state in sorted((a / "state").glob("*.json")):  # the same found / done / skipped / failed per stage
        ca, cb = (json.loads(p.read_text())["counts"] for p in (state, b / "state" / state.name))
        assert {k: ca[k] for k in ("found", "done", "skipped", "failed")} == \
            {k: cb[k] for k in ("found", "done", "skipped", "failed")}, state.stem


def test_local_cluster_run_equals_local_run(runs):
    _same_outputs(runs["local"], runs["dask"])
    tasks = json.loads((runs["dask"] / "tasks.json").read_text())
    per_stage = {stage: info["tasks"] for stage, info in tasks.items()}
    # denoise.blend auto: the match stage matches both candidate blends, a task group each
    assert set(per_stage) == {"tile", "simulate", "denoise", "match", "match (max)", "features", "probability"}
    assert min(per_stage.values()) >= 2  # really split: several tasks per stage


def test_killed_worker_still_gives_identical_outputs(runs):
    assert runs["kill_note"], "the worker was never killed (no denoise part appeared)"
    _same_outputs(runs["local"], runs["killed"])


def test_scheduler_override_and_bad_address(tmp_path):
    pytest.importorskip("distributed")
    cfg = validate_config({"cluster": {"connect_timeout": "1s"}}, tmp_path)["cluster"]
    assert make_executor(cfg) is None  # local: nothing to start
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        make_executor(cfg, "tcp://127.0.0.1:9")


@pytest.mark.parametrize("kind, directive", [("slurm", "#SBATCH"), ("pbs", "#PBS")])
def test_jobqueue_cluster_from_config(tmp_path, kind, directive):
    pytest.importorskip("dask_jobqueue")
    from crevkit.pipeline.distributed import make_jobqueue_cluster

    cfg = validate_config({"cluster": {"scheduler": kind, "cores": 16, "processes": 4, "memory": "64GB",
                                       "walltime": "03:00:00", "queue": "glacier", "account": "ice123",
                                       "job_extra_directives": [f"{directive} --comment=crevkit"]}},
                          tmp_path)["cluster"]
    cluster = make_jobqueue_cluster(cfg)
    try:
        import dask_jobqueue

        expected = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
        assert type(cluster) is expected
        script = cluster.job_script()
        assert script.count(directive) >= 4
        assert "glacier" in script and "ice123" in script and "03:00:00" in script
        assert f"{directive} --comment=crevkit" in script
        assert "--nthreads 4" in script and "--nworkers 4" in script  # 16 cores over 4 processes
        assert "export OMP_NUM_THREADS=1" in script
        assert cluster.workers == {}  # nothing submitted until scaled
    finally:
        cluster.close()


def test_jobqueue_kwargs_without_optional_keys(tmp_path):
    cfg = validate_config({"cluster": {"scheduler": "slurm"}}, tmp_path)["cluster"]
    kw = jobqueue_kwargs(cfg)
    assert kw["cores"] == 8 and kw["processes"] == 8 and kw["memory"] == "32GB"
    assert "queue" not in kw and "account" not in kw


def test_cluster_section_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="cluster.shots_per_task"):
        validate_config({"cluster": {"shots_per_task": "many"}}, tmp_path)
    with pytest.raises(ConfigError, match="unknown key cluster.workers"):
        validate_config({"cluster": {"workers": 3}}, tmp_path)


def test_without_dask(tmp_path):
    """With dask and distributed unimportable, a local run works and a scheduler gives a clear error."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('dask', 'distributed', 'dask_jobqueue'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from crevkit.errors import ConfigError
from crevkit.pipeline import run_pipeline
from crevkit.pipeline.distributed import dask_available, make_executor
from crevkit.pipeline.config import validate_config
assert not dask_available()
cfg = validate_config({{}}, {str(tmp_path)!r})
assert make_executor(cfg['cluster']) is None
try:
    make_executor(cfg['cluster'], 'tcp://127.0.0.1:8786')
except ConfigError as exc:
    assert 'needs dask.distributed' in str(exc), exc
else:
    raise SystemExit('no error')
from crevkit.scenes import make_scene
make_scene(seed=1, length_m=400.0, width_m=300.0, n_frames=1).write_frames({str(tmp_path / "dem")!r})
tile, simulate = run_pipeline({{"run_dir": {str(tmp_path / "run")!r},
                                "dem": [{str(tmp_path / "dem" / "frame_*.tif")!r}]}}, until="simulate")
assert simulate.done == tile.done > 0, (tile, simulate)
import crevkit.cli
assert 'dask' not in sys.modules and 'distributed' not in sys.modules
print('ok')
"""
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")
