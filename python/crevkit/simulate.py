"""The waveform forward model: DEM tiles -> simulated laser-altimeter returns.

Physics (see DESIGN.md, "Forward model"):

* Footprint: Gaussian energy profile centred on the tile centre, σ = 1/e²
  diameter / 4 (GLAS: 70 m → 17.5 m); elliptical if a minor diameter is given.
* Time: two-way, one bin of ``bin_ns`` spans ``c · bin_ns / 2`` metres of height
  (0.1499 m for 1 ns).  The highest valid point of the tile returns first and is
  placed at ``lead_ns`` (10 ns by default).
* Binning with sub-bin accuracy: each pixel lands at a fractional bin
  b + d (b the nearest bin, |d| ≤ 1/2).  Per bin the kernel accumulates the
  weight moments Σw, Σw·d and Σw·d², and the pulse is shifted by a
  second-order Taylor expansion, p(t − b − d) ≈ p − d·p' + d²/2·p'', with p'
  and p'' the pulse's discrete central differences.  That keeps the return's
  area, centroid and variance exact for any sub-bin distribution of the
  heights (a plain ``int(z / 0.15)`` truncation shifts the centroid by half a
  bin; a linear split between two bins adds up to 1/4 bin² of variance), so a
  plane returns exactly σ_t² = σ_pulse² + σ_surface².  Bin positions are
  computed in float32 (nearest bin with ties to even), identically in the
  kernel and in :mod:`crevkit.reference`.  The expansion can leave
  negative values of the order of 1e-9 in the far tails: they are set to 0.
* Pulse: the moments are convolved with the transmit pulse as a separate step.
* Output: ``n_samples`` samples (GLAS: 544 × 1 ns), unit sum (``normalize=True``);
  with ``normalize=False`` the sum is the footprint energy that fell in the
  window (the footprint weights are not renormalized), which is how energy
  conservation is tested.

Nodata (NaN) pixels are excluded; with unit-sum output this renormalizes the
footprint weights over the valid pixels.  A tile with no valid pixel (or no
energy inside the window) raises :class:`crevkit.CrevkitValueError` naming the
tile rows (``on_empty="raise"``, the default) or, with ``on_empty="zero"``,
gives an all-zero row: such rows are exactly the rows whose sum is 0.

Options (both off by default): ``incidence_weighting`` multiplies each pixel's
weight by the cosine of its incidence angle (from central-difference DEM
gradients, one-sided next to nodata, faces turned away get 0), and
``off_nadir_angle`` / ``off_nadir_azimuth`` (degrees; the azimuth, clockwise
from north, towards which the beam leans) apply off-nadir pointing as a range
tilt: the range is measured along the look direction instead of the vertical.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import as_float32_array, check_finite_number, check_positive, resolve_threads
from .errors import CrevkitTypeError, CrevkitValueError
from .instruments import Instrument, get_instrument

__all__ = ["simulate_waveforms", "footprint_weights", "transmit_pulse", "pulse_kernels", "SimulationPlan", "make_plan",
           "simulate_stack"]

_OPTION_DEFAULTS: dict[str, Any] = {
    "incidence_weighting": False,
    "off_nadir_angle": 0.0,
    "off_nadir_azimuth": 0.0,
    "normalize": True,
    "on_empty": "raise",
    "n_threads": None,
}

def footprint_weights(shape: tuple[int, int], pixel_size: float, instrument: Instrument) -> np.ndarray:
    """Gaussian footprint energy weight of each pixel of a tile (float32, peak 1).

    Pixel (i, j) has its centre at x = (j − (nx−1)/2)·pixel_size (east),
    y = ((ny−1)/2 − i)·pixel_size (north): row 0 is the northern edge.
    """
    ny, nx = shape
    x = (np.arange(nx) - (nx - 1) / 2.0) * pixel_size
    y = ((ny - 1) / 2.0 - np.arange(ny)) * pixel_size
    sa, sb = instrument.footprint_sigma, instrument.footprint_minor_sigma
    if sa == sb:
        wx = np.exp(-0.5 * (x / sa) ** 2)
        wy = np.exp(-0.5 * (y / sa) ** 2)
        return np.ascontiguousarray(np.outer(wy, wx), dtype=np.float32)
    az = math.radians(instrument.footprint_azimuth)
    xx, yy = np.meshgrid(x, y)
    along = xx * math.sin(az) + yy * math.cos(az)
    across = xx * math.cos(az) - yy * math.sin(az)
    return np.ascontiguousarray(np.exp(-0.5 * ((along / sa) ** 2 + (across / sb) ** 2)), dtype=np.float32)


def transmit_pulse(instrument: Instrument) -> tuple[np.ndarray, int]:
    """The sampled transmit pulse at the instrument's bin width, unit sum.

    Returns
    -------
    pulse : ndarray of float64
    centre : int
        Index of zero delay.  A Gaussian pulse is centred (sampled to ±6 σ).
        A sampled pulse has its negative samples set to 0, is resampled onto
        the bin grid by a cubic spline when ``pulse_dt_ns`` differs from the
        bin, and is centred on its centroid (nearest sample plus a sub-sample
        second-order shift).
    """
    if instrument.pulse is None:
        sigma = instrument.pulse_fwhm_ns / (2.0 * math.sqrt(2.0 * math.log(2.0))) / instrument.bin_ns
        half = max(1, math.ceil(6.0 * sigma))
        k = np.arange(-half, half + 1, dtype=np.float64)
        p = np.exp(-0.5 * (k / sigma) ** 2)
        return np.ascontiguousarray(p / p.sum()), half
    p = np.clip(np.asarray(instrument.pulse, dtype=np.float64), 0.0, None)
    dt = instrument.pulse_dt_ns or instrument.bin_ns
    if not math.isclose(dt, instrument.bin_ns, rel_tol=1e-9):
        # onto the bin grid by a cubic spline (linear interpolation would widen it)
        from scipy.interpolate import make_interp_spline

        t = np.arange(p.size) * dt
        grid = np.arange(0.0, t[-1] + 1e-9, instrument.bin_ns)
        spline = make_interp_spline(t, p, k=3) if p.size >= 4 else make_interp_spline(t, p, k=1)
        p = np.clip(spline(grid), 0.0, None)
        if not p.sum() > 0:
            raise CrevkitValueError("pulse: no energy left after resampling onto the bin grid")
    # zero delay at the centroid: the nearest sample, plus a sub-sample Taylor
    # shift that keeps the pulse's moments exact
    k = np.arange(p.size, dtype=np.float64)
    p = p / p.sum()
    centroid = float((k * p).sum())
    centre = int(round(centroid))
    shift = centroid - centre  # move the pulse earlier by this many bins
    padded = np.concatenate([[0.0], p, [0.0]])
    d1 = (padded[2:] - padded[:-2]) / 2.0
    d2 = padded[2:] - 2.0 * padded[1:-1] + padded[:-2]
    p = np.clip(p + shift * d1 + 0.5 * shift * shift * d2, 0.0, None)
    return np.ascontiguousarray(p / p.sum()), centre


def pulse_kernels(pulse: np.ndarray, centre: int) -> tuple[np.ndarray, int]:
    """The pulse and its first and second central differences, one zero added on each side.

    Central differences keep the Taylor-shifted pulse's moments up to the
    second exactly: Σ k·p'_k = −1, Σ k²·p'_k = −2·mean, Σ k²·p''_k = 2.
    """
    p = np.concatenate([[0.0], pulse, [0.0]])
    d1 = np.zeros_like(p)
    d2 = np.zeros_like(p)
    d1[1:-1] = (p[2:] - p[:-2]) / 2.0
    d2[1:-1] = p[2:] - 2.0 * p[1:-1] + p[:-2]
    # the outer zeros have neighbours only inside
    d1[0], d1[-1] = p[1] / 2.0, -p[-2] / 2.0
    d2[0], d2[-1] = p[1], p[-2]
    return np.ascontiguousarray(np.stack([p, d1, d2])), centre + 1


@dataclasses.dataclass(frozen=True)
class SimulationPlan:
    """Everything the kernel (and the NumPy twin) needs besides the tiles."""

    instrument: Instrument
    pixel_size: float
    weights: np.ndarray  # (ny, nx) float32
    tilt_x: np.ndarray  # (nx,) float32, range-tilt term per column (metres)
    tilt_y: np.ndarray  # (ny,) float32
    cos_tilt: float
    tilted: bool
    look: tuple[float, float, float]  # unit vector ground -> instrument
    pulse: np.ndarray  # (3, L) float64: pulse, first and second central differences
    pulse_centre: int  # column of zero delay
    n_samples: int
    lead_bins: float
    bins_per_metre: float
    incidence: bool
    normalize: bool
    on_empty: str
    n_threads: int

    @property
    def hist_len(self) -> int:
        """Bins that can reach the window: n_samples + pulse_centre."""
        return self.n_samples + self.pulse_centre


def make_plan(shape: tuple[int, int], pixel_size: float = 0.5, instrument: str | Instrument = "glas",
              **overrides: Any) -> SimulationPlan:
    """Resolve instrument, options and derived arrays for tiles of ``shape``."""
    pixel_size = check_positive(pixel_size, "pixel_size", maximum=1e4)
    options = dict(_OPTION_DEFAULTS)
    ins_overrides = {}
    for key, value in overrides.items():
        if key in options:
            options[key] = value
        else:
            ins_overrides[key] = value
    try:
        ins = get_instrument(instrument, **ins_overrides)
    except CrevkitTypeError as exc:
        if "unknown instrument override" in str(exc):
            raise CrevkitTypeError(f"{exc}; simulation options: {sorted(_OPTION_DEFAULTS)}") from None
        raise
    if not isinstance(options["incidence_weighting"], (bool, np.bool_)):
        raise CrevkitTypeError("incidence_weighting must be True or False")
    if not isinstance(options["normalize"], (bool, np.bool_)):
        raise CrevkitTypeError("normalize must be True or False")
    if options["on_empty"] not in ("raise", "zero"):
        raise CrevkitValueError(f"on_empty must be 'raise' or 'zero', got {options['on_empty']!r}")
    angle = check_finite_number(options["off_nadir_angle"], "off_nadir_angle")
    if not 0.0 <= angle < 60.0:
        raise CrevkitValueError(f"off_nadir_angle must be in [0, 60) degrees, got {angle}")
    azimuth = math.radians(check_finite_number(options["off_nadir_azimuth"], "off_nadir_azimuth"))
    phi = math.radians(angle)
    look = (-math.sin(phi) * math.sin(azimuth), -math.sin(phi) * math.cos(azimuth), math.cos(phi))
    ny, nx = shape
    x = (np.arange(nx) - (nx - 1) / 2.0) * pixel_size
    y = ((ny - 1) / 2.0 - np.arange(ny)) * pixel_size
    tilted = angle > 0.0
    pulse, centre = pulse_kernels(*transmit_pulse(ins))
    return SimulationPlan(
        instrument=ins,
        pixel_size=pixel_size,
        weights=footprint_weights(shape, pixel_size, ins),
        tilt_x=np.ascontiguousarray(look[0] * x, dtype=np.float32),
        tilt_y=np.ascontiguousarray(look[1] * y, dtype=np.float32),
        cos_tilt=look[2],
        tilted=tilted,
        look=look,
        pulse=pulse,
        pulse_centre=centre,
        n_samples=ins.n_samples,
        lead_bins=ins.lead_ns / ins.bin_ns,
        bins_per_metre=1.0 / ins.metres_per_bin,
        incidence=bool(options["incidence_weighting"]),
        normalize=bool(options["normalize"]),
        on_empty=options["on_empty"],
        n_threads=resolve_threads(options["n_threads"]),
    )


def _tiles_argument(tiles: Any) -> tuple[np.ndarray, bool]:
    arr = as_float32_array(tiles, "tiles", ndim=(2, 3), check_inf=False)  # the kernel flags inf
    single = arr.ndim == 2
    return (arr[None] if single else arr), single


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    return f"{rows.size} tile(s) (rows " + ", ".join(str(r) for r in rows[:10]) + (" ...)" if rows.size > 10 else ")")


def _finish(out: np.ndarray, status: np.ndarray, plan: SimulationPlan, single: bool) -> np.ndarray:
    """Raise for flagged tiles (status 1: empty, 2: infinite heights), else return."""
    if (status == 2).any():
        raise CrevkitValueError(f"tiles: {_rows(status == 2)} contain infinite heights; use NaN for nodata")
    if plan.on_empty == "raise" and (status == 1).any():
        raise CrevkitValueError(
            f"tiles: {_rows(status == 1)} have no valid pixel or no energy in the window; "
            "pass on_empty='zero' to get all-zero rows instead")
    return out[0] if single else out


def simulate_waveforms(tiles: Any, pixel_size: float = 0.5, instrument: str | Instrument = "glas",
                       **overrides: Any) -> np.ndarray:
    """Simulate one return waveform per DEM tile (C++ kernel, OpenMP over tiles).

    Parameters
    ----------
    tiles : array_like, shape (n_tiles, ny, nx) or (ny, nx)
        Surface heights in metres, NaN for nodata.  Converted once to float32
        C-contiguous (no copy when it already is).
    pixel_size : float
        Pixel size in metres (square pixels).
    instrument : str or Instrument
        ``"glas"`` (default), ``"lvis"``, ``"gedi"`` or an :class:`Instrument`.
    **overrides
        Instrument fields (``footprint_diameter``, ``footprint_minor_diameter``,
        ``footprint_azimuth``, ``pulse_fwhm_ns``, ``pulse``, ``pulse_dt_ns``,
        ``bin_ns``, ``n_samples``, ``lead_ns``) and options:
        ``incidence_weighting=False``, ``off_nadir_angle=0.0``,
        ``off_nadir_azimuth=0.0`` (degrees), ``normalize=True``,
        ``on_empty="raise"`` (or ``"zero"``), ``n_threads=None`` (all cores).

    Returns
    -------
    ndarray of float32, shape (n_tiles, n_samples) (or (n_samples,) for one 2-D tile)

    Raises
    ------
    CrevkitTypeError, CrevkitValueError
        Bad arguments (the message names them), or empty tiles with
        ``on_empty="raise"``.
    """
    arr, single = _tiles_argument(tiles)
    return _run_kernel(arr, make_plan(arr.shape[1:], pixel_size, instrument, **overrides), single)


def _run_kernel(arr: np.ndarray, plan: SimulationPlan, single: bool = False) -> np.ndarray:
    """The C++ kernel on a validated float32 (n, ny, nx) batch with a resolved plan."""
    from . import _core

    out, status = _core.simulate_waveforms(
        arr, plan.weights, plan.tilt_x, plan.tilt_y, plan.pulse, plan.pulse_centre, plan.n_samples,
        plan.lead_bins, plan.bins_per_metre, plan.cos_tilt, plan.tilted, plan.incidence, plan.pixel_size,
        plan.look, plan.normalize, plan.n_threads)
    return _finish(out, status, plan, single)


def simulate_stack(source: str | Path, output: str | Path, *, pixel_size: float = 0.5,
                   instrument: str | Instrument = "glas", batch_size: int = 4096, progress: bool | None = None,
                   **overrides: Any):
    """Stream a stack of tiles (``.npy`` or a Zarr array) through the forward model.

    Writes ``output`` (``.npy`` or ``.zarr``) atomically, batch by batch, so
    the stack never has to fit in memory.  Returns the stage's counts.
    """
    from ._atomic import atomic_dir, atomic_path
    from ._progress import StageCounts, progress as progress_bar
    from ._stack_io import open_stack

    stack = open_stack(source, "source")
    if stack.ndim != 3:
        raise CrevkitValueError(f"source: expected a (n_tiles, ny, nx) stack, got shape {stack.shape}")
    n = stack.shape[0]
    plan = make_plan(stack.shape[1:], pixel_size, instrument, **overrides)
    counts = StageCounts("simulate", found=n)
    output = Path(output)
    starts = range(0, n, batch_size)
    bar = progress_bar(starts, desc="simulate", total=len(starts), unit="batch", disable=None if progress is None else not progress)

    def batches():
        for start in bar:
            block, _ = _tiles_argument(np.asarray(stack[start:start + batch_size]))
            yield start, _run_kernel(block, plan)  # one plan for every batch

    if output.suffix == ".npy":
        with atomic_path(output, suffix=".npy") as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, plan.n_samples))
            for start, wave in batches():
                mm[start:start + wave.shape[0]] = wave
                counts.done += wave.shape[0]
            mm.flush()
            del mm
    elif output.suffix == ".zarr":
        import zarr

        with atomic_dir(output) as tmp:
            z = zarr.open_array(str(tmp), mode="w", shape=(n, plan.n_samples), chunks=(batch_size, plan.n_samples),
                                dtype="float32")
            for start, wave in batches():
                z[start:start + wave.shape[0]] = wave
                counts.done += wave.shape[0]
    else:
        raise CrevkitValueError(f"output must end in .npy or .zarr, got {output}")
    return counts.report()
