"""``crevkit shots``, ``crevkit synth-shots`` and ``crevkit noise-model``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from . import main

log = logging.getLogger("crevkit")


@main.command("shots")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output shot-table directory.")
@click.option("--geolocation", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="GLAH06/12/14 file(s) with precise positions for GLAH01 shots.")
@click.option("--crs", default="EPSG:3413", show_default=True, help="CRS of the x/y columns.")
@click.option("--time-origin", default=None, help="UTC instant of LVIS time stamp 0 (the file has no date).")
def shots(inputs: tuple[str, ...], out_dir: str, geolocation: tuple[str, ...], crs: str,
          time_origin: str | None) -> None:
    """Read waveform files (GLAH01, GLAH06, LVIS .pls, GEDI L1B, tables) into one shot table.

    A file that cannot be read is reported and counted as failed; the others go on.
    """
    from ..errors import InputFileError

    from ..readers import read_files

    table, counts, errors = read_files(list(inputs), geolocation=geolocation, crs=crs, time_origin=time_origin)
    for e in errors:
        click.echo(f"failed: {e}", err=True)
    if table is None:
        click.echo(counts.line())
        raise InputFileError("no input file gave shots with waveforms")
    table.save(out_dir)
    click.echo(counts.line())


@main.command("synth-shots")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--scene-seed", type=int, default=0, show_default=True, help="Seed of the synthetic scene.")
@click.option("--epoch", type=int, default=0, show_default=True, help="Scene campaign (0, 1, ...).")
@click.option("--tracks", "n_tracks", type=int, default=6, show_default=True, help="Number of ground tracks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shots.")
@click.option("--year", type=int, default=2004, show_default=True, help="Year of the shot times.")
@click.option("--noise-model", "noise_model", type=click.Path(exists=True, file_okay=False), default=None,
              help="Noise model directory (default: white Gaussian noise).")
def synth_shots(out_dir: str, scene_seed: int, epoch: int, n_tracks: int, seed: int, year: int,
                noise_model: str | None) -> None:
    """Write synthetic GLAS shots (GLAH01 layout + GLAH06-like + truth) over a synthetic scene."""
    from ..scenes import make_scene
    from ..synth_shots import synthesize_shots

    noise = None
    if noise_model is not None:
        from ..noise import NoiseModel

        noise = NoiseModel.load(noise_model)
    scene = make_scene(seed=scene_seed, epoch=epoch)
    paths = synthesize_shots(scene, out_dir, n_tracks=n_tracks, seed=seed, year=year, noise=noise)
    import pandas as pd

    n = len(pd.read_parquet(paths.truth))
    click.echo(f"synth-shots: wrote {n} shots: {paths.glah01.name}, {paths.glah06.name}, {paths.truth.name}")


@main.command("noise-model")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output noise-model directory.")
@click.option("--n-samples", type=int, default=544, show_default=True, help="Library waveform length.")
@click.option("--scale", type=click.Choice(["area", "peak"]), default="area", show_default=True)
@click.option("--min-snr", type=float, default=10.0, show_default=True)
@click.option("--vector-length", type=int, default=64, show_default=True)
@click.option("--max-vectors", type=int, default=2_000_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def noise_model(inputs: tuple[str, ...], out_dir: str, n_samples: int, scale: str, min_snr: float,
                vector_length: int, max_vectors: int, seed: int) -> None:
    """Fit an empirical noise model to recorded waveforms (any reader's files or a shot table)."""
    from ..errors import InputFileError
    from ..noise import NoiseModel

    from ..readers import read_files

    table, counts, errors = read_files(list(inputs))
    for e in errors:
        click.echo(f"failed: {e}", err=True)
    if table is None:
        raise InputFileError("no input file gave waveforms for the noise model")
    model = NoiseModel.fit(table, n_samples=n_samples, scale=scale, min_snr=min_snr, vector_length=vector_length,
                           max_vectors=max_vectors, seed=seed)
    model.save(Path(out_dir))
    click.echo(json.dumps(model.summary(), indent=2))
    click.echo(counts.line())
