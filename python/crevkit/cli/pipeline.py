"""``crevkit init`` and ``crevkit run``: the whole pipeline from one config."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command("init")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path), default="crevkit.yaml")
def init_command(config: Path) -> None:
    """Write a commented CONFIG template (every key at its default)."""
    from .._atomic import atomic_write_text
    from ..errors import ConfigError
    from ..pipeline import template

    if config.exists():
        raise ConfigError(f"{config} exists; not overwriting it")
    atomic_write_text(config, template())
    click.echo(f"wrote {config}")


@main.command("run")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from", "from_stage", default=None, help="Recompute from this stage on.")
@click.option("--until", default=None, help="Stop after this stage.")
@click.option("--force", is_flag=True, help="Recompute every stage.")
@click.option("--scheduler", default=None,
              help="'local', a Dask scheduler address, 'slurm' or 'pbs' (overrides cluster.scheduler).")
def run_command(config: Path, from_stage, until, force: bool, scheduler) -> None:
    """Run (or resume) the pipeline described by CONFIG."""
    from ..pipeline import run_pipeline

    results = run_pipeline(config, from_stage=from_stage, until=until, force=force, scheduler=scheduler)
    for counts in results:
        click.echo(counts.line())


@main.command("demo")
@click.option("--run-dir", "root", type=click.Path(file_okay=False, path_type=Path), default="demo-run",
              show_default=True, help="Folder for the demo's inputs, config and run directory.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--small", is_flag=True, help="A tiny scene (a minute or two; what the tests run).")
@click.option("--scheduler", default=None, help="Run the batch stages on this Dask scheduler (address, slurm, pbs).")
def demo_command(root: Path, seed: int, small: bool, scheduler) -> None:
    """Synthetic scene, two campaigns, the whole pipeline, and an HTML report."""
    from ..demo import run_demo

    report = run_demo(root, seed=seed, small=small, scheduler=scheduler)
    click.echo(f"report: {report.resolve()}")
