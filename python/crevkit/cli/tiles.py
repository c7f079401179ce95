"""``crevkit tile`` (DEM frames -> tile store) and ``crevkit export-tiles`` (store -> GeoTIFFs)."""

from __future__ import annotations

import click

from . import main


@main.command("tile")
@click.argument("frames", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--out", "store_dir", required=True, type=click.Path(file_okay=False),
              help="Tile store folder (the run directory's tiles/).")
@click.option("--resolution", type=float, default=0.5, show_default=True, help="Output pixel size (m).")
@click.option("--tile-size", "tile_size_m", type=float, default=100.0, show_default=True, help="Tile edge (m).")
@click.option("--crs", default=None, help="Run CRS (default: the store's, else EPSG:3413).")
@click.option("--reproject", is_flag=True, help="Warp frames in another CRS instead of refusing them.")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Tiles per commit / Zarr shard.")
@click.option("--workers", "n_workers", type=int, default=1, show_default=True, help="Threads cutting frames.")
@click.option("--memory-budget-mb", type=float, default=256.0, show_default=True,
              help="Bound on one window's working arrays.")
@click.option("--strict", is_flag=True, help="Stop at the first frame that fails instead of skipping it.")
def tile(frames: tuple[str, ...], store_dir: str, resolution: float, tile_size_m: float, crs: str | None,
         reproject: bool, batch_size: int, n_workers: int, memory_budget_mb: float, strict: bool) -> None:
    """Cut DEM GeoTIFF FRAMES (files or folders) into zero-mean tiles in a tile store."""
    from ..tiles import tile_frames

    counts = tile_frames(list(frames), store_dir, resolution=resolution, tile_size_m=tile_size_m, crs=crs,
                         reproject=reproject, batch_size=batch_size, n_workers=n_workers,
                         memory_budget_mb=memory_budget_mb, on_error="raise" if strict else "skip")
    for path, msg in counts.errors.items():
        click.echo(f"failed: {msg}", err=True)
    ex = counts.extra
    click.echo(f"tile: found {counts.found}, written {ex['written']}, duplicate {ex['duplicate']}, "
               f"skipped-nodata {ex['skipped_nodata']}, failed frames {ex['frames_failed']} "
               f"(of {ex['frames']}; {ex['frames_already_done']} already tiled)")


@main.command("export-tiles")
@click.argument("store_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--limit", type=int, default=None, help="Export only the first N tiles.")
def export_tiles_cmd(store_dir: str, out_dir: str, limit: int | None) -> None:
    """Write one GeoTIFF per tile of STORE_DIR into OUT_DIR, named by its hash."""
    import numpy as np

    from ..tiles import TileStore, export_tiles

    rows = None if limit is None else np.arange(min(limit, len(TileStore(store_dir))))
    counts = export_tiles(store_dir, out_dir, rows=rows)
    click.echo(f"export-tiles: {counts.done} written, {counts.skipped} already there, to {out_dir}")
