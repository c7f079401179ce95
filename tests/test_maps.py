"""Probability and change rasters: values per cell, grid, CRS, nodata, COG layout, masking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from crevkit.errors import CrevkitValueError
from crevkit.maps import change_rasters, period_labels, rasterize


def _shots(rows):
    x, y, t, p = zip(*rows)
    return pd.DataFrame({"x": np.array(x, float), "y": np.array(y, float),
                         "time": pd.to_datetime(list(t), utc=True), "p_crevasse": np.array(p, float)})


# cell (row 0, col 0) of the grid below is x in [-200000, -199000), y in (-2099000, -2098000]
SHOTS = _shots([
    (-199900.0, -2098100.0, "2004-03-01", 0.0),
    (-199500.0, -2098500.0, "2004-03-02", 0.5),
    (-199100.0, -2098900.0, "2004-03-03", 1.0),
    (-198500.0, -2098500.0, "2004-10-01", 0.9),   # col 1: one shot only
    (-199900.0, -2099500.0, "2004-11-01", np.nan),  # row 1: no probability -> ignored
    (-199900.0, -2098100.0, "2005-03-01", 0.2),
    (-199800.0, -2098200.0, "2005-03-02", 0.4),
    (-199700.0, -2098300.0, "2005-03-03", 0.6),
    (-198100.0, -2099900.0, "2005-03-04", 1.0),
])


def test_probability_raster_values_grid_and_cog(tmp_path):
    paths = rasterize(SHOTS, tmp_path, cell_size=1000.0, min_shots=2)
    assert [p.name for p in paths] == ["crevasse_probability_2004.tif", "crevasse_probability_2005.tif"]
    assert all(p.with_suffix(".png").exists() for p in paths)
    with rasterio.open(paths[0]) as src:
        assert src.crs.to_epsg() == 3413
        assert src.transform == Affine(1000.0, 0.0, -200000.0, 0.0, -1000.0, -2098000.0)
        assert (src.width, src.height, src.count) == (2, 2, 2)
        assert src.dtypes == ("float32", "float32") and np.isnan(src.nodata)
        assert src.descriptions == ("p_crevasse_mean", "shot_count")
        assert src.tags()["period"] == "2004"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.profile["blockxsize"] == 256
        mean, count = src.read(1), src.read(2)
    np.testing.assert_allclose(mean[0, 0], 0.5)
    assert np.isnan(mean[0, 1]) and count[0, 1] == 1  # one shot < min_shots: count kept, mean masked
    np.testing.assert_array_equal(count, [[3, 1], [0, 0]])
    assert np.isnan(mean[1]).all()
    with rasterio.open(paths[1]) as src:
        np.testing.assert_allclose(src.read(1)[0, 0], 0.4, rtol=1e-6)
        np.testing.assert_array_equal(src.read(2), [[3, 0], [0, 1]])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_large_raster_has_overviews(tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    shots = pd.DataFrame({"x": rng.uniform(0, 600_000, n), "y": rng.uniform(-600_000, 0, n),
                          "time": pd.Timestamp("2006-05-01", tz="UTC"), "p_crevasse": rng.random(n)})
    (path,) = rasterize(shots, tmp_path, cell_size=1000.0, bounds=(0, -600_000, 600_000, 0), min_shots=1,
                        quicklooks=False)
    with rasterio.open(path) as src:
        assert (src.width, src.height) == (600, 600)
        assert src.overviews(1) == [2, 4]  # halved until a level fits in one 256 px block
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.read(2).sum() == n


def test_period_labels():
    t = pd.to_datetime(["2004-12-15", "2005-01-10", "2005-03-01", "2005-07-01", "2005-11-30"])
    assert list(period_labels(t, "year")) == ["2004", "2005", "2005", "2005", "2005"]
    assert list(period_labels(t, "season")) == ["2005-DJF", "2005-DJF", "2005-MAM", "2005-JJA", "2005-SON"]
    assert set(period_labels(t, "all")) == {"all"}
    with pytest.raises(CrevkitValueError, match="period"):
        period_labels(t, "month")


def test_change_raster_masks_cells_with_too_few_shots(tmp_path):
    paths = rasterize(SHOTS, tmp_path, cell_size=1000.0, min_shots=1)
    (change,) = change_rasters(paths, tmp_path, min_shots=2)
    assert change.name == "change_2004_2005.tif" and change.with_suffix(".png").exists()
    with rasterio.open(change) as src:
        assert src.count == 1 and src.crs.to_epsg() == 3413 and np.isnan(src.nodata)
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        diff = src.read(1)
    np.testing.assert_allclose(diff[0, 0], 0.4 - 0.5, atol=1e-6)
    assert np.isnan(diff[0, 1]) and np.isnan(diff[1, 1]) and np.isnan(diff[1, 0])
    (loose,) = change_rasters({"2004": paths[0], "2005": paths[1]}, tmp_path / "loose", min_shots=1)
    with rasterio.open(loose) as src:
        assert np.isfinite(src.read(1)).sum() == 1  # (0,1) has shots in 2004 only, (1,1) in 2005 only


def test_change_raster_refuses_different_grids(tmp_path):
    a = rasterize(SHOTS[SHOTS.time.dt.year == 2004], tmp_path / "a", quicklooks=False)
    b = rasterize(SHOTS[SHOTS.time.dt.year == 2005], tmp_path / "b", cell_size=500.0, quicklooks=False)
    with pytest.raises(CrevkitValueError, match="different grids"):
        change_rasters([a[0], b[0]], tmp_path)


def test_validation(tmp_path):
    with pytest.raises(CrevkitValueError, match="column"):
        rasterize(SHOTS.drop(columns="time"), tmp_path)
    with pytest.raises(CrevkitValueError, match=r"\[0, 1\]"):
        rasterize(SHOTS.assign(p_crevasse=2.0), tmp_path)
    with pytest.raises(CrevkitValueError, match="cell_size"):
        rasterize(SHOTS, tmp_path, cell_size=0)


def test_cli_map(tmp_path):
    from click.testing import CliRunner

    from crevkit.cli import main

    SHOTS.to_parquet(tmp_path / "shots.parquet")
    res = CliRunner().invoke(main, ["map", str(tmp_path / "shots.parquet"), "-o", str(tmp_path / "maps"),
                                    "--min-shots", "1"])
    assert res.exit_code == 0, res.output
    assert "2 probability raster(s), 1 change raster(s)" in res.output
    assert (tmp_path / "maps" / "change_2004_2005.tif").exists()
