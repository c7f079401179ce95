"""The talk's matching experiment, and synthetic libraries with class truth.

:func:`evaluate_matching` splits a library into an indexed part and held-out
waveforms (the talk's 200k / 50k, i.e. 20 % held out, scaled to the run),
matches the held-out waveforms clean and shifted, and reports

* recall@10 of the index against exact (brute-force) search in the same space,
* source-tile retrieval: library waveforms, shifted, find their own row in the top 10,
* class agreement: share of the k matches whose class (crevassed or not)
  equals the held-out query tile's truth, and 5-NN majority-vote accuracy,

as a table (markdown + JSON) and a figure (query waveform in red, its nearest
library waveforms, and hillshades of the tiles).

:func:`synthetic_tiles` / :func:`synthetic_library` make varied 100 m tiles
with a class truth: planes of random slope and aspect, plus either sums of
V-shaped crevasse troughs ("crevassed") or smooth undulations and basins
("other").  Tile ``i`` of seed ``s`` depends only on ``(s, i)``, so any tile
can be regenerated for a figure.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._validation import check_int, resolve_threads
from .errors import CrevkitValueError

__all__ = ["synthetic_tiles", "synthetic_library", "evaluate_matching", "hillshade", "format_table"]


def synthetic_tiles(rows: Sequence[int] | int, seed: int = 0, *, size: int = 200, pixel_size: float = 0.5,
                    crevassed_fraction: float = 0.5):
    """Synthetic DEM tiles with a class truth.

    Parameters
    ----------
    rows : int or sequence of int
        Number of tiles (rows ``0..n-1``) or the tile numbers to make.
    seed : int
    size, pixel_size
        Tile shape (size × size) and pixel size in metres.
    crevassed_fraction : float
        Probability that a tile is crevassed.

    Returns
    -------
    tiles : ndarray of float32, shape (n, size, size), mean 0
    crevassed : ndarray of bool, shape (n,)
    """
    rows = np.arange(rows) if np.isscalar(rows) else np.asarray(rows, dtype=np.int64)
    c = (np.arange(size) - (size - 1) / 2.0) * pixel_size
    X, Y = np.meshgrid(c.astype(np.float32), (-c).astype(np.float32))
    out = np.empty((rows.size, size, size), np.float32)
    cls = np.empty(rows.size, bool)
    for j, r in enumerate(rows):
        rng = np.random.default_rng([int(seed), int(r)])
        crev = rng.random() < crevassed_fraction
        slope, az = rng.uniform(0.0, 0.06), rng.uniform(0.0, 2 * np.pi)
        z = np.float32(slope * math.cos(az)) * X + np.float32(slope * math.sin(az)) * Y
        if crev:
            for _ in range(int(rng.integers(1, 3))):
                th = rng.uniform(0, np.pi)
                spacing = rng.uniform(8.0, 40.0)
                width = rng.uniform(1.5, min(0.8 * spacing, 12.0))
                depth = rng.uniform(2.0, 20.0)
                u = np.float32(math.cos(th)) * X + np.float32(math.sin(th)) * Y + np.float32(rng.uniform(0, spacing))
                dd = np.abs(np.mod(u, spacing) - spacing / 2)
                z -= np.float32(depth) * np.clip(1 - dd / np.float32(width / 2), 0, None)
        else:
            for _ in range(int(rng.integers(1, 4))):
                if rng.random() < 0.5:
                    th, lam, a = rng.uniform(0, np.pi), rng.uniform(20, 200), rng.uniform(0.1, 2.0)
                    ph = rng.uniform(0, 2 * np.pi)
                    z += np.float32(a) * np.sin(np.float32(2 * np.pi / lam) * (
                        np.float32(math.cos(th)) * X + np.float32(math.sin(th)) * Y) + np.float32(ph))
                else:
                    x0, y0 = rng.uniform(-40, 40, 2)
                    rad, a = rng.uniform(10, 60), rng.uniform(-3, 3)
                    z += np.float32(a) * np.exp(-((X - x0) ** 2 + (Y - y0) ** 2) / np.float32(2 * rad * rad))
        z += rng.standard_normal(z.shape, dtype=np.float32) * np.float32(0.02)
        out[j] = z - z.mean()
        cls[j] = crev
    return out, cls


def synthetic_library(n: int, seed: int = 0, *, size: int = 100, pixel_size: float = 1.0, start: int = 0,
                      batch_size: int = 1000, instrument: str = "glas", **overrides: Any):
    """Simulated waveforms of synthetic tiles ``start..start+n-1``: (waveforms float32 (n, n_samples), crevassed bool).

    The default 100 × 100 tiles at 1 m keep the 100 m tile extent at a
    quarter of the cost of 200 × 200 at 0.5 m.  ``overrides`` go to
    :func:`crevkit.simulate_waveforms` (e.g. ``lead_ns``).
    """
    from .simulate import simulate_waveforms

    waves, classes = [], []
    for s in range(start, start + n, batch_size):
        rows = np.arange(s, min(s + batch_size, start + n))
        tiles, cls = synthetic_tiles(rows, seed, size=size, pixel_size=pixel_size)
        waves.append(simulate_waveforms(tiles, pixel_size, instrument, **overrides))
        classes.append(cls)
    return np.concatenate(waves), np.concatenate(classes)


def hillshade(z: np.ndarray, pixel_size: float = 0.5, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Hillshade (0..1) of a DEM tile; NaN stays NaN."""
    gy, gx = np.gradient(np.asarray(z, dtype=np.float64), pixel_size)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = math.radians(360.0 - azimuth + 90.0), math.radians(altitude)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(shade, 0, 1)


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """A markdown table of ``rows`` (dicts) with the given columns."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def evaluate_matching(waveforms: Any, crevassed: Any, *, holdout_fraction: float = 0.2, k: int = 30,
                      shifts: Sequence[float] = (0.0, 2.5, 5.0, 10.0, 20.0, 40.0), n_source: int = 1000,
                      max_queries: int | None = 5000, seed: int = 0, index_params: dict | None = None,
                      out_dir: str | os.PathLike | None = None, tiles: Callable[[np.ndarray], np.ndarray] | None = None,
                      pixel_size: float = 0.5, n_figure: int = 4, n_threads: int | None = None,
                      tile_ids: Sequence[Any] | None = None) -> dict:
    """The talk's experiment: index part of a library, match the held-out rest.

    Parameters
    ----------
    waveforms : array_like (n, n_samples)
        The library (all of it; it is split here).
    crevassed : array_like of bool (n,)
        Class truth per library row (e.g. ``truth_crevassed_fraction > 0.5``).
    holdout_fraction : float
        Share held out (0.2 = the talk's 200k / 50k).
    k : int
        Matches per query for the class agreement.
    shifts : sequence of float
        Query delays in samples (linear interpolation).  Delays only: a
        library simulated with the leading edge at 10 ns cannot be advanced
        by tens of ns without cutting the return off the window.
    n_source : int
        Library rows used for source-tile retrieval.
    max_queries : int or None
        At most this many held-out queries per condition (None: all).
    index_params : dict
        Passed to :meth:`WaveformIndex.build`.
    out_dir : path, optional
        Writes ``evaluate_matching.md``, ``evaluate_matching.json`` and
        ``evaluate_matching.png`` (atomically).
    tiles : callable(rows) -> (n, ny, nx), optional
        Returns DEM tiles of library rows, for the figure's hillshades.

    Returns
    -------
    dict with ``rows`` (one per shift), ``conditions`` and, with ``out_dir``, ``files``.
    """
    from .index import WaveformIndex, shift_waveforms

    waves = np.asarray(waveforms)
    truth = np.asarray(crevassed).astype(bool)
    n = waves.shape[0]
    if truth.shape != (n,):
        raise CrevkitValueError(f"crevassed must have one value per waveform ({n}), got shape {truth.shape}")
    if not 0.0 < holdout_fraction < 1.0:
        raise CrevkitValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    k = check_int(k, "k", minimum=1)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_hold = max(1, int(round(n * holdout_fraction)))
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    if train.size <= k:
        raise CrevkitValueError(f"library too small: {train.size} indexed waveforms for k={k}")
    params = dict(index_params or {})
    params.setdefault("n_threads", n_threads)
    t0 = time.perf_counter()
    index = WaveformIndex.build(waves[train], tile_ids=None if tile_ids is None else np.asarray(tile_ids)[train],
                                **params)
    build_s = time.perf_counter() - t0
    queries = hold if max_queries is None else hold[:max_queries]
    src = rng.choice(train.size, size=min(n_source, train.size), replace=False)
    threads = resolve_threads(n_threads)
    table = []
    for s in shifts:
        q = shift_waveforms(waves[queries], s, "linear") if s else waves[queries]
        t0 = time.perf_counter()
        rows, _ = index.query(q, k=k, n_threads=threads)
        q_s = time.perf_counter() - t0
        exact_rows, _ = index.exact_query(q, k=10)
        recall = float(np.mean([len(set(a[:10]) & set(b)) / 10 for a, b in zip(rows, exact_rows)]))
        match_cls = truth[train][rows]
        agree = float(np.mean(match_cls == truth[queries][:, None]))
        knn5 = float(np.mean((match_cls[:, :5].mean(axis=1) > 0.5) == truth[queries]))
        sq = shift_waveforms(waves[train][src], s, "linear") if s else waves[train][src]
        srows, _ = index.query(sq, k=10, n_threads=threads)
        source = float(np.mean((srows == src[:, None]).any(axis=1)))
        table.append({"delay (samples)": float(s), "recall@10 vs exact": recall, "source in top 10": source,
                      f"class agreement@{k}": agree, "5-NN class accuracy": knn5,
                      "queries/s": queries.size / q_s})
    result = {
        "rows": table,
        "conditions": {"library": int(n), "indexed": int(train.size), "held_out": int(hold.size),
                       "queries_per_condition": int(queries.size), "source_queries": int(src.size), "k": k,
                       "threads": threads, "index": repr(index), "build_s": build_s,
                       "crevassed_share": float(truth.mean()),
                       "shift_method": "delay by linear interpolation"},
    }
    if out_dir is not None:
        result["files"] = _write_outputs(Path(out_dir), result, index, waves, truth, train, queries, tiles,
                                         pixel_size, n_figure, k)
    return result


def _write_outputs(out_dir: Path, result: dict, index, waves, truth, train, queries, tiles, pixel_size,
                   n_figure, k) -> dict:
    from ._atomic import atomic_path, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    cols = list(result["rows"][0])
    md = ["## Matching experiment (held-out waveforms)", "", format_table(result["rows"], cols), "",
          "Conditions: " + ", ".join(f"{a}={b}" for a, b in result["conditions"].items())]
    files = {"table": str(out_dir / "evaluate_matching.md"), "json": str(out_dir / "evaluate_matching.json")}
    atomic_write_text(files["table"], "\n".join(md) + "\n")
    atomic_write_text(files["json"], json.dumps(result, indent=2, default=str))
    if n_figure > 0:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .index import align_waveforms

        pick = queries[: n_figure]
        rows, dist = index.query(waves[pick], k=3)
        ncol = 2 + (4 if tiles is not None else 0)
        fig, axes = plt.subplots(len(pick), ncol, figsize=(3.0 * ncol, 2.4 * len(pick)), squeeze=False)
        t = np.arange(waves.shape[1])
        al = index.metadata["alignment"]

        def shown(w):  # waveforms as the index compares them: aligned (linear amplitudes)
            if al["method"] == "none":
                return np.asarray(w, np.float32)
            return align_waveforms(w, al["method"], al["target"], threshold=al["threshold"],
                                   interpolation=al["interpolation"])

        for i, q in enumerate(pick):
            ax = axes[i, 0]
            for j in range(3):
                ax.plot(t, shown(waves[train[rows[i, j]]]), color=plt.cm.Blues(0.9 - 0.2 * j), lw=1,
                        label=f"match {j + 1} (d={dist[i, j]:.3f})")
            wq = shown(waves[q])
            ax.plot(t, wq, color="red", lw=1.5, label="query")
            last = int(np.flatnonzero(wq > 1e-3 * wq.max()).max()) if wq.max() > 0 else t[-1]
            ax.set_xlim(0, min(t[-1], last + 40))
            ax.set_title(f"query {q} ({'crevassed' if truth[q] else 'other'})", fontsize=8)
            ax.legend(fontsize=6)
            ax.set_xlabel("ns (aligned)" if al["method"] != "none" else "ns")
            ax2 = axes[i, 1]
            share = truth[train][index.query(waves[q][None], k=k)[0][0]].mean()
            ax2.bar(["crevassed", "other"], [share, 1 - share], color=["tab:red", "tab:blue"])
            ax2.set_ylim(0, 1)
            ax2.set_title(f"classes of the {k} matches", fontsize=8)
            if tiles is not None:
                ids = np.concatenate([[q], train[rows[i]]])
                dem = tiles(ids)
                for j in range(4):
                    a = axes[i, 2 + j]
                    a.imshow(hillshade(dem[j], pixel_size), cmap="gray", vmin=0, vmax=1)
                    a.set_title("query tile" if j == 0 else f"match {j}", fontsize=8)
                    a.set_xticks([])
                    a.set_yticks([])
        fig.tight_layout()
        png = out_dir / "evaluate_matching.png"
        with atomic_path(png, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        files["figure"] = str(png)
    return files
