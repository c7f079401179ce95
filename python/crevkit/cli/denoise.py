"""``crevkit train-denoiser`` and ``crevkit denoise``: train the learned denoiser, then apply it to shots."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command("train-denoiser")
@click.argument("library", type=click.Path(exists=True, path_type=Path))
@click.argument("noise_model", metavar="NOISE_MODEL")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--steps", "n_steps", type=int, default=None, help="Training steps (default: the Denoiser default).")
@click.option("--batch-size", type=int, default=None, help="Waveforms per step.")
@click.option("--learning-rate", type=float, default=None, help="Peak learning rate (one-cycle schedule).")
@click.option("--width", type=int, default=None, help="Channels of the widest layers.")
@click.option("--loss", type=click.Choice(["sqrt", "mse", "mixed"]), default=None,
              help="Training loss (default: sqrt, the matching space).")
@click.option("--neighbour-weight", type=float, default=None,
              help="Weight of the label-free neighbourhood term (default: the Denoiser default; 0: off).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", "n_threads", type=int, default=None,
              help="Torch CPU threads (default: all cores; set OMP_WAIT_POLICY=PASSIVE on shared machines).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--checkpoint-every", type=int, default=None, help="Also save a checkpoint every N steps.")
def train_denoiser_command(library: Path, noise_model: str, output: Path, n_steps, batch_size, learning_rate, width,
                           loss, neighbour_weight, seed: int, n_threads, device: str, checkpoint_every) -> None:
    """Train a denoiser on LIBRARY waveforms (.npy or Zarr) with NOISE_MODEL, save it to OUTPUT.

    NOISE_MODEL is a directory written by the noise model stage, or
    "synthetic" for the parametric model (white noise, SNR 5-100).
    """
    import numpy as np

    from .._stack_io import open_stack
    from ..denoise import Denoiser
    from ..noise import NoiseModel

    model_noise = NoiseModel.synthetic() if noise_model == "synthetic" else NoiseModel.load(noise_model)
    waves = np.asarray(open_stack(library, "library"))
    params = {k: v for k, v in dict(n_steps=n_steps, batch_size=batch_size, learning_rate=learning_rate, width=width,
                                    loss=loss, neighbour_weight=neighbour_weight).items() if v is not None}
    den = Denoiser(seed=seed, n_threads=n_threads, device=device, **params)
    den.fit(waves, model_noise, checkpoint=output, checkpoint_every=checkpoint_every)
    h = den.history_
    click.echo(f"wrote {output} ({den.n_parameters_} parameters, {den.config['n_steps']} steps, "
               f"validation loss {h['val_loss'][-1]:.5f}, {h['train_seconds']:.1f} s)")


@main.command("denoise")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--threads", "n_threads", type=int, default=None, help="Torch CPU threads (default: all cores).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--blend", type=click.Choice(["floor", "max", "none"]), default=None,
              help="Blend with a noise-floored matched filter: floor, max (keeps the network's weak tail) or "
                   "none (default: the model's, floor).")
def denoise_command(model: Path, source: Path, output: Path, batch_size: int, n_threads, device: str,
                    blend: str | None) -> None:
    """Denoise and de-shift the shots in SOURCE (.npy or Zarr, n × samples) into OUTPUT (.npy)."""
    from ..denoise import Denoiser

    den = Denoiser.load(model, device=device, n_threads=n_threads)
    counts = den.transform_stack(source, output, batch_size=batch_size, blend=blend)
    click.echo(f"wrote {output} ({counts.done} waveforms, {counts.failed} not finite)")


@main.command("library-copies")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("library", type=click.Path(exists=True, path_type=Path))
@click.argument("noise_model", metavar="NOISE_MODEL")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the copies' index (pass it to `crevkit match --copies`).")
@click.option("--snrs", default=None,
              help="Peak SNRs of the copies, e.g. '14,30,70' (default: crevkit.denoise.COPY_SNRS).")
@click.option("--blend", type=click.Choice(["floor", "max", "none"]), default=None,
              help="Blend the copies are denoised with: the shots' (default: the model's, floor).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", "n_threads", type=int, default=None, help="Threads (default: all cores).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def library_copies_command(model: Path, library: Path, noise_model: str, index_dir: Path, out_dir: Path,
                           snrs: str | None, blend: str | None, seed: int, n_threads, device: str) -> None:
    """Index LIBRARY's noisy copies, denoised by MODEL, in the matching space of INDEX_DIR (LIBRARY's index).

    LIBRARY is a .npy / Zarr stack or a library directory; NOISE_MODEL a noise
    model file or "synthetic".  Denoised shots matched with `crevkit match
    INDEX_DIR --copies OUT` meet each tile as the denoiser makes it too.
    """
    import numpy as np

    from .._stack_io import open_stack
    from ..denoise import COPY_SNRS, Denoiser, noisy_library_copies
    from ..index import IndexWithCopies, WaveformIndex
    from ..noise import NoiseModel

    levels = COPY_SNRS
    if snrs:
        try:
            levels = tuple(float(v) for v in snrs.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got {snrs!r}", param_hint="--snrs") from None
    model_noise = NoiseModel.synthetic() if noise_model == "synthetic" else NoiseModel.load(noise_model)
    if library.is_dir() and (library / "library.json").exists():
        from ..library import open_library

        waves = np.asarray(open_library(library).waveforms[:], np.float32)
        check = library  # the index must come from this library: its recorded hash
    else:
        waves = check = np.asarray(open_stack(library, "library"), np.float32)
    den = Denoiser.load(model, device=device, n_threads=n_threads)
    copies = den.transform(noisy_library_copies(waves, model_noise, levels, seed=seed), blend=blend)
    both = IndexWithCopies.build(WaveformIndex.load(index_dir, library=check), copies, n_threads=n_threads)
    both.copies.save(out_dir)
    click.echo(f"wrote {out_dir} ({both.copies.count} copies, {both.n_copies} per library row)")
