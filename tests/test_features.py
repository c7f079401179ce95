"""Tile features: normalization and DCT compression (kernels, twins, invariances, errors)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from hypothesis import given, settings
from hypothesis import strategies as st

import crevkit
import features_synth as S
from crevkit import _core
from crevkit import reference as ref
from crevkit.errors import CrevkitTypeError, CrevkitValueError
from crevkit.features import (
    DEFAULT_KEEP,
    SENSOR_TOLERANCE_M,
    choose_keep,
    dct_order,
    disc_mask,
    normalized_size,
    reconstruction_errors,
    resolve_keep,
    triangle_count,
)

M = 141  # normalized side for 200 x 200 tiles
DISC = disc_mask(M)


@pytest.fixture(scope="module")
def synth():
    tiles, labels = S.make_tiles(24, seed=7)
    return tiles, labels


@pytest.fixture(scope="module")
def normalized(synth):
    return crevkit.normalize_tiles(synth[0], n_threads=2)


def rms(a, mask=DISC):
    d = np.asarray(a, dtype=np.float64)[..., mask]
    return float(np.sqrt(np.mean(d * d)))


# ---------------------------------------------------------------- shapes and twins


def test_output_size_and_fields(normalized, synth):
    assert normalized_size((200, 200)) == 141
    assert normalized.tiles.shape == (len(synth[0]), M, M) and normalized.tiles.dtype == np.float32
    for name in ("slope", "aspect", "rotation"):
        assert getattr(normalized, name).shape == (len(synth[0]),)
    assert np.all(normalized.normal[:, 2] > 0)
    np.testing.assert_allclose(np.linalg.norm(normalized.normal, axis=1), 1.0, atol=1e-12)
    assert np.all((normalized.slope >= 0) & (normalized.slope <= 90))
    assert np.all((normalized.aspect >= 0) & (normalized.aspect < 360))
    assert np.all((normalized.rotation > -90) & (normalized.rotation <= 270))
    assert np.all(crevkit.normalize_tiles(synth[0][:2], orient=False).rotation == 0)


@pytest.mark.parametrize("orient", [False, True])
@pytest.mark.parametrize("fill", ["edge", "zero"])
def test_normalize_equals_twin(synth, orient, fill):
    tiles = synth[0][:6]
    # add a real tilt so the fixed-point iterations matter
    x, y = S.grid()
    tiles = (tiles + (0.08 * x - 0.05 * y)[None]).astype(np.float32)
    a = crevkit.normalize_tiles(tiles, orient=orient, fill=fill, n_threads=2)
    b = ref.normalize_tiles(tiles, orient=orient, fill=fill)
    np.testing.assert_allclose(a.tiles, b.tiles, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.normal, b.normal, rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.slope, b.slope, atol=1e-8)
    np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-6)
    if fill == "zero":
        assert np.all(a.tiles[:, ~DISC] == 0)


def test_non_square_and_small_size_equal_twin():
    rng = np.random.default_rng(3)
    tiles = rng.normal(size=(3, 40, 64)).astype(np.float32)
    a = crevkit.normalize_tiles(tiles, pixel_size=0.7, size=20, iterations=5, n_threads=1)
    b = ref.normalize_tiles(tiles, pixel_size=0.7, size=20, iterations=5)
    assert a.tiles.shape == (3, 20, 20)
    np.testing.assert_allclose(a.tiles, b.tiles, rtol=1e-4, atol=1e-4)


def test_threads_give_identical_results(synth):
    a = crevkit.normalize_tiles(synth[0][:8], orient=True, n_threads=1)
    b = crevkit.normalize_tiles(synth[0][:8], orient=True, n_threads=2)
    np.testing.assert_array_equal(a.tiles, b.tiles)
    c1 = crevkit.dct_compress(a.tiles, n_threads=1)
    c2 = crevkit.dct_compress(a.tiles, n_threads=2)
    np.testing.assert_array_equal(c1, c2)


def test_single_tile_is_unbatched(synth):
    one = crevkit.normalize_tiles(synth[0][0])
    assert one.tiles.shape == (M, M) and np.ndim(one.slope) == 0
    c = crevkit.dct_compress(one.tiles, 100)
    assert c.shape == (100,)
    assert crevkit.dct_decompress(c, (M, M)).shape == (M, M)


# ---------------------------------------------------------------- planes: conventions


@settings(max_examples=25, deadline=None)
@given(slope=st.floats(0.0, 60.0), aspect=st.floats(0.0, 359.9), offset=st.floats(-50, 50))
def test_plane_normalizes_to_zero(slope, aspect, offset):
    # downslope direction `aspect` (clockwise from north) -> the surface rises towards aspect + 180
    g = np.tan(np.radians(slope))
    az = np.radians(aspect)
    a, b = -g * np.sin(az), -g * np.cos(az)  # z = a x + b y: gradient points upslope
    x, y = S.grid()
    tile = (a * x + b * y + offset).astype(np.float32)
    res = crevkit.normalize_tiles(tile)
    span = 1.0 + np.abs(tile).max()  # float32 rounding of the input scales with the heights
    assert np.abs(res.tiles).max() < 2e-6 * span
    assert res.slope == pytest.approx(slope, abs=1e-3)
    if slope > 0.01:
        d = (res.aspect - aspect + 180) % 360 - 180
        assert abs(d) < 0.01 * max(1.0, 1.0 / slope)


@pytest.mark.parametrize(
    "a,b,aspect",
    [(0.1, 0.0, 270.0), (-0.1, 0.0, 90.0), (0.0, 0.1, 180.0), (0.0, -0.1, 0.0), (0.1, 0.1, 225.0)],
)
def test_aspect_convention(a, b, aspect):
    # aspect = downslope direction, degrees clockwise from north; rows run north -> south
    x, y = S.grid()
    res = crevkit.normalize_tiles((a * x + b * y).astype(np.float32))
    assert res.aspect == pytest.approx(aspect, abs=1e-6)
    assert res.slope == pytest.approx(np.degrees(np.arctan(np.hypot(a, b))), abs=1e-6)
    assert res.normal[2] > 0


def test_flat_tile_has_zero_slope_and_aspect():
    res = crevkit.normalize_tiles(np.zeros((1, 32, 32), np.float32))
    assert res.slope[0] == 0 and res.aspect[0] == 0
    assert np.all(res.tiles == 0)


# ---------------------------------------------------------------- invariances


def test_rot90_and_rot180_are_equivariant(synth):
    tiles = synth[0][:6]
    base = crevkit.normalize_tiles(tiles, orient=False)
    for k in (1, 2, 3):
        turned = crevkit.normalize_tiles(np.ascontiguousarray(np.rot90(tiles, k, axes=(1, 2))), orient=False)
        np.testing.assert_allclose(turned.tiles, np.rot90(base.tiles, k, axes=(1, 2)), atol=1e-4)
        np.testing.assert_allclose(turned.slope, base.slope, atol=1e-6)
        # np.rot90 turns the surface counter-clockwise: the aspect (clockwise) drops by 90 k
        d = (turned.aspect - (base.aspect - 90 * k)) % 360
        assert np.all(np.minimum(d, 360 - d)[base.slope > 0.01] < 1e-4)


def test_rot90_with_orientation_gives_the_same_tile(synth):
    tiles = synth[0][:6]
    base = crevkit.normalize_tiles(tiles, orient=True)
    for k in (1, 2):
        turned = crevkit.normalize_tiles(np.ascontiguousarray(np.rot90(tiles, k, axes=(1, 2))), orient=True)
        np.testing.assert_allclose(turned.tiles, base.tiles, atol=1e-3)


TILT_CASES = [(3.0, 123.0), (5.0, 0.0), (10.0, 45.0), (10.0, 250.0)]


@pytest.mark.parametrize("orient", [False, True])
@pytest.mark.parametrize("slope,axis", TILT_CASES)
def test_rigid_tilt_smooth_surface(slope, axis, orient):
    f = S.add(S.ridges(1.0, 20.0, 30.0), S.bumps(1.0, 50.0, np.random.default_rng(1)))
    t0 = S.sample(f, demean=False)
    t1 = S.sample(S.tilted(f, slope, axis), demean=False)
    res = crevkit.normalize_tiles(np.stack([t0, t1]), orient=orient)
    # a rotation by `slope` turns the fitted normal by at most that much (the fit support differs a little)
    assert np.degrees(np.arccos(np.clip(res.normal[0] @ res.normal[1], -1, 1))) < slope + 0.3
    # stated tolerance: 2 cm RMS, 6 cm max over the disc (bilinear resampling of a tilted
    # grid, and the plane is fitted over a slightly different patch of the surface)
    d = res.tiles[0] - res.tiles[1]
    assert rms(d) < 0.02 and np.abs(d[DISC]).max() < 0.06
    c = crevkit.dct_compress(res.tiles)
    # features: orthonormal, so |dc| / M is an RMS height difference over the square (corners = rim values)
    assert np.linalg.norm(c[0] - c[1]) / M < 0.02


@pytest.mark.parametrize("slope,axis", TILT_CASES)
def test_rigid_tilt_crevassed_surface(slope, axis):
    f = S.add(S.ridges(0.5, 30.0, 30.0), S.troughs(3.0, 6.0, 25.0, 100.0, smooth=1.0))
    t0 = S.sample(f, demean=False)
    t1 = S.sample(S.tilted(f, slope, axis), demean=False)
    res = crevkit.normalize_tiles(np.stack([t0, t1]), orient=False)
    d = res.tiles[0] - res.tiles[1]
    # stated tolerance: 5 cm RMS, 25 cm max (steep trough walls, bilinear interpolation)
    assert rms(d) < 0.05 and np.abs(d[DISC]).max() < 0.25


@pytest.mark.parametrize("angle", [90.0, 180.0, 17.0, 61.0, 133.0, 250.0])
def test_orientation_any_angle(angle):
    f = S.add(S.troughs(3.0, 6.0, 20.0, 70.0, offset=3.0, smooth=1.0), S.ridges(0.4, 35.0, 70.0, 1.0))
    t0 = S.sample(f, demean=False)
    t1 = S.sample(S.rotated(f, angle), demean=False)
    res = crevkit.normalize_tiles(np.stack([t0, t1]), orient=True)
    turn = (res.rotation[1] - res.rotation[0] - angle + 180) % 360 - 180
    assert abs(turn) < 0.1
    d = res.tiles[0] - res.tiles[1]
    # stated tolerance (orientation on, any angle): 2 cm RMS, 15 cm max over the disc
    assert rms(d) < 0.02 and np.abs(d[DISC]).max() < 0.15


def test_orientation_rule_puts_dominant_gradient_on_columns():
    f = S.add(S.ridges(1.0, 20.0, 30.0), S.plane(0.0, 0.0))
    res = crevkit.normalize_tiles(S.sample(f), orient=True)
    gy, gx = np.gradient(res.tiles.astype(np.float64))
    inner = disc_mask(M) & (np.hypot(*np.meshgrid(np.arange(M) - 70, np.arange(M) - 70)) < 60)
    assert np.sum(gx[inner] ** 2) > 50 * np.sum(gy[inner] ** 2)
    # 180-degree rule: the height moment along +x is non-negative
    xs = np.arange(M) - 70.0
    assert np.sum((res.tiles * xs[None, :])[DISC]) >= 0


# ---------------------------------------------------------------- DCT


def test_zigzag_order():
    u, v = dct_order((5, 4))
    assert len(u) == 20 and len(set(zip(u.tolist(), v.tolist()))) == 20
    key = list(zip((u + v).tolist(), u.tolist()))
    assert key == sorted(key)
    assert (u[0], v[0]) == (0, 0) and (u[1], v[1]) == (0, 1) and (u[2], v[2]) == (1, 0)
    for d in range(1, 9):
        k = triangle_count((5, 4), d)
        assert k == int(np.sum(u + v < d))


def test_keep_resolution():
    assert resolve_keep((141, 141)) == round(DEFAULT_KEEP * 141 * 141)
    assert resolve_keep((10, 10), 7) == 7
    assert resolve_keep((10, 10), 0.5) == 50
    assert resolve_keep((10, 10), 1.0) == 100
    for bad, err in [(0, CrevkitValueError), (101, CrevkitValueError), (0.0, CrevkitValueError),
                     (1.5, CrevkitValueError), (True, CrevkitTypeError), ("10", CrevkitTypeError)]:
        with pytest.raises(err):
            resolve_keep((10, 10), bad)


@pytest.mark.parametrize("shape", [(141, 141), (16, 24), (1, 7)])
def test_full_keep_equals_scipy_and_round_trips(shape):
    rng = np.random.default_rng(0)
    tiles = (rng.normal(size=(4,) + shape) * 3).astype(np.float32)
    c = crevkit.dct_compress(tiles, keep=1.0)
    u, v = dct_order(shape)
    full = scipy.fft.dctn(tiles.astype(np.float64), axes=(1, 2), norm="ortho")[:, u, v]
    scale = np.abs(full).max()
    np.testing.assert_allclose(c, full, rtol=0, atol=2e-6 * scale)
    back = crevkit.dct_decompress(c, shape)
    np.testing.assert_allclose(back, tiles, rtol=0, atol=2e-6 * np.abs(tiles).max())


@settings(max_examples=40, deadline=None)
@given(ny=st.integers(1, 40), nx=st.integers(1, 40), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_any_shape_and_keep_match_scipy_and_twin(ny, nx, frac, seed):
    rng = np.random.default_rng(seed)
    tiles = rng.normal(size=(3, ny, nx)).astype(np.float32)
    k = max(1, int(frac * ny * nx))
    c = crevkit.dct_compress(tiles, k, n_threads=2)
    u, v = dct_order((ny, nx), k)
    full = scipy.fft.dctn(tiles.astype(np.float64), axes=(1, 2), norm="ortho")
    np.testing.assert_allclose(c, full[:, u, v], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, ref.dct_compress(tiles, k), rtol=1e-5, atol=1e-5)
    kept = np.zeros_like(full)
    kept[:, u, v] = full[:, u, v]
    expect = scipy.fft.idctn(kept, axes=(1, 2), norm="ortho")
    np.testing.assert_allclose(crevkit.dct_decompress(c, (ny, nx), n_threads=2), expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ref.dct_decompress(c, (ny, nx)), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keep", [1, 37, 0.05, DEFAULT_KEEP, 0.6])
def test_compress_and_decompress_equal_twins(normalized, keep):
    tiles = normalized.tiles[:6]
    a = crevkit.dct_compress(tiles, keep)
    b = ref.dct_compress(tiles, keep)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    u, v = dct_order((M, M), a.shape[1])
    full = scipy.fft.dctn(tiles.astype(np.float64), axes=(1, 2), norm="ortho")[:, u, v]
    np.testing.assert_allclose(a, full, rtol=1e-4, atol=1e-4)
    ra = crevkit.dct_decompress(a, (M, M))
    rb = ref.dct_decompress(a, (M, M))
    np.testing.assert_allclose(ra, rb, rtol=1e-4, atol=1e-4)


def test_truncation_is_the_least_squares_projection(normalized):
    # orthonormal basis: the reconstruction error energy equals the dropped coefficients' energy
    tiles = normalized.tiles[:4]
    k = 2000
    rec = crevkit.dct_decompress(crevkit.dct_compress(tiles, k), (M, M)).astype(np.float64)
    full = scipy.fft.dctn(tiles.astype(np.float64), axes=(1, 2), norm="ortho")
    u, v = dct_order((M, M))
    dropped = np.sum(full[:, u[k:], v[k:]] ** 2, axis=1)
    err = np.sum((rec - tiles) ** 2, axis=(1, 2))
    np.testing.assert_allclose(err, dropped, rtol=1e-3)


# Stated tolerance at the default keep (crevkit.features module docs, "Reconstruction
# accuracy"): surfaces without crevasses stay inside the 0.1-0.2 m vertical accuracy of
# ATM/DMS DEMs; crevassed tiles are bounded relative to their relief (the crevasse depth),
# because walls, bottoms and bridge ends are steps of metres between 0.5 m pixels.
SMOOTH_RMS_M = 0.05
SMOOTH_MAX_M = 0.20  # upper end of the DEM accuracy; the max is dropped 5 cm pixel roughness
CREVASSE_RMS_OF_RELIEF = 0.10
TROUGH_MAX_OF_RELIEF = 0.15  # smooth-walled troughs >= 3 m wide (features_synth)
SCENE_MAX_OF_RELIEF = 0.75  # scene crevasses: vertical walls, slots, abrupt bridge ends


def _error_report(name, tiles, kinds):
    """Per-tile (rms, max, relief) at the default keep, and a printed table per kind."""
    c = crevkit.dct_compress(tiles)
    assert c.shape[1] == resolve_keep((M, M)) and c.dtype == np.float32
    rms_e, max_e = reconstruction_errors(tiles, c, mask=DISC)
    assert np.all(np.isfinite(rms_e)) and np.all(max_e >= rms_e)
    relief = np.ptp(tiles[:, DISC].astype(np.float64), axis=1)
    print(f"\n{name}: reconstruction errors over the disc at keep={c.shape[1]} (m)")
    for kind in sorted(set(kinds)):
        s = kinds == kind
        print(f"  {kind:13s} n={s.sum():3d}  RMS median {np.median(rms_e[s]):.3f} max {rms_e[s].max():.3f}"
              f"  | max error median {np.median(max_e[s]):.3f} max {max_e[s].max():.3f}"
              f"  | relief median {np.median(relief[s]):.2f}")
    return rms_e, max_e, relief


def test_default_keep_errors_on_synthetic_scenes(synth, normalized):
    _, labels = synth
    kinds = np.array(S.CLASSES)[labels]
    rms_e, max_e, relief = _error_report("features_synth", normalized.tiles, kinds)
    smooth = kinds != "crevasses"
    assert rms_e[smooth].max() <= SMOOTH_RMS_M, rms_e[smooth]
    assert max_e[smooth].max() <= SMOOTH_MAX_M, max_e[smooth]
    crev = ~smooth
    assert crev.any()
    assert np.all(rms_e[crev] <= CREVASSE_RMS_OF_RELIEF * relief[crev]), rms_e[crev] / relief[crev]
    assert np.all(max_e[crev] <= TROUGH_MAX_OF_RELIEF * relief[crev]), max_e[crev] / relief[crev]
    # these resolved troughs also meet the sensor precision in RMS
    assert rms_e.max() < SENSOR_TOLERANCE_M


@pytest.fixture(scope="module")
def scene_tiles():
    """Tiles of crevkit.scenes (seed 0): one at each crevasse field's centre, six without crevasses."""
    from crevkit.scenes import make_scene

    sc = make_scene(seed=0)
    x, y = S.grid()
    tiles, kinds = [], []
    for f in sc.active_fields:
        tiles.append(sc.height(f.cx + x, f.cy + y))
        kinds.append("chaotic" if len(f.sets) > 1 else f"{f.sets[0].profile} crevasses")
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = sc.bounds
    plain = 0
    while plain < 6:
        cx, cy = rng.uniform(x0 + 50, x1 - 50), rng.uniform(y0 + 50, y1 - 50)
        if sc.crevasse_depth(cx + x, cy + y).max() == 0:
            tiles.append(sc.height(cx + x, cy + y))
            kinds.append("no crevasses")
            plain += 1
    tiles = np.stack([(t - t.mean()).astype(np.float32) for t in tiles])
    return crevkit.normalize_tiles(tiles, n_threads=2).tiles, np.array(kinds)


def test_default_keep_errors_on_scene_tiles(scene_tiles):
    tiles, kinds = scene_tiles
    rms_e, max_e, relief = _error_report("crevkit.scenes seed 0", tiles, kinds)
    plain = kinds == "no crevasses"
    assert rms_e[plain].max() <= SMOOTH_RMS_M and max_e[plain].max() <= SMOOTH_MAX_M
    crev = ~plain
    assert crev.sum() >= 20
    assert np.all(rms_e[crev] <= CREVASSE_RMS_OF_RELIEF * relief[crev]), rms_e[crev] / relief[crev]
    assert np.all(max_e[crev] <= SCENE_MAX_OF_RELIEF * relief[crev]), max_e[crev] / relief[crev]
    # no absolute bound: metre-scale steps at 0.5 m pixels (module docs)
    assert max_e[crev].max() > SENSOR_TOLERANCE_M


def test_tolerance_mode_meets_max_error(synth, normalized):
    tiles = normalized.tiles
    k = choose_keep(tiles, SENSOR_TOLERANCE_M, metric="max", mask=DISC, sample=len(tiles))
    c = crevkit.dct_compress(tiles, tolerance=SENSOR_TOLERANCE_M, mask=DISC, sample=len(tiles))
    assert c.shape[1] == k
    _, max_e = reconstruction_errors(tiles, c, mask=DISC)
    assert max_e.max() <= SENSOR_TOLERANCE_M
    # minimal: one diagonal fewer breaks the tolerance
    d = next(d for d in range(1, 2 * M) if triangle_count((M, M), d) == k)
    _, max_less = reconstruction_errors(tiles, crevkit.dct_compress(tiles, triangle_count((M, M), d - 1)), mask=DISC)
    assert max_less.max() > SENSOR_TOLERANCE_M
    # the twin picks the same count
    assert ref.dct_compress(tiles[:8], tolerance=0.3, mask=DISC).shape[1] == choose_keep(tiles[:8], 0.3, mask=DISC)
    # rms mode needs fewer
    assert choose_keep(tiles, SENSOR_TOLERANCE_M, metric="rms", mask=DISC) < k


# ---------------------------------------------------------------- bad input


def test_bad_input_normalize():
    good = np.zeros((2, 32, 32), np.float32)
    with pytest.raises(CrevkitTypeError):
        crevkit.normalize_tiles(good.astype(np.complex64))
    with pytest.raises(CrevkitTypeError):
        crevkit.normalize_tiles("tiles")
    with pytest.raises(CrevkitValueError, match="dimensional"):
        crevkit.normalize_tiles(np.zeros(10, np.float32))
    bad = good.copy()
    bad[1, 3, 4] = np.nan
    with pytest.raises(CrevkitValueError, match="NaN"):
        crevkit.normalize_tiles(bad)
    bad[1, 3, 4] = np.inf
    with pytest.raises(CrevkitValueError, match="infinite"):
        crevkit.normalize_tiles(bad)
    with pytest.raises(CrevkitValueError, match="too small"):
        crevkit.normalize_tiles(np.zeros((2, 7, 50), np.float32))
    with pytest.raises(CrevkitValueError, match="empty"):
        crevkit.normalize_tiles(np.zeros((0, 32, 32), np.float32))
    with pytest.raises(CrevkitValueError, match="pixel_size"):
        crevkit.normalize_tiles(good, pixel_size=0)
    with pytest.raises(CrevkitValueError, match="size"):
        crevkit.normalize_tiles(good, size=23)  # > floor(32 / sqrt 2) = 22
    with pytest.raises(CrevkitValueError, match="iterations"):
        crevkit.normalize_tiles(good, iterations=0)
    with pytest.raises(CrevkitValueError, match="fill"):
        crevkit.normalize_tiles(good, fill="nan")
    # float64 and non-contiguous input are converted once (documented)
    a = crevkit.normalize_tiles(good.astype(np.float64)[:, ::1, ::1])
    b = crevkit.normalize_tiles(np.zeros((2, 64, 32), np.float32)[:, ::2, :])
    assert a.tiles.shape == b.tiles.shape == (2, 22, 22)


def test_bad_input_dct():
    good = np.zeros((2, 16, 16), np.float32)
    with pytest.raises(CrevkitValueError, match="NaN"):
        crevkit.dct_compress(np.full((1, 16, 16), np.nan, np.float32))
    with pytest.raises(CrevkitValueError):
        crevkit.dct_compress(good, keep=257)
    with pytest.raises(CrevkitValueError, match="not both"):
        crevkit.dct_compress(good, keep=10, tolerance=0.1)
    with pytest.raises(CrevkitValueError, match="metric"):
        crevkit.dct_compress(good + 1, tolerance=0.1, metric="mean")
    with pytest.raises(CrevkitValueError, match="tolerance"):
        crevkit.dct_compress(good, tolerance=-1)
    with pytest.raises(CrevkitValueError, match="more than"):
        crevkit.dct_decompress(np.zeros((2, 300), np.float32), (16, 16))
    with pytest.raises(CrevkitValueError, match="shape"):
        crevkit.dct_decompress(np.zeros((2, 30), np.float32), (16,))
    with pytest.raises(CrevkitTypeError):
        crevkit.dct_decompress(np.zeros((2, 30), np.float32), (16.0, 16))
    with pytest.raises(CrevkitValueError, match="dimensional"):
        crevkit.dct_decompress(np.zeros((2, 3, 30), np.float32), (16, 16))


def test_raw_kernels_refuse_unconverted_buffers():
    u, v = dct_order((16, 16), 10)
    with pytest.raises(TypeError):
        _core.dct_compress(np.zeros((2, 16, 16), np.float64), u, v, 1)
    with pytest.raises(TypeError):
        _core.normalize_tiles(np.zeros((2, 32, 64), np.float32)[:, :, ::2], 0.5, 22, 3, False, True, 1)
    with pytest.raises(CrevkitValueError, match="outside"):
        _core.dct_compress(np.zeros((2, 16, 16), np.float32), u + 16, v, 1)
    with pytest.raises(CrevkitValueError, match="out_size"):
        _core.normalize_tiles(np.zeros((2, 32, 32), np.float32), 0.5, 40, 3, False, True, 1)
    with pytest.raises(CrevkitValueError, match="8 x 8"):
        _core.normalize_tiles(np.zeros((2, 4, 4), np.float32), 0.5, 2, 3, False, True, 1)
    with pytest.raises(CrevkitValueError, match="one column"):
        _core.dct_decompress(np.zeros((2, 9), np.float32), u, v, 16, 16, 1)
