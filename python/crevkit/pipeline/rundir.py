"""The run directory: lock, per-stage state, provenance and hashing.

Every stage writes only its own part of the run directory, atomically, and
then a state file ``run_dir/state/<stage>.json`` holding the stage's *key*
(a hash of its settings, its input files and the keys of the stages it
depends on).  A stage is complete when its state file exists, its key equals
the key the current config gives, and its outputs exist: then it is
skipped.  A changed setting changes that stage's key and, through the
dependency chain, every key after it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Iterator

from .._atomic import atomic_write_text
from ..errors import RunLockedError

__all__ = ["RunDir", "hash_files", "hash_json"]


def hash_json(value: Any) -> str:
    """sha256 of a JSON-able value with sorted keys."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def hash_files(paths: Iterable[str | os.PathLike], *, content: bool = True) -> str:
    """sha256 over files (name, size, and content or mtime), in sorted order.

    The file's name, not its folder, enters the hash, so a run directory moved
    together with its inputs stays complete.  Content hashing streams each
    file in 1 MiB blocks; ``content=False`` hashes (size, mtime) only, for
    inputs too large to read every run.
    """
    h = hashlib.sha256()
    for p in sorted(str(Path(p)) for p in paths):
        st = os.stat(p)
        h.update(Path(p).name.encode())
        h.update(str(st.st_size).encode())
        if content:
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()


class RunDir:
    """A run directory (see DESIGN.md, "Run directory")."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def stage_dir(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- lock -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on ``run_dir/.lock`` (another run gets RunLockedError)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "a+")
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise RunLockedError(
                        f"run directory {self.path} is locked by another crevkit run (lock file {self.path / '.lock'})"
                    ) from None
                raise
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()} {platform.node()} {dt.datetime.now(dt.timezone.utc).isoformat()}\n")
            fh.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    # -- stage state ------------------------------------------------------
    def _state_path(self, stage: str) -> Path:
        return self.path / "state" / f"{stage}.json"

    def read_state(self, stage: str) -> dict | None:
        try:
            return json.loads(self._state_path(stage).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_complete(self, stage: str, key: str, outputs: Iterable[str]) -> bool:
        state = self.read_state(stage)
        if not state or state.get("key") != key:
            return False
        return all((self.path / o).exists() for o in outputs)

    def mark_complete(self, stage: str, key: str, outputs: Iterable[str], counts: dict, extra: dict | None = None) -> None:
        state = {"stage": stage, "key": key, "outputs": list(outputs), "counts": counts,
                 "finished": dt.datetime.now(dt.timezone.utc).isoformat(), **(extra or {})}
        atomic_write_text(self._state_path(stage), json.dumps(state, indent=2, sort_keys=True, default=str))

    def invalidate(self, stage: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._state_path(stage).unlink()

    # -- provenance -------------------------------------------------------
    def write_provenance(self, config: dict, inputs: dict[str, str], seeds: dict[str, Any]) -> None:
        """``run_dir/config.yaml``: resolved config, versions, seeds, input hashes."""
        import yaml

        from importlib import metadata

        from .. import __version__

        versions = {"python": platform.python_version(), "crevkit": __version__}
        # distribution metadata: no heavy imports (torch) just to read a version
        for dist in ("numpy", "scipy", "rasterio", "hnswlib", "scikit-learn", "torch", "zarr", "pyarrow", "h5py"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = None
        doc = {"config": config, "provenance": {
            "written": dt.datetime.now(dt.timezone.utc).isoformat(), "versions": versions, "seeds": seeds,
            "input_hashes": inputs, "host": platform.node()}}
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(doc, sort_keys=False))
