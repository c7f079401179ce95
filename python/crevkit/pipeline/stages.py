"""The pipeline's stages, in order (DESIGN.md, "The pipeline").

Each stage reads what earlier stages wrote in the run directory, writes only
its own part (atomically, through the library functions it calls) and
returns its found / done / skipped / failed counts.  The functions are thin:
the work is in the library modules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from .._progress import StageCounts
from ..errors import ConfigError
from .runner import Context, Stage

__all__ = ["STAGES"]

log = logging.getLogger("crevkit.pipeline")

TILES = "tiles"
LIBRARY = "library"
INDEX = "library/index"
SHOTS = "shots/table"
NOISE = "model/noise_model.npz"
DENOISER = "model/denoiser.pt"
DENOISED = "shots/denoised.npy"
DENOISED_MAX = "shots/denoised_max.npy"  # the "max" blend, beside DENOISED ("floor") when denoise.blend is auto
MATCHES = "results/matches.npz"
# match.library_copies: the index of the library's denoised noisy copies for each candidate blend (by the match stage)
COPIES = "model/library_copies_{mode}"
BLEND = "results/blend_calibration.json"
FEATURES = "features"
SOM = "som"
CLUSTERS = "clusters"
TILE_LABELS = "clusters/tile_labels.parquet"
RESULTS = "results/shots.parquet"
MAPS = "maps/maps.json"
REPORT = "report/index.html"

# denoiser.enabled: false — the best classical row of the denoiser benchmark
# (Gaussian matched filter + noise floor: 0.73 mixed-SNR retrieval vs 0.62 for Savitzky-Golay)
CLASSICAL_DENOISE = {"method": "gaussian", "sigma": 3.5, "noise_floor": 3.0}
_DENOISE_BLOCK = 65536  # shots denoised at a time (a multiple of the transform's batch of 256)
_COPY_BLOCK = 16384  # library rows made into copies at a time (the block is part of the copies' seeds)


# ------------------------------------------------------------------ helpers

def blend_setting(ctx: Context) -> str:
    """``denoise.blend`` as a mode: "auto", "floor", "max" or "none" ("none" too when the denoiser is off)."""
    if not ctx.section("denoiser")["enabled"]:
        return "none"
    value = ctx.section("denoise")["blend"]
    if isinstance(value, bool):
        return "floor" if value else "none"
    return value


def denoised_candidates(ctx: Context) -> dict[str, str]:
    """Blend mode -> denoised file the match stage matches: one file, or "floor" and "max" under auto."""
    mode = blend_setting(ctx)
    if mode == "auto":
        return {"floor": DENOISED, "max": DENOISED_MAX}
    return {mode: DENOISED}


def match_key(mode: str, candidates: dict[str, str]) -> str:
    """Suffix of the ``rows`` / ``distances`` arrays of ``mode`` in MATCHES ("" for the first candidate)."""
    return "" if mode == next(iter(candidates)) else f"_{mode}"


def chosen_blend(ctx: Context) -> tuple[str, str]:
    """(denoised file, MATCHES suffix) of the blend mode the probability stage used."""
    candidates = denoised_candidates(ctx)
    mode = next(iter(candidates))
    if len(candidates) > 1 and ctx.path(BLEND).exists():
        mode = json.loads(ctx.path(BLEND).read_text()).get("mode", mode)
    return candidates.get(mode, DENOISED), match_key(mode, candidates)


def _denoise_modes(model, raw: np.ndarray, modes, batch_size: int = 65536) -> list[np.ndarray]:
    """Denoised ``raw`` (present shots only) for every blend mode: the network once, each mode blends it.

    ``model`` None: the classical filter (one mode).  Blends run ``batch_size``
    rows at a time (bounded temporaries); the local and the Dask stages share this.
    """
    from ..denoise import blend_with_classical, classical_denoise

    if model is None:
        return [classical_denoise(raw, **CLASSICAL_DENOISE)]
    network = model.transform(raw, blend="none")
    outs = []
    for mode in modes:
        if mode == "none":
            outs.append(network)
            continue
        out = np.empty(network.shape, np.float32)
        for s in range(0, len(network), batch_size):
            out[s:s + batch_size] = blend_with_classical(network[s:s + batch_size], raw[s:s + batch_size], mode=mode,
                                                         network_weights=model.blend_weights_)
        outs.append(out)
    return outs


def copy_indexes(ctx: Context, index, candidates: dict[str, str], *, build: bool) -> dict:
    """Blend mode -> what its denoised shots are matched against: ``index``, or with ``match.library_copies``
    an :class:`crevkit.index.IndexWithCopies` of the library and its noisy copies denoised in that mode.

    ``build``: make the copies (streamed, ``_COPY_BLOCK`` library rows at a time, into a temporary
    memory-mapped file) and write their indexes to ``COPIES`` (the match stage, local and Dask alike);
    otherwise load what the match stage wrote (the probability stage's blend calibration).
    """
    from ..index import IndexWithCopies, WaveformIndex

    snrs = list(ctx.section("match")["library_copies"])
    paths = {mode: ctx.path(COPIES.format(mode=mode)) for mode in candidates} if snrs else {}
    if build:  # a previous run's copies that are no longer matched
        import shutil

        for mode in ("floor", "max", "none"):
            if mode not in paths:
                shutil.rmtree(ctx.path(COPIES.format(mode=mode)), ignore_errors=True)
    if not snrs:
        return {mode: index for mode in candidates}
    if not build:
        return {mode: IndexWithCopies(index, WaveformIndex.load(path)) for mode, path in paths.items()}
    from .._progress import progress as progress_bar
    from ..denoise import Denoiser, noisy_library_copies
    from ..noise import NoiseModel

    library = _library(ctx)
    n, n_samples = len(library), int(library.metadata["n_samples"])
    model = Denoiser.load(ctx.path(DENOISER), n_threads=ctx.n_threads) if ctx.section("denoiser")["enabled"] else None
    noise = NoiseModel.load(ctx.path(NOISE))
    lengths = bool(model.config.get("record_lengths", True)) if model is not None else True
    out = {}
    ctx.path(DENOISER).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".library_copies.", dir=ctx.path(DENOISER).parent) as scratch:
        copies = {mode: np.lib.format.open_memmap(Path(scratch) / f"{mode}.npy", mode="w+", dtype=np.float32,
                                                  shape=(len(snrs) * n, n_samples)) for mode in candidates}
        starts = range(0, n, _COPY_BLOCK)
        for b, start in enumerate(progress_bar(starts, desc="library copies", total=len(starts), unit="block")):
            rows = np.asarray(library.waveforms[start:start + _COPY_BLOCK], np.float32)
            raw = noisy_library_copies(rows, noise, snrs, seed=ctx.seed(b), record_lengths=lengths)
            for mode, denoised in zip(candidates, _denoise_modes(model, raw, candidates)):
                for c in range(len(snrs)):  # block layout (copy, row) into the whole library's
                    copies[mode][c * n + start:c * n + start + len(rows)] = denoised[c * len(rows):(c + 1) * len(rows)]
        for mode, path in paths.items():
            copies[mode].flush()
            out[mode] = IndexWithCopies.build(index, copies[mode], n_threads=ctx.n_threads)
            out[mode].copies.save(path)
        del copies
    return out


def _tile_store(ctx: Context):
    from ..tiles import TileStore

    return TileStore(ctx.path(TILES))


class _CommittedTiles:
    """The committed rows of a tile store as a sliceable (n, ny, nx) array-like."""

    def __init__(self, store):
        self._store = store
        arr = store.array
        self.shape = (len(store), int(arr.shape[1]), int(arr.shape[2]))
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._store.read(np.arange(*key.indices(self.shape[0])))
        rows = np.asarray(key, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.shape[0])):
            raise IndexError("tile rows out of range")
        return self._store.read(rows)


def _shot_table(ctx: Context, *, mmap: bool = False):
    from ..shot_table import ShotTable

    return ShotTable.load(ctx.path(SHOTS), mmap=mmap)


def _library(ctx: Context):
    from ..library import open_library

    return open_library(ctx.path(LIBRARY))


# ------------------------------------------------------------------ stages

def tile_stage(ctx: Context) -> StageCounts:
    from ..tiles import tile_frames

    cfg = ctx.section("tile")
    if not ctx.config["dem"]:
        raise ConfigError("config: dem: no DEM files given")
    if ctx.executor is not None:
        from .distributed_stages import tile_distributed

        counts = tile_distributed(ctx, ctx.executor)
    else:
        counts = tile_frames(ctx.config["dem"], ctx.path(TILES), resolution=cfg["resolution"],
                             tile_size_m=cfg["tile_size_m"], crs=cfg["crs"], reproject=cfg["reproject"],
                             batch_size=cfg["batch_size"], seed=ctx.seed())
    if _tile_store(ctx).__len__() == 0:
        raise ConfigError("tile: the DEM frames gave no tile (all nodata, or smaller than one tile)")
    return counts


def simulate_stage(ctx: Context) -> StageCounts:
    from ..library import build_library

    cfg = ctx.section("simulate")
    options = {}
    if cfg["incidence_weighting"]:
        options["incidence_weighting"] = True
    if cfg["off_nadir_angle"]:
        options["off_nadir_angle"] = cfg["off_nadir_angle"]
    if ctx.executor is not None:
        from .distributed_stages import simulate_distributed

        return simulate_distributed(ctx, ctx.executor, options)
    return build_library(ctx.path(TILES), ctx.path(LIBRARY), pixel_size=ctx.section("tile")["resolution"],
                         instrument=ctx.config["instrument"], batch_size=cfg["batch_size"], **options)


def index_stage(ctx: Context) -> StageCounts:
    from ..index import WaveformIndex

    cfg = ctx.section("index")
    library = _library(ctx)
    index = WaveformIndex.build(np.asarray(library.waveforms[:]), tile_ids=library.tile_ids, transform=cfg["transform"], alignment=cfg["alignment"], M=cfg["M"],
                                ef_construction=cfg["ef_construction"], ef_search=cfg["ef"], rerank=cfg["rerank"],
                                seed=ctx.seed(), deterministic=cfg["deterministic"],
                                n_threads=ctx.n_threads, instrument=ctx.config["instrument"])
    index.save(ctx.path(INDEX))
    return StageCounts("index", found=len(library), done=index.count,
                       extra={"unique": index.n_unique})


def shots_stage(ctx: Context) -> StageCounts:
    from ..readers import read_files

    if not ctx.config["shots"]:
        raise ConfigError("config: shots: no waveform files given")
    table, counts, errors = read_files(ctx.config["shots"], geolocation=ctx.config["geolocation"])
    for message in errors:
        log.warning("shots: %s", message)
    if table is None:
        raise ConfigError("shots: no file gave any shot (see the warnings above)")
    table.save(ctx.path(SHOTS))
    return counts


def _recorded_waveforms(table, n_samples: int) -> np.ndarray:
    """Shot waveforms cut or padded to the library's length; short records are
    padded with their own background so the denoiser sees no NaN."""
    return _recorded_rows(table.waveforms, n_samples)


def _recorded_rows(waveforms, n_samples: int, *, fill: bool = True) -> np.ndarray:
    """:func:`_recorded_waveforms` of some rows of a shot table's waveforms (row by row, so any split agrees).

    ``fill=False`` keeps the NaN padding (what the noise model must see: the
    padding is not noise).
    """
    wf = np.asarray(waveforms, dtype=np.float32)
    out = np.empty((wf.shape[0], n_samples), np.float32)
    m = min(n_samples, wf.shape[1])
    out[:, :m] = wf[:, :m]
    if n_samples > m:
        out[:, m:] = np.nan
    if not fill:
        return out
    bad = ~np.isfinite(out)
    fill = np.zeros(out.shape[0], np.float32)
    some = ~bad.all(axis=1)  # missing shots (all NaN) stay NaN rows and are skipped later
    fill[some] = np.nanmedian(np.where(bad[some], np.nan, out[some]), axis=1)
    fill[~some] = np.nan
    if bad.any():
        out[bad] = np.broadcast_to(fill[:, None], out.shape)[bad]
    return out


def noise_model_stage(ctx: Context) -> StageCounts:
    from ..noise import NoiseModel

    table = _shot_table(ctx)
    library = _library(ctx)
    n_samples = int(library.metadata["n_samples"])
    valid = table.valid_waveforms() if hasattr(table, "valid_waveforms") else np.ones(len(table.table), bool)
    # NaN-padded: a short record's padding must give neither noise windows nor a record length of n_samples
    waveforms = _recorded_rows(table.waveforms, n_samples, fill=False)
    valid = np.asarray(valid, bool)
    # the library as reference: shifts are measured against where library
    # returns really start, not against a flat surface's leading edge
    reference = np.asarray(library.waveforms[: min(len(library), 2000)], dtype=np.float32)
    model = NoiseModel.fit(waveforms[valid], n_samples=n_samples, seed=ctx.seed(), reference=reference,
                           max_vectors=ctx.section("noise_model")["max_vectors"])
    model.save(ctx.path(NOISE))
    return StageCounts("noise-model", found=len(valid), done=int(valid.sum()), skipped=int((~valid).sum()))


def train_denoiser_stage(ctx: Context) -> StageCounts:
    from ..denoise import Denoiser
    from ..noise import NoiseModel

    cfg = ctx.section("denoiser")
    target = ctx.path(DENOISER)
    if not cfg["enabled"]:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("disabled\n")
        return StageCounts("train-denoiser", skipped=1)
    library = _library(ctx)
    waveforms = np.asarray(library.waveforms[:], dtype=np.float32)
    model = Denoiser(n_steps=cfg["steps"], batch_size=cfg["batch_size"], neighbour_weight=cfg["neighbour_weight"],
                     seed=ctx.seed(), n_threads=ctx.n_threads)
    model.fit(waveforms, NoiseModel.load(ctx.path(NOISE)), checkpoint=target)
    model.save(target)
    return StageCounts("train-denoiser", found=len(waveforms), done=1)


def denoise_stage(ctx: Context) -> StageCounts:
    from .._atomic import atomic_path
    from ..denoise import Denoiser

    n_samples = int(_library(ctx).metadata["n_samples"])
    if ctx.executor is not None:
        from .distributed_stages import denoise_distributed

        model = ctx.path(DENOISER) if ctx.section("denoiser")["enabled"] else None
        return denoise_distributed(ctx, ctx.executor, n_samples, model)
    table = _shot_table(ctx, mmap=True)
    n = len(table)
    candidates = denoised_candidates(ctx)
    model = Denoiser.load(ctx.path(DENOISER), n_threads=ctx.n_threads) if ctx.section("denoiser")["enabled"] else None
    counts = StageCounts("denoise", found=n)
    with contextlib.ExitStack() as stack:
        # DENOISED (the declared output) entered first, so it is renamed into place last
        order = sorted(candidates.values(), key=lambda p: p != DENOISED)
        tmps = {path: stack.enter_context(atomic_path(ctx.path(path), suffix=".npy")) for path in order}
        outs = {path: np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, n_samples))
                for path, tmp in tmps.items()}
        for s in range(0, n, _DENOISE_BLOCK):  # streamed: a block of shots in memory at a time
            raw = _recorded_rows(table.waveforms[s:s + _DENOISE_BLOCK], n_samples)
            present = np.isfinite(raw).all(axis=1)  # missing shots stay NaN rows
            blocks = {path: np.full(raw.shape, np.nan, np.float32) for path in outs}
            if present.any():
                for path, denoised in zip(candidates.values(), _denoise_modes(model, raw[present], candidates)):
                    blocks[path][present] = denoised
            for path, block in blocks.items():
                outs[path][s:s + len(block)] = block
            ok = np.isfinite(blocks[DENOISED]).all(axis=1)
            counts.done += int(ok.sum())
            counts.skipped += int((~present).sum())
            counts.failed += int((present & ~ok).sum())
        for mm in outs.values():
            mm.flush()
        del outs
    if DENOISED_MAX not in candidates.values():
        ctx.path(DENOISED_MAX).unlink(missing_ok=True)  # a previous auto run's: no longer matched
    return counts


def match_stage(ctx: Context) -> StageCounts:
    from .._atomic import atomic_path
    from ..index import WaveformIndex, match_shots

    cfg = ctx.section("match")
    if ctx.executor is not None:
        from .distributed_stages import match_distributed

        return match_distributed(ctx, ctx.executor)
    candidates = denoised_candidates(ctx)
    indexes = copy_indexes(ctx, WaveformIndex.load(ctx.path(INDEX), library=ctx.path(LIBRARY)), candidates,
                           build=True)
    arrays: dict[str, np.ndarray] = {}
    for mode, path in candidates.items():  # every candidate blend; the probability stage picks one
        waveforms = np.load(ctx.path(path))
        ok = np.isfinite(waveforms).all(axis=1) & (np.nansum(waveforms, axis=1) > 0)
        rows = np.full((len(waveforms), cfg["k"]), -1, np.int64)
        dist = np.full((len(waveforms), cfg["k"]), np.nan, np.float32)
        if ok.any():
            r, d = match_shots(indexes[mode], waveforms[ok], k=cfg["k"], batch_size=cfg["batch_size"],
                               n_threads=ctx.n_threads)
            rows[ok], dist[ok] = r, d
        key = match_key(mode, candidates)
        arrays[f"rows{key}"], arrays[f"distances{key}"] = rows, dist
    with atomic_path(ctx.path(MATCHES), suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    done = int((arrays["rows"][:, 0] >= 0).sum())
    return StageCounts("match", found=len(waveforms), done=done, skipped=len(waveforms) - done)


def features_stage(ctx: Context) -> StageCounts:
    from ..features import write_features

    cfg = ctx.section("features")
    if ctx.executor is not None:
        from .distributed_stages import features_distributed

        return features_distributed(ctx, ctx.executor)
    keep, tolerance = (None, cfg["tolerance"]) if cfg["tolerance"] is not None else (cfg["keep"], None)
    return write_features(_CommittedTiles(_tile_store(ctx)), ctx.path(FEATURES), pixel_size=ctx.section("tile")["resolution"],
                          keep=keep, tolerance=tolerance, metric="rms", batch_size=cfg["batch_size"],
                          index=ctx.path(TILES) / "index.parquet", seed=ctx.seed(), n_threads=ctx.n_threads)


def _features(ctx: Context):
    import zarr

    return zarr.open_array(str(ctx.path(FEATURES) / "features.zarr"), mode="r")


def som_stage(ctx: Context) -> StageCounts:
    from ..som import SelfOrganizingMap

    cfg = ctx.section("som")
    features = _features(ctx)
    som = SelfOrganizingMap(cfg["rows"], cfg["cols"], topology=cfg["topology"], epochs=cfg["epochs"],
                            seed=ctx.seed(), n_threads=ctx.n_threads)
    som.fit(features)
    bmu, dist = som.transform(features)
    out = ctx.path(SOM)
    out.mkdir(parents=True, exist_ok=True)
    som.save(out / "som.npz")
    from .._atomic import atomic_path

    with atomic_path(out / "bmu.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, bmu=np.asarray(bmu), distance=np.asarray(dist))
    return StageCounts("som", found=int(features.shape[0]), done=int(features.shape[0]),
                       extra={"quantization_error": round(float(np.mean(dist)), 4)})


def cluster_stage(ctx: Context) -> StageCounts:
    from ..cluster import cluster_som
    from ..som import SelfOrganizingMap

    cfg = ctx.section("clustering")
    som = SelfOrganizingMap.load(ctx.path(SOM) / "som.npz")
    bmu = np.load(ctx.path(SOM) / "bmu.npz")["bmu"]
    result = cluster_som(som.codebook_, bmu, min_samples=cfg["min_samples"], xi=cfg["xi"], use=cfg["use"],
                         seed=ctx.seed())
    result.save(ctx.path(CLUSTERS))
    n_clusters = int(len(set(result.node_cluster.tolist()) - {-1}))
    return StageCounts("cluster", found=len(bmu), done=len(bmu), extra={"clusters": n_clusters})


def label_stage(ctx: Context) -> StageCounts:
    import pandas as pd

    from .._atomic import atomic_path
    from ..cluster import ClusterResult
    from ..labels import read_labels, suggest_labels, write_label_kit

    cfg = ctx.section("label")
    store = _tile_store(ctx)
    clusters = ClusterResult.load(ctx.path(CLUSTERS))
    tile_ids = np.asarray(store.index["tile_id"])
    kit = ctx.path(CLUSTERS) / "label_kit"
    write_label_kit(kit, store.read, tile_ids, clusters.tile_cluster, per_cluster=cfg["per_cluster"],
                    suggestion=suggest_labels if cfg["suggest"] else None, seed=ctx.seed())
    if not ctx.config["labels"]:
        raise ConfigError(f"label: no labels yet — fill {kit / 'clusters_template.csv'} (or tiles_template.csv), "
                          "set labels: in the config, and run again")
    labels = read_labels(ctx.config["labels"], tile_ids, clusters.tile_cluster)
    with atomic_path(ctx.path(TILE_LABELS), suffix=".parquet") as tmp:
        pd.DataFrame({"tile_id": tile_ids, "label": labels}).to_parquet(tmp, index=False)
    known = labels != "unknown"
    return StageCounts("label", found=len(labels), done=int(known.sum()), skipped=int((~known).sum()))


def _calibrate_blend(ctx: Context, labels: np.ndarray) -> str:
    """Choose the blend mode (``denoise.blend: auto``) on the labelled tiles, write BLEND, return its MATCHES suffix."""
    from .._atomic import atomic_write_text

    candidates = denoised_candidates(ctx)
    record: dict = {"setting": str(ctx.section("denoise")["blend"]), "mode": next(iter(candidates)),
                    "candidates": list(candidates)}
    if len(candidates) > 1:
        from ..blend_calibration import calibrate_blend
        from ..denoise import Denoiser
        from ..index import WaveformIndex
        from ..noise import NoiseModel

        library = _library(ctx)
        indexes = copy_indexes(ctx, WaveformIndex.load(ctx.path(INDEX), library=ctx.path(LIBRARY)), candidates,
                               build=False)  # what each mode's shots were matched against
        result = calibrate_blend(Denoiser.load(ctx.path(DENOISER), n_threads=ctx.n_threads),
                                 np.asarray(library.waveforms[:], np.float32), labels, NoiseModel.load(ctx.path(NOISE)),
                                 indexes,
                                 modes=list(candidates), k=ctx.section("match")["k"],
                                 weighting=ctx.section("probability")["weighting"], seed=ctx.seed(),
                                 n_threads=ctx.n_threads)
        record.update(result.to_dict())
        log.info("blend: %s (AUC on the labelled tiles: %s)", result.mode,
                 ", ".join(f"{m} {v:.3f}" for m, v in result.auc.items()) or result.reason)
    atomic_write_text(ctx.path(BLEND), json.dumps(record, indent=2) + "\n")
    return match_key(record["mode"], candidates)


def probability_stage(ctx: Context) -> StageCounts:
    import pandas as pd

    from .._atomic import atomic_path
    from ..probability import apply_snr, shot_probabilities, shot_snr

    cfg = ctx.section("probability")
    shots = _shot_table(ctx, mmap=True)  # waveforms read in blocks for the SNR only
    table = shots.table
    labels = pd.read_parquet(ctx.path(TILE_LABELS))["label"].to_numpy()
    key = _calibrate_blend(ctx, labels)
    if ctx.executor is not None:
        from .distributed_stages import probability_distributed

        probs = probability_distributed(ctx, ctx.executor, key)
    else:
        matches = np.load(ctx.path(MATCHES))
        probs = shot_probabilities(matches[f"rows{key}"], matches[f"distances{key}"], labels,
                                   weighting=cfg["weighting"])
    if cfg["snr_half"] > 0:  # weak shots toward the (local) prior (same on both paths: applied here)
        from ..maps import period_labels

        snr = shot_snr(shots.waveforms, table["bg_mean"].to_numpy(), table["bg_sd"].to_numpy())
        radius = cfg["neighbour_radius"]
        periods = period_labels(table["time"], ctx.section("map")["period"]) if radius > 0 else None
        probs = apply_snr(probs, snr, labels, snr_half=cfg["snr_half"], x=table["x"].to_numpy(),
                          y=table["y"].to_numpy(), groups=periods, neighbour_radius=radius,
                          prior_weight=cfg["prior_weight"], neighbour_kernel=cfg["neighbour_kernel"])
    out = pd.DataFrame({
        "shot_id": table["shot_id"].astype("int64").to_numpy(),
        "time": table["time"].to_numpy(),
        "lon": table["lon"].to_numpy(), "lat": table["lat"].to_numpy(),
        "x": table["x"].to_numpy(), "y": table["y"].to_numpy(),
    })
    for column in probs.columns:
        out[column] = probs[column].to_numpy()
    with atomic_path(ctx.path(RESULTS), suffix=".parquet") as tmp:
        out.to_parquet(tmp, index=False)
    ok = np.isfinite(out["p_crevasse"].to_numpy())
    return StageCounts("probability", found=len(out), done=int(ok.sum()), skipped=int((~ok).sum()))


def map_stage(ctx: Context) -> StageCounts:
    import pandas as pd

    from .._atomic import atomic_write_text
    from ..maps import change_rasters, rasterize

    cfg = ctx.section("map")
    shots = pd.read_parquet(ctx.path(RESULTS))
    shots = shots[np.isfinite(shots["p_crevasse"])]
    out_dir = ctx.path("maps")
    periods = rasterize(shots, out_dir, cell_size=cfg["cell_size"], period=cfg["period"], min_shots=cfg["min_shots"])
    changes = change_rasters(periods, out_dir, min_shots=cfg["min_shots"]) if len(periods) > 1 else []
    atomic_write_text(ctx.path(MAPS), json.dumps({"periods": [str(p) for p in periods],
                                                  "changes": [str(p) for p in changes]}, indent=2))
    return StageCounts("map", found=len(periods) + len(changes), done=len(periods) + len(changes))


def report_stage(ctx: Context) -> StageCounts:
    from .report_stage import build_run_report

    path, n_figures = build_run_report(ctx)
    return StageCounts("report", found=n_figures, done=n_figures, extra={"report": str(path)})


STAGES: list[Stage] = [
    Stage("tile", tile_stage, sections=("tile",), inputs=("dem",), outputs=(f"{TILES}/index.parquet",)),
    Stage("simulate", simulate_stage, sections=("simulate", "tile"), outputs=(f"{LIBRARY}/library.json",)),
    Stage("index", index_stage, sections=("index",), outputs=(INDEX,)),
    Stage("shots", shots_stage, sections=(), inputs=("shots", "geolocation"), outputs=(SHOTS,)),
    Stage("noise-model", noise_model_stage, sections=("noise_model",), outputs=(NOISE,)),
    Stage("train-denoiser", train_denoiser_stage, sections=("denoiser",), outputs=(DENOISER,)),
    Stage("denoise", denoise_stage, sections=("denoiser", "denoise"), outputs=(DENOISED,)),
    Stage("match", match_stage, sections=("match",), outputs=(MATCHES,)),
    Stage("features", features_stage, sections=("features", "tile"), outputs=(f"{FEATURES}/features.parquet",)),
    Stage("som", som_stage, sections=("som",), outputs=(f"{SOM}/som.npz", f"{SOM}/bmu.npz")),
    Stage("cluster", cluster_stage, sections=("clustering",), outputs=(f"{CLUSTERS}/clusters.json",)),
    Stage("label", label_stage, sections=("label",), inputs=("labels",), outputs=(TILE_LABELS,)),
    Stage("probability", probability_stage, sections=("probability", "map"),  # map: period
          outputs=(BLEND, RESULTS)),
    Stage("map", map_stage, sections=("map",), outputs=(MAPS,)),
    Stage("report", report_stage, sections=("report", "truth"), outputs=(REPORT,)),
]
