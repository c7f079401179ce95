"""``crevkit som``: train a self-organizing map on a feature matrix; write the map and a per-sample BMU table."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


def _open_features(path: Path, dataset: str | None):
    """A .npy file (memory-mapped) or a Zarr array / group member, without reading it into memory."""
    from ..errors import InputFileError

    if not path.exists():
        raise InputFileError(f"{path}: no such feature file")
    if path.suffix == ".npy":
        import numpy as np

        try:
            return np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise InputFileError(f"{path}: not a readable .npy matrix ({exc})") from None
    try:
        import zarr

        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for "not a store"
        raise InputFileError(f"{path}: neither a .npy file nor a Zarr store ({exc})") from None
    if hasattr(node, "shape"):
        if dataset:
            raise InputFileError(f"{path}: is a Zarr array; --dataset {dataset!r} applies to groups only")
        return node
    if not dataset:
        names = sorted(getattr(node, "array_keys", lambda: [])())
        raise InputFileError(f"{path}: is a Zarr group; choose an array with --dataset (arrays: {names})")
    try:
        return node[dataset]
    except KeyError:
        raise InputFileError(f"{path}: Zarr group has no array {dataset!r}") from None


@main.command("som")
@click.argument("features", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: som.npz (the map) and bmu.parquet (one row per sample).")
@click.option("--dataset", default=None, help="Array inside a Zarr group.")
@click.option("--rows", type=int, default=20, show_default=True)
@click.option("--cols", type=int, default=20, show_default=True)
@click.option("--topology", type=click.Choice(["rectangular", "hexagonal"]), default="rectangular",
              show_default=True)
@click.option("--toroidal", is_flag=True)
@click.option("--neighborhood", type=click.Choice(["gaussian", "bubble"]), default="gaussian", show_default=True)
@click.option("--radius0", type=float, default=None, help="Initial radius (default: half the map's extent).")
@click.option("--radius-final", type=float, default=1.0, show_default=True)
@click.option("--cooling", type=click.Choice(["linear", "exponential"]), default="linear", show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--init", "init", type=click.Choice(["pca", "sample"]), default="pca", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", "n_threads", type=int, default=None, help="OpenMP threads (default: all cores).")
@click.option("--chunk-rows", type=int, default=240, show_default=True)
def som_command(features: Path, output: Path, dataset: str | None, **params) -> None:
    """Train a SOM on FEATURES (.npy matrix or Zarr array, samples x features)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .._atomic import atomic_path
    from .._progress import StageCounts
    from ..som import SelfOrganizingMap

    X = _open_features(features, dataset)
    som = SelfOrganizingMap(**params).fit(X)
    output.mkdir(parents=True, exist_ok=True)
    som.save(output / "som.npz")
    bmu, second, d1, _ = som._search(X)
    rc = som.node_coordinates(bmu)
    table = pa.table({
        "sample": np.arange(len(bmu), dtype=np.int64),
        "bmu": bmu,
        "row": rc[:, 0],
        "col": rc[:, 1],
        "distance": d1,
        "second": second,
    })
    with atomic_path(output / "bmu.parquet") as tmp:
        pq.write_table(table, tmp)
    n = len(bmu)
    counts = StageCounts("som", found=n, done=n, extra={
        "nodes": som.n_nodes,
        "quantization_error": f"{float(np.mean(d1, dtype=np.float64)):.6g}",
        "topographic_error": f"{som._count_non_adjacent(bmu, second, som.rows, som.cols) / n:.4f}"
        if som.n_nodes > 1 else "nan",
    })
    click.echo(counts.line())
    click.echo(f"wrote {output / 'som.npz'} and {output / 'bmu.parquet'}")
