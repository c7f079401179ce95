"""The run report: one self-contained HTML page, its PNG figures and ``metrics.json``.

:func:`write_report` writes ``run_dir/report/index.html`` with every PNG
embedded as base64 (the page opens offline, alone, from anywhere) and
``run_dir/report/metrics.json``.  The plotting helpers write the PNGs the
runner passes in (all atomic, matplotlib's Agg backend).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from .errors import CrevkitTypeError, CrevkitValueError

__all__ = [
    "write_report",
    "plot_umatrix",
    "umatrix",
    "plot_hit_map",
    "plot_waveform_matches",
    "plot_map",
    "SECTIONS",
    "METRIC_DESCRIPTIONS",
]

#: report sections in page order: (title, figure-key prefixes)
SECTIONS = (
    ("Waveform matches", ("waveform", "match")),
    ("Self-organizing map", ("umatrix", "u_matrix", "hit", "som")),
    ("OPTICS clustering", ("reachability", "optics")),
    ("Cluster mosaics", ("mosaic", "cluster")),
    ("Crevasse probability maps", ("crevasse_probability", "probability")),
    ("Change maps", ("change",)),
)

_INTROS = (
    "The recorded waveform (red), the denoiser's output (black) and the nearest simulated library waveforms, "
    "with the DEM tiles they were simulated from: the shot's p(crevasse) is the labelled share of such matches.",
    "The U-matrix shows distances between neighbouring map nodes (ridges separate tile families); the hit map "
    "shows how many tiles landed on each node.",
    "OPTICS reachability in processing order: valleys are clusters (coloured), peaks separate them; grey bars "
    "are noise nodes, later attached to their nearest cluster.",
    "Representative tiles of each cluster, hillshaded and coloured on one shared height scale.",
    "Mean p(crevasse) per cell and period (cells with too few shots are blank).",
    "Change of mean p(crevasse) between periods (later minus earlier; blank where either has too few shots).",
    "",
)

#: what the evaluation metrics mean (keys the runner is expected to use)
METRIC_DESCRIPTIONS = {
    "auc": "shot-level ROC AUC of p_crevasse against truth (real-like, noisy waveforms)",
    "brier": "shot-level Brier score of p_crevasse against truth (lower is better)",
    "auc_clean": "the same AUC with clean (un-noised) waveforms: the ceiling",
    "brier_clean": "the same Brier score with clean waveforms",
    "cluster_purity": "share of tiles whose cluster's majority truth class is their own",
    "change_accuracy": "change-map accuracy against the truth change map",
    "accuracy": "share of compared cells classified right (vanished / none / appeared)",
    "appeared_recall": "share of cells where crevassing appeared that the map shows appearing",
    "vanished_recall": "share of cells where crevassing vanished that the map shows vanishing",
    "changed_accuracy": "share of changed cells (either way) classified right",
    "n_shots": "shots",
    "n_tiles": "tiles",
    "n_clusters": "clusters",
}


def _umatrix_of(codebook: np.ndarray) -> np.ndarray:
    return umatrix(codebook)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike, **kw: Any) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", **kw)
    return path


# ---------------------------------------------------------------------- plots
def _grid2d(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise CrevkitValueError(f"{name} must be a non-empty 2-D (rows, cols) array, got shape {arr.shape}")
    return arr


def umatrix(codebook: Any) -> np.ndarray:
    """U-matrix of a codebook (rows, cols, D): each node's mean Euclidean distance to its 4 map neighbours."""
    cb = np.asarray(codebook, np.float64)
    if cb.ndim != 3 or cb.shape[0] * cb.shape[1] == 0:
        raise CrevkitValueError(f"codebook must be (rows, cols, D), got shape {cb.shape}")
    total = np.zeros(cb.shape[:2])
    count = np.zeros(cb.shape[:2])
    dv = np.sqrt(((cb[1:] - cb[:-1]) ** 2).sum(-1))
    dh = np.sqrt(((cb[:, 1:] - cb[:, :-1]) ** 2).sum(-1))
    total[1:] += dv
    total[:-1] += dv
    count[1:] += 1
    count[:-1] += 1
    total[:, 1:] += dh
    total[:, :-1] += dh
    count[:, 1:] += 1
    count[:, :-1] += 1
    return total / np.maximum(count, 1)


def plot_umatrix(umatrix: Any, path: str | os.PathLike) -> Path:
    """Write the SOM U-matrix (mean codebook distance of each node to its neighbours) as a PNG.

    Parameters
    ----------
    umatrix : array_like, shape (rows, cols), or a codebook (rows, cols, D)
        A codebook is turned into its U-matrix first (see :func:`umatrix`).
    path : path
    """
    arr = np.asarray(umatrix)
    u = _umatrix_of(arr) if arr.ndim == 3 else _grid2d(arr, "umatrix")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    try:
        im = ax.imshow(u, cmap="bone_r", interpolation="nearest", origin="upper")
        fig.colorbar(im, ax=ax, label="distance to neighbouring nodes")
        ax.set_title(f"U-matrix ({u.shape[0]}×{u.shape[1]} map)")
        ax.set_xlabel("map column")
        ax.set_ylabel("map row")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_hit_map(hits: Any, path: str | os.PathLike) -> Path:
    """Write the SOM hit map (tiles per node; empty nodes grey) as a PNG.

    Parameters
    ----------
    hits : array_like, shape (rows, cols)
    path : path
    """
    h = _grid2d(hits, "hits")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    try:
        ax.set_facecolor("0.8")
        im = ax.imshow(np.ma.masked_less_equal(h, 0), cmap="viridis", interpolation="nearest", origin="upper")
        fig.colorbar(im, ax=ax, label="tiles per node")
        ax.set_title(f"hit map: {int(h.sum())} tiles, {int((h <= 0).sum())} empty nodes (grey)")
        ax.set_xlabel("map column")
        ax.set_ylabel("map row")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def _peak_norm(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, np.float64)
    m = np.nanmax(np.abs(w)) if w.size else 0.0
    return w / m if m > 0 else w


def plot_waveform_matches(query: Any, denoised: Any, neighbours: Any, neighbour_tiles: Any,
                          path: str | os.PathLike, *, labels: Sequence[str] | None = None,
                          distances: Sequence[float] | None = None, resolution: float = 0.5,
                          max_neighbours: int = 6, title: str | None = None) -> Path:
    """The talk's match figure: a shot waveform, its denoised version, its nearest library waveforms and their tiles.

    Left: the real waveform in red, the denoised one in black, the nearest
    library waveforms in colours (each scaled to peak 1 for display).  Right:
    hillshades of the matched tiles, framed in their waveform's colour and
    titled with their label and distance where given.

    Parameters
    ----------
    query : array_like, shape (n_samples,)
        The shot's waveform as recorded.
    denoised : array_like, shape (n_samples,), or None
    neighbours : array_like, shape (m, n_samples)
        Library waveforms of the nearest matches, best first.
    neighbour_tiles : array_like, shape (m, ny, nx)
        Their DEM tiles (heights, m).
    path : path
    labels : sequence of str, optional
        Label of each matched tile.
    distances : sequence of float, optional
        Match distances.
    resolution : float
        Tile pixel size (m), for the hillshade.
    max_neighbours : int
        At most this many matches are drawn.
    title : str, optional
    """
    from .labels import hillshade

    q = np.asarray(query, np.float64)
    if q.ndim != 1:
        raise CrevkitValueError(f"query must be 1-D, got shape {q.shape}")
    nb = np.asarray(neighbours, np.float64)
    if nb.ndim == 1:
        nb = nb[None]
    tiles = np.asarray(neighbour_tiles, np.float64)
    if tiles.ndim == 2:
        tiles = tiles[None]
    if nb.ndim != 2 or tiles.ndim != 3 or nb.shape[0] != tiles.shape[0] or nb.shape[0] == 0:
        raise CrevkitValueError(f"neighbours (m, n_samples) and neighbour_tiles (m, ny, nx) must agree on m >= 1, "
                                f"got {nb.shape} and {tiles.shape}")
    m = min(nb.shape[0], int(max_neighbours))
    plt = _plt()
    colours = plt.get_cmap("tab10")([0, 2, 9, 4, 1, 6, 8, 5, 7, 3][:m] if m <= 10 else np.arange(m) % 10)
    ncol_t = min(3, m)
    nrow_t = int(math.ceil(m / ncol_t))
    fig = plt.figure(figsize=(5.5 + 2.2 * ncol_t, max(3.8, 2.3 * nrow_t)), dpi=100)
    try:
        gs = fig.add_gridspec(nrow_t, 1 + ncol_t, width_ratios=[2.5] + [1] * ncol_t)
        ax = fig.add_subplot(gs[:, 0])
        for j in range(m):
            lab = f"match {j + 1}"
            if labels is not None:
                lab += f" ({labels[j]})"
            ax.plot(_peak_norm(nb[j]), color=colours[j], lw=1.0, label=lab)
        if denoised is not None:
            ax.plot(_peak_norm(np.asarray(denoised, np.float64)), color="k", lw=1.6, label="denoised")
        ax.plot(_peak_norm(q), color="red", lw=1.2, label="real waveform")
        ax.set_xlabel("sample (ns)")
        ax.set_ylabel("amplitude (peak = 1)")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title(title or "waveform and nearest library waveforms", fontsize=9)
        lim = max(float(np.nanpercentile(np.abs(tiles[:m]), 98)), 1e-6)
        for j in range(m):
            r, c = divmod(j, ncol_t)
            axt = fig.add_subplot(gs[r, 1 + c])
            t = tiles[j]
            ok = np.isfinite(t)
            hs = hillshade(np.where(ok, t, 0.0), resolution=resolution)
            rgb = plt.get_cmap("RdBu_r")(np.clip((np.where(ok, t, 0.0) + lim) / (2 * lim), 0, 1))[..., :3]
            axt.imshow(rgb * (0.35 + 0.65 * hs[..., None]), interpolation="nearest")
            for sp in axt.spines.values():
                sp.set_color(colours[j])
                sp.set_linewidth(3)
            axt.set_xticks([])
            axt.set_yticks([])
            txt = f"{j + 1}"
            if labels is not None:
                txt += f" {labels[j]}"
            if distances is not None:
                txt += f" d={float(distances[j]):.3g}"
            axt.set_title(txt, fontsize=8)
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_map(raster_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """PNG quicklook of a probability or change raster (see :func:`crevkit.maps.quicklook`)."""
    from .maps import quicklook

    return quicklook(raster_path, png_path)


# ---------------------------------------------------------------------- report
def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, Path):
        return str(v)
    return v


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return "n/a"
        return f"{f:.4f}" if abs(f) >= 1e-3 or f == 0 else f"{f:.3g}"
    return html.escape(str(v))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, last key, value) rows of a nested dict of scalars."""
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            rows += _flatten(v, key + ".")
        elif isinstance(v, (list, tuple, np.ndarray)) and len(v) <= 8:
            rows.append((key, str(k), ", ".join(_fmt(x) for x in v)))
        elif isinstance(v, (list, tuple, np.ndarray)):
            rows.append((key, str(k), f"[{len(v)} values]"))
        else:
            rows.append((key, str(k), v))
    return rows


def _section_of(key: str) -> int:
    low = key.lower()
    for i, (_, prefixes) in enumerate(SECTIONS):
        if any(low.startswith(p) or f"/{p}" in low for p in prefixes):
            return i
    return len(SECTIONS)


def _discover(run_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for sub, pattern in (("report", "*.png"), ("som", "*.png"), ("clusters", "**/*.png"), ("maps", "*.png")):
        base = run_dir / sub
        if base.is_dir():
            for p in sorted(base.glob(pattern)):
                if not p.name.startswith("."):
                    found[str(p.relative_to(run_dir).with_suffix(""))] = p
    return found


def _png_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em;vertical-align:top} figcaption{font-size:.85em;color:#555}
img{max-width:100%;border:1px solid #ddd} .small{color:#666;font-size:.85em}
"""


def write_report(run_dir: str | os.PathLike, *, metrics: Mapping[str, Any],
                 figures: Mapping[str, str | os.PathLike] | None = None, title: str = "crevkit run report",
                 run_info: Mapping[str, Any] | None = None) -> Path:
    """Write ``run_dir/report/index.html`` (self-contained) and ``run_dir/report/metrics.json``.

    Parameters
    ----------
    run_dir : path
        The run directory.
    metrics : mapping
        Metrics (nested dicts allowed), e.g. ``{"auc": 0.91, "brier": 0.08,
        "auc_clean": 0.97, "cluster_purity": 0.88, "change_accuracy":
        {"accuracy": ..., ...}}``.  Written as JSON (NaN → null) and shown as
        the evaluation table; keys in :data:`METRIC_DESCRIPTIONS` get a
        description.  An empty mapping gives a page without the table
        (no truth).
    figures : mapping name -> PNG path, optional
        Figures to embed (base64), grouped into :data:`SECTIONS` by their
        name's prefix (e.g. ``"umatrix"``, ``"reachability"``,
        ``"mosaic_3"``, ``"crevasse_probability_2005"``, ``"change_2004_2005"``);
        other names go under "Other figures".  Missing files are listed, not
        fatal.  Default: every PNG under ``report/``, ``som/``, ``clusters/``
        and ``maps/`` of the run.
    title : str
    run_info : mapping, optional
        Extra key/value lines for the page header (config, versions, ...).

    Returns
    -------
    pathlib.Path
        The ``index.html`` path.
    """
    if not isinstance(metrics, Mapping):
        raise CrevkitTypeError(f"metrics must be a mapping, got {type(metrics).__name__}")
    run = Path(run_dir)
    out = run / "report"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(_jsonable(metrics), indent=2, sort_keys=False,
                                                       allow_nan=False) + "\n")
    figs = _discover(run) if figures is None else {str(k): Path(v) for k, v in figures.items()}

    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p class='small'>run directory <code>{html.escape(str(run))}</code>, written {now}</p>")
    if run_info:
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                                         for k, v in run_info.items()) + "</table>")
    nav = []
    body = []
    if metrics:
        rows = _flatten(metrics)
        body.append("<h2 id='evaluation'>Evaluation</h2><table><tr><th>metric</th><th>value</th><th>meaning</th></tr>")
        for key, last, v in rows:
            desc = METRIC_DESCRIPTIONS.get(key, METRIC_DESCRIPTIONS.get(last, ""))
            body.append(f"<tr><td><code>{html.escape(key)}</code></td><td class='num'>{_fmt(v)}</td>"
                        f"<td>{html.escape(desc)}</td></tr>")
        body.append("</table><p class='small'>Also in <code>metrics.json</code>.</p>")
        nav.append(("evaluation", "Evaluation"))
    groups: dict[int, list[tuple[str, Path]]] = {}
    for name, p in figs.items():
        groups.setdefault(_section_of(name), []).append((name, p))
    titles = [t for t, _ in SECTIONS] + ["Other figures"]
    missing = []
    for i in sorted(groups):
        anchor = f"s{i}"
        block = []
        for name, p in groups[i]:
            if not p.is_file():
                missing.append(name)
                continue
            block.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{_png_b64(p)}'>"
                         f"<figcaption>{html.escape(name)}</figcaption></figure>")
        if block:
            body.append(f"<h2 id='{anchor}'>{html.escape(titles[i])}</h2>")
            if _INTROS[i]:
                body.append(f"<p class='small'>{html.escape(_INTROS[i])}</p>")
            body += block
            nav.append((anchor, titles[i]))
    if missing:
        body.append("<p class='small'>Figures not found: " + ", ".join(html.escape(m) for m in missing) + "</p>")
    if nav:
        parts.append("<p>" + " · ".join(f"<a href='#{a}'>{html.escape(t)}</a>" for a, t in nav) + "</p>")
    if not metrics:
        parts.append("<p class='small'>No truth for this run: no evaluation table.</p>")
    parts += body
    parts.append("</body></html>\n")
    target = out / "index.html"
    atomic_write_text(target, "\n".join(parts))
    return target
