"""Blend calibration on labelled library tiles: self-exclusion, determinism, the choice, bad input."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from crevkit.benchmarks.denoise import make_library  # noqa: E402
from crevkit.blend_calibration import _without_self, calibrate_blend  # noqa: E402
from crevkit.denoise import Denoiser  # noqa: E402
from crevkit.errors import CrevkitTypeError, CrevkitValueError  # noqa: E402
from crevkit.index import WaveformIndex  # noqa: E402
from crevkit.noise import NoiseModel  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    lib, classes = make_library(600, seed=21)
    labels = np.where(classes == 1, "crevasse", np.where(classes == 0, "plane", "undulating")).astype(object)
    labels[::7] = "unknown"
    noise = NoiseModel.synthetic(snr_range=(10.0, 100.0), shift_range=(-5.0, 30.0), seed=0)
    den = Denoiser(n_steps=60, batch_size=64, width=8, bottleneck=16, validation_size=16, validation_every=30,
                   n_threads=1, device="cpu", seed=0).fit(lib, noise, progress=False)
    index = WaveformIndex.build(lib, n_threads=1, progress=False)
    return lib, labels, noise, den, index


def test_without_self_drops_the_own_row_and_keeps_the_order():
    rows = np.array([[3, 5, 1, 9], [2, 4, 6, 8], [-1, 7, 7, 0]])
    dist = np.arange(12, dtype=np.float32).reshape(3, 4)
    r, d = _without_self(rows, dist, np.array([5, 0, 7]), 3)
    np.testing.assert_array_equal(r, [[3, 1, 9], [2, 4, 6], [0, -1, -1]])
    np.testing.assert_array_equal(d[:2], [[0, 2, 3], [4, 5, 6]])
    assert d[2, 0] == 11 and np.isnan(d[2, 1:]).all()


def test_calibration_scores_every_mode_and_is_seeded(setup):
    lib, labels, noise, den, index = setup
    a = calibrate_blend(den, lib, labels, noise, index, modes=("floor", "max", "none"), k=10, repeats=1, seed=3)
    b = calibrate_blend(den, lib, labels, noise, index, modes=("floor", "max", "none"), k=10, repeats=1, seed=3)
    assert a == b
    known = np.array([v != "unknown" for v in labels])
    assert a.n_tiles == known.sum() and a.n_shots == known.sum()
    assert a.n_positive == (labels == "crevasse").sum()
    assert set(a.auc) == {"floor", "max", "none"} and all(0.0 <= v <= 1.0 for v in a.auc.values())
    # the choice is the best AUC (the first of equals), and the matches carry real information
    assert a.auc[a.mode] == max(a.auc.values())
    assert a.auc[a.mode] > 0.6
    assert a.to_dict()["mode"] == a.mode
    c = calibrate_blend(den, lib, labels, noise, index, modes=("floor", "max"), k=10, repeats=1, seed=4,
                        max_tiles=100)
    assert c.n_tiles == 100 and c.auc != a.auc


def test_calibration_without_both_classes_keeps_the_first_mode(setup):
    lib, labels, noise, den, index = setup
    one = np.where(labels == "crevasse", "unknown", labels)
    r = calibrate_blend(den, lib, one, noise, index, modes=("max", "floor"))
    assert r.mode == "max" and "both" in r.reason and not r.auc
    assert calibrate_blend(den, lib, labels, noise, index, modes=("floor",)).reason == "one candidate mode"


def test_calibration_refuses_bad_input(setup):
    lib, labels, noise, den, index = setup
    with pytest.raises(CrevkitValueError, match="modes"):
        calibrate_blend(den, lib, labels, noise, index, modes=("sharpest",))
    with pytest.raises(CrevkitValueError, match="tile_labels"):
        calibrate_blend(den, lib, labels[:-1], noise, index)
    with pytest.raises(CrevkitValueError, match="index"):
        calibrate_blend(den, lib[:-1], labels[:-1], noise, index)
    with pytest.raises(CrevkitTypeError, match="fitted"):
        calibrate_blend(Denoiser(), lib, labels, noise, index)


def test_without_self_drops_every_repeat_of_the_own_row():
    # with library copies a tile can come back once per waveform (its clean one and each copy)
    rows = np.array([[5, 5, 3, 5, 2, 1]])
    r, d = _without_self(rows, np.arange(6, dtype=np.float32)[None], np.array([5]), 3)
    np.testing.assert_array_equal(r, [[3, 2, 1]])
    np.testing.assert_array_equal(d, [[2, 4, 5]])


def test_calibration_matches_each_mode_against_its_own_copies(setup):
    from crevkit.denoise import noisy_library_copies
    from crevkit.index import IndexWithCopies

    lib, labels, noise, den, index = setup
    raw = noisy_library_copies(lib, noise, (20.0, 60.0), seed=1)
    asked = []

    class Spy:  # the mode's index, recording how many matches the calibration asks for
        def __init__(self, inner):
            self.inner, self.count, self.repeats_per_row = inner, inner.count, inner.repeats_per_row

        def query(self, w, k, **kw):
            asked.append(k)
            return self.inner.query(w, k, **kw)

    indexes = {m: Spy(IndexWithCopies.build(index, den.transform(raw, blend=m))) for m in ("floor", "max")}
    r = calibrate_blend(den, lib, labels, noise, indexes, modes=("floor", "max"), k=10, repeats=1, seed=3)
    assert asked == [13, 13]  # k + the tile's three waveforms, all left out of its own matches
    assert set(r.auc) == {"floor", "max"} and r.auc[r.mode] > 0.6
    with pytest.raises(CrevkitValueError, match="no index for mode"):
        calibrate_blend(den, lib, labels, noise, {"floor": indexes["floor"]}, modes=("floor", "max"))
