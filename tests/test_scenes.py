"""Synthetic scenes: frames reopen as documented, and the truth agrees with the rasters."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from crevkit.errors import CrevkitTypeError, CrevkitValueError  # noqa: E402
from crevkit.scenes import NODATA, TRUTH_NODATA, make_scene, make_test_scene, truth_path_for  # noqa: E402


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return make_test_scene(tmp_path_factory.mktemp("scene"), seed=0)


def _centres(fr):
    r = np.arange(fr.height)
    c = np.arange(fr.width)
    xx = fr.left + (c[None, :] + 0.5) * fr.pixel_size
    yy = fr.top - (r[:, None] + 0.5) * fr.pixel_size
    return np.broadcast_arrays(xx, yy)


def test_frames_reopen_with_documented_crs_pixel_size_nodata_extent(written):
    scene, paths = written
    assert len(paths) == len(scene.frames) == 3
    sizes = []
    for path, fr in zip(paths, scene.frames):
        with rasterio.open(path) as ds:
            assert ds.crs.to_epsg() == 3413
            assert ds.count == 1 and ds.dtypes[0] == "float32"
            assert ds.nodata == NODATA
            assert ds.res == pytest.approx((fr.pixel_size, fr.pixel_size))
            assert tuple(ds.bounds) == pytest.approx(fr.bounds)
            assert ds.transform.b == 0 and ds.transform.d == 0
            a = ds.read(1)
        nod = a == NODATA
        assert 0 < nod.mean() < 0.2  # ragged edges / gaps exist but the frame is mostly data
        assert 500 < a[~nod].min() and a[~nod].max() < 3500  # ice-sheet altitude
        sizes.append(fr.pixel_size)
        # each frame inside the scene's strip
        xmin, ymin, xmax, ymax = scene.bounds
        b = fr.bounds
        assert xmin - 1 <= b[0] and b[2] <= xmax + 1 and ymin - 1 <= b[1] and b[3] <= ymax + 1
    assert all(0.44 <= s <= 0.46 for s in sizes)
    assert len(set(sizes)) == len(sizes)  # each frame its own pixel size
    # frames overlap along the strip
    b0, b1 = scene.frames[0].bounds, scene.frames[1].bounds
    assert b1[0] < b0[2]
    meta = json.loads((paths[0].parent / "scene.json").read_text())
    assert meta["crs"] == "EPSG:3413" and meta["params"]["seed"] == 0


def test_rasters_equal_the_analytic_surface_and_truth_masks(written):
    scene, paths = written
    for i, (path, fr) in enumerate(zip(paths, scene.frames)):
        with rasterio.open(path) as ds:
            a = ds.read(1)
        with rasterio.open(truth_path_for(path)) as ds:
            assert ds.crs.to_epsg() == 3413 and ds.transform == rasterio.open(path).transform
            truth = ds.read(1)
        xx, yy = _centres(fr)
        valid = a != NODATA
        assert np.array_equal(truth == TRUTH_NODATA, ~valid)
        h = scene.height(xx, yy)
        np.testing.assert_array_equal(a[valid], h[valid].astype(np.float32))
        mask = scene.crevasse_mask(xx, yy)
        np.testing.assert_array_equal(truth[valid] == 1, mask[valid])
        # inside a crevasse the surface is lowered by the depth profile
        depth = scene.crevasse_depth(xx, yy)
        m = mask & valid
        assert m.sum() > 50
        assert (depth[m] > 0).all()
        surf = scene.surface(xx, yy)
        np.testing.assert_allclose(surf[m] - a[m], depth[m], atol=2e-3)
        # outside crevasses only snow-bridge sags (<= 0.25 m) lower the surface
        assert depth[~mask].max() <= 0.25 + 1e-9


def test_crevasse_is_lower_than_its_surroundings_by_its_depth():
    scene = make_scene(seed=3, length_m=2000, width_m=800, n_frames=2, crevasse_density=0.5)
    f = next(f for f in scene.active_fields if len(f.sets) == 1)
    s = f.sets[0]
    c, sn = math.cos(s.angle), math.sin(s.angle)
    # walk across the field centre along the set's across-direction
    t = np.arange(-f.half_across * 0.5, f.half_across * 0.5, 0.05)
    x = f.cx + t * c
    y = f.cy + t * sn
    d = scene.crevasse_depth(x, y)
    k = int(np.argmax(d))
    assert d[k] > 1.0  # a real crevasse: metres deep
    # neighbours just outside its top width are not lowered by it
    j = k
    while j < len(d) - 1 and d[j] > 0.3:
        j += 1
    i = k
    while i > 0 and d[i] > 0.3:
        i -= 1
    z = scene.height(x, y)
    rim = 0.5 * (z[i] + z[j])
    assert rim - z[k] == pytest.approx(d[k], abs=0.3 + 0.05 * d[k])


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, written):
    scene, paths = written
    _, again = make_test_scene(tmp_path / "a", seed=0)
    for p, q in zip(paths, again):
        assert p.read_bytes() == q.read_bytes()
        assert truth_path_for(p).read_bytes() == truth_path_for(q).read_bytes()
    other = make_scene(seed=1, length_m=700.0, width_m=250.0, n_frames=3, crevasse_density=0.5, overlap=0.5)
    assert other.frames[0].pixel_size != scene.frames[0].pixel_size or other.fields[0] != scene.fields[0]


def test_icebridge_quirk_frames_hold_the_same_float_bytes(tmp_path, written):
    scene, paths = written
    _, qpaths = make_test_scene(tmp_path, seed=0, icebridge_quirks=True)
    for p, q in zip(paths, qpaths):
        with rasterio.open(p) as a, rasterio.open(q) as b:
            assert b.dtypes[0] == "uint32" and b.crs is None and b.nodata is None
            assert b.transform == a.transform
            np.testing.assert_array_equal(b.read(1).view(np.float32), a.read(1))


def test_vectorized_api_shapes_and_dtypes(written):
    scene, _ = written
    xmin, ymin, xmax, ymax = scene.bounds
    x = np.linspace(xmin, xmax, 12).reshape(3, 4)
    y = np.full((3, 4), 0.5 * (ymin + ymax))
    for fn in (scene.height, scene.surface, scene.crevasse_depth):
        out = fn(x, y)
        assert out.shape == (3, 4) and out.dtype == np.float64
    assert scene.crevasse_mask(x, y).dtype == bool
    assert scene.height(xmin + 1.0, ymin + 1.0).shape == ()
    assert scene.crs == "EPSG:3413"
    with pytest.raises(CrevkitValueError):
        scene.height(np.zeros(3), np.zeros(4))
    with pytest.raises(CrevkitTypeError):
        scene.height("a", 1.0)


def test_crevassed_fraction_matches_a_dense_grid(written):
    scene, _ = written
    f = scene.active_fields[0]
    pts_x = np.array([f.cx, f.cx + 20.0, scene.bounds[0] - 5000.0])
    pts_y = np.array([f.cy, f.cy - 15.0, scene.bounds[1]])
    frac = scene.crevassed_fraction(pts_x, pts_y, 35.0)
    assert frac.shape == (3,) and ((frac >= 0) & (frac <= 1)).all()
    assert frac[2] == 0.0  # far from any field
    g = np.arange(-35.0, 35.0, 0.25) + 0.125
    gx, gy = np.meshgrid(g, g)
    inside = gx**2 + gy**2 <= 35.0**2
    for k in range(2):
        m = scene.crevasse_mask(pts_x[k] + gx[inside], pts_y[k] + gy[inside])
        assert frac[k] == pytest.approx(m.mean(), abs=0.03)
    # a tiny disc on a crevassed point is fully crevassed
    xx, yy = _centres(scene.frames[0])
    mk = scene.crevasse_mask(xx, yy)
    r, c = np.argwhere(mk & (scene.crevasse_depth(xx, yy) > 1.0))[0]
    assert scene.crevassed_fraction(xx[r, c], yy[r, c], 0.01) == 1.0
    with pytest.raises(CrevkitValueError):
        scene.crevassed_fraction(pts_x, pts_y, -1.0)


def test_epochs_open_and_heal_clear_regions():
    s0 = make_scene(seed=5, length_m=4000, width_m=800, n_frames=4)
    s1 = make_scene(seed=5, length_m=4000, width_m=800, n_frames=4, epoch=1)
    assert s0.at_epoch(1).active_fields == s1.active_fields
    assert s0.frames == s1.frames
    reg = s0.change_regions
    assert set(reg) == {"heal", "open"}
    hx, hy, hr = reg["heal"]
    ox, oy, orad = reg["open"]
    assert hx < ox  # distinct parts of the strip
    g = np.linspace(-0.5, 0.5, 41)
    gx, gy = np.meshgrid(g, g)

    def crevassed(scene, cx, cy, r):
        return scene.crevasse_mask(cx + gx * r, cy + gy * r).mean()

    assert crevassed(s0, hx, hy, hr) > 0.01 and crevassed(s1, hx, hy, hr) == 0.0
    assert crevassed(s0, ox, oy, orad) == 0.0 and crevassed(s1, ox, oy, orad) > 0.01
    # persistent fields are unchanged; terrain is identical
    pers = [f for f in s0.fields if f.kind == "persist"]
    assert pers and all(f in s1.active_fields for f in pers)
    x = np.linspace(s0.bounds[0], s0.bounds[2], 50)
    y = np.full(50, s0.bounds[1] + 10)
    np.testing.assert_array_equal(s0.surface(x, y), s1.surface(x, y))


def test_default_scene_has_the_documented_variety():
    scene = make_scene()
    xmin, ymin, xmax, ymax = scene.bounds
    area_km2 = (xmax - xmin) * (ymax - ymin) / 1e6
    assert 5 <= area_km2 <= 10
    sets = [s for f in scene.fields for s in f.sets]
    assert {s.profile for s in sets} == {"V", "U"}
    assert all(1.0 <= s.width <= 10.0 and 2.0 <= s.depth <= 30.0 for s in sets)
    assert min(s.spacing for s in sets) < 20 and max(s.spacing for s in sets) > 30
    assert any(len(f.sets) == 2 for f in scene.fields)  # crossing sets (chaotic zones)
    assert any(s.curvature != 0 for s in sets) and any(s.bridge_fraction > 0 for s in sets)
    assert len({round(s.angle, 3) for s in sets}) > 3
    # regional slope within 0-3 degrees
    x = np.array([xmin + 100, xmax - 100])
    y = np.array([ymin + 100, ymin + 100])
    z = scene.surface(x, y)
    assert abs(z[1] - z[0]) / (x[1] - x[0]) < math.tan(math.radians(3.0)) + 0.01
    total_px = sum(f.width * f.height for f in scene.frames)
    assert 3e7 < total_px < 1.2e8


def test_make_scene_validates_arguments():
    with pytest.raises(CrevkitValueError, match="crevasse_density"):
        make_scene(crevasse_density=1.5)
    with pytest.raises(CrevkitValueError, match="unknown scene parameter"):
        make_scene(colour="blue")
    with pytest.raises(CrevkitValueError, match="epoch"):
        make_scene(epoch=-1)
    with pytest.raises(CrevkitTypeError, match="n_frames"):
        make_scene(n_frames=2.5)
