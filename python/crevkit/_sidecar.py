"""Reading the JSON sidecar that marks a saved crevkit artefact as complete.

Shot tables, noise models, cluster results and waveform libraries each write
their data first and a small JSON document last; its presence means the save
finished.  :func:`read_sidecar` checks it exists, parses, names the expected
format and is not from a newer crevkit, with one message per failure that
names the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InputFileError

__all__ = ["read_sidecar"]


def read_sidecar(path: str | Path, *, fmt: str, what: str, missing: str,
                 version_key: str | None = None, max_version: int | None = None) -> dict:
    """Parse and check a sidecar JSON file.

    Parameters
    ----------
    path : path of the JSON file
    fmt : str
        The value its ``format`` key must have.
    what : str
        What the artefact is, for messages ("noise model", "shot table", ...).
    missing : str
        The message (after the folder name) when the file does not exist.
    version_key, max_version
        If given, ``doc[version_key]`` must not exceed ``max_version``.

    Raises
    ------
    InputFileError
        Missing, unreadable, another format, or a newer version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path.parent}: {missing}")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise InputFileError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise InputFileError(f"{path}: not a crevkit {what}")
    if version_key is not None and int(doc.get(version_key, 0)) > int(max_version):
        raise InputFileError(f"{path}: {what} version {doc[version_key]} is newer than this crevkit's ({max_version})")
    return doc
