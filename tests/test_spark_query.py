"""`cloudir query --engine spark`: the DuckDB query's rows from Spark SQL, and the same
refusals: one statement that reads the case's timeline and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudir.analyze import query as duck_query
from cloudir.analyze import spark_query
from cloudir.analyze.schema import ROW_COLUMN_NAMES
from cloudir.case import Case
from cloudir.errors import UsageError
from tests.conftest import cloudir

# Written in the SQL both engines read: no double-quoted names (a string in Spark), no
# engine-only functions. Each is ordered completely, so the lists compare as they are.
SAME_ON_BOTH = [
    "SELECT event_id, timestamp, source, artifact, host, user, src_ip, action, target, "
    "outcome, evidence_id, raw FROM timeline ORDER BY event_id, evidence_id, timestamp, raw",
    # NULLs sort last in DuckDB and first in Spark: an ORDER BY over a column with NULLs
    # says NULLS LAST (docs/spark.md lists the difference).
    "SELECT action, count(*) AS n, min(timestamp) AS first_seen, max(timestamp) AS last_seen "
    "FROM timeline GROUP BY action ORDER BY n DESC, action",
    "WITH failed AS (SELECT user, action FROM timeline WHERE outcome <> 'success') "
    "SELECT user, count(DISTINCT action) AS actions FROM failed GROUP BY user "
    "ORDER BY actions DESC, user NULLS LAST",
    "SELECT count(*) AS n FROM timeline WHERE timestamp >= TIMESTAMP '2024-01-01 00:00:00' "
    "AND src_ip IS NOT NULL",
    "SELECT * FROM timeline WHERE action = 'no-such-action'",
]


def _rows(columns: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


@pytest.mark.parametrize("sql", SAME_ON_BOTH)
def test_spark_answers_what_duckdb_answers(spark: Any, spark_case: Path, sql: str) -> None:
    case = Case.open(spark_case)
    on_duckdb = _rows(*duck_query.run_query(case, sql))
    on_spark = _rows(*spark_query.run_query(spark, case, sql))
    assert on_spark == on_duckdb
    if "no-such-action" not in sql:
        assert on_duckdb  # a comparison of two empty answers would prove nothing


def test_the_whole_timeline_is_the_same_rows(spark: Any, spark_case: Path) -> None:
    case = Case.open(spark_case)
    sql = "SELECT * FROM timeline"
    columns, rows = spark_query.run_query(spark, case, sql)
    duck_columns, duck_rows = duck_query.run_query(case, sql)
    assert columns == duck_columns
    # the event's own columns: the promoted copies of raw's fields are for the rules
    assert duck_columns == ROW_COLUMN_NAMES
    as_set = {json.dumps(r, sort_keys=True, default=str) for r in _rows(columns, rows)}
    duck_set = {json.dumps(r, sort_keys=True, default=str) for r in _rows(duck_columns, duck_rows)}
    assert len(rows) == len(duck_rows) > 100
    assert as_set == duck_set


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv", ".json"])
def test_output_files_hold_the_same_rows(
    spark: Any, spark_case: Path, tmp_path: Path, suffix: str
) -> None:
    case = Case.open(spark_case)
    # a total order: disagreeing copies of an event share its id and often its time
    sql = "SELECT event_id, action, timestamp FROM timeline ORDER BY event_id, timestamp, raw"
    on_spark, on_duckdb = tmp_path / f"spark{suffix}", tmp_path / f"duckdb{suffix}"
    written = spark_query.write_result(spark, case, sql, on_spark)
    assert written == duck_query.write_result(case, sql, on_duckdb) > 100
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(on_spark).to_pylist() == pq.read_table(on_duckdb).to_pylist()
    else:
        assert on_spark.read_text() == on_duckdb.read_text()


def test_the_cli_prints_the_same_json_with_either_engine(spark_case: Path) -> None:
    """End to end, as a responder runs it: its own process starts its own local Spark."""
    sql = "SELECT action, count(*) AS n FROM timeline GROUP BY action ORDER BY n DESC, action"
    base = ("query", "--case", str(spark_case), sql, "--json")
    duck = cloudir(*base)
    on_spark = cloudir(*base, "--engine", "spark", "--spark-master", "local[1]")
    assert duck.code == 0, duck.stderr
    assert on_spark.code == 0, on_spark.stderr
    assert on_spark.json() == duck.json()
    assert len(duck.json()) > 5
    # cloudir's own log4j2 settings keep the JVM's start-up chatter off the responder's stderr
    assert "Setting default log level" not in on_spark.stderr
    assert " WARN " not in on_spark.stderr


REFUSED = [
    ("SELECT * FROM parquet.`/etc`", "no other table, file or URL (parquet./etc)"),
    ("SELECT * FROM json.`file:///etc/passwd`", "no other table, file or URL"),
    ("SELECT * FROM default.secrets", "no other table, file or URL (default.secrets)"),
    ("SELECT * FROM global_temp.x", "no other table, file or URL"),
    ("SELECT * FROM spark_catalog.default.timeline", "no other table, file or URL"),
    ("SELECT * FROM IDENTIFIER('default.secrets')", "IDENTIFIER(...) names a table"),
    ("SELECT IDENTIFIER('reflect')('java.lang.System', 'getenv', 'HOME')", "IDENTIFIER(...)"),
    ("SELECT * FROM timeline t JOIN LATERAL (SELECT * FROM secrets) s", "(secrets)"),
    ("SELECT * FROM timeline LATERAL VIEW my_gen(raw) g AS c", "my_gen() is not one of"),
    ("SELECT (SELECT count(*) FROM other_table) FROM timeline", "(other_table)"),
    ("SELECT * FROM timeline WHERE event_id IN (SELECT id FROM other)", "(other)"),
    ("WITH a AS (SELECT * FROM hidden) SELECT * FROM a", "(hidden)"),
    ("SELECT reflect('java.lang.System', 'getenv', 'HOME')", "reflect() calls Java methods"),
    ("SELECT java_method('java.lang.System', 'getenv', 'HOME')", "calls Java methods"),
    ("SELECT my_udf(action) FROM timeline", "my_udf() is not one of Spark's built-in"),
    ("SELECT xpath_string(raw, '/a') FROM timeline", "xpath_string() parses XML"),
    ("SELECT default.f(action) FROM timeline", "default.f() is not one of Spark's built-in"),
    ("SELECT * FROM read_files('/etc')", "table function read_files() is not allowed"),
    ("INSERT OVERWRITE DIRECTORY '/tmp/x' SELECT * FROM timeline", "read-only"),
    ("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", "read-only"),
    ("CREATE TABLE t AS SELECT * FROM timeline", "read-only"),
    ("CREATE TEMPORARY VIEW v USING parquet OPTIONS (path '/etc')", "read-only"),
    ("CACHE TABLE c AS SELECT * FROM timeline", "read-only"),
    ("SET spark.sql.runSQLOnFiles=true", "read-only"),
    ("ADD JAR /tmp/evil.jar", "read-only"),
    ("DROP VIEW timeline", "read-only"),
    ("DESCRIBE QUERY SELECT 1", "read-only"),
    ("SELECT 1; SELECT 2", "one SQL statement at a time"),
    ("   ", "no SQL statement given"),
    ("SELEC nothing", "query failed"),
]


@pytest.mark.parametrize(("sql", "message"), REFUSED)
def test_what_is_not_one_reading_statement_is_refused(
    spark: Any, spark_case: Path, sql: str, message: str
) -> None:
    with pytest.raises(UsageError, match=None) as refused:
        spark_query.run_query(spark, Case.open(spark_case), sql)
    assert message in str(refused.value)


def test_a_refused_write_left_nothing_behind(spark: Any, spark_case: Path, tmp_path: Path) -> None:
    target = tmp_path / "written"
    sql = f"INSERT OVERWRITE DIRECTORY '{target}' USING parquet SELECT * FROM timeline"
    with pytest.raises(UsageError, match="read-only"):
        spark_query.run_query(spark, Case.open(spark_case), sql)
    assert not target.exists()
    assert not spark.catalog.tableExists("timeline")  # the view lives in the sealed session


def test_explain_in_front_of_a_select_runs_and_names_the_plan(spark: Any, spark_case: Path) -> None:
    columns, rows = spark_query.run_query(
        spark, Case.open(spark_case), "EXPLAIN SELECT count(*) FROM timeline"
    )
    assert columns == ["plan"]
    assert "Physical Plan" in rows[0][0]


def test_the_case_is_never_an_output_target(spark: Any, spark_case: Path) -> None:
    with pytest.raises(UsageError, match="evidence folder"):
        spark_query.write_result(
            spark, Case.open(spark_case), "SELECT 1", spark_case / "evidence" / "x.csv"
        )


ACCEPTED = [
    ("SELECT count(*) AS n FROM `timeline` TABLESAMPLE (100 PERCENT)", "n"),
    ("SELECT max(size(transform(array(1, 2), x -> x + 1))) AS n FROM timeline", "n"),
    ("SELECT count(c) AS n FROM timeline LATERAL VIEW explode(array(1, 2)) g AS c", "n"),
    ("SELECT count(*) AS n FROM timeline t JOIN LATERAL (SELECT 1 AS one) s", "n"),
    ("SELECT sum(a) AS n FROM VALUES (1), (2) AS v(a)", "n"),
    ("SELECT count(*) AS n FROM timeline WHERE get_json_object(raw, '$.eventID') IS NOT NULL", "n"),
    ("SELECT count(*) AS n FROM range(3);", "n"),
]


@pytest.mark.parametrize(("sql", "column"), ACCEPTED)
def test_spark_forms_that_only_read_run(
    spark: Any, spark_case: Path, sql: str, column: str
) -> None:
    columns, rows = spark_query.run_query(spark, Case.open(spark_case), sql)
    assert columns == [column]
    assert len(rows) == 1
    assert rows[0][0] > 0
