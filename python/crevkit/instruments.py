"""Instrument presets for the forward model.

An instrument is a preset, not a constant: ``get_instrument("glas",
pulse_fwhm_ns=5.0)`` returns GLAS with one override.  Presets:

========  ==================  =============  ========  =========  ====
name      footprint (1/e² Ø)  pulse FWHM     bin       samples    lead
========  ==================  =============  ========  =========  ====
glas      70 m                6 ns           1 ns      544        10 ns
lvis      20 m                10 ns          1 ns      432        10 ns
gedi      25 m                15.6 ns        1 ns      1000       10 ns
========  ==================  =============  ========  =========  ====

The footprint is a Gaussian energy profile whose 1/e² *diameter* is given, so
σ = diameter / 4 (GLAS: 17.5 m).  An elliptical footprint has a second
(minor) diameter and the azimuth of its major axis (degrees clockwise from
north).  The transmit pulse is a Gaussian from its FWHM, or a user-supplied
sampled pulse (``pulse``, sampled every ``pulse_dt_ns``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ._validation import check_finite_number, check_int, check_positive
from .errors import CrevkitTypeError, CrevkitValueError

__all__ = ["Instrument", "INSTRUMENTS", "get_instrument", "SPEED_OF_LIGHT"]

SPEED_OF_LIGHT = 299_792_458.0  # m/s


@dataclasses.dataclass(frozen=True)
class Instrument:
    """A laser altimeter's forward-model parameters (see the module docstring)."""

    name: str
    footprint_diameter: float  # metres, 1/e² energy diameter (major axis)
    footprint_minor_diameter: float | None = None  # metres; None = round
    footprint_azimuth: float = 0.0  # degrees clockwise from north, major axis
    pulse_fwhm_ns: float = 6.0
    pulse: tuple[float, ...] | None = None  # sampled transmit pulse (any baseline removed)
    pulse_dt_ns: float | None = None  # sampling of ``pulse``; default: bin_ns
    bin_ns: float = 1.0
    n_samples: int = 544
    lead_ns: float = 10.0

    @property
    def footprint_sigma(self) -> float:
        """Gaussian σ of the footprint's major axis in metres (diameter / 4)."""
        return self.footprint_diameter / 4.0

    @property
    def footprint_minor_sigma(self) -> float:
        d = self.footprint_minor_diameter if self.footprint_minor_diameter is not None else self.footprint_diameter
        return d / 4.0

    @property
    def metres_per_bin(self) -> float:
        """Height that one bin spans, two-way: c · dt / 2 (0.1499 m for 1 ns)."""
        return SPEED_OF_LIGHT * self.bin_ns * 1e-9 / 2.0

    def with_overrides(self, **overrides: Any) -> "Instrument":
        """A copy with some fields replaced, validated."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise CrevkitTypeError(
                f"unknown instrument override(s) {unknown}; valid: {sorted(fields - {'name'})}")
        return _validated(dataclasses.replace(self, **overrides))


INSTRUMENTS: dict[str, Instrument] = {
    "glas": Instrument("glas", footprint_diameter=70.0, pulse_fwhm_ns=6.0, bin_ns=1.0, n_samples=544, lead_ns=10.0),
    "lvis": Instrument("lvis", footprint_diameter=20.0, pulse_fwhm_ns=10.0, bin_ns=1.0, n_samples=432, lead_ns=10.0),
    "gedi": Instrument("gedi", footprint_diameter=25.0, pulse_fwhm_ns=15.6, bin_ns=1.0, n_samples=1000, lead_ns=10.0),
}


def get_instrument(instrument: str | Instrument = "glas", **overrides: Any) -> Instrument:
    """Return a preset (by name) or an :class:`Instrument`, with ``overrides`` applied.

    Parameters
    ----------
    instrument : str or Instrument
        ``"glas"``, ``"lvis"``, ``"gedi"`` or an :class:`Instrument`.
    **overrides
        Any :class:`Instrument` field, e.g. ``footprint_diameter=60.0`` or
        ``n_samples=200``.

    Raises
    ------
    CrevkitValueError
        An unknown preset name or an out-of-range value (the message names it).
    CrevkitTypeError
        An unknown override key.
    """
    if isinstance(instrument, Instrument):
        base = instrument
    elif isinstance(instrument, str):
        try:
            base = INSTRUMENTS[instrument.lower()]
        except KeyError:
            raise CrevkitValueError(
                f"instrument must be one of {sorted(INSTRUMENTS)} or an Instrument, got {instrument!r}") from None
    else:
        raise CrevkitTypeError(f"instrument must be a name or an Instrument, got {type(instrument).__name__}")
    if "pulse" in overrides and overrides["pulse"] is not None:
        overrides["pulse"] = _pulse_tuple(overrides["pulse"])
    return base.with_overrides(**overrides) if overrides else _validated(base)


def _pulse_tuple(pulse: Any) -> tuple[float, ...]:
    arr = np.asarray(pulse)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise CrevkitTypeError(f"pulse must be a 1-D array of real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1 or arr.size < 1:
        raise CrevkitValueError(f"pulse must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.size > 100_000:
        raise CrevkitValueError(f"pulse has {arr.size} samples; at most 100000 are allowed")
    if not np.isfinite(arr).all():
        raise CrevkitValueError("pulse contains NaN or infinite values")
    if not (np.clip(arr, 0, None).sum() > 0):
        raise CrevkitValueError("pulse has no positive energy")
    return tuple(float(v) for v in arr)


def _validated(ins: Instrument) -> Instrument:
    check_positive(ins.footprint_diameter, "footprint_diameter", maximum=1e5)
    if ins.footprint_minor_diameter is not None:
        check_positive(ins.footprint_minor_diameter, "footprint_minor_diameter", maximum=1e5)
    check_finite_number(ins.footprint_azimuth, "footprint_azimuth")
    check_positive(ins.bin_ns, "bin_ns", maximum=1e6)
    check_int(ins.n_samples, "n_samples", minimum=1, maximum=1 << 20)
    lead = check_finite_number(ins.lead_ns, "lead_ns")
    if not 0 <= lead < ins.n_samples * ins.bin_ns:
        raise CrevkitValueError(f"lead_ns must lie inside the window [0, {ins.n_samples * ins.bin_ns}) ns, got {lead}")
    if ins.pulse is None:
        check_positive(ins.pulse_fwhm_ns, "pulse_fwhm_ns", maximum=1e5)
        sigma_bins = ins.pulse_fwhm_ns / (2.0 * math.sqrt(2.0 * math.log(2.0))) / ins.bin_ns
        if sigma_bins * sigma_bins <= 1.0 / 6.0 + 1e-3:
            raise CrevkitValueError(
                f"pulse_fwhm_ns={ins.pulse_fwhm_ns} is narrower than the bin ({ins.bin_ns} ns) can resolve; "
                "use a finer bin_ns or a sampled pulse")
        if 5 * sigma_bins > 100_000:
            raise CrevkitValueError(f"pulse_fwhm_ns={ins.pulse_fwhm_ns} spans more than 100000 bins")
    elif ins.pulse_dt_ns is not None:
        check_positive(ins.pulse_dt_ns, "pulse_dt_ns", maximum=1e6)
    return ins
