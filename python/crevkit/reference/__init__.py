"""Pure-NumPy twins of every C++ kernel: the baselines kernels are tested and benchmarked against."""

from __future__ import annotations

import importlib
from typing import Any

# twin modules, imported on first use (crevkit.reference.som needs crevkit.som)
_SUBMODULES = ("som",)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
