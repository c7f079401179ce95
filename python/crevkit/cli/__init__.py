"""The ``crevkit`` command line: one thin click command per pipeline step.

Each command parses its options, calls one library function and prints a
summary.  Any :class:`crevkit.CrevkitError` becomes a one-line ``Error:``
message and exit status 1, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from .. import __version__
from ..errors import CrevkitError

# modules under crevkit.cli that each add their commands to ``main``
_COMMAND_MODULES = [
    "pipeline",  # init, run, demo
    "scenes",  # synth
    "tiles",  # tile, export-tiles
    "simulate",
    "index",  # library, index, match, evaluate-matching
    "shots",  # shots, synth-shots, noise-model
    "denoise",  # train-denoiser, denoise
    "features",
    "som",
    "postprocess",  # cluster, label, probability, map, report
    "bench",
]


class CrevkitGroup(click.Group):
    """A click group that reports crevkit errors on one line."""

    def invoke(self, ctx: click.Context):  # noqa: D102
        try:
            return super().invoke(ctx)
        except CrevkitError as exc:
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


@click.group(cls=CrevkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(version=__version__, prog_name="crevkit")
def main(verbose: int, quiet: bool) -> None:
    """crevkit: crevasse maps from satellite laser waveforms."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
