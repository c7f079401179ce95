"""LVIS full waveforms in PulseWaves format (``.pls`` pulses + ``.wvs`` waves).

Implements the PulseWaves 0.3 layout (github.com/PulseWaves/Specification):
a 352-byte Pulse header, VLRs (a ``PulseWaves_Spec`` pulse descriptor, record
IDs 200001–200254: a composition record and one sampling record per sampling,
type 1 outgoing / 2 returning), fixed-size pulse records of format 0 (GPS
time, offset into the Waves file, anchor and target points, first/last
returning sample, descriptor index), and a Waves file of a 60-byte header then,
per pulse, the samples of each sampling (with optional per-segment duration
and sample counts).  Uncompressed samples of 8 or 16 bits are supported.

Positions: the anchor/target points are scaled integers in the header's CRS
(a GeoKeyDirectory VLR; the real LVIS file is geographic WGS 84 with
longitudes 0–360).  Each shot is placed where its beam is at the returning
waveform's highest sample (``elevation`` is that sample's height).

Time: PulseWaves stores GPS time scaled and offset.  The real file's offset
is 0, so its times are seconds of the GPS week/day without a date: ``time``
is NaT unless ``time_origin`` (the UTC instant of T = 0) is given; the raw
seconds are kept in ``gps_time_s``.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputFileError
from ..shot_table import ShotTable
from ._common import check_path, project, robust_background, wrap_lon

__all__ = ["read_lvis", "read_pulsewaves_header"]

_HEADER = struct.Struct("<16sIIIHH8s64s64sHHBBHqqIIIIqIidd qq dddddd dddddd".replace(" ", ""))
_VLR = struct.Struct("<16sIIq64s")
_PULSE0 = np.dtype([("T", "<i8"), ("offset", "<i8"), ("ax", "<i4"), ("ay", "<i4"), ("az", "<i4"),
                    ("tx", "<i4"), ("ty", "<i4"), ("tz", "<i4"), ("first", "<i2"), ("last", "<i2"),
                    ("desc", "<u2"), ("intensity", "u1"), ("classification", "u1")])
_WAVES_HEADER = 60


@dataclasses.dataclass
class _Sampling:
    type: int
    channel: int
    bits_duration: int
    duration_scale: float
    duration_offset: float
    bits_segments: int
    bits_samples: int
    n_segments: int
    n_samples: int
    bits_per_sample: int
    sample_units: float
    compression: int
    description: str


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace")


def read_pulsewaves_header(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a ``.pls`` header and its VLRs (pulse descriptors, GeoKeys).

    Raises
    ------
    InputFileError
        Wrong signature, truncated header or VLRs, or unsupported content.
    """
    p = check_path(path)
    data = p.read_bytes()
    if len(data) < _HEADER.size:
        raise InputFileError(f"{p}: truncated PulseWaves header ({len(data)} bytes, need {_HEADER.size})")
    f = _HEADER.unpack_from(data, 0)
    if _cstr(f[0]) != "PulseWavesPulse":
        raise InputFileError(f"{p}: not a PulseWaves pulse file (signature {f[0][:16]!r})")
    (sig, gparams, fsid, g1, g2, g3, g4, system, software, doy, year, vmaj, vmin, hsize, off_pulses,
     n_pulses, pformat, pattrs, psize, pcomp, _res, n_vlr, n_avlr, t_scale, t_off, t_min, t_max,
     xs, ys, zs, xo, yo, zo, xmin, xmax, ymin, ymax, zmin, zmax) = f
    hdr = {"system": _cstr(system), "software": _cstr(software), "version": f"{vmaj}.{vmin}",
           "header_size": hsize, "offset_to_pulses": off_pulses, "n_pulses": n_pulses,
           "pulse_format": pformat, "pulse_attributes": pattrs, "pulse_size": psize,
           "pulse_compression": pcomp, "n_vlr": n_vlr, "t_scale": t_scale, "t_offset": t_off,
           "scale": (xs, ys, zs), "offset": (xo, yo, zo),
           "bounds": (xmin, xmax, ymin, ymax, zmin, zmax), "descriptors": {}, "geokeys": {}}
    if pformat != 0 or pcomp != 0:
        raise InputFileError(f"{p}: pulse format {pformat} / compression {pcomp} is not supported (only 0/0)")
    if psize < _PULSE0.itemsize:
        raise InputFileError(f"{p}: pulse size {psize} is smaller than format 0 ({_PULSE0.itemsize} bytes)")
    if n_pulses <= 0:
        raise InputFileError(f"{p}: header says it holds {n_pulses} pulses")
    pos = hsize
    for i in range(n_vlr):
        if pos + _VLR.size > len(data):
            raise InputFileError(f"{p}: truncated in VLR {i} header at byte {pos}")
        uid, rid, _r, length, _desc = _VLR.unpack_from(data, pos)
        payload = data[pos + _VLR.size: pos + _VLR.size + length]
        if len(payload) != length:
            raise InputFileError(f"{p}: truncated in VLR {i} ({_cstr(uid)} {rid}) payload")
        uid_s = _cstr(uid)
        if uid_s == "PulseWaves_Spec" and 200001 <= rid < 200255:
            hdr["descriptors"][rid - 200000] = _parse_descriptor(payload, p, rid)
        elif uid_s == "PulseWaves_Proj" and rid == 34735 and length >= 8:
            keys = np.frombuffer(payload[: (length // 2) * 2], "<u2")
            nkeys = int(keys[3])
            for k in range(nkeys):
                kid, loc, cnt, val = keys[4 + 4 * k: 8 + 4 * k]
                if loc == 0:
                    hdr["geokeys"][int(kid)] = int(val)
        pos += _VLR.size + length
    if off_pulses + n_pulses * psize > len(data):
        raise InputFileError(f"{p}: truncated: {n_pulses} pulses of {psize} bytes from byte {off_pulses} "
                             f"need {off_pulses + n_pulses * psize} bytes, the file has {len(data)}")
    hdr["_data"] = data
    return hdr


def _parse_descriptor(payload: bytes, p: Path, rid: int) -> dict[str, Any]:
    if len(payload) < 28:
        raise InputFileError(f"{p}: pulse descriptor VLR {rid} is truncated")
    size, _r, oc2a, n_extra, n_samplings, units = struct.unpack_from("<IIiHHf", payload, 0)
    samplings = []
    pos = size
    for s in range(n_samplings):
        if pos + 40 > len(payload):
            raise InputFileError(f"{p}: pulse descriptor VLR {rid} sampling {s} is truncated")
        (ssize, _r2, typ, ch, _unused, bdur, sdur, odur, bseg, bsmp, nseg, nsmp, bps, lut, sunits,
         comp) = struct.unpack_from("<IIBBBBffBBHIHHfI", payload, pos)
        desc = _cstr(payload[pos + 40: pos + ssize][-64:]) if ssize > 40 else ""
        samplings.append(_Sampling(typ, ch, bdur, sdur, odur, bseg, bsmp, nseg, nsmp, bps, sunits, comp, desc))
        pos += max(ssize, 40)
    return {"sample_units": units, "n_extra": n_extra, "samplings": samplings}


def _read_uint(buf: memoryview, pos: int, bits: int) -> tuple[int, int]:
    if bits == 0:
        return 0, pos
    nb = bits // 8
    return int.from_bytes(buf[pos: pos + nb], "little"), pos + nb


def read_lvis(path: str | os.PathLike, *, waves: str | os.PathLike | None = None, crs: str = "EPSG:3413",
              time_origin: Any = None) -> ShotTable:
    """Read LVIS waveforms from a PulseWaves ``.pls`` + ``.wvs`` pair.

    Parameters
    ----------
    path : path
        The ``.pls`` file.
    waves : path, optional
        The ``.wvs`` file (default: same name with ``.wvs``).
    crs : str
        CRS of the ``x``/``y`` columns (default EPSG:3413).
    time_origin : str or datetime-like, optional
        UTC instant of GPS time stamp 0 (e.g. the start of the GPS week); without
        it ``time`` is NaT (the file stores no date).

    Returns
    -------
    ShotTable
        ``waveforms``: the returning sampling (digitizer counts, float32; the
        real file: 432 samples every 2 ns), ``transmit``: the outgoing one (80
        samples).  ``shot_id`` is the integer GPS time stamp T (unique per
        pulse).  ``waveform_type`` 1, ``gain`` NaN, ``bg_mean``/``bg_sd`` from
        the waveform (median/MAD), ``saturated``: the maximum code (2^bits − 1)
        is reached.  Extra columns: ``gps_time_s``, ``elevation``,
        ``pulse_index``.  For the real ``lvis_example1`` file: 1000 pulses,
        lat 83.1643–83.1678 °N, lon −59.313 to −59.201 °E, counts 11–166.

    Raises
    ------
    InputFileError
        Missing ``.wvs``, wrong signatures, truncated files, a pulse whose
        waves lie outside the ``.wvs`` file, unsupported compression.
    """
    p = check_path(path)
    hdr = read_pulsewaves_header(p)
    wpath = Path(waves) if waves is not None else p.with_suffix(".wvs")
    if not wpath.exists():
        raise InputFileError(f"{p}: its Waves file {wpath} does not exist")
    data = hdr.pop("_data")
    n = int(hdr["n_pulses"])
    rec = np.frombuffer(data, dtype=np.dtype({"names": list(_PULSE0.names),
                                              "formats": [_PULSE0.fields[k][0] for k in _PULSE0.names],
                                              "offsets": [_PULSE0.fields[k][1] for k in _PULSE0.names],
                                              "itemsize": int(hdr["pulse_size"])}),
                        count=n, offset=int(hdr["offset_to_pulses"]))
    wdata = wpath.read_bytes()
    if len(wdata) < _WAVES_HEADER or _cstr(wdata[:16]) != "PulseWavesWaves":
        raise InputFileError(f"{wpath}: not a PulseWaves waves file (signature {wdata[:16]!r})")
    if struct.unpack_from("<I", wdata, 16)[0] != 0:
        raise InputFileError(f"{wpath}: compressed waves are not supported")
    desc_ids = np.unique(rec["desc"] & 0xFF)
    for d in desc_ids:
        if int(d) not in hdr["descriptors"]:
            raise InputFileError(f"{p}: pulses use pulse descriptor {int(d)} but no such VLR (record {200000 + int(d)})")
    buf = memoryview(wdata)
    rx_list: list[np.ndarray] = []
    tx_list: list[np.ndarray | None] = []
    rx_dur = np.zeros(n)
    rx_step = np.ones(n)
    rx_bits = 8
    rx_units = None
    tx_units = None
    for i in range(n):
        d = hdr["descriptors"][int(rec["desc"][i]) & 0xFF]
        pos = int(rec["offset"][i])
        if pos < _WAVES_HEADER or pos >= len(wdata):
            raise InputFileError(f"{wpath}: pulse {i} points to byte {pos}, outside the file ({len(wdata)} bytes)")
        pos += d["n_extra"]
        rx = tx = None
        for s in d["samplings"]:
            if s.compression != 0:
                raise InputFileError(f"{p}: compressed samplings are not supported")
            if s.bits_per_sample not in (8, 16):
                raise InputFileError(f"{p}: {s.bits_per_sample}-bit samples are not supported")
            nseg = s.n_segments
            if s.bits_segments:
                nseg, pos = _read_uint(buf, pos, s.bits_segments)
            segs = []
            dur0 = None
            for _ in range(nseg):
                dur, pos = _read_uint(buf, pos, s.bits_duration)
                ns = s.n_samples
                if s.bits_samples:
                    ns, pos = _read_uint(buf, pos, s.bits_samples)
                nbytes = ns * s.bits_per_sample // 8
                if pos + nbytes > len(wdata):
                    raise InputFileError(f"{wpath}: truncated: pulse {i} needs bytes up to {pos + nbytes}, "
                                         f"the file has {len(wdata)}")
                dtype = np.uint8 if s.bits_per_sample == 8 else np.dtype("<u2")
                segs.append(np.frombuffer(wdata, dtype=dtype, count=ns, offset=pos).astype(np.float32))
                if dur0 is None:
                    dur0 = s.duration_scale * dur + s.duration_offset
                pos += nbytes
            samples = np.concatenate(segs) if segs else np.zeros(0, np.float32)
            if s.type == 2 and rx is None:
                rx = samples
                rx_dur[i] = dur0 or 0.0
                rx_step[i] = s.sample_units / d["sample_units"] if d["sample_units"] else 1.0
                rx_bits = s.bits_per_sample
                rx_units = s.sample_units
            elif s.type == 1 and tx is None:
                tx = samples
                tx_units = s.sample_units
        if rx is None:
            raise InputFileError(f"{p}: pulse {i}'s descriptor has no returning (type 2) sampling")
        rx_list.append(rx)
        tx_list.append(tx)
    n_max = max(len(r) for r in rx_list)
    wf = np.full((n, n_max), np.nan, np.float32)
    nsamp = np.zeros(n, np.int32)
    for i, r in enumerate(rx_list):
        wf[i, : len(r)] = r
        nsamp[i] = len(r)
    transmit = None
    if all(t is not None for t in tx_list):
        m = max(len(t) for t in tx_list)
        transmit = np.full((n, m), np.nan, np.float32)
        for i, t in enumerate(tx_list):
            transmit[i, : len(t)] = t
    # positions at the highest sample of the returning waveform
    xs, ys, zs = hdr["scale"]
    xo, yo, zo = hdr["offset"]
    ax, ay, az = rec["ax"] * xs + xo, rec["ay"] * ys + yo, rec["az"] * zs + zo
    tx_, ty_, tz_ = rec["tx"] * xs + xo, rec["ty"] * ys + yo, rec["tz"] * zs + zo
    peak = np.nanargmax(np.where(np.isfinite(wf), wf, -np.inf), axis=1)
    units = rx_dur + peak * rx_step
    px = ax + units * (tx_ - ax) / 1000.0
    py = ay + units * (ty_ - ay) / 1000.0
    pz = az + units * (tz_ - az) / 1000.0
    gk = hdr["geokeys"]
    if gk.get(1024, 2) == 1 and 3072 in gk:  # projected
        from ._common import unproject

        lon, lat = unproject(px, py, f"EPSG:{gk[3072]}")
    else:
        geog = gk.get(2048, 4326)
        if geog != 4326:
            from ._common import _transformer

            lon, lat = _transformer(f"EPSG:{geog}", "EPSG:4326").transform(px, py)
        else:
            lon, lat = px, py
        lon = wrap_lon(lon)
    x, y = project(lon, lat, crs)
    gps = rec["T"].astype(np.float64) * hdr["t_scale"] + hdr["t_offset"]
    if time_origin is not None:
        origin = pd.Timestamp(time_origin)
        origin = origin.tz_localize("UTC") if origin.tzinfo is None else origin.tz_convert("UTC")
        time = origin + pd.to_timedelta(np.round(gps * 1e9).astype(np.int64), unit="ns")
    else:
        time = pd.to_datetime(np.full(n, np.iinfo(np.int64).min), unit="ns", utc=True)
    bg_mean, bg_sd = robust_background(wf)
    sat = np.nanmax(wf, axis=1) >= (2 ** rx_bits - 1)
    table = pd.DataFrame({
        "shot_id": rec["T"].astype(np.int64),
        "time": time,
        "lon": lon, "lat": lat, "x": x, "y": y,
        "waveform_type": np.ones(n, np.int8),
        "gain": np.full(n, np.nan),
        "bg_mean": bg_mean, "bg_sd": bg_sd,
        "saturated": sat,
        "n_samples": nsamp,
        "source": pd.array([str(p)] * n, dtype="string"),
        "gps_time_s": gps, "elevation": pz, "pulse_index": np.arange(n, dtype=np.int32),
    })
    attrs = {"instrument": "lvis", "product": "PulseWaves", "crs": crs, "units": "counts",
             "system": hdr["system"], "pulsewaves_version": hdr["version"],
             "time_note": None if time_origin is not None else
             "PulseWaves time stamps have no date (T offset 0); pass time_origin= for absolute UTC"}
    return ShotTable(table, wf, float(rx_units or 1.0), transmit=transmit,
                     transmit_interval_ns=float(tx_units) if tx_units else None, attrs=attrs)
