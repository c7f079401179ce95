"""``crevkit som``: .npy / Zarr in, map + per-sample BMU table out."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import crevkit


def _import_cli(monkeypatch):
    cli_dir = Path(crevkit.__file__).parent / "cli"
    for name in ("simulate", "bench"):
        if not (cli_dir / f"{name}.py").exists():
            monkeypatch.setitem(sys.modules, f"crevkit.cli.{name}", types.ModuleType(f"crevkit.cli.{name}"))
    return importlib.import_module("crevkit.cli").main


def test_som_command_npy_and_zarr(tmp_path, monkeypatch):
    main = _import_cli(monkeypatch)
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(120, 6)) + rng.integers(0, 3, 120)[:, None] * 4).astype(np.float32)
    np.save(tmp_path / "f.npy", X)
    runner = CliRunner()
    res = runner.invoke(main, ["som", str(tmp_path / "f.npy"), "-o", str(tmp_path / "out"), "--rows", "3",
                               "--cols", "4", "--epochs", "3"])
    assert res.exit_code == 0, res.output
    assert "som: found 120, done 120" in res.output
    som = crevkit.SelfOrganizingMap.load(tmp_path / "out" / "som.npz", n_features=6)
    table = pq.read_table(tmp_path / "out" / "bmu.parquet").to_pandas()
    assert len(table) == 120 and set(table.columns) >= {"sample", "bmu", "row", "col", "distance"}
    np.testing.assert_array_equal(table["bmu"].to_numpy(), som.bmu(X))
    np.testing.assert_array_equal(table["row"] * 4 + table["col"], table["bmu"])

    zarr = pytest.importorskip("zarr")
    g = zarr.open_group(str(tmp_path / "f.zarr"), mode="w")
    g.create_array("features", shape=X.shape, chunks=(50, 6), dtype="f4")[:] = X
    res = runner.invoke(main, ["som", str(tmp_path / "f.zarr"), "--dataset", "features", "-o",
                               str(tmp_path / "outz"), "--rows", "3", "--cols", "4", "--epochs", "3"])
    assert res.exit_code == 0, res.output
    som_z = crevkit.SelfOrganizingMap.load(tmp_path / "outz" / "som.npz")
    np.testing.assert_array_equal(som_z.codebook_, som.codebook_)


def test_som_command_errors_are_one_line(tmp_path, monkeypatch):
    main = _import_cli(monkeypatch)
    runner = CliRunner()
    res = runner.invoke(main, ["som", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and "no such feature file" in res.output and "Traceback" not in res.output
    bad = np.ones((10, 3), np.float32)
    bad[4, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    res = runner.invoke(main, ["som", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "o"), "--rows", "2"])
    assert res.exit_code == 1 and "X contains NaN" in res.output
