"""The waveform library: streamed from a tile store, atomic, hashed; an index checks it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import crevkit
from crevkit.errors import CrevkitValueError, IndexIntegrityError, InputFileError
from crevkit.evaluate_matching import synthetic_tiles
from crevkit.index import WaveformIndex, library_hash
from crevkit.library import build_library, open_library


class StandInStore:
    """The TileStore interface: ``.index`` (DataFrame) and ``.iter_batches(batch_size)``."""

    def __init__(self, tiles, resolution=1.0):
        self.tiles = tiles
        self.resolution = resolution
        n = len(tiles)
        self.index = pd.DataFrame({"tile_id": [f"tile{i:04d}" for i in range(n)], "row": np.arange(n),
                                   "x": np.arange(n) * 100.0, "y": np.zeros(n),
                                   "truth_crevassed_fraction": np.linspace(0, 1, n)})
        self.batches_seen = []

    def iter_batches(self, batch_size):
        for a in range(0, len(self.tiles), batch_size):
            self.batches_seen.append(min(batch_size, len(self.tiles) - a))
            yield self.index.iloc[a:a + batch_size], np.asarray(self.tiles[a:a + batch_size], np.float32)


@pytest.fixture(scope="module")
def tiles():
    return synthetic_tiles(230, 2, size=100, pixel_size=1.0)[0]


@pytest.fixture()
def lib_dir(tiles, tmp_path):
    store = StandInStore(tiles)
    counts = build_library(store, tmp_path / "library", batch_size=64)
    assert store.batches_seen == [64, 64, 64, 38]  # streamed in batches
    assert counts.found == 230 and counts.done == 230
    return tmp_path / "library"


def test_library_content(lib_dir, tiles):
    lib = open_library(lib_dir, verify=True)
    want = crevkit.simulate_waveforms(tiles, 1.0)
    np.testing.assert_array_equal(np.asarray(lib.waveforms[:]), want)
    assert list(lib.tile_ids[:2]) == ["tile0000", "tile0001"]
    assert list(lib.table.columns) == ["row", "tile_id", "x", "y", "truth_crevassed_fraction"]
    assert lib.metadata["sha256"] == library_hash(want, lib.tile_ids)
    assert lib.metadata["pixel_size"] == 1.0 and lib.metadata["instrument"]["name"] == "glas"
    assert not [p for p in lib_dir.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_incomplete_or_modified_library(lib_dir):
    import zarr

    z = zarr.open_array(str(lib_dir / "waveforms.zarr"), mode="r+")
    z[0, 20] = z[0, 20] + 1e-3
    with pytest.raises(IndexIntegrityError, match="sha256"):
        open_library(lib_dir, verify=True)
    (lib_dir / "library.json").unlink()
    with pytest.raises(InputFileError, match="no library.json"):
        open_library(lib_dir)


def test_index_from_library_dir_and_check(lib_dir, tmp_path):
    idx = WaveformIndex.build(lib_dir, deterministic=True)
    assert idx.tile_ids[7] == "tile0007"
    meta = json.loads((lib_dir / "library.json").read_text())
    assert idx.metadata["library_sha256"] == meta["sha256"]
    path = idx.save(tmp_path / "index")
    WaveformIndex.load(path, library=lib_dir)  # matches
    import zarr

    z = zarr.open_array(str(lib_dir / "waveforms.zarr"), mode="r+")
    z[5] = z[6]
    with pytest.raises(IndexIntegrityError, match="different library|sha256"):
        WaveformIndex.load(path, library=lib_dir)


def test_rebuild_replaces_atomically(lib_dir, tiles):
    build_library(StandInStore(tiles[:50]), lib_dir, batch_size=64)
    lib = open_library(lib_dir, verify=True)
    assert len(lib) == 50 and lib.waveforms.shape == (50, 544)


def test_empty_tile_is_reported(tmp_path, tiles):
    bad = tiles[:10].copy()
    bad[4] = np.nan
    with pytest.raises(CrevkitValueError, match="rows 0..9"):
        build_library(StandInStore(bad), tmp_path / "lib", batch_size=64)
    assert not (tmp_path / "lib" / "library.json").exists()


def test_index_from_array_and_tile_ids_checks_against_library_dir(lib_dir, tmp_path):
    """The pipeline builds from the loaded array + tile ids and loads with the library folder."""
    lib = open_library(lib_dir)
    idx = WaveformIndex.build(np.asarray(lib.waveforms[:]), tile_ids=lib.tile_ids, instrument="glas")
    assert idx.metadata["library_sha256"] == lib.metadata["sha256"]
    WaveformIndex.load(idx.save(tmp_path / "index"), library=lib_dir)
