"""``crevkit cluster``, ``crevkit label kit|apply``, ``crevkit probability``, ``crevkit map``, ``crevkit report``.

Thin wrappers over :mod:`crevkit.cluster`, :mod:`crevkit.labels`,
:mod:`crevkit.probability`, :mod:`crevkit.maps` and :mod:`crevkit.report`
taking explicit file paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import main


def _load_array(path: str, key: str) -> "object":
    import numpy as np

    from ..errors import InputFileError

    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p) as z:
                if key not in z.files:
                    raise InputFileError(f"{p}: no array {key!r} (has {z.files})")
                return z[key]
        if p.suffix == ".parquet":
            import pandas as pd

            df = pd.read_parquet(p)
            if key not in df.columns:
                raise InputFileError(f"{p}: no column {key!r}")
            return df[key].to_numpy()
        return np.load(p)
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{p}: cannot read {key}: {exc}") from None


@main.command("cluster")
@click.argument("codebook", type=click.Path(exists=True, dir_okay=False))
@click.argument("bmu", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (the run directory's clusters/).")
@click.option("--min-samples", type=int, default=2, show_default=True, help="OPTICS min_samples.")
@click.option("--xi", type=float, default=0.02, show_default=True, help="OPTICS xi (cluster-edge steepness).")
@click.option("--min-cluster-size", type=float, default=2, show_default=True,
              help="Smallest cluster: fraction of points (<1) or count.")
@click.option("--use", type=click.Choice(["codebook", "positions", "both"]), default="codebook", show_default=True)
@click.option("--attach", type=click.Choice(["codebook", "map", "none"]), default="codebook", show_default=True,
              help="How OPTICS noise nodes get a cluster.")
@click.option("--seed", type=int, default=0, show_default=True)
def cluster_cmd(codebook: str, bmu: str, out_dir: str, min_samples: int, xi: float, min_cluster_size: float,
                use: str, attach: str, seed: int) -> None:
    """Cluster a SOM with OPTICS.

    CODEBOOK: .npy (rows, cols, D) or .npz with 'codebook'; BMU: .npy, .npz or .parquet with 'bmu'.
    """
    from ..cluster import cluster_som

    mcs = int(min_cluster_size) if min_cluster_size >= 1 else min_cluster_size
    res = cluster_som(_load_array(codebook, "codebook"), _load_array(bmu, "bmu"), min_samples=min_samples, xi=xi,
                      min_cluster_size=mcs, use=use, attach=None if attach == "none" else attach, seed=seed)
    res.save(out_dir)
    res.plot_reachability(Path(out_dir) / "reachability.png")
    click.echo(f"cluster: {res.n_clusters} clusters, {int((res.node_cluster < 0).sum())} noise nodes "
               f"({int(res.tile_attached.sum())} tiles attached), {res.tile_cluster.size} tiles -> {out_dir}")


@main.group("label")
def label_group() -> None:
    """Label clusters: write a label kit (mosaics + templates), then apply the filled CSV."""


@label_group.command("kit")
@click.argument("clusters_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("tile_store", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--per-cluster", type=int, default=16, show_default=True, help="Tiles per mosaic.")
@click.option("--suggest", is_flag=True, help="Pre-fill suggested_label with the depression rule.")
@click.option("--seed", type=int, default=0, show_default=True)
def label_kit_cmd(clusters_dir: str, tile_store: str, out_dir: str, per_cluster: int, suggest: bool, seed: int) -> None:
    """Write mosaics and label templates for the clusters in CLUSTERS_DIR (tiles from TILE_STORE)."""
    from ..cluster import ClusterResult
    from ..labels import write_label_kit
    from ..tiles import TileStore

    res = ClusterResult.load(clusters_dir)
    store = TileStore(tile_store)
    kit = write_label_kit(out_dir, store.read, store.index["tile_id"].to_numpy(), res.tile_cluster,
                          per_cluster=per_cluster, suggestion="rule" if suggest else None, seed=seed,
                          resolution=store.resolution)
    click.echo(f"label kit: {len(kit['mosaics'])} mosaics, fill {kit['clusters_template']} "
               f"or {kit['tiles_template']}")


@label_group.command("apply")
@click.argument("labels_csv", type=click.Path(exists=True, dir_okay=False))
@click.argument("clusters_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("tile_store", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="tile_labels.parquet (row, tile_id, cluster, label).")
@click.option("--classes", default=None, help="Comma-separated label words (default crevasse,other,ridge,basin,...).")
def label_apply_cmd(labels_csv: str, clusters_dir: str, tile_store: str, out_path: str, classes: str | None) -> None:
    """Spread the labels of LABELS_CSV (cluster_id,label or tile_id,label) to every tile."""
    import numpy as np
    import pandas as pd

    from .._atomic import atomic_path
    from ..cluster import ClusterResult
    from ..labels import read_labels
    from ..tiles import TileStore

    res = ClusterResult.load(clusters_dir)
    ids = TileStore(tile_store).index["tile_id"].to_numpy()
    labels = read_labels(labels_csv, ids, res.tile_cluster,
                         classes=None if classes is None else [c.strip() for c in classes.split(",")])
    df = pd.DataFrame({"row": np.arange(ids.size, dtype=np.int64), "tile_id": ids, "cluster": res.tile_cluster,
                       "label": labels.astype(str)})
    with atomic_path(out_path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    counts = df["label"].value_counts().to_dict()
    click.echo("label: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" -> {out_path}")


@main.command("probability")
@click.argument("matches", type=click.Path(exists=True, dir_okay=False))
@click.argument("tile_labels", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Output Parquet (the run's results/shots.parquet).")
@click.option("--shots", "shots_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Shot table (Parquet) whose shot_id/time/lon/lat/x/y columns are copied, row for row.")
@click.option("--weighting", type=click.Choice(["uniform", "inverse_distance", "softmax"]), default="uniform",
              show_default=True)
@click.option("--temperature", type=float, default=0.02, show_default=True, help="Softmax temperature.")
@click.option("--distance-scale", type=float, default=0.1, show_default=True, help="Confidence distance scale.")
def probability_cmd(matches: str, tile_labels: str, out_path: str, shots_path: str | None, weighting: str,
                    temperature: float, distance_scale: float) -> None:
    """p(crevasse) per shot from MATCHES (.npz: rows, distances) and TILE_LABELS (Parquet column 'label', by row)."""
    import pandas as pd

    from .._atomic import atomic_path
    from ..errors import InputFileError
    from ..probability import shot_probabilities

    rows = _load_array(matches, "rows")
    dist = _load_array(matches, "distances")
    labels = _load_array(tile_labels, "label")
    res = shot_probabilities(rows, dist, labels, weighting=weighting, temperature=temperature,
                             distance_scale=distance_scale)
    if shots_path is not None:
        shots = pd.read_parquet(shots_path)
        if len(shots) != len(res):
            raise InputFileError(f"{shots_path}: {len(shots)} shots, but {matches} has {len(res)} rows")
        keep = [c for c in ("shot_id", "time", "lon", "lat", "x", "y") if c in shots.columns]
        res = pd.concat([shots[keep].reset_index(drop=True), res], axis=1)
    with atomic_path(out_path, suffix=".parquet") as tmp:
        res.to_parquet(tmp, index=False)
    click.echo(f"probability: {len(res)} shots, {int(res['p_crevasse'].notna().sum())} with a probability "
               f"-> {out_path}")


@main.command("map")
@click.argument("shots", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--cell-size", type=float, default=1000.0, show_default=True, help="Cell edge (m).")
@click.option("--period", type=click.Choice(["year", "season", "all"]), default="year", show_default=True)
@click.option("--min-shots", type=int, default=3, show_default=True)
@click.option("--bounds", type=float, nargs=4, default=None, help="xmin ymin xmax ymax (m).")
@click.option("--crs", default="EPSG:3413", show_default=True)
@click.option("--change/--no-change", default=True, show_default=True, help="Also write consecutive change rasters.")
def map_cmd(shots: str, out_dir: str, cell_size: float, period: str, min_shots: int, bounds, crs: str,
            change: bool) -> None:
    """Probability rasters (COG) per period from SHOTS (Parquet with x, y, time, p_crevasse)."""
    import pandas as pd

    from ..maps import change_rasters, rasterize

    df = pd.read_parquet(shots)
    paths = rasterize(df, out_dir, cell_size=cell_size, period=period, bounds=bounds or None, min_shots=min_shots,
                      crs=crs)
    changes = change_rasters(paths, out_dir, min_shots=min_shots) if change and len(paths) > 1 else []
    click.echo(f"map: {len(paths)} probability raster(s), {len(changes)} change raster(s) -> {out_dir}")


@main.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--metrics", "metrics_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="metrics JSON (default: none, no evaluation table).")
def report_cmd(run_dir: str, metrics_path: str | None) -> None:
    """Write RUN_DIR/report/index.html from the PNGs found in the run directory."""
    from ..errors import InputFileError
    from ..report import write_report

    metrics = {}
    if metrics_path is not None:
        try:
            metrics = json.loads(Path(metrics_path).read_text())
        except ValueError as exc:
            raise InputFileError(f"{metrics_path}: not valid JSON: {exc}") from None
    path = write_report(run_dir, metrics=metrics)
    click.echo(f"report: {path}")
