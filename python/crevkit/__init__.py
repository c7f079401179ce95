"""crevkit: crevasse maps from satellite laser waveforms.

The public API is imported lazily so that ``import crevkit`` stays fast and
does not pull in PyTorch, Dask or GDAL until a function that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ConfigError,
    CrevkitError,
    CrevkitTypeError,
    CrevkitValueError,
    IndexIntegrityError,
    InputFileError,
    RunLockedError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    # forward model
    "simulate_waveforms": "crevkit.simulate",
    "footprint_weights": "crevkit.simulate",
    "transmit_pulse": "crevkit.simulate",
    "Instrument": "crevkit.instruments",
    "get_instrument": "crevkit.instruments",
    "INSTRUMENTS": "crevkit.instruments",
    # scenes and tiles
    "make_scene": "crevkit.scenes",
    "tile_frames": "crevkit.tiles",
    "TileStore": "crevkit.tiles",
    "export_tiles": "crevkit.tiles",
    # features and SOM
    "normalize_tiles": "crevkit.features",
    "dct_compress": "crevkit.features",
    "dct_decompress": "crevkit.features",
    "write_features": "crevkit.features",
    "SelfOrganizingMap": "crevkit.som",
    # matching
    "WaveformIndex": "crevkit.index",
    "IndexWithCopies": "crevkit.index",
    "align_waveforms": "crevkit.index",
    # shots, noise, denoiser
    "read_glah01": "crevkit.readers",
    "read_glah06": "crevkit.readers",
    "read_lvis": "crevkit.readers",
    "read_gedi_l1b": "crevkit.readers",
    "read_shot_table": "crevkit.readers",
    "read_shots": "crevkit.readers",
    "ShotTable": "crevkit.shot_table",
    "synthesize_shots": "crevkit.synth_shots",
    "NoiseModel": "crevkit.noise",
    "Denoiser": "crevkit.denoise",
    "noisy_library_copies": "crevkit.denoise",
    # matching results -> maps
    "build_library": "crevkit.library",
    "open_library": "crevkit.library",
    "match_shots": "crevkit.index",
    "cluster_som": "crevkit.cluster",
    "read_labels": "crevkit.labels",
    "shot_probabilities": "crevkit.probability",
    "rasterize": "crevkit.maps",
    "change_rasters": "crevkit.maps",
    "write_report": "crevkit.report",
    "run_pipeline": "crevkit.pipeline",
}

__all__ = sorted(
    list(_LAZY)
    + [
        "CrevkitError",
        "CrevkitValueError",
        "CrevkitTypeError",
        "InputFileError",
        "IndexIntegrityError",
        "ConfigError",
        "RunLockedError",
        "__version__",
    ]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crevkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
