"""Pure-NumPy twins of every C++ kernel: the baselines kernels are tested and benchmarked against.

Each twin has the public wrapper's signature and implements the same
algorithm in float64, without the performance tricks.  The SOM twin is the
submodule ``crevkit.reference.som`` (imported on first use: it needs
``crevkit.som``); the index re-rank twin is ``crevkit.reference.index``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .features import dct_compress, dct_decompress, normalize_tiles
from .forward import simulate_waveforms

__all__ = ["simulate_waveforms", "normalize_tiles", "dct_compress", "dct_decompress"]

_SUBMODULES = ("som", "index")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
