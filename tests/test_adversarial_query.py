"""`cloudir query` as an adversary (or a careless copy-paste) would use it.

The SQL a responder types runs over the case's timeline and nothing else: no file outside
the timeline is read, nothing is written, no extension is installed or loaded, no setting
changed. Each escape attempt is one clear line and exit 2; the file system is checked, not
only the message. A result goes to a file only through `--output`, written by cloudir.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Result, cloudir, ct_event, records_gz

SECRET = "not-for-query-8c1f"


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` with its size and mtime: what a write would change."""
    found: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A case with one evidence file and its timeline, and a secret file outside the case."""
    root = tmp_path_factory.mktemp("query-adversary")
    source = root / "logs.json.gz"
    events = [ct_event("2024-07-31T10:00:00Z"), ct_event("2024-07-31T10:05:00Z", "StopLogging")]
    source.write_bytes(records_gz(events))
    case = root / "case"
    assert cloudir("capture", "files", "--case", str(case), str(source)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    (outside / "secret.csv").write_text(f"a\n{SECRET}\n")
    (root / "home").mkdir()  # HOME for the runs: where DuckDB would put extensions, secrets
    [evidence] = [p for p in (case / "evidence").rglob("*.json.gz") if p.is_file()]
    return {"root": root, "case": case, "outside": outside, "evidence": evidence}


def in_process(*args: str, home: Path | None = None) -> Result:
    """The command line run in this process: the same code path, without a new
    interpreter per statement (the subprocess runs below cover the real process)."""
    from typer.testing import CliRunner

    from cloudir.cli import app

    env = {"HOME": str(home)} if home else None
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return Result(result.exit_code, result.stdout, result.stderr)


def _escapes(s: dict[str, Path]) -> dict[str, str]:
    evidence, outside, case = s["evidence"], s["outside"], s["case"]
    return {
        "copy over evidence": f"COPY (SELECT 1 AS a) TO '{evidence}' (FORMAT csv)",
        "copy outside": f"COPY (SELECT * FROM timeline) TO '{outside}/dump.csv'",
        "copy into timeline": f"COPY (SELECT 1 AS a) TO '{case}/timeline/x.parquet'",
        "explain analyze copy": f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{outside}/e.csv'",
        "export database": f"EXPORT DATABASE '{outside}/db'",
        "read_text": f"SELECT * FROM read_text('{outside}/secret.txt')",
        "read_text etc": "SELECT content FROM read_text('/etc/passwd')",
        "read_blob": f"SELECT * FROM read_blob('{outside}/secret.txt')",
        "read_csv": f"SELECT * FROM read_csv('{outside}/secret.csv')",
        "read_json": f"SELECT * FROM read_json('{case}/custody.jsonl')",
        "read_parquet elsewhere": f"SELECT * FROM read_parquet('{outside}/*.parquet')",
        "bare path": f"SELECT * FROM '{outside}/secret.csv'",
        "glob": f"SELECT * FROM glob('{outside}/*')",
        "attach": f"ATTACH '{outside}/new.duckdb' AS x",
        "install": "INSTALL httpfs",
        "load": "LOAD httpfs",
        "url": "SELECT * FROM read_csv('https://192.0.2.1/x.csv')",
        "set external": "SET enable_external_access = true",
        "reset external": "RESET enable_external_access",
        "unlock": "SET lock_configuration = false",
        "pragma profiling": "PRAGMA enable_profiling",
        "create secret": "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
        "create table": "CREATE TABLE t AS SELECT * FROM timeline",
        "replace view": "CREATE OR REPLACE VIEW timeline AS SELECT 1 AS x",
        "drop view": "DROP VIEW timeline",
        "insert": "INSERT INTO timeline SELECT * FROM timeline",
        "two statements": "SELECT 1; SELECT 2",
        "hidden second": f"SELECT 1; COPY (SELECT 1) TO '{outside}/two.csv'",
    }


REAL_PROCESS = {"copy over evidence", "read_text etc", "install", "create secret"}
ESCAPE_NAMES = list(_escapes({k: Path("/") for k in ("evidence", "outside", "case")}))


@pytest.mark.parametrize("name", ESCAPE_NAMES)
def test_escape_attempts_are_refused_in_one_line(sandbox: dict[str, Path], name: str) -> None:
    sql = _escapes(sandbox)[name]
    before = _tree(sandbox["root"])
    evidence_bytes = sandbox["evidence"].read_bytes()
    args, home = ["query", "--case", str(sandbox["case"]), sql, "--json"], sandbox["root"] / "home"
    if name in REAL_PROCESS:
        result = cloudir(*args, env={"HOME": str(home)})
    else:
        result = in_process(*args, home=home)
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert _tree(sandbox["root"]) == before, "nothing created or changed anywhere"
    assert sandbox["evidence"].read_bytes() == evidence_bytes


READS = {
    "select": ("SELECT count(*) AS n FROM timeline", [{"n": 2}]),
    "with": (
        "WITH s AS (SELECT action FROM timeline WHERE action LIKE '%StopLogging') "
        "SELECT count(*) AS n FROM s",
        [{"n": 1}],
    ),
    "pragma": (
        "SELECT count(*) AS n FROM pragma_table_info('timeline') WHERE name = 'raw'",
        [{"n": 1}],
    ),
}


@pytest.mark.parametrize("name", sorted(READS))
def test_reading_the_timeline_still_works(sandbox: dict[str, Path], name: str) -> None:
    sql, expected = READS[name]
    result = in_process("query", "--case", str(sandbox["case"]), sql, "--json")
    assert result.code == 0, result.stderr
    assert result.json() == expected


@pytest.mark.parametrize(
    ("sql", "first_column"),
    [
        ("DESCRIBE timeline", "column_name"),
        ("SUMMARIZE timeline", "column_name"),
        ("EXPLAIN SELECT * FROM timeline", "explain_key"),
        ("PRAGMA table_info('timeline')", "cid"),
        ("SELECT 1 AS one;", "one"),
    ],
)
def test_inspecting_statements_still_work(
    sandbox: dict[str, Path], sql: str, first_column: str
) -> None:
    result = in_process("query", "--case", str(sandbox["case"]), sql, "--json")
    assert result.code == 0, result.stderr
    rows = result.json()
    assert rows and next(iter(rows[0])) == first_column


@pytest.mark.parametrize("sql", ["", "   \n\t", "-- only a comment", "/* a comment */ ;", ";"])
def test_no_statement_is_one_clear_line(sandbox: dict[str, Path], sql: str) -> None:
    result = cloudir("query", "--case", str(sandbox["case"]), "--", sql)
    assert result.code == 2, result.stderr
    assert (
        result.stderr.strip() == "error: no SQL statement given: write one SELECT over `timeline`"
    )


@pytest.mark.parametrize("suffix", ["csv", "json", "jsonl", "parquet"])
def test_output_writes_the_result_where_the_user_asked(
    sandbox: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"result.{suffix}"
    sql = "SELECT event_id, action, timestamp FROM timeline ORDER BY timestamp"
    expected = cloudir("query", "--case", str(sandbox["case"]), sql, "--json").json()
    result = cloudir("query", "--case", str(sandbox["case"]), sql, "--output", str(out))
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"2 rows written to {out}"
    assert _read_back(out, suffix) == [(r["event_id"], r["action"]) for r in expected]


def _read_back(path: Path, suffix: str) -> list[tuple[Any, Any]]:
    if suffix == "csv":
        import csv

        rows = list(csv.DictReader(path.open()))
    elif suffix == "json":
        rows = json.loads(path.read_text())
    elif suffix == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    return [(r["event_id"], r["action"]) for r in rows]


def test_output_refuses_evidence_and_unknown_formats(
    sandbox: dict[str, Path], tmp_path: Path
) -> None:
    case, evidence = sandbox["case"], sandbox["evidence"]
    original = evidence.read_bytes()
    mode = stat.S_IMODE(evidence.stat().st_mode)
    link = tmp_path / "link-to-evidence.csv"
    link.symlink_to(evidence.parent)
    targets = {
        str(evidence): "inside the case's evidence",
        str(evidence.parent / "new.csv"): "inside the case's evidence",
        str(link / "new.csv"): "inside the case's evidence",
        str(case / "custody.jsonl"): "the case's own record",
        str(case / "case.lock"): "the case's own record",
        # a result over summary.json hid missing evidence from the report
        str(case / "timeline" / "summary.json"): "inside the case's timeline/ folder",
        str(case / "timeline" / "part-0-00000.parquet"): "inside the case's timeline/ folder",
        str(case / "findings" / "findings.json"): "inside the case's findings/ folder",
        str(tmp_path / "result.xlsx"): ".csv, .json, .jsonl or .parquet",
        str(tmp_path): "is a folder",
    }
    for target, reason in targets.items():
        result = cloudir("query", "--case", str(case), "SELECT 1 AS a", "--output", target)
        assert result.code == 2, (target, result.stderr)
        assert reason in result.stderr, (target, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert evidence.read_bytes() == original
    assert stat.S_IMODE(evidence.stat().st_mode) == mode
    assert not (evidence.parent / "new.csv").exists()
    assert cloudir("verify", "--case", str(case)).code == 0


def test_report_out_refuses_the_case_records_and_a_file(
    sandbox: dict[str, Path], tmp_path: Path
) -> None:
    """`report --out` follows `query --output`: never into evidence (verify then failed
    with three UNRECORDED files) or the timeline; a file is a usage error, not exit 3."""
    case, evidence = sandbox["case"], sandbox["evidence"]
    a_file = tmp_path / "handover.txt"
    a_file.write_text("mine\n")
    targets = {
        str(evidence.parent): "inside the case's evidence",
        str(case / "timeline"): "inside the case's timeline/ folder",
        str(a_file): "is a file; --out names a folder",
    }
    for target, reason in targets.items():
        result = cloudir("report", "--case", str(case), "--out", target)
        assert result.code == 2, (target, result.stderr)
        assert reason in result.stderr, (target, result.stderr)
    assert a_file.read_text() == "mine\n"
    assert not list(evidence.parent.glob("report.*"))
    assert cloudir("verify", "--case", str(case)).code == 0


def test_no_case_is_made_inside_another(sandbox: dict[str, Path]) -> None:
    """A case made in another case's evidence/ became files its custody never recorded."""
    case, evidence = sandbox["case"], sandbox["evidence"]
    nested = evidence.parent / "nested"
    result = cloudir("capture", "files", "--case", str(nested), str(evidence))
    assert result.code == 2, result.stderr
    assert f"is inside the case {case.resolve()}" in result.stderr
    assert not nested.exists()
    assert cloudir("verify", "--case", str(case)).code == 0


# Fragments an attacker (or a fuzzer) strings together: statements, file functions,
# paths inside and outside the case, quotes, comments and separators.
FRAGMENTS = [
    "SELECT", "*", "FROM", "timeline", "COPY", "TO", "ATTACH", "INSTALL", "LOAD", "SET",
    "PRAGMA", "EXPLAIN", "ANALYZE", "DESCRIBE", "SUMMARIZE", "WITH", "CREATE", "DROP",
    "read_text(", "read_csv(", "read_parquet(", "glob(", "query(", ")", "(", ",", ";", "'",
    '"', "--", "/*", "*/", "{outside}/f.csv", "{case}/evidence/x", "{case}/timeline/y",
    "httpfs", "enable_external_access", "=", "true", "1", "count(*)", "WHERE", "raw",
    "\\", "%", "_", "é", "\u202e", "\t", "\n", "FORMAT", "parquet",
]  # fmt: skip


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    parts=st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), min_size=0, max_size=12
    )
)
def test_any_sql_exits_0_or_2_and_writes_nothing(
    sandbox: dict[str, Path], parts: list[str]
) -> None:
    from typer.testing import CliRunner

    from cloudir.cli import app

    values = {"outside": str(sandbox["outside"]), "case": str(sandbox["case"])}
    sql = " ".join(p.replace("{outside}", values["outside"]).replace("{case}", values["case"])
                   for p in parts)  # fmt: skip
    sql = sql.replace("\x00", "")  # argv cannot carry NUL
    before = _tree(sandbox["root"])
    result = CliRunner().invoke(app, ["query", "--case", str(sandbox["case"]), sql, "--json"])
    assert result.exit_code in (0, 2), (sql, result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), sql
    assert "run with --debug" not in result.output
    assert _tree(sandbox["root"]) == before, sql


def test_a_case_path_with_quotes_is_data_not_sql(tmp_path: Path) -> None:
    from tests.timeline_rows import timeline_row, write_timeline

    case = tmp_path / "it's a ']); COPY x TO 'y" / "case"
    case.parent.mkdir()
    write_timeline(case, [timeline_row("aws:cloudtrail", "2026-01-01T10:00:00Z", {"a": 1})])
    sql = "SELECT count(*) AS n FROM timeline"
    result = in_process("query", "--case", str(case), sql, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 1}]


def test_a_result_csv_cannot_hold_is_one_line(sandbox: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "nested.csv"
    sql = "SELECT [1, 2] AS numbers, {'a': 1} AS record"
    result = in_process("query", "--case", str(sandbox["case"]), sql, "--output", str(out))
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("error: CSV cannot hold this result")
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [], "no half-written file is left"
    as_json = tmp_path / "nested.json"
    result = in_process("query", "--case", str(sandbox["case"]), sql, "--output", str(as_json))
    assert result.code == 0, result.stderr
    assert json.loads(as_json.read_text()) == [{"numbers": [1, 2], "record": {"a": 1}}]
