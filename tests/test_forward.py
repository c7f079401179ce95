"""The forward model: kernel vs NumPy twin, closed forms, invariances, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import crevkit
from crevkit import _core, reference
from crevkit.errors import CrevkitError, CrevkitTypeError, CrevkitValueError
from crevkit.instruments import SPEED_OF_LIGHT, get_instrument
from crevkit.simulate import make_plan

C_M_PER_NS = SPEED_OF_LIGHT * 1e-9


def assert_twin_equal(a: np.ndarray, b: np.ndarray) -> None:
    """rtol 1e-4 on every sample, with an absolute floor at 1e-7 of the peak
    (below float32 resolution of the peak: the kernel sums bins in float32)."""
    assert a.shape == b.shape and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7 * float(np.abs(b).max()))


def random_tiles(rng, n=6, shape=(200, 200), relief=5.0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] * 0.5
    out = []
    for _ in range(n):
        gx, gy = rng.normal(scale=0.03, size=2)
        z = gx * xx + gy * yy + relief * np.sin(xx / rng.uniform(3, 20) + rng.uniform(0, 6))
        z += rng.normal(scale=0.1, size=shape)
        # a V-shaped crevasse across the tile
        d = np.abs(xx * math.cos(rng.uniform(0, math.pi)) + yy * math.sin(rng.uniform(0, math.pi)) - 50)
        z -= np.clip(15 * (1 - d / 3.0), 0, None)
        out.append(z)
    return np.asarray(out, dtype=np.float32)


def moments(wave: np.ndarray, bin_ns: float = 1.0) -> tuple[float, float]:
    t = np.arange(wave.size) * bin_ns
    w = wave.astype(np.float64) / wave.sum()
    mean = float((t * w).sum())
    return mean, float(((t - mean) ** 2 * w).sum())


def plane(theta_deg: float, aspect_deg: float, shape=(200, 200), pixel=0.5) -> np.ndarray:
    ny, nx = shape
    x = (np.arange(nx) - (nx - 1) / 2) * pixel
    y = ((ny - 1) / 2 - np.arange(ny)) * pixel
    xx, yy = np.meshgrid(x, y)
    a = math.radians(aspect_deg)
    return (math.tan(math.radians(theta_deg)) * (xx * math.sin(a) + yy * math.cos(a))).astype(np.float32)


def truncation_factor(half_width_m: float, sigma_m: float) -> float:
    """Variance of a unit Gaussian truncated to ±a, relative to the untruncated one."""
    a = half_width_m / sigma_m
    phi = math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    return 1.0 - 2.0 * a * phi / math.erf(a / math.sqrt(2))


# ---------------------------------------------------------------- kernel == twin

OPTION_SETS = [
    {},
    {"incidence_weighting": True},
    {"off_nadir_angle": 4.0, "off_nadir_azimuth": 33.0},
    {"off_nadir_angle": 2.0, "off_nadir_azimuth": 250.0, "incidence_weighting": True},
    {"footprint_minor_diameter": 40.0, "footprint_azimuth": 20.0},
    {"pulse": np.exp(-0.5 * ((np.arange(48) - 21.3) / 2.9) ** 2) + 0.01},
    {"pulse": np.exp(-0.5 * ((np.arange(30) - 12) / 4.0) ** 2), "pulse_dt_ns": 0.5},
    {"normalize": False},
    {"n_samples": 200, "lead_ns": 25.0},
    {"bin_ns": 0.5, "pulse_fwhm_ns": 4.0},
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize("instrument", ["glas", "lvis", "gedi"])
def test_kernel_equals_twin(options, instrument):
    rng = np.random.default_rng(1)
    tiles = random_tiles(rng, n=4)
    tiles[1, :30, :40] = np.nan  # nodata corner
    assert_twin_equal(crevkit.simulate_waveforms(tiles, 0.5, instrument, **options),
                      reference.simulate_waveforms(tiles, 0.5, instrument, **options))


@given(
    ny=st.integers(1, 48),
    nx=st.integers(1, 48),
    pixel=st.floats(0.05, 5.0),
    relief=st.floats(0.0, 40.0),
    incidence=st.booleans(),
    off_nadir=st.sampled_from([0.0, 0.3, 5.0]),
    fwhm=st.floats(1.5, 20.0),
    nan_fraction=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_equals_twin_hypothesis(ny, nx, pixel, relief, incidence, off_nadir, fwhm, nan_fraction, seed):
    rng = np.random.default_rng(seed)
    tiles = (rng.normal(size=(3, ny, nx)) * relief).astype(np.float32)
    tiles[rng.random(tiles.shape) < nan_fraction] = np.nan
    tiles[:, 0, 0] = 0.0  # at least one valid pixel per tile
    kw = dict(incidence_weighting=incidence, off_nadir_angle=off_nadir, off_nadir_azimuth=77.0,
              pulse_fwhm_ns=fwhm, on_empty="zero")
    a = crevkit.simulate_waveforms(tiles, pixel, **kw)
    b = reference.simulate_waveforms(tiles, pixel, **kw)
    assert_twin_equal(a, b)


def test_threads_do_not_change_bits():
    tiles = random_tiles(np.random.default_rng(2), n=40)
    one = crevkit.simulate_waveforms(tiles, n_threads=1)
    two = crevkit.simulate_waveforms(tiles, n_threads=2)
    assert np.array_equal(one, two)


# ---------------------------------------------------------------- physics

@pytest.mark.parametrize("theta", [0.0, 0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("aspect", [0.0, 30.0, 135.0])
def test_tilted_plane_closed_form(theta, aspect):
    ins = get_instrument("glas")
    sigma_pulse = ins.pulse_fwhm_ns / (2 * math.sqrt(2 * math.log(2)))
    sigma_f = ins.footprint_sigma
    surface = (2 * sigma_f * math.tan(math.radians(theta)) / C_M_PER_NS) ** 2
    closed = sigma_pulse**2 + surface
    _, var = moments(crevkit.simulate_waveforms(plane(theta, aspect)))
    # The 100 m tile truncates the footprint at ±2.86 σ: that (and only that)
    # narrows the surface term; with it the match is far tighter than 2 %.
    truncated = sigma_pulse**2 + surface * truncation_factor(50.0, sigma_f)
    assert abs(var - truncated) / truncated < 0.005
    assert abs(math.sqrt(var) - math.sqrt(closed)) / math.sqrt(closed) < 0.02
    assert abs(var - closed) / closed < 0.03


def test_truncation_explains_the_rest():
    """On a 4x larger tile the footprint is untruncated and the closed form holds to 0.5 %."""
    ins = get_instrument("glas")
    sigma_pulse = ins.pulse_fwhm_ns / (2 * math.sqrt(2 * math.log(2)))
    closed = sigma_pulse**2 + (2 * ins.footprint_sigma * math.tan(math.radians(2.0)) / C_M_PER_NS) ** 2
    _, var_small = moments(crevkit.simulate_waveforms(plane(2.0, 60.0)))
    _, var_big = moments(crevkit.simulate_waveforms(plane(2.0, 60.0, shape=(400, 400))))
    assert abs(var_big - closed) / closed < 0.005
    assert var_small < var_big


def test_off_nadir_flat_surface_is_a_range_tilt():
    """Off-nadir by φ, a flat surface spreads like a plane of slope sin φ (range tilt)."""
    ins = get_instrument("glas")
    sigma_pulse = ins.pulse_fwhm_ns / (2 * math.sqrt(2 * math.log(2)))
    phi = 1.5
    surface = (2 * ins.footprint_sigma * math.sin(math.radians(phi)) / C_M_PER_NS) ** 2
    expected = sigma_pulse**2 + surface * truncation_factor(50.0, ins.footprint_sigma)
    flat = np.zeros((200, 200), np.float32)
    _, var = moments(crevkit.simulate_waveforms(flat, off_nadir_angle=phi, off_nadir_azimuth=120.0))
    assert abs(var - expected) / expected < 0.005


def test_flat_tile_leading_edge_and_unit_sum():
    wave = crevkit.simulate_waveforms(np.zeros((200, 200), np.float32))
    assert wave.shape == (544,) and wave.dtype == np.float32
    assert wave.sum() == pytest.approx(1.0, abs=1e-6)
    mean, var = moments(wave)
    assert int(np.argmax(wave)) == 10
    assert mean == pytest.approx(10.0, abs=1e-3)
    sigma_pulse = 6.0 / (2 * math.sqrt(2 * math.log(2)))
    assert var == pytest.approx(sigma_pulse**2, rel=0.005)


@given(step=st.floats(0.0, 0.15 * 3), seed=st.integers(0, 1000))
def test_sub_bin_centroid_is_exact(step, seed):
    """The centroid equals the footprint-weighted mean delay: no truncation bias."""
    rng = np.random.default_rng(seed)
    z = (rng.uniform(-step, 0.0, size=(60, 60))).astype(np.float32)
    plan = make_plan(z.shape, 0.5)
    w = plan.weights.astype(np.float64)
    delay = plan.lead_bins + (z.max() - z.astype(np.float64)) * plan.bins_per_metre
    expected = float((w * delay).sum() / w.sum())
    mean, _ = moments(crevkit.simulate_waveforms(z))
    assert mean == pytest.approx(expected, abs=2e-3)


def test_constant_height_offset_changes_nothing():
    rng = np.random.default_rng(3)
    tiles = np.round(random_tiles(rng, n=3) * 256) / 256  # exactly representable after the offset
    base = crevkit.simulate_waveforms(tiles.astype(np.float32))
    for offset in (-700.0, 1.0, 2048.0):
        assert np.array_equal(base, crevkit.simulate_waveforms((tiles + offset).astype(np.float32)))


def test_mirroring_changes_nothing():
    tiles = random_tiles(np.random.default_rng(4), n=3)
    base = crevkit.simulate_waveforms(tiles)
    for flipped in (tiles[:, :, ::-1], tiles[:, ::-1, :], tiles[:, ::-1, ::-1], np.swapaxes(tiles, 1, 2)):
        np.testing.assert_allclose(crevkit.simulate_waveforms(flipped), base, rtol=1e-5, atol=1e-9)


def test_time_reversal_is_not_an_invariance():
    """A V trough and a ridge of the same shape give different waveforms."""
    tile = random_tiles(np.random.default_rng(5), n=1)[0]
    a = crevkit.simulate_waveforms(tile)
    b = crevkit.simulate_waveforms(-tile)
    assert np.abs(a - b).max() > 0.1 * a.max()


def test_energy_conservation_before_normalization():
    rng = np.random.default_rng(6)
    tiles = random_tiles(rng, n=3, relief=2.0)
    tiles[2, 50:80, 10:190] = np.nan
    plan = make_plan(tiles.shape[1:], 0.5)
    raw = crevkit.simulate_waveforms(tiles, normalize=False)
    for n in range(3):
        energy = plan.weights.astype(np.float64)[~np.isnan(tiles[n])].sum()
        assert raw[n].sum() == pytest.approx(energy, rel=1e-4)  # float32 bin sums


def test_nan_pixels_renormalize():
    """NaN pixels are excluded: the result equals the same tile with those pixels' weight at 0."""
    tile = random_tiles(np.random.default_rng(7), n=1)[0]
    holed = tile.copy()
    holed[:, :20] = np.nan
    out = crevkit.simulate_waveforms(holed)
    assert out.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(out).all()
    # moving the hole's heights around does not matter: they are not used
    other = holed.copy()
    assert np.array_equal(out, crevkit.simulate_waveforms(other))


def test_incidence_weighting_on_a_plane_is_uniform():
    """A plane has one incidence angle everywhere: normalized output is unchanged."""
    z = plane(1.5, 40.0)
    np.testing.assert_allclose(crevkit.simulate_waveforms(z, incidence_weighting=True),
                               crevkit.simulate_waveforms(z), rtol=1e-4, atol=1e-8)


def test_incidence_weighting_matters_on_crevasses():
    tiles = random_tiles(np.random.default_rng(8), n=2)
    a = crevkit.simulate_waveforms(tiles)
    b = crevkit.simulate_waveforms(tiles, incidence_weighting=True)
    assert np.abs(a - b).max() > 1e-4


def test_sampled_pulse_equals_the_gaussian_it_samples():
    """A user-supplied pulse (e.g. a recorded transmit waveform) is centred on its
    centroid and keeps its width: a sampled Gaussian gives the Gaussian's return."""
    sigma = 2.5
    fwhm = sigma * 2 * math.sqrt(2 * math.log(2))
    t = np.arange(48) * 1.0
    pulse = np.exp(-0.5 * ((t - 20.3) / sigma) ** 2)
    tiles = random_tiles(np.random.default_rng(10), n=3)
    np.testing.assert_allclose(crevkit.simulate_waveforms(tiles, pulse=pulse),
                               crevkit.simulate_waveforms(tiles, pulse_fwhm_ns=fwhm), atol=2e-4 * 0.16)
    # the same pulse sampled every 0.5 ns is resampled onto the 1 ns bins
    fine = np.exp(-0.5 * ((np.arange(96) * 0.5 - 20.3) / sigma) ** 2)
    _, var = moments(crevkit.simulate_waveforms(plane(1.0, 10.0), pulse=fine, pulse_dt_ns=0.5))
    surface = (2 * 17.5 * math.tan(math.radians(1.0)) / C_M_PER_NS) ** 2 * truncation_factor(50.0, 17.5)
    assert var == pytest.approx(sigma**2 + surface, rel=0.01)


def test_instrument_presets():
    tile = np.zeros((80, 80), np.float32)
    assert crevkit.simulate_waveforms(tile, 0.5, "lvis").shape == (432,)
    assert crevkit.simulate_waveforms(tile, 0.5, "gedi").shape == (1000,)
    assert crevkit.simulate_waveforms(tile, 0.5, "glas", n_samples=200).shape == (200,)
    assert get_instrument("glas").footprint_sigma == 17.5
    assert get_instrument("glas").metres_per_bin == pytest.approx(0.1499, abs=1e-4)


def test_all_nan_tile():
    tiles = np.zeros((3, 20, 20), np.float32)
    tiles[1] = np.nan
    with pytest.raises(CrevkitValueError, match=r"tiles: 1 tile\(s\) \(rows 1\) have no valid pixel"):
        crevkit.simulate_waveforms(tiles)
    out = crevkit.simulate_waveforms(tiles, on_empty="zero")
    assert (out[1] == 0).all() and out[0].sum() == pytest.approx(1.0, abs=1e-6)


def test_pixels_beyond_the_window_are_dropped():
    tile = np.zeros((50, 50), np.float32)
    tile[25:, :] = -500.0  # far below the window (544 ns = 81.5 m)
    raw = crevkit.simulate_waveforms(tile, normalize=False)
    plan = make_plan(tile.shape, 0.5)
    assert raw.sum() == pytest.approx(plan.weights[:25].astype(np.float64).sum(), rel=1e-4)  # float32 bin sums


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "tiles, match, exc",
    [
        (np.zeros((2, 3, 4), dtype=complex), "tiles must hold real numbers", CrevkitTypeError),
        (np.array([["a"]]), "tiles must hold real numbers", CrevkitTypeError),
        ("tiles.npy", "tiles must be a numeric array", CrevkitTypeError),
        (np.zeros(10, np.float32), "tiles must be 2 or 3-dimensional", CrevkitValueError),
        (np.zeros((1, 2, 3, 4), np.float32), "tiles must be 2 or 3-dimensional", CrevkitValueError),
        (np.zeros((0, 20, 20), np.float32), "tiles is empty", CrevkitValueError),
        (np.full((2, 5, 5), np.inf, np.float32), "infinite heights", CrevkitValueError),
    ],
)
def test_bad_tiles(tiles, match, exc):
    with pytest.raises(exc, match=match):
        crevkit.simulate_waveforms(tiles)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pixel_size": 0.0}, "pixel_size must be > 0"),
        ({"pixel_size": -1.0}, "pixel_size must be > 0"),
        ({"pixel_size": float("nan")}, "pixel_size must be finite"),
        ({"pixel_size": float("inf")}, "pixel_size must be finite"),
        ({"pulse_fwhm_ns": float("nan")}, "pulse_fwhm_ns must be finite"),
        ({"pulse_fwhm_ns": 0.1}, "narrower than the bin"),
        ({"footprint_diameter": -70.0}, "footprint_diameter must be > 0"),
        ({"n_samples": 10**9}, "n_samples must be <="),
        ({"n_samples": 0}, "n_samples must be >= 1"),
        ({"lead_ns": 600.0}, "lead_ns must lie inside the window"),
        ({"off_nadir_angle": 80.0}, "off_nadir_angle must be in"),
        ({"off_nadir_angle": float("nan")}, "off_nadir_angle must be finite"),
        ({"on_empty": "ignore"}, "on_empty must be"),
        ({"instrument": "icesat3"}, "instrument must be one of"),
        ({"pulse": [0.0, -1.0]}, "pulse has no positive energy"),
        ({"pulse": [1.0, np.nan]}, "pulse contains NaN"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(CrevkitValueError, match=match):
        crevkit.simulate_waveforms(np.zeros((1, 10, 10), np.float32), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"footprint": 70}, "unknown instrument override"), ({"n_threads": 1.5}, "n_threads must be an integer"),
     ({"normalize": "yes"}, "normalize must be True or False"), ({"n_samples": 544.0}, "n_samples must be an integer")],
)
def test_bad_parameter_types(kwargs, match):
    with pytest.raises(CrevkitTypeError, match=match):
        crevkit.simulate_waveforms(np.zeros((1, 10, 10), np.float32), **kwargs)


def test_errors_are_catchable_as_builtins():
    with pytest.raises(ValueError):
        crevkit.simulate_waveforms(np.zeros((1, 10, 10)), pixel_size=0)
    with pytest.raises(CrevkitError):
        crevkit.simulate_waveforms(np.zeros((1, 10, 10)), pixel_size=0)


def test_conversion_is_documented_and_single():
    tiles = random_tiles(np.random.default_rng(9), n=2)
    ref = crevkit.simulate_waveforms(tiles)
    assert np.array_equal(crevkit.simulate_waveforms(tiles.astype(np.float64)), ref)
    fortran = np.asfortranarray(tiles)
    assert np.array_equal(crevkit.simulate_waveforms(fortran), ref)
    assert np.array_equal(crevkit.simulate_waveforms(tiles[:, ::1, ::1]), ref)


def _core_args(**change):
    tiles = change.pop("tiles", np.zeros((2, 20, 20), np.float32))
    plan = make_plan((20, 20), 0.5)
    args = dict(tiles=tiles, weights=plan.weights, tilt_x=plan.tilt_x, tilt_y=plan.tilt_y, pulse=plan.pulse,
                pulse_centre=plan.pulse_centre, n_samples=544, lead_bins=10.0, bins_per_metre=plan.bins_per_metre,
                cos_tilt=1.0, tilted=False, incidence=False, pixel_size=0.5, look=(0.0, 0.0, 1.0), normalize=True,
                n_threads=1)
    args.update(change)
    return args


def test_core_direct_happy_path():
    tiles = np.zeros((2, 20, 20), np.float32)
    out, status = _core.simulate_waveforms(**_core_args(tiles=tiles))
    assert out.shape == (2, 544) and status.tolist() == [0, 0]


@pytest.mark.parametrize(
    "change",
    [
        {"tiles": np.zeros((2, 20, 20), np.float64)},
        {"tiles": np.zeros((2, 20, 40), np.float32)[:, :, ::2]},
        {"pulse": np.ones(5, np.float32)},
    ],
    ids=["float64", "non-contiguous", "pulse-dtype"],
)
def test_core_refuses_conversion(change):
    tiles = np.zeros((2, 20, 20), np.float32)
    with pytest.raises(TypeError):
        _core.simulate_waveforms(**_core_args(**change))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"tiles": np.zeros((20, 20), np.float32)}, "tiles must be 3-dimensional"),
        ({"weights": np.zeros((3, 3), np.float32)}, "weights: shape"),
        ({"pulse_centre": 99}, "pulse_centre"),
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 1 << 30}, "n_samples"),
        ({"lead_bins": float("nan")}, "lead_bins"),
        ({"bins_per_metre": -1.0}, "bins_per_metre"),
        ({"cos_tilt": 2.0}, "cos_tilt"),
        ({"pixel_size": 0.0}, "pixel_size"),
        ({"n_threads": 0}, "n_threads"),
        ({"tilted": True, "tilt_x": np.zeros(3, np.float32)}, "tilt_x"),
        ({"pulse": np.zeros((0,), np.float64)}, "pulse"),
    ],
)
def test_core_backstop_checks(change, match):
    tiles = np.zeros((2, 20, 20), np.float32)
    with pytest.raises(CrevkitValueError, match=match):
        _core.simulate_waveforms(**_core_args(**change))


def test_has_openmp_flag():
    assert isinstance(_core._has_openmp, bool)
    assert _core._omp_max_threads() >= 1
