"""Waveform readers: every format becomes one :class:`crevkit.shot_table.ShotTable`.

=========================  ==============================================  ==========================
reader                     format                                          module
=========================  ==============================================  ==========================
:func:`read_glah01`        ICESat GLAS GLAH01 raw waveforms (HDF5)         :mod:`.glas`
:func:`read_glah06`        GLAS GLAH06/12/14 geolocation (no waveform)     :mod:`.glas`
:func:`read_lvis`          LVIS PulseWaves ``.pls`` + ``.wvs``             :mod:`.lvis`
:func:`read_gedi_l1b`      GEDI L1B (HDF5)                                 :mod:`.gedi`
:func:`read_shot_table`    plain Parquet / HDF5 table, or a saved table    :mod:`.table`
:func:`read_shots`         any of the above, by content                    here
=========================  ==============================================  ==========================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputFileError
from ..shot_table import ShotTable
from ._common import check_path
from .gedi import read_gedi_l1b
from .glas import read_glah01, read_glah06, read_glas_geolocation
from .lvis import read_lvis
from .table import read_shot_table

__all__ = ["read_glah01", "read_glah06", "read_glas_geolocation", "read_lvis", "read_gedi_l1b",
           "read_shot_table", "read_shots", "read_files", "detect_format", "ShotTable"]

_HDF5_SIG = b"\x89HDF\r\n\x1a\n"


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path``: "glah01", "glah06" (any GLAS product without waveforms),
    "lvis", "gedi_l1b", "table" or "shot_table_dir".

    Raises
    ------
    InputFileError
        A file of none of these formats.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "meta.json").exists():
            return "shot_table_dir"
        raise InputFileError(f"{p}: a directory that is not a saved shot table")
    p = check_path(p)
    with open(p, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PulseWavesPulse"):
        return "lvis"
    if head.startswith(b"PAR1") or p.suffix.lower() in (".parquet", ".pq"):
        return "table"
    if head[:8] == _HDF5_SIG:
        from ._common import H5File

        with H5File(p) as h:
            if h.has("Data_40HZ/Waveform/RecWaveform/r_rng_wf"):
                return "glah01"
            if h.has("Data_40HZ/Geolocation/d_lat"):
                return "glah06"
            if any(k.startswith("BEAM") for k in h.f.keys()):
                return "gedi_l1b"
            if h.has("shots/waveform") or h.has("waveform"):
                return "table"
        raise InputFileError(f"{p}: HDF5 file of an unknown layout (no GLAS Data_40HZ, GEDI BEAM* or shot table)")
    if p.suffix.lower() == ".wvs":
        raise InputFileError(f"{p}: a PulseWaves waves file; give its .pls file")
    raise InputFileError(f"{p}: unknown file format (not HDF5, PulseWaves or Parquet)")


def read_shots(path: str | os.PathLike, **kwargs: Any) -> ShotTable:
    """Read any supported file (see :func:`detect_format`) with the matching reader.

    Keyword arguments go to that reader (``crs`` to all; ``geolocation`` to
    GLAH01; ``time_origin`` to LVIS; ``beams`` to GEDI; ``sample_interval_ns``
    to plain tables).  A GLAH06-like file gives its geolocation-only table.
    """
    fmt = detect_format(path)
    crs = kwargs.pop("crs", "EPSG:3413")
    keep = {
        "glah01": ("geolocation",), "glah06": (), "lvis": ("time_origin", "waves"),
        "gedi_l1b": ("beams",), "table": ("sample_interval_ns",), "shot_table_dir": (),
    }[fmt]
    kw = {k: v for k, v in kwargs.items() if k in keep and v is not None}
    if fmt == "glah01":
        return read_glah01(path, crs=crs, **kw)
    if fmt == "glah06":
        return read_glah06(path, crs=crs)
    if fmt == "lvis":
        return read_lvis(path, crs=crs, **kw)
    if fmt == "gedi_l1b":
        return read_gedi_l1b(path, crs=crs, **kw)
    if fmt == "shot_table_dir":
        return ShotTable.load(path)
    return read_shot_table(path, crs=crs, **kw)


def read_files(inputs: Any, *, geolocation: Any = (), crs: str = "EPSG:3413", time_origin: Any = None):
    """Read several files into one shot table, counting found / done / skipped / failed.

    GLAS geolocation-only files (GLAH06/12/14) among the inputs (and those in
    ``geolocation``) are joined to every GLAH01 file and counted as skipped; a
    file that fails to read is counted as failed and its message kept, the
    others go on.

    Returns
    -------
    (ShotTable or None, StageCounts, list of str)
        The concatenated table (None if no file gave shots), the counts and
        the error messages (each names its file).
    """
    import logging

    from .._progress import StageCounts, progress
    from ..errors import CrevkitError

    log = logging.getLogger("crevkit.readers")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [str(p) for p in inputs]
    if isinstance(geolocation, (str, os.PathLike)):
        geolocation = [geolocation]
    counts = StageCounts("shots", found=len(inputs))
    errors: list[str] = []
    formats: dict[str, str] = {}
    for path in inputs:
        try:
            formats[path] = detect_format(path)
        except CrevkitError as exc:
            formats[path] = "bad"
            errors.append(str(exc))
    geo = [str(g) for g in geolocation] + [p for p in inputs if formats[p] == "glah06"]
    geo_ranges = {g: _record_range(g) for g in geo}
    tables = []
    for path in progress(inputs, desc="shots", unit="file"):
        fmt = formats[path]
        if fmt == "bad":
            counts.failed += 1
            continue
        if fmt == "glah06":
            counts.skipped += 1
            log.info("shots: %s is a geolocation-only product (no raw waveform); used as geolocation", path)
            continue
        geo_file = _matching_geolocation(path, geo_ranges) if fmt == "glah01" else None
        if fmt == "glah01" and geo and geo_file is None:
            log.warning("shots: no geolocation file covers the records of %s; interpolating 1 Hz positions", path)
        try:
            tables.append(read_shots(path, geolocation=geo_file, crs=crs, time_origin=time_origin))
            counts.done += 1
        except CrevkitError as exc:
            counts.failed += 1
            errors.append(str(exc))
    table = ShotTable.concat(tables) if tables else None
    if table is not None:
        counts.extra["shots"] = len(table)
    return table, counts, errors


_REC_NDX = "Data_40HZ/Time/i_rec_ndx"


def _record_range(path: str) -> tuple[int, int] | None:
    """(min, max) of a GLAS file's record index, ignoring fills; None if unreadable."""
    import h5py
    import numpy as np

    try:
        with h5py.File(path, "r") as h:
            rec = np.asarray(h[_REC_NDX][...], dtype=np.int64)
    except (OSError, KeyError):
        return None
    rec = rec[(rec != 2147483647) & (rec > 0)]
    return (int(rec.min()), int(rec.max())) if rec.size else None


def _matching_geolocation(path: str, geo_ranges: dict[str, tuple[int, int] | None]) -> str | None:
    """The geolocation file whose record range overlaps ``path``'s the most (several
    campaigns can be given at once; each GLAH01 file is joined to its own)."""
    own = _record_range(path)
    if own is None:
        return None
    best, best_overlap = None, 0
    for geo, rng in geo_ranges.items():
        if rng is None:
            continue
        overlap = min(own[1], rng[1]) - max(own[0], rng[0]) + 1
        if overlap > best_overlap:
            best, best_overlap = geo, overlap
    return best
