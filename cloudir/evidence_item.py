"""One evidence item while a run adds to it: the lifecycle every capture shares.

Open (meta.json, `evidence-opened`), store and record each file in one step (`capture`),
skip, note a problem, and finish: `capture-complete` when nothing went wrong, else
`capture-incomplete` (a containment record ends `respond-complete` / `-incomplete`).
Every capture (CloudTrail, EBS, files and trees, containers) and `respond` go through
this one class, so the custody entries that say how an item ended are written by one
piece of code and cannot drift apart between sources.

Used as a context manager the item always ends on the record: a run that returns
finishes it (complete unless a problem was noted); an exception closes it incomplete,
naming the exception, and is raised again. A run that adds nothing to an item an
earlier run already closed says so with `leave_as_is`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cloudir.custody_actions import CAPTURE_CLOSING, Closing, CustodyAction

if TYPE_CHECKING:
    from cloudir.case import Case, FileRecord

Summary = Callable[["EvidenceItem"], str]
Lazy = Callable[[], Any]  # a note or source only known once the bytes are stored


class EvidenceItem:
    """An open item and its tally: what this run captured, skipped, could not take.

    Thread-safe: workers of one item (S3 objects, a container's export beside its logs)
    store, skip and note problems concurrently.
    """

    def __init__(
        self,
        case: Case,
        evidence_id: str,
        kind: str,
        resumed: bool,
        summary: Summary | None = None,
        closing: Closing = CAPTURE_CLOSING,
    ) -> None:
        self.case = case
        self.evidence_id = evidence_id
        self.kind = kind
        self.resumed = resumed  # an earlier run made the item; this one adds to it
        self.summary: Summary = summary or default_summary
        self.closing = closing
        self.captured = 0
        self.skipped = 0
        self.bytes = 0
        self.files: list[str] = []  # case-relative paths this run stored
        self.skip_reasons: list[str] = []  # skips recorded in custody (capture-skipped)
        self.problems: list[str] = []  # failures: the item is incomplete
        self.left_out: list[str] = []  # seen but not capturable (a link, a FIFO): incomplete
        self.notes: list[str] = []  # facts, not failures (an original changed since, ...)
        self.complete: bool | None = None  # None while the item is open
        self._lock = threading.Lock()
        self._ended = False  # finish was called (even if its entry failed) or left as is

    # -- the steps ------------------------------------------------------------------
    def store(
        self,
        name: str,
        data: bytes | Iterable[bytes | memoryview] | Path,
        *,
        source: dict[str, Any] | Lazy | None = None,
        note: str | Lazy = "",
        expected_bytes: int | None = None,
        captured: int = 1,
        action: CustodyAction = CustodyAction.CAPTURE,
    ) -> FileRecord:
        """Store `data` (bytes, chunks, or a file to copy) under `name` and record it in
        custody, in one step: a file is evidence only once both are done.

        `source` and `note` may be callables, evaluated after the bytes are stored (a
        tar's entry count is known only then). `captured` is what the file adds to the
        tally (a LookupEvents page counts its events).
        """
        if isinstance(data, Path):
            record = self.case.store_copy(self.evidence_id, name, data)
        else:
            chunks = [data] if isinstance(data, bytes) else data
            record = self.case.store_stream(self.evidence_id, name, chunks, expected_bytes)
        self.record(
            action,
            [record],
            note=note() if callable(note) else note,
            source=source() if callable(source) else source,
        )
        with self._lock:
            self.files.append(record.path)
            self.captured += captured
            self.bytes += record.bytes
        return record

    def record(
        self,
        action: CustodyAction,
        files: Iterable[FileRecord] = (),
        *,
        note: str = "",
        source: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A custody entry about this item that is not one of the lifecycle steps (a
        snapshot taken, a container paused, a containment change started)."""
        return self.case.record(action, self.evidence_id, list(files), note=note, source=source)

    def skip(self, reason: str = "") -> None:
        """One thing not taken. With a reason it is a recorded `capture-skipped` (the item
        can still be complete); without, it is already held and only counted."""
        if reason:
            self.record(CustodyAction.CAPTURE_SKIPPED, note=reason)
        with self._lock:
            self.skipped += 1
            if reason:
                self.skip_reasons.append(reason)

    def problem(self, reason: str) -> None:
        """A failure: the item ends incomplete."""
        with self._lock:
            self.problems.append(reason)

    def leave_out(self, reason: str) -> None:
        """Something seen that cannot be evidence as it is (a link, a FIFO, an unreadable
        folder): named, and the item ends incomplete."""
        with self._lock:
            self.left_out.append(reason)

    def note(self, text: str) -> None:
        """A fact worth saying that is not a failure."""
        with self._lock:
            self.notes.append(text)

    # -- the end --------------------------------------------------------------------
    def finish(
        self,
        note: str | None = None,
        *,
        complete: bool | None = None,
        source: dict[str, Any] | None = None,
        file: tuple[str, bytes] | None = None,
    ) -> None:
        """The closing entry: complete unless a problem or left-out thing was noted (or
        `complete` says otherwise), with the capture's summary as its note unless one is
        given. `file` is stored first and carried by the closing entry (a response's
        outcome.json). A failure writing it is raised and never followed by a second
        closing entry."""
        if self._ended:
            raise RuntimeError(f"{self.evidence_id}: this run already ended the item")
        self._ended = True
        if complete is None:
            complete = not (self.problems or self.left_out)
        self.complete = complete
        files = [self.case.store_bytes(self.evidence_id, *file)] if file else []
        whole, partial = self.closing
        self.record(
            whole if complete else partial,
            files,
            note=self.summary(self) if note is None else note,
            source=source,
        )

    def leave_as_is(self) -> None:
        """This run added nothing: the item keeps the end an earlier run gave it."""
        self._ended = True

    @property
    def ended(self) -> bool:
        return self._ended

    def __enter__(self) -> EvidenceItem:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._ended:
            return
        if exc is None:
            self.finish()
            return
        self.problem(stopped_by(exc))
        try:
            self.finish(complete=False)
        except Exception as failure:  # the first error is the one to show
            exc.add_note(f"{self.evidence_id} could not be closed as incomplete: {failure}")


def stopped_by(exc: BaseException) -> str:
    """The problem an exception that ended a run leaves on its item."""
    text = str(exc)
    return f"stopped by {type(exc).__name__}" + (f": {text}" if text else "")


def default_summary(item: EvidenceItem) -> str:
    """`N captured, M skipped`, then each problem and left-out thing."""
    parts = [f"{item.captured} captured, {item.skipped} skipped", *item.problems, *item.left_out]
    return "; ".join(parts)


class ItemTally:
    """What a capture's `--json` result shows of its item: the counts the item keeps.

    A capture's result dataclass holds its `item` and mixes this in, so every capture
    reports the same tally under the same names (and keeps no count of its own)."""

    item: EvidenceItem

    @property
    def evidence_id(self) -> str:
        return self.item.evidence_id

    @property
    def captured(self) -> int:
        return self.item.captured

    @property
    def skipped(self) -> int:
        return self.item.skipped

    @property
    def bytes(self) -> int:
        return self.item.bytes

    @property
    def failed(self) -> list[str]:
        return self.item.problems
