"""Synthetic GLAS shots over a scene, written in the GLAH01 layout, with their truth.

:func:`synthesize_shots` flies straight ground tracks over a scene (40 Hz,
172 m apart, i.e. 6.88 km/s), forward-models each footprint and makes it look
recorded:

* for each shot, ``scene.height`` on a 200 × 200 grid at 0.5 m centred on the
  footprint (a 100 m tile, like the library's; row 0 north), mean removed,
  through :func:`crevkit.simulate_waveforms` (unit sum, leading edge at 10);
* amplitude: peak above background ``A`` log-uniform in 0.05–1.5 V for 90 % of
  shots and uniform in 1.5–3 V for the rest; the recorded waveform is clipped
  at a per-shot saturation level uniform in 1.5–2 V (digitizer clipping);
* background mean uniform in 0.01–0.05 V, noise sd uniform in 0.005–0.02 V
  (white Gaussian, or vectors of a :class:`crevkit.noise.NoiseModel` rescaled
  to that sd); SNR = A / sd;
* leading edge anywhere in the window (shift uniform, fractional, linear
  interpolation): long records −5…384, short records −5…90 samples;
* ~15 % short (200-sample) records, ~5 % missing shots (waveform type 0);
* gain ``i_gainSet1064`` falls with amplitude (13–250), a 48-sample transmit
  pulse (6 ns FWHM, amplitude jitter).

Outputs (all written atomically into ``out_dir``; ``<stem>`` =
``synth_<year>_s<seed>``):

* ``GLAH01_<stem>.H5`` — the GLAH01 layout of :mod:`crevkit.readers.glas`:
  waveforms stored time-reversed, a 5-row sample-time table (rows 1, 3, 4
  long with offsets 0, 8, 16 ns; rows 2, 5 short), 1 Hz predicted positions
  at each record's first-shot time, fills as in the real products;
* ``GLAH06_<stem>.H5`` — a GLAH06-like companion with precise 40 Hz
  ``d_lat``/``d_lon`` (fill for missing shots), ``d_elev``, ``d_maxRecAmp``,
  ``i_gval_rcv``, ``d_sDevNsOb1``;
* ``truth_<stem>.parquet`` — one row per shot: ``shot_id``, ``i_rec_ndx``,
  ``i_shot_count``, ``track``, ``time`` (UTC), ``glas_time_s``, ``x``, ``y``
  (EPSG:3413), ``lon``, ``lat``, ``crevassed_fraction`` (35 m disc),
  ``waveform_type``, ``n_samples``, ``shift`` (samples; leading edge at
  10 + shift in the time-ordered record), ``amplitude`` (V), ``scale`` (the
  factor on the unit-sum clean waveform), ``bg_mean``, ``bg_sd``, ``snr``,
  ``saturation_level``, ``n_clipped``, ``saturated`` (≥ 3 clipped samples),
  ``gain``, ``elevation``, ``location_row``;
* ``truth_<stem>_clean.npy`` — (n, 544) float32 clean unit-sum waveforms;
* ``truth_<stem>_recorded.npy`` — (n, 544) float32 recorded waveforms in time
  order (NaN after ``n_samples``; all NaN for missing shots).

GLAS time is seconds since 2000-01-01 12:00:00 UTC.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ._atomic import atomic_path
from ._progress import progress
from ._validation import check_int, check_positive
from .errors import CrevkitTypeError, CrevkitValueError

__all__ = ["synthesize_shots", "SynthPaths", "load_truth", "SHOT_SPACING_M", "SHOT_INTERVAL_S"]

SHOT_SPACING_M = 172.0
SHOT_INTERVAL_S = 0.025
LONG, SHORT = 544, 200
TILE_PX, PIXEL = 200, 0.5
FOOTPRINT_RADIUS = 35.0
_F64_FILL = np.finfo(np.float64).max      # 1.797e308
_F32_FILL = np.float32(np.finfo(np.float32).max)
_I32_FILL = 2147483647
_I8_FILL = 127
_GLAS_EPOCH = np.datetime64("2000-01-01T12:00:00", "s")
_LONG_ROWS = {1: 0.0, 3: 8.0, 4: 16.0}     # 1-based table row -> time offset (ns)
_SHORT_ROWS = {2: 0.0, 5: 8.0}


class SynthPaths(NamedTuple):
    """Paths written by :func:`synthesize_shots`."""

    glah01: Path
    glah06: Path
    truth: Path

    @property
    def clean(self) -> Path:
        """The clean-waveform ``.npy`` beside the truth table."""
        return self.truth.with_name(self.truth.stem + "_clean.npy")

    @property
    def recorded(self) -> Path:
        """The recorded (time-ordered) waveform ``.npy`` beside the truth table."""
        return self.truth.with_name(self.truth.stem + "_recorded.npy")


def load_truth(truth: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The truth table, clean waveforms and recorded waveforms of a synthetic set."""
    truth = Path(truth)
    clean = np.load(truth.with_name(truth.stem + "_clean.npy"))
    recorded = np.load(truth.with_name(truth.stem + "_recorded.npy"))
    return pd.read_parquet(truth), clean, recorded


def _sample_table() -> np.ndarray:
    table = np.full((5, LONG), _F64_FILL)
    k = np.arange(LONG, dtype=np.float64)
    for row, off in _LONG_ROWS.items():
        table[row - 1] = (LONG - 1 - k) + off          # stored sample k is the (543-k)-th in time
    for row, off in _SHORT_ROWS.items():
        table[row - 1, :SHORT] = (SHORT - 1 - k[:SHORT]) + off
    return table


def _tracks(bounds: tuple[float, float, float, float], n_tracks: int, rng: np.random.Generator,
            max_angle_deg: float) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Shot centres (x, y) of each track whose 100 m tile lies in ``bounds``, and the first shot's index."""
    xmin, ymin, xmax, ymax = bounds
    h = TILE_PX * PIXEL / 2.0 + PIXEL
    ixmin, ixmax, iymin, iymax = xmin + h, xmax - h, ymin + h, ymax - h
    if ixmin > ixmax or iymin > iymax:
        raise CrevkitValueError(f"scene bounds {bounds} are too small for a 100 m footprint tile")
    axis = 0.0 if (xmax - xmin) >= (ymax - ymin) else 90.0
    diag = math.hypot(xmax - xmin, ymax - ymin)
    K = int(diag / SHOT_SPACING_M) + 2
    out = []
    for _ in range(n_tracks):
        for _attempt in range(100):
            a = math.radians(axis + rng.uniform(-max_angle_deg, max_angle_deg))
            c = np.array([rng.uniform(ixmin, ixmax), rng.uniform(iymin, iymax)])
            k = np.arange(-K, K + 1)
            x = c[0] + k * SHOT_SPACING_M * math.cos(a)
            y = c[1] + k * SHOT_SPACING_M * math.sin(a)
            inside = (x >= ixmin) & (x <= ixmax) & (y >= iymin) & (y <= iymax)
            if inside.any():
                sel = np.flatnonzero(inside)
                out.append((x[sel], y[sel], int(sel[0])))
                break
    return out


def _shift_rows(clean: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Delay each row by a fractional number of samples (linear interpolation, zeros outside)."""
    n, m = clean.shape
    grid = np.arange(m, dtype=np.float64)
    out = np.empty_like(clean, dtype=np.float64)
    for i in range(n):
        out[i] = np.interp(grid - shifts[i], grid, clean[i], left=0.0, right=0.0)
    return out


def _h5_write(path: Path, datasets: dict[str, np.ndarray], root_attrs: dict[str, Any],
              group_attrs: dict[str, dict[str, Any]]) -> None:
    import h5py

    with atomic_path(path, suffix=".H5") as tmp:
        with h5py.File(tmp, "w") as f:
            for k, v in root_attrs.items():
                f.attrs[k] = v
            for name, arr in datasets.items():
                f.create_dataset(name, data=arr)
            for g, attrs in group_attrs.items():
                grp = f.require_group(g)
                for k, v in attrs.items():
                    grp.attrs[k] = v


def synthesize_shots(scene: Any, out_dir: str | os.PathLike, *, n_tracks: int = 6, seed: int = 0,
                     year: int = 2004, noise: Any = None, instrument: Any = "glas",
                     missing_fraction: float = 0.05, short_fraction: float = 0.15,
                     max_track_angle: float = 20.0, batch_size: int = 32, **overrides: Any) -> SynthPaths:
    """Fly GLAS-like tracks over ``scene`` and write GLAH01 / GLAH06-like files plus the truth.

    Uses only ``scene.height``, ``scene.crevassed_fraction`` and
    ``scene.bounds`` (EPSG:3413 metres).  See the module docstring for what
    is simulated and written.

    Parameters
    ----------
    scene : Scene-like
        An object with ``height(x, y)``, ``crevassed_fraction(x, y, radius)``
        and ``bounds`` (xmin, ymin, xmax, ymax), e.g. :func:`crevkit.make_scene`.
    out_dir : path
        Output folder (created).
    n_tracks : int
        Number of straight ground tracks (each on its own day of ``year``).
    seed : int
        Seed of every random choice.
    year : int
        Campaign year of the shot times.
    noise : None or NoiseModel
        None: white Gaussian noise; a :class:`crevkit.noise.NoiseModel`: its
        noise vectors, rescaled to each shot's noise sd.
    instrument : str or Instrument
        Forward-model instrument (must give 544 samples, the GLAH01 width).
    missing_fraction, short_fraction : float
        Shares of missing shots and of short (200-sample) records.
    max_track_angle : float
        Tracks run within this angle (degrees) of the scene's long axis.
    batch_size : int
        Footprints forward-modelled at once.
    **overrides
        Instrument overrides for :func:`crevkit.simulate_waveforms`.

    Returns
    -------
    SynthPaths
        ``(glah01, glah06, truth)``; ``.clean`` / ``.recorded`` give the ``.npy`` files.

    Raises
    ------
    CrevkitValueError
        Bad arguments, a scene too small for a 100 m tile, or no shot in it.
    """
    from .simulate import simulate_waveforms

    n_tracks = check_int(n_tracks, "n_tracks", minimum=1, maximum=365)
    seed = check_int(seed, "seed", minimum=0)
    year = check_int(year, "year", minimum=2000, maximum=2100)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    for name, v in (("missing_fraction", missing_fraction), ("short_fraction", short_fraction)):
        if not 0.0 <= float(v) < 1.0:
            raise CrevkitValueError(f"{name} must be in [0, 1), got {v!r}")
    check_positive(max_track_angle + 1e-9, "max_track_angle", maximum=90.0)
    if noise is not None and not hasattr(noise, "sample_noise"):
        raise CrevkitTypeError(f"noise must be None or a NoiseModel, got {type(noise).__name__}")
    for attr in ("height", "crevassed_fraction", "bounds"):
        if not hasattr(scene, attr):
            raise CrevkitTypeError(f"scene must have .{attr} (a crevkit Scene or a stand-in), got {type(scene).__name__}")
    bounds = tuple(float(v) for v in scene.bounds)
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # ---- geometry and timing
    tracks = _tracks(bounds, n_tracks, rng, float(max_track_angle))
    if not tracks:
        raise CrevkitValueError(f"no track crosses the scene bounds {bounds}")
    year_start = (np.datetime64(f"{year}-01-01T00:00:00", "s") - _GLAS_EPOCH).astype(np.int64)
    days = np.sort(rng.choice(365, size=len(tracks), replace=False))
    cols: dict[str, list] = {k: [] for k in ("x", "y", "t", "rec", "cnt", "track")}
    one_hz: dict[str, list] = {"rec": [], "t": [], "x": [], "y": []}
    for ti, ((x, y, k0), day) in enumerate(zip(tracks, days)):
        n = len(x)
        offset = int(rng.integers(0, 40))                 # the first shot's place in its record
        j = offset + np.arange(n)
        t_rec0 = float(year_start + day * 86400) + float(rng.uniform(0, 80_000))
        rec_base = int(t_rec0) // 4
        cols["x"].append(x); cols["y"].append(y)
        cols["t"].append(t_rec0 + j * SHOT_INTERVAL_S)
        cols["rec"].append(rec_base + j // 40); cols["cnt"].append(j % 40 + 1)
        cols["track"].append(np.full(n, ti))
        # 1 Hz predicted position of each record: where shot 1 of the record is (on the same line)
        r = np.arange(j[0] // 40, j[-1] // 40 + 2)        # and the next record: the orbit goes on
        dx = (x[1] - x[0]) if n > 1 else SHOT_SPACING_M * math.cos(0.0)
        dy = (y[1] - y[0]) if n > 1 else 0.0
        jr = r * 40 - offset                               # shot index of each record's first shot
        one_hz["rec"].append(rec_base + r); one_hz["t"].append(t_rec0 + r * 40 * SHOT_INTERVAL_S)
        one_hz["x"].append(x[0] + jr * dx); one_hz["y"].append(y[0] + jr * dy)
    x = np.concatenate(cols["x"]); y = np.concatenate(cols["y"])
    t = np.concatenate(cols["t"]); rec = np.concatenate(cols["rec"]).astype(np.int32)
    cnt = np.concatenate(cols["cnt"]).astype(np.int8); track = np.concatenate(cols["track"]).astype(np.int16)
    n = x.size

    # ---- per-shot recording parameters
    wtype = np.where(rng.random(n) < short_fraction, 2, 1).astype(np.int8)
    wtype[rng.random(n) < missing_fraction] = 0
    nsamp = np.where(wtype == 1, LONG, np.where(wtype == 2, SHORT, 0)).astype(np.int32)
    hi = rng.random(n) < 0.10
    amp = np.where(hi, rng.uniform(1.5, 3.0, n), np.exp(rng.uniform(math.log(0.05), math.log(1.5), n)))
    sat_level = rng.uniform(1.5, 2.0, n)
    bg_mean = rng.uniform(0.01, 0.05, n)
    bg_sd = rng.uniform(0.005, 0.02, n)
    shift = np.where(wtype == 2, rng.uniform(-5.0, SHORT - 110.0, n), rng.uniform(-5.0, LONG - 160.0, n))
    gain = np.clip(np.round(250.0 - 60.0 * np.log(amp / 0.05)), 13, 250).astype(np.int32)
    long_rows = np.array(sorted(_LONG_ROWS)); short_rows = np.array(sorted(_SHORT_ROWS))
    loc_row = np.where(wtype == 1, rng.choice(long_rows, n), rng.choice(short_rows, n)).astype(np.int8)
    loc_row[wtype == 0] = _I8_FILL
    tx_amp = rng.uniform(0.8, 1.2, n)

    # ---- forward model, batch by batch
    off = (np.arange(TILE_PX) - (TILE_PX - 1) / 2.0) * PIXEL
    clean = np.zeros((n, LONG), np.float32)
    elevation = np.zeros(n)
    for b0 in progress(range(0, n, batch_size), desc="synth-shots", total=-(-n // batch_size), unit="batch"):
        sl = slice(b0, min(n, b0 + batch_size))
        gx = x[sl, None, None] + off[None, None, :]
        gy = y[sl, None, None] - off[None, :, None]          # row 0 is the northern edge
        hgt = np.asarray(scene.height(gx, gy), dtype=np.float64)
        elevation[sl] = np.asarray(scene.height(x[sl], y[sl]), dtype=np.float64)
        tiles = (hgt - hgt.mean(axis=(1, 2), keepdims=True)).astype(np.float32)
        w = simulate_waveforms(tiles, pixel_size=PIXEL, instrument=instrument, **overrides)
        if w.shape[1] != LONG:
            raise CrevkitValueError(f"the instrument gives {w.shape[1]} samples; the GLAH01 layout needs {LONG}")
        clean[sl] = w
    cf = np.asarray(scene.crevassed_fraction(x, y, FOOTPRINT_RADIUS), dtype=np.float64).reshape(n)

    # ---- make it look recorded
    shifted = _shift_rows(clean, shift)
    pk = shifted.max(axis=1)
    scale = np.where(pk > 0, amp / np.where(pk > 0, pk, 1.0), 0.0)
    if noise is None:
        nz = rng.standard_normal((n, LONG))
    else:
        nz = np.asarray(noise.sample_noise(n, LONG, rng), dtype=np.float64)
        sd = float(np.std(noise.pool)) or 1.0
        nz = (nz - float(np.mean(noise.pool))) / sd
    raw = scale[:, None] * shifted + bg_mean[:, None] + bg_sd[:, None] * nz
    clipped = raw > sat_level[:, None]
    recorded = np.minimum(raw, sat_level[:, None]).astype(np.float32)
    cols_ = np.arange(LONG)[None, :]
    recorded[cols_ >= nsamp[:, None]] = np.nan
    n_clipped = np.where(cols_ < nsamp[:, None], clipped, False).sum(axis=1).astype(np.int32)
    snr = amp / bg_sd

    # ---- GLAH01 storage: time-reversed through the sample-time table
    table = _sample_table()
    stored = np.full((n, LONG), _F32_FILL, np.float32)
    for row in np.unique(loc_row[wtype != 0]):
        sel = np.flatnonzero(loc_row == row)
        nv = LONG if row in _LONG_ROWS else SHORT
        times = table[row - 1, :nv]
        rank = np.argsort(np.argsort(times))             # time rank of each stored position
        stored[np.ix_(sel, np.arange(nv))] = recorded[sel][:, rank]
    miss = wtype == 0
    f64 = lambda a: np.where(miss, _F64_FILL, a)  # noqa: E731
    k = np.arange(48)
    tx = (tx_amp[:, None] * np.exp(-0.5 * ((k[None, :] - 23.5) / (6.0 / 2.3548)) ** 2)).astype(np.float32)
    tx[miss] = _F32_FILL

    from .readers._common import unproject

    lon, lat = unproject(x, y, "EPSG:3413")
    lon360 = np.mod(lon, 360.0)
    hz_x = np.concatenate(one_hz["x"]); hz_y = np.concatenate(one_hz["y"])
    hz_lon, hz_lat = unproject(hz_x, hz_y, "EPSG:3413")
    stem = f"synth_{year}_s{seed}"
    p01 = out_dir / f"GLAH01_{stem}.H5"
    p06 = out_dir / f"GLAH06_{stem}.H5"
    ptruth = out_dir / f"truth_{stem}.parquet"
    common_1hz = {
        "Data_1HZ/Time/i_rec_ndx": np.concatenate(one_hz["rec"]).astype(np.int32),
        "Data_1HZ/DS_UTCTime_1": np.concatenate(one_hz["t"]),
    }
    common_40 = {"Data_40HZ/Time/i_rec_ndx": rec, "Data_40HZ/Time/i_shot_count": cnt, "Data_40HZ/DS_UTCTime_40": t}
    _h5_write(p01, {
        **common_40, **common_1hz,
        "Data_1HZ/Geolocation/d1_pred_lat": hz_lat, "Data_1HZ/Geolocation/d1_pred_lon": np.mod(hz_lon, 360.0),
        "Data_40HZ/Waveform/RecWaveform/r_rng_wf": stored,
        "Data_40HZ/Waveform/RecWaveform/i_rec_wf_location_index": loc_row,
        "Data_40HZ/Waveform/Characteristics/i_waveformType": wtype,
        "Data_40HZ/Waveform/Characteristics/i_gainSet1064": np.where(miss, _I32_FILL, gain).astype(np.int32),
        "Data_40HZ/Waveform/Characteristics/d_4nsBgMean": f64(bg_mean),
        "Data_40HZ/Waveform/Characteristics/d_4nsBgSDEV": f64(bg_sd),
        "Data_40HZ/Waveform/TransmitWaveform/r_tx_wf": tx,
    }, {"ShortName": "GLAH01", "title": "crevkit synthetic GLAS shots (GLAH01 layout)",
        "crevkit_seed": seed, "crevkit_year": year},
        {"ANCILLARY_DATA": {"rec_wf_sample_location_table": table}})
    _h5_write(p06, {
        **common_40, **common_1hz,
        "Data_1HZ/Geolocation/d_lat": hz_lat, "Data_1HZ/Geolocation/d_lon": np.mod(hz_lon, 360.0),
        "Data_40HZ/Geolocation/d_lat": f64(lat), "Data_40HZ/Geolocation/d_lon": f64(lon360),
        "Data_40HZ/Elevation_Surfaces/d_elev": f64(elevation),
        "Data_40HZ/Waveform/d_maxRecAmp": f64(np.nanmax(np.where(miss[:, None], 0, recorded), axis=1)),
        "Data_40HZ/Waveform/i_gval_rcv": np.where(miss, _I32_FILL, gain).astype(np.int32),
        "Data_40HZ/Reflectivity/d_sDevNsOb1": f64(bg_sd),
    }, {"ShortName": "GLAH06", "title": "crevkit synthetic GLAS geolocation (GLAH06-like)"}, {})
    glas_epoch_ns = _GLAS_EPOCH.astype("datetime64[ns]").astype(np.int64)
    truth = pd.DataFrame({
        "shot_id": rec.astype(np.int64) * 100 + cnt.astype(np.int64),
        "i_rec_ndx": rec, "i_shot_count": cnt, "track": track,
        "time": pd.to_datetime(np.round(t * 1e9).astype(np.int64) + glas_epoch_ns, unit="ns", utc=True),
        "glas_time_s": t, "x": x, "y": y, "lon": lon, "lat": lat,
        "crevassed_fraction": cf, "waveform_type": wtype, "n_samples": nsamp,
        "shift": shift, "amplitude": amp, "scale": scale, "bg_mean": bg_mean, "bg_sd": bg_sd,
        "snr": snr, "saturation_level": sat_level, "n_clipped": n_clipped, "saturated": n_clipped >= 3,
        "gain": gain, "elevation": elevation, "location_row": loc_row,
    })
    paths = SynthPaths(p01, p06, ptruth)
    with atomic_path(paths.clean, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, clean)
    with atomic_path(paths.recorded, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, recorded)
    with atomic_path(ptruth, suffix=".parquet") as tmp:
        truth.to_parquet(tmp, index=False)
    return paths
