"""The shot table: one row per laser shot plus its waveform, for every reader.

A :class:`ShotTable` holds

* ``table`` — a :class:`pandas.DataFrame`, one row per shot, with at least the
  columns of :data:`REQUIRED_COLUMNS` (in that order, then reader-specific
  extras such as ``i_rec_ndx``, ``beam`` or ``elevation``):

  ==============  =======================  ==================================================
  column          dtype                    meaning
  ==============  =======================  ==================================================
  shot_id         int64                    unique per instrument (GLAS: i_rec_ndx·100 + i_shot_count)
  time            datetime64[ns, UTC]      transmit time (NaT where the source has no absolute time)
  lon, lat        float64                  degrees, WGS 84, lon in [-180, 180) (NaN = unknown)
  x, y            float64                  metres in ``crs`` (EPSG:3413 by default)
  waveform_type   int8                     0 missing, 1 long/full, 2 short (GLAS convention)
  gain            float64                  receiver gain setting (NaN where the source has none)
  bg_mean, bg_sd  float64                  background level and noise sd, waveform units
  saturated       bool                     the recorded waveform is clipped
  n_samples       int32                    valid samples of the row of ``waveforms``
  source          string                   file the shot came from
  ==============  =======================  ==================================================

* ``waveforms`` — float32 ``(n, n_max)`` on the instrument's uniform time grid
  (``sample_interval_ns`` apart), earliest sample first, NaN-padded after
  ``n_samples`` (short records) and all-NaN for missing shots;
* ``transmit`` — optional float32 ``(n, m)`` transmit pulses (NaN where missing);
* ``attrs`` — a JSON-able dict (instrument, crs, units, notes).

On disk (``save`` / ``load``) a shot table is a directory written atomically::

    shots.parquet      the table
    waveforms.npy      the waveform array (memory-mappable)
    transmit.npy       the transmit pulses, if any
    meta.json          sample intervals, attrs, row count, format version
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ._atomic import atomic_dir
from ._sidecar import read_sidecar
from .errors import CrevkitTypeError, CrevkitValueError, InputFileError

__all__ = ["ShotTable", "REQUIRED_COLUMNS", "FORMAT_VERSION", "empty_table"]

FORMAT_VERSION = 1

#: Column name -> dtype every shot table has (in this order).
REQUIRED_COLUMNS: dict[str, str] = {
    "shot_id": "int64",
    "time": "datetime64[ns, UTC]",
    "lon": "float64",
    "lat": "float64",
    "x": "float64",
    "y": "float64",
    "waveform_type": "int8",
    "gain": "float64",
    "bg_mean": "float64",
    "bg_sd": "float64",
    "saturated": "bool",
    "n_samples": "int32",
    "source": "string",
}


def empty_table(n: int) -> pd.DataFrame:
    """A table of ``n`` rows with the required columns filled with 'unknown' values."""
    nat = pd.to_datetime(np.full(n, np.iinfo(np.int64).min), unit="ns", utc=True)
    return pd.DataFrame({
        "shot_id": np.arange(n, dtype=np.int64),
        "time": nat,
        "lon": np.full(n, np.nan),
        "lat": np.full(n, np.nan),
        "x": np.full(n, np.nan),
        "y": np.full(n, np.nan),
        "waveform_type": np.zeros(n, np.int8),
        "gain": np.full(n, np.nan),
        "bg_mean": np.full(n, np.nan),
        "bg_sd": np.full(n, np.nan),
        "saturated": np.zeros(n, bool),
        "n_samples": np.zeros(n, np.int32),
        "source": pd.array([""] * n, dtype="string"),
    })


def _coerce_table(table: Any) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise CrevkitTypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CrevkitValueError(f"table lacks the required column(s) {missing}")
    out = table.copy()
    for col, dtype in REQUIRED_COLUMNS.items():
        if col == "time":
            t = out[col]
            if not isinstance(t.dtype, pd.DatetimeTZDtype):
                t = pd.to_datetime(t, utc=True)
            out[col] = t.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        elif str(out[col].dtype) != dtype:
            try:
                out[col] = out[col].astype(dtype)
            except (TypeError, ValueError) as exc:
                raise CrevkitValueError(f"table column {col!r} cannot be converted to {dtype}: {exc}") from None
    extras = [c for c in out.columns if c not in REQUIRED_COLUMNS]
    return out[list(REQUIRED_COLUMNS) + extras].reset_index(drop=True)


class ShotTable:
    """Shots (one row each) with their waveforms on a uniform time grid.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per shot with the columns of :data:`REQUIRED_COLUMNS`
        (converted to the documented dtypes) plus any extras.
    waveforms : array_like, shape (n, n_max)
        Waveforms, earliest sample first, NaN after ``n_samples``; converted
        once to float32.  ``n_max`` may be 0 (geolocation-only products).
    sample_interval_ns : float
        Spacing of the waveform samples in nanoseconds (NaN if there are none).
    transmit : array_like, shape (n, m), optional
        Transmit pulses, float32.
    transmit_interval_ns : float, optional
        Spacing of the transmit samples (default: ``sample_interval_ns``).
    attrs : dict, optional
        JSON-able metadata (instrument, crs, units, notes).
    """

    def __init__(self, table: pd.DataFrame, waveforms: Any, sample_interval_ns: float, *,
                 transmit: Any = None, transmit_interval_ns: float | None = None,
                 attrs: dict | None = None) -> None:
        self.table = _coerce_table(table)
        n = len(self.table)
        wf = np.asarray(waveforms)
        if wf.ndim != 2 or wf.shape[0] != n:
            raise CrevkitValueError(f"waveforms must have shape ({n}, n_max), got {wf.shape}")
        if not isinstance(wf, np.memmap):
            wf = np.ascontiguousarray(wf, dtype=np.float32)
        elif wf.dtype != np.float32:
            raise CrevkitTypeError(f"waveforms must be float32, got {wf.dtype}")
        self.waveforms = wf
        self.sample_interval_ns = float(sample_interval_ns)
        if transmit is not None:
            tx = np.ascontiguousarray(transmit, dtype=np.float32)
            if tx.ndim != 2 or tx.shape[0] != n:
                raise CrevkitValueError(f"transmit must have shape ({n}, m), got {tx.shape}")
            transmit = tx
        self.transmit = transmit
        self.transmit_interval_ns = (float(transmit_interval_ns) if transmit_interval_ns is not None
                                     else self.sample_interval_ns)
        self.attrs = dict(attrs or {})

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return (f"ShotTable({len(self)} shots, waveforms {self.waveforms.shape[1]} samples at "
                f"{self.sample_interval_ns:g} ns, instrument={self.attrs.get('instrument', '?')!r})")

    @property
    def n_max(self) -> int:
        """Width of the waveform array."""
        return int(self.waveforms.shape[1])

    def select(self, rows: Any) -> "ShotTable":
        """A new table with only ``rows`` (boolean mask or integer positions)."""
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise CrevkitValueError(f"row mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        tx = None if self.transmit is None else self.transmit[idx]
        return ShotTable(self.table.iloc[idx].reset_index(drop=True), np.asarray(self.waveforms[idx]),
                         self.sample_interval_ns, transmit=tx, transmit_interval_ns=self.transmit_interval_ns,
                         attrs=self.attrs)

    def valid_waveforms(self) -> np.ndarray:
        """Boolean mask of the shots that have a waveform (type ≠ 0 and ``n_samples`` > 0)."""
        return (self.table["waveform_type"].to_numpy() != 0) & (self.table["n_samples"].to_numpy() > 0)

    # ----------------------------------------------------------- concatenation
    @classmethod
    def concat(cls, tables: Sequence["ShotTable"]) -> "ShotTable":
        """Concatenate shot tables of the same instrument grid (rows in the given order).

        Waveforms are NaN-padded to the widest table; transmit pulses are kept
        only if every table has them with the same width and spacing.

        Raises
        ------
        CrevkitValueError
            No tables, or different sample intervals.
        """
        tables = list(tables)
        if not tables:
            raise CrevkitValueError("concat needs at least one ShotTable")
        for t in tables:
            if not isinstance(t, ShotTable):
                raise CrevkitTypeError(f"concat takes ShotTable objects, got {type(t).__name__}")
        with_wf = [t for t in tables if t.n_max > 0]
        intervals = {t.sample_interval_ns for t in with_wf if np.isfinite(t.sample_interval_ns)}
        if len(intervals) > 1:
            raise CrevkitValueError(f"cannot concatenate shot tables with different sample intervals {sorted(intervals)} ns")
        interval = intervals.pop() if intervals else float("nan")
        width = max(t.n_max for t in tables)
        wfs = []
        for t in tables:
            w = np.full((len(t), width), np.nan, np.float32)
            w[:, : t.n_max] = t.waveforms
            wfs.append(w)
        tx = None
        if all(t.transmit is not None for t in tables):
            widths = {t.transmit.shape[1] for t in tables}
            tint = {t.transmit_interval_ns for t in tables}
            if len(widths) == 1 and len(tint) == 1:
                tx = np.concatenate([t.transmit for t in tables])
        attrs = dict(tables[0].attrs)
        attrs["sources"] = sorted({s for t in tables for s in t.table["source"].astype(str).unique()})
        table = pd.concat([t.table for t in tables], ignore_index=True)
        return cls(table, np.concatenate(wfs) if wfs else np.zeros((0, width), np.float32), interval,
                   transmit=tx, transmit_interval_ns=tables[0].transmit_interval_ns if tx is not None else None,
                   attrs=attrs)

    # -------------------------------------------------------------------- I/O
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the table to ``directory`` atomically (see the module docstring).

        Returns
        -------
        pathlib.Path
            The directory.
        """
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            self.table.to_parquet(tmp / "shots.parquet", index=False)
            np.save(tmp / "waveforms.npy", np.asarray(self.waveforms, dtype=np.float32))
            if self.transmit is not None:
                np.save(tmp / "transmit.npy", self.transmit)
            meta = {
                "format": "crevkit-shot-table",
                "format_version": FORMAT_VERSION,
                "n_shots": len(self),
                "n_max": self.n_max,
                "sample_interval_ns": None if not np.isfinite(self.sample_interval_ns) else self.sample_interval_ns,
                "transmit_interval_ns": (self.transmit_interval_ns if self.transmit is not None
                                         and np.isfinite(self.transmit_interval_ns) else None),
                "attrs": self.attrs,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, *, mmap: bool = False) -> "ShotTable":
        """Read a shot table written by :meth:`save`.

        Parameters
        ----------
        directory : path
            The directory.
        mmap : bool
            Memory-map the waveform array read-only instead of loading it.

        Raises
        ------
        InputFileError
            A missing or inconsistent part (the message names it).
        """
        directory = Path(directory)
        meta = read_sidecar(directory / "meta.json", fmt="crevkit-shot-table", what="shot table",
                            missing="not a shot table (meta.json is missing)", version_key="format_version",
                            max_version=FORMAT_VERSION)
        try:
            table = pd.read_parquet(directory / "shots.parquet")
        except Exception as exc:  # pyarrow raises several types
            raise InputFileError(f"{directory / 'shots.parquet'}: unreadable ({exc})") from None
        try:
            wf = np.load(directory / "waveforms.npy", mmap_mode="r" if mmap else None)
        except (OSError, ValueError) as exc:
            raise InputFileError(f"{directory / 'waveforms.npy'}: unreadable ({exc})") from None
        if len(table) != meta["n_shots"] or wf.shape != (meta["n_shots"], meta["n_max"]):
            raise InputFileError(f"{directory}: shots.parquet has {len(table)} rows and waveforms.npy shape "
                                 f"{wf.shape}, meta.json says {meta['n_shots']} × {meta['n_max']}")
        tx = None
        if (directory / "transmit.npy").exists():
            tx = np.load(directory / "transmit.npy")
        si = meta.get("sample_interval_ns")
        return cls(table, wf, float("nan") if si is None else si, transmit=tx,
                   transmit_interval_ns=meta.get("transmit_interval_ns"), attrs=meta.get("attrs", {}))

    # ---------------------------------------------------------------- helpers
    def time_ordered_waveform(self, i: int) -> np.ndarray:
        """The valid samples of shot ``i`` (a view without the NaN padding)."""
        n = int(self.table["n_samples"].iat[i])
        return np.asarray(self.waveforms[i, :n])


def concat(tables: Iterable[ShotTable]) -> ShotTable:
    """Alias of :meth:`ShotTable.concat`."""
    return ShotTable.concat(list(tables))
