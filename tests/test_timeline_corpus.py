"""The CloudTrail timeline over real third-party evidence (tests/data/corpus/cloudtrail)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudir.case_folder import timeline_files
from tests.conftest import cloudir, query

FOLDERS = [
    "stratus-red-team/detonation-logs",
    "aws-cloudtrail-processing-library",
    "plaso",
    "cloudtrail2sightings",
    "cloud-custodian",
]


@pytest.fixture(scope="module")
def stratus_case(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = tmp_path_factory.mktemp("stratus") / "case"
    folder = corpus / "cloudtrail/stratus-red-team/detonation-logs"
    assert cloudir("capture", "files", "--case", str(case), str(folder)).code == 0
    result = cloudir("timeline", "--case", str(case), "--json")
    assert result.code == 0, result.stderr
    return case


@pytest.fixture(scope="module")
def corpus_case(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = tmp_path_factory.mktemp("all") / "case"
    for folder in FOLDERS:
        result = cloudir(
            "capture", "files", "--case", str(case), str(corpus / "cloudtrail" / folder)
        )
        assert result.code == 0, result.stderr
    result = cloudir("timeline", "--case", str(case))
    assert result.code == 0, result.stderr
    return case


def test_every_stratus_event_becomes_exactly_one_row(stratus_case: Path, corpus: Path) -> None:
    expected = set()
    for path in (corpus / "cloudtrail/stratus-red-team/detonation-logs").glob("*.json"):
        expected |= {event["eventID"] for event in json.loads(path.read_text())}
    rows = query(stratus_case, "SELECT event_id, count(*) AS n FROM timeline GROUP BY 1")
    assert len(expected) == 310
    assert {r["event_id"] for r in rows} == expected
    assert all(r["n"] == 1 for r in rows)
    summary = json.loads((stratus_case / "timeline/summary.json").read_text())
    assert summary["rows"] == 310
    assert summary["errors"] == 0


def test_stop_logging_row_reads_like_the_event(stratus_case: Path) -> None:
    [row] = query(
        stratus_case,
        "SELECT strftime(timestamp, '%Y-%m-%dT%H:%M:%SZ') AS ts, * FROM timeline "
        "WHERE event_id = '10163ed2-2253-469d-a5ee-cbc6651f8934'",
    )
    assert row["ts"] == "2024-07-31T13:06:24Z"
    assert row["action"] == "cloudtrail.amazonaws.com:StopLogging"
    assert row["target"] == "stratus-red-team-ct-stop-trail-buykxbqejv"
    assert row["outcome"] == "success"
    assert row["source"] == "cloudtrail"
    assert row["artifact"] == "aws:cloudtrail"
    assert row["timestamp_desc"] == "Event Time"
    assert "cloudtrail:StopLogging on stratus-red-team-ct-stop-trail-buykxbqejv" in row["message"]
    raw = json.loads(row["raw"])
    assert raw["requestID"] == "14c891b6-11b5-4787-ae97-64a974977078"
    assert raw["userIdentity"]["arn"] == row["user"]


def test_failed_calls_carry_their_error_code(stratus_case: Path) -> None:
    rows = query(
        stratus_case,
        "SELECT outcome, raw->>'errorCode' AS code FROM timeline "
        "WHERE raw->>'errorCode' IS NOT NULL",
    )
    assert rows, "the Stratus logs hold failed calls"
    assert all(r["outcome"] == r["code"] for r in rows)


def test_lookup_events_jsonl_parses_from_the_inner_record(corpus_case: Path) -> None:
    rows = query(
        corpus_case,
        "SELECT strftime(timestamp, '%Y-%m-%dT%H:%M:%SZ') AS ts, user, action FROM timeline "
        "WHERE event_id = '0828c0d2-3589-4390-b954-c78b4a7df44b'",
    )
    assert rows == [
        {
            "ts": "2022-02-07T22:23:37Z",
            "user": "arn:aws:iam::012345678901:user/fakeusername",
            "action": "ec2.amazonaws.com:DescribeInstances",
        }
    ]
    [count] = query(
        corpus_case, "SELECT count(*) AS n FROM timeline WHERE evidence_id LIKE '%plaso%'"
    )
    assert count["n"] == 6


def test_eventbridge_details_parse(corpus_case: Path, corpus: Path) -> None:
    lines = (corpus / "cloudtrail/cloud-custodian/cwe_cloudtrail_details.jsonl").read_text()
    ids = {json.loads(line)["eventID"] for line in lines.splitlines() if line.strip()}
    rows = query(corpus_case, "SELECT event_id FROM timeline WHERE evidence_id LIKE '%custodian%'")
    assert {r["event_id"] for r in rows} == ids


def test_broken_files_are_counted_and_never_stop_the_run(corpus_case: Path) -> None:
    errors = [
        json.loads(line)
        for line in (corpus_case / "timeline/errors.jsonl").read_text().splitlines()
    ]
    by_file = {Path(e["path"]).name: e["reason"] for e in errors}
    assert by_file["SerializerTestFileBadJsonFormat.json"].startswith("invalid JSON")
    assert by_file["aws.execution.ec2-user-data.json"].startswith("invalid JSON")
    assert by_file["SerializerAllFieldsNull.json"] == "record without eventTime"
    assert by_file["SQSMessageBody"].startswith("SNS/SQS delivery notification")
    assert by_file["cloudtrail.zip"].startswith("zip archive")
    assert "ThisIsAWrongEventTime" in by_file["SerializerTestFileMissField.json"]
    summary = json.loads((corpus_case / "timeline/summary.json").read_text())
    assert summary["errors"] == len(errors)
    assert summary["rows_by_evidence"]["cloudtrail-detonation-logs"] == 310


def test_strict_exits_3_when_evidence_had_errors(corpus_case: Path) -> None:
    result = cloudir("timeline", "--case", str(corpus_case), "--strict")
    assert result.code == 3
    assert "evidence problems skipped and listed in" in result.stderr
    assert "Traceback" not in result.stderr


def test_rerun_rebuilds_without_duplicating_rows(corpus_case: Path) -> None:
    before = query(corpus_case, "SELECT count(*) AS n FROM timeline")[0]["n"]
    assert cloudir("timeline", "--case", str(corpus_case)).code == 0
    # cloud-custodian's fixture reuses one eventID for two different records: both stay
    after = query(
        corpus_case, "SELECT count(*) AS n, count(DISTINCT (event_id, raw)) AS d FROM timeline"
    )
    assert after == [{"n": before, "d": before}]


def test_parquet_carries_schema_and_tool_version(stratus_case: Path) -> None:
    import pyarrow.parquet as pq

    from cloudir import __version__
    from cloudir.analyze.schema import SCHEMA_VERSION, TIMELINE_SCHEMA

    for path in timeline_files(stratus_case / "timeline"):
        schema = pq.read_schema(path)
        assert schema.metadata[b"cloudir.schema_version"] == SCHEMA_VERSION.encode()
        assert schema.metadata[b"cloudir.version"] == __version__.encode()
        assert schema.remove_metadata() == TIMELINE_SCHEMA.remove_metadata()


def test_timesketch_export_has_the_required_columns(stratus_case: Path, tmp_path: Path) -> None:
    out = tmp_path / "ts.jsonl"
    result = cloudir("timeline", "export", "--case", str(stratus_case), "--out", str(out))
    assert result.code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 310
    first = rows[0]
    assert {"message", "datetime", "timestamp_desc", "timestamp", "raw"} <= set(first)
    assert first["datetime"].endswith("+00:00")
    assert [r["datetime"] for r in rows] == sorted(r["datetime"] for r in rows)

    csv_out = tmp_path / "ts.csv"
    result = cloudir(
        "timeline", "export", "--case", str(stratus_case), "--format", "csv", "--out", str(csv_out)
    )
    assert result.code == 0, result.stderr
    import csv

    with open(csv_out, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 310
    assert table[0]["timestamp_desc"] == "Event Time"
