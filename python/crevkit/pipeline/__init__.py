"""The whole pipeline: config, run directory, resumable stages."""

from .config import load_config, template, validate_config
from .runner import Context, Stage, run_pipeline, stage_names

__all__ = ["load_config", "validate_config", "template", "run_pipeline", "Stage", "Context", "stage_names"]
