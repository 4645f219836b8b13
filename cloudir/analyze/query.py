"""SQL over the timeline, and export to Timesketch's import format.

DuckDB reads the Parquet files in place through a view named `timeline`, so a query
never copies the dataset into memory.

A responder's SQL is untrusted text (pasted from a chat, a runbook, an attacker's
ticket): it runs on a sealed connection (see `duck.seal`) that reads the timeline's files
and nothing else, and only statements that read are accepted at all. Writing a result to
a file is cloudir's job (`write_result`), never the SQL's, so it can refuse the evidence.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cloudir.case import CASE_FILE, CUSTODY_FILE, EVIDENCE_DIR, Case
from cloudir.case_folder import LOCK_FILE, TimelinePart
from cloudir.errors import EvidenceError, UsageError

TIMESKETCH_COLUMNS = """
    message,
    strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%f+00:00') AS datetime,
    timestamp_desc,
    epoch_us(timestamp) AS timestamp,
    source, artifact, host, "user", src_ip, action, target, outcome,
    evidence_id, event_id, raw
"""

# Statement kinds that only read. EXPLAIN is accepted only in front of a SELECT (EXPLAIN
# ANALYZE runs its statement). SET, COPY, ATTACH, LOAD/INSTALL, CREATE, ... are refused
# before DuckDB sees them; the sealed connection refuses file access behind that again.
READING = {"SELECT", "PRAGMA", "CALL"}
OUTPUT_FORMATS = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
_EXPLAIN = re.compile(
    r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?",
    re.IGNORECASE | re.DOTALL,
)


def timeline_files(case: Case) -> list[TimelinePart]:
    files = case.paths.timeline_parts()
    if not files:
        raise EvidenceError(
            f"{case.root}: no timeline yet; run `cloudir timeline --case {case.root}`"
        )
    return files


def connect(case: Case, promoted: bool = True) -> Any:
    """A connection with the view `timeline` over the case's Parquet files (not sealed);
    without `promoted`, without the promoted columns (duck.timeline_view_sql)."""
    from cloudir.analyze.duck import connect as duck_connect
    from cloudir.analyze.duck import timeline_source, timeline_view_sql

    con = duck_connect()
    source = timeline_source(con, timeline_files(case))
    view = timeline_view_sql(con, source, promoted)
    con.execute(f"CREATE VIEW timeline AS {view}").fetchall()
    return con


@contextlib.contextmanager
def sealed(case: Case) -> Iterator[Any]:
    """The timeline view `cloudir query` reads (the event's own columns, not the
    promoted copies) on a connection that can read nothing else and write nothing.

    DuckDB spills big sorts and joins to a private scratch folder in the system's temp
    (outside the case, which may be on read-only media), removed afterwards.
    """
    from cloudir.analyze.duck import seal, sql_str

    con = connect(case, promoted=False)
    try:
        with tempfile.TemporaryDirectory(prefix="cloudir-query-") as scratch:
            con.execute(f"SET temp_directory = {sql_str(scratch)}").fetchall()
            seal(con, timeline_files(case))
            yield con
    finally:
        con.close()


def check_read_only(con: Any, sql: str) -> None:
    """One statement that only reads, or a UsageError naming what is refused."""
    statements = _statements(con, sql)
    if not statements:
        raise UsageError("no SQL statement given: write one SELECT over `timeline`")
    if len(statements) > 1:
        raise UsageError(
            f"one SQL statement at a time: this text holds {len(statements)}; "
            "combine them with WITH or UNION"
        )
    [statement] = statements
    kind = statement.type.name
    if kind == "EXPLAIN":
        inner = _statements(con, _EXPLAIN.sub("", statement.query, count=1))
        if len(inner) == 1 and inner[0].type.name == "SELECT":
            return
        raise UsageError("query is read-only: EXPLAIN is accepted in front of a SELECT only")
    if kind not in READING:
        hint = "; write the result with --output FILE" if kind in ("COPY", "EXPORT") else ""
        raise UsageError(
            f"query is read-only: {kind} statements are refused, only SELECT, WITH, "
            f"DESCRIBE, SUMMARIZE, EXPLAIN and PRAGMA run{hint}"
        )


def _statements(con: Any, sql: str) -> list[Any]:
    import duckdb

    try:
        return list(con.extract_statements(sql))
    except duckdb.Error as exc:
        raise _failed(exc) from exc


def _failed(exc: Exception) -> UsageError:
    import duckdb

    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, duckdb.PermissionException):
        return UsageError(
            f"query refused: it reads the case's timeline only, no other file, folder or "
            f"URL ({first})"
        )
    return UsageError(f"query failed: {first}")


@contextlib.contextmanager
def _result(case: Case, sql: str, relation: bool = False) -> Iterator[Any]:
    """The checked statement's result: a cursor, or a relation to stream Arrow from."""
    import duckdb

    with sealed(case) as con:
        check_read_only(con, sql)
        try:
            yield con.sql(sql) if relation else con.execute(sql)
        except duckdb.Error as exc:
            raise _failed(exc) from exc


def run_query(case: Case, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with _result(case, sql) as cursor:
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()


def output_format(case: Case, out: Path) -> str:
    """The format `out`'s suffix names, after refusing targets inside the case's records."""
    refuse_case_records(case, out)
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; --output names a file")
    fmt = OUTPUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"{out}: --output must end in .csv, .json, .jsonl or .parquet")
    return fmt


def refuse_case_records(case: Case, out: Path) -> None:
    """Evidence, the custody record and what later stages read (the timeline and the
    findings: a result written over summary.json hid missing evidence from the report)
    are never a result's destination, by any path."""
    target = out.expanduser().resolve()
    evidence = (case.root / EVIDENCE_DIR).resolve()
    if target == evidence or evidence in target.parents:
        raise UsageError(f"{out}: inside the case's evidence folder, which is never written")
    for output in case.paths.stage_outputs:
        folder = output.resolve()
        if target == folder or folder in target.parents:
            raise UsageError(
                f"{out}: inside the case's {output.name}/ folder, which only cloudir's "
                f"{output.name.split('.')[0]} stage writes; name a file outside it"
            )
    records = (CASE_FILE, CUSTODY_FILE, LOCK_FILE)
    if target in {(case.root / name).resolve() for name in records}:
        raise UsageError(f"{out}: the case's own record ({target.name}) is never overwritten")


def write_result(case: Case, sql: str, out: Path) -> int:
    """The query's rows into `out` (format from its suffix); returns the row count.

    Written by cloudir, streamed batch by batch into a temporary file beside `out` and
    renamed over it when complete: an existing file at `out` (even a hard link) is
    replaced, never written through.
    """

    def rows_into(fmt: str, tmp: Path) -> int:
        with _result(case, sql, relation=True) as relation:
            return write_arrow(fmt, relation.to_arrow_reader(), tmp)

    return write_atomically(case, out, rows_into)


def write_atomically(case: Case, out: Path, rows_into: Callable[[str, Path], int]) -> int:
    """`rows_into(format, temporary file)` writes the rows; the file then replaces `out`.

    Every engine's `--output` goes through here, so the refused targets, the formats and
    the never-write-through rename are the same whichever engine ran the SQL.
    """
    fmt = output_format(case, out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        rows = rows_into(fmt, tmp)
        tmp.replace(out)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _write_parquet(reader: Any, path: Path) -> int:
    import pyarrow.parquet as pq

    rows = 0
    with pq.ParquetWriter(path, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _write_csv(reader: Any, path: Path) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rows = 0
    try:
        with pacsv.CSVWriter(path, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
        raise UsageError(f"CSV cannot hold this result ({exc}); use .json or .parquet") from exc
    return rows


def _write_json_lines(reader: Any, path: Path) -> int:
    rows = 0
    with path.open("w", encoding="utf-8") as fh:
        for batch in reader:
            for row in batch.to_pylist():
                fh.write(json.dumps(row, default=str) + "\n")
                rows += 1
    return rows


def _write_json_array(reader: Any, path: Path) -> int:
    """The same document `query --json` prints, written one row at a time."""
    rows = 0
    with path.open("w", encoding="utf-8") as fh:
        fh.write("[")
        for batch in reader:
            for row in batch.to_pylist():
                fh.write(("," if rows else "") + "\n  " + json.dumps(row, default=str))
                rows += 1
        fh.write("\n]\n")
    return rows


_WRITERS = {
    "parquet": _write_parquet,
    "csv": _write_csv,
    "jsonl": _write_json_lines,
    "json": _write_json_array,
}


def write_arrow(fmt: str, reader: Any, path: Path) -> int:
    """An Arrow record batch reader's rows into `path` in format `fmt`; returns the count."""
    return _WRITERS[fmt](reader, path)


def export(case: Case, fmt: str, out: Path) -> int:
    """Write the timeline for Timesketch (JSONL or CSV), ordered by time; returns rows.

    The SQL is cloudir's own, so DuckDB writes the file itself; the evidence folder and
    the case's records are refused as targets like `query --output` refuses them.
    """
    if fmt not in ("jsonl", "csv"):
        raise UsageError(f"--format must be jsonl or csv, not {fmt!r}")
    refuse_case_records(case, out)
    con = connect(case)
    target = str(out).replace("'", "''")
    options = "FORMAT json" if fmt == "jsonl" else "FORMAT csv, HEADER true"
    con.execute(
        f"COPY (SELECT {TIMESKETCH_COLUMNS} FROM timeline ORDER BY timestamp, event_id) "
        f"TO '{target}' ({options})"
    ).fetchall()
    return int(con.execute("SELECT count(*) FROM timeline").fetchall()[0][0])
