"""Build the case's Parquet timeline from every evidence item.

Files are grouped into chunks that worker processes parse in parallel, each writing
its own staging Parquet file, so memory stays flat however many files there are.
De-duplication on `event_id` is one DuckDB aggregate over a single column; rows are
rewritten only when duplicates exist (the same event from S3 and LookupEvents), and
then the S3 copy is kept. The new dataset is built beside the old one and swapped in,
so a failed run leaves the previous timeline intact.

Workers buffer their batches into row groups of ROW_GROUP_ROWS rows (or ROW_GROUP_BYTES),
whatever the files: 50,000 one-record files once gave 50,000 row groups, a writer whose
footer metadata grew with every file, and a slow count(*). A worker dies with the
process that started it (PR_SET_PDEATHSIG on Linux, else a thread watching the parent),
so a killed timeline leaves no parser behind.

What the timeline could not see is said, not skipped: items whose capture never closed
and files custody records that are missing or odd (`completeness.py`), and rows whose
time is implausible (kept, counted, a few named), all in errors.jsonl and summary.json.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.abc
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudir.analyze.completeness import KINDS as PROBLEM_KINDS
from cloudir.analyze.error_entries import error_entry
from cloudir.case import Case
from cloudir.case_folder import ERRORS_FILE, SUMMARY_FILE, timeline_files
from cloudir.errors import EvidenceError
from cloudir.s3_manifest import PinnedObject, is_manifest, read_ahead, read_manifest

if TYPE_CHECKING:
    from cloudir.analyze.duplicates import Outcome
    from cloudir.analyze.parsers import ErrorLog, ParseOptions

NO_PARSER_KIND = "no_parser"  # evidence kept, but no parser reads its kind of file
CHUNK_BYTES = 32 << 20
ROW_GROUP_ROWS = 128 * 1024
ROW_GROUP_BYTES = 64 << 20  # a row group of very large records is cut here instead
DUCKDB_MEMORY = "512MB"
# Implausible times: kept, but counted and named. CloudTrail began in 2013 and AWS in
# 2006; host and file system clocks before 1980 (DOS/FAT's epoch) are almost always an
# unset or forged clock; nothing is logged more than a day after the timeline is built.
CLOUDTRAIL_EARLIEST = "2006-01-01T00:00:00Z"
HOST_EARLIEST = "1980-01-01T00:00:00Z"
FUTURE_SLACK_SECONDS = 86_400
IMPLAUSIBLE_EXAMPLES = 5
IMPLAUSIBLE_KIND = "implausible_time"
PR_SET_PDEATHSIG = 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FileTask:
    evidence_id: str
    kind: str
    path: str
    relpath: str
    size: int
    priority: int  # lower wins when the same event_id arrives twice
    pinned: PinnedObject | None = None  # an object version a manifest pins; path is its URI


@dataclass
class ChunkResult:
    # the Parquet files written (one per partition), each with its rows' evidence files as
    # (relpath, rows) runs in write order: names the file a staging row came from
    parts: dict[str, list[tuple[str, int]]]
    files: int
    rows: int
    rows_by_evidence: dict[str, int]
    errors: list[dict[str, Any]]
    # (relpath, rows) per evidence file of the chunk, in task order, none left out
    file_rows: list[tuple[str, int]] = field(default_factory=list)
    implausible: list[dict[str, Any]] = field(default_factory=list)  # a few examples


@dataclass
class TimelineResult:
    rows: int = 0
    files: int = 0
    duplicates_dropped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    rows_by_evidence: dict[str, int] = field(default_factory=dict)
    unparsed: list[str] = field(default_factory=list)
    path: str = ""
    parts_root: str | None = None  # where the Parquet parts are, when not in `path`
    conflicting_copies: dict[str, Any] = field(
        default_factory=lambda: {"events": 0, "examples": []}
    )
    evidence_problems: list[dict[str, Any]] = field(default_factory=list)
    implausible_times: dict[str, Any] = field(
        default_factory=lambda: {"rows": 0, "earliest": None, "latest": None, "examples": []}
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "files": self.files,
            "duplicates_dropped": self.duplicates_dropped,
            "errors": len(self.errors),
            "rows_by_evidence": self.rows_by_evidence,
            "unparsed_files": self.unparsed,
            "path": self.path,
            "parts_root": self.parts_root,
            "conflicting_copies": self.conflicting_copies,
            "evidence_problems": self.evidence_problems,
            "implausible_times": self.implausible_times,
        }

    def strict_failures(self) -> int:
        """Entries --strict fails on: every error but implausible times (kept, not lost)
        and files a parser leaves unread by design (a containment plan, a code package)."""
        return sum(
            1 for e in self.errors if e.get("kind") != IMPLAUSIBLE_KIND and not e.get("by_design")
        )

    def problem_counts(self) -> dict[str, int]:
        """Evidence problems by kind, for the one-line summary."""
        counts: dict[str, int] = {}
        for problem in self.evidence_problems:
            counts[problem["kind"]] = counts.get(problem["kind"], 0) + 1
        return counts

    def summary_line(self) -> str:
        """One line for the terminal: what was not read, by kind, where it is listed, and
        what was kept but is suspect (disagreeing copies, implausible times)."""
        from cloudir.analyze.duplicates import CONFLICT_KIND

        listed = Path(self.path) / ERRORS_FILE
        by_kind: dict[str, int] = {}
        for entry in self.errors:
            kind = str(entry.get("kind") or "parse")
            by_kind[kind] = by_kind.get(kind, 0) + 1
        kept = (IMPLAUSIBLE_KIND, CONFLICT_KIND)
        skipped = sum(n for kind, n in by_kind.items() if kind not in kept)
        parts = [
            f"{n} {kind.replace('not_regular', 'not regular')}"
            for kind, n in sorted(self.problem_counts().items())
        ]
        parts.append(f"{by_kind.get('parse', 0)} parse errors")
        if by_kind.get(NO_PARSER_KIND):
            parts.append(f"{by_kind[NO_PARSER_KIND]} files no parser reads")
        if self.conflicting_copies["events"]:
            events = self.conflicting_copies["events"]
            parts.append(f"{events} events with disagreeing copies (kept)")
        if self.implausible_times["rows"]:
            parts.append(f"{self.implausible_times['rows']} rows with implausible times (kept)")
        if self.rows == 0 and self.files:
            return (
                f"no events: all {self.files} files parsed gave none; "
                f"{'; '.join(parts)}; each listed in {listed}"
            )
        return f"{skipped} evidence problems skipped and listed in {listed}: " + "; ".join(parts)


def collect_tasks(case: Case) -> tuple[list[FileTask], list[dict[str, Any]]]:
    """Every evidence file with a parser; the rest become logged skips.

    The skips start with the evidence problems (`completeness.check_evidence`), each
    with its `kind`: an item whose capture never closed, a recorded file missing or not
    a plain file, an unrecorded one. A file with a problem is never opened.
    """
    from cloudir.analyze.completeness import check_evidence
    from cloudir.analyze.parsers import parser_for, skip_reason

    checked = check_evidence(case)
    skipped: list[dict[str, Any]] = [p.as_dict() for p in checked.problems]
    not_opened = checked.unreadable_paths()
    tasks: list[FileTask] = []
    for evidence_id in case.evidence_ids():
        try:
            meta = case.read_meta(evidence_id)
        except EvidenceError as exc:  # costs this item's parsers, not the timeline
            meta = {}
            skipped.append(
                error_entry(
                    evidence_id,
                    f"evidence/{evidence_id}/meta.json",
                    f"{exc}; its files are read as untyped",
                    kind="unreadable",
                )
            )
        kind = meta.get("kind", "")
        priority = 1 if meta.get("source", {}).get("type") == "lookup_events" else 0
        for path in case.evidence_files(evidence_id):
            rel = case.relpath(path)
            if rel in not_opened or rel not in checked.recorded:
                continue  # already an evidence problem, named in skipped
            if kind == "cloudtrail" and is_manifest(path):
                pinned, bad = _pinned_tasks(evidence_id, kind, path, rel, priority)
                tasks.extend(pinned)
                skipped.extend(bad)
                continue
            if parser_for(kind, path) is None:
                own = skip_reason(kind, path)  # a parser's word wins (a Lambda code package)
                reason = own or f"no parser for this file in a {kind or 'untyped'} item"
                if own is None and path.name.lower().endswith(".zip"):
                    reason = "zip archive: not opened; unpack it and capture the folder"
                # A file its item's parser leaves unread on purpose is listed, never a
                # --strict failure: nothing in it was lost to the timeline by accident.
                details = {"by_design": True} if own else {}
                skipped.append(error_entry(evidence_id, rel, reason, kind=NO_PARSER_KIND,
                                           **details))  # fmt: skip
                continue
            try:
                size = path.stat().st_size
            except OSError as exc:  # gone since the check: still named, never skipped
                gone = f"gone while the timeline ran: {exc.strerror or exc}"
                skipped.append(error_entry(evidence_id, rel, gone, kind="missing"))
                continue
            tasks.append(FileTask(evidence_id, kind, str(path), rel, size, priority))
    return tasks, skipped


def _pinned_tasks(
    evidence_id: str, kind: str, path: Path, rel: str, priority: int
) -> tuple[list[FileTask], list[dict[str, Any]]]:
    """A manifest's object versions as files to parse, read from S3 by whoever parses
    them; each line that pins nothing is a logged skip."""
    try:
        pinned, bad = read_manifest(path)
    except OSError as exc:
        why = f"manifest unreadable: {exc.strerror or exc}"
        return [], [error_entry(evidence_id, rel, why, kind="unreadable")]
    skipped = [
        error_entry(evidence_id, rel, reason, kind="unreadable", line=line) for line, reason in bad
    ]
    from cloudir.analyze.parsers import parser_for

    tasks: list[FileTask] = []
    for o in pinned:
        if parser_for(kind, Path(o.key)) is None:
            why = f"no parser for this object in a {kind} item"
            skipped.append(error_entry(evidence_id, o.uri, why, kind=NO_PARSER_KIND))
        else:
            tasks.append(FileTask(evidence_id, kind, o.uri, o.uri, o.size, priority, pinned=o))
    return tasks, skipped


def plan_chunks(tasks: list[FileTask], workers: int) -> list[list[FileTask]]:
    """Chunks of similar size, many per worker so the last ones finish together."""
    if not tasks:
        return []
    total = sum(t.size for t in tasks)
    target = max(1 << 20, min(CHUNK_BYTES, total // max(1, workers * 12) + 1))
    chunks: list[list[FileTask]] = []
    for priority in sorted({t.priority for t in tasks}):
        current: list[FileTask] = []
        size = 0
        for task in (t for t in tasks if t.priority == priority):
            current.append(task)
            size += task.size
            if size >= target:
                chunks.append(current)
                current, size = [], 0
        if current:
            chunks.append(current)
    return chunks


def parse_chunk(
    staging: str,
    tasks: list[FileTask],
    options: ParseOptions | None = None,
    ceiling_us: int | None = None,
    partitioned: bool = True,
) -> ChunkResult:
    """Runs in a worker process: parse each file, append its rows to the chunk's Parquet
    file of each partition (layout.py), all named as `staging`'s name under its folder;
    with `partitioned=False`, to `staging` itself.

    Rows go out in row groups of ROW_GROUP_ROWS whatever the files, so the writer's
    footer (kept in memory until close) grows with rows, not with files.
    """
    from cloudir.analyze.layout import PartitionedParts
    from cloudir.analyze.parsers import ErrorLog, ParseOptions, parser_for

    options = options or ParseOptions()
    ceiling_us = ceiling_us if ceiling_us is not None else _ceiling_us()
    target = Path(staging)
    out = PartitionedParts(target.parent, target.name, partitioned)
    rows = 0
    rows_by_evidence: dict[str, int] = {}
    errors: list[dict[str, Any]] = []
    file_rows: list[tuple[str, int]] = []
    implausible: list[dict[str, Any]] = []
    # Parsed events hold no reference cycles; the cyclic collector would only re-scan
    # millions of short-lived dicts (measured: 13% of the timeline's time).
    gc.disable()
    pinned_reads = read_ahead([t.pinned for t in tasks if t.pinned], options.aws)
    for task in tasks:
        parser = parser_for(task.kind, Path(task.path))
        log = ErrorLog(task.evidence_id, task.relpath)
        rows_before = rows
        try:
            assert parser is not None
            for batch in _parsed(parser, task, log, options, pinned_reads):
                if batch.num_rows == 0:
                    continue
                out.add(batch, task.relpath)
                rows += batch.num_rows
                rows_by_evidence[task.evidence_id] = (
                    rows_by_evidence.get(task.evidence_id, 0) + batch.num_rows
                )
                room = IMPLAUSIBLE_EXAMPLES - len(implausible)
                if room > 0:
                    implausible += _implausible_examples(batch, task, ceiling_us, room)
        except Exception as exc:  # a parser bug must cost one file, not the timeline
            log.add(f"parser {parser.name if parser else '?'} failed: {type(exc).__name__}: {exc}")
        errors.extend(log.entries)
        file_rows.append((task.relpath, rows - rows_before))
    gc.enable()
    pinned_reads.close()
    return ChunkResult(
        out.close(),
        len(tasks),
        rows,
        rows_by_evidence,
        errors,
        file_rows,
        implausible,
    )


def _parsed(
    parser: Any, task: FileTask, log: ErrorLog, options: ParseOptions, pinned_reads: Any
) -> Any:
    """The file's batches. An object a manifest pins comes next from `pinned_reads`
    (`s3_manifest.read_ahead` over the chunk's pins, in task order); a read that failed
    is one entry of its own kind (missing, changed, unreadable) and no rows."""
    if task.pinned is None:
        return parser.parse(Path(task.path), task.evidence_id, log, options)
    from cloudir.analyze.parsers.cloudtrail import parse_bytes
    from cloudir.s3_manifest import PinnedReadError

    data = next(pinned_reads)
    if isinstance(data, PinnedReadError):
        log.entries.append(error_entry(task.evidence_id, task.relpath, str(data), kind=data.kind))
        return iter(())
    return parse_bytes(data, task.evidence_id, log)


class _RowGroups:
    """Batches buffered into row groups of ROW_GROUP_ROWS rows (or ROW_GROUP_BYTES).

    Written as it comes, each one-record file's batch would be a row group of its own.
    """

    def __init__(self, path: str, filesystem: Any = None) -> None:
        self.path = path
        self.filesystem = filesystem
        self.writer: Any = None
        self.pending: list[Any] = []
        self.rows = 0
        self.bytes = 0

    def add(self, batch: Any) -> None:
        self.pending.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if self.rows >= ROW_GROUP_ROWS or self.bytes >= ROW_GROUP_BYTES:
            self._write(everything=self.bytes >= ROW_GROUP_BYTES)

    def flush(self) -> None:
        """Write what is buffered now, as a smaller row group (to bound memory)."""
        if self.pending:
            self._write(everything=True)

    def close(self) -> bool:
        """Write what is left; True when the file holds any row."""
        if self.pending:
            self._write(everything=True)
        if self.writer is not None:
            self.writer.close()
        return self.writer is not None

    def _write(self, everything: bool) -> None:
        import pyarrow as pa

        table = pa.Table.from_batches(self.pending)
        cut = table.num_rows if everything else table.num_rows // ROW_GROUP_ROWS * ROW_GROUP_ROWS
        if self.writer is None:
            self.writer = _parquet_writer(self.path, self.filesystem)
        self.writer.write_table(table.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
        self.pending = table.slice(cut).to_batches()
        self.rows = table.num_rows - cut
        self.bytes = sum(b.nbytes for b in self.pending)


def _epoch_us(iso: str) -> int:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (moment - EPOCH) // timedelta(microseconds=1)


def _iso_us(us: int) -> str:
    """An ISO 8601 UTC time for any timeline value (years 1-9999), never via strftime,
    which drops the leading zeros of years before 1000."""
    moment = EPOCH + timedelta(microseconds=us)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _ceiling_us() -> int:
    return _epoch_us(datetime.now(UTC).isoformat()) + FUTURE_SLACK_SECONDS * 1_000_000


def _implausible_examples(
    batch: Any, task: FileTask, ceiling_us: int, room: int
) -> list[dict[str, Any]]:
    """Up to `room` rows of this batch whose time is implausible, with the file they are in."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stamps = batch.column("timestamp").cast(pa.int64())
    cloudtrail = pc.fill_null(pc.equal(batch.column("source"), "cloudtrail"), False)
    earliest = pc.if_else(cloudtrail, _epoch_us(CLOUDTRAIL_EARLIEST), _epoch_us(HOST_EARLIEST))
    odd = pc.fill_null(pc.or_(pc.less(stamps, earliest), pc.greater(stamps, ceiling_us)), False)
    if not pc.any(odd).as_py():
        return []
    picked = batch.filter(odd).slice(0, room)
    stamps = picked.column("timestamp").cast(pa.int64()).to_pylist()
    event_ids = picked.column("event_id").to_pylist()
    return [
        {
            "evidence_id": task.evidence_id,
            "path": task.relpath,
            "event_id": event_id,
            "timestamp": _iso_us(us),
        }
        for us, event_id in zip(stamps, event_ids, strict=True)
    ]


def start_build(case: Case) -> tuple[list[FileTask], Path, TimelineResult]:
    """What every engine's build starts from: the evidence files to parse, an empty
    `timeline.building/` beside the live timeline, and a result that already holds the
    items that cannot be parsed (kept by both engines alike)."""
    tasks, skipped = collect_tasks(case)
    building = case.paths.timeline_building
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    result = TimelineResult(files=len(tasks), errors=list(skipped))
    result.evidence_problems = [s for s in skipped if s.get("kind") in PROBLEM_KINDS]
    result.unparsed = [s["path"] for s in skipped if s.get("kind") != "incomplete"]
    return tasks, building, result


def build_timeline(
    case: Case,
    workers: int | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
    options: ParseOptions | None = None,
) -> TimelineResult:
    """Rebuild `timeline/` from all evidence; returns counts and the logged errors."""
    from cloudir.analyze.duck import literal_path

    literal_path(case.paths.timeline)  # a folder DuckDB cannot read fails before any work
    workers = max(1, workers or os.cpu_count() or 1)
    tasks, building, result = start_build(case)
    chunks = plan_chunks(tasks, workers)
    ceiling_us = _ceiling_us()
    examples: list[dict[str, Any]] = []
    staging_files: list[str] = []
    file_rows: dict[str, list[tuple[str, int]]] = {}  # staging file -> its files' rows
    files_done = 0
    if on_progress:
        on_progress(0, len(tasks), 0)

    def absorb(chunk: ChunkResult) -> None:
        nonlocal files_done
        files_done += chunk.files
        result.rows += chunk.rows
        result.errors.extend(chunk.errors)
        result.evidence_problems += [e for e in chunk.errors if e.get("kind") in PROBLEM_KINDS]
        for evidence_id, count in chunk.rows_by_evidence.items():
            result.rows_by_evidence[evidence_id] = (
                result.rows_by_evidence.get(evidence_id, 0) + count
            )
        staging_files.extend(chunk.parts)
        file_rows.update(chunk.parts)
        examples.extend(chunk.implausible[: IMPLAUSIBLE_EXAMPLES - len(examples)])
        if on_progress:
            on_progress(files_done, len(tasks), result.rows)

    names = [
        str(building / f"part-{chunk[0].priority}-{n:05d}.parquet")
        for n, chunk in enumerate(chunks)
    ]
    if workers == 1 or len(chunks) <= 1:
        for name, chunk in zip(names, chunks, strict=True):
            absorb(parse_chunk(name, chunk, options, ceiling_us))
    else:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(chunks)),
            initializer=_worker_start,
            initargs=(os.getpid(),),
        ) as pool:
            futures = {
                pool.submit(parse_chunk, name, chunk, options, ceiling_us): chunk
                for name, chunk in zip(names, chunks, strict=True)
            }
            for future in as_completed(futures):
                absorb(_result_or_failure(future, futures[future]))

    if staging_files:
        copies = _drop_duplicates(building, _in_write_order(staging_files), file_rows)
        result.duplicates_dropped = copies.dropped
        result.errors.extend(copies.errors)
        result.conflicting_copies = copies.summary()
        if result.duplicates_dropped:
            result.rows -= result.duplicates_dropped
            result.rows_by_evidence = _rows_by_evidence(building)
    else:  # no rows at all is still a timeline: query, detect and export read it
        _parquet_writer(building / "part-0-empty.parquet").close()
    result.implausible_times = _implausible_times(building, ceiling_us, examples)
    result.errors.extend(_implausible_errors(result.implausible_times, ceiling_us))
    final = case.paths.timeline
    result.path = str(final)
    shutil.rmtree(building / ".duckdb-tmp", ignore_errors=True)
    _write_lines(building / ERRORS_FILE, result.errors)
    (building / SUMMARY_FILE).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    _swap_in(building, final, case.paths.timeline_old)
    return result


def _implausible_times(
    folder: Path, ceiling_us: int, examples: list[dict[str, Any]]
) -> dict[str, Any]:
    """Rows with implausible times in the finished dataset (after de-duplication)."""
    pattern = _parts_sql(folder)
    with _duckdb(folder) as con:
        rows, earliest, latest = con.execute(
            f"""SELECT count(*), min(epoch_us(timestamp)), max(epoch_us(timestamp))
                FROM {pattern}
                WHERE epoch_us(timestamp) > {int(ceiling_us)}
                   OR epoch_us(timestamp) < CASE WHEN source = 'cloudtrail'
                        THEN {_epoch_us(CLOUDTRAIL_EARLIEST)} ELSE {_epoch_us(HOST_EARLIEST)} END"""
        ).fetchall()[0]
    return {
        "rows": int(rows),
        "earliest": _iso_us(earliest) if earliest is not None else None,
        "latest": _iso_us(latest) if latest is not None else None,
        "examples": examples if rows else [],
    }


def _implausible_errors(found: dict[str, Any], ceiling_us: int) -> list[dict[str, Any]]:
    """Bounded: one line with the count and span, then one line per example row."""
    if not found["rows"]:
        return []
    rule = (
        f"CloudTrail before {CLOUDTRAIL_EARLIEST[:10]}, other rows before "
        f"{HOST_EARLIEST[:10]}, any after {_iso_us(ceiling_us)[:19]}Z"
    )
    lines = [
        error_entry(
            "",
            "",
            f"{found['rows']} rows have implausible times ({rule}), from "
            f"{found['earliest']} to {found['latest']}; kept in the timeline, a clock "
            f"was wrong or a record was forged",
            kind=IMPLAUSIBLE_KIND,
        )
    ]
    for example in found["examples"]:
        lines.append(
            error_entry(
                example["evidence_id"],
                example["path"],
                f"implausible time {example['timestamp']} ({rule}); row kept",
                kind=IMPLAUSIBLE_KIND,
                event_id=example["event_id"],
            )
        )
    return lines


def _worker_start(parent: int) -> None:
    """Pool initializer: a parser process never outlives the timeline that started it,
    and keeps its freed memory for the next file."""
    keep_freed_memory()  # first: mallopt is not thread-safe, and watch_parent may start one
    watch_parent(parent)
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
HEAP_KEEP_BYTES = 64 << 20
MMAP_BYTES = 32 << 20


def keep_freed_memory() -> None:
    """Let glibc keep up to HEAP_KEEP_BYTES of freed heap for reuse, and serve blocks under
    MMAP_BYTES from it.

    By default each block of a few MB (a decompressed delivery file, a batch's joined
    `raw`) was a fresh mmap, returned on free and faulted in page by page for the next:
    on 291k bench events parsed in one process, 52-68k minor page faults and 0.4-0.8
    system CPU-s, then 27-30k and 0.2-0.3. Called only in the pool's parser processes,
    which are ours alone: in the timeline's own process (one worker, the Spark driver,
    a library caller) the setting would outlive the parse. Linux only; no effect where
    the C library has no mallopt (musl's is a stub)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)
    mallopt(M_TRIM_THRESHOLD, HEAP_KEEP_BYTES)
    mallopt(M_TOP_PAD, 1 << 20)  # glibc's default is 128 KiB


class _NoPandas(importlib.abc.MetaPathFinder):
    """pyarrow imports pandas on a process's first `pa.array` of Python values, only to
    ask whether they are a DataFrame: 0.25 CPU-seconds in every parser process, for a
    library no parser uses. Here its import fails as if pandas were not installed,
    which pyarrow expects and handles."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"{name} is not loaded in timeline parser processes")
        return None


def watch_parent(parent: int, interval: float = 1.0, use_prctl: bool = True) -> None:
    """End this process when its parent ends, even by `kill -9`.

    `parent` is the timeline's pid. Linux delivers SIGKILL on the parent's death
    (PR_SET_PDEATHSIG); elsewhere, or where prctl fails, a daemon thread polls the parent
    id. Both watch the immediate parent: under a fork server that is the server, which
    ends with the timeline. When the timeline itself forked us, a parent gone before the
    signal was armed is caught by the last check.
    """
    immediate = os.getppid()
    if not (use_prctl and _death_signal(signal.SIGKILL)):
        threading.Thread(
            target=_poll_parent, args=(immediate, interval), name="parent-watch", daemon=True
        ).start()
    if os.getppid() != immediate or (immediate != parent and _gone(parent)):
        os._exit(1)


def _gone(pid: int) -> bool:
    """True when `pid` has exited (a zombie not yet reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def _death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        threading.Event().wait(interval)
    os._exit(1)


def _result_or_failure(future: Any, chunk: list[FileTask]) -> ChunkResult:
    """A worker that died (killed, out of memory) costs its chunk, logged, not the run."""
    try:
        return future.result()
    except Exception as exc:
        reason = f"parser process failed ({type(exc).__name__}); file not parsed"
        errors = [error_entry(t.evidence_id, t.relpath, reason) for t in chunk]
        return ChunkResult({}, len(chunk), 0, {}, errors)


def _drop_duplicates(
    folder: Path, staging_files: list[str], file_rows: dict[str, list[tuple[str, int]]]
) -> Outcome:
    """Collapse identical copies of an event (the S3 copy, else the first, is kept).

    Copies that differ in anything are all kept and reported (see analyze/duplicates.py):
    a planted record can neither push the genuine one out nor pass as a duplicate.
    """
    from cloudir.analyze.duck import parquet_source
    from cloudir.analyze.duplicates import FileRows, find

    con = _duckdb(folder)
    source = parquet_source(staging_files, row_ids=True)
    outcome = find(con, source, FileRows(file_rows))
    if outcome.dropped == 0:
        con.close()
        return outcome
    from cloudir.analyze.layout import PartitionedParts
    from cloudir.analyze.schema import TIMELINE_SCHEMA

    reader = con.sql(
        f"""SELECT s.* EXCLUDE (filename, file_row_number) FROM {source} s
            ANTI JOIN drop_rows d ON d.f = s.filename AND d.r = s.file_row_number"""
    ).to_arrow_reader(ROW_GROUP_ROWS)
    # the staging files go first: the kept rows' parts take their place in each partition
    out = PartitionedParts(folder / ".dedup", "part-0-dedup.parquet")
    for batch in reader:
        out.add(batch.cast(TIMELINE_SCHEMA))
    con.close()
    for name in staging_files:
        os.unlink(name)
    for written in out.close():
        kept = Path(written)
        destination = folder / kept.relative_to(folder / ".dedup")
        destination.parent.mkdir(parents=True, exist_ok=True)
        kept.rename(destination)
    shutil.rmtree(folder / ".dedup", ignore_errors=True)
    return outcome


def _parquet_writer(path: str | Path, filesystem: Any = None) -> Any:
    """zstd level 1; dictionaries only for columns that repeat (not raw, message, ids);
    min/max statistics for every column but the long texts (UNSUMMARISED_COLUMNS).
    `filesystem` (pyarrow's) writes `path` at a storage URI (storage_uri.open_uri)."""
    import pyarrow.parquet as pq

    from cloudir.analyze.schema import (
        DICTIONARY_COLUMNS,
        TIMELINE_SCHEMA,
        UNSUMMARISED_COLUMNS,
    )

    return pq.ParquetWriter(
        path,
        TIMELINE_SCHEMA,
        filesystem=filesystem,
        compression="zstd",
        compression_level=1,
        use_dictionary=DICTIONARY_COLUMNS,
        write_statistics=[n for n in TIMELINE_SCHEMA.names if n not in UNSUMMARISED_COLUMNS],
    )


def _duckdb(folder: Path) -> Any:
    """A DuckDB connection with bounded memory that spills into the building folder."""
    from cloudir.analyze.duck import connect

    con = connect(
        {
            "memory_limit": DUCKDB_MEMORY,
            "temp_directory": str(folder / ".duckdb-tmp"),
            "threads": os.cpu_count() or 1,
            "preserve_insertion_order": False,
        }
    )
    return con


def _rows_by_evidence(folder: Path) -> dict[str, int]:
    with _duckdb(folder) as con:
        rows = con.execute(
            f"SELECT evidence_id, count(*) FROM {_parts_sql(folder)} GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {str(evidence_id): int(count) for evidence_id, count in rows}


def _parts_sql(folder: Path) -> str:
    """read_parquet over a timeline folder's files, without the partition keys as columns."""
    from cloudir.analyze.duck import parquet_source

    return parquet_source(timeline_files(folder))


def _in_write_order(staging_files: list[str]) -> list[str]:
    """By part name, then partition: the order the chunks were planned in (S3 copies
    before LookupEvents), which names the first copy of an event. Copies of one event have
    one time and source, so they are in one partition."""
    return sorted(staging_files, key=lambda name: (Path(name).name, name))


def _write_lines(path: Path, entries: list[dict[str, Any]]) -> None:
    with open(path, "w") as out:
        for entry in entries:
            out.write(json.dumps(entry, sort_keys=True) + "\n")


def _swap_in(building: Path, final: Path, old: Path) -> None:
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    building.rename(final)
    shutil.rmtree(old, ignore_errors=True)
