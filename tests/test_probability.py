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


# --------------------------------------------------------------------------- spatial prior


def _brute_prior(x, y, share, rel, base, radius, m, kernel="flat", groups=None):
    """The spatial prior by its definition, one shot at a time (reference for the KD-tree version)."""
    n = len(share)
    groups = np.zeros(n) if groups is None else np.asarray(groups)
    out = np.empty(n)
    for i in range(n):
        num = den = 0.0
        for j in range(n):
            if j == i or not np.isfinite(share[j]) or groups[j] != groups[i]:
                continue
            d = np.hypot(x[i] - x[j], y[i] - y[j])
            if not d < radius:
                continue
            g = 1.0 if kernel == "flat" else np.exp(-d * d / (2 * (radius / 2) ** 2))
            num += g * rel[j] * share[j]
            den += g * rel[j]
        out[i] = (num + m * base) / (den + m) if den + m > 0 else base
    return out


def test_spatial_prior_by_hand():
    from crevkit.probability import spatial_prior

    # three shots on a line 100 m apart, a fourth far away
    x = np.array([0.0, 100.0, 200.0, 10_000.0])
    y = np.zeros(4)
    share = np.array([1.0, 0.0, 0.5, 1.0])
    rel = np.array([1.0, 0.5, 1.0, 1.0])
    prior = spatial_prior(x, y, share, rel, 0.2, radius=150.0, prior_weight=1.0, kernel="flat")
    # shot 0 sees shot 1 only; shot 1 sees 0 and 2; shot 2 sees 1; shot 3 nobody (the global base rate)
    np.testing.assert_allclose(prior, [(0.5 * 0.0 + 0.2) / 1.5, (1.0 + 0.5 + 0.2) / 3.0, (0.0 + 0.2) / 1.5, 0.2])
    # neighbours strictly inside R: at exactly 100 m shot 0 and shot 1 no longer see each other
    prior = spatial_prior(x, y, share, rel, 0.2, radius=100.0, prior_weight=1.0, kernel="flat")
    np.testing.assert_allclose(prior, [0.2, 0.2, 0.2, 0.2])
    # Gaussian kernel, sigma = R / 2
    g = np.exp(-100.0 ** 2 / (2 * 75.0 ** 2))
    prior = spatial_prior(x, y, share, rel, 0.2, radius=150.0, prior_weight=2.0, kernel="gaussian")
    assert prior[0] == pytest.approx((g * 0.5 * 0.0 + 2 * 0.2) / (g * 0.5 + 2))
    assert prior[1] == pytest.approx((g * 1.0 + g * 0.5 + 2 * 0.2) / (2 * g + 2))


def test_spatial_prior_excludes_the_shot_itself():
    from crevkit.probability import spatial_prior

    # two shots at the same place: each one's prior is the other's share (m -> 0), never its own
    prior = spatial_prior([5.0, 5.0], [5.0, 5.0], [1.0, 0.0], [1.0, 1.0], 0.5, radius=10.0, prior_weight=0.0)
    np.testing.assert_array_equal(prior, [0.0, 1.0])
    # alone, a shot has no neighbour: the base rate even with m = 0
    prior = spatial_prior([5.0], [5.0], [1.0], [1.0], 0.3, radius=10.0, prior_weight=0.0)
    np.testing.assert_array_equal(prior, [0.3])


def test_spatial_prior_ignores_nan_shares_and_other_periods():
    from crevkit.probability import spatial_prior

    x = np.array([0.0, 50.0, 60.0, 70.0])
    y = np.zeros(4)
    share = np.array([0.0, 1.0, np.nan, 1.0])
    rel = np.ones(4)
    groups = np.array(["2004", "2004", "2004", "2007"])
    prior = spatial_prior(x, y, share, rel, 0.5, radius=500.0, prior_weight=1.0, kernel="flat", groups=groups)
    # shot 0: shot 1 only (2 has no share, 3 is another period); shot 2 (NaN share) still gets a prior
    np.testing.assert_allclose(prior, [(1.0 + 0.5) / 2, (0.0 + 0.5) / 2, (0.0 + 1.0 + 0.5) / 3, 0.5])
    # dropping the NaN shot changes nobody else's prior
    keep = [0, 1, 3]
    np.testing.assert_array_equal(
        spatial_prior(x[keep], y[keep], share[keep], rel[keep], 0.5, radius=500.0, prior_weight=1.0,
                      kernel="flat", groups=groups[keep]), prior[keep])
    # without periods, shot 3 is a neighbour of all
    prior = spatial_prior(x, y, share, rel, 0.5, radius=500.0, prior_weight=1.0, kernel="flat")
    assert prior[3] == pytest.approx((0.0 + 1.0 + 0.5) / 3)


@given(st.floats(0.0, 1.0), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_identical_neighbourhood_gives_its_share(s, n, seed):
    from crevkit.probability import spatial_prior

    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 100, n + 1), rng.uniform(0, 100, n + 1)
    share = np.full(n + 1, s)
    share[0] = 1.0 - s  # the shot's own share must not matter
    prior = spatial_prior(x, y, share, np.ones(n + 1), 0.9, radius=1000.0, prior_weight=1e-12)
    assert prior[0] == pytest.approx(s, abs=1e-9)


@given(st.integers(1, 40), st.integers(0, 2**31 - 1), st.floats(1.0, 400.0), st.floats(0.0, 5.0),
       st.sampled_from(["flat", "gaussian"]), st.integers(1, 7))
def test_spatial_prior_matches_its_definition_and_ignores_order(n, seed, radius, m, kernel, block):
    from crevkit.probability import spatial_prior

    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(0, 500, n), 1)  # rounded: some shots share a position
    y = np.round(rng.uniform(0, 300, n), 1)
    share = rng.choice([0.0, 0.25, 0.5, 1.0, np.nan], n)
    rel = rng.uniform(0, 1, n)
    rel[rng.uniform(size=n) < 0.2] = 0.0
    groups = rng.choice(["a", "b"], n)
    base = float(rng.uniform())
    want = _brute_prior(x, y, share, rel, base, radius, m, kernel, groups)
    got = spatial_prior(x, y, share, rel, base, radius=radius, prior_weight=m, kernel=kernel, groups=groups,
                        block_size=block)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.all((got >= 0) & (got <= 1))
    perm = rng.permutation(n)
    shuffled = spatial_prior(x[perm], y[perm], share[perm], rel[perm], base, radius=radius, prior_weight=m,
                             kernel=kernel, groups=groups[perm])
    np.testing.assert_allclose(shuffled, got[perm], rtol=1e-10, atol=1e-12)


def test_apply_snr_with_the_spatial_prior():
    from crevkit.probability import apply_snr

    plain = shot_probabilities(ROWS, DIST, LABELS)
    share = plain["p_crevasse"].to_numpy()
    snr = np.array([1000.0, 10.0, 5.0, 3.0])
    xy = np.array([0.0, 100.0, 200.0, 300.0])
    glob = apply_snr(plain, snr, LABELS, snr_half=10.0)
    np.testing.assert_array_equal(glob["prior"], 0.5)
    # isolated shots (no neighbour within R) give the global pull exactly
    far = apply_snr(plain, snr, LABELS, snr_half=10.0, x=xy * 100, y=xy, neighbour_radius=500.0)
    pd_testing_equal(far, glob)
    for kernel in ("flat", "gaussian"):
        near = apply_snr(plain, snr, LABELS, snr_half=10.0, x=xy, y=xy * 0, neighbour_radius=150.0,
                         prior_weight=2.0, neighbour_kernel=kernel)
        rel = near["reliability"].to_numpy()
        np.testing.assert_allclose(near["prior"], _brute_prior(xy, xy * 0, share, rel, 0.5, 150.0, 2.0, kernel))
    np.testing.assert_allclose(near["p_crevasse"], near["prior"] + rel * (share - near["prior"]))
    np.testing.assert_array_equal(near["p_matches"], share)
    # all shots fully reliable: p is the share whatever the neighbours say
    strong = apply_snr(plain, np.full(4, np.nan), LABELS, x=xy, y=xy * 0, neighbour_radius=1e6, prior_weight=0.1)
    np.testing.assert_array_equal(strong["p_crevasse"], share)
    # neighbour_radius 0 is the global pull
    pd_testing_equal(apply_snr(plain, snr, LABELS, snr_half=10.0, x=xy, y=xy, neighbour_radius=0.0), glob)


def pd_testing_equal(a, b):
    import pandas as pd

    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_spatial_prior_validation():
    from crevkit.probability import apply_snr, spatial_prior

    ok = dict(x=[0.0, 1.0], y=[0.0, 1.0], share=[0.0, 1.0], reliability=[1.0, 1.0], base=0.5)

    def call(**kw):
        args = {**ok, **kw}
        return spatial_prior(args.pop("x"), args.pop("y"), args.pop("share"), args.pop("reliability"),
                             args.pop("base"), **args)

    call(radius=10.0)
    for kw, err, name in [
        (dict(radius=-1.0), CrevkitValueError, "radius"),
        (dict(radius=float("inf")), CrevkitValueError, "radius"),
        (dict(radius="500"), CrevkitTypeError, "radius"),
        (dict(prior_weight=-0.5), CrevkitValueError, "prior_weight"),
        (dict(prior_weight=float("nan")), CrevkitValueError, "prior_weight"),
        (dict(prior_weight=True), CrevkitTypeError, "prior_weight"),
        (dict(kernel="box"), CrevkitValueError, "kernel"),
        (dict(base=1.5), CrevkitValueError, "base"),
        (dict(base=None), CrevkitTypeError, "base"),
        (dict(x=[0.0]), CrevkitValueError, "x"),
        (dict(y=[[0.0, 1.0]]), CrevkitValueError, "y"),
        (dict(x=["a", "b"]), CrevkitTypeError, "x"),
        (dict(share=[0.0, 2.0]), CrevkitValueError, "share"),
        (dict(reliability=[1.0, np.nan]), CrevkitValueError, "reliability"),
        (dict(reliability=[1.0]), CrevkitValueError, "reliability"),
        (dict(groups=["a"]), CrevkitValueError, "groups"),
        (dict(block_size=0), CrevkitValueError, "block_size"),
    ]:
        with pytest.raises(err, match=name):
            call(**{"radius": 10.0, **kw})
    plain = shot_probabilities(ROWS, DIST, LABELS)
    snr = np.full(4, 5.0)
    with pytest.raises(CrevkitValueError, match="x and y"):
        apply_snr(plain, snr, LABELS, neighbour_radius=100.0)
    with pytest.raises(CrevkitValueError, match="neighbour_radius"):
        apply_snr(plain, snr, LABELS, x=np.zeros(4), y=np.zeros(4), neighbour_radius=-1.0)
    with pytest.raises(CrevkitValueError, match="neighbour_kernel"):
        apply_snr(plain, snr, LABELS, x=np.zeros(4), y=np.zeros(4), neighbour_radius=1.0, neighbour_kernel="box")
    with pytest.raises(CrevkitTypeError, match="prior_weight"):
        apply_snr(plain, snr, LABELS, prior_weight="1")


def test_config_has_the_spatial_prior_keys():
    from crevkit.errors import ConfigError
    from crevkit.pipeline.config import template, validate_config

    cfg = validate_config({})
    assert cfg["probability"]["neighbour_radius"] > 0 and cfg["probability"]["prior_weight"] > 0
    assert "neighbour_radius" in template() and "prior_weight" in template()
    assert validate_config({"probability": {"neighbour_radius": 0}})["probability"]["neighbour_radius"] == 0
    with pytest.raises(ConfigError, match="probability.neighbour_radius"):
        validate_config({"probability": {"neighbour_radius": -5}})
    with pytest.raises(ConfigError, match="probability.neighbour_kernel"):
        validate_config({"probability": {"neighbour_kernel": "box"}})
