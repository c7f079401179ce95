"""WaveformIndex: recall, alignment, time-reversal, persistence and integrity checks.

The library is synthetic (crevkit.evaluate_matching.synthetic_library): 100 m
tiles (100 x 100 at 1 m) of planes, crevasse troughs, undulations and basins,
simulated with the GLAS preset.  It is simulated with the leading edge at
50 ns (instead of 10) so that queries delayed or advanced by up to 40 ns keep
their whole return inside the 544-sample window.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crevkit
from crevkit.errors import CrevkitValueError, IndexIntegrityError
from crevkit.evaluate_matching import synthetic_library, synthetic_tiles
from crevkit.index import (WaveformIndex, align_waveforms, exact_search, match_shots, shift_waveforms,
                           transform_waveforms, waveform_positions)

LEAD = 50.0
N_LIB = 20_000
SEED = 11


@pytest.fixture(scope="module")
def library():
    waves, cls = synthetic_library(N_LIB + 1000, SEED, lead_ns=LEAD)
    return waves[:N_LIB], cls[:N_LIB], waves[N_LIB:]


@pytest.fixture(scope="module")
def index(library):
    return WaveformIndex.build(library[0], tile_ids=[f"t{i}" for i in range(N_LIB)])


@pytest.fixture(scope="module")
def small():
    waves, _ = synthetic_library(3000, SEED + 1, lead_ns=LEAD)
    return waves


@pytest.fixture(scope="module")
def saved(small, tmp_path_factory):
    idx = WaveformIndex.build(small, tile_ids=[f"s{i}" for i in range(small.shape[0])])
    path = idx.save(tmp_path_factory.mktemp("idx") / "index")
    return idx, path


def _copy(path: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


# ----------------------------------------------------------------------------- recall and retrieval


def test_recall_at_10_vs_exact_default_parameters(index, library):
    queries = library[2]  # tiles not in the library
    rows, dist = index.query(queries, k=10)
    exact_rows, exact_dist = index.exact_query(queries, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact_rows)])
    assert recall >= 0.99, recall
    assert rows.dtype == np.int64 and dist.dtype == np.float32 and rows.shape == (1000, 10)
    assert (np.diff(dist, axis=1) >= 0).all()
    # reported distances are the true distances in the matching space
    q = index.prepare(queries[:50])
    lib = index.prepare(library[0][rows[:50].ravel()]).reshape(50, 10, -1)
    true = 2 - 2 * np.einsum("qkd,qd->qk", lib, q)
    np.testing.assert_allclose(dist[:50], true, atol=2e-5)


def test_shifted_waveform_retrieves_its_source(index, library):
    waves = library[0]
    rng = np.random.default_rng(3)
    src = rng.choice(N_LIB, 240, replace=False)
    whole = rng.integers(-40, 41, 80).astype(float)
    whole[:2] = (-40, 40)
    frac = rng.uniform(-40, 40, 80)
    frac[:2] = (-39.7, 39.5)
    # whole and fractional shifts by linear interpolation (not the index's own FFT shift)
    q1 = shift_waveforms(waves[src[:160]], np.concatenate([whole, frac]), "linear")
    # fractional shifts by re-simulating the tiles with another leading-edge time
    tiles, _ = synthetic_tiles(src[160:], SEED, size=100, pixel_size=1.0)
    resim = rng.uniform(-40, 40, 80)
    q2 = np.stack([crevkit.simulate_waveforms(t, 1.0, lead_ns=LEAD + s) for t, s in zip(tiles, resim)])
    rows, _ = index.query(np.concatenate([q1, q2]), k=10)
    hit = (rows == src[:, None]).any(axis=1)
    assert hit[:80].mean() >= 0.95, hit[:80].mean()
    assert hit[80:160].mean() >= 0.95, hit[80:160].mean()
    assert hit[160:].mean() >= 0.95, hit[160:].mean()


def test_raw_index_loses_shifted_sources_and_multi_offset_recovers(library):
    waves = library[0][:3000]
    raw = WaveformIndex.build(waves, alignment="none", ef_construction=100)
    src = np.arange(0, 3000, 30)
    q = shift_waveforms(waves[src], 7.0, "linear")
    rows, _ = raw.query(q, k=10)
    assert (rows == src[:, None]).any(axis=1).mean() < 0.3
    rows, _ = raw.query(q, k=10, offsets=np.arange(-9, 10, 1.0))
    assert (rows == src[:, None]).any(axis=1).mean() >= 0.95


def test_time_reversed_waveform_does_not_match_its_source(index, library):
    waves = library[0]
    # asymmetric returns: reversal changes them in the matching space
    cand = np.arange(0, N_LIB, 7)[:2000]
    fwd = index.prepare(waves[cand])
    rev = index.prepare(waves[cand][:, ::-1])
    asym = cand[np.einsum("ij,ij->i", fwd, rev) < 0.9]
    assert asym.size > 300
    rows, _ = index.query(np.ascontiguousarray(waves[asym][:, ::-1]), k=10)
    assert (rows == asym[:, None]).any(axis=1).mean() <= 0.02
    # while the same waveforms, unreversed but shifted, are found
    rows, _ = index.query(shift_waveforms(waves[asym[:200]], 13.3, "linear"), k=10)
    assert (rows == asym[:200, None]).any(axis=1).mean() >= 0.95


def test_sqrt_transform_keeps_time_order():
    w = np.zeros((1, 544), np.float32)
    w[0, 60:70] = np.linspace(1, 0.1, 10)
    v = transform_waveforms(w, "sqrt")
    r = transform_waveforms(w[:, ::-1], "sqrt")
    assert np.allclose(np.linalg.norm(v), 1) and not np.allclose(v, r[:, ::-1] * 0 + v[:, ::-1])
    assert np.allclose(v[0, 60:70], np.sqrt(w[0, 60:70]) / np.linalg.norm(np.sqrt(w[0, 60:70])), atol=1e-6)


@settings(max_examples=30)
@given(st.floats(-40, 40), st.sampled_from(["fft", "linear"]))
def test_centroid_position_follows_the_shift(shift, interp):
    t = np.arange(544)
    w = (np.exp(-0.5 * ((t - 200) / 3.0) ** 2) + 0.4 * np.exp(-0.5 * ((t - 230) / 6.0) ** 2)).astype(np.float32)
    p0 = waveform_positions(w)
    p1 = waveform_positions(shift_waveforms(w, shift, interp))
    assert abs(p1 - p0 - shift) < (0.05 if interp == "fft" else 0.1)  # linear interpolation smooths
    a0 = align_waveforms(w, target=100.0)
    a1 = align_waveforms(shift_waveforms(w, shift, interp), target=100.0)
    assert np.abs(a0 - a1).max() < (0.01 if interp == "fft" else 0.03) * w.max()
    assert abs(waveform_positions(a0) - 100.0) < 0.05


def test_leading_edge_position():
    t = np.arange(544, dtype=np.float64)
    w = np.clip((t - 100) / 10, 0, 1) * np.exp(-np.clip(t - 110, 0, None) / 20)
    assert abs(waveform_positions(w.astype(np.float32), "leading_edge") - 105.0) < 1e-6


# ----------------------------------------------------------------------------- query checks


def test_bad_queries_raise(saved):
    idx, _ = saved
    with pytest.raises(CrevkitValueError, match="544 samples"):
        idx.query(np.ones((3, 540), np.float32))
    q = np.full((2, 544), 0.001, np.float32)
    q[1, 5] = np.nan
    with pytest.raises(CrevkitValueError, match="NaN"):
        idx.query(q)
    with pytest.raises(CrevkitValueError, match="no positive sample"):
        idx.query(np.zeros((1, 544), np.float32))
    with pytest.raises(CrevkitValueError, match="k must be"):
        idx.query(np.ones(544), k=0)


def test_single_query_and_tile_ids(saved, small):
    idx, _ = saved
    rows, dist = idx.query(small[5], k=3)
    assert rows.shape == (3,) and rows[0] == 5 and dist[0] < 1e-5
    ids, _ = idx.query(small[5:6], k=3, return_tile_ids=True)
    assert ids[0, 0] == "s5"


def test_match_shots_streams_batches(saved, small):
    idx, _ = saved
    rows, dist = match_shots(idx, small[:700], k=30, batch_size=256)
    r2, d2 = idx.query(small[:700], k=30)
    assert rows.shape == (700, 30) and rows.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(rows, r2)
    np.testing.assert_array_equal(dist, d2)


def test_duplicates_are_stored_once_and_all_returned(small):
    lib = np.concatenate([small[:500], np.repeat(small[:1], 40, axis=0), small[1:3]])
    idx = WaveformIndex.build(lib)
    assert idx.count == 542 and idx.n_unique == 500
    rows, dist = idx.query(small[0], k=45)
    assert set(range(500, 540)) | {0} <= set(rows.tolist())
    assert (dist[:41] < 1e-5).all()


# ----------------------------------------------------------------------------- persistence and integrity


def test_save_load_identical_results(saved, small):
    idx, path = saved
    loaded = WaveformIndex.load(path, library=small)
    q = small[::37]
    r1, d1 = idx.query(q, k=30)
    r2, d2 = loaded.query(q, k=30)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(d1, d2)
    meta = json.loads((path / "index.json").read_text())
    for key in ("dimension", "space", "count", "normalization", "alignment", "instrument", "library_sha256",
                "transform", "files"):
        assert key in meta
    assert meta["instrument"]["name"] == "glas" and meta["dimension"] == 544
    assert meta["files"]["hnsw.bin"]["sha256"] == hashlib.sha256((path / "hnsw.bin").read_bytes()).hexdigest()


def test_missing_sidecar(saved, tmp_path):
    path = _copy(saved[1], tmp_path)
    (path / "index.json").unlink()
    with pytest.raises(IndexIntegrityError, match="metadata sidecar"):
        WaveformIndex.load(path)


def test_truncated_index_file(saved, tmp_path):
    path = _copy(saved[1], tmp_path)
    data = (path / "hnsw.bin").read_bytes()
    (path / "hnsw.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexIntegrityError, match="truncated or replaced"):
        WaveformIndex.load(path)


def test_altered_index_file(saved, tmp_path):
    path = _copy(saved[1], tmp_path)
    data = bytearray((path / "hnsw.bin").read_bytes())
    data[5000] ^= 0xFF
    (path / "hnsw.bin").write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match="sha256"):
        WaveformIndex.load(path)


def test_corrupt_links_caught_before_hnswlib(saved, tmp_path):
    """A corrupt graph whose sidecar was rewritten to match: the structure walk still refuses it."""
    path = _copy(saved[1], tmp_path)
    meta = json.loads((path / "index.json").read_text())
    data = bytearray((path / "hnsw.bin").read_bytes())
    header = 96
    data[header + 4: header + 8] = (2**31).to_bytes(4, "little")  # first neighbour of node 0 out of range
    (path / "hnsw.bin").write_bytes(bytes(data))
    meta["files"]["hnsw.bin"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(IndexIntegrityError, match="links point outside"):
        WaveformIndex.load(path)


def test_index_from_another_library(saved, small):
    other = small.copy()
    other[0] = other[1]
    with pytest.raises(IndexIntegrityError, match="different library"):
        WaveformIndex.load(saved[1], library=other)
    with pytest.raises(IndexIntegrityError, match="library of shape"):
        WaveformIndex.load(saved[1], library=small[:-1])


def test_save_checks_written_size(saved, tmp_path, monkeypatch):
    idx, _ = saved
    real = idx._hnsw

    class FullDisk:
        def __getattr__(self, name):
            return getattr(real, name)

        def save_index(self, p):
            real.save_index(p)
            data = Path(p).read_bytes()
            Path(p).write_bytes(data[:-100])  # what a full disk leaves behind, with no error

    monkeypatch.setattr(idx, "_hnsw", FullDisk())
    with pytest.raises(OSError, match="short write"):
        idx.save(tmp_path / "full")
    assert not (tmp_path / "full").exists()
    assert not list(tmp_path.iterdir())  # no temporary left


def test_deterministic_build_is_bit_identical(small, tmp_path):
    files = []
    for i in range(2):
        idx = WaveformIndex.build(small[:1000], deterministic=True, seed=7, n_threads=2, ef_construction=100)
        p = idx.save(tmp_path / f"d{i}")
        files.append({f.name: f.read_bytes() for f in sorted(p.iterdir()) if f.name != "index.json"})
    assert files[0].keys() == files[1].keys()
    for name in files[0]:
        assert files[0][name] == files[1][name], name


def test_bad_build_arguments(small):
    with pytest.raises(CrevkitValueError, match="transform"):
        WaveformIndex.build(small[:100], transform="log")
    with pytest.raises(CrevkitValueError, match="alignment"):
        WaveformIndex.build(small[:100], alignment="peak")
    bad = small[:100].copy()
    bad[3, 3] = np.nan
    with pytest.raises(CrevkitValueError, match="NaN"):
        WaveformIndex.build(bad)
    with pytest.raises(CrevkitValueError, match="tile_ids"):
        WaveformIndex.build(small[:100], tile_ids=["a"])


def test_exact_search_matches_numpy(small):
    rng = np.random.default_rng(0)
    lib = transform_waveforms(small[:400])
    q = transform_waveforms(small[400:420])
    rows, dist = exact_search(lib, q, 5)
    full = ((q[:, None, :] - lib[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(rows, np.argsort(full, axis=1)[:, :5])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :5], atol=1e-5)
    del rng


def _exact_reference(lib, q, k):
    """k smallest distances ``max(2 - 2 q.v, 0)`` (float64 dot products), ties by row."""
    d = np.maximum(2.0 - 2.0 * (q.astype(np.float64) @ lib.T.astype(np.float64)), 0.0)
    order = np.lexsort((np.broadcast_to(np.arange(lib.shape[0]), d.shape), d), axis=1)
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("n_lib", [50, 3000])  # below and above the lower-bound selection's size limit
def test_exact_search_blocks_threads_and_ties(small, n_lib):
    lib = transform_waveforms(small[:n_lib])
    lib = np.concatenate([lib, lib[:20]])  # exact duplicates: ties broken by the lower row
    q = transform_waveforms(small[-300:])
    q[:5] = lib[:5]
    ref_rows, ref_dist = _exact_reference(lib, q, 30)
    # float32 dot products differ from float64 by ~1e-7, and by an ulp between BLAS block shapes:
    # rows must agree wherever the gap to the neighbouring distances is larger than that
    gap = np.diff(ref_dist[:, :31], axis=1)
    clear = np.minimum(np.concatenate([np.full((q.shape[0], 1), np.inf), gap[:, :29]], axis=1), gap[:, :30]) > 1e-5
    first = None
    for batch_size, threads in ((256, 1), (256, 2), (7, 2), (64, 3)):
        rows, dist = exact_search(lib, q, 30, batch_size=batch_size, n_threads=threads)
        assert rows.dtype == np.int64 and dist.dtype == np.float32 and rows.shape == (300, 30)
        np.testing.assert_allclose(dist, ref_dist[:, :30], atol=2e-6)
        assert (np.diff(dist, axis=1) >= 0).all()
        np.testing.assert_array_equal(rows[clear], ref_rows[:, :30][clear])
        assert (rows[:5, :2] == np.stack([np.arange(5), n_lib + np.arange(5)], axis=1)).all()
        tie = dist[:, 1:] == dist[:, :-1]
        assert (rows[:, 1:][tie] > rows[:, :-1][tie]).all()  # equal distances ordered by row
        if first is None:
            first = rows, dist
        elif batch_size == 256:  # threads split the blocks, not the arithmetic: bit-identical
            np.testing.assert_array_equal(rows, first[0])
            np.testing.assert_array_equal(dist, first[1])
    rows, dist = exact_search(lib[:10], q[:3], 30)  # k capped at the library size
    assert rows.shape == (3, 10) and (np.sort(rows, axis=1) == np.arange(10)).all()


def test_fft_shift_matches_a_float64_reference():
    rng = np.random.default_rng(4)
    t = np.arange(544)
    w = np.stack([np.exp(-0.5 * ((t - c) / 4.0) ** 2) for c in rng.uniform(150, 350, 50)]).astype(np.float32)
    s = rng.uniform(-60, 60, 50)
    got = shift_waveforms(w, s, "fft")
    from scipy.fft import next_fast_len

    pad = next_fast_len(544 + int(np.ceil(np.abs(s).max())) + 32, real=True)  # the same grid as the shift
    spec = np.fft.rfft(w.astype(np.float64), n=pad, axis=1)
    spec *= np.exp(-2j * np.pi / pad * np.outer(s, np.arange(spec.shape[1])))
    want = np.fft.irfft(spec, n=pad, axis=1)[:, :544]
    assert np.abs(got - want).max() < 1e-5


def test_query_independent_of_threads_and_batching(index, library):
    q = library[2][:300]
    r1, d1 = index.query(q, k=30, n_threads=1)
    r2, d2 = index.query(q, k=30, n_threads=2)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(d1, d2)
    r3, d3 = index.query(q[:7], k=30, n_threads=2)
    np.testing.assert_array_equal(r1[:7], r3)
    np.testing.assert_array_equal(d1[:7], d3)


def test_cli_index_and_match(small, tmp_path):
    try:
        from click.testing import CliRunner

        from crevkit.cli import main
    except ImportError as exc:  # another command module not there yet
        pytest.skip(f"crevkit.cli not importable: {exc}")
    from crevkit.library import build_library

    class Store:  # stand-in with the TileStore interface
        def __init__(self, tiles):
            import pandas as pd

            self.tiles = tiles
            self.resolution = 1.0
            self.index = pd.DataFrame({"tile_id": [f"id{i}" for i in range(len(tiles))], "row": np.arange(len(tiles)),
                                       "truth_crevassed_fraction": np.linspace(0, 1, len(tiles))})

        def iter_batches(self, batch_size):
            for a in range(0, len(self.tiles), batch_size):
                yield self.index.iloc[a:a + batch_size], self.tiles[a:a + batch_size]

    tiles, _ = synthetic_tiles(300, 5, size=100, pixel_size=1.0)
    build_library(Store(tiles), tmp_path / "lib", batch_size=128)
    np.save(tmp_path / "shots.npy", crevkit.simulate_waveforms(tiles[:20], 1.0))
    runner = CliRunner()
    res = runner.invoke(main, ["index", str(tmp_path / "lib"), "-o", str(tmp_path / "idx"), "--deterministic"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["match", str(tmp_path / "idx"), str(tmp_path / "shots.npy"), "-o",
                               str(tmp_path / "m.npz"), "-k", "5", "--library", str(tmp_path / "lib")])
    assert res.exit_code == 0, res.output
    out = np.load(tmp_path / "m.npz")
    assert (out["rows"][:, 0] == np.arange(20)).all() and out["tile_ids"][3, 0] == "id3"
    (tmp_path / "idx" / "hnsw.bin").write_bytes(b"garbage")
    res = runner.invoke(main, ["match", str(tmp_path / "idx"), str(tmp_path / "shots.npy"), "-o",
                               str(tmp_path / "m2.npz")])
    assert res.exit_code == 1 and "Error:" in res.output and "Traceback" not in res.output


def test_evaluate_matching_writes_table_and_figure(small, tmp_path):
    from crevkit.evaluate_matching import evaluate_matching

    waves, cls = synthetic_library(2500, 21)
    res = evaluate_matching(waves, cls, k=30, shifts=(0.0, 10.0), n_source=200, max_queries=300, seed=1,
                            out_dir=tmp_path, tiles=lambda rows: synthetic_tiles(rows, 21, size=100, pixel_size=1.0)[0],
                            pixel_size=1.0, n_figure=2)
    cond = res["conditions"]
    assert cond["indexed"] == 2000 and cond["held_out"] == 500
    clean = res["rows"][0]
    assert clean["recall@10 vs exact"] >= 0.98 and clean["source in top 10"] >= 0.99
    assert 0.5 < clean["5-NN class accuracy"] <= 1.0  # better than chance on a balanced truth
    for name in ("evaluate_matching.md", "evaluate_matching.json", "evaluate_matching.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "evaluate_matching.png").read_bytes()[:4] == b"\x89PNG"


def test_fft_shift_of_a_row_does_not_depend_on_its_batch():
    """Padding is chosen per row: distributed tasks and a local run shift each waveform identically."""
    rng = np.random.default_rng(3)
    w = rng.random((40, 544), dtype=np.float32)
    s = rng.uniform(-60, 60, 40)
    s[0], s[1] = 300.5, -2000.0  # a far shift in the batch must not change the others
    whole = shift_waveforms(w, s)
    for i in range(40):
        np.testing.assert_array_equal(whole[i], shift_waveforms(w[i], s[i]))
    assert not whole[1].any()  # shifted out of the window entirely


def _unit_rows(rng, n, d):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), d=st.integers(1, 600), m=st.integers(1, 40), c=st.integers(1, 40),
       seed=st.integers(0, 2**31 - 1), threads=st.sampled_from([1, 2]))
def test_rerank_kernel_matches_its_twin(n, d, m, c, seed, threads):
    from crevkit.index import rerank_distances
    from crevkit.reference.index import rerank_distances as twin

    rng = np.random.default_rng(seed)
    v = _unit_rows(rng, n, d)
    q = v[rng.integers(0, n, m)] if seed % 2 else _unit_rows(rng, m, d)  # half the cases: exact self-matches
    lab = rng.integers(0, n, (m, c))
    got = rerank_distances(v, q, lab, n_threads=threads)
    want = twin(v, q, lab)
    assert got.dtype == np.float32 and got.shape == (m, c)
    assert (got >= 0).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=4e-6)
    # a dot product's summation order depends only on d: any split of the queries gives the same bits
    h = max(1, m // 2)
    assert np.array_equal(got[:h], rerank_distances(v, q[:h], lab[:h], n_threads=1))


def test_rerank_distances_closed_form_and_bad_input():
    from crevkit.errors import CrevkitTypeError
    from crevkit.index import rerank_distances

    # orthogonal unit vectors are at squared distance 2, a vector from itself at 0, its negative at 4
    v = np.eye(4, 20, dtype=np.float32)
    v[3] = -v[0]
    d = rerank_distances(v, v[:1], np.array([[0, 1, 2, 3]]))
    np.testing.assert_array_equal(d, [[0.0, 2.0, 2.0, 4.0]])
    with pytest.raises(CrevkitValueError, match="outside the 4 library rows"):
        rerank_distances(v, v[:1], np.array([[0, 4]]))
    with pytest.raises(CrevkitValueError, match="outside"):
        rerank_distances(v, v[:1], np.array([[-1]]))
    with pytest.raises(CrevkitValueError, match="columns"):
        rerank_distances(v, v[:1, :10], np.array([[0]]))
    with pytest.raises(CrevkitValueError, match="labels must have shape"):
        rerank_distances(v, v[:2], np.array([[0]]))
    with pytest.raises(CrevkitTypeError, match="labels must hold integers"):
        rerank_distances(v, v[:1], np.array([[0.0]]))
    with pytest.raises(CrevkitTypeError, match="vectors must be float32"):
        rerank_distances(v.astype(np.float64), v[:1], np.array([[0]]))
    with pytest.raises(CrevkitValueError, match="queries contains NaN"):
        rerank_distances(v, np.full((1, 20), np.nan, np.float32), np.array([[0]]))


# ----------------------------------------------------------------------------- library copies


@pytest.fixture(scope="module")
def with_copies(small):
    from crevkit.index import IndexWithCopies

    lib = small[:400]
    rng = np.random.default_rng(5)
    # three "copies" per row: the row moved a little and roughened, as a denoiser's outputs would be
    copies = np.concatenate([np.clip(shift_waveforms(lib, rng.uniform(-2, 2, len(lib)))
                                     * rng.uniform(0.5, 2.0, (len(lib), 1)) + rng.uniform(0, 2e-3, lib.shape), 0, None)
                             for _ in range(3)]).astype(np.float32)
    idx = WaveformIndex.build(lib, tile_ids=[f"s{i}" for i in range(len(lib))], ef_search=600, rerank=600)
    return lib, copies, idx, IndexWithCopies.build(idx, copies)


def test_index_with_copies_is_the_exact_search_over_the_library_and_its_copies(with_copies):
    lib, copies, idx, comb = with_copies
    assert comb.count == len(lib) and comb.n_copies == 3 and comb.repeats_per_row == 4 and idx.repeats_per_row == 1
    assert comb.copies.metadata["copies_of"] == idx.metadata["library_sha256"]
    np.testing.assert_array_equal(comb.copies.prepare(copies[:50]), idx.prepare(copies[:50]))  # one matching space
    queries = copies[::37] * 1.5
    rows, dist = comb.query(queries, k=25)
    vectors = np.concatenate([idx.prepare(lib), idx.prepare(copies)])
    owner = np.tile(np.arange(len(lib)), 4)
    d_all = ((idx.prepare(queries)[:, None, :] - vectors[None]) ** 2).sum(axis=2)
    order = np.argsort(d_all, axis=1, kind="stable")[:, :25]
    np.testing.assert_allclose(dist, np.take_along_axis(d_all, order, axis=1), atol=2e-5)
    for got, want in zip(rows, owner[order]):
        assert sorted(got.tolist()) == sorted(want.tolist())
    assert any(len(set(r)) < len(r) for r in rows)  # a row comes back once per matching waveform
    ids, _ = comb.query(queries, k=25, return_tile_ids=True)
    np.testing.assert_array_equal(ids, idx.tile_ids[rows])
    one, d_one = comb.query(queries[3], k=25)
    np.testing.assert_array_equal(one, rows[3])
    r2, d2 = match_shots(comb, queries, k=25, batch_size=7)
    np.testing.assert_array_equal(r2, rows)
    np.testing.assert_array_equal(d2, dist)


def test_index_with_copies_saves_loads_and_refuses_mismatches(with_copies, tmp_path):
    from crevkit.errors import CrevkitTypeError
    from crevkit.index import IndexWithCopies

    lib, copies, idx, comb = with_copies
    loaded = IndexWithCopies(idx, WaveformIndex.load(comb.copies.save(tmp_path / "copies")))
    q = copies[::53]
    for a, b in zip(loaded.query(q, k=10), comb.query(q, k=10)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CrevkitValueError, match="whole number of copies"):
        IndexWithCopies.build(idx, copies[:-1])
    with pytest.raises(CrevkitValueError, match="transform"):
        IndexWithCopies(idx, WaveformIndex.build(copies, transform="linear"))
    with pytest.raises(CrevkitTypeError, match="WaveformIndex"):
        IndexWithCopies(idx, copies)
    other = WaveformIndex.build(lib[::-1].copy(), tile_ids=[f"s{i}" for i in range(len(lib))])
    with pytest.raises(IndexIntegrityError, match="another library"):
        IndexWithCopies(other, comb.copies)
