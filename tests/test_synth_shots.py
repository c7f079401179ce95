"""Synthetic GLAS shots: geometry, timing, recording realism, GLAH01 storage, truth."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pandas as pd
import pytest

from crevkit.errors import CrevkitTypeError, CrevkitValueError
from crevkit.synth_shots import SHOT_SPACING_M, load_truth, synthesize_shots


class StandInScene:
    """A plane with a few V-shaped troughs (crevasse stand-ins), EPSG:3413 metres."""

    crs = "EPSG:3413"

    def __init__(self, x0: float = -190_000.0, y0: float = -2_280_000.0, length: float = 3_000.0,
                 width: float = 600.0) -> None:
        self.bounds = (x0, y0, x0 + length, y0 + width)
        # troughs crossing the strip: x position, half-width (m), depth (m)
        self.troughs = [(x0 + 700.0, 6.0, 15.0), (x0 + 1500.0, 4.0, 10.0), (x0 + 2300.0, 8.0, 25.0)]

    def _depth(self, x: np.ndarray) -> np.ndarray:
        d = np.zeros_like(x, dtype=np.float64)
        for xc, hw, depth in self.troughs:
            d = np.maximum(d, depth * np.clip(1.0 - np.abs(x - xc) / hw, 0.0, None))
        return d

    def height(self, x, y):
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        plane = 1200.0 + 0.01 * (x - self.bounds[0]) + 0.005 * (y - self.bounds[1])
        return plane - self._depth(x)

    def crevassed_fraction(self, x, y, radius):
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        i = np.arange(512) + 0.5
        r = radius * np.sqrt(i / 512)
        th = i * math.pi * (3.0 - math.sqrt(5.0))
        px = x[..., None] + r * np.cos(th)
        return (self._depth(px) > 0).mean(axis=-1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    paths = synthesize_shots(StandInScene(), out, n_tracks=8, seed=3, year=2005)
    truth, clean, recorded = load_truth(paths.truth)
    return paths, truth, clean, recorded


def test_outputs_and_truth_columns(synth):
    paths, truth, clean, recorded = synth
    for p in (paths.glah01, paths.glah06, paths.truth, paths.clean, paths.recorded):
        assert p.exists()
    n = len(truth)
    assert n > 80
    for col in ("shot_id", "time", "x", "y", "lon", "lat", "crevassed_fraction", "shift", "amplitude", "snr",
                "bg_mean", "bg_sd", "saturated", "waveform_type", "n_samples", "scale"):
        assert col in truth.columns
    assert clean.shape == (n, 544) and clean.dtype == np.float32
    assert recorded.shape == (n, 544)
    assert truth["shot_id"].is_unique
    assert (truth["shot_id"] == truth["i_rec_ndx"].astype(np.int64) * 100 + truth["i_shot_count"]).all()
    assert str(truth["time"].dtype) == "datetime64[ns, UTC]"
    assert (truth["time"].dt.year == 2005).all()


def test_geometry_40hz_172m(synth):
    _, truth, _, _ = synth
    for _, g in truth.groupby("track"):
        d = np.hypot(np.diff(g["x"]), np.diff(g["y"]))
        np.testing.assert_allclose(d, SHOT_SPACING_M, rtol=1e-9)
        np.testing.assert_allclose(np.diff(g["glas_time_s"]), 0.025, atol=1e-6)
        j = (g["i_rec_ndx"].to_numpy() - g["i_rec_ndx"].iloc[0]) * 40 + g["i_shot_count"].to_numpy()
        assert (np.diff(j) == 1).all()          # consecutive 40 Hz shots, records of 40
    b = StandInScene().bounds
    assert (truth["x"] - 50 >= b[0]).all() and (truth["x"] + 50 <= b[2]).all()
    assert (truth["y"] - 50 >= b[1]).all() and (truth["y"] + 50 <= b[3]).all()


def test_recording_realism(synth):
    _, truth, clean, recorded = synth
    n = len(truth)
    wt = truth["waveform_type"].to_numpy()
    assert 0 < (wt == 0).sum() <= max(3, 0.15 * n)           # ~5 % missing
    assert (wt == 2).sum() > 0 and (wt == 1).sum() > 0.6 * n
    assert (truth["n_samples"][wt == 2] == 200).all() and (truth["n_samples"][wt == 1] == 544).all()
    assert truth["amplitude"].between(0.05, 3.0).all()
    assert truth["bg_mean"].between(0.01, 0.05).all() and truth["bg_sd"].between(0.005, 0.02).all()
    np.testing.assert_allclose(truth["snr"], truth["amplitude"] / truth["bg_sd"])
    assert truth["saturated"].any() and not truth["saturated"].all()
    ok = wt != 0
    rec = recorded[ok]
    assert np.all(np.nanmax(rec, axis=1) <= truth["saturation_level"][ok].to_numpy() + 1e-6)
    np.testing.assert_allclose(clean.sum(axis=1), 1.0, atol=1e-4)
    # leading edges spread over the window
    assert truth["shift"][wt == 1].max() > 200 and truth["shift"].min() < 20
    assert np.isnan(recorded[wt == 0]).all()
    assert np.isnan(recorded[wt == 2][:, 200:]).all() and np.isfinite(recorded[wt == 2][:, :200]).all()


def test_shift_and_scale_reproduce_the_clean_signal(synth):
    _, truth, clean, recorded = synth
    sel = np.flatnonzero((truth["waveform_type"] == 1).to_numpy() & ~truth["saturated"].to_numpy())[:10]
    grid = np.arange(544.0)
    for i in sel:
        s = truth["shift"].iat[i]
        model = truth["scale"].iat[i] * np.interp(grid - s, grid, clean[i], left=0, right=0) + truth["bg_mean"].iat[i]
        resid = recorded[i] - model
        assert abs(resid.std() - truth["bg_sd"].iat[i]) < 0.25 * truth["bg_sd"].iat[i]
        # the leading edge (first energy of the clean waveform, sample 10) moves to 10 + shift
        first = np.argmax(clean[i] > 1e-6)
        assert first <= 10


def test_crevassed_fraction_truth(synth):
    _, truth, _, _ = synth
    scene = StandInScene()
    np.testing.assert_allclose(truth["crevassed_fraction"],
                               scene.crevassed_fraction(truth["x"].to_numpy(), truth["y"].to_numpy(), 35.0))
    assert truth["crevassed_fraction"].max() > 0 and (truth["crevassed_fraction"] == 0).any()


def test_glah01_storage_is_time_reversed(synth):
    paths, truth, _, recorded = synth
    with h5py.File(paths.glah01, "r") as f:
        wf = f["Data_40HZ/Waveform/RecWaveform/r_rng_wf"][()]
        loc = f["Data_40HZ/Waveform/RecWaveform/i_rec_wf_location_index"][()]
        table = f["ANCILLARY_DATA"].attrs["rec_wf_sample_location_table"]
        wtype = f["Data_40HZ/Waveform/Characteristics/i_waveformType"][()]
        assert f.attrs["ShortName"] == "GLAH01"
    assert table.shape == (5, 544)
    i = int(np.flatnonzero((wtype == 1) & (loc == 1))[0])
    np.testing.assert_array_equal(wf[i], recorded[i][::-1])      # first stored = latest
    assert (loc[wtype == 0] == 127).all()
    assert (wf[wtype == 0] >= 1e30).all()
    j = int(np.flatnonzero(wtype == 2)[0])
    assert (wf[j, 200:] >= 1e30).all()


def test_glah06_companion(synth):
    paths, truth, _, _ = synth
    with h5py.File(paths.glah06, "r") as f:
        lat = f["Data_40HZ/Geolocation/d_lat"][()]
        lon = f["Data_40HZ/Geolocation/d_lon"][()]
    miss = truth["waveform_type"].to_numpy() == 0
    assert (lat[miss] > 1e300).all()
    np.testing.assert_array_equal(lat[~miss], truth["lat"].to_numpy()[~miss])
    assert ((lon[~miss] >= 0) & (lon[~miss] < 360)).all()


def test_reproducible_by_seed(tmp_path):
    a = synthesize_shots(StandInScene(), tmp_path / "a", n_tracks=2, seed=5)
    b = synthesize_shots(StandInScene(), tmp_path / "b", n_tracks=2, seed=5)
    c = synthesize_shots(StandInScene(), tmp_path / "c", n_tracks=2, seed=6)
    ta, tb, tc = (pd.read_parquet(p.truth) for p in (a, b, c))
    pd.testing.assert_frame_equal(ta, tb)
    np.testing.assert_array_equal(np.load(a.recorded), np.load(b.recorded))
    assert not ta["x"].equals(tc["x"]) or len(ta) != len(tc)


def test_bad_arguments(tmp_path):
    with pytest.raises(CrevkitTypeError, match="scene must have"):
        synthesize_shots(object(), tmp_path)
    with pytest.raises(CrevkitValueError, match="missing_fraction"):
        synthesize_shots(StandInScene(), tmp_path, missing_fraction=1.5)
    small = StandInScene(length=80.0, width=80.0)
    with pytest.raises(CrevkitValueError, match="too small"):
        synthesize_shots(small, tmp_path)


def test_with_noise_model(tmp_path):
    from crevkit.noise import NoiseModel

    nm = NoiseModel.synthetic(noise_sd=3.0, vector_length=32, n_vectors=500, seed=1)
    p = synthesize_shots(StandInScene(), tmp_path, n_tracks=1, seed=2, noise=nm)
    t = pd.read_parquet(p.truth)
    assert len(t) > 5


@pytest.mark.slow
def test_over_a_real_synthetic_scene(tmp_path):
    from crevkit.scenes import make_scene

    scene = make_scene(seed=0)
    p = synthesize_shots(scene, tmp_path, n_tracks=2, seed=0)
    t = pd.read_parquet(p.truth)
    assert len(t) > 50 and t["crevassed_fraction"].between(0, 1).all()
