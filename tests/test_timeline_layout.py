"""The timeline's partitioned layout (analyze/layout.py): where rows go, and who reads it.

`timeline/log_source=<source>/event_date=<UTC day>/part-*.parquet`: each file holds one
partition's rows in the whole timeline schema; cloudir's readers see the same columns as
before; DuckDB, and Spark through the documented DDL, prune by the folder keys.
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudir.analyze import layout
from cloudir.analyze.schema import COLUMN_NAMES, ROW_COLUMN_NAMES, TIMELINE_SCHEMA
from cloudir.case_folder import timeline_files
from tests.conftest import REPO, cloudir, ct_event, query

TIMES = [
    "2024-07-30T23:59:59Z",  # the last second of a day ...
    "2024-07-31T00:00:00Z",  # ... and the first of the next: two folders
    "2024-07-31T12:00:00Z",
    "2024-08-02T08:30:00Z",
]
SPARK_DDL = REPO / "docs" / "examples" / "timeline-spark.sql"
DOC_LOCATION = "s3://BUCKET/cases/case-42/timeline/"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    (root / "input").mkdir()
    records = {"Records": [ct_event(when) for when in TIMES]}
    (root / "input" / "trail.json").write_text(json.dumps(records))
    case = root / "case"
    assert cloudir("capture", "files", "--case", str(case), str(root / "input")).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    return case


def test_rows_are_partitioned_by_source_and_utc_day(case: Path) -> None:
    import pyarrow.parquet as pq

    folder = case / "timeline"
    parts = timeline_files(folder)
    assert {str(p.parent.relative_to(folder)) for p in parts} == {
        "log_source=cloudtrail/event_date=2024-07-30",
        "log_source=cloudtrail/event_date=2024-07-31",
        "log_source=cloudtrail/event_date=2024-08-02",
    }
    rows = 0
    for part in parts:
        table = pq.read_table(part)
        assert table.schema == TIMELINE_SCHEMA  # and its metadata
        day = part.parent.name.removeprefix("event_date=")
        for row in table.to_pylist():
            assert row["source"] == "cloudtrail"
            assert row["timestamp"].astimezone(UTC).date().isoformat() == day
        rows += table.num_rows
    assert rows == len(TIMES)


def test_long_texts_carry_no_statistics(case: Path) -> None:
    """Every column's pages have min/max for readers to prune by, except the long texts,
    whose statistics no filter uses and which cost the writer time."""
    import pyarrow.parquet as pq

    for part in timeline_files(case / "timeline"):
        group = pq.ParquetFile(part).metadata.row_group(0)
        summarised = {
            group.column(i).path_in_schema
            for i in range(group.num_columns)
            if group.column(i).is_stats_set
        }
        assert summarised == set(COLUMN_NAMES) - {"raw", "message"}


def test_cloudir_reads_the_same_columns_as_before(case: Path) -> None:
    [row] = query(case, "SELECT * FROM timeline LIMIT 1")
    # no log_source, no event_date; `cloudir query` shows the event's own columns (the
    # promoted copies of raw's fields are in the files, for the rules)
    assert list(row) == ROW_COLUMN_NAMES
    assert query(case, "SELECT count(*) AS n FROM timeline") == [{"n": len(TIMES)}]


def test_duckdb_prunes_by_the_folder_keys(case: Path) -> None:
    import duckdb

    source = (
        f"read_parquet('{case}/timeline/**/*.parquet', hive_partitioning=true, "
        "hive_types={'event_date': DATE})"
    )
    con = duckdb.connect()
    [(count,)] = con.execute(
        f"SELECT count(*) FROM {source} WHERE event_date = DATE '2024-07-31'"
    ).fetchall()
    assert count == 2
    [(plan,)] = [
        row[1:]
        for row in con.execute(
            f"EXPLAIN ANALYZE SELECT count(*) FROM {source} WHERE event_date = DATE '2024-07-31'"
        ).fetchall()
    ]
    assert "Total Files Read: 1" in plan  # the other days' folders are never opened


def test_the_documented_spark_ddl_reads_the_timeline(case: Path, spark: Any) -> None:
    session = spark.newSession()
    ddl = SPARK_DDL.read_text().replace(DOC_LOCATION, f"{case}/timeline/")
    ddl = ddl.replace("cloudir_timeline", "layout_test_timeline")
    statements = [s for s in ddl.split(";") if _sql_of(s)]
    assert len(statements) == 2
    try:
        for statement in statements:
            session.sql(statement)
        every = session.sql("SELECT count(*) AS n FROM layout_test_timeline").collect()
        assert every[0]["n"] == len(TIMES)
        one_day = session.sql(
            "SELECT event_id, log_source FROM layout_test_timeline "
            "WHERE event_date = DATE '2024-07-31'"
        ).collect()
        assert len(one_day) == 2 and {r["log_source"] for r in one_day} == {"cloudtrail"}
        columns = session.table("layout_test_timeline").columns
        assert columns == [*COLUMN_NAMES, "log_source", "event_date"]
    finally:
        session.sql("DROP TABLE IF EXISTS layout_test_timeline")


def _sql_of(statement: str) -> str:
    return "\n".join(
        line for line in statement.splitlines() if line.strip() and not line.startswith("--")
    )


# -- where a row goes ---------------------------------------------------------------------------
def _batch(rows: list[tuple[datetime | None, str | None]]) -> Any:
    import pyarrow as pa

    columns: dict[str, Any] = {name: [None] * len(rows) for name in COLUMN_NAMES}
    columns["timestamp"] = [when for when, _ in rows]
    columns["source"] = [source for _, source in rows]
    columns["event_id"] = [str(n) for n in range(len(rows))]
    return pa.RecordBatch.from_pydict(columns, schema=TIMELINE_SCHEMA)


def test_a_row_without_time_or_source_goes_where_hive_puts_nulls() -> None:
    day = datetime(2024, 7, 31, 10, tzinfo=UTC)
    batch = _batch([(day, "host"), (None, "host"), (day, None), (day, "host")])
    pieces = [(folder, rows.column("event_id").to_pylist()) for folder, rows in layout.split(batch)]
    assert pieces == [
        ("log_source=host/event_date=2024-07-31", ["0", "3"]),  # in order, first seen first
        ("log_source=host/event_date=__HIVE_DEFAULT_PARTITION__", ["1"]),
        ("log_source=__HIVE_DEFAULT_PARTITION__/event_date=2024-07-31", ["2"]),
    ]


def test_years_one_and_9999_are_days_like_any_other() -> None:
    early = datetime(1, 1, 1, tzinfo=UTC)
    late = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    folders = [folder for folder, _ in layout.split(_batch([(early, "a"), (late, "a")]))]
    assert folders == ["log_source=a/event_date=0001-01-01", "log_source=a/event_date=9999-12-31"]


@given(st.text(max_size=40))
def test_a_partition_value_is_one_folder_name_and_reads_back(value: str) -> None:
    name = layout.escape(value)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..") and name.isascii() and name.isprintable()
    if value:
        assert urllib.parse.unquote(name) == value
    else:
        assert name == layout.NO_VALUE


def test_a_writer_meeting_many_days_bounds_what_it_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    monkeypatch.setattr(layout, "PENDING_BYTES", 20_000)
    out = layout.PartitionedParts(tmp_path, "part-1-00000.parquet")
    for day in range(1, 29):
        rows = [(datetime(2024, 2, day, hour, tzinfo=UTC), "cloudtrail") for hour in range(24)]
        out.add(_batch(rows * 5), relpath=f"file-{day}.json")
        pending = sum(p.group.bytes for p in out.parts.values())
        assert pending <= layout.PENDING_BYTES
    written = out.close()
    assert len(written) == 28
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in written) == 28 * 24 * 5
    for path, runs in written.items():
        day = int(Path(path).parent.name[-2:])
        assert runs == [(f"file-{day}.json", 24 * 5)]
