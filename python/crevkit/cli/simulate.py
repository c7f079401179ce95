"""``crevkit simulate``: tiles (.npy or Zarr) -> waveforms, streamed in batches."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command("simulate")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--instrument", default="glas", show_default=True, help="Preset: glas, lvis or gedi.")
@click.option("--pixel-size", type=float, default=0.5, show_default=True, help="Tile pixel size in metres.")
@click.option("--footprint-diameter", type=float, default=None, help="Override: 1/e² footprint diameter (m).")
@click.option("--pulse-fwhm", "pulse_fwhm_ns", type=float, default=None, help="Override: pulse FWHM (ns).")
@click.option("--n-samples", type=int, default=None, help="Override: samples per waveform.")
@click.option("--incidence/--no-incidence", default=False, show_default=True,
              help="Weight pixels by the cosine of their incidence angle.")
@click.option("--off-nadir", "off_nadir_angle", type=float, default=0.0, show_default=True,
              help="Off-nadir pointing angle (degrees), applied as a range tilt.")
@click.option("--off-nadir-azimuth", type=float, default=0.0, show_default=True,
              help="Azimuth the beam leans towards (degrees clockwise from north).")
@click.option("--batch-size", type=int, default=4096, show_default=True)
@click.option("--threads", "n_threads", type=int, default=None, help="Threads (default: all cores).")
def simulate_command(source: Path, output: Path, instrument: str, pixel_size: float, footprint_diameter, pulse_fwhm_ns,
                     n_samples, incidence: bool, off_nadir_angle: float, off_nadir_azimuth: float, batch_size: int,
                     n_threads) -> None:
    """Forward-model one waveform per tile of SOURCE (.npy or Zarr) into OUTPUT (.npy or .zarr)."""
    from ..simulate import simulate_stack

    overrides = {k: v for k, v in dict(footprint_diameter=footprint_diameter, pulse_fwhm_ns=pulse_fwhm_ns,
                                       n_samples=n_samples).items() if v is not None}
    counts = simulate_stack(source, output, pixel_size=pixel_size, instrument=instrument, batch_size=batch_size,
                            incidence_weighting=incidence, off_nadir_angle=off_nadir_angle,
                            off_nadir_azimuth=off_nadir_azimuth, n_threads=n_threads, **overrides)
    click.echo(f"wrote {output} ({counts.done} waveforms)")
