"""Open a stack of arrays (``.npy`` memory-mapped, or a Zarr array) without loading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputFileError

__all__ = ["open_stack"]


def open_stack(path: str | Path, name: str = "path") -> Any:
    """Return an array-like (NumPy memmap or Zarr array) for ``path``.

    ``.npy`` files are memory-mapped read-only; a directory is opened as a
    Zarr array (or as the ``tiles.zarr`` array of a tile store directory).
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{name}: {path} does not exist")
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise InputFileError(f"{name}: {path} is not a readable .npy file ({exc})") from None
    if path.is_dir():
        import zarr

        target = path / "tiles.zarr" if (path / "tiles.zarr").exists() else path
        try:
            return zarr.open_array(str(target), mode="r")
        except Exception as exc:  # zarr raises several unrelated types
            raise InputFileError(f"{name}: {target} is not a readable Zarr array ({exc})") from None
    raise InputFileError(f"{name}: {path} is neither a .npy file nor a Zarr directory")
