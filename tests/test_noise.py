"""Empirical noise model: fitting, sampling statistics, reproducibility, persistence, real LVIS."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from crevkit.errors import CrevkitTypeError, CrevkitValueError, IndexIntegrityError, InputFileError
from crevkit.noise import NOISE_MODEL_VERSION, NoiseModel, noise_report

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
LVIS = REAL / "lvis_example1.pls"
needs_real = pytest.mark.skipif(not LVIS.exists(), reason="real data files not available")


def _gaussian_returns(n=400, m=544, sd=0.01, seed=0):
    """Recorded-like waveforms with known background, sd, amplitude and leading edge."""
    rng = np.random.default_rng(seed)
    fwhm = 6.0
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
    centre = rng.uniform(40, 400, n)
    area = rng.uniform(1.0, 5.0, n)
    bg = rng.uniform(0.01, 0.05, n)
    k = np.arange(m)
    clean = area[:, None] * np.exp(-0.5 * ((k - centre[:, None]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    w = clean + bg[:, None] + rng.normal(0, sd, (n, m))
    return w, centre, area, bg


@pytest.fixture(scope="module")
def fitted():
    w, centre, area, bg = _gaussian_returns()
    return NoiseModel.fit(w, n_samples=544, pulse_fwhm_ns=6.0, seed=1), centre, area


def test_fit_recovers_known_parameters(fitted):
    model, centre, area = fitted
    s = model.summary()
    assert s["n_shots_used"] == 400 and s["n_shots_in"] == 400
    assert s["noise_sd"] == pytest.approx(0.01, rel=0.05)
    assert abs(s["noise_mean"]) < 1e-3
    # a flat-surface Gaussian return centred at c has its library leading edge at c, i.e. shift = c - 10
    np.testing.assert_allclose(np.sort(model.shifts), np.sort(centre - 10.0), atol=0.6)
    np.testing.assert_allclose(np.sort(model.scales), np.sort(area), rtol=0.08, atol=0.05)
    assert model.pool.shape[1] == 64 and model.pool.dtype == np.float32
    assert s["windows_in_return"] > 0 and s["n_vectors"] > 1000


def test_noise_vectors_exclude_the_return():
    # the return is huge: any window touching it would blow up the pool's sd
    w, *_ = _gaussian_returns(n=100, sd=0.01, seed=3)
    w[:, :] += 0.0
    model = NoiseModel.fit(w * 1.0, seed=0)
    assert np.abs(model.pool).max() < 8 * 0.01


def test_step_and_spike_windows_rejected():
    w, *_ = _gaussian_returns(n=50, sd=0.01, seed=4)
    w[:, 32:64] += 0.03          # a 3-sd step in the middle of the first window
    w[:, 100] += 0.08            # an 8-sd spike
    model = NoiseModel.fit(w, seed=0)
    s = model.summary()
    assert s["windows_step"] > 0 and s["windows_spike"] > 0
    assert model.pool.std() == pytest.approx(0.01, rel=0.1)


def test_sampling_matches_pool_statistics(fitted):
    model, *_ = fitted
    rng = np.random.default_rng(7)
    noise = model.sample_noise(4000, 544, rng)
    assert noise.shape == (4000, 544) and noise.dtype == np.float32
    pool = model.pool.astype(np.float64)
    assert noise.mean() == pytest.approx(pool.mean(), abs=3e-4)
    assert noise.std() == pytest.approx(pool.std(), rel=0.02)
    qs = [0.01, 0.1, 0.5, 0.9, 0.99]
    np.testing.assert_allclose(np.quantile(noise, qs), np.quantile(pool, qs), atol=0.1 * pool.std())
    scales = model.sample_scales(20000, rng)
    shifts = model.sample_shifts(20000, rng)
    assert scales.dtype == np.float32 and shifts.dtype == np.float32
    np.testing.assert_allclose(np.quantile(scales, qs), np.quantile(model.scales, qs), rtol=0.1)
    np.testing.assert_allclose(np.quantile(shifts, qs), np.quantile(model.shifts, qs), atol=10.0)
    assert np.isin(scales, model.scales).all()


def test_sampling_reproducible_by_seed(fitted):
    model, *_ = fitted
    a = model.sample(64, 544, np.random.default_rng(123))
    b = model.sample(64, 544, np.random.default_rng(123))
    c = model.sample(64, 544, np.random.default_rng(124))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])
    np.testing.assert_array_equal(model.sample_noise(3, None, 5), model.sample_noise(3, None, 5))
    assert model.sample_noise(2, rng=0).shape == (2, 544)


def test_noise_longer_than_pool_vectors_is_tiled(fitted):
    model, *_ = fitted
    rng = np.random.default_rng(0)
    n = model.sample_noise(5, 150, rng)
    assert n.shape == (5, 150)
    # every 64-sample block is one pool vector
    pool = {v.tobytes() for v in model.pool}
    assert n[0, :64].tobytes() in pool and n[0, 64:128].tobytes() in pool


def test_fit_is_reproducible_and_caps_the_pool():
    w, *_ = _gaussian_returns(n=200, seed=5)
    a = NoiseModel.fit(w, max_vectors=300, seed=9)
    b = NoiseModel.fit(w, max_vectors=300, seed=9)
    assert a.pool.shape == (300, 64)
    np.testing.assert_array_equal(a.pool, b.pool)
    assert a.summary()["n_vectors_found"] > 300


def test_peak_scale_and_low_snr():
    w, centre, area, bg = _gaussian_returns(n=100, seed=6)
    m = NoiseModel.fit(w, scale="peak")
    sigma = 6.0 / 2.3548
    np.testing.assert_allclose(np.sort(m.scales), np.sort(area / (sigma * math.sqrt(2 * math.pi))), rtol=0.1)
    flat = np.random.default_rng(0).normal(0.02, 0.01, (50, 544))
    with pytest.raises(CrevkitValueError, match="no shot passed"):
        NoiseModel.fit(flat)


def test_save_load_roundtrip_and_integrity(fitted, tmp_path):
    model, *_ = fitted
    d = model.save(tmp_path / "nm")
    doc = json.loads((d / "noise.json").read_text())
    assert doc["version"] == NOISE_MODEL_VERSION and len(doc["sha256"]) == 64
    back = NoiseModel.load(d)
    np.testing.assert_array_equal(back.pool, model.pool)
    np.testing.assert_array_equal(back.scales, model.scales)
    np.testing.assert_array_equal(back.shifts, model.shifts)
    assert back.summary() == model.summary()
    assert back.fingerprint() == model.fingerprint() and len(model.fingerprint()) == 64
    np.testing.assert_array_equal(back.sample_noise(4, 100, 1), model.sample_noise(4, 100, 1))
    raw = bytearray((d / "noise.npz").read_bytes())
    raw[-10] ^= 0xFF
    (d / "noise.npz").write_bytes(bytes(raw))
    with pytest.raises(IndexIntegrityError, match="sha256"):
        NoiseModel.load(d)
    doc["version"] = NOISE_MODEL_VERSION + 1
    (d / "noise.json").write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match="newer"):
        NoiseModel.load(d)
    with pytest.raises(InputFileError, match="not a noise model"):
        NoiseModel.load(tmp_path / "missing")


def test_synthetic_model():
    m = NoiseModel.synthetic(noise_sd=0.02, snr_range=(10, 20), shift_range=(0, 5), seed=2)
    s = m.summary()
    assert s["noise_sd"] == pytest.approx(0.02, rel=0.02)
    assert m.shifts.min() >= 0 and m.shifts.max() <= 5
    peak = m.scales / ((6.0 / 2.3548) * math.sqrt(2 * math.pi))
    assert (peak / 0.02 >= 10 - 1e-3).all() and (peak / 0.02 <= 20 + 1e-3).all()
    np.testing.assert_array_equal(NoiseModel.synthetic(seed=2).pool, NoiseModel.synthetic(seed=2).pool)


def test_validation():
    w, *_ = _gaussian_returns(n=10)
    with pytest.raises(CrevkitValueError, match="scale"):
        NoiseModel.fit(w, scale="energy")
    with pytest.raises(CrevkitValueError, match="2-dimensional"):
        NoiseModel.fit(w[0])
    with pytest.raises(CrevkitTypeError, match="numeric"):
        NoiseModel.fit(np.array([["a"] * 100]))
    with pytest.raises(CrevkitTypeError, match="rng"):
        NoiseModel.synthetic().sample_noise(2, 10, rng="seed")
    with pytest.raises(CrevkitValueError, match="length"):
        NoiseModel.synthetic().sample_noise(2, 0)


@needs_real
def test_real_lvis_noise_model():
    from crevkit.readers import read_lvis

    st = read_lvis(LVIS)
    model = NoiseModel.fit(st, n_samples=432)
    s = model.summary()
    assert s["units"] == "counts" and s["sample_interval_ns"] == 2.0
    assert s["n_shots_in"] == 1000 and s["n_shots_used"] == 1000
    assert s["n_vectors"] == 4000 and s["vector_length"] == 64
    assert 0.9 < s["noise_sd"] < 1.2                                 # 8-bit counts
    assert 90 < s["peaks_quantiles"]["q50"] < 140
    assert 300 < s["shift_quantiles"]["q50"] < 320                   # returns near sample 322 of 432
    assert 550 < s["scale_quantiles"]["q50"] < 750
    rep = noise_report(LVIS)
    assert rep["n_shots_read"] == 1000 and rep["n_vectors"] == s["n_vectors"]


def test_fit_on_synthetic_glas_shots(tmp_path):
    from crevkit.readers import read_glah01
    from crevkit.synth_shots import load_truth, synthesize_shots


    class StandInScene:  # a tilted plane with two V-shaped troughs
        bounds = (-190_000.0, -2_280_000.0, -187_000.0, -2_279_400.0)

        def height(self, x, y):
            x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
            d = np.maximum(15 * np.clip(1 - np.abs(x + 189_300) / 6, 0, None),
                           20 * np.clip(1 - np.abs(x + 188_000) / 5, 0, None))
            return 1200.0 + 0.01 * (x - self.bounds[0]) - d

        def crevassed_fraction(self, x, y, radius):
            return np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)

    p = synthesize_shots(StandInScene(), tmp_path, n_tracks=6, seed=4)
    truth, clean, _ = load_truth(p.truth)
    st = read_glah01(p.glah01, geolocation=p.glah06)
    model = NoiseModel.fit(st, n_samples=544)
    s = model.summary()
    assert s["units"] == "volts" and s["n_shots_used"] > 0.5 * (truth["waveform_type"] != 0).sum()
    # pooled noise sd lies within the synthetic per-shot sd range (0.005-0.02 V)
    assert 0.005 < s["noise_sd"] < 0.02
    used_shift = model.shifts
    assert used_shift.min() > -20 and used_shift.max() < 544
    # against the library's own edges, the shift distribution is the one applied
    ref = NoiseModel.fit(st, n_samples=544, reference=clean)
    ok = truth["waveform_type"] != 0
    q_true = np.quantile(truth["shift"][ok], [0.25, 0.5, 0.75])
    np.testing.assert_allclose(np.quantile(ref.shifts, [0.25, 0.5, 0.75]), q_true, atol=25)
    assert ref.meta["params"]["reference"] == "library"
    # record lengths: the short (200-sample) records are the truth's
    lengths = model.extra["record_lengths"]
    assert lengths.size == ok.sum() and (lengths == 200).sum() == (truth["waveform_type"] == 2).sum()


def test_record_lengths_come_from_the_records_and_padding_gives_no_noise():
    w, *_ = _gaussian_returns(n=300, seed=5)
    w[::3, 200:] = np.nan  # every third shot a 200-sample short record
    model = NoiseModel.fit(w, n_samples=544, seed=0)
    r = model.extra["record_lengths"]
    assert model.has_record_lengths and r.size == 300
    assert (r == 200).sum() == 100 and (r == 544).sum() == 200
    assert model.summary()["short_record_share"] == pytest.approx(1 / 3)
    assert model.pool.std(axis=1).min() > 0.003  # no window from the padding (sd 0.01 noise)
    a = model.sample_record_lengths(1000, np.random.default_rng(2))
    np.testing.assert_array_equal(a, model.sample_record_lengths(1000, np.random.default_rng(2)))
    assert set(np.unique(a)) == {200, 544} and 0.28 < (a == 200).mean() < 0.39
    # a model fitted for shorter library waveforms caps the lengths
    assert NoiseModel.fit(w, n_samples=300, seed=0).sample_record_lengths(50, 0).max() == 300
    # the lengths are part of the content: same arrays otherwise, other fingerprint
    other = NoiseModel(model.scales, model.shifts, model.pool, n_samples=544, meta=model.meta,
                       extra={**model.extra, "record_lengths": np.full(300, 544, np.int32)})
    assert other.fingerprint() != model.fingerprint()


def test_models_without_record_lengths_give_full_records_and_draw_nothing():
    model = NoiseModel.synthetic(seed=0)
    assert not model.has_record_lengths
    g = np.random.default_rng(7)
    np.testing.assert_array_equal(model.sample_record_lengths(5, g), np.full(5, 544))
    assert g.integers(0, 1 << 30) == np.random.default_rng(7).integers(0, 1 << 30)


def test_leading_edges():
    from crevkit.noise import leading_edges

    k = np.arange(100.0)
    sigma = 6.0 / 2.3548
    w = np.exp(-0.5 * ((k[None, :] - np.array([[30.0], [55.5]])) / sigma) ** 2)
    np.testing.assert_allclose(leading_edges(w), [27.0, 52.5], atol=0.1)       # half max: centre - FWHM/2
    np.testing.assert_allclose(leading_edges(w + 2.0, background=2.0), [27.0, 52.5], atol=0.1)
    assert np.isnan(leading_edges(np.linspace(1, 0, 10)[None, :]))[0]
