"""A plain shot table for any other source: Parquet or HDF5 with documented names.

Columns (Parquet) or 1-D datasets (HDF5, in the group ``shots`` or at the root):

===============  ==========================================================  =========
name             meaning                                                     required
===============  ==========================================================  =========
shot_id          integer, unique                                             yes
time             Parquet: timestamp (naive = UTC) or ISO string; HDF5/float:  yes
                 seconds since 1970-01-01T00:00:00 UTC (or the ``units``
                 attribute ``"seconds since <ISO instant>"``)
lon, lat         degrees WGS 84 (any longitude convention)                   lon/lat or x/y
x, y             metres in ``crs``                                           lon/lat or x/y
waveform         Parquet: list<float> per row; HDF5: 2-D (n, m) dataset,      yes
                 earliest sample first, NaN-padded
transmit         like ``waveform``                                           no
waveform_type,   as in :mod:`crevkit.shot_table` (defaults: 1 where a        no
gain, bg_mean,   waveform exists, NaN, estimated from the waveform,
bg_sd, saturated flat-top detection)
===============  ==========================================================  =========

The sample interval comes from the ``sample_interval_ns`` argument, else the
Parquet schema metadata / HDF5 attribute of that name, else 1 ns.  Any other
column is kept as an extra column.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputFileError
from ..shot_table import ShotTable
from ._common import H5File, check_path, flat_top, project, robust_background, unproject, wrap_lon

__all__ = ["read_shot_table"]

_EPOCH_1970 = np.datetime64("1970-01-01T00:00:00", "ns")


def _ragged(values: Any, p: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [np.asarray(v if v is not None else [], dtype=np.float64) for v in values]
    if any(r.ndim != 1 for r in rows):
        raise InputFileError(f"{p}: column {name} must hold one 1-D list of numbers per row")
    n_max = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), n_max), np.nan, np.float32)
    counts = np.zeros(len(rows), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        counts[i] = len(r)
    return out, counts


def _time_from_seconds(sec: np.ndarray, units: str | None, p: Path) -> pd.DatetimeIndex:
    from ._common import seconds_to_utc

    epoch = _EPOCH_1970
    if units:
        m = re.match(r"\s*seconds since\s+(.+?)\s*(UTC)?\s*$", units)
        if not m:
            raise InputFileError(f"{p}: time units {units!r} not understood (expected 'seconds since <ISO instant>')")
        epoch = np.datetime64(pd.Timestamp(m.group(1)).tz_localize(None).to_datetime64(), "ns")
    return seconds_to_utc(sec, epoch)


def read_shot_table(path: str | os.PathLike, *, sample_interval_ns: float | None = None,
                    crs: str = "EPSG:3413") -> ShotTable:
    """Read a plain shot table (Parquet or HDF5, layout in the module docstring).

    A directory written by :meth:`ShotTable.save` is read with
    :meth:`ShotTable.load`.

    Raises
    ------
    InputFileError
        Unreadable file, a missing required column, or waveforms of the wrong
        shape (the message names file and column).
    """
    p = Path(path)
    if p.is_dir():
        return ShotTable.load(p)
    p = check_path(p)
    meta_si = None
    tx = None
    if p.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            at = pq.read_table(p)
        except Exception as exc:  # pyarrow raises several types
            raise InputFileError(f"{p}: not a readable Parquet file: {exc}") from None
        md = at.schema.metadata or {}
        if b"sample_interval_ns" in md:
            meta_si = float(md[b"sample_interval_ns"])
        df = at.to_pandas()
        if "waveform" not in df.columns:
            raise InputFileError(f"{p}: column waveform is missing")
        wf, counts = _ragged(df.pop("waveform"), p, "waveform")
        if "transmit" in df.columns:
            tx, _ = _ragged(df.pop("transmit"), p, "transmit")
        time_units = None
    else:
        with H5File(p) as h:
            grp = "shots" if h.has("shots") else "/"
            pre = "shots/" if grp == "shots" else ""
            if not h.has(pre + "waveform"):
                raise InputFileError(f"{p}: dataset {pre}waveform is missing (not a plain shot table)")
            wf = np.asarray(h.read(pre + "waveform", ndim=2), dtype=np.float32)
            n = wf.shape[0]
            cols: dict[str, np.ndarray] = {}
            for name, obj in h.f[grp].items():
                if name in ("waveform", "transmit") or not hasattr(obj, "shape"):
                    continue
                if obj.ndim == 1:
                    cols[name] = h.read(pre + name, shape=(n,))
            if h.has(pre + "transmit"):
                tx = h.read(pre + "transmit", ndim=2)
                if tx.shape[0] != n:
                    raise InputFileError(f"{p}: dataset {pre}transmit has shape {tx.shape}, expected ({n}, m)")
            a = h.f[grp].attrs.get("sample_interval_ns")
            meta_si = float(a) if a is not None else None
            time_units = h.f[pre + "time"].attrs.get("units") if h.has(pre + "time") else None
            if isinstance(time_units, bytes):
                time_units = time_units.decode()
        df = pd.DataFrame(cols)
        for c in df.columns:
            if df[c].dtype == object and len(df) and isinstance(df[c].iat[0], bytes):
                df[c] = df[c].str.decode("utf-8")
        finite = np.isfinite(wf)
        counts = np.where(finite.any(axis=1), wf.shape[1] - np.argmax(finite[:, ::-1], axis=1), 0).astype(np.int32)
    n = len(df)
    for col in ("shot_id", "time"):
        if col not in df.columns:
            raise InputFileError(f"{p}: column {col} is missing")
    has_ll = "lon" in df.columns and "lat" in df.columns
    has_xy = "x" in df.columns and "y" in df.columns
    if not (has_ll or has_xy):
        raise InputFileError(f"{p}: columns lon/lat (or x/y) are missing")
    t = df["time"]
    if isinstance(t.dtype, pd.DatetimeTZDtype):
        time = t.dt.tz_convert("UTC")
    elif np.issubdtype(t.dtype, np.datetime64):
        time = t.dt.tz_localize("UTC")
    elif np.issubdtype(t.dtype, np.number):
        time = _time_from_seconds(t.to_numpy(np.float64), time_units, p)
    else:
        try:
            time = pd.to_datetime(t.astype(str), utc=True)
        except (ValueError, TypeError) as exc:
            raise InputFileError(f"{p}: column time is not understood: {exc}") from None
    df["time"] = pd.Series(time, index=df.index).astype("datetime64[ns, UTC]")
    if has_ll:
        df["lon"] = wrap_lon(df["lon"].to_numpy(np.float64))
        x, y = project(df["lon"].to_numpy(), df["lat"].to_numpy(np.float64), crs)
        if not has_xy:
            df["x"], df["y"] = x, y
    else:
        df["lon"], df["lat"] = unproject(df["x"].to_numpy(np.float64), df["y"].to_numpy(np.float64), crs)
    if "n_samples" not in df.columns:
        df["n_samples"] = counts
    if "waveform_type" not in df.columns:
        df["waveform_type"] = (df["n_samples"].to_numpy() > 0).astype(np.int8)
    if "gain" not in df.columns:
        df["gain"] = np.nan
    if "bg_mean" not in df.columns or "bg_sd" not in df.columns:
        m, s = robust_background(wf)
        df["bg_mean"] = df["bg_mean"] if "bg_mean" in df.columns else m
        df["bg_sd"] = df["bg_sd"] if "bg_sd" in df.columns else s
    if "saturated" not in df.columns:
        df["saturated"] = flat_top(wf)
    df["source"] = str(p)
    si = sample_interval_ns if sample_interval_ns is not None else (meta_si if meta_si is not None else 1.0)
    return ShotTable(df, wf, si, transmit=tx, attrs={"instrument": "table", "product": "table", "crs": crs})
