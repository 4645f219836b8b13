"""Parsers turn one evidence file into Arrow record batches in the timeline schema.

Adding an evidence kind or a log type is one new module in this package (or one module a
separate package names under the entry point group `cloudir.parsers`): it calls
`register()` with a `Parser` that declares everything the rest of cloudir needs to know:
the evidence kinds it reads, how `capture files --kind auto` recognises its files, the
artifacts its rows carry and the Sigma logsources each artifact serves. The kinds
`capture files --kind` takes (not yet its help line, which is fixed text) and the
detection engine's logsource table are built from those declarations, and a test checks
the tables in docs/detection.md against them; nothing else names a parser. Bad input is
a normal outcome: a parser reports it to the `ErrorLog` and carries on with the rest of
the file.
"""

from __future__ import annotations

import codecs
import importlib
import json
import logging
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pyarrow as pa

from cloudir.analyze.error_entries import error_entry
from cloudir.analyze.schema import (
    PROMOTED_COLUMNS,
    ROW_COLUMN_NAMES,
    TIMELINE_SCHEMA,
    TimelineRow,
)
from cloudir.aws import AwsOptions

BATCH_ROWS = 20_000
JSON_SAFE_ESCAPE = "cloudir-json-safe"


def _json_safe_escape(error: UnicodeError) -> tuple[str, int]:
    """An invalid byte becomes the text `\\\\xNN`: inside a JSON string, still valid JSON."""
    if not isinstance(error, UnicodeDecodeError):
        raise error  # registered for decoding only
    bad = error.object[error.start : error.end]
    return "".join(f"\\\\x{b:02x}" for b in bad), error.end


codecs.register_error(JSON_SAFE_ESCAPE, _json_safe_escape)


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
    aws: AwsOptions | None = None  # how to reach S3 for objects a manifest pins


ParseFn = Callable[[Path, str, ErrorLog, ParseOptions], Iterator[pa.RecordBatch]]

ENTRY_POINT_GROUP = "cloudir.parsers"
FALLBACK_KIND = "files"  # what `capture files --kind auto` calls what nothing recognised

# How sure a recogniser is that a set of files is its kind. The surest wins; among equals,
# the parser that comes first. A name (`.json.gz`, `.E01`) is what responders go by, so it
# outranks content alone; a name whose structure was also checked outranks a bare name (a
# `docker save` tar is a container image, not a file system export).
NOT_MINE = 0
BY_CONTENT = 1
BY_NAME = 2
BY_NAME_AND_STRUCTURE = 3

Recogniser = Callable[[Sequence[Path]], int]


@dataclass(frozen=True)
class Logsource:
    """A Sigma logsource `(product, service, category)` that an artifact's rows serve.

    `condition` is an extra SQL test over one timeline row (DuckDB, over the timeline's
    columns), for a category that is only part of an artifact's rows. `fields` maps the
    field names Sigma's taxonomy gives the logsource to where the rows hold them (a
    timeline column, a computed `cloudir.*` field or a raw path), `(("query", "target"),)`,
    so that rules written for the logsource run unmodified; every artifact serving the
    logsource must hold its fields there.
    """

    product: str | None
    service: str | None = None
    category: str | None = None
    condition: str | None = None
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        return (self.product, self.service, self.category)


@dataclass(frozen=True)
class RowSource:
    """One value of the timeline's `artifact` column that a parser writes."""

    artifact: str  # "linux:auth"
    description: str  # what one row is, in a few words
    logsources: tuple[Logsource, ...] = ()


@dataclass(frozen=True)
class Parser:
    """One parser and everything cloudir needs to know about it, declared in one place.

    `capture_kind`: the evidence kind `capture files --kind` takes for these files (None
    when the parser reads only what cloudir's own capture commands produce). `recognise`
    says how sure it is that a set of files (one item's) is of that kind, for `--kind
    auto`: NOT_MINE, BY_CONTENT, BY_NAME or BY_NAME_AND_STRUCTURE. `priority` orders the
    parsers (lower first; then name, then registration): the first parser of a kind that
    accepts a file reads it, and `--kind` lists kinds in that order.
    """

    name: str
    evidence_kinds: tuple[str, ...]
    accepts: Callable[[Path], bool]
    parse: ParseFn
    skip_reason: Callable[[Path], str | None] | None = None  # why a near miss is not read
    artifacts: tuple[RowSource, ...] = ()
    capture_kind: str | None = None
    recognise: Recogniser | None = None
    priority: int = 100


_REGISTRY: list[Parser] = []
_discovered = False
_log = logging.getLogger("cloudir.parsers")


def register(parser: Parser) -> Parser:
    if parser not in _REGISTRY:
        _REGISTRY.append(parser)
    return parser


def parsers() -> list[Parser]:
    """Every parser, found once per process, in a fixed order.

    The modules of this package are all imported whatever was imported before: one module
    imported on its own (a test, a helper reaching into `parsers.host`) must not leave
    the registry holding that parser alone, or every other kind of evidence reads as "no
    parser"."""
    discover()
    ranked = sorted(enumerate(_REGISTRY), key=lambda np: (np[1].priority, np[1].name, np[0]))
    return [parser for _, parser in ranked]


def discover(again: bool = False) -> None:
    """Import this package's parser modules and load the `cloudir.parsers` entry points.

    Modules whose name starts with `_` are the framework's own, not parsers. A third-party
    entry point that fails to load costs that parser only, with a one-line warning: a
    broken plug-in must not stop a responder reading the evidence cloudir itself knows.
    """
    global _discovered
    if _discovered and not again:
        return
    _discovered = True
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        if not module.startswith("_"):
            importlib.import_module(f"{__name__}.{module}")
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            loaded = entry.load()
        except Exception as exc:  # any failure of foreign code is one warning, not a crash
            _log.warning(
                "cloudir: parser plug-in %r (%s) not loaded: %s: %s",
                entry.name, entry.value, type(exc).__name__, " ".join(str(exc).split()),
            )  # fmt: skip
            continue
        if isinstance(loaded, Parser):
            register(loaded)


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


def capture_kinds() -> list[str]:
    """The kinds `capture files --kind` takes besides `auto`, in parser order."""
    kinds: list[str] = []
    for parser in parsers():
        if parser.capture_kind and parser.capture_kind not in kinds:
            kinds.append(parser.capture_kind)
    return kinds


def recognise_kind(paths: Sequence[Path]) -> str:
    """The evidence kind of one item's files, for `capture files --kind auto`.

    The surest recogniser wins, the first parser among equals; FALLBACK_KIND when none
    recognises them. `capture/files.py` is given this function rather than importing it,
    so capture does not depend on analysis."""
    best, kind = NOT_MINE, FALLBACK_KIND
    for parser in parsers():
        if parser.recognise is None or parser.capture_kind is None:
            continue
        sure = parser.recognise(paths)
        if sure > best:
            best, kind = sure, parser.capture_kind
    return kind


LogsourceKey = tuple[str | None, str | None, str | None]


def logsource_rows() -> dict[LogsourceKey, list[tuple[str, str | None]]]:
    """Each declared Sigma logsource and the (artifact, extra condition) pairs that serve
    it, in parser and declaration order; the detection engine's table is built from it."""
    table: dict[LogsourceKey, list[tuple[str, str | None]]] = {}
    for parser in parsers():
        for source in parser.artifacts:
            for logsource in source.logsources:
                pairs = table.setdefault(logsource.key, [])
                if (source.artifact, logsource.condition) not in pairs:
                    pairs.append((source.artifact, logsource.condition))
    return table


def logsource_fields() -> dict[LogsourceKey, dict[str, str]]:
    """Each declared logsource's field mapping (Sigma's name -> where the rows hold it),
    for the logsources that declare one; the first declaration of a name wins."""
    table: dict[LogsourceKey, dict[str, str]] = {}
    for parser in parsers():
        for source in parser.artifacts:
            for logsource in source.logsources:
                if logsource.fields:
                    mapping = table.setdefault(logsource.key, {})
                    for name, target in logsource.fields:
                        mapping.setdefault(name, target)
    return table


Row = TimelineRow
"""One timeline row (schema.TimelineRow): read it by name; strings may be str or UTF-8 bytes."""


Promote = Callable[[list[Sequence[Any]]], list[list[Any]]]
"""The promoted columns (schema.PROMOTED_COLUMNS) of a batch's row columns."""


class BatchBuilder:
    """Collects rows (named tuples, so `zip(*rows)` gives the columns); columns are built
    and times parsed in bulk by Arrow on flush. A parser whose records fill the promoted
    columns passes `promote`; the others' rows have them NULL."""

    def __init__(self, errors: ErrorLog, promote: Promote | None = None) -> None:
        self.errors = errors
        self.promote = promote
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
        columns: list[Sequence[Any]] = list(zip(*self.rows, strict=True))
        if self.promote is not None:
            columns += self.promote(columns)
        batch = columns_to_batch(columns, self.record_numbers, self.errors)
        self.rows = []
        self.record_numbers = []
        return batch


def json_loads(data: str | bytes) -> Any:
    """`json.loads`, where JSON nested past Python's limit (about 1,000 levels; Go's
    encoder writes 10,000) is a ValueError like any other JSON it cannot read, instead of
    a RecursionError that passes every parser's `except ValueError` and costs the file."""
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested deeper than Python can read") from exc


def json_object(value: Any) -> dict[str, Any]:
    """`value` when evidence JSON holds an object there, else an empty one: a field of the
    wrong type reads as absent instead of raising on `.get` and costing the file."""
    return value if isinstance(value, dict) else {}


def json_list(value: Any) -> list[Any]:
    """`value` when it is a list, else an empty one (see json_object)."""
    return value if isinstance(value, list) else []


def columns_to_batch(
    columns: Sequence[Sequence[Any] | pa.Array], numbers: list[int], errors: ErrorLog
) -> pa.RecordBatch:
    """A record batch from values column by column (in COLUMNS order), one record number
    per row. Times are parsed in bulk by Arrow; a row whose time cannot be read is
    dropped and logged under its record number, and so is text that is not UTF-8.
    Without the promoted columns (only a row's own), those are NULL.

    Parsers that build rows use it through BatchBuilder; a parser that already has its
    values as columns (CloudTrail's delivery files) calls it directly, so both kinds of
    batch come out of one set of rules. Such a parser may give a column as a string
    Array it built itself (a constant, or text already checked as UTF-8), which is
    taken as it is, and may give one list for two columns that hold the same values.
    """
    times = columns[0]
    try:
        stamps = pa.array(times, pa.string()).cast(TIMELINE_SCHEMA.field("timestamp").type)
        keep = None
        if not _within_python_years(stamps):
            raise pa.ArrowInvalid("a time outside years 1-9999")
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):  # a lone surrogate
        stamps, keep = _slow_times(times, numbers, errors)
    if keep is not None:
        numbers = [n for n, k in zip(numbers, keep, strict=True) if k]
    arrays = [stamps]
    converted: list[tuple[Sequence[Any], pa.Array]] = []  # a list given twice: once
    logged: set[tuple[int, str]] = set()  # one entry a record, not one a column
    for index, values in enumerate(columns[1:], 1):
        if isinstance(values, pa.Array):
            arrays.append(values if keep is None else values.filter(pa.array(keep)))
            continue
        array = next((done for given, done in converted if given is values), None)
        if array is None:
            kept = values if keep is None else [v for v, k in zip(values, keep, strict=True) if k]
            array = _strings(kept, numbers, errors, index == RAW_INDEX, logged)
            converted.append((values, array))
        arrays.append(array)
    if len(columns) == len(ROW_COLUMN_NAMES):
        arrays += [pa.nulls(len(stamps), pa.string())] * len(PROMOTED_COLUMNS)
    return pa.RecordBatch.from_arrays(arrays, schema=TIMELINE_SCHEMA)


RAW_INDEX = ROW_COLUMN_NAMES.index("raw")


def _strings(
    values: Sequence[Any],
    numbers: list[int],
    errors: ErrorLog,
    json_text: bool = False,
    logged: set[tuple[int, str]] | None = None,
) -> pa.Array:
    """Bytes that are not UTF-8, and text holding lone surrogates (a JSON `\\ud800`, a file
    name that was not UTF-8), are kept visibly and logged, once a record: `\\xNN`, which
    in `raw` (`json_text`) is written `\\\\xNN` so the JSON stays valid and reads back as
    `\\xNN`. A value that is not text (a parser given a number where it expected a name)
    is its JSON text, so one odd value never costs the batch."""
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        handler = JSON_SAFE_ESCAPE if json_text else "backslashreplace"
        logged = set() if logged is None else logged

        def log(reason: str, number: int) -> None:
            if (number, reason) not in logged:
                logged.add((number, reason))
                errors.add(reason, number)

        fixed = []
        for value, number in zip(values, numbers, strict=True):
            if isinstance(value, bytes):
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    log("not valid UTF-8; bytes kept as \\\\xNN text", number)
                    value = value.decode("utf-8", handler)
            elif isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    log("text with lone surrogates; kept as \\\\xNN text", number)
                    value = _visible(value, handler)
            elif value is not None:
                log("a value that is not text; kept as its JSON text", number)
                value = json.dumps(value, ensure_ascii=False, default=str)
            fixed.append(value)
        return pa.array(fixed, pa.string())


def _visible(text: str, handler: str) -> str:
    """Surrogates as the `\\xNN` of their bytes: a name's undecodable bytes as they were
    (surrogateescape), any other surrogate as its UTF-8 form would be."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", handler)


def _slow_times(
    times: Sequence[Any], numbers: list[int], errors: ErrorLog
) -> tuple[pa.Array, list[bool]]:
    """Row by row, so one odd time costs only its own row (logged), not the batch."""
    parsed: list[datetime] = []
    keep: list[bool] = []
    for value, number in zip(times, numbers, strict=True):
        moment = parse_timestamp(value)
        if moment is None:
            why = "outside years 1-9999 UTC" if _out_of_range(value) else ""
            errors.add(f"unreadable time {str(value)[:60]!r} {why}".rstrip(), number)
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
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
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
