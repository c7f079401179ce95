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


def npz_member(path: str | Path, name: str) -> np.ndarray:
    """One array of an uncompressed ``.npz`` (``np.savez``), memory-mapped read-only.

    ``np.load`` reads a whole ``.npz`` member into memory; a distributed task
    that needs a few rows of a 3-million-row match table maps it instead.
    """
    import zipfile

    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{name}.npy")
        except KeyError:
            raise InputFileError(f"{path}: no array {name!r} (has {', '.join(zf.namelist())})") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise InputFileError(f"{path}: array {name!r} is compressed; cannot map it")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if local[:4] != b"PK\x03\x04":
            raise InputFileError(f"{path}: damaged zip header for {name!r}")
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")
