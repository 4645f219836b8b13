"""How library code says how far a long step has got, without drawing anything.

Capture and analysis run under the CLI, under the demo, under tests and under benches;
only the CLI knows whether there is a terminal and how a bar looks there. So a long step
takes either a `Counter` (one quantity: done of total) or a `Progress`, which opens a
group of lines shown together while the step runs (one per snapshot, one per container)
and says what they count, and the caller decides what, if anything, is drawn.
`NO_PROGRESS` draws nothing, for callers that want no bars.

Labels and messages are plain text: the drawing side makes them safe for its terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Literal, Protocol

Reporter = Callable[[str], None]
"""One message line for the responder (the CLI prints it on stderr)."""

Counter = Callable[[int, int], None]
"""(done, total) of one step: files downloaded, bytes fetched."""

Unit = Literal["count", "bytes", "percent"]
"""What a group of lines counts: items, bytes, or a percentage the cloud reports."""


class Bar(Protocol):
    """One line of a group: how far one thing has got."""

    def update(
        self, completed: float, *, total: float | None = None, label: str | None = None
    ) -> None:
        """Set how much is done; a `total` or `label` given replaces the one shown,
        None leaves it (a total still unknown stays unknown)."""


class Bars(Protocol):
    """Lines shown together while one step runs; closed when the step ends."""

    def __enter__(self) -> Bars: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def add(self, label: str, total: float | None = None) -> Bar:
        """A new line; `total` None while the size is not known yet."""
        ...


class Progress(Protocol):
    """Where a long step's lines go: the CLI draws them, `NO_PROGRESS` drops them."""

    def bars(self, unit: Unit) -> Bars:
        """A group of lines counting `unit`, to use as a context manager."""
        ...


class _NoBar:
    def update(
        self, completed: float, *, total: float | None = None, label: str | None = None
    ) -> None:
        return None


class _NoBars:
    def __enter__(self) -> _NoBars:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def add(self, label: str, total: float | None = None) -> Bar:
        return _NoBar()


class _NoProgress:
    def bars(self, unit: Unit) -> Bars:
        return _NoBars()


NO_PROGRESS: Progress = _NoProgress()
"""Draws nothing: the default where no one watches (tests, benches, the library alone)."""
