"""Crevasse-probability rasters per period and change rasters between periods.

Rasters are Cloud-Optimized GeoTIFFs (GDAL's COG driver: tiled 256×256,
DEFLATE, overviews averaged while the raster is larger than a block),
float32, in EPSG:3413 by default, with NaN as nodata:

``crevasse_probability_<period>.tif``
    band 1 ``p_crevasse_mean``: mean ``p_crevasse`` of the shots in the cell,
    NaN where fewer than ``min_shots`` shots; band 2 ``shot_count``: number of
    shots with a finite ``p_crevasse`` in the cell (0 where none, never NaN).
``change_<p1>_<p2>.tif``
    band 1 ``p_crevasse_change``: ``mean(p2) − mean(p1)``, NaN where either
    period has fewer than ``min_shots`` shots in the cell.

Every period of one call shares one grid (the bounds of all shots, snapped
outward to multiples of ``cell_size``), so any two rasters of a run can be
differenced.  Periods are named ``<year>`` (``period="year"``),
``<year>-<season>`` with meteorological seasons DJF, MAM, JJA, SON, December
counting towards the next year's DJF (``period="season"``), or ``all``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ._atomic import atomic_path
from ._progress import StageCounts
from ._validation import check_int, check_positive
from .errors import CrevkitTypeError, CrevkitValueError, InputFileError

__all__ = ["PERIODS", "period_labels", "rasterize", "change_rasters", "read_raster", "quicklook"]

PERIODS = ("year", "season", "all")
PREFIX = "crevasse_probability"


def period_labels(time: Any, period: str = "year") -> np.ndarray:
    """The period name of each time (see the module docstring).

    Parameters
    ----------
    time : array_like of datetime64 or pandas datetimes
        Naive times are taken as UTC.
    period : {"year", "season", "all"}
    """
    import pandas as pd

    if period not in PERIODS:
        raise CrevkitValueError(f"period must be one of {PERIODS}, got {period!r}")
    raw = time if hasattr(time, "dtype") else np.asarray(time)
    if isinstance(raw.dtype, np.dtype) and (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
        raise CrevkitTypeError(f"time must hold datetimes (datetime64, UTC), got numbers of dtype {raw.dtype}")
    try:
        t = pd.DatetimeIndex(pd.to_datetime(np.asarray(time) if not hasattr(time, "dt") else time, utc=True))
    except (TypeError, ValueError) as exc:
        raise CrevkitValueError(f"time must hold datetimes: {exc}") from None
    if t.isna().any():
        raise CrevkitValueError(f"time has {int(t.isna().sum())} missing values")
    if period == "all":
        return np.full(len(t), "all", dtype=object)
    years = t.year.to_numpy().astype(np.int64)
    if period == "year":
        return years.astype(str).astype(object)
    months = t.month.to_numpy().astype(np.int64)
    years = years + (months == 12)
    season = np.array(["", "DJF", "DJF", "MAM", "MAM", "MAM", "JJA", "JJA", "JJA", "SON", "SON", "SON", "DJF"])
    return np.char.add(np.char.add(years.astype(str), "-"), season[months]).astype(object)


def _grid(x: np.ndarray, y: np.ndarray, cell: float, bounds: Sequence[float] | None):
    from affine import Affine

    if bounds is None:
        xmin = math.floor(float(x.min()) / cell) * cell
        ymin = math.floor(float(y.min()) / cell) * cell
        xmax = (math.floor(float(x.max()) / cell) + 1) * cell
        ymax = (math.floor(float(y.max()) / cell) + 1) * cell
    else:
        if len(bounds) != 4:
            raise CrevkitValueError(f"bounds must be (xmin, ymin, xmax, ymax), got {bounds!r}")
        xmin, ymin, xmax, ymax = (float(b) for b in bounds)
        if not (xmax > xmin and ymax > ymin):
            raise CrevkitValueError(f"bounds must have xmax > xmin and ymax > ymin, got {bounds!r}")
    width = max(1, int(math.ceil((xmax - xmin) / cell - 1e-9)))
    height = max(1, int(math.ceil((ymax - ymin) / cell - 1e-9)))
    if width * height > 400_000_000:
        raise CrevkitValueError(f"a {width}x{height} grid at {cell} m is too large; use a larger cell_size or bounds")
    return Affine(cell, 0.0, xmin, 0.0, -cell, ymax), width, height


def _write_cog(path: Path, bands: Sequence[np.ndarray], *, transform: Any, crs: str, descriptions: Sequence[str],
               tags: Mapping[str, Any]) -> Path:
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    height, width = bands[0].shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": len(bands), "dtype": "float32",
               "crs": crs, "transform": transform, "nodata": float("nan")}
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            for i, (b, desc) in enumerate(zip(bands, descriptions), start=1):
                ds.write(b.astype(np.float32), i)
                ds.set_band_description(i, desc)
            ds.update_tags(**{k: str(v) for k, v in tags.items()})
        with mem.open() as src:
            with atomic_path(path, suffix=".tif") as tmp:
                rasterio.shutil.copy(src, str(tmp), driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                                     BLOCKSIZE="256", OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE",
                                     RESAMPLING="AVERAGE")
    return path


def rasterize(shots: Any, out_dir: str | os.PathLike, *, cell_size: float = 1000.0, period: str = "year",
              bounds: Sequence[float] | None = None, min_shots: int = 3, crs: str = "EPSG:3413",
              quicklooks: bool = True) -> list[Path]:
    """Write one probability COG per period (and a PNG quicklook beside each).

    Parameters
    ----------
    shots : pandas.DataFrame
        Columns ``x``, ``y`` (metres in ``crs``), ``time`` (datetime64, UTC;
        naive = UTC) and ``p_crevasse`` (shots with NaN ``p_crevasse`` are
        left out).
    out_dir : path
        Folder for ``crevasse_probability_<period>.tif`` / ``.png``.
    cell_size : float, default 1000.0
        Cell edge (m).
    period : {"year", "season", "all"}, default "year"
    bounds : (xmin, ymin, xmax, ymax), optional
        Grid bounds (default: all shots, snapped outward to ``cell_size``);
        shots outside are left out.
    min_shots : int, default 3
        Cells with fewer shots get NaN in band 1 (band 2 keeps the count).
    crs : str, default "EPSG:3413"
        CRS of ``x``/``y`` and of the rasters.
    quicklooks : bool, default True
        Also write ``<name>.png``.

    Returns
    -------
    list of pathlib.Path
        The GeoTIFFs, in period order.
    """
    import pandas as pd

    if not isinstance(shots, pd.DataFrame):
        raise CrevkitTypeError(f"shots must be a pandas DataFrame, got {type(shots).__name__}")
    missing = [c for c in ("x", "y", "time", "p_crevasse") if c not in shots.columns]
    if missing:
        raise CrevkitValueError(f"shots lacks column(s) {missing}")
    cell = check_positive(cell_size, "cell_size")
    min_shots = check_int(min_shots, "min_shots", minimum=1)
    x = shots["x"].to_numpy(np.float64)
    y = shots["y"].to_numpy(np.float64)
    p = shots["p_crevasse"].to_numpy(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise CrevkitValueError("shots x/y contain NaN or infinite values")
    if np.any((p < 0) | (p > 1)):
        raise CrevkitValueError("p_crevasse must lie in [0, 1] (or be NaN)")
    if len(shots) == 0:
        raise CrevkitValueError("shots is empty")
    names = period_labels(shots["time"], period)
    transform, width, height = _grid(x, y, cell, bounds)
    col = np.floor((x - transform.c) / cell).astype(np.int64)
    row = np.floor((transform.f - y) / cell).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height) & np.isfinite(p)
    counts = StageCounts("map", found=len(shots), skipped=int((~inside).sum()))
    out = Path(out_dir)
    paths = []
    for name in sorted(set(names.tolist())):
        sel = inside & (names == name)
        flat = row[sel] * width + col[sel]
        n = np.bincount(flat, minlength=width * height).astype(np.float64)
        s = np.bincount(flat, weights=p[sel], minlength=width * height)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n >= min_shots, s / np.maximum(n, 1), np.nan)
        target = out / f"{PREFIX}_{name}.tif"
        _write_cog(target, [mean.reshape(height, width), n.reshape(height, width)], transform=transform, crs=crs,
                   descriptions=["p_crevasse_mean", "shot_count"],
                   tags={"kind": "probability", "period": name, "period_kind": period, "cell_size": cell,
                         "min_shots": min_shots, "n_shots": int(sel.sum())})
        if quicklooks:
            quicklook(target, target.with_suffix(".png"))
        paths.append(target)
        counts.done += int(sel.sum())
    counts.extra["rasters"] = len(paths)
    counts.report()
    return paths


def read_raster(path: str | os.PathLike, band: int = 1) -> tuple[np.ndarray, dict]:
    """One band of a crevkit raster as float array, and the dataset's profile plus its tags."""
    import rasterio

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: raster not found")
    try:
        with rasterio.open(path) as src:
            if band > src.count:
                raise InputFileError(f"{path}: has {src.count} band(s), band {band} requested")
            arr = src.read(band).astype(np.float64)
            meta = dict(src.profile)
            meta["tags"] = src.tags()
            meta["bounds"] = tuple(src.bounds)
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"{path}: cannot read the raster: {exc}") from None
    return arr, meta


def _period_of(path: Path, tags: Mapping[str, str]) -> str:
    if tags.get("period"):
        return tags["period"]
    m = re.match(rf"{PREFIX}_(.+)$", path.stem)
    return m.group(1) if m else path.stem


def change_rasters(period_paths: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
                   out_dir: str | os.PathLike, min_shots: int = 3, *,
                   pairs: str | Iterable[tuple[str, str]] = "consecutive",
                   quicklooks: bool = True) -> list[Path]:
    """Write ``change_<p1>_<p2>.tif`` (``p2 − p1``) for pairs of probability rasters.

    Parameters
    ----------
    period_paths : sequence of paths or mapping period -> path
        Rasters written by :func:`rasterize` on one grid.  A sequence is taken
        in the order given; period names come from the rasters' tags.
    out_dir : path
    min_shots : int, default 3
        A cell is NaN unless both periods have at least this many shots there.
    pairs : "consecutive", "all" or iterable of (p1, p2)
        Which differences: each period with the next (default), every
        ordered pair, or the pairs named.
    quicklooks : bool, default True
        Also write ``change_<p1>_<p2>.png``.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    CrevkitValueError
        The rasters are on different grids, or a named period is missing.
    """
    min_shots = check_int(min_shots, "min_shots", minimum=1)
    if isinstance(period_paths, Mapping):
        items = [(str(k), Path(v)) for k, v in period_paths.items()]
    else:
        items = []
        for pth in period_paths:
            pth = Path(pth)
            _, meta = read_raster(pth, 1)
            items.append((_period_of(pth, meta["tags"]), pth))
    lookup = dict(items)
    if len(lookup) != len(items):
        raise CrevkitValueError("period_paths names a period twice")
    order = [k for k, _ in items]
    if pairs == "consecutive":
        todo = list(zip(order[:-1], order[1:]))
    elif pairs == "all":
        todo = [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
    elif isinstance(pairs, str):
        raise CrevkitValueError(f"pairs must be 'consecutive', 'all' or a list of (p1, p2), got {pairs!r}")
    else:
        todo = [(str(a), str(b)) for a, b in pairs]
        for a, b in todo:
            for q in (a, b):
                if q not in lookup:
                    raise CrevkitValueError(f"pairs names period {q!r}, not among {order}")
    cache: dict[str, tuple[np.ndarray, np.ndarray, dict]] = {}

    def get(name: str):
        if name not in cache:
            mean, meta = read_raster(lookup[name], 1)
            if meta["count"] < 2:
                raise InputFileError(f"{lookup[name]}: not a probability raster (needs the shot_count band)")
            count, _ = read_raster(lookup[name], 2)
            cache[name] = (mean, count, meta)
        return cache[name]

    out = Path(out_dir)
    written = []
    for a, b in todo:
        ma, ca, meta_a = get(a)
        mb, cb, meta_b = get(b)
        if (ma.shape != mb.shape or meta_a["transform"] != meta_b["transform"] or meta_a["crs"] != meta_b["crs"]):
            raise CrevkitValueError(f"{lookup[a]} and {lookup[b]} are on different grids; rasterize both in one call "
                                    f"or with the same bounds and cell_size")
        ok = (ca >= min_shots) & (cb >= min_shots) & np.isfinite(ma) & np.isfinite(mb)
        diff = np.where(ok, mb - ma, np.nan)
        target = out / f"change_{a}_{b}.tif"
        _write_cog(target, [diff], transform=meta_a["transform"], crs=meta_a["crs"],
                   descriptions=["p_crevasse_change"],
                   tags={"kind": "change", "period_from": a, "period_to": b, "min_shots": min_shots,
                         "n_cells": int(ok.sum())})
        if quicklooks:
            quicklook(target, target.with_suffix(".png"))
        written.append(target)
    StageCounts("change", found=len(todo), done=len(written)).report()
    return written


def quicklook(raster_path: str | os.PathLike, png_path: str | os.PathLike, *, title: str | None = None) -> Path:
    """PNG quicklook of a probability raster (band 1, 0–1) or a change raster (−1–1, diverging)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr, meta = read_raster(raster_path, 1)
    tags = meta["tags"]
    left, bottom, right, top = meta["bounds"]
    change = tags.get("kind") == "change"
    if title is None:
        title = (f"change in p(crevasse) {tags.get('period_from', '?')} → {tags.get('period_to', '?')}" if change
                 else f"p(crevasse) {tags.get('period', Path(raster_path).stem)}")
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=100)
    try:
        im = ax.imshow(np.ma.masked_invalid(arr), extent=(left / 1e3, right / 1e3, bottom / 1e3, top / 1e3),
                       cmap="RdBu_r" if change else "viridis", vmin=-1 if change else 0, vmax=1,
                       interpolation="nearest")
        ax.set_facecolor("0.85")
        ax.set_xlabel(f"x (km, {meta['crs']})")
        ax.set_ylabel("y (km)")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, label="Δ p(crevasse)" if change else "mean p(crevasse)")
        fig.tight_layout()
        png_path = Path(png_path)
        with atomic_path(png_path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return png_path
