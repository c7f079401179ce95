"""``crevkit bench``: run the benchmarks and print (or write) the results table."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import main


@main.command("bench")
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run in seconds, not for reporting.")
@click.option("--only", default=None, help="Comma-separated areas (forward,tiles,readers,index,denoise,features,som,distributed).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the markdown to this file (atomically), e.g. bench/RESULTS.md.")
def bench_command(quick: bool, only: str | None, output: Path | None) -> None:
    """Benchmark the kernels against their NumPy twins and peer libraries."""
    from .._atomic import atomic_write_text
    from ..benchmarks import AREAS, run_all
    from ..errors import CrevkitValueError

    areas = None
    if only:
        areas = [a.strip() for a in only.split(",") if a.strip()]
        unknown = sorted(set(areas) - set(AREAS))
        if unknown:
            raise CrevkitValueError(f"--only: unknown area(s) {unknown}; choose from {AREAS}")
    command = "crevkit bench" + (" --quick" if quick else "") + (f" --only {only}" if only else "")
    text = run_all(areas, quick=quick, command=command)
    click.echo(text)
    if output is not None:
        atomic_write_text(output, text)
        click.echo(f"wrote {output}", err=True)
    sys.stdout.flush()
