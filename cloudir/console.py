"""Terminal output: progress and messages on stderr, results on stdout.

Every string that came from evidence passes through `inert()` before it reaches a
terminal, so an attacker's user agent cannot carry escape sequences or rich markup.
This module (with the cloudir.cli package) is the only one that draws: library code reports through
`cloudir.progress`, and `TERMINAL` turns that into rich bars here.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from cloudir.progress import Bar, Unit
from cloudir.safe_text import inert

__all__ = ["TERMINAL", "byte_progress", "count_progress", "inert", "stderr", "stdout"]

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)
if not stdout.is_terminal:  # a pipe or file has no width: do not squeeze tables to 80
    stdout.width = max(stdout.width, 140)

# What each unit shows between the bar and the elapsed time.
_MEASURE: dict[Unit, tuple[type[ProgressColumn], ...]] = {
    "count": (MofNCompleteColumn,),  # 12/40
    "bytes": (DownloadColumn, TransferSpeedColumn),  # 1.2/8.0 GB 95 MB/s
    "percent": (TaskProgressColumn,),  # 37% (as DescribeSnapshots reports it)
}


def unit_progress(unit: Unit) -> Progress:
    """Bars on stderr, kept on screen when done: description, bar, measure, time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *(column() for column in _MEASURE[unit]),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
    )


def count_progress() -> Progress:
    return unit_progress("count")


def byte_progress() -> Progress:
    return unit_progress("bytes")


def _label(text: str) -> str:
    """A description is rich markup: evidence in it is made inert and escaped."""
    return escape(inert(text))


class _RichBar:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def update(
        self, completed: float, *, total: float | None = None, label: str | None = None
    ) -> None:
        changes: dict[str, Any] = {"completed": completed, "total": total}
        if label is not None:
            changes["description"] = _label(label)
        self._progress.update(self._task, **changes)  # total None: rich leaves it


class _RichBars:
    def __init__(self, unit: Unit) -> None:
        self._progress = unit_progress(unit)

    def __enter__(self) -> _RichBars:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.__exit__(kind, value, traceback)

    def add(self, label: str, total: float | None = None) -> Bar:
        return _RichBar(self._progress, self._progress.add_task(_label(label), total=total))


class _Terminal:
    """`cloudir.progress.Progress` drawn as rich bars on stderr."""

    def bars(self, unit: Unit) -> _RichBars:
        return _RichBars(unit)


TERMINAL = _Terminal()
"""What the CLI passes to library code that reports progress."""
