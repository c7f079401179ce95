"""NumPy twin of the C++ forward model (``crevkit.simulate_waveforms``).

Same signature, same plan (footprint weights, pulse, tilt from
:func:`crevkit.simulate.make_plan`), same algorithm.  Bin positions are
float32, one rounding per operation in the kernel's order (effective height,
``u = lead + (h_max - h) * bins_per_metre``, nearest bin with ties to even,
offset ``u - b``), so twin and kernel put every pixel in the same bin with the
same offset; the rest is float64: the per-bin weight moments with
``np.bincount``, then ``np.convolve`` with the pulse and its first and second
differences (second-order Taylor shift).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..instruments import Instrument
from ..simulate import SimulationPlan, _finish, _tiles_argument, make_plan

__all__ = ["simulate_waveforms", "incidence_cosine"]


def _axis_gradient(z: np.ndarray, axis: int, step: float) -> np.ndarray:
    """Central differences, one-sided next to NaN or the edge, 0 with no neighbour."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 1)
    zp = np.pad(z, pad, constant_values=np.nan)
    n = z.shape[axis]
    prev = np.take(zp, np.arange(0, n), axis=axis)
    nxt = np.take(zp, np.arange(2, n + 2), axis=axis)
    has_prev, has_next = ~np.isnan(prev), ~np.isnan(nxt)
    with np.errstate(invalid="ignore"):
        central = (nxt - prev) / (2.0 * step)
        forward = (nxt - z) / step
        backward = (z - prev) / step
    return np.where(has_prev & has_next, central,
                    np.where(has_next, forward, np.where(has_prev, backward, 0.0)))


def incidence_cosine(z: np.ndarray, pixel_size: float, look: tuple[float, float, float]) -> np.ndarray:
    """cos(incidence angle) per pixel, clamped at 0 (rows run north to south)."""
    gx = _axis_gradient(z, 1, pixel_size)
    gy = -_axis_gradient(z, 0, pixel_size)
    c = (-gx * look[0] - gy * look[1] + look[2]) / np.sqrt(1.0 + gx * gx + gy * gy)
    return np.maximum(c, 0.0)


def _simulate_one(tile: np.ndarray, plan: SimulationPlan) -> tuple[np.ndarray, int]:
    """One waveform and its status (0 ok, 1 empty, 2 infinite heights)."""
    z = tile.astype(np.float32)
    if np.isinf(z).any():
        return np.zeros(plan.n_samples), 2
    valid = ~np.isnan(z)
    if not valid.any():
        return np.zeros(plan.n_samples), 1
    f32 = np.float32
    if plan.tilted:  # float32, evaluated left to right like the kernel
        h = (f32(plan.cos_tilt) * z + plan.tilt_x[None, :]) + plan.tilt_y[:, None]
    else:
        h = z
    w = plan.weights.astype(np.float64)
    if plan.incidence:
        w = w * incidence_cosine(z.astype(np.float64), plan.pixel_size, plan.look)
    hv, wv = h[valid], w[valid]
    limit = plan.hist_len
    u = f32(plan.lead_bins) + (hv.max() - hv) * f32(plan.bins_per_metre)  # float32
    u = np.minimum(u, f32(limit))
    bf = np.rint(u)  # nearest bin, ties to even
    d = (u - bf).astype(np.float64)  # exact
    b = bf.astype(np.int64)
    wave = np.zeros(plan.n_samples)
    for moment, coeff in ((wv, 1.0), (wv * d, -1.0), (wv * d * d, 0.5)):
        hist = np.bincount(b, moment, minlength=limit + 1)[:limit]
        kernel = plan.pulse[{1.0: 0, -1.0: 1, 0.5: 2}[coeff]]
        wave += coeff * np.convolve(hist, kernel)[plan.pulse_centre:plan.pulse_centre + plan.n_samples]
    wave = np.maximum(wave, 0.0)
    total = wave.sum()
    if not total > 0:
        return np.zeros(plan.n_samples), 1
    return (wave / total if plan.normalize else wave), 0


def simulate_waveforms(tiles: Any, pixel_size: float = 0.5, instrument: str | Instrument = "glas",
                       **overrides: Any) -> np.ndarray:
    """Pure-NumPy forward model; see :func:`crevkit.simulate_waveforms`."""
    arr, single = _tiles_argument(tiles)
    plan = make_plan(arr.shape[1:], pixel_size, instrument, **overrides)
    out = np.zeros((arr.shape[0], plan.n_samples), dtype=np.float32)
    status = np.zeros(arr.shape[0], dtype=np.uint8)
    for n in range(arr.shape[0]):
        wave, status[n] = _simulate_one(arr[n], plan)
        out[n] = wave
    return _finish(out, status, plan, single)
