"""The waveform library: one simulated waveform per tile of a tile store.

:func:`build_library` streams the store's tiles in batches through the
forward model (:func:`crevkit.simulate_waveforms`) and writes a library
directory (``run/library/`` by default)::

    waveforms.zarr   (n_tiles, n_samples) float32, row i = tile row i
    library.parquet  row, tile_id (+ x, y, truth_crevassed_fraction when the store has them)
    library.json     n, n_samples, instrument, pixel size, tile store, sha256 of the content

Each part is written atomically; ``library.json`` is removed first and written
last, so a library without it is incomplete and :func:`open_library` refuses
it.  The sha256 (:func:`crevkit.index.library_hash`: waveform bytes and tile
ids) is what a saved index records and checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._validation import check_int
from ._sidecar import read_sidecar
from .errors import CrevkitValueError, IndexIntegrityError, InputFileError

__all__ = ["build_library", "open_library", "Library"]

_FORMAT = "crevkit-waveform-library"
_TABLE_COLUMNS = ("x", "y", "truth_crevassed_fraction")


@dataclasses.dataclass
class Library:
    """An opened library: ``waveforms`` (Zarr array, read lazily), ``tile_ids`` (ndarray of str),
    ``table`` (pandas DataFrame), ``metadata`` (dict from ``library.json``), ``path``."""

    path: Path
    waveforms: Any
    tile_ids: np.ndarray
    table: Any
    metadata: dict

    def __len__(self) -> int:
        return int(self.metadata["n"])


def _open_store(store: Any):
    if isinstance(store, (str, os.PathLike)):
        from .tiles import TileStore

        return TileStore(store)
    if not hasattr(store, "index") or not hasattr(store, "iter_batches"):
        raise CrevkitValueError("store must be a tile store directory or a TileStore "
                                f"(with .index and .iter_batches), got {type(store).__name__}")
    return store


def build_library(store: Any, output: str | os.PathLike, *, pixel_size: float | None = None,
                  instrument: Any = "glas", batch_size: int = 1024, progress: bool | None = None,
                  waveform_parts: Sequence[str | os.PathLike] | None = None, **overrides: Any):
    """Simulate one waveform per tile of a tile store and write the library.

    Parameters
    ----------
    store : path or TileStore
        The run's tile store (``run/tiles``); anything with ``.index`` (a
        DataFrame with ``tile_id``) and ``.iter_batches(batch_size)``
        yielding ``(index_slice, float32 tiles)``.
    output : path
        Library directory (``run/library``).
    pixel_size : float, optional
        Tile pixel size in metres; default the store's ``resolution`` (0.5 if it has none).
    instrument, **overrides
        As in :func:`crevkit.simulate_waveforms`.
    batch_size : int
        Tiles simulated (and held in memory) at a time.
    progress : bool, optional
        Force the progress bar on or off.
    waveform_parts : sequence of paths, optional
        ``.npy`` files of already simulated waveforms covering the store's
        rows in order (written by distributed tasks,
        :mod:`crevkit.pipeline.distributed_stages`): they are assembled
        instead of simulating, and no tile is read.

    Returns
    -------
    StageCounts
        found = tiles in the store, done = waveforms written.
    """
    import pandas as pd
    import zarr

    from ._atomic import atomic_dir, atomic_path, atomic_write_text
    from ._progress import StageCounts, progress as progress_bar
    from .index import _instrument_record
    from .simulate import make_plan, simulate_waveforms

    st = _open_store(store)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    index = st.index
    if "tile_id" not in index.columns:
        raise CrevkitValueError("store index has no tile_id column")
    n = len(index)
    if n == 0:
        raise CrevkitValueError("the tile store holds no tiles")
    if pixel_size is None:
        pixel_size = float(getattr(st, "resolution", None) or getattr(st, "pixel_size", None) or 0.5)
    tile_px = getattr(st, "tile_px", None)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    meta_path = output / "library.json"
    if meta_path.exists():
        meta_path.unlink()  # the library is incomplete until the new sidecar is written
    counts = StageCounts("library", found=n)
    h = hashlib.sha256()
    ids: list[str] = []
    plan = None
    n_batches = -(-n // batch_size)
    with atomic_dir(output / "waveforms.zarr") as tmp:
        z = None
        pos = 0
        if waveform_parts is None:
            batches = ((sl, np.asarray(tiles), None) for sl, tiles in st.iter_batches(batch_size))
        else:
            if not tile_px:
                raise CrevkitValueError("waveform_parts needs a store that records its tile_px")
            n_batches = len(waveform_parts)
            batches = _part_batches(waveform_parts, index)
        for sl, tiles, wave in progress_bar(batches, desc="library", total=n_batches, unit="batch",
                                            disable=None if progress is None else not progress):
            frame = sl if hasattr(sl, "columns") else index.iloc[sl]
            if plan is None:
                shape = tiles.shape[1:] if tiles is not None else (tile_px, tile_px)
                tile_px = tile_px or shape[-1]
                plan = make_plan(shape, pixel_size, instrument, **overrides)
                z = zarr.open_array(str(tmp), mode="w", shape=(n, plan.n_samples),
                                    chunks=(min(batch_size, n), plan.n_samples), dtype="float32")
                h.update(f"crevkit-library:{n}x{plan.n_samples}:float32\n".encode())
            if wave is None:
                if len(frame) != tiles.shape[0]:
                    raise CrevkitValueError(f"store batch at row {pos}: {len(frame)} index rows for {tiles.shape[0]} tiles")
                try:
                    wave = simulate_waveforms(tiles, pixel_size, instrument, **overrides)
                except CrevkitValueError as exc:
                    raise CrevkitValueError(f"tiles at rows {pos}..{pos + tiles.shape[0] - 1}: {exc}") from None
            elif wave.shape != (len(frame), plan.n_samples):
                raise CrevkitValueError(f"waveform part at row {pos}: shape {wave.shape}, expected "
                                        f"({len(frame)}, {plan.n_samples})")
            z[pos:pos + wave.shape[0]] = wave
            h.update(np.ascontiguousarray(wave, dtype=np.float32).tobytes())
            ids.extend(str(t) for t in frame["tile_id"])
            pos += wave.shape[0]
            counts.done += wave.shape[0]
        if pos != n:
            raise CrevkitValueError(f"the store yielded {pos} tiles, its index lists {n}")
    h.update(b"\ntile_ids\n")
    for t in ids:
        h.update(t.encode())
        h.update(b"\n")
    table = pd.DataFrame({"row": np.arange(n, dtype=np.int64), "tile_id": ids})
    for col in _TABLE_COLUMNS:
        if col in index.columns:
            table[col] = index[col].to_numpy()
    with atomic_path(output / "library.parquet", suffix=".parquet") as tmp:
        table.to_parquet(tmp, index=False)
    meta = {
        "format": _FORMAT,
        "format_version": 1,
        "n": n,
        "n_samples": int(plan.n_samples),
        "pixel_size": float(pixel_size),
        "tile_px": int(tile_px) if tile_px else None,
        "instrument": _instrument_record(plan.instrument),
        "options": {k: v for k, v in overrides.items() if not isinstance(v, np.ndarray)},
        "store": str(getattr(st, "path", "")),
        "sha256": h.hexdigest(),
    }
    atomic_write_text(meta_path, json.dumps(meta, indent=2, default=str))
    return counts.report()


def _part_batches(parts: Sequence[str | os.PathLike], index: Any):
    """(index rows, None, waveforms) per part file, rows following each other."""
    pos = 0
    for path in parts:
        wave = np.load(path)
        yield index.iloc[pos:pos + wave.shape[0]], None, wave
        pos += wave.shape[0]


def open_library(path: str | os.PathLike, *, verify: bool = False) -> Library:
    """Open a library directory written by :func:`build_library`.

    With ``verify=True`` the waveforms and tile ids are re-hashed and compared
    with ``library.json`` (:class:`crevkit.IndexIntegrityError` if they differ).
    """
    import pandas as pd
    import zarr

    from .index import library_hash

    path = Path(path)
    meta = read_sidecar(path / "library.json", fmt=_FORMAT, what="waveform library",
                        missing="not a complete waveform library (no library.json)")
    try:
        waves = zarr.open_array(str(path / "waveforms.zarr"), mode="r")
    except Exception as exc:  # zarr raises several unrelated types
        raise InputFileError(f"{path / 'waveforms.zarr'}: cannot open ({exc})") from None
    try:
        table = pd.read_parquet(path / "library.parquet")
    except Exception as exc:
        raise InputFileError(f"{path / 'library.parquet'}: cannot read ({exc})") from None
    if tuple(waves.shape) != (meta["n"], meta["n_samples"]) or len(table) != meta["n"]:
        raise IndexIntegrityError(f"{path}: waveforms {tuple(waves.shape)} / table {len(table)} rows do not match "
                                  f"library.json ({meta['n']} × {meta['n_samples']})")
    ids = table["tile_id"].astype(str).to_numpy()
    if verify and library_hash(waves, ids) != meta["sha256"]:
        raise IndexIntegrityError(f"{path}: content does not match the sha256 in library.json")
    return Library(path=path, waveforms=waves, tile_ids=ids, table=table, metadata=meta)
