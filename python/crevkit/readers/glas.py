"""ICESat GLAS readers: GLAH01 raw waveforms and GLAH06/12/14 geolocation.

GLAH01 layout (HDF5; DESIGN.md "Real data and formats")::

    Data_40HZ/Waveform/RecWaveform/r_rng_wf               (n, 544) volts; short records use the first 200
    Data_40HZ/Waveform/RecWaveform/i_rec_wf_location_index (n,) 1-based row of the sample-time table; 127 = null
    Data_40HZ/Waveform/Characteristics/i_waveformType       (n,) 0 missing, 1 long (544), 2 short (200)
    ANCILLARY_DATA attribute rec_wf_sample_location_table   (k, 544) sample times in ns
    Data_40HZ/Time/i_rec_ndx, Data_40HZ/Time/i_shot_count   (n,) shot key (shot_id = i_rec_ndx·100 + i_shot_count)
    Data_40HZ/DS_UTCTime_40                                 (n,) seconds since 2000-01-01 12:00:00 UTC
    Data_1HZ/Time/i_rec_ndx, Data_1HZ/DS_UTCTime_1          (m,) record key and time of its first shot
    Data_1HZ/Geolocation/d1_pred_lat, d1_pred_lon           (m,) predicted position at DS_UTCTime_1
    optional, found by name anywhere under Data_40HZ:
    i_gainSet1064, d_4nsBgMean, d_4nsBgSDEV, r_tx_wf (n, 48)

Fills: floats ≥ 1e30, int32 2147483647, int8 127.  Longitudes are 0–360 east.
The echo was telemetered time-reversed; the reader orders every shot's samples
by its row of the sample-time table (never by assumption) and resamples onto a
uniform grid if that row is not uniformly spaced.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputFileError
from ..shot_table import ShotTable
from ._common import (
    GLAS_EPOCH,
    INT8_FILL,
    H5File,
    check_path,
    flat_top,
    mask_float,
    mask_int,
    project,
    robust_background,
    seconds_to_utc,
    unproject,
    wrap_lon,
)

__all__ = ["read_glah01", "read_glah06", "read_glas_geolocation", "GLAH01_PATHS"]

log = logging.getLogger("crevkit.readers")

#: Dataset paths of the GLAH01 layout.
GLAH01_PATHS = {
    "waveform": "Data_40HZ/Waveform/RecWaveform/r_rng_wf",
    "location_index": "Data_40HZ/Waveform/RecWaveform/i_rec_wf_location_index",
    "waveform_type": "Data_40HZ/Waveform/Characteristics/i_waveformType",
    "table_group": "ANCILLARY_DATA",
    "table_attr": "rec_wf_sample_location_table",
    "rec_ndx": "Data_40HZ/Time/i_rec_ndx",
    "shot_count": "Data_40HZ/Time/i_shot_count",
    "time": "Data_40HZ/DS_UTCTime_40",
    "rec_ndx_1hz": "Data_1HZ/Time/i_rec_ndx",
    "time_1hz": "Data_1HZ/DS_UTCTime_1",
    "pred_lat": "Data_1HZ/Geolocation/d1_pred_lat",
    "pred_lon": "Data_1HZ/Geolocation/d1_pred_lon",
    "gain": "i_gainSet1064",
    "bg_mean": "d_4nsBgMean",
    "bg_sd": "d_4nsBgSDEV",
    "transmit": "r_tx_wf",
}

_SHORT_LEN = 200
_RECORD_GAP_S = 1.5  # consecutive 1 Hz records are 1 s apart; a larger gap splits the track


def _shot_id(rec: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    return rec.astype(np.int64) * 100 + cnt.astype(np.int64)


def _product(h: H5File) -> str:
    return h.root_attr_str("ShortName") or "unknown"


# --------------------------------------------------------------------- geolocation
def read_glas_geolocation(path: str | os.PathLike) -> pd.DataFrame:
    """Precise 40 Hz positions of a GLAH06/12/14 file as a small DataFrame.

    Returns
    -------
    pandas.DataFrame
        ``shot_id`` (int64), ``lon`` (degrees, [-180, 180)), ``lat`` — fills
        are NaN.

    Raises
    ------
    InputFileError
        Missing or misshapen ``Data_40HZ/Geolocation/d_lat``, ``d_lon`` or the
        shot key datasets (the message names file and dataset).
    """
    p = check_path(path, "geolocation")
    with H5File(p) as h:
        lat = h.read("Data_40HZ/Geolocation/d_lat", ndim=1)
        n = lat.shape[0]
        lon = h.read("Data_40HZ/Geolocation/d_lon", shape=(n,))
        rec = h.read("Data_40HZ/Time/i_rec_ndx", shape=(n,))
        cnt = h.read("Data_40HZ/Time/i_shot_count", shape=(n,))
    lat = mask_float(lat)
    lon = mask_float(lon)
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90)
    lat[bad] = np.nan
    lon[bad] = np.nan
    return pd.DataFrame({"shot_id": _shot_id(rec, cnt), "lon": wrap_lon(lon), "lat": lat})


def read_glah06(path: str | os.PathLike, *, crs: str = "EPSG:3413") -> ShotTable:
    """Read a GLAH06 (or GLAH12/14) file: geolocation, time, keys and waveform parameters.

    These products carry no raw waveform: the returned table has a
    ``waveforms`` array of width 0 and ``waveform_type`` 0 for every shot
    (``attrs["no_waveform"]`` is True).  Use the file as ``geolocation=`` of
    :func:`read_glah01` to give GLAH01 shots their precise positions.

    Parameters
    ----------
    path : path
        The ``.H5`` file.
    crs : str
        CRS of the ``x``/``y`` columns (default EPSG:3413).

    Returns
    -------
    ShotTable
        Columns: the required ones (``gain`` = ``i_gval_rcv``, ``bg_sd`` =
        ``d_sDevNsOb1``, ``bg_mean`` NaN, ``saturated`` = ``i_satNdx`` > 0) plus
        ``i_rec_ndx``, ``i_shot_count``, ``glas_time_s``, ``elevation``
        (``d_elev``), ``max_amplitude`` (``d_maxRecAmp``), ``pct_saturation``
        (``d_pctSAT``), ``position_valid``.  Fills are NaN.  For the real file in
        ``data/real`` (GLAH06 r34, track 1288, 2006-02-23): 26,800 shots in 670
        records, 18,174 with a position, lat 50.784–84.611 °N.

    Raises
    ------
    InputFileError
        A missing or misshapen dataset, a file that is not HDF5, or time or
        position fill everywhere (the message names file and dataset).
    """
    p = check_path(path)
    with H5File(p) as h:
        t = h.read("Data_40HZ/DS_UTCTime_40", ndim=1)
        n = t.shape[0]
        if n == 0:
            raise InputFileError(f"{p}: dataset Data_40HZ/DS_UTCTime_40 is empty")
        rec = h.read("Data_40HZ/Time/i_rec_ndx", shape=(n,))
        cnt = h.read("Data_40HZ/Time/i_shot_count", shape=(n,))
        lat = mask_float(h.read("Data_40HZ/Geolocation/d_lat", shape=(n,)))
        lon = mask_float(h.read("Data_40HZ/Geolocation/d_lon", shape=(n,)))

        def opt(name: str, kind: str = "f") -> np.ndarray:
            loc = h.find(name, "Data_40HZ")
            if loc is None:
                return np.full(n, np.nan)
            a = h.read(loc, shape=(n,))
            return mask_float(a) if kind == "f" else mask_int(a)

        gain = opt("i_gval_rcv", "i")
        bg_sd = opt("d_sDevNsOb1")
        elev = opt("d_elev")
        maxamp = opt("d_maxRecAmp")
        pct = opt("d_pctSAT")
        satndx = opt("i_satNdx", "i")
        product = _product(h)
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90)
    if bad.all():
        raise InputFileError(f"{p}: dataset Data_40HZ/Geolocation/d_lat (or d_lon) is fill everywhere")
    lat[bad] = np.nan
    lon[bad] = np.nan
    lon = wrap_lon(lon)
    x, y = project(lon, lat, crs)
    ts = mask_float(t)
    if np.isnan(ts).all():
        raise InputFileError(f"{p}: dataset Data_40HZ/DS_UTCTime_40 is fill everywhere")
    table = pd.DataFrame({
        "shot_id": _shot_id(rec, cnt),
        "time": seconds_to_utc(ts, GLAS_EPOCH),
        "lon": lon, "lat": lat, "x": x, "y": y,
        "waveform_type": np.zeros(n, np.int8),
        "gain": gain, "bg_mean": np.full(n, np.nan), "bg_sd": bg_sd,
        "saturated": np.nan_to_num(satndx, nan=0) > 0,
        "n_samples": np.zeros(n, np.int32),
        "source": pd.array([str(p)] * n, dtype="string"),
        "i_rec_ndx": rec.astype(np.int32), "i_shot_count": cnt.astype(np.int8),
        "glas_time_s": ts, "elevation": elev, "max_amplitude": maxamp, "pct_saturation": pct,
        "position_valid": ~bad,
    })
    attrs = {"instrument": "glas", "product": product, "crs": crs, "no_waveform": True,
             "units": "volts", "note": f"{product} carries no raw waveform; waveforms has width 0"}
    return ShotTable(table, np.zeros((n, 0), np.float32), float("nan"), attrs=attrs)


# --------------------------------------------------------------------------- GLAH01
def _time_grid(table: np.ndarray, rows_used: dict[tuple[int, int], int], path: Path) -> float:
    """Smallest sample spacing among the used table rows (ns)."""
    spacing = []
    for (row, _), nvalid in rows_used.items():
        times = table[row, :nvalid]
        d = np.diff(np.sort(times))
        if (d <= 0).any():
            raise InputFileError(f"{path}: ANCILLARY_DATA attribute rec_wf_sample_location_table row {row + 1} "
                                 "has repeated sample times")
        spacing.append(d.min())
    return float(min(spacing)) if spacing else 1.0


def _interp_1hz(rec40: np.ndarray, t40: np.ndarray, rec1: np.ndarray, t1: np.ndarray,
                x1: np.ndarray, y1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of 40 Hz shots from 1 Hz record positions, interpolated in time within each record.

    The 1 Hz position is at the time of the record's first shot; a shot in record
    k uses records k and k+1 (or k−1 and k for the last record of a continuous
    run, extrapolating); records more than 1.5 s apart are not joined.
    """
    n = rec40.shape[0]
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    ok1 = np.isfinite(x1) & np.isfinite(y1) & np.isfinite(t1)
    if not ok1.any():
        return x, y, np.zeros(n, bool)
    order = np.argsort(t1[ok1], kind="stable")
    r1, tt, xx, yy = rec1[ok1][order], t1[ok1][order], x1[ok1][order], y1[ok1][order]
    pos = pd.Index(r1).get_indexer(rec40) if pd.Index(r1).is_unique else \
        pd.Series(np.arange(len(r1))).groupby(r1).first().reindex(rec40).fillna(-1).astype(int).to_numpy()
    has = (pos >= 0) & np.isfinite(t40)
    k = np.where(has, pos, 0)
    m = len(r1)
    nxt_ok = (k + 1 < m) & (np.abs(tt[np.minimum(k + 1, m - 1)] - tt[k]) <= _RECORD_GAP_S)
    prv_ok = (k - 1 >= 0) & (np.abs(tt[k] - tt[np.maximum(k - 1, 0)]) <= _RECORD_GAP_S)
    a = np.where(nxt_ok, k, np.where(prv_ok, k - 1, k))
    b = np.where(nxt_ok, k + 1, np.where(prv_ok, k, k))
    dt = tt[b] - tt[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(dt > 0, (t40 - tt[a]) / np.where(dt > 0, dt, 1.0), 0.0)
    x[has] = (xx[a] + f * (xx[b] - xx[a]))[has]
    y[has] = (yy[a] + f * (yy[b] - yy[a]))[has]
    return x, y, has & (a == b)


def read_glah01(path: str | os.PathLike, *, geolocation: str | os.PathLike | None = None,
                crs: str = "EPSG:3413") -> ShotTable:
    """Read a GLAS GLAH01 file (layout in the module docstring) into a shot table.

    Parameters
    ----------
    path : path
        The GLAH01 ``.H5`` file.
    geolocation : path, optional
        A GLAH06/12/14 file whose precise 40 Hz ``d_lat``/``d_lon`` are joined
        on (``i_rec_ndx``, ``i_shot_count``).  Shots it lacks (or has as fill)
        keep the 1 Hz interpolated position.
    crs : str
        CRS of the ``x``/``y`` columns (default EPSG:3413).  1 Hz positions are
        interpolated in this CRS.

    Returns
    -------
    ShotTable
        Waveforms in volts, earliest sample first, on the table's grid (1 ns),
        NaN-padded (short records have ``n_samples`` 200, missing shots 0).
        Extra columns: ``i_rec_ndx``, ``i_shot_count``, ``glas_time_s``,
        ``wf_t0_ns`` (time of the first sample on the sample-time table's
        axis), ``position_source`` ("precise", "predicted_1hz", "predicted_1hz_record"
        — a record with no neighbouring 1 Hz record, all its shots at the
        record's position — or "none").
        ``bg_mean``/``bg_sd`` come from ``d_4nsBgMean``/``d_4nsBgSDEV`` where
        present, else from the waveform (median/MAD).  ``saturated``: at least
        three samples at the record maximum (a flat top).

    Raises
    ------
    InputFileError
        Not HDF5 or truncated; a missing or misshapen dataset; a GLAH06-like
        file without raw waveforms ("… has no raw waveform …"); a location
        index outside the sample-time table; fills everywhere (no waveform, or
        no time, or no position).  The message names the file and dataset.
    """
    p = check_path(path)
    P = GLAH01_PATHS
    with H5File(p) as h:
        if not h.has(P["waveform"]):
            if h.has("Data_40HZ/Geolocation/d_lat"):
                raise InputFileError(
                    f"{p}: has no raw waveform (dataset {P['waveform']} is missing); it is a "
                    f"{_product(h)} geolocation product — read it with read_glah06, or pass it as "
                    "geolocation= to read_glah01")
            raise InputFileError(f"{p}: dataset {P['waveform']} is missing (not a GLAH01 file)")
        wf_raw = h.read(P["waveform"], ndim=2)
        n, width = wf_raw.shape
        if n == 0:
            raise InputFileError(f"{p}: dataset {P['waveform']} has no shots (shape {wf_raw.shape})")
        wtype = h.read(P["waveform_type"], shape=(n,))
        loc = h.read(P["location_index"], shape=(n,))
        table = np.asarray(h.attr(P["table_group"], P["table_attr"]), dtype=np.float64)
        if table.ndim != 2 or table.shape[1] < width:
            raise InputFileError(f"{p}: attribute {P['table_group']}/{P['table_attr']} has shape {table.shape}, "
                                 f"expected (k, {width})")
        rec = h.read(P["rec_ndx"], shape=(n,))
        cnt = h.read(P["shot_count"], shape=(n,))
        t40 = mask_float(h.read(P["time"], shape=(n,)))
        have_1hz = h.has(P["pred_lat"])
        if have_1hz:
            lat1 = h.read(P["pred_lat"], ndim=1)
            m = lat1.shape[0]
            lon1 = h.read(P["pred_lon"], shape=(m,))
            rec1 = h.read(P["rec_ndx_1hz"], shape=(m,))
            t1 = mask_float(h.read(P["time_1hz"], shape=(m,)))
        elif geolocation is None:
            raise InputFileError(f"{p}: dataset {P['pred_lat']} is missing and no geolocation file was given")

        def opt(key: str, kind: str = "f") -> np.ndarray | None:
            loc_ = h.find(P[key], "Data_40HZ")
            if loc_ is None:
                return None
            a = h.read(loc_, shape=(n,))
            return mask_float(a) if kind == "f" else mask_int(a)

        gain = opt("gain", "i")
        bg_mean = opt("bg_mean")
        bg_sd = opt("bg_sd")
        tx_loc = h.find(P["transmit"], "Data_40HZ")
        transmit = None
        if tx_loc is not None:
            tx = h.read(tx_loc, ndim=2)
            if tx.shape[0] != n:
                raise InputFileError(f"{p}: dataset {tx_loc} has shape {tx.shape}, expected ({n}, m)")
            transmit = mask_float(tx).astype(np.float32)

    # ---- waveforms: order by the sample-time table
    if np.isnan(t40).all():
        raise InputFileError(f"{p}: dataset {P['time']} is fill everywhere")
    wf_all = mask_float(wf_raw)
    wtype = np.asarray(wtype).astype(np.int64)
    loc = np.asarray(loc).astype(np.int64)
    k = table.shape[0]
    null = (loc == INT8_FILL) | (loc <= 0)
    bad_loc = ~null & (loc > k) & (wtype != 0)
    if bad_loc.any():
        raise InputFileError(f"{p}: dataset {P['location_index']} has value {int(loc[bad_loc][0])} outside the "
                             f"{k} rows of {P['table_group']}/{P['table_attr']}")
    present = np.isin(wtype, (1, 2)) & ~null
    nvalid = np.where(wtype == 2, min(_SHORT_LEN, width), width)
    tab = mask_float(table)
    groups: dict[tuple[int, int], np.ndarray] = {}
    for row in np.unique(loc[present]):
        for nv in np.unique(nvalid[present & (loc == row)]):
            sel = np.flatnonzero(present & (loc == row) & (nvalid == nv))
            times = tab[row - 1, :nv]
            if not np.isfinite(times).all():
                raise InputFileError(f"{p}: attribute {P['table_group']}/{P['table_attr']} row {row} has fill "
                                     f"among its first {nv} sample times")
            groups[(int(row) - 1, int(nv))] = sel
    dt = _time_grid(tab, {key: key[1] for key in groups}, p)
    lengths = {key: int(round((tab[key[0], :key[1]].max() - tab[key[0], :key[1]].min()) / dt)) + 1 for key in groups}
    n_out = max(lengths.values()) if lengths else width
    out = np.full((n, n_out), np.nan, np.float32)
    n_samples = np.zeros(n, np.int32)
    t0 = np.full(n, np.nan)
    for (row, nv), sel in groups.items():
        times = tab[row, :nv]
        order = np.argsort(times, kind="stable")
        st = times[order]
        samples = wf_all[np.ix_(sel, order)]
        L = lengths[(row, nv)]
        if np.allclose(np.diff(st), dt, rtol=1e-6, atol=1e-9):
            out[sel, :nv] = samples
        else:  # non-uniform row: linear interpolation onto the uniform grid
            grid = st[0] + dt * np.arange(L)
            for j, i in enumerate(sel):
                s = samples[j]
                ok = np.isfinite(s)
                out[i, :L] = np.interp(grid, st[ok], s[ok]) if ok.sum() >= 2 else np.nan
        n_samples[sel] = L
        t0[sel] = st[0]
    all_fill = present & ~np.isfinite(out).any(axis=1)
    if all_fill.any():
        log.info("%s: %d shots typed as recorded are fill everywhere; marked missing", p, int(all_fill.sum()))
    present &= ~all_fill
    n_samples[~present] = 0
    out[~present] = np.nan
    wtype_out = np.where(present, wtype, 0).astype(np.int8)
    if not present.any():
        raise InputFileError(f"{p}: no valid waveform: every shot of {P['waveform']} is fill or has "
                             f"{P['waveform_type']} 0 / {P['location_index']} 127")

    # ---- positions
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    source = np.full(n, "none", dtype=object)
    if have_1hz:
        lat1m = mask_float(lat1)
        lon1m = wrap_lon(mask_float(lon1))
        x1, y1 = project(lon1m, lat1m, crs)
        xi, yi, lone = _interp_1hz(rec, t40, rec1, t1, x1, y1)
        ok = np.isfinite(xi) & np.isfinite(yi)
        x[ok], y[ok] = xi[ok], yi[ok]
        source[ok] = "predicted_1hz"
        source[ok & lone] = "predicted_1hz_record"
    lon, lat = unproject(x, y, crs)
    shot_id = _shot_id(rec, cnt)
    if geolocation is not None:
        geo = read_glas_geolocation(geolocation)
        geo = geo.drop_duplicates("shot_id").set_index("shot_id")
        j = geo.reindex(shot_id)
        ok = np.isfinite(j["lat"].to_numpy()) & np.isfinite(j["lon"].to_numpy())
        lon[ok] = j["lon"].to_numpy()[ok]
        lat[ok] = j["lat"].to_numpy()[ok]
        xg, yg = project(lon[ok], lat[ok], crs)
        x[ok], y[ok] = xg, yg
        source[ok] = "precise"
    if not np.isfinite(lat).any():
        raise InputFileError(f"{p}: no shot has a position (dataset {P['pred_lat']} is fill everywhere"
                             + (" and the geolocation file matches no shot)" if geolocation is not None else ")"))

    # ---- background, gain, saturation
    est_mean, est_sd = robust_background(np.where(present[:, None], out, np.nan))
    bm = est_mean if bg_mean is None else np.where(np.isfinite(bg_mean), bg_mean, est_mean)
    bs = est_sd if bg_sd is None else np.where(np.isfinite(bg_sd), bg_sd, est_sd)
    sat = flat_top(out) & present
    tbl = pd.DataFrame({
        "shot_id": shot_id,
        "time": seconds_to_utc(t40, GLAS_EPOCH),
        "lon": lon, "lat": lat, "x": x, "y": y,
        "waveform_type": wtype_out,
        "gain": gain if gain is not None else np.full(n, np.nan),
        "bg_mean": bm, "bg_sd": bs,
        "saturated": sat,
        "n_samples": n_samples,
        "source": pd.array([str(p)] * n, dtype="string"),
        "i_rec_ndx": rec.astype(np.int32), "i_shot_count": cnt.astype(np.int8),
        "glas_time_s": t40, "wf_t0_ns": t0,
        "position_source": pd.array(source.tolist(), dtype="string"),
    })
    attrs = {"instrument": "glas", "product": "GLAH01", "crs": crs, "units": "volts",
             "geolocation": str(geolocation) if geolocation is not None else None,
             "n_all_fill": int(all_fill.sum())}
    return ShotTable(tbl, out, dt, transmit=transmit, transmit_interval_ns=1.0, attrs=attrs)
