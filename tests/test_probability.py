"""Per-shot p(crevasse), confidence and unknown share on hand-made matches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from crevkit.errors import CrevkitTypeError, CrevkitValueError
from crevkit.probability import shot_probabilities

# tiles 0..5
LABELS = np.array(["crevasse", "crevasse", "other", "unknown", "ridge", ""], dtype=object)
ROWS = np.array([
    [0, 1, 2, 3],     # 2 crevasse, 1 other, 1 unknown
    [2, 4, 0, 0],     # other, ridge, 2 crevasse
    [3, 5, 3, -1],    # nothing labelled, one missing match
    [0, -1, -1, -1],  # a single labelled match
], dtype=np.int64)
DIST = np.array([
    [0.01, 0.02, 0.04, 0.05],
    [0.00, 0.10, 0.20, 0.30],
    [0.01, 0.01, 0.02, 0.03],
    [0.05, np.inf, np.nan, 0.0],
], dtype=np.float32)


def test_uniform_weights_by_hand():
    df = shot_probabilities(ROWS, DIST, LABELS)
    assert list(df.columns) == ["p_crevasse", "confidence", "n_labelled", "n_matches", "unknown_share",
                                "mean_distance"]
    np.testing.assert_allclose(df["p_crevasse"].to_numpy()[[0, 1, 3]], [2 / 3, 2 / 4, 1.0])
    assert np.isnan(df["p_crevasse"][2])
    np.testing.assert_array_equal(df["n_labelled"], [3, 4, 0, 1])
    np.testing.assert_array_equal(df["n_matches"], [4, 4, 3, 1])
    np.testing.assert_allclose(df["unknown_share"], [1 / 4, 0.0, 1.0, 0.0])
    d = DIST.astype(np.float64)
    mean0 = (d[0, 0] + d[0, 1] + d[0, 2]) / 3
    mean1 = d[1].mean()
    expected_conf = [3 / 4 * np.exp(-mean0 / 0.1), 1.0 * np.exp(-mean1 / 0.1), 0.0, 1 / 4 * np.exp(-0.05 / 0.1)]
    np.testing.assert_allclose(df["confidence"], expected_conf, rtol=1e-6)
    np.testing.assert_allclose(df["mean_distance"].to_numpy()[[0, 1, 3]], [mean0, mean1, 0.05], rtol=1e-6)


def test_inverse_distance_and_softmax_by_hand():
    d = DIST.astype(np.float64)
    df = shot_probabilities(ROWS, DIST, LABELS, weighting="inverse_distance")
    w = 1.0 / (d[0, :3] + 1e-4)
    np.testing.assert_allclose(df["p_crevasse"][0], (w[0] + w[1]) / w.sum(), rtol=1e-6)
    w = 1.0 / (d[1] + 1e-4)
    np.testing.assert_allclose(df["p_crevasse"][1], (w[2] + w[3]) / w.sum(), rtol=1e-6)
    df = shot_probabilities(ROWS, DIST, LABELS, weighting="softmax", temperature=0.05)
    w = np.exp(-(d[1] - d[1].min()) / 0.05)
    np.testing.assert_allclose(df["p_crevasse"][1], (w[2] + w[3]) / w.sum(), rtol=1e-6)
    # the minimum is over all valid matches, labelled or not
    w = np.exp(-(d[0, :3] - d[0].min()) / 0.05)
    np.testing.assert_allclose(df["p_crevasse"][0], (w[0] + w[1]) / w.sum(), rtol=1e-6)
    # a very low temperature picks the nearest labelled match
    df = shot_probabilities(ROWS, DIST, LABELS, weighting="softmax", temperature=1e-4)
    np.testing.assert_allclose(df["p_crevasse"].to_numpy()[[0, 1]], [1.0, 0.0], atol=1e-6)


def test_batches_do_not_change_the_result():
    rng = np.random.default_rng(0)
    labels = rng.choice(["crevasse", "other", "unknown"], 50)
    rows = rng.integers(-1, 50, (101, 7))
    dist = rng.random((101, 7)).astype(np.float32)
    a = shot_probabilities(rows, dist, labels, weighting="softmax")
    b = shot_probabilities(rows, dist, labels, weighting="softmax", batch_size=10)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


@given(st.integers(1, 8), st.integers(1, 6), st.integers(0, 2**32 - 1),
       st.sampled_from(["uniform", "inverse_distance", "softmax"]))
def test_ranges(n, k, seed, weighting):
    rng = np.random.default_rng(seed)
    labels = rng.choice(["crevasse", "other", "unknown", "basin"], 10)
    rows = rng.integers(-1, 10, (n, k))
    dist = (rng.random((n, k)) * 4).astype(np.float32)
    df = shot_probabilities(rows, dist, labels, weighting=weighting)
    p = df["p_crevasse"].to_numpy()
    has = df["n_labelled"].to_numpy() > 0
    assert np.all(np.isnan(p[~has])) and np.all((p[has] >= 0) & (p[has] <= 1))
    c = df["confidence"].to_numpy()
    assert np.all((c >= 0) & (c <= 1)) and np.all(c[~has] == 0)
    u = df["unknown_share"].to_numpy()
    assert np.all((u >= 0) & (u <= 1))


def test_validation():
    with pytest.raises(CrevkitValueError, match="shape"):
        shot_probabilities(ROWS, DIST[:, :3], LABELS)
    with pytest.raises(CrevkitValueError, match=r"\[-1, 6\)"):
        shot_probabilities(ROWS + 3, DIST, LABELS)
    with pytest.raises(CrevkitTypeError, match="match_rows"):
        shot_probabilities(ROWS.astype(float), DIST, LABELS)
    with pytest.raises(CrevkitValueError, match="weighting"):
        shot_probabilities(ROWS, DIST, LABELS, weighting="gaussian")
    with pytest.raises(CrevkitValueError, match=">= 0"):
        shot_probabilities(ROWS, -DIST, LABELS)
    with pytest.raises(CrevkitValueError, match="temperature"):
        shot_probabilities(ROWS, DIST, LABELS, weighting="softmax", temperature=0)


def test_snr_pulls_weak_shots_toward_the_labelled_base_rate():
    from crevkit.probability import apply_snr, labelled_prior, shrink_toward_prior, snr_reliability

    prior = labelled_prior(LABELS)
    assert prior == pytest.approx(2 / 4)  # crevasse, crevasse, other, ridge are labelled
    snr = np.array([1000.0, 10.0, 5.0, np.nan])
    plain = shot_probabilities(ROWS, DIST, LABELS)
    df = shot_probabilities(ROWS, DIST, LABELS, snr=snr, snr_half=10.0)
    rel = snr ** 2 / (snr ** 2 + 100.0)
    rel[3] = 1.0  # unknown SNR: no pull
    np.testing.assert_allclose(df["reliability"], rel)
    np.testing.assert_allclose(df["p_matches"], plain["p_crevasse"])
    share = plain["p_crevasse"].to_numpy()
    np.testing.assert_allclose(df["p_crevasse"], prior + rel * (share - prior))
    assert df["p_crevasse"][1] == pytest.approx(0.5 * (prior + share[1]))  # SNR = snr_half: halfway
    assert np.isnan(df["p_crevasse"][2])
    np.testing.assert_allclose(df["confidence"], plain["confidence"] * rel)
    # a strong shot keeps its share; the pull never crosses the prior; off when snr_half = 0
    assert abs(df["p_crevasse"][0] - share[0]) < 1e-3
    np.testing.assert_array_equal(snr_reliability(snr, 0.0), 1.0)
    p = np.linspace(0, 1, 11)
    q = shrink_toward_prior(p, np.full(11, 3.0), 0.25)
    assert np.all(np.sign(q - 0.25) == np.sign(p - 0.25)) and np.all(np.abs(q - 0.25) <= np.abs(p - 0.25))
    # the same pull applied afterwards (the pipeline's way, Dask or local) gives the same table
    after = apply_snr(plain, snr, LABELS, snr_half=10.0)
    np.testing.assert_allclose(after["p_crevasse"], df["p_crevasse"])
    with pytest.raises(CrevkitValueError):
        shot_probabilities(ROWS, DIST, LABELS, snr=snr[:2])
    with pytest.raises(CrevkitValueError):
        snr_reliability(snr, -1.0)


def test_shot_snr_from_waveforms_and_background():
    from crevkit.probability import shot_snr

    w = np.full((3, 8), 0.1)
    w[0, 3] = 1.1
    w[1, 4:] = np.nan
    w[1, 2] = 0.6
    w[2, :] = np.nan
    snr = shot_snr(w, np.full(3, 0.1), np.array([0.05, 0.1, 0.1]), batch_size=2)
    np.testing.assert_allclose(snr[:2], [20.0, 5.0])
    assert np.isnan(snr[2])
