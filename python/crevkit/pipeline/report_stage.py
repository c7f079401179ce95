"""The report stage: figures from every stage and, when truth exists, the evaluation.

Truth (synthetic scenes) is found under the config's ``truth`` folder as the
``*truth*.parquet`` tables written by :func:`crevkit.synth_shots.synthesize_shots`
(one row per shot: ``shot_id``, ``crevassed_fraction`` within the footprint,
and the clean waveforms beside it).  A shot or tile counts as crevassed when
its crevassed fraction is at least :data:`CREVASSED_FRACTION`.
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path

import numpy as np

__all__ = ["build_run_report", "evaluate_run", "CREVASSED_FRACTION"]

log = logging.getLogger("crevkit.pipeline")

CREVASSED_FRACTION = 0.05  # footprint / tile share of crevassed area that makes it "crevassed"


def _truth_tables(truth_dir: str):
    import pandas as pd

    from ..synth_shots import load_truth

    tables, clean = [], []
    for path in sorted(glob.glob(str(Path(truth_dir) / "**" / "*truth*.parquet"), recursive=True)):
        table, clean_waves, _ = load_truth(path)
        tables.append(table)
        clean.append(clean_waves)
    if not tables:
        return None, None
    return pd.concat(tables, ignore_index=True), np.concatenate(clean)


def evaluate_run(ctx) -> dict:
    """Shot AUC / Brier (noisy and clean ceiling), cluster purity, change-map accuracy."""
    import pandas as pd

    from ..cluster import ClusterResult
    from ..index import WaveformIndex, match_shots
    from ..maps import change_rasters, rasterize
    from ..metrics import brier, change_accuracy, cluster_purity, roc_auc
    from ..probability import shot_probabilities
    from ..tiles import TileStore
    from . import stages as S

    metrics: dict = {}
    truth, clean = _truth_tables(ctx.config["truth"]) if ctx.config["truth"] else (None, None)
    store = TileStore(ctx.path(S.TILES))
    tile_truth = store.index.get("truth_crevassed_fraction")
    if tile_truth is not None and np.isfinite(tile_truth).any():
        clusters = ClusterResult.load(ctx.path(S.CLUSTERS))
        known = np.isfinite(tile_truth.to_numpy())
        metrics["cluster_purity"] = cluster_purity(clusters.tile_cluster[known],
                                                   tile_truth.to_numpy()[known] >= CREVASSED_FRACTION)
        metrics["n_clusters"] = int(clusters.n_clusters)
    if truth is None:
        return metrics
    shots = pd.read_parquet(ctx.path(S.RESULTS))
    merged = shots.merge(truth[["shot_id", "crevassed_fraction"]], on="shot_id", how="inner")
    ok = np.isfinite(merged["p_crevasse"].to_numpy()) & np.isfinite(merged["crevassed_fraction"].to_numpy())
    y = merged["crevassed_fraction"].to_numpy()[ok] >= CREVASSED_FRACTION
    p = merged["p_crevasse"].to_numpy()[ok]
    metrics["shots_evaluated"] = int(ok.sum())
    metrics["crevassed_share"] = float(y.mean()) if y.size else float("nan")
    metrics["auc"] = roc_auc(y, p) if 0 < y.sum() < y.size else float("nan")
    metrics["brier"] = brier(y, p) if y.size else float("nan")

    # the clean ceiling: the same pipeline on un-noised waveforms
    labels = pd.read_parquet(ctx.path(S.TILE_LABELS))["label"].to_numpy()
    index = WaveformIndex.load(ctx.path(S.INDEX), library=ctx.path(S.LIBRARY))
    k = ctx.section("match")["k"]
    valid = np.isfinite(clean).all(axis=1) & (clean.sum(axis=1) > 0)
    rows, dist = match_shots(index, clean[valid], k=k, n_threads=ctx.n_threads)
    p_clean = shot_probabilities(rows, dist, labels, weighting=ctx.section("probability")["weighting"])["p_crevasse"]
    t_clean = truth["crevassed_fraction"].to_numpy()[valid] >= CREVASSED_FRACTION
    good = np.isfinite(p_clean.to_numpy())
    if 0 < t_clean[good].sum() < good.sum():
        metrics["auc_clean"] = roc_auc(t_clean[good], p_clean.to_numpy()[good])
        metrics["brier_clean"] = brier(t_clean[good], p_clean.to_numpy()[good])

    # change-map accuracy: the truth rasterized on the same grid as the maps
    cfg = ctx.section("map")
    truth_shots = merged[ok].copy()
    truth_shots["p_crevasse"] = (truth_shots["crevassed_fraction"] >= CREVASSED_FRACTION).astype(float)
    truth_dir = ctx.path("report/truth_maps")
    all_shots = shots[np.isfinite(shots["p_crevasse"])]
    bounds = (float(all_shots["x"].min()), float(all_shots["y"].min()),
              float(all_shots["x"].max()), float(all_shots["y"].max()))
    truth_periods = rasterize(truth_shots, truth_dir, cell_size=cfg["cell_size"], period=cfg["period"],
                              min_shots=cfg["min_shots"], bounds=bounds, quicklooks=False)
    map_periods = rasterize(all_shots, ctx.path("report/eval_maps"), cell_size=cfg["cell_size"],
                            period=cfg["period"], min_shots=cfg["min_shots"], bounds=bounds, quicklooks=False)
    if len(truth_periods) > 1 and len(map_periods) > 1:
        truth_change = change_rasters(truth_periods, truth_dir, min_shots=cfg["min_shots"], quicklooks=False)
        map_change = change_rasters(map_periods, ctx.path("report/eval_maps"), min_shots=cfg["min_shots"],
                                    quicklooks=False)
        metrics["change"] = change_accuracy(map_change[0], truth_change[0])
        from ..maps import read_raster

        mapped, _ = read_raster(map_change[0])
        truth_grid, _ = read_raster(truth_change[0])
        both = np.isfinite(mapped) & np.isfinite(truth_grid)
        for name, mask in (("appeared", truth_grid > 0.25), ("vanished", truth_grid < -0.25),
                           ("unchanged", np.abs(truth_grid) <= 0.25)):
            sel = both & mask
            metrics["change"][f"mean_change_where_{name}"] = float(mapped[sel].mean()) if sel.any() else float("nan")
    return metrics


def _match_figures(ctx, out_dir: Path, n: int = 3) -> dict[str, Path]:
    """The talk's figure for a few shots: recorded, denoised, nearest library waveforms, their tiles."""
    import pandas as pd

    from ..report import plot_waveform_matches
    from ..tiles import TileStore
    from . import stages as S

    table = S._shot_table(ctx)
    library = S._library(ctx)
    raw = S._recorded_waveforms(table, int(library.metadata["n_samples"]))
    denoised_path, key = S.chosen_blend(ctx)  # the blend whose matches gave the probabilities
    denoised = np.load(ctx.path(denoised_path))
    npz = np.load(ctx.path(S.MATCHES))
    matches = {"rows": npz[f"rows{key}"], "distances": npz[f"distances{key}"]}
    labels = pd.read_parquet(ctx.path(S.TILE_LABELS))["label"].to_numpy()
    results = pd.read_parquet(ctx.path(S.RESULTS))
    store = TileStore(ctx.path(S.TILES))
    figures = {}
    order = np.argsort(-np.nan_to_num(results["p_crevasse"].to_numpy(), nan=-1))
    picks = [i for i in list(order[:n - 1]) + list(order[::-1][: n - 1]) if matches["rows"][i, 0] >= 0][:n]
    for rank, i in enumerate(picks):
        rows = matches["rows"][i, :6]
        rows = rows[rows >= 0]
        path = plot_waveform_matches(
            raw[i], denoised[i], np.asarray(library.waveforms.get_orthogonal_selection((rows, slice(None))))
            if hasattr(library.waveforms, "get_orthogonal_selection") else np.asarray(library.waveforms)[rows],
            store.read(rows), out_dir / f"match_{rank}.png", labels=[labels[r] for r in rows],
            distances=matches["distances"][i, : len(rows)].tolist(),
            title=f"shot {int(results['shot_id'].iloc[i])}: p(crevasse) = {results['p_crevasse'].iloc[i]:.2f}")
        figures[f"waveform match {rank + 1}"] = path
    return figures


def build_run_report(ctx) -> tuple[Path, int]:
    """Write ``run/report/index.html`` (+ PNGs, metrics.json); returns (path, number of figures)."""
    from ..cluster import ClusterResult
    from ..report import plot_hit_map, plot_umatrix, write_report
    from ..som import SelfOrganizingMap
    from . import stages as S

    out = ctx.path("report")
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    som = SelfOrganizingMap.load(ctx.path(S.SOM) / "som.npz")
    bmu = np.load(ctx.path(S.SOM) / "bmu.npz")["bmu"]
    figures["SOM U-matrix"] = plot_umatrix(som.umatrix(), out / "umatrix.png")
    hits = np.bincount(bmu, minlength=som.rows * som.cols).reshape(som.rows, som.cols)
    figures["SOM hit map"] = plot_hit_map(hits, out / "hit_map.png")
    clusters = ClusterResult.load(ctx.path(S.CLUSTERS))
    figures["OPTICS reachability"] = clusters.plot_reachability(out / "reachability.png")
    for png in sorted((ctx.path(S.CLUSTERS) / "label_kit" / "mosaics").glob("*.png"))[:12]:
        figures[f"mosaic {png.stem}"] = png
    for png in sorted(ctx.path("maps").glob("*.png")):
        figures[f"map {png.stem}"] = png
    try:
        figures.update(_match_figures(ctx, out))
    except Exception as exc:  # noqa: BLE001 - a figure must not sink the report
        log.warning("report: waveform-match figures failed: %s", exc)
    metrics = evaluate_run(ctx)
    if ctx.path(S.BLEND).exists():
        metrics["blend"] = json.loads(ctx.path(S.BLEND).read_text())
    metrics["stages"] = {name: (ctx.run.read_state(name) or {}).get("counts") for name in ctx.keys}
    path = write_report(ctx.run.path, metrics=metrics, figures=figures)
    return Path(path), len(figures)
