"""Helpers shared by the readers: fill values, times, projection, HDF5 access."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputFileError

__all__ = [
    "FLOAT_FILL_MIN", "INT32_FILL", "INT8_FILL", "GLAS_EPOCH", "GEDI_EPOCH",
    "mask_float", "mask_int", "seconds_to_utc", "wrap_lon", "project", "unproject",
    "robust_background", "flat_top", "H5File", "check_path",
]

FLOAT_FILL_MIN = 1e30          #: floats at or above this are fills (GLAS: 1.797e308 or 3.4e38)
INT32_FILL = 2147483647        #: GLAS int32 fill
INT8_FILL = 127                #: GLAS int8 fill
GLAS_EPOCH = np.datetime64("2000-01-01T12:00:00", "ns")   #: GLAS J2000 time origin (UTC)
GEDI_EPOCH = np.datetime64("2018-01-01T00:00:00", "ns")   #: GEDI delta_time origin (UTC)


def check_path(path: Any, name: str = "path") -> Path:
    """Return ``path`` as a Path that exists, or raise :class:`InputFileError`."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputFileError(f"{name} must be a file path, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: file does not exist")
    if p.is_dir():
        raise InputFileError(f"{p}: is a directory, expected a file")
    return p


def mask_float(a: np.ndarray) -> np.ndarray:
    """float64 copy with fills (≥ 1e30 in magnitude, or non-finite) set to NaN."""
    out = np.asarray(a, dtype=np.float64).copy()
    with np.errstate(invalid="ignore"):
        out[~np.isfinite(out) | (np.abs(out) >= FLOAT_FILL_MIN)] = np.nan
    return out


def mask_int(a: np.ndarray, fill: int | None = None) -> np.ndarray:
    """float64 copy with the integer fill (int32 2147483647, int8 127 by dtype) set to NaN."""
    a = np.asarray(a)
    if fill is None:
        fill = INT8_FILL if a.dtype.itemsize == 1 else INT32_FILL
    out = a.astype(np.float64)
    out[a == fill] = np.nan
    return out


def seconds_to_utc(seconds: np.ndarray, epoch: np.datetime64) -> pd.DatetimeIndex:
    """``epoch + seconds`` as datetime64[ns, UTC]; NaN seconds become NaT."""
    s = np.asarray(seconds, dtype=np.float64)
    ns = np.full(s.shape, np.iinfo(np.int64).min, dtype=np.int64)
    ok = np.isfinite(s)
    ns[ok] = np.round(s[ok] * 1e9).astype(np.int64) + epoch.astype("datetime64[ns]").astype(np.int64)
    return pd.to_datetime(ns, unit="ns", utc=True)


def wrap_lon(lon: np.ndarray) -> np.ndarray:
    """Longitudes (any convention, e.g. 0–360 east) into [-180, 180)."""
    lon = np.asarray(lon, dtype=np.float64)
    return (lon + 180.0) % 360.0 - 180.0


@functools.lru_cache(maxsize=16)
def _transformer(src: str, dst: str):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def project(lon: np.ndarray, lat: np.ndarray, crs: str = "EPSG:3413") -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 lon/lat (degrees) -> ``crs`` x/y (metres); NaN stays NaN."""
    lon = np.asarray(lon, np.float64)
    lat = np.asarray(lat, np.float64)
    x = np.full(lon.shape, np.nan)
    y = np.full(lon.shape, np.nan)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if ok.any():
        x[ok], y[ok] = _transformer("EPSG:4326", str(crs)).transform(lon[ok], lat[ok])
    return x, y


def unproject(x: np.ndarray, y: np.ndarray, crs: str = "EPSG:3413") -> tuple[np.ndarray, np.ndarray]:
    """``crs`` x/y -> WGS 84 lon (in [-180, 180)) / lat; NaN stays NaN."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    lon = np.full(x.shape, np.nan)
    lat = np.full(x.shape, np.nan)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.any():
        lon[ok], lat[ok] = _transformer(str(crs), "EPSG:4326").transform(x[ok], y[ok])
    return wrap_lon(lon), lat


def robust_background(waveforms: np.ndarray, n_sigma: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-row background mean and sd from the samples near the median.

    The median and the MAD (× 1.4826) of each row give a first guess; the mean
    and sd of the samples within ``n_sigma`` of it are returned.  A return that
    covers less than half of the record does not bias it.  Rows without two
    finite samples give NaN.
    """
    w = np.asarray(waveforms, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] == 0:
        n = w.shape[0] if w.ndim >= 1 else 0
        return np.full(n, np.nan), np.full(n, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(w, axis=1)
            mad = np.nanmedian(np.abs(w - med[:, None]), axis=1) * 1.4826
            # quantized data (8-bit counts) can have MAD 0: fall back to the sd of the lower half
            lo = np.where(w <= med[:, None], w, np.nan)
            sd_lo = np.sqrt(np.nanmean((lo - med[:, None]) ** 2, axis=1))
            mad = np.where(mad > 0, mad, sd_lo)
            mad = np.where(mad > 0, mad, 1e-12)
            keep = np.abs(w - med[:, None]) <= n_sigma * mad[:, None]
            vals = np.where(keep, w, np.nan)
            mean = np.nanmean(vals, axis=1)
            sd = np.nanstd(vals, axis=1, ddof=1)
    few = np.sum(np.isfinite(vals), axis=1) < 2
    mean[few] = np.nan
    sd[few] = np.nan
    return mean, sd


def flat_top(waveforms: np.ndarray, *, min_run: int = 3, rel_tol: float = 1e-4,
             level: float | None = None) -> np.ndarray:
    """True for rows clipped at the top.

    With ``level`` (a digitizer's maximum code), a row is clipped when it
    reaches it; otherwise when at least ``min_run`` samples lie within
    ``rel_tol`` (relative) of the row maximum.
    """
    w = np.asarray(waveforms, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] == 0:
        return np.zeros(w.shape[0] if w.ndim else 0, bool)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mx = np.nanmax(w, axis=1)
    if level is not None:
        return np.nan_to_num(mx, nan=-np.inf) >= level
    tol = rel_tol * np.maximum(1.0, np.abs(np.nan_to_num(mx)))
    near = np.nan_to_num(w, nan=-np.inf) >= (mx - tol)[:, None]
    return near.sum(axis=1) >= min_run


class H5File:
    """An h5py file opened read-only whose errors name the file and dataset."""

    def __init__(self, path: Path) -> None:
        import h5py

        self.path = path
        try:
            self.f = h5py.File(path, "r")
        except OSError as exc:
            raise InputFileError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from None

    def __enter__(self) -> "H5File":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.f.close()

    def has(self, name: str) -> bool:
        try:
            return name in self.f
        except Exception:  # broken links
            return False

    def find(self, basename: str, under: str = "/") -> str | None:
        """Path of the first dataset called ``basename`` below ``under`` (depth-first)."""
        import h5py

        if not self.has(under):
            return None
        found: list[str] = []

        def visit(name: str, obj: Any) -> Any:
            if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] == basename:
                found.append(name)
                return True
            return None

        self.f[under].visititems(visit)
        if not found:
            return None
        return (under.rstrip("/") + "/" + found[0]).lstrip("/") if under != "/" else found[0]

    def read(self, name: str, *, shape: tuple | None = None, ndim: int | None = None) -> np.ndarray:
        """Read dataset ``name``; raise :class:`InputFileError` if it is missing, unreadable or misshapen.

        ``shape`` entries of ``None`` match any length.
        """
        import h5py

        if not self.has(name):
            raise InputFileError(f"{self.path}: dataset {name} is missing")
        obj = self.f[name]
        if not isinstance(obj, h5py.Dataset):
            raise InputFileError(f"{self.path}: {name} is a group, expected a dataset")
        if ndim is not None and obj.ndim != ndim:
            raise InputFileError(f"{self.path}: dataset {name} has shape {obj.shape}, expected {ndim} dimension(s)")
        if shape is not None:
            if obj.ndim != len(shape) or any(s is not None and s != o for s, o in zip(shape, obj.shape)):
                want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
                raise InputFileError(f"{self.path}: dataset {name} has shape {obj.shape}, expected {want}")
        try:
            return obj[()]
        except (OSError, RuntimeError, ValueError) as exc:
            raise InputFileError(f"{self.path}: dataset {name} is unreadable (truncated file?): {exc}") from None

    def attr(self, group: str, name: str) -> Any:
        if not self.has(group) or name not in self.f[group].attrs:
            raise InputFileError(f"{self.path}: attribute {name} of {group} is missing")
        try:
            return self.f[group].attrs[name]
        except (OSError, RuntimeError) as exc:
            raise InputFileError(f"{self.path}: attribute {group}/{name} is unreadable: {exc}") from None

    def root_attr_str(self, name: str) -> str:
        v = self.f.attrs.get(name)
        if v is None:
            return ""
        if isinstance(v, np.ndarray):
            v = v.ravel()[0] if v.size else ""
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        return str(v)
