"""Empirical noise model: amplitude scales, time shifts and real noise vectors.

The denoiser trains on clean, unit-sum library waveforms made to look recorded:
``noisy = scale · shift(clean) + noise`` with a fresh ``(scale, shift, noise)``
for every waveform of every batch.  :class:`NoiseModel` supplies the three
from recorded waveforms (talk: "a distribution of scales ..., a distribution of
shifts ..., and 1.9 million noise vectors"):

1. Per shot, the background mean and noise sd (median / MAD, then the mean
   and sd of the samples within 3 sd of the median).
2. Shots with a clear peak are kept: ``(max − background) / sd ≥ min_snr``.
3. Leading edge: walking back from the peak, the last crossing of
   ``background + edge_fraction · peak`` (linear sub-sample position).  The
   shift is that position minus where a flat surface's library waveform (its
   highest point at ``lead``, the transmit pulse of ``pulse_fwhm_ns``) crosses
   the same fraction: ``shift = edge − (lead − fwhm/2 · √(ln(1/f)/ln 2) / dt)``.
   A shift of s samples puts the library's leading edge at ``lead + s``.
   Library waveforms of sloping or crevassed tiles show their edge later than
   a flat surface's; pass the library as ``reference=`` to measure shifts
   against its median detected edge instead.
4. Scale: ``"area"`` (default) — the sum of ``(w − background)`` over the
   return (from ``margin`` samples before the edge to ``margin`` samples after
   the last sample ≥ background + 4 sd) — so that ``scale · unit_sum_waveform``
   has the recorded energy; or ``"peak"`` — ``max − background``.
5. Noise vectors: the record is cut into windows of ``vector_length`` samples
   on a fixed grid; a window is kept if it lies wholly outside the return
   (and inside the valid samples), has no sample beyond ``spike_sigma`` sd,
   and no step (the means of its halves differ by less than ``step_sigma``
   standard errors).  Kept windows minus the shot's background mean form the
   pool (at most ``max_vectors``, subsampled reproducibly by ``seed``).
6. Record lengths: the number of recorded samples of every shot with any
   (GLAS keeps 200-sample short records beside 544-sample long ones), capped
   at ``n_samples``.  :meth:`NoiseModel.sample_record_lengths` draws from
   them, so the denoiser trains on records cut and padded the way the
   pipeline pads real short records (with their recorded median).

Units are the input's (volts for GLAS, digitizer counts for LVIS/GEDI); scales
and noise share them.  :meth:`NoiseModel.save` writes a directory
(``noise.npz`` + ``noise.json`` with the format version and the npz's
sha256) atomically; :meth:`NoiseModel.load` checks both.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_dir
from ._validation import check_int, check_positive
from ._sidecar import read_sidecar
from .errors import CrevkitTypeError, CrevkitValueError, IndexIntegrityError, InputFileError

__all__ = ["NoiseModel", "NOISE_MODEL_VERSION", "noise_report", "estimate_background", "leading_edges"]

NOISE_MODEL_VERSION = 1
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def estimate_background(waveforms: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-row background mean and noise sd of raw waveforms (NaN-padded allowed).

    Median / MAD first guess, then the mean and sd of the samples within 3 sd
    of the median; see :func:`crevkit.readers._common.robust_background`.
    """
    from .readers._common import robust_background

    w = np.asarray(waveforms, dtype=np.float64)
    if w.ndim != 2:
        raise CrevkitValueError(f"waveforms must be 2-dimensional, got shape {w.shape}")
    return robust_background(w)


def _edges(W: np.ndarray, bg: np.ndarray, fraction: float) -> np.ndarray:
    """Leading edge of each row: walking back from the maximum, the last crossing of
    ``bg + fraction · (max − bg)`` (linear, sub-sample); NaN where the row starts above it."""
    nb, m = W.shape
    Wn = np.where(np.isfinite(W), W, -np.inf)
    ipk = np.argmax(Wn, axis=1)
    peak = Wn[np.arange(nb), ipk] - bg
    th = bg + fraction * peak
    cols = np.arange(m)[None, :]
    with np.errstate(invalid="ignore"):
        below = (cols < ipk[:, None]) & (W < th[:, None])
    j = np.where(below.any(axis=1), m - 1 - np.argmax(below[:, ::-1], axis=1), -1)
    jj = np.clip(j, 0, max(m - 2, 0))
    w0 = W[np.arange(nb), jj]
    w1 = W[np.arange(nb), np.minimum(jj + 1, m - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip((th - w0) / (w1 - w0), 0.0, 1.0)
    edge = jj + np.nan_to_num(frac)
    return np.where((j >= 0) & np.isfinite(peak) & (peak > 0), edge, np.nan)


def leading_edges(waveforms: Any, *, fraction: float = 0.5, background: Any = None) -> np.ndarray:
    """Sub-sample leading-edge position of each waveform (the detector :meth:`NoiseModel.fit` uses).

    Walking back from the maximum, the last crossing of ``background +
    fraction · (max − background)``, linearly interpolated.

    Parameters
    ----------
    waveforms : array_like (n, m)
        Waveforms, earliest sample first (NaN padding allowed).
    fraction : float
        Threshold as a share of the peak above background (0.5: half maximum).
    background : array_like (n,) or float, optional
        Background level (default 0, as for clean library waveforms).

    Returns
    -------
    ndarray, float64 (n,)
        Positions in samples; NaN where a row has no crossing before its maximum.
    """
    fraction = check_positive(fraction, "fraction", maximum=0.99)
    W = np.asarray(waveforms, dtype=np.float64)
    if W.ndim != 2 or W.shape[1] < 2:
        raise CrevkitValueError(f"waveforms must be 2-dimensional with at least 2 samples, got shape {W.shape}")
    bg = np.zeros(W.shape[0]) if background is None else np.broadcast_to(
        np.asarray(background, np.float64), (W.shape[0],)).copy()
    return _edges(W, bg, fraction)


def _rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    raise CrevkitTypeError(f"rng must be a numpy Generator or an integer seed, got {type(rng).__name__}")


def _quantiles(a: np.ndarray) -> dict[str, float]:
    a = np.asarray(a, np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {f"q{int(q * 100):02d}": float("nan") for q in _QUANTILES}
    return {f"q{int(q * 100):02d}": float(v) for q, v in zip(_QUANTILES, np.quantile(a, _QUANTILES))}


class NoiseModel:
    """Distributions of amplitude scale and shift, and a pool of noise vectors.

    Build one with :meth:`fit` (from recorded waveforms), :meth:`synthetic`
    (parametric, for tests) or :meth:`load`.  Sampling methods take a NumPy
    ``Generator`` (or an integer seed) and are reproducible.

    Attributes
    ----------
    scales : ndarray, float32 (k,)
        Amplitude scales of the kept shots (``scale_kind``).
    shifts : ndarray, float32 (k,)
        Leading-edge shifts in samples relative to ``lead``.
    pool : ndarray, float32 (N, L)
        Zero-mean noise vectors.
    n_samples : int
        Length of the library waveforms the model is meant for (default
        ``length`` of :meth:`sample_noise`).
    meta : dict
        Units, sample interval, parameters and counts.
    """

    def __init__(self, scales: Any, shifts: Any, pool: Any, *, n_samples: int = 544,
                 meta: dict | None = None, extra: dict[str, np.ndarray] | None = None) -> None:
        self.scales = np.ascontiguousarray(scales, dtype=np.float32).ravel()
        self.shifts = np.ascontiguousarray(shifts, dtype=np.float32).ravel()
        pool = np.ascontiguousarray(pool, dtype=np.float32)
        if pool.ndim != 2 or pool.shape[0] == 0 or pool.shape[1] == 0:
            raise CrevkitValueError(f"the noise pool must be a non-empty 2-D array, got shape {pool.shape}")
        if self.scales.size == 0 or self.shifts.size == 0:
            raise CrevkitValueError("a noise model needs at least one scale and one shift")
        self.pool = pool
        self.n_samples = check_int(n_samples, "n_samples", minimum=1)
        self.meta = dict(meta or {})
        self.extra = {k: np.asarray(v) for k, v in (extra or {}).items()}

    def __repr__(self) -> str:
        return (f"NoiseModel({self.scales.size} shots, {self.pool.shape[0]} noise vectors × {self.pool.shape[1]}, "
                f"units={self.meta.get('units', '')!r})")

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, waveforms: Any, *, n_samples: int = 544, scale: str = "area", min_snr: float = 10.0,
            edge_fraction: float = 0.5, pulse_fwhm_ns: float | None = None,
            sample_interval_ns: float | None = None, lead: float = 10.0, vector_length: int = 64,
            margin: int | None = None, step_sigma: float = 4.0, spike_sigma: float = 6.0,
            max_vectors: int = 2_000_000, seed: int = 0, units: str | None = None,
            reference: Any = None, batch_size: int = 20_000) -> "NoiseModel":
        """Fit the model to raw recorded waveforms (see the module docstring).

        Parameters
        ----------
        waveforms : array_like (n, m) or ShotTable
            Recorded waveforms, earliest sample first, NaN-padded.  A
            :class:`~crevkit.shot_table.ShotTable` gives its valid waveforms,
            sample interval, units and instrument pulse width.
        n_samples : int
            Length of the library waveforms the model serves (default 544);
            shots whose shifted leading edge would leave ``[0, n_samples)`` are
            not used for the shift distribution.
        scale : {"area", "peak"}
            Which amplitude measure :meth:`sample_scales` returns.
        min_snr : float
            Keep shots with ``(max − background) / sd ≥ min_snr``.
        edge_fraction : float
            Leading edge threshold as a fraction of the peak above background.
        pulse_fwhm_ns : float, optional
            Transmit pulse FWHM (default: the instrument preset of a
            ShotTable, else 6 ns).
        sample_interval_ns : float, optional
            Sample spacing (default: the ShotTable's, else 1 ns).
        lead : float
            Leading-edge sample of the library waveforms (10).
        vector_length : int
            Length of the pooled noise vectors (64).
        margin : int, optional
            Samples kept clear around the return (default ``2·FWHM/dt + 2``).
        step_sigma, spike_sigma : float
            Window rejection thresholds (standard errors / sds).
        max_vectors : int
            Cap on the pool size (reproducible subsample by ``seed``).
        seed : int
            Seed of the subsampling.
        units : str, optional
            Units label (default: the ShotTable's).
        reference : None, float or array_like (k, n_samples), optional
            Where the detector finds the leading edge of an unshifted library
            waveform.  None: a flat surface's (``lead − FWHM/2 …``, see the
            module docstring); a number: that position; clean library
            waveforms: the median of their detected edges.  On sloping or
            crevassed tiles the visible edge lies later than ``lead`` (the
            tile's highest point has little footprint weight), so passing the
            library removes that offset from the shifts.
        batch_size : int
            Shots processed at once (memory bound).

        Returns
        -------
        NoiseModel

        Raises
        ------
        CrevkitValueError
            Bad parameters, or no shot / no noise window passes the criteria.
        """
        from .shot_table import ShotTable

        n_samples = check_int(n_samples, "n_samples", minimum=1)
        if scale not in ("area", "peak"):
            raise CrevkitValueError(f"scale must be 'area' or 'peak', got {scale!r}")
        min_snr = check_positive(min_snr, "min_snr")
        edge_fraction = check_positive(edge_fraction, "edge_fraction", maximum=0.99)
        vector_length = check_int(vector_length, "vector_length", minimum=4)
        max_vectors = check_int(max_vectors, "max_vectors", minimum=1)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        source = "array"
        if isinstance(waveforms, ShotTable):
            st = waveforms
            valid = st.valid_waveforms()
            w_all = np.asarray(st.waveforms)[valid]
            if sample_interval_ns is None and np.isfinite(st.sample_interval_ns):
                sample_interval_ns = st.sample_interval_ns
            if units is None:
                units = st.attrs.get("units", "")
            if pulse_fwhm_ns is None and st.attrs.get("instrument") in ("glas", "lvis", "gedi"):
                from .instruments import get_instrument

                pulse_fwhm_ns = get_instrument(st.attrs["instrument"]).pulse_fwhm_ns
            source = f"{st.attrs.get('instrument', '?')} shot table ({len(st)} shots)"
        else:
            w_all = np.asarray(waveforms)
            if w_all.dtype == object or not np.issubdtype(w_all.dtype, np.number):
                raise CrevkitTypeError(f"waveforms must be a numeric array or a ShotTable, got dtype {w_all.dtype}")
            if w_all.ndim != 2:
                raise CrevkitValueError(f"waveforms must be 2-dimensional, got shape {w_all.shape}")
        if w_all.shape[0] == 0 or w_all.shape[1] < vector_length:
            raise CrevkitValueError(f"waveforms of shape {w_all.shape} hold no record of at least "
                                    f"vector_length={vector_length} samples")
        dt = check_positive(sample_interval_ns if sample_interval_ns is not None else 1.0, "sample_interval_ns")
        fwhm = check_positive(pulse_fwhm_ns if pulse_fwhm_ns is not None else 6.0, "pulse_fwhm_ns")
        if margin is None:
            margin = int(math.ceil(2.0 * fwhm / dt)) + 2
        margin = check_int(margin, "margin", minimum=0)
        if reference is None:
            ref_edge = lead - 0.5 * fwhm * math.sqrt(math.log(1.0 / edge_fraction) / math.log(2.0)) / dt
        elif np.ndim(reference) == 0:
            ref_edge = float(reference)
        else:
            e = leading_edges(np.atleast_2d(np.asarray(reference, np.float64)), fraction=edge_fraction)
            if not np.isfinite(e).any():
                raise CrevkitValueError("reference waveforms have no detectable leading edge")
            ref_edge = float(np.nanmedian(e))

        rng = np.random.default_rng(seed)
        n_in = w_all.shape[0]
        L = vector_length
        counts = {"n_shots_in": int(n_in), "low_snr": 0, "edge_outside": 0, "windows_total": 0,
                  "windows_in_return": 0, "windows_spike": 0, "windows_step": 0}
        keep_scale: list[np.ndarray] = []
        keep_peak: list[np.ndarray] = []
        keep_area: list[np.ndarray] = []
        keep_shift: list[np.ndarray] = []
        keep_snr: list[np.ndarray] = []
        keep_bgsd: list[np.ndarray] = []
        keep_length: list[np.ndarray] = []
        pools: list[np.ndarray] = []
        for b0 in range(0, n_in, batch_size):
            W = np.asarray(w_all[b0: b0 + batch_size], dtype=np.float64)
            nb, m = W.shape
            finite = np.isfinite(W)
            n_valid = np.where(finite.any(axis=1), m - np.argmax(finite[:, ::-1], axis=1), 0)
            keep_length.append(np.minimum(n_valid[n_valid > 0], n_samples))
            bg, sd = estimate_background(W)
            Wn = np.where(finite, W, -np.inf)
            ipk = np.argmax(Wn, axis=1)
            peak = Wn[np.arange(nb), ipk] - bg
            with np.errstate(invalid="ignore", divide="ignore"):
                snr = peak / sd
            ok = np.isfinite(snr) & (snr >= min_snr) & (n_valid >= L)
            counts["low_snr"] += int((~ok).sum())
            cols = np.arange(m)[None, :]
            edge = _edges(W, bg, edge_fraction)
            edge_ok = ok & np.isfinite(edge)
            edge = np.nan_to_num(edge)
            shift = edge - ref_edge
            in_window = (lead + shift >= 0) & (lead + shift <= n_samples - 1)
            counts["edge_outside"] += int((ok & ~(edge_ok & in_window)).sum())
            use = edge_ok & in_window
            # end of the return: last sample >= bg + 4 sd
            above = np.nan_to_num(W, nan=-np.inf) >= (bg + 4.0 * sd)[:, None]
            last = np.where(above.any(axis=1), m - 1 - np.argmax(above[:, ::-1], axis=1), ipk)
            last = np.maximum(last, ipk)
            start = np.floor(edge).astype(np.int64) - margin
            stop = last + margin
            region = (cols >= start[:, None]) & (cols <= stop[:, None]) & finite
            area = np.where(region, W - bg[:, None], 0.0).sum(axis=1)
            keep_peak.append(peak[use])
            keep_area.append(area[use])
            keep_scale.append((area if scale == "area" else peak)[use])
            keep_shift.append(shift[use])
            keep_snr.append(snr[use])
            keep_bgsd.append(sd[use])
            # noise windows on a fixed grid, from all shots with a clear peak and an edge
            src = edge_ok
            K = m // L
            if K == 0 or not src.any():
                continue
            rows = np.flatnonzero(src)
            Wr = W[rows, : K * L].reshape(len(rows), K, L)
            w_start = np.arange(K) * L
            w_end = w_start + L - 1
            outside = (w_end[None, :] < start[rows, None]) | (w_start[None, :] > stop[rows, None])
            inside = w_end[None, :] < n_valid[rows, None]
            cand = outside & inside
            counts["windows_total"] += int(inside.sum())
            counts["windows_in_return"] += int((inside & ~outside).sum())
            v = Wr - bg[rows, None, None]
            s = sd[rows, None]
            with np.errstate(invalid="ignore"):
                spike = ~np.isfinite(v).all(axis=2) | (np.abs(np.nan_to_num(v)) > spike_sigma * s[..., None]).any(axis=2)
                h = L // 2
                step = np.abs(v[..., :h].mean(axis=2) - v[..., h:].mean(axis=2)) > step_sigma * s * math.sqrt(4.0 / L)
            counts["windows_spike"] += int((cand & spike).sum())
            counts["windows_step"] += int((cand & ~spike & step).sum())
            good = cand & ~spike & ~step
            if good.any():
                pools.append(v[good].astype(np.float32))
        scales = np.concatenate(keep_scale) if keep_scale else np.zeros(0)
        if scales.size == 0:
            raise CrevkitValueError(f"no shot passed the noise-model criteria (min_snr={min_snr}, leading edge "
                                    f"inside the window): {counts}")
        pool = np.concatenate(pools) if pools else np.zeros((0, L), np.float32)
        if pool.shape[0] == 0:
            raise CrevkitValueError(f"no signal-free noise window of {L} samples was found: {counts}")
        n_found = pool.shape[0]
        if n_found > max_vectors:
            pick = np.sort(rng.choice(n_found, size=max_vectors, replace=False))
            pool = pool[pick]
        counts.update(n_shots_used=int(scales.size), n_vectors_found=int(n_found), n_vectors=int(pool.shape[0]))
        meta = {
            "version": NOISE_MODEL_VERSION, "units": units or "", "sample_interval_ns": dt,
            "scale_kind": scale, "source": source, "lead": lead, "kind": "empirical",
            "params": {"min_snr": min_snr, "edge_fraction": edge_fraction, "pulse_fwhm_ns": fwhm,
                       "vector_length": L, "margin": margin, "step_sigma": step_sigma,
                       "spike_sigma": spike_sigma, "max_vectors": max_vectors, "seed": seed,
                       "reference_edge": ref_edge,
                       "reference": "flat" if reference is None else ("value" if np.ndim(reference) == 0
                                                                      else "library")},
            "counts": counts,
        }
        extra = {"peaks": np.concatenate(keep_peak).astype(np.float32),
                 "areas": np.concatenate(keep_area).astype(np.float32),
                 "snr": np.concatenate(keep_snr).astype(np.float32),
                 "bg_sd": np.concatenate(keep_bgsd).astype(np.float32),
                 "record_lengths": np.concatenate(keep_length).astype(np.int32)}
        return cls(scales, np.concatenate(keep_shift), pool, n_samples=n_samples, meta=meta, extra=extra)

    @classmethod
    def synthetic(cls, *, noise_sd: float = 0.01, snr_range: tuple[float, float] = (5.0, 100.0),
                  shift_range: tuple[float, float] = (-5.0, 100.0), n_samples: int = 544,
                  vector_length: int = 64, n_vectors: int = 20_000, n_shots: int = 10_000,
                  pulse_fwhm_ns: float = 6.0, sample_interval_ns: float = 1.0, seed: int = 0) -> "NoiseModel":
        """A parametric model: white Gaussian noise and log-uniform peak SNR.

        Scales are areas: a unit-sum Gaussian return of ``pulse_fwhm_ns`` times
        the scale has a peak of ``snr · noise_sd`` with ``snr`` log-uniform in
        ``snr_range``; shifts are uniform in ``shift_range`` (samples).
        """
        noise_sd = check_positive(noise_sd, "noise_sd")
        lo, hi = (float(v) for v in snr_range)
        if not 0 < lo <= hi:
            raise CrevkitValueError(f"snr_range must satisfy 0 < low <= high, got {snr_range}")
        s0, s1 = (float(v) for v in shift_range)
        if s1 < s0:
            raise CrevkitValueError(f"shift_range must be (low, high), got {shift_range}")
        rng = np.random.default_rng(seed)
        sigma = pulse_fwhm_ns / (2.0 * math.sqrt(2.0 * math.log(2.0))) / sample_interval_ns
        snr = np.exp(rng.uniform(math.log(lo), math.log(hi), n_shots))
        scales = snr * noise_sd * sigma * math.sqrt(2.0 * math.pi)
        shifts = rng.uniform(s0, s1, n_shots)
        pool = rng.normal(0.0, noise_sd, (n_vectors, vector_length))
        meta = {"version": NOISE_MODEL_VERSION, "units": "", "sample_interval_ns": sample_interval_ns,
                "scale_kind": "area", "source": "synthetic", "kind": "synthetic", "lead": 10.0,
                "params": {"noise_sd": noise_sd, "snr_range": [lo, hi], "shift_range": [s0, s1],
                           "pulse_fwhm_ns": pulse_fwhm_ns, "vector_length": vector_length, "seed": seed},
                "counts": {"n_shots_in": n_shots, "n_shots_used": n_shots, "n_vectors": n_vectors}}
        extra = {"snr": snr.astype(np.float32), "peaks": (snr * noise_sd).astype(np.float32),
                 "bg_sd": np.full(n_shots, noise_sd, np.float32)}
        return cls(scales, shifts, pool, n_samples=n_samples, meta=meta, extra=extra)

    # ----------------------------------------------------------------- sampling
    def sample_scales(self, n: int, rng: Any = None) -> np.ndarray:
        """``n`` amplitude scales drawn (with replacement) from the fitted ones, float32."""
        n = check_int(n, "n", minimum=0)
        return self.scales[_rng(rng).integers(0, self.scales.size, n)].astype(np.float32)

    def sample_shifts(self, n: int, rng: Any = None) -> np.ndarray:
        """``n`` shifts in samples relative to the library's leading edge (fractional), float32."""
        n = check_int(n, "n", minimum=0)
        return self.shifts[_rng(rng).integers(0, self.shifts.size, n)].astype(np.float32)

    def sample_noise(self, n: int, length: int | None = None, rng: Any = None) -> np.ndarray:
        """``(n, length)`` float32 noise: random pool vectors, concatenated when shorter than ``length``."""
        n = check_int(n, "n", minimum=0)
        length = self.n_samples if length is None else check_int(length, "length", minimum=1)
        L = self.pool.shape[1]
        per = -(-length // L)
        idx = _rng(rng).integers(0, self.pool.shape[0], (n, per))
        return np.ascontiguousarray(self.pool[idx].reshape(n, per * L)[:, :length])

    @property
    def has_record_lengths(self) -> bool:
        """Whether the model knows its source's record lengths (fitted models do; synthetic ones do not)."""
        r = self.extra.get("record_lengths")
        return r is not None and r.size > 0

    def sample_record_lengths(self, n: int, rng: Any = None) -> np.ndarray:
        """``n`` record lengths (recorded samples per shot, at most ``n_samples``) drawn from the fitted ones, int64.

        A model without them (synthetic, or saved before they were kept)
        returns ``n_samples`` for every shot and draws nothing from ``rng``.
        """
        n = check_int(n, "n", minimum=0)
        if not self.has_record_lengths:
            return np.full(n, self.n_samples, np.int64)
        r = self.extra["record_lengths"]
        return np.minimum(r[_rng(rng).integers(0, r.size, n)].astype(np.int64), self.n_samples)

    def sample(self, n: int, length: int | None = None, rng: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(scales, shifts, noise)`` for one batch, drawn in that order from ``rng``."""
        g = _rng(rng)
        return self.sample_scales(n, g), self.sample_shifts(n, g), self.sample_noise(n, length, g)

    def fingerprint(self) -> str:
        """SHA-256 of the model's content (scales, shifts, pool, record lengths, ``n_samples``): identifies it in provenance."""
        h = hashlib.sha256(b"crevkit-noise-model")
        h.update(str(self.n_samples).encode())
        arrays = [self.scales, self.shifts, self.pool]
        if self.has_record_lengths:  # absent: the same digest as before they were kept
            arrays.append(self.extra["record_lengths"])
        for arr in arrays:
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    # ---------------------------------------------------------------- reporting
    def summary(self) -> dict[str, Any]:
        """Counts, noise sd and the quantiles of scales, peaks, shifts and SNR (JSON-able)."""
        c = self.meta.get("counts", {})
        out = {
            "version": self.meta.get("version", NOISE_MODEL_VERSION),
            "kind": self.meta.get("kind", ""),
            "source": self.meta.get("source", ""),
            "units": self.meta.get("units", ""),
            "sample_interval_ns": self.meta.get("sample_interval_ns"),
            "scale_kind": self.meta.get("scale_kind", "area"),
            "n_shots_in": int(c.get("n_shots_in", self.scales.size)),
            "n_shots_used": int(self.scales.size),
            "n_vectors": int(self.pool.shape[0]),
            "vector_length": int(self.pool.shape[1]),
            "noise_mean": float(self.pool.mean(dtype=np.float64)),
            "noise_sd": float(self.pool.std(dtype=np.float64)),
            "scale_quantiles": _quantiles(self.scales),
            "shift_quantiles": _quantiles(self.shifts),
        }
        for key in ("peaks", "snr", "bg_sd"):
            if key in self.extra and self.extra[key].size:
                out[f"{key}_quantiles"] = _quantiles(self.extra[key])
        if self.has_record_lengths:
            r = self.extra["record_lengths"]
            out["record_length_quantiles"] = _quantiles(r.astype(np.float64))
            out["short_record_share"] = float((r < self.n_samples).mean())
        for key in ("low_snr", "edge_outside", "windows_total", "windows_in_return", "windows_spike",
                    "windows_step", "n_vectors_found"):
            if key in c:
                out[key] = int(c[key])
        return out

    # ---------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to the directory ``path`` atomically (``noise.npz`` + ``noise.json``)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            arrays = {"scales": self.scales, "shifts": self.shifts, "pool": self.pool}
            arrays.update({f"extra_{k}": v for k, v in self.extra.items()})
            np.savez(tmp / "noise.npz", **arrays)
            digest = hashlib.sha256((tmp / "noise.npz").read_bytes()).hexdigest()
            doc = {"format": "crevkit-noise-model", "version": NOISE_MODEL_VERSION, "sha256": digest,
                   "n_samples": self.n_samples, "meta": self.meta, "summary": self.summary()}
            (tmp / "noise.json").write_text(json.dumps(doc, indent=2, default=float))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NoiseModel":
        """Read a model written by :meth:`save`, checking its version and sha256.

        Raises
        ------
        InputFileError
            A missing or unreadable part, or a newer format version.
        IndexIntegrityError
            The npz does not match the sha256 recorded in ``noise.json``.
        """
        path = Path(path)
        jpath, npath = path / "noise.json", path / "noise.npz"
        missing = "not a noise model (noise.json and noise.npz are needed)"
        if not npath.is_file():
            raise InputFileError(f"{path}: {missing}")
        doc = read_sidecar(jpath, fmt="crevkit-noise-model", what="noise model", missing=missing,
                           version_key="version", max_version=NOISE_MODEL_VERSION)
        raw = npath.read_bytes()
        if hashlib.sha256(raw).hexdigest() != doc.get("sha256"):
            raise IndexIntegrityError(f"{npath}: sha256 does not match {jpath} (file changed or truncated)")
        with np.load(npath) as z:
            extra = {k[len("extra_"):]: z[k] for k in z.files if k.startswith("extra_")}
            return cls(z["scales"], z["shifts"], z["pool"], n_samples=int(doc["n_samples"]),
                       meta=doc.get("meta", {}), extra=extra)


def noise_report(source: Any, *, n_samples: int | None = None, **fit_kwargs: Any) -> dict[str, Any]:
    """Fit a :class:`NoiseModel` to a file (any reader's format) or a ShotTable and return its summary.

    Parameters
    ----------
    source : path or ShotTable
        E.g. the real LVIS ``.pls`` file: real noise, not ours.
    n_samples : int, optional
        Library length (default: the table's waveform width).
    **fit_kwargs
        Passed to :meth:`NoiseModel.fit`.

    Returns
    -------
    dict
        :meth:`NoiseModel.summary` plus ``"file"`` and ``"n_shots_read"``.
    """
    from .shot_table import ShotTable

    if isinstance(source, ShotTable):
        st, name = source, source.attrs.get("instrument", "table")
    else:
        from .readers import read_shots

        st, name = read_shots(source), str(source)
    if n_samples is None:
        n_samples = max(1, st.n_max)
    model = NoiseModel.fit(st, n_samples=n_samples, **fit_kwargs)
    out = model.summary()
    out["file"] = name
    out["n_shots_read"] = len(st)
    return out
