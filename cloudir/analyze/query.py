"""SQL over the timeline, and export to Timesketch's import format.

DuckDB reads the Parquet files in place through a view named `timeline`, so a query
never copies the dataset into memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudir.case import Case
from cloudir.errors import EvidenceError, UsageError

TIMESKETCH_COLUMNS = """
    message,
    strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%f+00:00') AS datetime,
    timestamp_desc,
    epoch_us(timestamp) AS timestamp,
    source, artifact, host, "user", src_ip, action, target, outcome,
    evidence_id, event_id, raw
"""


def connect(case: Case) -> Any:
    from cloudir.analyze.duck import connect as duck_connect

    folder = case.root / "timeline"
    if not any(folder.glob("*.parquet")):
        raise EvidenceError(
            f"{case.root}: no timeline yet; run `cloudir timeline --case {case.root}`"
        )
    con = duck_connect()
    pattern = str(folder / "*.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW timeline AS SELECT * FROM read_parquet('{pattern}')").fetchall()
    return con


def run_query(case: Case, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    con = connect(case)
    try:
        cursor = con.execute(sql)
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {str(exc).splitlines()[0]}") from exc
    columns = [d[0] for d in cursor.description or []]
    return columns, cursor.fetchall()


def export(case: Case, fmt: str, out: Path) -> int:
    """Write the timeline for Timesketch (JSONL or CSV), ordered by time; returns rows."""
    if fmt not in ("jsonl", "csv"):
        raise UsageError(f"--format must be jsonl or csv, not {fmt!r}")
    con = connect(case)
    target = str(out).replace("'", "''")
    options = "FORMAT json" if fmt == "jsonl" else "FORMAT csv, HEADER true"
    con.execute(
        f"COPY (SELECT {TIMESKETCH_COLUMNS} FROM timeline ORDER BY timestamp, event_id) "
        f"TO '{target}' ({options})"
    ).fetchall()
    return int(con.execute("SELECT count(*) FROM timeline").fetchall()[0][0])
