"""Cut DEM frames into zero-mean tiles and keep them in a tile store.

Tiling (:func:`tile_frames`)
----------------------------
Each frame is opened and repaired by :func:`crevkit.dem.open_frame`, then
resampled bilinearly to ``resolution`` on the frame's *own* grid (origin at
the frame's top-left corner), so overlapping frames with different pixel
sizes give tiles at different offsets.  Tiles of ``tile_size_m`` (default
100 m = 200 x 200 px at 0.5 m) are cut on that grid; a tile whose bilinear
support touches nodata or the frame edge is dropped; the tile's mean is
subtracted (in float64, stored as float32) and the tile is named by
``blake2b-128`` of its float32 bytes, so duplicates collapse.

Frames are read by windows (one row of tiles, and as many tile columns as
``memory_budget_mb`` allows), never whole, so memory is bounded whatever
the frame size.  Frames are independent (:func:`iter_frame_tiles` is the
per-frame unit, the one later mapped over Dask workers); one writer commits
tiles to the store.  With ``n_workers > 1`` frames are cut on threads and
consumed in input order, so the result is the same as with one.

The store (:class:`TileStore`)
------------------------------
``store_dir/``

- ``tiles.zarr`` — float32 array ``(n, S, S)`` (S = tile pixels), Zarr v3,
  one shard per ``batch_size`` tiles, one inner chunk per tile (fast
  random reads).  Dimension names ``(tile, y, x)``.
- ``index.parquet`` — one row per tile, ``row`` = position in the cube.
- ``store.json`` — the commit record: ``committed`` (rows that exist), the
  tiling parameters, and the frames (by file fingerprint, see
  :func:`crevkit.dem.file_key`) fully tiled.
- ``_parts/`` — index rows committed since ``index.parquet`` was last
  consolidated (empty after a finished run).

Commit protocol (append-only): a batch of tiles is written to the cube
rows ``[committed, committed + k)`` (each shard file is replaced atomically
by Zarr's local store), then its index rows go to ``_parts/`` (atomic
rename), then ``store.json`` is rewritten atomically with the new
``committed``: that rename is the commit.  A killed process leaves rows
beyond ``committed`` that no reader sees; the next run truncates the cube
to ``committed``, drops uncommitted parts, re-tiles the frames not marked
done and skips tiles whose id is already stored, so nothing is lost or
duplicated.  :meth:`TileStore.verify` re-hashes rows against their ids.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import queue
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from ._progress import StageCounts, progress
from ._validation import check_int, check_positive
from .dem import DEFAULT_CRS, DemFrame, file_key, open_frame
from .errors import ConfigError, CrevkitValueError, IndexIntegrityError, InputFileError, RunLockedError

__all__ = [
    "tile_frames",
    "iter_frame_tiles",
    "tile_id",
    "Tile",
    "TileCounts",
    "TileStore",
    "export_tiles",
    "find_frames",
    "INDEX_COLUMNS",
]

log = logging.getLogger("crevkit.tiles")

_FORMAT = "crevkit-tiles/1"
#: columns of ``index.parquet``, in order
INDEX_COLUMNS = [
    "tile_id", "row", "x", "y", "lon", "lat", "crs", "source", "source_key", "source_pixel_size",
    "frame_row", "frame_col", "resolution", "mean", "std", "relief", "slope_deg",
    "truth_crevassed_fraction", "repaired",
]
_UPSAMPLE_WARN = 1.5


def tile_id(tile: np.ndarray) -> str:
    """The id of a tile: blake2b-128 (hex) of its float32 bytes and shape."""
    a = np.ascontiguousarray(tile, dtype=np.float32)
    h = hashlib.blake2b(digest_size=16, person=b"crevkit-tile-v1")
    h.update(np.asarray(a.shape, dtype=np.int64).tobytes())
    h.update(a.data)
    return h.hexdigest()


@dataclasses.dataclass
class Tile:
    """One cut tile: zero-mean float32 ``array`` and its index fields."""

    tile_id: str
    array: np.ndarray
    x: float
    y: float
    frame_row: int
    frame_col: int
    mean: float
    std: float
    relief: float
    slope_deg: float
    truth_crevassed_fraction: float


@dataclasses.dataclass
class TileCounts(StageCounts):
    """:class:`crevkit._progress.StageCounts` of the tile stage, plus per-frame ``errors``.

    ``found`` tiles cut on the grids, ``done`` written, ``skipped`` =
    duplicates + tiles touching nodata, ``failed`` = frames that failed;
    ``extra`` holds ``written``, ``duplicate``, ``skipped_nodata``,
    ``frames``, ``frames_failed``, ``frames_already_done``, ``frames_empty``.
    ``errors`` maps a failed frame's path to its message.
    """

    errors: dict = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- frames
def find_frames(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders into their ``*.tif``/``*.tiff`` frames, sorted.

    Truth sidecars (``*.truth.tif``, see :func:`crevkit.scenes.truth_path_for`)
    are never frames, even when listed explicitly (e.g. by a ``*.tif`` glob).
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in (".tif", ".tiff")
                          and not q.name.endswith(".truth.tif"))
        elif p.name.endswith(".truth.tif"):
            log.debug("%s: a truth sidecar, not a frame; skipped", p)
        else:
            out.append(p)
    return out


def _grid_check(resolution: float, tile_size_m: float) -> int:
    npx = int(round(tile_size_m / resolution))
    if npx < 2 or abs(npx * resolution - tile_size_m) > 1e-6 * tile_size_m:
        raise CrevkitValueError(f"tile_size_m ({tile_size_m}) must be a whole number (>= 2) of pixels of "
                                f"resolution ({resolution})")
    return npx


def _axis_sampling(n_out: int, start_out: float, res: float, src_origin: float, src_res: float,
                   n_src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source index i0, weight and validity for output pixel centres along one axis.

    Output centre ``k`` lies at ``start_out + (k + 0.5) * res`` metres from the
    source origin side (``src_origin`` is 0 in that frame of reference).
    """
    pos = (start_out + (np.arange(n_out) + 0.5) * res - src_origin) / src_res - 0.5
    i0 = np.floor(pos).astype(np.int64)
    w = (pos - i0).astype(np.float32)
    valid = (i0 >= 0) & (i0 + 1 <= n_src - 1)
    return i0, w, valid


def _truth_reader(path: Path, frame: DemFrame) -> Any:
    from .scenes import TRUTH_NODATA, truth_path_for

    tp = truth_path_for(path)
    if not tp.is_file():
        return None
    import rasterio

    try:
        ds = rasterio.open(tp)
    except Exception as exc:
        log.warning("%s: truth sidecar unreadable (%s); no truth for this frame", tp, exc)
        return None
    if (ds.width, ds.height) != (frame.dataset.width, frame.dataset.height) or "reprojected" in frame.repairs:
        log.warning("%s: truth sidecar does not match its frame's grid; ignored", tp)
        ds.close()
        return None
    return ds, TRUTH_NODATA


def iter_frame_tiles(path: str | os.PathLike, *, resolution: float = 0.5, tile_size_m: float = 100.0,
                     crs: Any = None, reproject: bool = False, memory_budget_mb: float = 256.0,
                     counts: dict | None = None, frame: DemFrame | None = None) -> Iterator[Tile]:
    """Cut one frame into tiles (the independent per-frame unit of :func:`tile_frames`).

    Parameters
    ----------
    path : path
        A single-band DEM GeoTIFF.
    resolution : float
        Output pixel size (m).
    tile_size_m : float
        Tile edge (m); a whole number of ``resolution`` pixels.
    crs, reproject
        As in :func:`crevkit.dem.open_frame`.
    memory_budget_mb : float
        Upper bound for the working arrays of one window read.
    counts : dict, optional
        Updated in place with ``found`` and ``skipped_nodata``.
    frame : DemFrame, optional
        An already opened frame (closed by the caller).

    Yields
    ------
    Tile
        In grid order (rows top to bottom, columns left to right).
    """
    resolution = check_positive(resolution, "resolution")
    tile_size_m = check_positive(tile_size_m, "tile_size_m")
    npx = _grid_check(resolution, tile_size_m)
    counts = counts if counts is not None else {}
    counts.setdefault("found", 0)
    counts.setdefault("skipped_nodata", 0)
    own = frame is None
    fr = open_frame(path, crs=crs, reproject=reproject) if own else frame
    try:
        yield from _cut(Path(path), fr, resolution, tile_size_m, npx, memory_budget_mb, counts)
    finally:
        if own:
            fr.close()


def _cut(path: Path, fr: DemFrame, res: float, tile_m: float, npx: int, budget_mb: float,
         counts: dict) -> Iterator[Tile]:
    t = fr.transform
    width_m = fr.width * fr.pixel_size
    height_m = fr.height * fr.pixel_size_y
    n_rows = int(math.floor(height_m / tile_m + 1e-9))
    n_cols = int(math.floor(width_m / tile_m + 1e-9))
    factor = fr.pixel_size / res
    if factor > _UPSAMPLE_WARN:
        msg = (f"{path}: upsampling {fr.pixel_size:g} m pixels to {res:g} m (factor {factor:.1f}): tiles are "
               "interpolations of the source and hold no detail finer than its pixels")
        log.warning(msg)
        if counts.get("defer_warnings"):
            counts.setdefault("warnings", []).append(msg)  # re-issued by the driver's thread
        else:
            warnings.warn(msg, UserWarning, stacklevel=3)
    if n_rows == 0 or n_cols == 0:
        log.warning("%s: frame is %.1f m x %.1f m, smaller than one %g m tile: 0 tiles", path, width_m, height_m,
                    tile_m)
        counts["empty"] = True
        return
    truth = _truth_reader(path, fr)
    # plane-fit basis (centred pixel coordinates, metres) for the slope column
    cc = (np.arange(npx) - (npx - 1) / 2.0) * res
    sxx = float(npx * (cc**2).sum())
    cc32 = cc.astype(np.float32)
    # how many tile columns per window read
    src_rows = tile_m / fr.pixel_size_y + 3
    per_col = (tile_m / fr.pixel_size + 1) * src_rows * 4 * 3 + npx * npx * 4 * 4
    cols_per_win = max(1, min(n_cols, int(budget_mb * 1e6 // per_col)))
    try:
        for i in range(n_rows):
            ri0, wy, vy = _axis_sampling(npx, i * tile_m, res, 0.0, fr.pixel_size_y, fr.height)
            r_lo = max(0, int(ri0.min()))
            r_hi = min(fr.height, int(ri0.max()) + 2)
            for j0 in range(0, n_cols, cols_per_win):
                j1 = min(n_cols, j0 + cols_per_win)
                nout = (j1 - j0) * npx
                ci0, wx, vx = _axis_sampling(nout, j0 * tile_m, res, 0.0, fr.pixel_size, fr.width)
                c_lo = max(0, int(ci0.min()))
                c_hi = min(fr.width, int(ci0.max()) + 2)
                counts["found"] += j1 - j0
                if r_hi - r_lo < 2 or c_hi - c_lo < 2:
                    counts["skipped_nodata"] += j1 - j0
                    continue
                src = fr.read(r_lo, r_hi, c_lo, c_hi)
                out = _bilinear(src, ri0 - r_lo, wy, vy, ci0 - c_lo, wx, vx)
                bad = np.isnan(out.reshape(npx, j1 - j0, npx)).any(axis=(0, 2))
                counts["skipped_nodata"] += int(bad.sum())
                if bad.all():
                    continue
                tfrac = None
                if truth is not None:
                    from rasterio.windows import Window

                    tds, tnd = truth
                    tr = tds.read(1, window=Window(c_lo, r_lo, c_hi - c_lo, r_hi - r_lo)).astype(np.float32)
                    tr[tr == tnd] = np.nan
                    tfrac = _bilinear(tr, ri0 - r_lo, wy, vy, ci0 - c_lo, wx, vx)
                for jj in np.flatnonzero(~bad):
                    j = j0 + int(jj)
                    a = np.ascontiguousarray(out[:, jj * npx:(jj + 1) * npx])
                    # mean with float64 accumulation; subtract in float32, then remove the
                    # float32 rounding residue so the stored tile is zero-mean to ~1e-7
                    m = float(a.mean(dtype=np.float64))
                    arr = a - np.float32(m)
                    r = float(arr.mean(dtype=np.float64))
                    arr -= np.float32(r)
                    m += r
                    v = arr.ravel()
                    gx = float(cc32 @ arr.sum(axis=0, dtype=np.float64).astype(np.float32)) / sxx
                    gy = -float(cc32 @ arr.sum(axis=1, dtype=np.float64).astype(np.float32)) / sxx  # rows go south
                    tf = float("nan")
                    if tfrac is not None:
                        tt = tfrac[:, jj * npx:(jj + 1) * npx]
                        tf = float(np.nanmean(tt)) if np.isfinite(tt).any() else float("nan")
                    yield Tile(
                        tile_id=tile_id(arr), array=arr,
                        x=float(t.c + (j + 0.5) * tile_m), y=float(t.f - (i + 0.5) * tile_m),
                        frame_row=i, frame_col=j, mean=m, std=math.sqrt(max(0.0, float(v @ v) / v.size)),
                        relief=float(v.max() - v.min()),
                        slope_deg=math.degrees(math.atan(math.hypot(gx, gy))),
                        truth_crevassed_fraction=tf)
    finally:
        if truth is not None:
            truth[0].close()


def _bilinear(src: np.ndarray, ri0: np.ndarray, wy: np.ndarray, vy: np.ndarray, ci0: np.ndarray,
              wx: np.ndarray, vx: np.ndarray) -> np.ndarray:
    """Separable bilinear sampling; NaN where the support touches NaN or leaves the frame."""
    h, w = src.shape
    r0 = np.clip(ri0, 0, h - 2)
    c0 = np.clip(ci0, 0, w - 2)
    wy = wy[:, None]
    tmp = src[r0] * (np.float32(1) - wy) + src[r0 + 1] * wy
    if not vy.all():
        tmp[~vy] = np.nan
    out = tmp[:, c0] * (np.float32(1) - wx) + tmp[:, c0 + 1] * wx
    if not vx.all():
        out[:, ~vx] = np.nan
    return out


# --------------------------------------------------------------------------- store writer
def _zarr_major() -> int:
    import zarr

    return int(zarr.__version__.split(".")[0])


class _Writer:
    """Append-only committer of tiles into a store directory (see the module docstring)."""

    def __init__(self, store_dir: Path, *, params: dict, batch_size: int):
        self.dir = store_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(self.dir / ".lock", "a+")
        try:
            import fcntl

            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise RunLockedError(f"{self.dir}: another process is writing this tile store") from None
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        self.batch_size = batch_size
        self.meta_path = self.dir / "store.json"
        self.parts = self.dir / "_parts"
        self.parts.mkdir(exist_ok=True)
        if self.meta_path.exists():
            self.meta = json.loads(self.meta_path.read_text())
            for k in ("resolution", "tile_size_m", "tile_px", "crs"):
                if self.meta[k] != params[k]:
                    raise ConfigError(f"{self.dir}: store was made with {k}={self.meta[k]!r}, this run asks "
                                      f"{params[k]!r}; use another store directory")
        else:
            self.meta = dict(params, format=_FORMAT, committed=0, frames_done={}, batch_size=batch_size)
        self.committed = int(self.meta["committed"])
        self.arr = self._open_array(params["tile_px"])
        if self.arr.shape[0] != self.committed:  # rows of an interrupted flush
            self.arr.resize((self.committed,) + self.arr.shape[1:])
        for p in self.parts.glob("*.parquet"):
            r0, r1 = (int(v) for v in p.stem.split("-")[1:3])
            if r1 > self.committed:
                p.unlink()
        for p in self.dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
        idx = _read_index(self.dir, self.committed)
        self.ids = set(idx["tile_id"]) if len(idx) else set()
        self.pending: list[dict] = []
        self.buf = np.empty((batch_size, params["tile_px"], params["tile_px"]), np.float32)
        self.finished_frames: dict[str, dict] = {}
        if not self.meta_path.exists():
            atomic_write_text(self.meta_path, json.dumps(self.meta, indent=1) + "\n")

    def _open_array(self, s: int) -> Any:
        import zarr

        path = self.dir / "tiles.zarr"
        if path.exists():
            return zarr.open_array(str(path), mode="r+")
        b = self.batch_size
        if _zarr_major() >= 3:
            return zarr.create_array(store=str(path), shape=(0, s, s), chunks=(1, s, s), shards=(b, s, s),
                                     dtype="float32", compressors=None, fill_value=0.0,
                                     dimension_names=("tile", "y", "x"))
        return zarr.open_array(str(path), mode="w", shape=(0, s, s), chunks=(b, s, s), dtype="float32",
                               compressor=None, fill_value=0.0)  # pragma: no cover - zarr 2

    def add(self, rec: dict, arr: np.ndarray) -> bool:
        if rec["tile_id"] in self.ids:
            return False
        self.ids.add(rec["tile_id"])
        self.buf[len(self.pending)] = arr
        self.pending.append(rec)
        if len(self.pending) >= self.batch_size:
            self.flush()
        return True

    def frame_finished(self, key: str, info: dict) -> None:
        self.finished_frames[key] = info

    def flush(self) -> None:
        import pandas as pd

        r0 = self.committed
        r1 = r0 + len(self.pending)
        if self.pending:
            self.arr.resize((r1,) + self.arr.shape[1:])
            self.arr[r0:r1] = self.buf[:r1 - r0]
            df = pd.DataFrame([dict(rec, row=r0 + k) for k, rec in enumerate(self.pending)])
            df = df[INDEX_COLUMNS]
            with atomic_path(self.parts / f"rows-{r0:012d}-{r1:012d}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
        self.meta["committed"] = r1
        self.meta["frames_done"].update(self.finished_frames)
        atomic_write_text(self.meta_path, json.dumps(self.meta, indent=1) + "\n")  # the commit
        self.committed = r1
        self.pending = []
        self.finished_frames = {}

    def consolidate(self) -> None:
        idx = _read_index(self.dir, self.committed)
        with atomic_path(self.dir / "index.parquet", suffix=".parquet") as tmp:
            idx.to_parquet(tmp, index=False)
        for p in self.parts.glob("*.parquet"):
            p.unlink()

    def close(self) -> None:
        self._lock_fh.close()


def _empty_index() -> Any:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype="float64") for c in INDEX_COLUMNS}).astype(
        {"tile_id": str, "row": "int64", "crs": str, "source": str, "source_key": str, "repaired": str,
         "frame_row": "int32", "frame_col": "int32"})


def _read_index(store_dir: Path, committed: int) -> Any:
    """index.parquet plus committed parts, rows [0, committed), sorted by row."""
    import pandas as pd

    frames = []
    main = store_dir / "index.parquet"
    n_main = 0
    if main.exists():
        df = pd.read_parquet(main)
        df = df[df["row"] < committed]
        n_main = len(df)
        frames.append(df)
    parts = store_dir / "_parts"
    if parts.exists():
        for p in sorted(parts.glob("rows-*.parquet")):
            r0, r1 = (int(v) for v in p.stem.split("-")[1:3])
            if r0 >= n_main and r1 <= committed:
                frames.append(pd.read_parquet(p))
    if not frames:
        return _empty_index()
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df.sort_values("row", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- driver
def _lonlat(crs: Any) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


_DONE = object()


def _produce(path: Path, q: "queue.Queue", kw: dict, stop: threading.Event) -> None:
    """Worker: open, hash and cut one frame into ``q``; ends with (_DONE, info) or ("error", exc)."""
    try:
        key = file_key(path)
        if key in kw["skip_keys"]:
            q.put((_DONE, {"key": key, "already": True}))
            return
        counts: dict = {"defer_warnings": True}
        with open_frame(path, crs=kw["crs"], reproject=kw["reproject"]) as fr:
            info = {"key": key, "pixel_size": fr.pixel_size, "repairs": list(fr.repairs), "counts": counts}
            q.put(("frame", info))
            for t in iter_frame_tiles(path, resolution=kw["resolution"], tile_size_m=kw["tile_size_m"],
                                      memory_budget_mb=kw["memory_budget_mb"], counts=counts, frame=fr):
                if stop.is_set():
                    return
                q.put(("tile", t))
        q.put((_DONE, info))
    except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
        q.put(("error", exc))


def tile_frames(frames: Sequence[str | os.PathLike] | str | os.PathLike, store_dir: str | os.PathLike, *,
                resolution: float = 0.5, tile_size_m: float = 100.0, crs: Any = None, reproject: bool = False,
                batch_size: int = 128, seed: int | None = None, n_workers: int = 1,
                memory_budget_mb: float = 256.0, on_error: str = "skip",
                show_progress: bool | None = None) -> TileCounts:
    """Tile DEM frames into the tile store ``store_dir`` (resumable, append-only).

    Parameters
    ----------
    frames : path or sequence of paths
        GeoTIFF frames, or folders of them (``*.tif``; ``*.truth.tif`` sidecars are not frames).
    store_dir : path
        The tile store (the run directory's ``tiles/``); created if missing.
    resolution : float
        Output pixel size in metres (default 0.5).
    tile_size_m : float
        Tile edge in metres (default 100, i.e. 200 x 200 px at 0.5 m).
    crs : str or CRS, optional
        The run's CRS.  Default: the store's, else EPSG:3413.  Frames without a
        CRS are assumed to be in it; frames in another CRS are refused unless
        ``reproject``.
    reproject : bool
        Warp frames in another CRS to the run's instead of refusing them.
    batch_size : int
        Tiles per commit, and per Zarr shard of the cube.
    seed : int, optional
        Accepted for the stage interface; tiling is deterministic and uses no randomness.
    n_workers : int
        Threads cutting frames concurrently (results are consumed in input
        order, so they do not change the store).
    memory_budget_mb : float
        Bound on one window's working arrays (frames are never read whole).
    on_error : {"skip", "raise"}
        A frame that fails (unreadable, refused) is logged, counted and skipped,
        or its error is raised after the tiles committed so far are kept.
        Truncated GeoTIFFs are refused before any tile is cut; a frame that fails
        part-way (a damaged block) keeps the valid tiles cut before the failure,
        is not marked done, and is retried by the next run (its earlier tiles
        then collapse as duplicates).
    show_progress : bool, optional
        Force the progress bar on or off (default: when stderr is a terminal).

    Returns
    -------
    TileCounts
        found / written / duplicate / skipped-nodata tiles, failed frames and their errors.
    """
    resolution = check_positive(resolution, "resolution")
    tile_size_m = check_positive(tile_size_m, "tile_size_m")
    npx = _grid_check(resolution, tile_size_m)
    batch_size = check_int(batch_size, "batch_size", minimum=1, maximum=1_000_000)
    n_workers = check_int(n_workers, "n_workers", minimum=1, maximum=256)
    memory_budget_mb = check_positive(memory_budget_mb, "memory_budget_mb")
    if on_error not in ("skip", "raise"):
        raise CrevkitValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    from rasterio.crs import CRS

    store_dir = Path(store_dir)
    if crs is None and (store_dir / "store.json").exists():
        crs = json.loads((store_dir / "store.json").read_text()).get("crs")
    try:
        run_crs = CRS.from_user_input(crs if crs is not None else DEFAULT_CRS)
    except Exception as exc:
        raise CrevkitValueError(f"crs {crs!r} is not a CRS rasterio understands: {exc}") from None
    crs_str = run_crs.to_string()
    paths = find_frames([frames] if isinstance(frames, (str, os.PathLike)) else frames)
    params = {"resolution": resolution, "tile_size_m": tile_size_m, "tile_px": npx, "crs": crs_str}
    counts = TileCounts(stage="tile")
    ex = {"written": 0, "duplicate": 0, "skipped_nodata": 0, "frames": len(paths), "frames_failed": 0,
          "frames_already_done": 0, "frames_empty": 0}
    writer = _Writer(store_dir, params=params, batch_size=batch_size)
    to_ll = _lonlat(run_crs)
    kw = {"crs": crs, "reproject": reproject, "resolution": resolution, "tile_size_m": tile_size_m,
          "memory_budget_mb": memory_budget_mb, "skip_keys": set(writer.meta["frames_done"])}
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="crevkit-tile")
    try:
        queues: list[queue.Queue] = []
        for p in paths:
            q: queue.Queue = queue.Queue(maxsize=max(8, min(64, batch_size)))
            pool.submit(_produce, p, q, kw, stop)
            queues.append(q)
        for path, q in progress(zip(paths, queues), desc="tile", total=len(paths), unit="frame",
                                disable=None if show_progress is None else not show_progress):
            info: dict = {}
            src = str(path)
            while True:
                kind, item = q.get()
                if kind == "frame":
                    info = item
                elif kind == "tile":
                    t: Tile = item
                    lon, lat = to_ll.transform(t.x, t.y)
                    rec = {"tile_id": t.tile_id, "x": t.x, "y": t.y, "lon": float(lon), "lat": float(lat),
                           "crs": crs_str, "source": src, "source_key": info["key"],
                           "source_pixel_size": info["pixel_size"], "frame_row": t.frame_row,
                           "frame_col": t.frame_col, "resolution": resolution, "mean": t.mean, "std": t.std,
                           "relief": t.relief, "slope_deg": t.slope_deg,
                           "truth_crevassed_fraction": t.truth_crevassed_fraction,
                           "repaired": ",".join(info["repairs"])}
                    if writer.add(rec, t.array):
                        ex["written"] += 1
                    else:
                        ex["duplicate"] += 1
                elif kind == "error":
                    exc = item
                    if not isinstance(exc, (InputFileError, CrevkitValueError)):
                        if isinstance(exc, Exception):
                            exc = InputFileError(f"{path}: {type(exc).__name__}: {exc}")
                        else:
                            raise exc
                    ex["frames_failed"] += 1
                    counts.errors[src] = str(exc)
                    log.error("%s", exc)
                    if on_error == "raise":
                        writer.flush()
                        writer.consolidate()
                        raise exc
                    fc = info.get("counts", {})
                    counts.found += fc.get("found", 0)
                    ex["skipped_nodata"] += fc.get("skipped_nodata", 0)
                    break
                else:  # done
                    for msg in item.get("counts", {}).get("warnings", []):
                        warnings.warn(msg, UserWarning, stacklevel=2)
                    if item.get("already"):
                        ex["frames_already_done"] += 1
                        log.info("%s: already tiled in this store (same file, unchanged); skipped", path)
                        break
                    fc = item["counts"]
                    counts.found += fc.get("found", 0)
                    ex["skipped_nodata"] += fc.get("skipped_nodata", 0)
                    if fc.get("empty"):
                        ex["frames_empty"] += 1
                    writer.frame_finished(item["key"], {"source": src, "found": fc.get("found", 0)})
                    break
        writer.flush()
        writer.consolidate()
    finally:
        stop.set()
        for q in locals().get("queues", []):  # unblock producers of abandoned frames
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()
        pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
    counts.done = ex["written"]
    counts.skipped = ex["duplicate"] + ex["skipped_nodata"]
    counts.failed = ex["frames_failed"]
    counts.extra = ex
    counts.report()
    return counts


# --------------------------------------------------------------------------- reading
def merge_tile_stores(parts: Sequence[str | os.PathLike], store_dir: str | os.PathLike, *,
                      batch_size: int = 128, show_progress: bool | None = None) -> TileCounts:
    """Append the tiles of per-frame stores to ``store_dir``, in the order given.

    The distributed tile stage (:mod:`crevkit.pipeline.distributed_stages`)
    tiles each frame into its own small store on a worker; merging them in
    input order gives the same rows, ids and index as :func:`tile_frames`
    over the frames in one process (duplicates collapse the same way).
    Frames the target store has already committed are skipped.

    Returns
    -------
    TileCounts
        found = tiles in the parts, done = tiles appended, skipped = duplicates.
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1, maximum=1_000_000)
    stores = [TileStore(p) for p in parts]
    counts = TileCounts(stage="tile-merge")
    if not stores:
        return counts
    params = {k: stores[0].meta[k] for k in ("resolution", "tile_size_m", "tile_px", "crs")}
    writer = _Writer(Path(store_dir), params=params, batch_size=batch_size)
    written = duplicate = 0
    try:
        for part in progress(stores, desc="tile-merge", total=len(stores), unit="frame",
                             disable=None if show_progress is None else not show_progress):
            for k in ("resolution", "tile_size_m", "tile_px", "crs"):
                if part.meta[k] != params[k]:
                    raise ConfigError(f"{part.path}: made with {k}={part.meta[k]!r}, the first part has {params[k]!r}")
            frames = {key: info for key, info in part.meta["frames_done"].items()
                      if key not in writer.meta["frames_done"]}
            if not frames:
                continue
            counts.found += len(part)
            for sl, arr in part.iter_batches(batch_size):
                for rec, tile in zip(sl.drop(columns=["row"]).to_dict("records"), arr):
                    if writer.add(rec, tile):
                        written += 1
                    else:
                        duplicate += 1
            for key, info in frames.items():
                writer.frame_finished(key, info)
            writer.flush()  # a frame's tiles and its "done" mark commit together
        writer.flush()
        writer.consolidate()
    finally:
        writer.close()
    counts.done = written
    counts.skipped = duplicate
    counts.extra = {"written": written, "duplicate": duplicate}
    return counts


class TileStore:
    """Read access to a tile store written by :func:`tile_frames`.

    Parameters
    ----------
    store_dir : path
        The folder holding ``tiles.zarr``, ``index.parquet`` and ``store.json``.

    Attributes
    ----------
    path : pathlib.Path
    crs : str
    resolution, tile_size_m : float
    tile_px : int
        Pixels along a tile edge (``tile_size_m / resolution``).
    """

    def __init__(self, store_dir: str | os.PathLike):
        self.path = Path(store_dir)
        meta = self.path / "store.json"
        if not meta.exists():
            raise InputFileError(f"{self.path}: not a tile store (no store.json)")
        self.meta = json.loads(meta.read_text())
        if self.meta.get("format") != _FORMAT:
            raise InputFileError(f"{self.path}/store.json: unknown format {self.meta.get('format')!r}")
        self.crs = self.meta["crs"]
        self.resolution = float(self.meta["resolution"])
        self.tile_size_m = float(self.meta["tile_size_m"])
        self.tile_px = int(self.meta["tile_px"])
        self._n = int(self.meta["committed"])
        self._index = None
        import zarr

        try:
            self._arr = zarr.open_array(str(self.path / "tiles.zarr"), mode="r")
        except Exception as exc:
            raise InputFileError(f"{self.path}/tiles.zarr: cannot open the tile cube: {exc}") from None
        if self._arr.shape[0] < self._n:
            raise IndexIntegrityError(f"{self.path}: cube has {self._arr.shape[0]} rows, store.json commits {self._n}")

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"TileStore({str(self.path)!r}, {self._n} tiles of {self.tile_px}x{self.tile_px} at {self.resolution} m)"

    @property
    def index(self) -> Any:
        """The tile index (pandas DataFrame, one row per tile, ``row`` = position in the cube)."""
        if self._index is None:
            self._index = _read_index(self.path, self._n)
        return self._index

    @property
    def array(self) -> Any:
        """The Zarr array of the cube (may hold uncommitted rows past ``len(self)``)."""
        return self._arr

    def read(self, rows: Any) -> np.ndarray:
        """Tiles at cube ``rows`` (int, slice or integer array) as float32 ``(k, S, S)`` (``(S, S)`` for an int)."""
        if isinstance(rows, slice):
            a, b, st = rows.indices(self._n)
            if st == 1:
                return np.asarray(self._arr[a:b], dtype=np.float32)
            rows = np.arange(a, b, st)
        scalar = np.ndim(rows) == 0
        r = np.atleast_1d(np.asarray(rows))
        if r.size and (not np.issubdtype(r.dtype, np.integer) or r.min() < -self._n or r.max() >= self._n):
            raise CrevkitValueError(f"rows must be integers in [0, {self._n}), got {rows!r}")
        r = np.where(r < 0, r + self._n, r).astype(np.int64)
        if r.size == 0:
            return np.empty((0, self.tile_px, self.tile_px), np.float32)
        order = np.argsort(r, kind="stable")
        srt = r[order]
        if np.all(np.diff(srt) == 1):
            got = np.asarray(self._arr[int(srt[0]):int(srt[-1]) + 1], dtype=np.float32)
        else:
            got = np.asarray(self._arr.get_orthogonal_selection((srt, slice(None), slice(None))),
                             dtype=np.float32)
        out = np.empty_like(got)
        out[order] = got
        return out[0] if scalar else out

    def iter_batches(self, batch_size: int = 1024) -> Iterator[tuple[Any, np.ndarray]]:
        """Yield ``(index_slice, array)`` pairs of up to ``batch_size`` consecutive rows."""
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        idx = self.index
        for a in range(0, self._n, batch_size):
            b = min(self._n, a + batch_size)
            yield idx.iloc[a:b], self.read(slice(a, b))

    def verify(self, batch_size: int = 1024) -> int:
        """Re-hash every tile and compare with its id and row; returns the count checked.

        Raises
        ------
        IndexIntegrityError
            A row's bytes do not hash to its ``tile_id``, or the index and cube disagree.
        """
        idx = self.index
        if len(idx) != self._n or (len(idx) and not np.array_equal(idx["row"].to_numpy(), np.arange(self._n))):
            raise IndexIntegrityError(f"{self.path}: index rows do not cover the cube's {self._n} rows")
        for sl, arr in self.iter_batches(batch_size):
            for tid, a, row in zip(sl["tile_id"], arr, sl["row"]):
                if tile_id(a) != tid:
                    raise IndexIntegrityError(f"{self.path}: row {row} does not hash to its tile_id {tid}")
        return self._n

    def tile_transform(self, row: int) -> Any:
        """Affine transform of the tile at ``row`` (north-up, ``resolution`` pixels)."""
        from affine import Affine

        rec = self.index.iloc[int(row)]
        half = self.tile_size_m / 2.0
        return Affine(self.resolution, 0.0, float(rec["x"]) - half, 0.0, -self.resolution, float(rec["y"]) + half)


def export_tiles(store_dir: str | os.PathLike, out_dir: str | os.PathLike, *, rows: Any = None,
                 show_progress: bool | None = None) -> StageCounts:
    """Write one GeoTIFF per tile, named ``<tile_id>.tif``, for people who want the files.

    Each file is float32 (zero-mean elevations), in the store's CRS, with tags
    ``CENTER_LON``, ``CENTER_LAT``, ``CENTER_X``, ``CENTER_Y``, ``TILE_ID``,
    ``SOURCE`` and ``MEAN_REMOVED``.  Existing files are kept (ids are content hashes).

    Parameters
    ----------
    store_dir : path
        A tile store.
    out_dir : path
        Destination folder (created).
    rows : array_like of int, optional
        Cube rows to export (default: all).
    """
    import rasterio

    store = TileStore(store_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    idx = store.index
    sel = np.arange(len(store)) if rows is None else np.atleast_1d(np.asarray(rows, dtype=np.int64))
    counts = StageCounts(stage="export-tiles", found=int(sel.size))
    s = store.tile_px
    for a in progress(range(0, sel.size, 256), desc="export", unit="batch",
                      disable=None if show_progress is None else not show_progress):
        part = sel[a:a + 256]
        arr = store.read(part)
        for r, tile in zip(part, arr):
            rec = idx.iloc[int(r)]
            target = out / f"{rec['tile_id']}.tif"
            if target.exists():
                counts.skipped += 1
                continue
            prof = dict(driver="GTiff", width=s, height=s, count=1, dtype="float32", crs=store.crs,
                        transform=store.tile_transform(int(r)), compress="deflate", predictor=3)
            with atomic_path(target, suffix=".tif") as tmp:
                with rasterio.open(tmp, "w", **prof) as dst:
                    dst.write(tile, 1)
                    dst.update_tags(CENTER_LON=f"{rec['lon']:.8f}", CENTER_LAT=f"{rec['lat']:.8f}",
                                    CENTER_X=f"{rec['x']:.3f}", CENTER_Y=f"{rec['y']:.3f}",
                                    TILE_ID=rec["tile_id"], SOURCE=str(rec["source"]),
                                    MEAN_REMOVED=f"{rec['mean']:.6f}")
            counts.done += 1
    return counts.report()
