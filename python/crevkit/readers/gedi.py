"""GEDI L1B geolocated waveforms (HDF5).

Per beam group ``BEAMxxxx``: ``rxwaveform`` is one flat array sliced per shot
by ``rx_sample_start_index`` (1-based) and ``rx_sample_count``; ``txwaveform``
likewise by ``tx_sample_start_index`` / ``tx_sample_count`` (128 samples);
``shot_number``, ``delta_time`` (seconds since 2018-01-01T00:00:00 UTC),
``geolocation/{latitude,longitude,elevation}_{bin0,lastbin}`` (first and
last sample), ``noise_mean_corrected`` / ``noise_stddev_corrected``.  Samples
are 1 ns apart and stored earliest first.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import InputFileError
from ..shot_table import ShotTable
from ._common import GEDI_EPOCH, H5File, check_path, flat_top, mask_float, project, seconds_to_utc, wrap_lon

__all__ = ["read_gedi_l1b"]

_SLICE_FIELDS = ("rx_sample_start_index", "rx_sample_count")


def _slices(h: H5File, beam: str, flat: str, start_name: str, count_name: str, n: int) -> list[np.ndarray]:
    data = h.read(f"{beam}/{flat}", ndim=1)
    start = h.read(f"{beam}/{start_name}", shape=(n,)).astype(np.int64)
    count = h.read(f"{beam}/{count_name}", shape=(n,)).astype(np.int64)
    if (start < 1).any():
        raise InputFileError(f"{h.path}: dataset {beam}/{start_name} has a value below 1 (it is 1-based)")
    end = start - 1 + count
    if (count < 0).any() or (end > data.shape[0]).any():
        i = int(np.argmax(end > data.shape[0]))
        raise InputFileError(f"{h.path}: dataset {beam}/{flat} has {data.shape[0]} samples but shot {i} needs "
                             f"samples {start[i]}..{end[i]} ({beam}/{start_name}, {beam}/{count_name})")
    return [data[s - 1: e] for s, e in zip(start, end)]


def read_gedi_l1b(path: str | os.PathLike, *, beams: Sequence[str] | None = None,
                  crs: str = "EPSG:3413") -> ShotTable:
    """Read GEDI L1B waveforms of all (or some) beams into one shot table.

    Parameters
    ----------
    path : path
        The ``GEDI01_B_*.h5`` file.
    beams : sequence of str, optional
        Beam group names (``"BEAM0101"``...); default all groups named ``BEAM*``.
    crs : str
        CRS of the ``x``/``y`` columns (default EPSG:3413).

    Returns
    -------
    ShotTable
        Waveforms (digitizer counts, 1 ns, NaN-padded to the longest shot),
        transmit pulses (128 samples).  ``shot_id`` = ``shot_number``;
        ``time`` = 2018-01-01 UTC + ``delta_time``; lon/lat/elevation where the
        beam is at the waveform's highest sample (linear between bin0 and
        lastbin); ``bg_mean``/``bg_sd`` = ``noise_mean_corrected`` /
        ``noise_stddev_corrected``; ``gain`` NaN; ``saturated``: a flat top.
        Extra columns ``beam`` (group name), ``elevation``, ``delta_time``.
        For the real subset in ``data/real``: 7 beams, 300 shots, 749–1417
        samples, lat −13.750 to −13.720, lon −44.140 to −44.110,
        2019-04-18T08:21:59–08:22:00 UTC.

    Raises
    ------
    InputFileError
        No beam group, a missing or misshapen dataset, slices outside the
        flat waveform arrays (the message names file and dataset).
    """
    p = check_path(path)
    frames = []
    rx_all: list[np.ndarray] = []
    tx_all: list[np.ndarray] = []
    with H5File(p) as h:
        names = [k for k in h.f.keys() if k.startswith("BEAM")] if beams is None else list(beams)
        if not names:
            raise InputFileError(f"{p}: no BEAM* group (not a GEDI L1B file)")
        for beam in names:
            if not h.has(beam):
                raise InputFileError(f"{p}: beam group {beam} is missing")
            shot = h.read(f"{beam}/shot_number", ndim=1)
            n = shot.shape[0]
            if n == 0:
                continue
            dt = mask_float(h.read(f"{beam}/delta_time", shape=(n,)))
            rx = _slices(h, beam, "rxwaveform", "rx_sample_start_index", "rx_sample_count", n)
            tx = _slices(h, beam, "txwaveform", "tx_sample_start_index", "tx_sample_count", n) \
                if h.has(f"{beam}/txwaveform") else [np.zeros(0, np.float32)] * n
            g = f"{beam}/geolocation"
            lat0 = mask_float(h.read(f"{g}/latitude_bin0", shape=(n,)))
            lon0 = mask_float(h.read(f"{g}/longitude_bin0", shape=(n,)))
            latL = mask_float(h.read(f"{g}/latitude_lastbin", shape=(n,)))
            lonL = mask_float(h.read(f"{g}/longitude_lastbin", shape=(n,)))
            el0 = mask_float(h.read(f"{g}/elevation_bin0", shape=(n,)))
            elL = mask_float(h.read(f"{g}/elevation_lastbin", shape=(n,)))
            nm = mask_float(h.read(f"{beam}/noise_mean_corrected", shape=(n,))) \
                if h.has(f"{beam}/noise_mean_corrected") else np.full(n, np.nan)
            ns = mask_float(h.read(f"{beam}/noise_stddev_corrected", shape=(n,))) \
                if h.has(f"{beam}/noise_stddev_corrected") else np.full(n, np.nan)
            counts = np.array([len(r) for r in rx])
            peak = np.array([int(np.argmax(r)) if len(r) else 0 for r in rx])
            f = np.where(counts > 1, peak / np.maximum(counts - 1, 1), 0.0)
            lon0w, lonLw = wrap_lon(lon0), wrap_lon(lonL)
            dlon = wrap_lon(lonLw - lon0w)
            frames.append(pd.DataFrame({
                "shot_id": shot.astype(np.int64),
                "time": seconds_to_utc(dt, GEDI_EPOCH),
                "lon": wrap_lon(lon0w + f * dlon), "lat": lat0 + f * (latL - lat0),
                "waveform_type": np.where(counts > 0, 1, 0).astype(np.int8),
                "gain": np.full(n, np.nan), "bg_mean": nm, "bg_sd": ns,
                "n_samples": counts.astype(np.int32),
                "beam": beam, "elevation": el0 + f * (elL - el0), "delta_time": dt,
            }))
            rx_all.extend(rx)
            tx_all.extend(tx)
    if not frames:
        raise InputFileError(f"{p}: the beam groups hold no shots")
    table = pd.concat(frames, ignore_index=True)
    n = len(table)
    n_max = max(len(r) for r in rx_all)
    wf = np.full((n, n_max), np.nan, np.float32)
    for i, r in enumerate(rx_all):
        wf[i, : len(r)] = r
    m = max(len(t) for t in tx_all)
    transmit = None
    if m > 0:
        transmit = np.full((n, m), np.nan, np.float32)
        for i, t in enumerate(tx_all):
            transmit[i, : len(t)] = t
    x, y = project(table["lon"].to_numpy(), table["lat"].to_numpy(), crs)
    table["x"], table["y"] = x, y
    table["saturated"] = flat_top(wf)
    table["source"] = pd.array([str(p)] * n, dtype="string")
    attrs = {"instrument": "gedi", "product": "GEDI_L1B", "crs": crs, "units": "counts"}
    return ShotTable(table, wf, 1.0, transmit=transmit, transmit_interval_ns=1.0, attrs=attrs)
