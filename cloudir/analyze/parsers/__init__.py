"""Parsers turn one evidence file into Arrow record batches in the timeline schema.

Adding an evidence kind means adding one module that calls `register()`; the timeline
builder never names a parser. Bad input is a normal outcome: a parser reports it to the
`ErrorLog` and carries on with the rest of the file.
"""

from __future__ import annotations

import codecs
import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from cloudir.analyze.error_entries import error_entry
from cloudir.analyze.schema import TIMELINE_SCHEMA, TimelineRow

BATCH_ROWS = 20_000
JSON_SAFE_ESCAPE = "cloudir-json-safe"


def _json_safe_escape(error: UnicodeDecodeError) -> tuple[str, int]:
    """An invalid byte becomes the text `\\\\xNN`: inside a JSON string, still valid JSON."""
    bad = error.object[error.start : error.end]
    return "".join(f"\\\\x{b:02x}" for b in bad), error.end


codecs.register_error(JSON_SAFE_ESCAPE, _json_safe_escape)
_PARSER_MODULES = (
    "cloudir.analyze.parsers.cloudtrail",
    "cloudir.analyze.parsers.host",
    "cloudir.analyze.parsers.container",
    "cloudir.analyze.parsers.image_layers",
    "cloudir.analyze.parsers.response",
)


@dataclass
class ErrorLog:
    """The one channel for 'this input was bad, and why' (timeline/errors.jsonl)."""

    evidence_id: str = ""
    path: str = ""
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, reason: str, record: int | None = None, line: int | None = None) -> None:
        """`record` counts events from 1 in file order; `line` is the JSONL line."""
        self.entries.append(
            error_entry(self.evidence_id, self.path, reason, line=line, record=record)
        )


@dataclass(frozen=True)
class ParseOptions:
    """What the responder chose for this timeline run (`cloudir timeline` options)."""

    fs_timeline: bool | None = None  # None: for disk images under FS_TIMELINE_AUTO_LIMIT


ParseFn = Callable[[Path, str, ErrorLog, ParseOptions], Iterator[pa.RecordBatch]]


@dataclass(frozen=True)
class Parser:
    name: str
    evidence_kinds: tuple[str, ...]
    accepts: Callable[[Path], bool]
    parse: ParseFn
    skip_reason: Callable[[Path], str | None] | None = None  # why a near miss is not read


_REGISTRY: list[Parser] = []


def register(parser: Parser) -> Parser:
    _REGISTRY.append(parser)
    return parser


def parsers() -> list[Parser]:
    """Every parser module is imported, whatever was imported before: one module imported
    on its own (a test, a helper reaching into `parsers.host`) must not leave the registry
    holding that parser alone, or every other kind of evidence reads as "no parser"."""
    for module in _PARSER_MODULES:
        importlib.import_module(module)
    order = {module: n for n, module in enumerate(_PARSER_MODULES)}
    return sorted(_REGISTRY, key=lambda p: order.get(p.parse.__module__, len(order)))


def skip_reason(kind: str, path: Path) -> str | None:
    """A parser's own word on a file of its kind that it does not read by itself."""
    for parser in parsers():
        if kind in parser.evidence_kinds and parser.skip_reason:
            reason = parser.skip_reason(path)
            if reason:
                return reason
    return None


def parser_for(kind: str, path: Path) -> Parser | None:
    for parser in parsers():
        if kind in parser.evidence_kinds and parser.accepts(path):
            return parser
    return None


Row = TimelineRow
"""One timeline row (schema.TimelineRow): read it by name; strings may be str or UTF-8 bytes."""


class BatchBuilder:
    """Collects rows (named tuples, so `zip(*rows)` gives the columns); columns are built
    and times parsed in bulk by Arrow on flush."""

    def __init__(self, errors: ErrorLog) -> None:
        self.errors = errors
        self.rows: list[Row] = []
        self.record_numbers: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, record_number: int, row: Row) -> None:
        self.rows.append(row)
        self.record_numbers.append(record_number)

    def flush(self) -> pa.RecordBatch | None:
        if not self.rows:
            return None
        columns = list(zip(*self.rows, strict=True))
        times = columns[0]
        try:
            stamps = pa.array(times, pa.string()).cast(TIMELINE_SCHEMA.field("timestamp").type)
            keep = None
            if not _within_python_years(stamps):
                raise pa.ArrowInvalid("a time outside years 1-9999")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            stamps, keep = self._slow_times(times)
        numbers = self.record_numbers
        if keep is not None:
            numbers = [n for n, k in zip(numbers, keep, strict=True) if k]
        arrays = [stamps]
        for values in columns[1:]:
            if keep is not None:
                values = tuple(v for v, k in zip(values, keep, strict=True) if k)
            arrays.append(self._strings(values, numbers))
        batch = pa.RecordBatch.from_arrays(arrays, schema=TIMELINE_SCHEMA)
        self.rows = []
        self.record_numbers = []
        return batch

    def _strings(self, values: tuple[Any, ...], numbers: list[int]) -> pa.Array:
        """Bytes that are not UTF-8 are kept visibly (`\\\\xNN`, still valid JSON), logged."""
        try:
            return pa.array(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            fixed = []
            for value, number in zip(values, numbers, strict=True):
                if isinstance(value, bytes):
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        self.errors.add("not valid UTF-8; bytes kept as \\\\xNN text", number)
                        value = value.decode("utf-8", JSON_SAFE_ESCAPE)
                fixed.append(value)
            return pa.array(fixed, pa.string())

    def _slow_times(self, times: tuple[Any, ...]) -> tuple[pa.Array, list[bool]]:
        """Row by row, so one odd time costs only its own row (logged), not the batch."""
        parsed: list[datetime] = []
        keep: list[bool] = []
        for value, number in zip(times, self.record_numbers, strict=True):
            moment = parse_timestamp(value)
            if moment is None:
                why = "outside years 1-9999 UTC" if _out_of_range(value) else ""
                self.errors.add(f"unreadable time {str(value)[:60]!r} {why}".rstrip(), number)
                keep.append(False)
            else:
                parsed.append(moment)
                keep.append(True)
        return pa.array(parsed, TIMELINE_SCHEMA.field("timestamp").type), keep


def batches(rows: Iterable[Row], errors: ErrorLog) -> Iterator[pa.RecordBatch]:
    """Rows to record batches of at most BATCH_ROWS, numbered in order for the error log."""
    builder = BatchBuilder(errors)
    for number, row in enumerate(rows, 1):
        builder.add(number, row)
        if len(builder) >= BATCH_ROWS:
            batch = builder.flush()
            if batch is not None:
                yield batch
    batch = builder.flush()
    if batch is not None:
        yield batch


# Every stored time is one Python (and so every later stage) can hold. Arrow alone would
# also read year 0, or 9999-12-31T23:59-01:00 (year 10000 in UTC), which later crash.
_FIRST_US = -62_135_596_800 * 1_000_000  # 0001-01-01T00:00:00Z, microseconds since 1970
_LAST_US = 253_402_300_799 * 1_000_000 + 999_999  # 9999-12-31T23:59:59.999999Z


def _within_python_years(stamps: pa.Array) -> bool:
    """True when no time in the column lies outside years 1-9999 UTC."""
    import pyarrow.compute as pc

    if stamps.null_count == len(stamps):
        return True
    bounds = pc.min_max(stamps.cast(pa.int64()))
    return bounds["min"].as_py() >= _FIRST_US and bounds["max"].as_py() <= _LAST_US


def _out_of_range(value: Any) -> bool:
    """A time Arrow can read but Python cannot hold (year 0, year 10000 once in UTC)."""
    try:
        stamp = pa.array([value], pa.string()).cast(TIMELINE_SCHEMA.field("timestamp").type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return not _within_python_years(stamp)


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 with or without zone (naive means UTC) or epoch seconds, in years 1-9999 UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
