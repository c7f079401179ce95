"""SelfOrganizingMap: the C++ kernel against its float64 NumPy twin, numerics, determinism, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crevkit
from crevkit import CrevkitValueError, SelfOrganizingMap, _core
from crevkit.errors import CrevkitTypeError, IndexIntegrityError, InputFileError
from crevkit.reference import som as ref
from crevkit.som import bmu_tolerance, map_distance_squared

TOPOLOGIES = ["rectangular", "hexagonal"]
NEIGHBORHOODS = ["gaussian", "bubble"]


def clusters(n=600, d=24, k=8, spread=1.0, scale=6.0, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * scale
    labels = rng.integers(0, k, n)
    return (offset + centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32)


def packed(codebook, mean):
    return _core.som_pack(np.ascontiguousarray(codebook - mean, dtype=np.float32), 1)


# --------------------------------------------------------------------------- BMU search


def test_bmu_equals_float64_argmin_outside_the_stated_tolerance():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 300)).astype(np.float32)
    # codebook: perturbed samples, so many samples have close competitors
    W = (X[rng.choice(3000, 400, replace=False)] + 0.05 * rng.normal(size=(400, 300))).astype(np.float32)
    mu = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    b, s, d1, d2 = _core.som_bmu(X, mu, packed(W, mu), 400, None, None, 240, 2)
    xc = X.astype(np.float64) - mu
    wc = (W - mu).astype(np.float32).astype(np.float64)  # the codebook the kernel sees
    # float64 expansion of centred vectors: rounding ~1e-13 relative, far below the float32 tolerance
    exact = (xc**2).sum(1)[:, None] + (wc**2).sum(1)[None, :] - 2.0 * (xc @ wc.T)
    best = exact.argmin(axis=1)
    gap = exact[np.arange(len(X)), b] - exact[np.arange(len(X)), best]
    tol = bmu_tolerance((xc**2).sum(1), (wc**2).sum(1).max(), X.shape[1])
    assert np.all(gap <= tol), "a BMU differs from the exact argmin by more than the stated tolerance"
    assert np.mean(b == best) > 0.99
    # the tolerance is not vacuous: it is a small fraction of the typical distance
    assert np.median(tol / exact.min(axis=1)) < 0.05
    # distances are the exact ones of the chosen nodes
    np.testing.assert_allclose(d1, np.sqrt(exact[np.arange(len(X)), b]), rtol=1e-6)
    np.testing.assert_allclose(d2, np.sqrt(exact[np.arange(len(X)), s]), rtol=1e-6)
    assert np.all(s != b) and np.all(exact[np.arange(len(X)), s] >= exact[np.arange(len(X)), b] - tol)


def test_bmu_tolerance_explains_the_only_mismatches():
    """Two nodes closer than the tolerance may swap; the float32 choice is then within tol of the minimum."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 64)).astype(np.float32)
    w0 = rng.normal(size=64)
    w1 = w0.copy()
    w1[0] += 1e-7  # node 1 differs by far less than the float32 resolution
    W = np.stack([w1, w0, w0 + 10.0]).astype(np.float32)
    mu = np.zeros(64, np.float32)
    b, *_ = _core.som_bmu(x, mu, packed(W, mu), 3, None, None, 240, 1)
    exact = ((x.astype(np.float64) - W.astype(np.float64)) ** 2).sum(1)
    tol = bmu_tolerance((x.astype(np.float64) ** 2).sum(1), (W.astype(np.float64) ** 2).sum(1).max(), 64)
    assert b[0] in (0, 1)
    assert exact[b[0]] - exact.min() <= tol[0]


def test_ties_go_to_the_lowest_index():
    X = np.zeros((5, 8), np.float32)
    W = np.ones((6, 8), np.float32)  # all nodes identical
    mu = np.zeros(8, np.float32)
    b, s, d1, d2 = _core.som_bmu(X, mu, packed(W, mu), 6, None, None, 240, 2)
    assert np.all(b == 0) and np.all(s == 1)
    np.testing.assert_allclose(d1, np.sqrt(8.0))
    tb, ts, _, _ = ref.bmu_search(X, W, mean=mu)
    assert np.all(tb == 0) and np.all(ts == 1)


def test_offset_data_needs_centring_and_gets_it():
    # mean / spread = 500: uncentred float32 |x|^2 - 2 x.w + |w|^2 loses the BMU
    X = clusters(n=2000, d=64, k=16, spread=1.0, scale=1.0, offset=500.0, seed=3)
    rng = np.random.default_rng(1)
    W = (X.mean(axis=0) + 0.5 * rng.normal(size=(100, 64))).astype(np.float32)  # nodes spread like a trained map
    exact_b, *_ = ref.bmu_search(X, W)  # float64, exact
    # the naive float32 expansion without centring
    naive = (np.einsum("ij,ij->i", W, W)[None, :] - 2.0 * (X @ W.T)
             + np.einsum("ij,ij->i", X, X)[:, None]).argmin(axis=1)
    assert np.mean(naive == exact_b) < 0.7  # measured: ~60 %
    som = SelfOrganizingMap(10, 10, init=W.reshape(10, 10, 64), epochs=1).fit(X)
    som.codebook_ = W.reshape(10, 10, 64).copy()  # query the known codebook
    assert np.mean(som.bmu(X) == exact_b) >= 0.999


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 40), k=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_bmu_matches_twin_on_random_shapes(n, d, k, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    W = rng.normal(size=(k, d)).astype(np.float32) * 2.0
    mu = X.mean(axis=0).astype(np.float32)
    b, s, d1, d2 = _core.som_bmu(X, mu, packed(W, mu), k, None, None, 7, 2)
    tb, ts, td1, td2 = ref.bmu_search(X, (W - mu).astype(np.float32).astype(np.float64) + mu, mean=mu)
    xc = X.astype(np.float64) - mu
    tol = bmu_tolerance((xc**2).sum(1), float(((W - mu).astype(np.float64) ** 2).sum(1).max()), d)
    assert np.all(np.abs(d1.astype(np.float64) - td1) <= 1e-5 * (1 + td1) + np.sqrt(tol))
    if k == 1:
        assert np.all(s == -1) and np.all(np.isinf(d2))


# --------------------------------------------------------------------------- batch update


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("neighborhood", NEIGHBORHOODS)
@pytest.mark.parametrize("toroidal", [False, True])
@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
def test_update_from_injected_bmus_equals_twin(topology, neighborhood, toroidal, sigma):
    rows, cols, d = 6, 7, 33  # rows != cols
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, d)).astype(np.float32) + 3.0
    k = rows * cols
    bmu = rng.integers(0, k, len(X)).astype(np.int64)
    bmu[bmu == 5] = 6  # node 5 (and maybe others) gets no hit
    W = rng.normal(size=(k, d)).astype(np.float32)
    mu = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    sums = np.zeros((k, d))
    counts = np.zeros(k)
    _core.som_accumulate(X, mu, bmu, sums, counts, 2)
    P = packed(W, mu)
    _core.som_smooth(sums, counts, P, rows, cols, TOPOLOGIES.index(topology), toroidal,
                     NEIGHBORHOODS.index(neighborhood), sigma, 2)
    got = _core.som_unpack(P, k, d, mu, 1)
    want = ref.batch_update(X, bmu, W, rows, cols, topology, toroidal, neighborhood, sigma)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("toroidal", [False, True])
def test_wide_gaussian_update_on_a_sparsely_hit_map_equals_twin(topology, toroidal):
    """Windows of 48+ columns take the path that skips all-zero source nodes: still the twin's update."""
    rows, cols, d = 4, 64, 40
    rng = np.random.default_rng(9)
    X = rng.normal(size=(30, d)).astype(np.float32) - 2.0
    k = rows * cols
    bmu = rng.choice(k, len(X), replace=True).astype(np.int64)  # at most 30 of 256 nodes hit
    W = rng.normal(size=(k, d)).astype(np.float32)
    mu = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    sums, counts = np.zeros((k, d)), np.zeros(k)
    _core.som_accumulate(X, mu, bmu, sums, counts, 1)
    for sigma in (8.0, 30.0):
        P = packed(W, mu)
        _core.som_smooth(sums, counts, P, rows, cols, TOPOLOGIES.index(topology), toroidal, 0, sigma, 2)
        got = _core.som_unpack(P, k, d, mu, 1)
        want = ref.batch_update(X, bmu, W, rows, cols, topology, toroidal, "gaussian", sigma)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_nodes_without_neighbourhood_weight_keep_their_weights():
    rows, cols, d = 5, 5, 4
    X = np.ones((10, d), np.float32)
    W = np.arange(rows * cols * d, dtype=np.float32).reshape(rows * cols, d)
    bmu = np.zeros(10, np.int64)  # every sample hits node 0
    sums, counts = np.zeros((25, d)), np.zeros(25)
    mu = np.zeros(d, np.float32)
    _core.som_accumulate(X, mu, bmu, sums, counts, 1)
    P = packed(W, mu)
    kept = _core.som_smooth(sums, counts, P, rows, cols, 0, False, 1, 1.0, 1)  # bubble, radius 1
    got = _core.som_unpack(P, 25, d, None, 1)
    moved = [0, 1, 5]  # node 0 and its two neighbours
    assert kept == 25 - len(moved)
    np.testing.assert_array_equal(got[moved], 1.0)
    others = [i for i in range(25) if i not in moved]
    np.testing.assert_array_equal(got[others], W[others])


def test_exception_inside_parallel_loop_reaches_python():
    X = np.ones((4, 1000), np.float32)
    mu = np.zeros(1000, np.float32)
    sums, counts = np.zeros((3, 1000)), np.zeros(3)
    with pytest.raises(CrevkitValueError, match="outside 0 .. 2"):
        _core.som_accumulate(X, mu, np.array([0, 1, 7, 2], np.int64), sums, counts, 2)
    assert counts.sum() == 0


# --------------------------------------------------------------------------- whole fits against the twin


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("neighborhood", NEIGHBORHOODS)
@pytest.mark.parametrize("toroidal", [False, True])
def test_two_epoch_fit_equals_twin(topology, neighborhood, toroidal):
    X = clusters(seed=5)
    init = np.random.default_rng(5).normal(size=(6, 7, X.shape[1])) * 3
    kw = dict(rows=6, cols=7, topology=topology, neighborhood=neighborhood, toroidal=toroidal, epochs=2,
              init=init, radius0=3.0)
    a = SelfOrganizingMap(**kw).fit(X)
    b = ref.SelfOrganizingMap(**kw).fit(X)
    assert a.codebook_.dtype == np.float32 and a.codebook_.shape == (6, 7, X.shape[1])
    np.testing.assert_allclose(a.codebook_, b.codebook_, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_long_fit_matches_twin_on_quality(topology):
    X = clusters(n=800, d=20, k=10, seed=6)
    kw = dict(rows=8, cols=9, topology=topology, epochs=15, init="pca", seed=3)
    a = SelfOrganizingMap(**kw).fit(X)
    b = ref.SelfOrganizingMap(**kw).fit(X)
    qa, qb = a.quantization_error(X), b.quantization_error(X)
    assert abs(qa - qb) <= 0.02 * qb
    assert abs(a.topographic_error(X) - b.topographic_error(X)) <= 0.03
    # training helped: QE well below the spread of the data around its mean
    assert qa < 0.5 * np.linalg.norm(X - X.mean(0), axis=1).mean()


# --------------------------------------------------------------------------- determinism


def test_same_bits_across_runs_threads_and_chunks():
    X = clusters(n=1500, d=40, seed=7)
    fits = [SelfOrganizingMap(7, 5, epochs=4, seed=11, n_threads=t, chunk_rows=c).fit(X)
            for t, c in [(1, 240), (2, 240), (2, 240), (2, 13), (1, 1000)]]
    for other in fits[1:]:
        assert np.array_equal(fits[0].codebook_, other.codebook_)
        assert fits[0].history_ == other.history_
    b1 = fits[0].bmu(X)
    assert np.array_equal(b1, fits[1].set_params(n_threads=2).bmu(X))


def test_same_bits_whether_chunks_are_packed_whole_or_by_slice():
    """More than one node block (900 nodes) and features over three 512-wide blocks: chunks of 12 rows are
    packed whole and reused by every node block, chunks of 240 one slice at a time; same bits."""
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(600, 1100)) + rng.integers(0, 4, (600, 1)) * 2.0 + 50.0).astype(np.float32)
    fits = [SelfOrganizingMap(30, 30, epochs=2, seed=2, n_threads=t, chunk_rows=c).fit(X)
            for t, c in [(2, 240), (2, 12), (1, 12)]]
    for other in fits[1:]:
        assert fits[0].codebook_.tobytes() == other.codebook_.tobytes()
        assert fits[0].history_ == other.history_


def test_streamed_fit_equals_in_memory(tmp_path, monkeypatch):
    import crevkit.som as som_mod

    X = clusters(n=700, d=16, seed=8)
    monkeypatch.setattr(som_mod, "_BLOCK_BYTES", 16 * 4 * 50)  # ~50-row blocks
    mm_path = tmp_path / "X.npy"
    np.save(mm_path, X)
    mm = np.load(mm_path, mmap_mode="r")
    kw = dict(rows=4, cols=6, epochs=3, seed=1, chunk_rows=30)
    a = SelfOrganizingMap(**kw).fit(X)
    b = SelfOrganizingMap(**kw).fit(mm)
    assert np.array_equal(a.codebook_, b.codebook_)
    zarr = pytest.importorskip("zarr")
    z = zarr.open(str(tmp_path / "X.zarr"), mode="w", shape=X.shape, chunks=(64, 16), dtype="f4")
    z[:] = X
    c = SelfOrganizingMap(**kw).fit(zarr.open(str(tmp_path / "X.zarr"), mode="r"))
    assert np.array_equal(a.codebook_, c.codebook_)
    np.testing.assert_array_equal(a.bmu(X), c.bmu(z))


# --------------------------------------------------------------------------- geometry


def test_hexagonal_neighbours_are_all_at_distance_one():
    rows, cols = 6, 7
    for r, c in [(2, 3), (3, 3)]:  # an even and an odd row
        k = r * cols + c
        d2 = map_distance_squared(rows, cols, "hexagonal", False, k, np.arange(rows * cols))
        near = np.flatnonzero(np.abs(d2 - 1.0) < 1e-12)
        assert len(near) == 6
        assert np.sort(d2)[1:7].max() < 1 + 1e-12 and np.sort(d2)[7] > 2.9  # next ring at sqrt(3)


def test_toroidal_wrap():
    rows, cols = 4, 6
    d2 = map_distance_squared(rows, cols, "rectangular", True, 0, [cols - 1, (rows - 1) * cols, rows * cols - 1])
    np.testing.assert_allclose(d2, [1.0, 1.0, 2.0])
    d2h = map_distance_squared(rows, cols, "hexagonal", True, 0, [cols - 1, (rows - 1) * cols + cols - 1])
    np.testing.assert_allclose(d2h, [1.0, 1.0])
    with pytest.raises(CrevkitValueError, match="even number of rows"):
        SelfOrganizingMap(5, 6, topology="hexagonal", toroidal=True).fit(clusters(n=50))
    # a toroidal map: the corner's four neighbours include the opposite edges
    som = SelfOrganizingMap(rows, cols, toroidal=True)
    som.codebook_ = np.zeros((rows, cols, 2), np.float32)
    som.codebook_[0, cols - 1] = [3.0, 4.0]
    som.n_features_in_ = 2
    som.mean_ = np.zeros(2, np.float32)
    u = som.umatrix()
    assert u[0, 0] == pytest.approx(5.0 / 4)  # one of four neighbours at distance 5


def test_umatrix_and_hit_map():
    rows, cols = 4, 5
    som = SelfOrganizingMap(rows, cols)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    som.codebook_ = np.stack([r, c], axis=-1).astype(np.float32)
    som.mean_ = np.zeros(2, np.float32)
    som.n_features_in_ = 2
    np.testing.assert_allclose(som.umatrix(), 1.0)
    X = np.array([[0, 0], [0.1, 0.1], [3, 4], [2.9, 4.2]], np.float32)
    h = som.hit_map(X)
    assert h.shape == (rows, cols) and h.sum() == 4 and h[0, 0] == 2 and h[3, 4] == 2
    assert som.topographic_error(X) == 0.0


# --------------------------------------------------------------------------- edge cases


def test_single_node_map():
    X = clusters(n=100, d=5)
    som = SelfOrganizingMap(1, 1, epochs=3).fit(X)
    np.testing.assert_allclose(som.codebook_[0, 0], X.astype(np.float64).mean(0), rtol=1e-5, atol=1e-5)
    assert np.all(som.bmu(X) == 0)
    assert np.isnan(som.topographic_error(X))


def test_fewer_samples_than_nodes_and_one_epoch():
    X = clusters(n=5, d=6)
    for init in ("pca", "sample"):
        som = SelfOrganizingMap(10, 10, epochs=1, init=init).fit(X)
        assert np.isfinite(som.codebook_).all()
        assert len(som.history_) == 1 and som.radii_[0] == som.history_[0]["radius"]
        assert som.hit_map(X).sum() == 5
        twin = ref.SelfOrganizingMap(10, 10, epochs=1, init=init).fit(X)
        np.testing.assert_allclose(som.codebook_, twin.codebook_, rtol=1e-5, atol=1e-5)


def test_float64_and_noncontiguous_input_are_converted_once():
    X = clusters(n=200, d=12)
    X64 = np.asfortranarray(X.astype(np.float64))
    a = SelfOrganizingMap(3, 4, epochs=2).fit(X)
    b = SelfOrganizingMap(3, 4, epochs=2).fit(X64)
    assert np.array_equal(a.codebook_, b.codebook_)
    assert np.array_equal(a.bmu(X), b.bmu(X64[::1]))


def test_bad_input_gives_clear_errors():
    X = clusters(n=50, d=4)
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(CrevkitValueError, match=r"X contains NaN.*row 7"):
        SelfOrganizingMap(3, 3).fit(bad)
    som = SelfOrganizingMap(3, 3, epochs=2).fit(X)
    with pytest.raises(CrevkitValueError, match="X contains NaN"):
        som.bmu(bad)
    with pytest.raises(CrevkitValueError, match="5 features but the map was trained on 4"):
        som.transform(np.zeros((3, 5), np.float32))
    with pytest.raises(CrevkitValueError, match="2-dimensional"):
        som.fit(np.zeros(5, np.float32))
    with pytest.raises(CrevkitTypeError):
        som.fit(np.array([["a", "b"]]))
    with pytest.raises(CrevkitValueError, match="not fitted"):
        SelfOrganizingMap().bmu(X)
    for kw, msg in [({"topology": "square"}, "topology"), ({"epochs": 0}, "epochs"),
                    ({"radius_final": 0}, "radius_final"), ({"init": "random"}, "init"),
                    ({"init": np.zeros((2, 2, 4))}, r"init must have shape \(3, 3, 4\)")]:
        with pytest.raises(CrevkitValueError, match=msg):
            SelfOrganizingMap(3, 3, **kw).fit(X)


def test_estimator_contract():
    som = SelfOrganizingMap(rows=0, topology="nonsense")  # __init__ only stores
    assert som.get_params()["rows"] == 0
    som.set_params(rows=3, cols=2, topology="hexagonal")
    X = clusters(n=60, d=3)
    assert som.fit(X) is som
    assert hasattr(som, "codebook_") and som.n_features_in_ == 3
    b, dist = som.transform(X)
    assert b.dtype == np.int64 and dist.dtype == np.float32 and np.all(dist >= 0)
    with pytest.raises(CrevkitValueError, match="unknown parameter"):
        som.set_params(radius=2)
    assert crevkit.SelfOrganizingMap is SelfOrganizingMap


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip_and_integrity(tmp_path):
    X = clusters(n=300, d=9)
    som = SelfOrganizingMap(4, 5, topology="hexagonal", epochs=3).fit(X)
    path = som.save(tmp_path / "map.npz")
    back = SelfOrganizingMap.load(path)
    assert np.array_equal(back.codebook_, som.codebook_)
    assert back.get_params()["topology"] == "hexagonal" and back.history_ == som.history_
    assert np.array_equal(back.bmu(X), som.bmu(X))
    with pytest.raises(CrevkitValueError, match="9 features, expected n_features=8"):
        SelfOrganizingMap.load(path, n_features=8)
    with pytest.raises(InputFileError):
        SelfOrganizingMap.load(tmp_path / "missing.npz")
    # corrupt the codebook inside the archive, keep the metadata
    with np.load(path) as z:
        parts = {k: z[k] for k in z.files}
    parts["codebook"] = parts["codebook"] + 1
    np.savez(tmp_path / "bad.npz", **parts)
    with pytest.raises(IndexIntegrityError, match="checksum"):
        SelfOrganizingMap.load(tmp_path / "bad.npz")
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


# --------------------------------------------------------------------------- PCA init, memory


def test_streamed_pca_init_finds_the_leading_axes():
    from crevkit.som import _streamed_pca

    rng = np.random.default_rng(4)
    # a clear spectrum (axis scales 8, 5, then <= 1) around a large offset
    scales = np.concatenate([[8.0, 5.0], np.linspace(1.0, 0.1, 118)])
    X = (100.0 + rng.normal(size=(2500, 120)) * scales).astype(np.float32)
    mean = X.astype(np.float64).mean(0)
    s, comps = _streamed_pca(X, np.arange(2500), mean, 2, seed=0, block_bytes=8 * 120 * 300)  # 300-row blocks
    _, S, vt = np.linalg.svd(X.astype(np.float64) - mean, full_matrices=False)
    np.testing.assert_allclose(s, S[:2], rtol=1e-6)
    np.testing.assert_allclose(np.abs((comps * vt[:2]).sum(axis=1)), 1.0, atol=1e-6)
    # the sign convention: each axis's largest-magnitude entry is positive
    assert all(c[np.abs(c).argmax()] > 0 for c in comps)


def test_fit_memory_above_a_memmapped_X_stays_within_the_codebook_budget(tmp_path):
    """No sample copy of X: memory above X is the codebook, the node sums and one block (the issue's budget)."""
    import tracemalloc

    import crevkit.som as som_mod

    rng = np.random.default_rng(0)
    n, d, rows, cols = 12_000, 1_500, 6, 6
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 2000):
        X[s:s + 2000] = rng.normal(size=(2000, d)) + 0.01 * np.arange(d)
    X.flush()
    del X
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    tracemalloc.start()
    try:
        SelfOrganizingMap(rows, cols, epochs=1, seed=0).fit(mm)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    budget = rows * cols * d * 12 + som_mod._BLOCK_BYTES
    # a float64 copy of the 10,000-row PCA sample alone would be 120 MB
    assert peak <= budget, f"peak {peak / 2**20:.0f} MiB above X, budget {budget / 2**20:.0f} MiB"


def test_pca_init_does_not_depend_on_the_blas_thread_count():
    """The init's products run on one BLAS thread: the same codebook whatever BLAS is allowed outside."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((3000, 1100)) + rng.integers(0, 5, (3000, 1)) * 3 + 100).astype(np.float32)
    books = []
    for n in (1, 2):
        with threadpoolctl.threadpool_limits(n, user_api="blas"):
            books.append(SelfOrganizingMap(20, 20, epochs=1, seed=0).fit(X).codebook_)
    assert books[0].tobytes() == books[1].tobytes()


def test_large_map_fit_equals_the_twin_with_most_nodes_never_hit():
    """Few samples on a large map: the kernel skips the sums of nodes without hits (never written) and must
    still give the twin's codebook, with nodes far from every hit moved only by the neighbourhood."""
    rng = np.random.default_rng(7)
    X = (rng.normal(size=(150, 40)) + 5.0).astype(np.float32)
    init = (rng.normal(size=(20 * 60, 40)) + 5.0).astype(np.float32)
    # 60 columns and radius 12: windows along x of >= 48 columns, the skipping path; 3 epochs: the rows
    # of the sums written in one epoch must be reset for the next
    params = dict(epochs=3, init=init, radius0=12.0, seed=0)
    got = SelfOrganizingMap(20, 60, **params).fit(X).codebook_
    want = ref.SelfOrganizingMap(20, 60, **params).fit(X).codebook_
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
