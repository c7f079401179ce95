"""The batch stages as Dask tasks (see :mod:`crevkit.pipeline.distributed`).

Every task is a top-level function of plain arguments (paths, row ranges,
settings) that writes one part file atomically and returns a few counts.  A
task whose part already exists returns at once, so a retried or resumed
stage does not redo finished work.  The client assembles the parts with the
same library functions the local stages call, streaming one part at a time.

Task sizes and memory (peak per task, 200 x 200 float32 tiles, 544 samples):

- tile: one DEM frame; bounded by ``memory_budget_mb`` (256 MB) plus one
  commit batch of tiles (``tile.batch_size`` x 160 kB).
- simulate: ``cluster.tiles_per_task`` tiles, read at once: 2,048 tiles =
  330 MB of tiles + 4.5 MB of waveforms.
- features: the same rows, read ``features.batch_size`` at a time: 512 tiles
  = 80 MB in, plus the task's features (2,048 x keep x 4 B = 40 MB).
- denoise / match: ``cluster.shots_per_task`` shots: 8,192 x 544 x 4 B =
  18 MB in and out; the worker also holds the denoiser (0.4 MB) or the
  index (its graph and library, loaded once per worker process and kept).
- probability: the same shots' match rows, memory-mapped from
  ``matches.npz`` (8,192 x 30 x 12 B = 3 MB), and the tile labels.

The client holds one part at a time while assembling, never the tile cube or
all shot waveforms.  No batch task draws random numbers; a task that needs
some derives its seed from ``[seed, stage, batch_id]`` (:meth:`Context.seed`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import StageCounts

__all__ = ["tile_distributed", "simulate_distributed", "features_distributed", "denoise_distributed",
           "match_distributed", "probability_distributed"]

log = logging.getLogger("crevkit.pipeline")

# per worker process: the index and the denoiser, loaded once (keyed by path and mtime)
_WORKER_CACHE: dict[tuple, Any] = {}


def _cached(kind: str, path: str, loader):
    key = (kind, path, os.stat(path).st_mtime_ns)
    if key not in _WORKER_CACHE:
        for old in [k for k in _WORKER_CACHE if k[:2] == key[:2]]:
            del _WORKER_CACHE[old]
        _WORKER_CACHE[key] = loader()
    return _WORKER_CACHE[key]


def _ranges(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def _save_npy(path: str, array: np.ndarray) -> None:
    from .._atomic import atomic_path

    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a name
            np.save(fh, array)


def _part_paths(parts: Path, n: int, suffix: str) -> list[str]:
    return [str(parts / f"part-{i:06d}{suffix}") for i in range(n)]


# ------------------------------------------------------------------ tile

def tile_frame_task(frame: str, part: str, resolution: float, tile_size_m: float, crs: Any, reproject: bool,
                    batch_size: int, n: int = 1) -> dict:
    """Tile one DEM frame into its own small store ``part`` (resumable like any store)."""
    from ..tiles import tile_frames

    counts = tile_frames([frame], part, resolution=resolution, tile_size_m=tile_size_m, crs=crs,
                         reproject=reproject, batch_size=batch_size, n_workers=1, show_progress=False)
    return {"found": counts.found, "failed": counts.failed, "skipped_nodata": counts.extra.get("skipped_nodata", 0),
            "errors": dict(counts.errors)}


def tile_distributed(ctx, executor) -> StageCounts:
    from ..dem import file_key
    from ..tiles import TileCounts, find_frames, merge_tile_stores
    from .distributed import part_dir, remove_parts

    cfg = ctx.section("tile")
    store = ctx.path("tiles")
    done = set()
    if (store / "store.json").exists():
        import json

        done = set(json.loads((store / "store.json").read_text()).get("frames_done", {}))
    frames = [str(p) for p in find_frames(ctx.config["dem"])]
    todo = [f for f in frames if file_key(Path(f)) not in done]
    parts = part_dir(ctx.run.path, ctx.stage, ctx.keys[ctx.stage])
    tasks = [dict(frame=f, part=str(parts / f"frame-{i:06d}"), resolution=cfg["resolution"],
                  tile_size_m=cfg["tile_size_m"], crs=cfg["crs"], reproject=cfg["reproject"],
                  batch_size=cfg["batch_size"], n=1) for i, f in enumerate(todo)]
    results = executor.map(tile_frame_task, tasks, desc="tile")
    merged = merge_tile_stores([t["part"] for t, r in zip(tasks, results) if (Path(t["part"]) / "store.json").exists()],
                               store, batch_size=cfg["batch_size"])
    counts = TileCounts(stage="tile", found=sum(r["found"] for r in results), done=merged.done,
                        skipped=merged.skipped + sum(r["skipped_nodata"] for r in results),
                        failed=sum(r["failed"] for r in results))
    for r in results:
        counts.errors.update(r["errors"])
    counts.extra = {"frames": len(frames), "frames_already_done": len(frames) - len(todo), "tasks": len(tasks)}
    remove_parts(parts)
    return counts.report()


# ------------------------------------------------------------------ simulate

def simulate_task(store: str, start: int, stop: int, part: str, pixel_size: float, instrument: str,
                  options: dict, n_threads: int, n: int = 0) -> dict:
    """Waveforms of tile rows ``[start, stop)`` into ``part`` (.npy)."""
    if not os.path.exists(part):
        from ..simulate import simulate_waveforms
        from ..tiles import TileStore

        tiles = TileStore(store).read(slice(start, stop))
        _save_npy(part, simulate_waveforms(tiles, pixel_size, instrument, n_threads=n_threads, **options))
    return {"done": stop - start}


def simulate_distributed(ctx, executor, options: dict) -> StageCounts:
    from ..library import build_library
    from ..tiles import TileStore
    from .distributed import part_dir, remove_parts

    cfg = ctx.section("simulate")
    store = TileStore(ctx.path("tiles"))
    ranges = _ranges(len(store), ctx.section("cluster")["tiles_per_task"])
    parts = part_dir(ctx.run.path, ctx.stage, ctx.keys[ctx.stage])
    paths = _part_paths(parts, len(ranges), ".npy")
    tasks = [dict(store=str(store.path), start=a, stop=b, part=p, pixel_size=ctx.section("tile")["resolution"],
                  instrument=ctx.config["instrument"], options=options, n_threads=executor.task_threads, n=b - a)
             for (a, b), p in zip(ranges, paths)]
    executor.map(simulate_task, tasks, desc="simulate")
    counts = build_library(store, ctx.path("library"), pixel_size=ctx.section("tile")["resolution"],
                           instrument=ctx.config["instrument"], batch_size=cfg["batch_size"],
                           waveform_parts=paths, **options)
    remove_parts(parts)
    return counts


# ------------------------------------------------------------------ features

def features_task(store: str, start: int, stop: int, part: str, k: int, pixel_size: float, batch_size: int,
                  n_threads: int, n: int = 0) -> dict:
    """DCT features of tile rows ``[start, stop)`` into ``part`` (.npz)."""
    if os.path.exists(part):
        return {"done": -1}
    from ..features import write_feature_part
    from ..tiles import TileStore
    from .stages import _CommittedTiles

    tiles = _CommittedTiles(TileStore(store))
    return write_feature_part(tiles, start, stop, part, k=k, pixel_size=pixel_size, batch_size=batch_size,
                              n_threads=n_threads)


def features_distributed(ctx, executor) -> StageCounts:
    from ..features import feature_keep, write_features
    from ..tiles import TileStore
    from .distributed import part_dir, remove_parts
    from .stages import _CommittedTiles

    cfg = ctx.section("features")
    store = TileStore(ctx.path("tiles"))
    tiles = _CommittedTiles(store)
    pixel_size = ctx.section("tile")["resolution"]
    keep, tolerance = (None, cfg["tolerance"]) if cfg["tolerance"] is not None else (cfg["keep"], None)
    k = feature_keep(tiles, keep=keep, tolerance=tolerance, metric="rms", seed=ctx.seed(), pixel_size=pixel_size,
                     n_threads=ctx.n_threads)
    ranges = _ranges(len(store), ctx.section("cluster")["tiles_per_task"])
    parts = part_dir(ctx.run.path, ctx.stage, ctx.keys[ctx.stage])
    paths = _part_paths(parts, len(ranges), ".npz")
    tasks = [dict(store=str(store.path), start=a, stop=b, part=p, k=k, pixel_size=pixel_size,
                  batch_size=cfg["batch_size"], n_threads=executor.task_threads, n=b - a)
             for (a, b), p in zip(ranges, paths)]
    executor.map(features_task, tasks, desc="features")
    counts = write_features(tiles, ctx.path("features"), pixel_size=pixel_size, keep=keep, tolerance=tolerance,
                            metric="rms", batch_size=cfg["batch_size"], index=ctx.path("tiles") / "index.parquet",
                            seed=ctx.seed(), n_threads=ctx.n_threads, feature_parts=paths)
    remove_parts(parts)
    return counts


# ------------------------------------------------------------------ denoise

def denoise_task(shots: str, start: int, stop: int, part: str, n_samples: int, denoiser: str | None,
                 n_threads: int, n: int = 0, modes: tuple[str, ...] = ("floor",)) -> dict:
    """Denoised waveforms of shots ``[start, stop)``, one part per blend mode (``part`` for the first,
    ``<part stem>_<mode>.npy`` for the others); missing shots stay NaN.

    Returns the range's done / skipped (missing) / failed counts, also when the parts already exist.
    """
    from ..denoise import Denoiser
    from ..shot_table import ShotTable
    from .stages import _denoise_modes, _recorded_rows

    table = ShotTable.load(shots, mmap=True)
    raw = _recorded_rows(table.waveforms[start:stop], n_samples)
    present = np.isfinite(raw).all(axis=1)
    paths = [part] + [_mode_part(part, m) for m in modes[1:]]
    if all(os.path.exists(p) for p in paths):
        clean = np.load(part)
    else:
        outs = [np.full(raw.shape, np.nan, np.float32) for _ in modes]
        if present.any():
            model = (None if denoiser is None
                     else _cached("denoiser", denoiser, lambda: Denoiser.load(denoiser, n_threads=n_threads)))
            for out, denoised in zip(outs, _denoise_modes(model, raw[present], modes)):
                out[present] = denoised
        for path, out in reversed(list(zip(paths, outs))):  # ``part`` last: it marks the task done
            _save_npy(path, out)
        clean = outs[0]
    ok = np.isfinite(clean).all(axis=1)
    return {"done": int(ok.sum()), "skipped": int((~present).sum()), "failed": int((present & ~ok).sum())}


def _mode_part(part: str, mode: str) -> str:
    root, ext = os.path.splitext(part)
    return f"{root}_{mode}{ext}"


def _assemble_npy(paths: list[str], output: Path, shape: tuple[int, int], dtype=np.float32) -> None:
    """Concatenate row parts into one ``.npy``, one part in memory at a time, atomically."""
    from .._atomic import atomic_path

    with atomic_path(output, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        pos = 0
        for path in paths:
            block = np.load(path)
            out[pos:pos + len(block)] = block
            pos += len(block)
        out.flush()
        del out
    if pos != shape[0]:
        raise RuntimeError(f"parts cover {pos} rows of {shape[0]}")  # an internal invariant, not user input


def denoise_distributed(ctx, executor, n_samples: int, denoiser: Path | None) -> StageCounts:
    from ..shot_table import ShotTable
    from .distributed import part_dir, remove_parts
    from .stages import denoised_candidates

    shots = ctx.path("shots/table")
    n = len(ShotTable.load(shots, mmap=True))
    ranges = _ranges(n, ctx.section("cluster")["shots_per_task"])
    parts = part_dir(ctx.run.path, ctx.stage, ctx.keys[ctx.stage])
    paths = _part_paths(parts, len(ranges), ".npy")
    candidates = denoised_candidates(ctx)
    modes = tuple(candidates)
    tasks = [dict(shots=str(shots), start=a, stop=b, part=p, n_samples=n_samples,
                  denoiser=str(denoiser) if denoiser is not None else None, n_threads=executor.task_threads, n=b - a,
                  modes=modes)
             for (a, b), p in zip(ranges, paths)]
    results = executor.map(denoise_task, tasks, desc="denoise")
    # the declared output (DENOISED, the first mode) last: when it exists, the whole stage is written
    for i, mode in reversed(list(enumerate(modes))):
        mode_paths = paths if i == 0 else [_mode_part(p, mode) for p in paths]
        _assemble_npy(mode_paths, ctx.path(candidates[mode]), (n, n_samples))
    if len(candidates) == 1:
        from .stages import DENOISED_MAX

        ctx.path(DENOISED_MAX).unlink(missing_ok=True)
    remove_parts(parts)
    return StageCounts("denoise", found=n, **{key: sum(r[key] for r in results) for key in ("done", "skipped", "failed")})


# ------------------------------------------------------------------ match

def match_task(index: str, library: str, denoised: str, start: int, stop: int, part: str, k: int,
               n_threads: int, n: int = 0, copies: str | None = None) -> dict:
    """The k library matches of shots ``[start, stop)`` into ``part`` (.npz); the index loads once per worker.

    ``copies``: the index of the library's denoised copies to match beside it (``match.library_copies``).
    """
    if os.path.exists(part):
        return {"done": -1}
    from .._atomic import atomic_path
    from ..index import IndexWithCopies, WaveformIndex

    waveforms = np.asarray(np.load(denoised, mmap_mode="r")[start:stop])
    ok = np.isfinite(waveforms).all(axis=1) & (np.nansum(waveforms, axis=1) > 0)
    rows = np.full((len(waveforms), k), -1, np.int64)
    dist = np.full((len(waveforms), k), np.nan, np.float32)
    if ok.any():
        idx = _cached("index", index, lambda: WaveformIndex.load(index, library=library))
        if copies is not None:
            idx = IndexWithCopies(idx, _cached("copies", copies, lambda: WaveformIndex.load(copies)))
        rows[ok], dist[ok] = idx.query(waveforms[ok], k=k, n_threads=n_threads)
    with atomic_path(part, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, rows=rows, distances=dist)
    return {"done": int(ok.sum())}


def match_distributed(ctx, executor) -> StageCounts:
    from .._atomic import atomic_path
    from .distributed import part_dir, remove_parts
    from ..index import WaveformIndex
    from .stages import COPIES, INDEX, LIBRARY, copy_indexes, denoised_candidates, match_key

    cfg = ctx.section("match")
    candidates = denoised_candidates(ctx)
    # the copies are made and indexed here, once, like the library's index in its own stage; the tasks load them
    copy_indexes(ctx, WaveformIndex.load(ctx.path(INDEX), library=ctx.path(LIBRARY)), candidates, build=True)
    n = int(np.load(ctx.path(next(iter(candidates.values()))), mmap_mode="r").shape[0])
    ranges = _ranges(n, ctx.section("cluster")["shots_per_task"])
    parts = part_dir(ctx.run.path, ctx.stage, ctx.keys[ctx.stage])
    arrays: dict[str, np.ndarray] = {}
    for mode, path in candidates.items():  # every candidate blend; the probability stage picks one
        key = match_key(mode, candidates)
        denoised = ctx.path(path)
        paths = [_mode_part(p, mode) if key else p for p in _part_paths(parts, len(ranges), ".npz")]
        copies = str(ctx.path(COPIES.format(mode=mode))) if cfg["library_copies"] else None
        tasks = [dict(index=str(ctx.path(INDEX)), library=str(ctx.path(LIBRARY)), copies=copies,
                      denoised=str(denoised), start=a, stop=b, part=p, k=cfg["k"], n_threads=executor.task_threads,
                      n=b - a)
                 for (a, b), p in zip(ranges, paths)]
        executor.map(match_task, tasks, desc="match" + (f" ({mode})" if key else ""))
        rows = np.empty((n, cfg["k"]), np.int64)
        dist = np.empty((n, cfg["k"]), np.float32)
        for (a, b), p in zip(ranges, paths):
            with np.load(p) as z:
                rows[a:b], dist[a:b] = z["rows"], z["distances"]
        arrays[f"rows{key}"], arrays[f"distances{key}"] = rows, dist
    with atomic_path(ctx.path("results/matches.npz"), suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    remove_parts(parts)
    done = int((arrays["rows"][:, 0] >= 0).sum())
    return StageCounts("match", found=n, done=done, skipped=n - done)


# ------------------------------------------------------------------ probability

def probability_task(matches: str, labels: str, start: int, stop: int, part: str, weighting: str,
                     n: int = 0, key: str = "") -> dict:
    """Probability columns of shots ``[start, stop)`` into ``part`` (.npz); match rows are memory-mapped."""
    if not os.path.exists(part):
        import pandas as pd

        from .._atomic import atomic_path
        from .._stack_io import npz_member
        from ..probability import shot_probabilities

        rows = np.asarray(npz_member(matches, f"rows{key}")[start:stop])
        dist = np.asarray(npz_member(matches, f"distances{key}")[start:stop])
        tile_labels = pd.read_parquet(labels, columns=["label"])["label"].to_numpy()
        probs = shot_probabilities(rows, dist, tile_labels, weighting=weighting)
        with atomic_path(part, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{c: probs[c].to_numpy() for c in probs.columns})
    return {"done": stop - start}


def probability_distributed(ctx, executor, key: str = ""):
    """The :func:`crevkit.probability.shot_probabilities` table of every shot, computed in tasks.

    ``key``: suffix of the chosen blend's arrays in the matches (``rows<key>``).
    """
    import pandas as pd

    from .._stack_io import npz_member
    from .distributed import part_dir, remove_parts

    matches = ctx.path("results/matches.npz")
    n = int(npz_member(matches, "rows").shape[0])
    ranges = _ranges(n, ctx.section("cluster")["shots_per_task"])
    parts = part_dir(ctx.run.path, ctx.stage, ctx.keys[ctx.stage])
    paths = _part_paths(parts, len(ranges), ".npz")
    tasks = [dict(matches=str(matches), labels=str(ctx.path("clusters/tile_labels.parquet")), start=a, stop=b,
                  part=p, weighting=ctx.section("probability")["weighting"], n=b - a, key=key)
             for (a, b), p in zip(ranges, paths)]
    executor.map(probability_task, tasks, desc="probability")
    columns: dict[str, list] = {}
    for path in paths:
        with np.load(path) as z:
            for name in z.files:
                columns.setdefault(name, []).append(z[name])
    remove_parts(parts)
    return pd.DataFrame({name: np.concatenate(values) for name, values in columns.items()})
