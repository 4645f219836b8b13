"""The shapes other stages and outside tools rely on, each defined once in the code: the
timeline row, where a case keeps what the stages derive, and one line of errors.jsonl."""

from __future__ import annotations

from pathlib import Path

from cloudir.analyze.error_entries import error_entry
from cloudir.analyze.parsers import BatchBuilder, ErrorLog, Row
from cloudir.analyze.schema import (
    COLUMN_NAMES,
    PROMOTED_COLUMNS,
    PROMOTED_FIELDS,
    PROMOTED_FROM,
    ROW_COLUMN_NAMES,
    TIMELINE_SCHEMA,
    TimelineRow,
    promoted_column,
)
from cloudir.case import Case
from cloudir.case_folder import OUTPUT_DIRS, CasePaths


def test_the_row_type_is_the_schema_columns_in_order() -> None:
    """A parser's row is the schema's first columns; the promoted ones follow them."""
    assert COLUMN_NAMES == TIMELINE_SCHEMA.names == ROW_COLUMN_NAMES + PROMOTED_COLUMNS
    assert list(TimelineRow._fields) == ROW_COLUMN_NAMES
    assert [PROMOTED_FROM] + [promoted_column(p) for p in PROMOTED_FIELDS] == PROMOTED_COLUMNS
    assert Row is TimelineRow


def test_a_named_row_becomes_the_same_arrow_row_by_name() -> None:
    values = {name: f"{name}-value" for name in ROW_COLUMN_NAMES}
    values["timestamp"] = "2026-11-27T05:00:00+00:00"
    errors = ErrorLog("ev-1", "evidence/ev-1/a.log")
    builder = BatchBuilder(errors)
    builder.add(1, TimelineRow(**values))
    batch = builder.flush()
    assert batch is not None and errors.entries == []
    [written] = batch.to_pylist()
    for name in ROW_COLUMN_NAMES[1:]:
        assert written[name] == values[name], name
    assert written["timestamp"].isoformat() == values["timestamp"]
    # a parser that does not promote leaves the promoted columns NULL: readers go to raw
    assert [written[name] for name in PROMOTED_COLUMNS] == [None] * len(PROMOTED_COLUMNS)


def test_the_derived_paths_are_the_documented_layout(tmp_path: Path) -> None:
    """docs/DESIGN.md, "The case folder": readers outside cloudir rely on these names."""
    paths = CasePaths(tmp_path)
    assert paths.timeline == tmp_path / "timeline"
    assert paths.timeline_summary == tmp_path / "timeline" / "summary.json"
    assert paths.timeline_errors == tmp_path / "timeline" / "errors.jsonl"
    assert paths.timeline_building == tmp_path / "timeline.building"
    assert paths.timeline_old == tmp_path / "timeline.old"
    assert paths.findings_json == tmp_path / "findings" / "findings.json"
    assert paths.findings_parquet == tmp_path / "findings" / "findings.parquet"
    assert paths.report == tmp_path / "report"
    assert paths.export_file("csv") == tmp_path / "export" / "timeline.csv"
    assert [p.name for p in paths.outputs] == list(OUTPUT_DIRS) == [
        "timeline", "timeline.building", "timeline.old", "findings", "report", "export",
    ]  # fmt: skip
    assert set(paths.stage_outputs) < set(paths.outputs)
    assert paths.report not in paths.stage_outputs  # a report may be written anywhere


def test_a_case_gives_its_own_paths(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    assert case.paths == CasePaths(tmp_path / "case")
    assert case.paths.timeline_parts() == []
    case.paths.timeline.mkdir()
    for name in ("part-1-00000.parquet", "part-0-00000.parquet", "summary.json"):
        (case.paths.timeline / name).touch()
    assert [p.name for p in case.paths.timeline_parts()] == [
        "part-0-00000.parquet",
        "part-1-00000.parquet",
    ]


def test_an_error_entry_has_where_then_what_then_why() -> None:
    assert list(error_entry("ev", "p", "bad")) == ["evidence_id", "path", "reason"]
    parse = error_entry("ev", "p", "bad", line=3, record=2)
    assert list(parse.items()) == [
        ("evidence_id", "ev"), ("path", "p"), ("line", 3), ("record", 2), ("reason", "bad"),
    ]  # fmt: skip
    odd = error_entry("", "", "odd time", kind="implausible_time", event_id=None)
    assert list(odd.items()) == [
        ("evidence_id", ""), ("path", ""), ("kind", "implausible_time"), ("event_id", None),
        ("reason", "odd time"),
    ]  # fmt: skip


def test_the_error_log_writes_error_entries() -> None:
    errors = ErrorLog("ev-1", "evidence/ev-1/x.json")
    errors.add("invalid JSON", record=4, line=5)
    errors.add("record without eventTime", 6)
    assert errors.entries == [
        error_entry("ev-1", "evidence/ev-1/x.json", "invalid JSON", line=5, record=4),
        error_entry("ev-1", "evidence/ev-1/x.json", "record without eventTime", record=6),
    ]
    assert list(errors.entries[0]) == ["evidence_id", "path", "line", "record", "reason"]


def test_a_timeline_missing_promoted_columns_reads_them_all_as_null() -> None:
    """A timeline written before the promoted columns, or before some of them, must not
    claim `promoted_from` with a column absent: rules would read NULL, not `raw`."""
    import duckdb

    from cloudir.analyze.duck import timeline_view_sql

    con = duckdb.connect()
    some = f"'aws:cloudtrail' AS {PROMOTED_FROM}, 'iam.amazonaws.com' AS raw_eventSource"
    con.execute(f"CREATE TABLE partial AS SELECT '{{}}' AS raw, {some}").fetchall()
    con.execute("CREATE TABLE complete AS SELECT * FROM partial").fetchall()
    for name in PROMOTED_COLUMNS[2:]:
        con.execute(f'ALTER TABLE complete ADD COLUMN "{name}" VARCHAR').fetchall()
    con.execute("CREATE TABLE older AS SELECT raw FROM partial").fetchall()
    for table, promoted in (("partial", None), ("older", None), ("complete", "aws:cloudtrail")):
        view = timeline_view_sql(con, table)
        row = con.execute(f"SELECT {', '.join(PROMOTED_COLUMNS)} FROM ({view})").fetchall()
        assert row[0][0] == promoted, table
        assert set(row[0][2:]) == {None}, table
