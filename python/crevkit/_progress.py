"""Progress bars and the found / done / skipped / failed count every stage ends with."""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

__all__ = ["StageCounts", "progress"]

T = TypeVar("T")
log = logging.getLogger("crevkit")


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it",
             disable: bool | None = None) -> Iterator[T]:
    """A tqdm bar on stderr, hidden when stderr is not a terminal unless forced."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=False))


@dataclasses.dataclass
class StageCounts:
    """What a stage saw: ``found`` items, of which ``done``, ``skipped`` and ``failed``."""

    stage: str
    found: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    extra: dict = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        parts = [f"found {self.found}", f"done {self.done}", f"skipped {self.skipped}", f"failed {self.failed}"]
        parts += [f"{k} {v}" for k, v in self.extra.items()]
        return f"{self.stage}: " + ", ".join(parts)

    def report(self) -> "StageCounts":
        log.info(self.line())
        return self

    def as_dict(self) -> dict:
        return {"stage": self.stage, "found": self.found, "done": self.done, "skipped": self.skipped,
                "failed": self.failed, **self.extra}
