"""Argument checks shared by the public wrappers.

The wrappers make one documented conversion (``np.ascontiguousarray(x,
dtype=np.float32)`` where a function says it converts) and then call these
checks, so the C++ layer only ever sees float32 C-contiguous buffers.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np

from .errors import CrevkitTypeError, CrevkitValueError

__all__ = [
    "as_float32_array",
    "check_positive",
    "check_finite_number",
    "check_int",
    "resolve_threads",
]


def as_float32_array(
    value: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...],
    convert: bool = True,
    allow_nan: bool = True,
    min_shape: tuple[int, ...] | None = None,
    check_inf: bool = True,
) -> np.ndarray:
    """Return ``value`` as a float32 C-contiguous array, or raise naming ``name``.

    With ``convert=True`` (the documented default of the public wrappers) any
    real numeric array is converted once with ``np.ascontiguousarray``; with
    ``convert=False`` the array must already be float32 and C-contiguous.
    ``check_inf=False`` leaves the (memory-bound) infinity scan to a kernel
    that checks while it reads the data anyway.
    """
    if isinstance(value, (str, bytes)) or value is None:
        raise CrevkitTypeError(f"{name} must be a numeric array, got {type(value).__name__}")
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise CrevkitTypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise CrevkitValueError(f"{name} must be {want}-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise CrevkitValueError(f"{name} is empty (shape {arr.shape})")
    if min_shape is not None:
        for axis, (have, need) in enumerate(zip(arr.shape[-len(min_shape):], min_shape)):
            if have < need:
                raise CrevkitValueError(f"{name} is too small: shape {arr.shape}, need at least {min_shape} in the last axes")
    if convert:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    else:
        if arr.dtype != np.float32:
            raise CrevkitTypeError(f"{name} must be float32, got {arr.dtype}")
        if not arr.flags.c_contiguous:
            raise CrevkitValueError(f"{name} must be C-contiguous")
    if not allow_nan and not np.isfinite(arr).all():
        raise CrevkitValueError(f"{name} contains NaN or infinite values")
    if allow_nan and check_inf and np.isinf(arr).any():
        raise CrevkitValueError(f"{name} contains infinite values (use NaN for nodata)")
    return arr


def check_finite_number(value: Any, name: str) -> float:
    """Return ``value`` as a finite float, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CrevkitTypeError(f"{name} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise CrevkitValueError(f"{name} must be finite, got {value!r}")
    return out


def check_positive(value: Any, name: str, *, maximum: float | None = None) -> float:
    """Return ``value`` as a finite float > 0 (and <= ``maximum``), or raise."""
    out = check_finite_number(value, name)
    if out <= 0:
        raise CrevkitValueError(f"{name} must be > 0, got {value!r}")
    if maximum is not None and out > maximum:
        raise CrevkitValueError(f"{name} must be <= {maximum}, got {value!r}")
    return out


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int within bounds, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CrevkitTypeError(f"{name} must be an integer, got {type(value).__name__}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise CrevkitValueError(f"{name} must be >= {minimum}, got {out}")
    if maximum is not None and out > maximum:
        raise CrevkitValueError(f"{name} must be <= {maximum}, got {out}")
    return out


def resolve_threads(n_threads: int | None) -> int:
    """Number of threads for a kernel: ``None`` or 0 means all usable cores."""
    if n_threads is None or n_threads == 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)
    return check_int(n_threads, "n_threads", minimum=1, maximum=1024)


class blas_threads:
    """Limit BLAS threads inside a block (threadpoolctl when installed, else a no-op)."""

    def __init__(self, n: int):
        self._n = n
        self._ctl = None

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - optional
            return self
        self._ctl = threadpool_limits(self._n, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._ctl is not None:
            self._ctl.restore_original_limits()
        return False
