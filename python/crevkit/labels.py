"""Labelling clusters (or a few tiles) and spreading the labels to every tile.

Workflow:

1. :func:`write_label_kit` draws a mosaic PNG of representative tiles for each
   cluster (hillshaded, coloured by height on one colour scale shared by all
   mosaics) and two CSV templates: ``clusters_template.csv``
   (``cluster_id,label``, plus context columns) and ``tiles_template.csv``
   (``tile_id,label`` for the tiles shown in the mosaics).  The ``label``
   column is left empty; an optional rule-based guess goes into a separate
   ``suggested_label`` column, never into ``label``.
2. A person fills ``label`` (``crevasse``, ``other``, or another class word)
   in either template.
3. :func:`read_labels` reads the filled file and gives every tile a label:
   with a cluster file, each tile takes its cluster's label; with a tile file,
   each cluster takes the majority label of its labelled tiles (a tie, or no
   labelled tile, leaves it ``unknown``) and each labelled tile keeps its own
   label.  Empty ``label`` cells and the word ``unknown`` mean "not labelled".
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from ._progress import StageCounts, progress
from ._validation import as_float32_array, check_int, check_positive
from .errors import CrevkitTypeError, CrevkitValueError, InputFileError

__all__ = [
    "CLASSES",
    "UNKNOWN",
    "hillshade",
    "suggest_labels",
    "write_label_kit",
    "read_labels",
]

UNKNOWN = "unknown"
#: label words accepted by default (pass ``classes=`` to :func:`read_labels` for more)
CLASSES = ("crevasse", "other", "ridge", "basin", "rough", "smooth")
_SCALE_SAMPLE = 256  # tiles read to fix the mosaics' shared colour scale


# ---------------------------------------------------------------------- suggestion
def suggest_labels(tiles: Any, *, resolution: float = 0.5, width_m: float = 10.0, depth_m: float = 1.0,
                   min_share: float = 0.02) -> np.ndarray:
    """A rule-based *suggestion* of ``"crevasse"`` / ``"other"`` per tile (not a label).

    Rule: a pixel lies in a narrow depression when a morphological closing of
    the surface with a ``width_m`` × ``width_m`` window (which fills every
    trough narrower than the window and leaves broader shapes alone) lifts it
    by more than ``depth_m``.  A tile is suggested ``"crevasse"`` when at
    least ``min_share`` of its finite pixels are in such depressions, else
    ``"other"``.  Crevasses are narrow (metres) and deep (metres to tens of
    metres), so they stand out; slopes, undulations and basins wider than the
    window are barely lifted (a bowl of curvature κ by about κ·width²/8).
    NaN pixels are filled with the tile mean for the closing and not counted.

    Parameters
    ----------
    tiles : array_like, shape (n, ny, nx) or (ny, nx)
        Heights in metres (converted once to float32).
    resolution : float, default 0.5
        Pixel size (m).
    width_m : float, default 10.0
        Widest trough that counts (m).
    depth_m : float, default 1.0
        Depth that counts (m).
    min_share : float, default 0.02
        Share of depression pixels from which a tile is suggested ``crevasse``.

    Returns
    -------
    ndarray of str (object), shape (n,) (or a str for one tile)
    """
    from scipy.ndimage import grey_closing

    t = as_float32_array(tiles, "tiles", ndim=(2, 3))
    single = t.ndim == 2
    if single:
        t = t[None]
    resolution = check_positive(resolution, "resolution")
    size = max(3, int(round(check_positive(width_m, "width_m") / resolution)) | 1)
    depth = check_positive(depth_m, "depth_m")
    share = check_positive(min_share, "min_share", maximum=1.0)
    out = np.empty(t.shape[0], dtype=object)
    for i, tile in enumerate(t):
        ok = np.isfinite(tile)
        if not ok.any():
            out[i] = "other"
            continue
        filled = np.where(ok, tile, float(tile[ok].mean())).astype(np.float64)
        lift = grey_closing(filled, size=(size, size), mode="nearest") - filled
        frac = float(((lift > depth) & ok).sum()) / float(ok.sum())
        out[i] = "crevasse" if frac >= share else "other"
    return out[0] if single else out


# ---------------------------------------------------------------------- mosaics
def hillshade(tile: Any, *, resolution: float = 0.5, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Hillshade of a height tile in [0, 1] (1 = facing the light; NaN stays NaN).

    Parameters
    ----------
    tile : array_like, shape (ny, nx)
    resolution : float
        Pixel size (m), so slopes are true slopes.
    azimuth, altitude : float
        Light direction (degrees clockwise from north; degrees above the horizon).
    """
    z = np.asarray(tile, np.float64)
    gy, gx = np.gradient(z, resolution)
    slope = np.pi / 2.0 - np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az = np.deg2rad(360.0 - azimuth + 90.0)
    alt = np.deg2rad(altitude)
    shade = np.sin(alt) * np.sin(slope) + np.cos(alt) * np.cos(slope) * np.cos(az - aspect)
    return np.clip(shade, 0.0, 1.0)


def shaded_relief(tile: np.ndarray, vmin: float, vmax: float, *, resolution: float = 0.5,
                  cmap: str = "RdBu_r") -> np.ndarray:
    """RGB (ny, nx, 3) in [0, 1]: height coloured on the fixed scale [vmin, vmax], times a soft hillshade."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = np.asarray(tile, np.float64)
    ok = np.isfinite(z)
    zz = np.where(ok, z, 0.0)
    norm = np.clip((zz - vmin) / (vmax - vmin if vmax > vmin else 1.0), 0.0, 1.0)
    rgb = plt.get_cmap(cmap)(norm)[..., :3]
    hs = hillshade(zz, resolution=resolution)
    out = rgb * (0.35 + 0.65 * hs[..., None])
    out[~ok] = 1.0
    return out


def _mosaic(tiles: np.ndarray, ids: Sequence[str], vmin: float, vmax: float, title: str, path: Path,
            resolution: float, cmap: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n, ny, nx = tiles.shape
    ncol = int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    gap = max(2, ny // 25)
    canvas = np.ones((nrow * (ny + gap) - gap, ncol * (nx + gap) - gap, 3))
    for i in range(n):
        r, c = divmod(i, ncol)
        y0, x0 = r * (ny + gap), c * (nx + gap)
        canvas[y0:y0 + ny, x0:x0 + nx] = shaded_relief(tiles[i], vmin, vmax, resolution=resolution, cmap=cmap)
    width = min(14.0, 1.6 * ncol + 1.2)
    fig, ax = plt.subplots(figsize=(width, width * canvas.shape[0] / canvas.shape[1] + 0.6), dpi=100)
    try:
        ax.imshow(canvas, interpolation="nearest")
        for i, tid in enumerate(ids):
            r, c = divmod(i, ncol)
            ax.text(c * (nx + gap) + 2, r * (ny + gap) + 2, str(tid)[:10], fontsize=6, va="top", ha="left",
                    color="k", bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5, "linewidth": 0})
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        sm = ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap)
        fig.colorbar(sm, ax=ax, fraction=0.035, pad=0.02, label="height about tile mean (m)")
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def write_label_kit(out_dir: str | os.PathLike, tiles_reader: Callable[[np.ndarray], Any], tile_ids: Any,
                    tile_cluster: Any, *, per_cluster: int = 16, suggestion: Any = None, seed: int = 0,
                    resolution: float = 0.5, cmap: str = "RdBu_r") -> dict:
    """Write one mosaic PNG per cluster and the two label templates.

    Parameters
    ----------
    out_dir : path
        Folder for ``mosaics/cluster_<id>.png``, ``clusters_template.csv``,
        ``tiles_template.csv`` (each written atomically).
    tiles_reader : callable
        ``tiles_reader(rows) -> (n, ny, nx)`` heights for tile rows (e.g.
        :meth:`crevkit.tiles.TileStore.read`).
    tile_ids : array_like, shape (n_tiles,)
        Tile identifiers, by row.
    tile_cluster : array_like of int, shape (n_tiles,)
        Cluster of each tile (``-1`` tiles are not shown).
    per_cluster : int, default 16
        Representative tiles per mosaic (a seeded random sample of the cluster).
    suggestion : None, "rule", callable or array_like of str, optional
        ``"rule"``: run :func:`suggest_labels` on the representative tiles; a
        callable ``f(tiles (n, ny, nx)) -> n labels`` (e.g.
        :func:`suggest_labels` itself): run it on them; an array: a
        suggested label per tile (all tiles).  The cluster suggestion
        is the majority of its representative tiles' suggestions, with that
        share in ``suggested_share``.  Suggestions go into ``suggested_label``
        only; ``label`` stays empty for the person to fill.
    seed : int, default 0
        Seed of the tile sample.
    resolution : float, default 0.5
        Pixel size (m) for the hillshade.
    cmap : str
        Colour map of the shared height scale.

    Returns
    -------
    dict
        ``{"mosaics": {cluster_id: Path}, "clusters_template": Path,
        "tiles_template": Path, "scale": (vmin, vmax)}``.  ``vmin``/``vmax``
        is the one colour scale used by every mosaic: ±98th percentile of
        |height| over (a seeded sample of up to 256 of) the shown tiles.
        Tiles are read one cluster at a time, so memory stays bounded.
    """
    out = Path(out_dir)
    ids = np.asarray(tile_ids)
    clu = np.asarray(tile_cluster)
    if ids.ndim != 1 or clu.ndim != 1 or ids.shape != clu.shape or ids.size == 0:
        raise CrevkitValueError(f"tile_ids and tile_cluster must be non-empty 1-D arrays of one length, "
                                f"got shapes {ids.shape} and {clu.shape}")
    if not np.issubdtype(clu.dtype, np.integer):
        raise CrevkitTypeError(f"tile_cluster must hold integers, got dtype {clu.dtype}")
    if not callable(tiles_reader):
        raise CrevkitTypeError("tiles_reader must be a callable rows -> tiles")
    per_cluster = check_int(per_cluster, "per_cluster", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    resolution = check_positive(resolution, "resolution")
    given = None
    rule: Callable[[np.ndarray], Any] | None = None
    if isinstance(suggestion, str):
        if suggestion != "rule":
            raise CrevkitValueError(f"suggestion must be None, 'rule', a callable or one label per tile, "
                                    f"got {suggestion!r}")
        rule = lambda t: suggest_labels(t, resolution=resolution)  # noqa: E731
    elif callable(suggestion):
        rule = suggestion
    elif suggestion is not None:
        given = np.asarray(suggestion, dtype=object)
        if given.shape != ids.shape:
            raise CrevkitValueError(f"suggestion must be 'rule', a callable or one label per tile ({ids.size}), "
                                    f"got shape {given.shape}")
    rng = np.random.default_rng(seed)
    clusters = np.unique(clu[clu >= 0])
    chosen: dict[int, np.ndarray] = {}
    for c in clusters:
        members = np.flatnonzero(clu == c)
        pick = members if members.size <= per_cluster else rng.choice(members, per_cluster, replace=False)
        chosen[int(c)] = np.sort(pick)
    # one colour scale for every mosaic, from a sample of the shown tiles (memory stays bounded)
    all_rows = np.concatenate(list(chosen.values())) if chosen else np.empty(0, np.int64)
    lim = 1.0
    if all_rows.size:
        sample = np.sort(rng.choice(all_rows, min(all_rows.size, _SCALE_SAMPLE), replace=False))
        t = _read(tiles_reader, sample)
        v = np.abs(t[np.isfinite(t)])
        lim = float(np.percentile(v, 98)) if v.size else 1.0
    lim = lim if lim > 0 else 1.0
    vmin, vmax = -lim, lim

    mosaics: dict[int, Path] = {}
    cluster_rows = []
    tile_rows = []
    counts = StageCounts("label-kit", found=len(chosen))
    for c, rows in progress(chosen.items(), desc="mosaics", total=len(chosen), unit="cluster"):
        tiles_c = _read(tiles_reader, rows)
        sugg = None
        if given is not None:
            sugg = given[rows]
        elif rule is not None:
            sugg = np.asarray(rule(tiles_c), dtype=object).reshape(-1)
            if sugg.size != rows.size:
                raise CrevkitValueError(f"suggestion callable returned {sugg.size} labels for {rows.size} tiles")
        n_members = int((clu == c).sum())
        p = _mosaic(tiles_c, [str(ids[r]) for r in rows], vmin, vmax,
                    f"cluster {c}: {rows.size} of {n_members} tiles", out / "mosaics" / f"cluster_{c}.png",
                    resolution, cmap)
        mosaics[c] = p
        counts.done += 1
        if sugg is not None:
            vals, cnt = np.unique(np.asarray(sugg, dtype=str), return_counts=True)
            best = int(np.argmax(cnt))
            tie = (cnt == cnt[best]).sum() > 1
            s_label = UNKNOWN if tie else str(vals[best])
            s_share = f"{cnt[best] / cnt.sum():.2f}"
        else:
            s_label, s_share = "", ""
        cluster_rows.append([c, n_members, rows.size, f"mosaics/cluster_{c}.png", s_label, s_share, ""])
        for j, r in enumerate(rows):
            tile_rows.append([str(ids[r]), c, "" if sugg is None else str(sugg[j]), ""])
    ct = out / "clusters_template.csv"
    tt = out / "tiles_template.csv"
    note = ("# suggested_label is a rule-based SUGGESTION, not a label: fill the label column "
            "(crevasse, other, ridge, basin, ...; empty = unknown)\n")
    atomic_write_text(ct, note + _csv_text(["cluster_id", "n_tiles", "n_shown", "mosaic", "suggested_label",
                                            "suggested_share", "label"], cluster_rows))
    atomic_write_text(tt, note + _csv_text(["tile_id", "cluster_id", "suggested_label", "label"], tile_rows))
    counts.extra["tiles_shown"] = len(tile_rows)
    counts.report()
    return {"mosaics": mosaics, "clusters_template": ct, "tiles_template": tt, "scale": (vmin, vmax)}


def _read(tiles_reader: Callable[[np.ndarray], Any], rows: np.ndarray) -> np.ndarray:
    t = np.asarray(tiles_reader(rows), np.float32)
    if t.ndim != 3 or t.shape[0] != rows.size:
        raise CrevkitValueError(f"tiles_reader returned shape {t.shape} for {rows.size} rows; expected (n, ny, nx)")
    return t


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------- reading labels
def read_labels(path: str | os.PathLike, tile_ids: Any, tile_cluster: Any, *,
                classes: Sequence[str] | None = None) -> np.ndarray:
    """Read a filled label CSV and return one label per tile (``"unknown"`` where not labelled).

    Parameters
    ----------
    path : path
        A CSV whose first column is ``cluster_id`` or ``tile_id`` and which
        has a ``label`` column (other columns, e.g. those of the templates,
        are ignored; lines starting with ``#`` are comments).  Empty labels
        and ``unknown`` mean "not labelled".  Words are case-insensitive.
    tile_ids : array_like, shape (n_tiles,)
        Tile identifiers by row (compared as strings).
    tile_cluster : array_like of int, shape (n_tiles,)
        Cluster of each tile (``-1`` tiles take no cluster label).
    classes : sequence of str, optional
        Accepted label words (default :data:`CLASSES`: crevasse, other,
        ridge, basin, rough, smooth).

    Returns
    -------
    ndarray of str (object), shape (n_tiles,)

    Raises
    ------
    InputFileError
        Missing file or columns, an id not among the clusters/tiles, a label
        word not in ``classes``, or an id given twice; the message names the
        file and line.
    """
    path = Path(path)
    ids = np.asarray(tile_ids)
    clu = np.asarray(tile_cluster)
    if ids.ndim != 1 or clu.shape != ids.shape:
        raise CrevkitValueError(f"tile_ids and tile_cluster must be 1-D of one length, got {ids.shape} and {clu.shape}")
    if not np.issubdtype(clu.dtype, np.integer):
        raise CrevkitTypeError(f"tile_cluster must hold integers, got dtype {clu.dtype}")
    allowed = {c.strip().lower() for c in (CLASSES if classes is None else classes)}
    if UNKNOWN in allowed:
        allowed.discard(UNKNOWN)
    if not path.is_file():
        raise InputFileError(f"{path}: label file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: cannot read the label file: {exc}") from None
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputFileError(f"{path}: empty label file (need a header cluster_id,label or tile_id,label)")
    header_no, header_line = lines[0]
    header = [h.strip().lower() for h in next(csv.reader([header_line]))]
    kind = header[0] if header else ""
    if kind not in ("cluster_id", "tile_id"):
        raise InputFileError(f"{path}, line {header_no}: first column must be cluster_id or tile_id, got {kind!r}")
    if "label" not in header:
        raise InputFileError(f"{path}, line {header_no}: no 'label' column in header {header}")
    li = header.index("label")

    seen: dict[str, int] = {}
    entries: list[tuple[int, str, str]] = []
    for no, line in lines[1:]:
        row = next(csv.reader([line]))
        key = row[0].strip()
        if key == "":
            raise InputFileError(f"{path}, line {no}: empty {kind}")
        label = row[li].strip().lower() if len(row) > li else ""
        if key in seen:
            raise InputFileError(f"{path}, line {no}: {kind} {key} given twice (first on line {seen[key]})")
        seen[key] = no
        if label in ("", UNKNOWN):
            continue
        if label not in allowed:
            raise InputFileError(f"{path}, line {no}: unknown label {label!r} (allowed: {', '.join(sorted(allowed))}"
                                 f", or empty/unknown)")
        entries.append((no, key, label))

    out = np.full(ids.size, UNKNOWN, dtype=object)
    if kind == "cluster_id":
        valid = {int(c) for c in np.unique(clu[clu >= 0])}
        for no, key, label in entries:
            try:
                cid = int(key)
            except ValueError:
                raise InputFileError(f"{path}, line {no}: cluster_id {key!r} is not an integer") from None
            if cid not in valid:
                raise InputFileError(f"{path}, line {no}: unknown cluster_id {cid} (no tile is in it)")
            out[clu == cid] = label
        return out

    pos = {str(t): i for i, t in enumerate(ids.tolist())}
    own: dict[int, str] = {}
    for no, key, label in entries:
        i = pos.get(key)
        if i is None:
            raise InputFileError(f"{path}, line {no}: unknown tile_id {key!r}")
        own[i] = label
    # majority vote per cluster
    votes: dict[int, dict[str, int]] = {}
    for i, label in own.items():
        c = int(clu[i])
        if c >= 0:
            votes.setdefault(c, {}).setdefault(label, 0)
            votes[c][label] += 1
    for c, v in votes.items():
        best = max(v.values())
        winners = [lab for lab, n in v.items() if n == best]
        if len(winners) == 1:
            out[clu == c] = winners[0]
    for i, label in own.items():
        out[i] = label
    return out
