"""``crevkit synth``: write a synthetic crevassed scene (frames + truth) to a folder."""

from __future__ import annotations

import click

from . import main


@main.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of everything random.")
@click.option("--length", "length_m", type=float, default=10_000.0, show_default=True, help="Strip length (m).")
@click.option("--width", "width_m", type=float, default=1_000.0, show_default=True, help="Strip width (m).")
@click.option("--frames", "n_frames", type=int, default=12, show_default=True, help="Frames along the strip.")
@click.option("--density", "crevasse_density", type=float, default=0.3, show_default=True,
              help="Share of the strip covered by crevasse fields.")
@click.option("--epoch", type=int, default=0, show_default=True, help="Campaign (0, 1, ...).")
@click.option("--icebridge-quirks", is_flag=True, help="Write frames with the IceBridge L3 defects.")
def synth(out_dir: str, seed: int, length_m: float, width_m: float, n_frames: int, crevasse_density: float,
          epoch: int, icebridge_quirks: bool) -> None:
    """Write a synthetic glacier scene's GeoTIFF frames and truth masks to OUT_DIR."""
    from ..scenes import make_scene

    scene = make_scene(seed=seed, length_m=length_m, width_m=width_m, n_frames=n_frames,
                       crevasse_density=crevasse_density, epoch=epoch)
    paths = scene.write_frames(out_dir, icebridge_quirks=icebridge_quirks)
    px = sum(f.width * f.height for f in scene.frames)
    click.echo(f"synth: wrote {len(paths)} frames ({px / 1e6:.1f} Mpx) and truth masks to {out_dir}")
