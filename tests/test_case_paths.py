"""A case folder's path is a name, never a pattern: the case's own files are read.

DuckDB's read_parquet expands `* ? [` anywhere in a path it is given and Hadoop's globber
expands `* ? [ ] { }` (and reads a colon as a URI scheme), while a responder names case
folders `case[1]`, `incident {prod}` or `2024-07-31T10:00`. Each case here is a copy of
one reference case at a plain path, moved to a path holding those characters; the
timeline built there, a query's rows and detect's findings must equal the reference's.
Next to it sit decoys: copies named as the unescaped pattern would match (`case1` for
`case[1]`), whose rows all say `action = 'decoy'`, so reading a wrong file shows up as
rows, not only as an error.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze.detect import detect
from cloudir.analyze.duck import literal_path
from cloudir.analyze.query import run_query
from cloudir.analyze.timeline import build_timeline
from cloudir.case import Case
from cloudir.case_folder import timeline_files
from cloudir.engines.hadoop_path import hadoop_path
from cloudir.errors import UsageError
from tests.conftest import cloudir, ct_event
from tests.test_rule_cases import rules_of

RULE_CASES = 6  # the first AWS rule cases, and their rules: detect finds something
ROWS_SQL = "SELECT event_id, timestamp, action, user, evidence_id FROM timeline ORDER BY event_id"
DECOY_ACTION = "decoy"

# (folder name, decoys: names the name matches as a DuckDB or a Hadoop glob)
NAMES = [
    ("case[1]", ["case1"]),
    ("case[!x]", ["casey"]),
    ("case*", ["case-other"]),
    ("case?", ["caseX"]),
    ("case{a,b}", ["casea"]),
    ("case]x}y", []),
    ("2024-07-31T10:00", []),
    ("case 1 %20 %", []),
    ("案件 é ü", []),
    ("back\\slash", []),
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A case at a plain path: captured CloudTrail over three days with a duplicate event
    (de-duplication reads the staging files by name), its timeline, rows and findings."""
    root = tmp_path_factory.mktemp("plain")
    (root / "input").mkdir()
    cases = list(rules_of("aws"))[:RULE_CASES]
    events = [event for _, case in cases for event in case.records]
    copy = ct_event("2024-07-31T10:00:00Z")
    (root / "input" / "a.json").write_text(json.dumps({"Records": [*events, copy]}))
    later = ct_event("2024-08-02T10:00:00Z", "GetObject")
    (root / "input" / "b.json").write_text(json.dumps({"Records": [copy, later]}))
    case = root / "case"
    assert cloudir("capture", "files", "--case", str(case), str(root / "input")).code == 0
    rules = [rule.path for rule, _ in cases]
    built = build_timeline(Case.open(case), workers=1)
    assert built.duplicates_dropped == 1
    expected = {
        "case": case,
        "rules": rules,
        "summary": _summary(case),
        "rows": _rows(case),
        "findings": _findings(case, rules),
    }
    assert len(expected["rows"]) == len(events) + 2
    assert len(expected["findings"]["findings"]) >= 3
    return expected


def _summary(case: Path) -> dict[str, Any]:
    summary = json.loads((case / "timeline" / "summary.json").read_text())
    summary.pop("path")  # the case folder
    return summary


def _rows(case: Path) -> list[tuple[Any, ...]]:
    return run_query(Case.open(case), ROWS_SQL)[1]


def _findings(case: Path, rules: list[Path]) -> dict[str, Any]:
    detect(Case.open(case), rules, builtin=False)
    return _written_findings(case)


def _written_findings(case: Path) -> dict[str, Any]:
    document = json.loads((case / "findings" / "findings.json").read_text())
    document.pop("generated")
    return document


def _place(reference: dict[str, Any], folder: Path, decoys: Sequence[str] = ()) -> Path:
    """The reference case copied to `folder` (its findings left out), with decoy cases
    next to it under the names `decoys`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(reference["case"], folder, ignore=shutil.ignore_patterns("findings"))
    for name in decoys:
        _decoy(reference, folder.parent / name)
    return folder


def _decoy(reference: dict[str, Any], folder: Path) -> None:
    """The reference case at `folder`, every row of its timeline saying `action = 'decoy'`
    (the same files, so a pattern matching both cases matches file for file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(reference["case"], folder, ignore=shutil.ignore_patterns("findings"))
    for part in timeline_files(folder / "timeline"):
        table = pq.read_table(part)
        column = table.schema.get_field_index("action")
        decoy = pa.array([DECOY_ACTION] * table.num_rows, table.schema.field(column).type)
        pq.write_table(table.set_column(column, table.schema.field(column), decoy), part)


def _assert_reads_as_the_reference(case: Path, reference: dict[str, Any]) -> None:
    build_timeline(Case.open(case), workers=1)
    assert _summary(case) == reference["summary"]
    assert _rows(case) == reference["rows"]


# -- DuckDB -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "decoys"), NAMES, ids=[n for n, _ in NAMES])
def test_timeline_query_and_detect_read_the_case_itself(
    reference: dict[str, Any], tmp_path: Path, name: str, decoys: list[str]
) -> None:
    case = _place(reference, tmp_path / name, decoys)
    _assert_reads_as_the_reference(case, reference)
    assert _findings(case, reference["rules"]) == reference["findings"]


def test_glob_characters_in_a_parent_folder_and_a_relative_path(
    reference: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The characters anywhere in the path, which may be relative (a colon first too)."""
    case = _place(reference, tmp_path / "a:b [1]" / "{x}*?" / "case")
    _decoy(reference, tmp_path / "a:b 1" / "{x}-?" / "case")
    monkeypatch.chdir(tmp_path)
    relative = Path("a:b [1]") / "{x}*?" / "case"
    _assert_reads_as_the_reference(relative, reference)
    assert _findings(relative, reference["rules"]) == reference["findings"]
    assert _written_findings(case) == reference["findings"]


_examples = itertools.count()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.text(
        alphabet=st.sampled_from(list("[]{}*?:% !^,-.~'\"#=&é案a1")),
        min_size=1,
        max_size=10,
    ).filter(lambda n: n not in (".", ".."))
)
def test_any_folder_name_reads_as_the_reference(
    reference: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    root = tmp_path_factory.getbasetemp() / "any-name" / str(next(_examples))
    case = _place(reference, root / name)
    _assert_reads_as_the_reference(case, reference)


def test_the_cli_reads_a_case_named_as_a_pattern(reference: dict[str, Any], tmp_path: Path) -> None:
    """End to end, as a responder runs it: every command finds the case's own rows."""
    case = _place(reference, tmp_path / "incident [prod] {eu}*", ["incident p {eu}-"])
    assert cloudir("timeline", "--case", str(case)).code == 0
    result = cloudir("query", "--case", str(case), ROWS_SQL, "--json")
    assert result.code == 0, result.stderr
    assert [row["event_id"] for row in result.json()] == [r[0] for r in reference["rows"]]
    rules = [arg for rule in reference["rules"] for arg in ("--rules", str(rule))]
    result = cloudir("detect", "--case", str(case), "--no-builtin", *rules, "--json")
    assert result.code == 1, result.stderr  # findings
    assert _written_findings(case) == reference["findings"]
    assert cloudir("report", "--case", str(case)).code == 0


def test_a_path_duckdb_cannot_name_is_one_line(reference: dict[str, Any], tmp_path: Path) -> None:
    """DuckDB splits a pattern at a backslash too: `\\` with `[` cannot be named. The
    timeline refuses before any work (the previous one stays), query too, in one line."""
    case = _place(reference, tmp_path / "a\\b[1]")
    before = sorted(p.name for p in (case / "timeline").iterdir())
    why = "DuckDB cannot read a file whose path holds a backslash and one of * ? ["
    for command in (["timeline"], ["query", "SELECT 1"]):
        result = cloudir(*command, "--case", str(case))
        assert result.code == 2, result.stderr
        assert "Traceback" not in result.stderr
        line = result.stderr.strip().splitlines()[-1]  # after the timeline's progress bar
        assert line.startswith(f"error: {case / 'timeline'}") and why in line, line
    assert sorted(p.name for p in (case / "timeline").iterdir()) == before
    assert _rows(_place(reference, tmp_path / "a\\b")) == reference["rows"]  # no glob: read


def test_the_names_given_to_duckdb_and_hadoop() -> None:
    assert literal_path("/cases/plain/x.parquet") == "/cases/plain/x.parquet"
    assert literal_path("/c/a[1]*?{}]/x") == "/c/a[[]1][*][?]{}]/x"
    assert hadoop_path("/cases/plain 1%/x.parquet") == "/cases/plain 1%/x.parquet"
    assert hadoop_path("/c/a[1]{b}*?\\/x") == "file:/c/a\\[1\\]\\{b\\}\\*\\?\\\\/x"
    assert hadoop_path("/c/T10:00 %/x") == "file:/c/T10:00 %/x"
    with pytest.raises(UsageError, match="Spark cannot read a file whose path holds a colon"):
        hadoop_path("/c/T10:00 [1]/x")


# -- Spark ------------------------------------------------------------------------------------
SPARK_NAMES = [
    ("case[1]{a,b}*?", ["case1a-x"]),  # every glob character, a decoy matching them all
    ("2024-07-31T10:00 %20 é", []),  # relative below: the colon would be a URI scheme
]


@pytest.mark.parametrize(("name", "decoys"), SPARK_NAMES, ids=[n for n, _ in SPARK_NAMES])
def test_query_and_detect_on_spark_read_the_case_itself(
    reference: dict[str, Any],
    spark: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    decoys: list[str],
) -> None:
    from cloudir.analyze import spark_query
    from cloudir.analyze.spark_detect import detect_spark

    folder = _place(reference, tmp_path / name, decoys)
    if ":" in name:  # a relative path, as `--case 2024-07-31T10:00` gives
        monkeypatch.chdir(tmp_path)
        folder = Path(name)
    case = Case.open(folder)
    assert spark_query.run_query(spark, case, ROWS_SQL)[1] == reference["rows"]
    detect_spark(case, spark, reference["rules"], builtin=False)
    assert _written_findings(folder) == reference["findings"]


def test_a_path_hadoop_cannot_name_is_read_by_spark_all_the_same(
    reference: dict[str, Any], spark: Any, tmp_path: Path
) -> None:
    """Hadoop has no name for a path with a colon and a glob character: Spark's engine
    reads its files with pyarrow instead (engines/spark_parquet.py), so query, detect and
    the timeline on Spark give the reference's rows and findings there too, and the decoy
    a pattern would match is never read."""
    from cloudir.analyze import spark_query
    from cloudir.analyze.spark_detect import detect_spark
    from cloudir.analyze.spark_timeline import build_timeline_spark

    name = "T10:00 [1]"
    with pytest.raises(UsageError, match="Spark cannot read a file whose path holds a colon"):
        hadoop_path(tmp_path / name / "x.parquet")
    folder = _place(reference, tmp_path / name, ["T10:00 1"])
    case = Case.open(folder)
    assert spark_query.run_query(spark, case, ROWS_SQL)[1] == reference["rows"]
    detect_spark(case, spark, reference["rules"], builtin=False)
    assert _written_findings(folder) == reference["findings"]
    build_timeline_spark(case, spark)
    assert spark_query.run_query(spark, case, ROWS_SQL)[1] == reference["rows"]
    assert _rows(folder) == reference["rows"]  # and on DuckDB
