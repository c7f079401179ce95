"""Exception hierarchy.

Every error crevkit raises on purpose derives from :class:`CrevkitError`, and
the ones caused by bad input also derive from the matching builtin (as in
rasterio), so ``except ValueError`` keeps working for callers that do not know
crevkit.  The CLI turns any ``CrevkitError`` into a one-line message.
"""

from __future__ import annotations

__all__ = [
    "CrevkitError",
    "CrevkitValueError",
    "CrevkitTypeError",
    "InputFileError",
    "IndexIntegrityError",
    "ConfigError",
    "RunLockedError",
]


class CrevkitError(Exception):
    """Root of every error crevkit raises deliberately."""


class CrevkitValueError(CrevkitError, ValueError):
    """An argument has the right type but a wrong value (shape, range, NaN...)."""


class CrevkitTypeError(CrevkitError, TypeError):
    """An argument has the wrong type or dtype."""


class InputFileError(CrevkitError, ValueError):
    """An input file is missing, truncated, corrupt or not in the expected layout.

    The message names the file (and the dataset or band, where there is one).
    """


class IndexIntegrityError(CrevkitError, ValueError):
    """A saved index or model does not match its metadata or its library."""


class ConfigError(CrevkitError, ValueError):
    """A run configuration has an unknown key, a wrong type or a missing file."""


class RunLockedError(CrevkitError, RuntimeError):
    """Another crevkit process holds the run directory's lock."""
