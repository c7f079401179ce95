"""Open DEM frames with rasterio (GDAL), check them and repair known defects.

:func:`open_frame` returns a :class:`DemFrame`: the open dataset (or a
``WarpedVRT`` over it when reprojection was asked for) plus what was learnt
and repaired, so the tiler only ever sees float32 elevations with NaN for
nodata, in the run's CRS, on a north-up grid, read by windows.

Repairs (each logged once per frame at WARNING level, naming the file):

- IceBridge L3 (IODMS3) float bytes tagged as uint32 (or int32): detected by
  sampling (the bytes read as float32 are plausible elevations, as integers
  they are not) and reinterpreted as float32.
- Missing CRS: assumed to be the run's CRS (EPSG:3413 by default, the
  IceBridge north convention; pass ``crs`` for another, e.g. EPSG:3031).
- Missing nodata tag: -32767 (the IceBridge convention).

Besides the declared nodata value, NaN, infinities and values beyond
±1e30 (e.g. the -3.4e38 of the Longyearbyen DEM) are treated as nodata.

Refused with a clear error (:class:`crevkit.InputFileError`, naming the file):
unreadable / corrupt / non-raster files, multi-band rasters, rotated or
non-north-up transforms, integer-class rasters (land cover, masks), and
frames in another CRS than the run's unless ``reproject=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CrevkitValueError, InputFileError

__all__ = ["DemFrame", "open_frame", "file_key", "DEFAULT_CRS", "ICEBRIDGE_NODATA"]

log = logging.getLogger("crevkit.dem")

DEFAULT_CRS = "EPSG:3413"
ICEBRIDGE_NODATA = -32767.0
_HUGE = 1e30


def file_key(path: str | os.PathLike, *, sample: int = 1 << 16) -> str:
    """Fingerprint of a frame file (blake2b-128, hex): the identity under which resume skips it.

    Hashes the size, the modification time (ns) and the first and last 64 KiB
    (GeoTIFF headers and tile offsets).  Any rewrite or edit changes the
    mtime, so a changed file is never skipped; an identical copy under another
    name is re-cut, and its tiles collapse as duplicates.
    """
    st = os.stat(path)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(sample))
        if st.st_size > sample:
            fh.seek(max(sample, st.st_size - sample))
            h.update(fh.read(sample))
    return h.hexdigest()


@dataclasses.dataclass
class DemFrame:
    """An open, checked DEM frame, read by windows in the run's CRS.

    Attributes
    ----------
    path : pathlib.Path
    dataset : rasterio dataset (or WarpedVRT) to read windows from
    crs : rasterio.crs.CRS
        The run's CRS (the frame's own one, or the one assumed or warped to).
    transform : affine.Affine
        North-up transform of ``dataset``.
    width, height : int
    pixel_size : float
        Source pixel size (x, metres) in the run's CRS.
    nodata : float
        Nodata value (declared, or the assumed -32767).
    float_bytes : bool
        Whether the pixels are float32 bytes tagged as an integer type.
    repairs : list of str
        What was repaired: ``"float-bytes"``, ``"crs"``, ``"nodata"``, ``"reprojected"``.
    """

    path: Path
    dataset: Any
    crs: Any
    transform: Any
    width: int
    height: int
    pixel_size: float
    pixel_size_y: float
    nodata: float
    float_bytes: bool
    repairs: list[str]
    _base: Any = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the run's CRS."""
        t = self.transform
        return (t.c, t.f + self.height * t.e, t.c + self.width * t.a, t.f)

    def read(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """Read ``[row0:row1, col0:col1]`` (clipped by the caller) as float32 with NaN for nodata."""
        from rasterio.windows import Window

        try:
            a = self.dataset.read(1, window=Window(col0, row0, col1 - col0, row1 - row0))
        except Exception as exc:  # rasterio raises several classes for damaged blocks
            raise InputFileError(f"{self.path}: cannot read rows {row0}-{row1}, columns {col0}-{col1}: {exc}") from exc
        if self.float_bytes:
            a = np.ascontiguousarray(a).view(np.float32)
        else:
            a = a.astype(np.float32, copy=False)
        bad = (a == np.float32(self.nodata)) | ~(np.abs(a) < _HUGE)
        if bad.any():
            a = a.copy() if not a.flags.writeable else a
            a[bad] = np.nan
        return a

    def close(self) -> None:
        """Close the dataset (and the file under a WarpedVRT)."""
        for ds in (self.dataset, self._base):
            if ds is not None:
                try:
                    ds.close()
                except Exception:  # pragma: no cover - closing twice is harmless
                    pass

    def __enter__(self) -> "DemFrame":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _looks_like_float_bytes(ds: Any) -> bool:
    """Sample a few blocks: are these integers really float32 elevation bytes?"""
    from rasterio.windows import Window

    h, w = ds.height, ds.width
    samples = []
    for fy, fx in ((0.5, 0.5), (0.25, 0.25), (0.75, 0.75), (0.25, 0.75), (0.75, 0.25)):
        r0 = max(0, int(fy * h) - 32)
        c0 = max(0, int(fx * w) - 32)
        win = Window(c0, r0, min(64, w - c0), min(64, h - r0))
        samples.append(np.ascontiguousarray(ds.read(1, window=win)).ravel())
    raw = np.concatenate(samples)
    if raw.dtype.itemsize != 4 or raw.size == 0 or not raw.any():
        return False
    f = raw.view(np.float32)
    ok = np.isfinite(f) & (np.abs(f) < 1e5) & ((np.abs(f) > 1e-20) | (f == 0))
    return bool(ok.mean() > 0.95)


def open_frame(path: str | os.PathLike, *, crs: Any = None, reproject: bool = False) -> DemFrame:
    """Open a single-band DEM GeoTIFF for tiling in the run's CRS, repairing known defects.

    Parameters
    ----------
    path : path
        The frame file.
    crs : str or CRS, optional
        The run's CRS; default EPSG:3413.  A frame without a CRS is assumed to be in it.
    reproject : bool
        Warp a frame in another CRS to the run's (bilinear, GDAL ``WarpedVRT``);
        without it such a frame is refused.

    Returns
    -------
    DemFrame

    Raises
    ------
    InputFileError
        Unreadable, corrupt or non-raster file; multi-band; rotated or not
        north-up; integer-class raster; CRS mismatch without ``reproject``.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    import warnings

    path = Path(path)
    try:
        run_crs = CRS.from_user_input(crs if crs is not None else DEFAULT_CRS)
    except Exception as exc:
        raise CrevkitValueError(f"crs {crs!r} is not a CRS rasterio understands: {exc}") from None
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputFileError(f"{path}: not a readable raster (corrupt, truncated or another format): {exc}") from None
    except Exception as exc:  # pragma: no cover - GDAL error classes vary
        raise InputFileError(f"{path}: cannot open: {exc}") from None
    try:
        return _check(ds, path, run_crs, reproject, crs is not None, Resampling)
    except BaseException:
        ds.close()
        raise


def _check_complete(ds: Any, path: Path) -> None:
    """A GeoTIFF whose blocks point past the end of the file is truncated: refuse it up front."""
    if ds.driver != "GTiff":
        return
    size = path.stat().st_size
    bh, bw = ds.block_shapes[0]
    ny = -(-ds.height // bh)
    nx = -(-ds.width // bw)
    step = max(1, (nx * ny) // 20_000)  # very large rasters: check a regular sample of blocks
    for k in range(0, nx * ny, step):
        x, y = k % nx, k // nx
        off = ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1)
        if not off:
            continue  # sparse block
        n = ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1) or 0
        if int(off) + int(n) > size:
            raise InputFileError(f"{path}: truncated: block ({x}, {y}) ends at byte {int(off) + int(n)}, "
                                 f"the file has {size} bytes")


def _check(ds: Any, path: Path, run_crs: Any, reproject: bool, user_crs: bool, Resampling: Any) -> DemFrame:
    repairs: list[str] = []
    _check_complete(ds, path)
    if ds.count != 1:
        raise InputFileError(f"{path}: has {ds.count} bands; a DEM frame must have exactly one (elevation)")
    t = ds.transform
    if t.b != 0.0 or t.d != 0.0:
        raise InputFileError(f"{path}: rotated/sheared geotransform {tuple(t)[:6]} is not supported; "
                             "warp it north-up first (gdalwarp)")
    if not (t.a > 0 and t.e < 0) or (t.a == 1.0 and t.e == 1.0 and t.c == 0.0 and t.f == 0.0):
        raise InputFileError(f"{path}: not a north-up georeferenced grid (transform {tuple(t)[:6]}); "
                             "warp it north-up first")
    dtype = np.dtype(ds.dtypes[0])
    float_bytes = False
    if np.issubdtype(dtype, np.integer):
        if dtype.itemsize == 4 and _looks_like_float_bytes(ds):
            float_bytes = True
            repairs.append("float-bytes")
            log.warning("%s: float32 elevations stored under a %s sample format (IceBridge L3 quirk); "
                        "reinterpreting the bytes as float32", path, dtype)
        else:
            raise InputFileError(f"{path}: integer-class raster ({dtype}) is not an elevation model; "
                                 "crevkit tiles float elevations only")
    elif not np.issubdtype(dtype, np.floating):
        raise InputFileError(f"{path}: unsupported sample type {dtype}")
    nodata = ds.nodata
    if nodata is None or float_bytes:
        if float_bytes and nodata is not None:
            pass  # a nodata tag on integer bytes is meaningless; use the IceBridge value
        nodata = ICEBRIDGE_NODATA
        repairs.append("nodata")
        log.warning("%s: no usable nodata tag; assuming %g (IceBridge convention)", path, ICEBRIDGE_NODATA)
    frame_crs = ds.crs
    if frame_crs is None:
        repairs.append("crs")
        log.warning("%s: no CRS; assuming %s (%s)", path, run_crs.to_string(),
                    "the run's CRS" if user_crs else "the IceBridge L3 north default")
        frame_crs = run_crs
    base = None
    dataset = ds
    if frame_crs != run_crs:
        if not reproject:
            raise InputFileError(f"{path}: frame is in {frame_crs.to_string()} but the run's CRS is "
                                 f"{run_crs.to_string()}; pass crs='{frame_crs.to_string()}' to tile it in its "
                                 "own CRS, or reproject=True (--reproject) to warp it")
        if float_bytes:
            raise InputFileError(f"{path}: cannot reproject a frame whose float bytes are tagged as integers; "
                                 "fix its sample format first")
        from rasterio.vrt import WarpedVRT

        base = ds
        dataset = WarpedVRT(ds, crs=run_crs, resampling=Resampling.bilinear, src_nodata=nodata,
                            nodata=float(nodata))
        repairs.append("reprojected")
        log.warning("%s: warped from %s to %s (bilinear)", path, frame_crs.to_string(), run_crs.to_string())
        t = dataset.transform
    return DemFrame(path=path, dataset=dataset, crs=run_crs, transform=t, width=dataset.width,
                    height=dataset.height, pixel_size=float(t.a), pixel_size_y=float(-t.e), nodata=float(nodata),
                    float_bytes=float_bytes, repairs=repairs, _base=base)
