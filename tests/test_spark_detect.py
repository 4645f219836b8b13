"""Detection on Spark gives the DuckDB path's findings (issue 18: equivalence is the contract).

Each case is copied; DuckDB's `detect` runs on one copy, `detect_spark` on the other, and
findings.json (all of it but the time it was generated) and findings.parquet must be equal:
the same rules, event ids, counts, first and last seen, entities, triage, correlation
alerts and suppression counts. The cases between them fire every shipped rule (the rule
cases of tests/data/rule_cases.yml, CloudTrail, Linux and Docker), every computed field
and correlation type (the labelled evaluation set), with suppression filters, on the
third-party corpus and on the demo's case.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudir.analyze import spark_detect
from cloudir.analyze.detect import detect
from cloudir.analyze.query import timeline_files
from cloudir.analyze.spark_detect import SparkTimelineParts, detect_spark
from cloudir.case import Case
from cloudir.engines import spark_progress
from cloudir.engines.spark_session import spark_failure
from tests.conftest import REPO, cloudir
from tests.test_detection_eval import _bench_module
from tests.test_rule_cases import assert_unique_ids, rules_of
from tests.timeline_rows import write_timeline

SUPPRESS = REPO / "docs" / "examples" / "suppress"
# A filter that removes one of the evaluation set's matches: suppression counts compared too
NO_MFA_FOR_HENRY = """title: henry.sales signs in without MFA from the office
id: 6f1f4a55-3c1d-4e0e-9a57-0d3d2b7f2a10
logsource:
    product: aws
    service: cloudtrail
filter:
    rules:
        - b0b64ae9-1cf5-4e0b-9c17-a8f3723beadb  # Console Login Without MFA
    selection:
        userIdentity.userName: henry.sales
    condition: not selection
"""


def detect_both(
    case_root: Path, spark: Any, suppress: tuple[Path, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The case copied; DuckDB detects on one copy, Spark on the other; what each wrote."""
    twin = case_root.parent / (case_root.name + "-spark")
    shutil.rmtree(twin, ignore_errors=True)
    shutil.copytree(case_root, twin, ignore=shutil.ignore_patterns("findings", "report"))
    shutil.rmtree(case_root / "findings", ignore_errors=True)
    detect(Case.open(case_root), [], suppress=suppress)
    detect_spark(Case.open(twin), spark, [], suppress=suppress)
    return written(case_root), written(twin)


def written(case_root: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    document = json.loads((case_root / "findings" / "findings.json").read_text())
    document.pop("generated")
    table = pq.read_table(case_root / "findings" / "findings.parquet")
    return {"document": document, "parquet": table.to_pylist()}


def assert_same(duck: dict[str, Any], spark: dict[str, Any]) -> None:
    duck_findings = duck["document"]["findings"]
    spark_findings = spark["document"]["findings"]
    assert [f["title"] for f in spark_findings] == [f["title"] for f in duck_findings]
    for ours, theirs in zip(spark_findings, duck_findings, strict=True):
        assert ours == theirs, ours["title"]
    assert spark["document"] == duck["document"]
    assert spark["parquet"] == duck["parquet"]


def fired(result: dict[str, Any]) -> set[str]:
    return {f["rule_id"] for f in result["document"]["findings"]}


# -- every shipped rule -------------------------------------------------------------------
@pytest.fixture(scope="module")
def rule_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A case per product holding every rule case of that product, as one timeline."""
    assert_unique_ids()
    cases = {}
    for product in ("aws", "linux", "docker"):
        root = tmp_path_factory.mktemp(f"spark-rule-cases-{product}")
        case = root / "case"
        if product == "aws":  # delivery files, captured and parsed as a responder's would be
            (root / "input").mkdir()
            for rule, events in rules_of(product):
                records = json.dumps({"Records": events.records})
                (root / "input" / f"{rule.path.stem}.json").write_text(records)
            assert cloudir("capture", "files", "--case", str(case), str(root / "input")).code == 0
            assert cloudir("timeline", "--case", str(case)).code == 0
        else:
            write_timeline(case, [row for _, ev in rules_of(product) for row in ev.records])
        cases[product] = case
    return cases


@pytest.mark.parametrize("product", ["aws", "linux", "docker"])
def test_every_shipped_rule_case_gives_the_same_findings(
    rule_cases: dict[str, Path], product: str, spark: Any
) -> None:
    duck, on_spark = detect_both(rule_cases[product], spark)
    assert len(fired(duck)) >= {"aws": 40, "linux": 10, "docker": 3}[product]
    assert_same(duck, on_spark)


# -- computed fields, correlations and suppressions ----------------------------------------
@pytest.fixture(scope="module")
def evaluation_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The labelled evaluation set (attacks, benign look-alikes, Stratus detonations)."""
    quality = _bench_module("detection_quality")
    root = tmp_path_factory.mktemp("spark-eval")
    quality.write_capture_input(quality.load_eval_set(), root / "input")
    case = root / "case"
    assert cloudir("capture", "files", "--case", str(case), str(root / "input")).code == 0
    built = cloudir("timeline", "--case", str(case), "--json")
    assert built.code == 0, built.stderr
    return case


def test_the_evaluation_set_with_suppressions_gives_the_same_findings(
    evaluation_case: Path, spark: Any, tmp_path: Path
) -> None:
    filters = tmp_path / "filters"
    filters.mkdir()
    (filters / "henry.yml").write_text(NO_MFA_FOR_HENRY)
    duck, on_spark = detect_both(evaluation_case, spark, suppress=(SUPPRESS, filters))
    document = duck["document"]
    kinds = {f.get("correlation") for f in document["findings"]} - {None}
    assert {"value_count", "temporal", "temporal_ordered"} <= kinds
    assert [s["suppressed"] for s in document["suppressions"]] == [0, 1]
    assert_same(duck, on_spark)


# -- the corpus, the demo, an empty timeline ------------------------------------------------
def test_the_cloudtrail_corpus_gives_the_same_findings(
    spark_case: Path, tmp_path: Path, spark: Any
) -> None:
    case = tmp_path / "corpus"
    shutil.copytree(spark_case, case)
    duck, on_spark = detect_both(case, spark)
    assert len(duck["document"]["findings"]) > 20
    assert_same(duck, on_spark)


def test_the_demo_case_gives_the_same_findings(tmp_path: Path, spark: Any) -> None:
    case = tmp_path / "demo"
    result = cloudir("demo", "--case", str(case))
    assert result.code == 0, result.stderr
    duck, on_spark = detect_both(case, spark)
    titles = {f["title"] for f in duck["document"]["findings"]}
    assert "CloudTrail Logging Stopped" in titles
    assert_same(duck, on_spark)


def test_an_empty_timeline_has_no_findings_either_way(tmp_path: Path, spark: Any) -> None:
    case = tmp_path / "empty"
    write_timeline(case, [])
    duck, on_spark = detect_both(case, spark)
    assert duck["document"]["findings"] == []
    assert_same(duck, on_spark)


# -- how many passes over the timeline -----------------------------------------------------
def counted_part(marks: str, batches: Iterator[Any], **kwargs: Any) -> Iterator[Any]:
    """evaluate_part, leaving a file in `marks` each time a task reads a part."""
    (Path(marks) / uuid.uuid4().hex).write_text(str(os.getpid()))
    yield from spark_detect.evaluate_part(batches, **kwargs)


def test_detect_reads_the_timeline_in_two_passes(
    evaluation_case: Path, spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The computed fields' facts in one pass, then the scan and the automation calls in
    another: two passes over the timeline's parts, each reading every part once, then
    small jobs fetching the results. A third pass, or a pass per table (as there once
    was: up to eight), fails here."""
    case = tmp_path / "case"
    shutil.copytree(evaluation_case, case, ignore=shutil.ignore_patterns("findings"))
    marks = tmp_path / "marks"
    marks.mkdir()
    counted = functools.partial(counted_part, str(marks))
    monkeypatch.setattr(spark_detect, "evaluate_part", counted)
    parts = SparkTimelineParts(spark, timeline_files(Case.open(case)))
    partitions = parts.frame.rdd.getNumPartitions()
    result = detect(Case.open(case), [], parts=parts)
    assert {"value_count", "temporal"} <= {f.get("correlation") for f in result.findings}
    assert result.rules.backend.fields.context  # computed fields in use: their pass ran
    jobs = spark.sparkContext.statusTracker().getJobIdsForGroup(parts.job_group)
    assert parts.passes == 2
    assert len(list(marks.iterdir())) == 2 * partitions  # every part read once per pass
    # Per pass: the job evaluating every part (its results kept on the executors), the noop
    # write that job serves (Spark 3.5's adaptive execution makes a cached plan its own
    # job), and one job per part fetching that part's results.
    assert len(jobs) == 2 * (2 + partitions)
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None  # restored


def test_the_progress_line_counts_the_tasks_of_the_pass() -> None:
    """Tasks done of total of the pass's first job (not an earlier pass's, nor the quick
    write after it); a job or stage Spark has forgotten counts for nothing."""
    from types import SimpleNamespace

    stages = {
        1: SimpleNamespace(numCompletedTasks=4, numTasks=4),  # an earlier pass
        2: SimpleNamespace(numCompletedTasks=3, numTasks=4),
        3: SimpleNamespace(numCompletedTasks=0, numTasks=4),
    }
    jobs = {10: [1], 11: [2, 4], 12: [3], 13: None}

    class Tracker:
        def getJobIdsForGroup(self, group: str) -> list[int]:
            return list(jobs) if group == "g" else []

        def getJobInfo(self, job: int) -> Any:
            return None if jobs[job] is None else SimpleNamespace(stageIds=jobs[job])

        def getStageInfo(self, stage: int) -> Any:
            return stages.get(stage)

    shown: list[tuple[float, float | None]] = []

    class Bar:
        def update(self, done: float, *, total: float | None = None, label: Any = None) -> None:
            shown.append((done, total))

    spark_progress.show_tasks(Tracker(), "g", {10}, Bar())
    spark_progress.show_tasks(Tracker(), "other", set(), Bar())  # nothing yet: no update
    jobs[11] = None  # forgotten
    spark_progress.show_tasks(Tracker(), "g", {10}, Bar())
    assert shown == [(3, 4)]


# -- the command ----------------------------------------------------------------------------
def test_detect_engine_spark_answers_as_duckdb_does(spark_case: Path, tmp_path: Path) -> None:
    """The CLI: same exit code (1: a high finding), same findings on stdout, same line."""
    duck_case, spark_case_copy = tmp_path / "duck", tmp_path / "spark"
    shutil.copytree(spark_case, duck_case)
    shutil.copytree(spark_case, spark_case_copy)
    duck = cloudir("detect", "--case", str(duck_case), "--json")
    on_spark = cloudir(
        "detect", "--case", str(spark_case_copy), "--json",
        "--engine", "spark", "--spark-master", "local[2]",
    )  # fmt: skip
    assert (on_spark.code, duck.code) == (1, 1), on_spark.stderr
    assert on_spark.json()["findings"] == duck.json()["findings"]
    assert on_spark.stderr.splitlines()[-1] == duck.stderr.splitlines()[-1].replace(
        str(duck_case), str(spark_case_copy)
    )


def test_a_failed_spark_job_is_one_line() -> None:
    message = (
        "An error occurred while calling o123.toLocalIterator.\n"
        ": org.apache.spark.SparkException: Job aborted due to stage failure: ...\n"
        "org.apache.spark.api.python.PythonException: Traceback (most recent call last):\n"
        '  File "/x/cloudir/analyze/spark_detect.py", line 9, in evaluate_part\n'
        "duckdb.duckdb.OutOfMemoryException: Out of Memory Error: could not allocate\n"
        "\tat org.apache.spark.api.python.BasePythonRunner.handle(PythonRunner.scala:572)\n"
    )
    line = spark_failure(RuntimeError(message))
    assert line == "duckdb.duckdb.OutOfMemoryException: Out of Memory Error: could not allocate"
    assert spark_failure(RuntimeError("")) == "RuntimeError"


def test_a_task_that_cannot_start_is_one_line(spark_case: Path, tmp_path: Path) -> None:
    """A Python worker that cannot start (no such interpreter on the executors): exit 3,
    one line naming why, no JVM stack trace, no findings written."""
    case = tmp_path / "case"
    shutil.copytree(spark_case, case, ignore=shutil.ignore_patterns("findings"))
    env = {"PYSPARK_PYTHON": str(tmp_path / "no-such-python")}
    result = cloudir(
        "detect", "--case", str(case), "--engine", "spark", "--spark-master", "local[1]", env=env
    )
    assert result.code == 3
    program = env["PYSPARK_PYTHON"]
    assert result.stderr.strip().splitlines() == [
        f'error: detect on Spark failed: java.io.IOException: Cannot run program "{program}": '
        "error=2, No such file or directory"
    ]
    assert not (case / "findings" / "findings.json").exists()
