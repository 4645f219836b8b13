"""The Spark timeline is the DuckDB timeline (issue 18: equivalence is the contract).

Each case is captured once, copied, and built by both engines: the same rows (every
column, `raw` byte for byte, as multisets since disagreeing copies of an event are all
kept), the same Parquet schema, the same errors.jsonl entries and the same summary. The
one value fixed for both runs is the wall clock (`_ceiling_us`): "a day after the build"
moves between two builds of any engine, and the implausible-time rule names it.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cloudir.analyze import spark_timeline, timeline
from cloudir.analyze.spark_timeline import build_timeline_spark
from cloudir.analyze.timeline import build_timeline
from cloudir.case import Case
from cloudir.case_folder import timeline_files
from tests.conftest import cloudir, ct_event

CORPUS_FOLDERS = [
    "stratus-red-team/detonation-logs",
    "aws-cloudtrail-processing-library",
    "plaso",
    "cloudtrail2sightings",
    "cloud-custodian",
]
CEILING_US = timeline._epoch_us("2026-01-01T00:00:00Z")
PLANTED = "5f0d6a4e-0000-4000-8000-00000000beef"


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline, "_ceiling_us", lambda: CEILING_US)
    monkeypatch.setattr(spark_timeline, "_ceiling_us", lambda: CEILING_US)


# -- building both ways -------------------------------------------------------------------
def both_engines(case_root: Path, spark: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The case copied; DuckDB builds one copy, Spark the other; what each wrote."""
    twin = case_root.parent / (case_root.name + "-spark")
    shutil.copytree(case_root, twin)
    build_timeline(Case.open(case_root), workers=1)
    build_timeline_spark(Case.open(twin), spark)
    return written(case_root), written(twin)


def written(case_root: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = case_root / "timeline"
    assert not (case_root / "timeline.building").exists()
    parts = timeline_files(folder)
    assert parts and all(p.name.startswith("part-") for p in parts)
    tables = [pq.read_table(p) for p in parts]
    schemas = {t.schema.to_string(show_schema_metadata=True) for t in tables}
    table = pa.concat_tables(tables)
    columns = [c.to_pylist() for c in table.columns]
    columns[0] = table.column("timestamp").cast(pa.int64()).to_pylist()
    lines = (folder / "errors.jsonl").read_text().splitlines()
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("path")
    return {
        # the partitions (layout.py): empty timelines have their one file at the top
        "folders": {str(p.parent.relative_to(folder)) for p in parts},
        "schemas": schemas,
        "rows": Counter(zip(*columns, strict=True)),
        "errors": Counter(lines),
        "summary": summary,
    }


def assert_same(duck: dict[str, Any], spark: dict[str, Any]) -> None:
    assert spark["folders"] == duck["folders"]
    assert spark["schemas"] == duck["schemas"]
    assert len(duck["schemas"]) == 1
    assert sum(spark["rows"].values()) == sum(duck["rows"].values())
    assert spark["rows"] == duck["rows"]
    assert spark["errors"] == duck["errors"]
    assert spark["summary"] == duck["summary"]


# -- the corpus ---------------------------------------------------------------------------
def test_the_whole_cloudtrail_corpus_gives_the_same_timeline(
    corpus: Path,
    tmp_path: Path,
    spark: Any,
) -> None:
    case = tmp_path / "corpus"
    for folder in CORPUS_FOLDERS:
        result = cloudir(
            "capture", "files", "--case", str(case), str(corpus / "cloudtrail" / folder)
        )
        assert result.code == 0, result.stderr
    opened = Case.open(case)
    tasks, _ = timeline.collect_tasks(opened)
    on_executors = [t for t in tasks if spark_timeline._spark_reads(opened, t)]
    assert len(on_executors) == len(tasks) == 64  # every corpus file is parsed by Spark
    duck, on_spark = both_engines(case, spark)
    assert_same(duck, on_spark)
    # Every shape of the corpus was read: S3 files, .json.gz, JSONL, arrays, SQS bodies.
    assert duck["summary"]["rows"] == 361
    assert any("zip archive" in line for line in duck["errors"])
    assert any("invalid JSON" in line or "unexpected JSON" in line for line in duck["errors"])


# -- hostile evidence ---------------------------------------------------------------------
def add_item(case: Case, evidence_id: str, files: dict[str, bytes], **meta: Any) -> None:
    """One evidence item as a capture leaves it: meta, files, custody, completion."""
    meta.setdefault("kind", "cloudtrail")
    meta.setdefault("source", {"type": "files", "path": evidence_id})
    case.open_item(evidence_id, meta)
    for name, data in files.items():
        case.record("capture", evidence_id, [case.store_bytes(evidence_id, name, data)])
    case.record("capture-complete", evidence_id, [])


def lookup_page(*records: dict[str, Any]) -> bytes:
    events = [
        {"EventId": r["eventID"], "EventName": r["eventName"], "EventTime": 1722420000.0,
         "CloudTrailEvent": json.dumps(r, separators=(",", ":"))}
        for r in records
    ]  # fmt: skip
    return json.dumps({"Events": events}).encode()


def hostile_case(root: Path, corpus: Path) -> Path:
    case = Case.create(root, title="hostile")
    shared = ct_event("2024-07-31T10:00:00Z", "GetObject")
    planted = ct_event("2024-07-31T10:05:00Z", "PutBucketPolicy", eventID=PLANTED)
    forged = dict(planted, sourceIPAddress="203.0.113.66")
    early = ct_event("1999-01-01T00:00:00Z", "ListBuckets")
    whole = gzip.compress(json.dumps({"Records": [shared, planted, early]}).encode())
    again = json.dumps({"Records": [shared, ct_event("2024-07-31T11:00:00Z")]}, indent=2)
    add_item(
        case,
        "s3",
        {
            "AWSLogs/a.json.gz": whole,
            "AWSLogs/b.json": again.encode(),  # the same event, other layout: one copy kept
            "AWSLogs/forged.json": json.dumps({"Records": [forged]}).encode(),
            "AWSLogs/truncated.json.gz": whole[: len(whole) // 2],
            "AWSLogs/invalid.json": b'{"Records": [{"eventTime": "2024-07-31T1',
            "AWSLogs/unknown.json": b'{"Something": "else", "n": 1}',
            "AWSLogs/bare.json": b"42",
            "AWSLogs/notice.json": json.dumps(
                {"Type": "Notification", "Message": '{"s3ObjectKey": ["x"]}'}
            ).encode(),
            "AWSLogs/no-time.json": json.dumps({"Records": [{"eventName": "X"}]}).encode(),
            "AWSLogs/empty.json": b"",
            "history.jsonl": b"\n".join(
                [
                    json.dumps(
                        {"CloudTrailEvent": json.dumps(ct_event("2024-07-31T12:00:00Z"))}
                    ).encode(),
                    b"{not json",
                    json.dumps(ct_event("2024-07-31T12:01:00Z", "DeleteTrail")).encode(),
                ]
            ),
            "bridge.json": json.dumps(
                {
                    "detail-type": "AWS API Call via CloudTrail",
                    "source": "aws.s3",
                    "detail": ct_event("2024-07-31T12:02:00Z", "PutObject"),
                }
            ).encode(),
            "_hidden.json": json.dumps({"Records": [ct_event("2024-07-31T12:03:00Z")]}).encode(),
        },
    )
    add_item(
        case,
        "lookup",
        {"page-1.json": lookup_page(shared, ct_event("2024-07-31T13:00:00Z"))},
        source={"type": "lookup_events"},
    )
    alert = corpus.parent / "findings/documented/guardduty-cli-getfindings.json"
    add_item(case, "alert", {"finding.json": alert.read_bytes()}, kind="alert")
    return root


def test_hostile_evidence_gives_the_same_rows_errors_and_summary(
    corpus: Path,
    tmp_path: Path,
    spark: Any,
) -> None:
    duck, on_spark = both_engines(hostile_case(tmp_path / "hostile", corpus), spark)
    assert_same(duck, on_spark)
    summary = duck["summary"]
    # The case exercises what it says it does, so equality is not two empty timelines.
    assert summary["duplicates_dropped"] == 2  # `shared` from b.json and from LookupEvents
    assert summary["conflicting_copies"]["events"] == 1
    assert summary["conflicting_copies"]["examples"][0]["event_id"] == PLANTED
    assert summary["implausible_times"]["rows"] == 1
    assert summary["rows_by_evidence"]["alert"] > 0  # parsed in the driver
    kinds = Counter(json.loads(line).get("kind") for line in duck["errors"])
    assert kinds["conflicting_copies"] == 1 and kinds["implausible_time"] == 2
    reasons = " ".join(json.loads(line)["reason"] for line in duck["errors"])
    for said in ("truncated or corrupt gzip", "invalid JSON", "SNS/SQS", "empty file",
                 "record without eventTime", "not a CloudTrail record"):  # fmt: skip
        assert said in reasons


def test_a_case_without_evidence_is_an_empty_timeline_either_way(
    tmp_path: Path,
    spark: Any,
) -> None:
    Case.create(tmp_path / "empty", title="empty")
    duck, on_spark = both_engines(tmp_path / "empty", spark)
    assert_same(duck, on_spark)
    assert duck["summary"]["rows"] == 0 and not duck["rows"]


@pytest.mark.parametrize("name", ["case:1", "case [1]{y}*?"])
def test_a_case_folder_hadoop_cannot_name_is_read_all_the_same(
    tmp_path: Path, spark: Any, name: str
) -> None:
    """Hadoop reads `:` in a path as a URI scheme (and `[`, `{` as globs): such a case's
    CloudTrail is parsed in the driver instead, its staging Parquet read back by Spark
    under an escaped name (engines/hadoop_path.py), and the timeline is the same."""
    root = tmp_path / name
    case = Case.create(root, title="glob")
    event = ct_event("2024-07-31T10:00:00Z")
    add_item(case, "s3", {"a.json": json.dumps({"Records": [event, event]}).encode()})
    duck, on_spark = both_engines(root, spark)
    assert_same(duck, on_spark)
    assert duck["summary"]["rows"] == 1 and duck["summary"]["duplicates_dropped"] == 1


def test_a_failed_spark_job_is_one_line_and_keeps_the_timeline(
    spark_case: Path, tmp_path: Path
) -> None:
    """Executors without a Python to start: exit 3, one line, the previous timeline intact."""
    case = tmp_path / "case"
    shutil.copytree(spark_case, case)
    before = sorted(p.name for p in (case / "timeline").iterdir())
    program = str(tmp_path / "no-such-python")
    result = cloudir(
        "timeline", "--case", str(case), "--engine", "spark", "--spark-master", "local[1]",
        env={"PYSPARK_PYTHON": program},
    )  # fmt: skip
    assert result.code == 3
    assert result.stderr.strip().splitlines() == [
        f'error: timeline on Spark failed: java.io.IOException: Cannot run program "{program}": '
        "error=2, No such file or directory"
    ]
    assert sorted(p.name for p in (case / "timeline").iterdir()) == before
