"""``crevkit features``: tile store -> normalized, DCT-compressed feature matrix."""

from __future__ import annotations

import click

from . import main


@main.command("features")
@click.argument("tiles", type=click.Path(exists=True))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--pixel-size", type=float, default=0.5, show_default=True, help="Tile pixel size (m).")
@click.option("--keep", type=str, default=None,
              help="Coefficients kept: an integer count (5000) or a fraction with a decimal point "
                   "(0.25) [default: 0.25].")
@click.option("--tolerance", type=float, default=None,
              help="Instead of --keep: height tolerance (m), e.g. 0.15; K is chosen once on a sample.")
@click.option("--metric", type=click.Choice(["max", "rms"]), default="max", show_default=True,
              help="Error bounded by --tolerance.")
@click.option("--orient/--no-orient", default=True, show_default=True,
              help="Also turn the dominant gradient direction to a fixed axis.")
@click.option("--fill", type=click.Choice(["edge", "zero"]), default="edge", show_default=True,
              help="Pixels outside the disc: rim value along the ray, or 0.")
@click.option("--iterations", type=int, default=3, show_default=True, help="Re-rasterization fixed-point steps.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Tiles per batch / Zarr chunk.")
@click.option("--sample", type=int, default=256, show_default=True, help="Tiles sampled for --tolerance.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of that sample.")
@click.option("--index", "index_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="index.parquet with tile_id (default: found beside the tile store).")
@click.option("--threads", type=int, default=0, show_default=True, help="OpenMP threads (0 = all cores).")
def features_command(tiles, out_dir, pixel_size, keep, tolerance, metric, orient, fill, iterations, batch_size,
                     sample, seed, index_path, threads):
    """Normalize and DCT-compress every tile of TILES (Zarr array/group or .npy) into OUT_DIR.

    Writes OUT_DIR/features.zarr (float32, one row per tile) and
    OUT_DIR/features.parquet (plane slope/aspect and reconstruction errors per tile).
    """
    from ..features import write_features

    keep_value = None
    if keep is not None:
        try:
            keep_value = int(keep)
        except ValueError:
            try:
                keep_value = float(keep)
            except ValueError:
                raise click.BadParameter(f"not a count or a fraction: {keep!r}", param_hint="--keep") from None
    counts = write_features(tiles, out_dir, pixel_size=pixel_size, keep=keep_value, tolerance=tolerance,
                            metric=metric, orient=orient, fill=fill, iterations=iterations, batch_size=batch_size,
                            sample=sample, seed=seed, index=index_path, n_threads=threads)
    click.echo(counts.line())
