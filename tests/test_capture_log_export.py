"""`cloudir capture logs --log-group NAME --export-to s3://...`: a group through an export task.

moto over HTTP runs the export task (CreateExportTask writes the window's events to the
bucket, DescribeExportTasks says COMPLETED); tests/export_proxy.py moves what moto wrote
to the keys AWS writes (`PREFIX/<taskId>/<stream>/000000.gz`, `PREFIX/aws-logs-write-test`)
and plays a task still RUNNING, FAILED, or refused. The files land in the case with custody
whose hashes match them, the timeline has one row per event, a re-run finishes with the
task already recorded, and what goes wrong is one named line.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudir.analyze.parsers import ErrorLog, ParseOptions
from cloudir.analyze.parsers import cloudwatch_logs as parser
from cloudir.aws import Aws, AwsOptions
from cloudir.capture import log_export
from cloudir.case import Case
from cloudir.timewindow import Window
from tests.conftest import boto_client, cloudir, custody, query
from tests.export_proxy import ExportProxy

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(hours=3)
END = NOW - timedelta(minutes=1)
STREAMS = ("2024/07/31/[$LATEST]aaaa", "2024/07/31/[$LATEST]bbbb")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[ExportProxy]:
    with ExportProxy(moto_url) as running:
        yield running


@pytest.fixture
def group(moto_url: str) -> dict[str, Any]:
    """A group with two streams of 3 events in the window, one stream with one event
    before it, and a bucket to export to."""
    logs = boto_client(moto_url, "logs")
    name = f"/aws/lambda/export-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=name)
    inside = []
    for stream in STREAMS:
        logs.create_log_stream(logGroupName=name, logStreamName=stream)
        events = [
            {"timestamp": _ms(START + timedelta(minutes=10 * n + 1)), "message": text}
            for n, text in enumerate(["START RequestId: 1", "ERROR token=\x1b[31mx", "END"])
        ]
        logs.put_log_events(logGroupName=name, logStreamName=stream, logEvents=events)
        inside += [dict(e, stream=stream) for e in events]
    logs.create_log_stream(logGroupName=name, logStreamName="old")
    before = [{"timestamp": _ms(START - timedelta(minutes=30)), "message": "before the window"}]
    logs.put_log_events(logGroupName=name, logStreamName="old", logEvents=before)
    bucket = f"ir-exports-{uuid.uuid4().hex[:8]}"
    boto_client(moto_url, "s3").create_bucket(Bucket=bucket)
    return {"name": name, "inside": inside, "bucket": bucket}


def _capture(case: Path, group: dict[str, Any], url: str, *extra: str) -> Any:
    return cloudir(
        "capture", "logs", "--case", str(case), "--endpoint-url", url,
        "--region", "us-east-1", "--log-group", group["name"],
        "--export-to", f"s3://{group['bucket']}/case-42/", "--start", _iso(START),
        "--end", _iso(END), "--json", *extra,
    )  # fmt: skip


def test_an_export_lands_in_the_case_with_custody_and_becomes_rows(
    group: dict[str, Any], proxy: ExportProxy, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    run = _capture(case, group, proxy.url)
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    assert item["status"] == "COMPLETED" and not item["reused_task"]
    assert (item["listed"], item["captured"], item["failed"]) == (2, 2, [])
    task_id = item["export_task"]
    assert proxy.calls["CreateExportTask"] == 1
    assert "aws-logs-write-test" in run.stderr and "not copied" in run.stderr

    folder = case / "evidence" / item["evidence_id"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "cloudwatch-logs"
    assert meta["source"]["type"] == "export_task"
    assert meta["source"]["destination"] == f"s3://{group['bucket']}/case-42"
    created = json.loads((folder / "export-task" / task_id / "CreateExportTask.json").read_text())
    assert created == {"taskId": task_id}
    [described] = (folder / "export-task" / task_id).glob("DescribeExportTasks-*.json")
    assert json.loads(described.read_text())["exportTasks"][0]["status"]["code"] == "COMPLETED"

    entries = [e for e in custody(case) if e.get("evidence_id") == item["evidence_id"]]
    assert entries[-1]["action"] == "capture-complete"
    skipped = [e for e in entries if e["action"] == "capture-skipped"]
    assert len(skipped) == 1 and "case-42/aws-logs-write-test" in skipped[0]["note"]
    keys = set()
    for entry in entries:
        for record in entry.get("files", []):
            data = (case / record["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record["sha256"]
            assert len(data) == record["bytes"]
        if (entry.get("source") or {}).get("type") == "s3":
            keys.add(entry["source"]["key"])
    assert keys == {f"case-42/{task_id}/{stream}/000000.gz" for stream in STREAMS}
    assert cloudir("verify", "--case", str(case)).code == 0

    timeline = cloudir("timeline", "--case", str(case), "--strict")
    assert timeline.code == 0, timeline.stderr
    rows = query(
        case,
        "SELECT timestamp, timestamp_desc, artifact, host, target, message, raw FROM timeline "
        "ORDER BY timestamp, host",
    )
    assert len(rows) == 6
    assert {r["artifact"] for r in rows} == {"aws:cloudwatch-logs"}
    assert {r["target"] for r in rows} == {group["name"]}
    assert {r["host"] for r in rows} == set(STREAMS)  # the stream's name from the key
    expected = sorted((e["timestamp"], e["stream"], e["message"]) for e in group["inside"])
    got = sorted(
        (json.loads(r["raw"])["timestamp"], r["host"], json.loads(r["raw"])["message"])
        for r in rows
    )
    assert got == expected
    errors = [r for r in rows if r["message"].startswith("ERROR")]
    assert len(errors) == 2 and "\x1b" not in errors[0]["message"]  # made inert


def test_a_rerun_finishes_the_recorded_task_without_starting_another(
    group: dict[str, Any], proxy: ExportProxy, tmp_path: Path
) -> None:
    """Ctrl-C as the copying starts: the re-run reads the recorded task (COMPLETED) and
    copies its files; a third run finds everything held."""
    aws = Aws(AwsOptions(region="us-east-1", endpoint_url=proxy.url))
    case = Case.create(tmp_path / "case")
    window = Window.parse(_iso(START), _iso(END))
    destination = log_export.Destination.parse(f"s3://{group['bucket']}/exports")
    said: list[str] = []

    def stop_at_start(done: int, total: int) -> None:
        raise KeyboardInterrupt  # the responder's Ctrl-C once the task is done

    with pytest.raises(KeyboardInterrupt):
        log_export.capture_log_export(
            case, aws, group["name"], window, {}, said.append, destination, workers=1,
            on_progress=stop_at_start, sleep=lambda _: None,
        )  # fmt: skip
    [evidence_id] = case.evidence_ids()
    assert [e["action"] for e in custody(case.root)][-1] == "capture-incomplete"

    again = log_export.capture_log_export(
        case, aws, group["name"], window, {}, said.append, destination, sleep=lambda _: None
    )
    assert again.evidence_id == evidence_id and again.reused and again.item.resumed
    assert proxy.calls["CreateExportTask"] == 1
    assert any("not starting another" in line for line in said)
    assert (again.captured, again.item.skipped) == (2, 1)  # and the write test
    assert [e["action"] for e in custody(case.root)][-1] == "capture-complete"
    held = sorted(p.name for p in case.evidence_files(evidence_id) if p.suffix == ".gz")
    assert held == ["000000.gz", "000000.gz"]

    third = log_export.capture_log_export(
        case, aws, group["name"], window, {}, said.append, destination, sleep=lambda _: None
    )
    assert (third.captured, third.item.skipped) == (0, 3)  # both held, the write test
    assert proxy.calls["CreateExportTask"] == 1


def test_a_task_still_running_at_the_timeout_is_picked_up_by_the_next_run(
    group: dict[str, Any], proxy: ExportProxy, tmp_path: Path
) -> None:
    aws = Aws(AwsOptions(region="us-east-1", endpoint_url=proxy.url))
    case = Case.create(tmp_path / "case")
    window = Window.parse(_iso(START), _iso(END))
    destination = log_export.Destination.parse(f"s3://{group['bucket']}")
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    proxy.running = 100
    first = log_export.capture_log_export(
        case, aws, group["name"], window, {}, lambda _: None, destination, timeout=100,
        sleep=sleep, clock=lambda: now[0],
    )  # fmt: skip
    assert first.status == "RUNNING" and not first.item.complete
    assert "still RUNNING after 100 s" in first.failed[0]
    assert f"--start {_iso(START)} --end {_iso(END)}" in first.failed[0]
    assert pauses[:5] == [2, 4, 8, 16, 30] and max(pauses) <= log_export.POLL_MOST
    assert sum(pauses) == 100
    folder = case.evidence_dir(first.evidence_id) / "export-task" / str(first.task_id)
    [answer] = folder.glob("DescribeExportTasks-*.json")
    assert json.loads(answer.read_text())["exportTasks"][0]["status"]["code"] == "RUNNING"
    assert [e["action"] for e in custody(case.root)][-1] == "capture-incomplete"

    proxy.running = 2  # the task finishes while the second run waits
    second = log_export.capture_log_export(
        case, aws, group["name"], window, {}, lambda _: None, destination, sleep=sleep,
        clock=lambda: now[0],
    )  # fmt: skip
    assert second.reused and second.status == "COMPLETED" and second.captured == 2
    assert proxy.calls["CreateExportTask"] == 1
    assert len(list(folder.glob("DescribeExportTasks-*.json"))) == 2
    assert [e["action"] for e in custody(case.root)][-1] == "capture-complete"


def test_an_export_of_a_quiet_window_is_complete_and_says_so(
    group: dict[str, Any], proxy: ExportProxy, tmp_path: Path
) -> None:
    aws = Aws(AwsOptions(region="us-east-1", endpoint_url=proxy.url))
    case = Case.create(tmp_path / "case")
    quiet = Window.parse(_iso(START - timedelta(days=3)), _iso(START - timedelta(days=2)))
    destination = log_export.Destination.parse(f"s3://{group['bucket']}/quiet")
    result = log_export.capture_log_export(
        case, aws, group["name"], quiet, {}, lambda _: None, destination, sleep=lambda _: None
    )
    assert result.status == "COMPLETED" and result.item.complete
    assert (result.listed, result.captured) == (0, 0)
    assert "wrote no log files" in result.item.notes[0]


def test_a_failed_task_is_a_named_problem_and_the_next_run_starts_a_new_one(
    group: dict[str, Any], proxy: ExportProxy, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    proxy.final = "FAILED"
    run = _capture(case, group, proxy.url)
    assert run.code == 4
    assert "ended FAILED: Task is FAILED" in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: 1 problem(s)")
    assert [e["action"] for e in custody(case)][-1] == "capture-incomplete"
    proxy.final = None
    again = _capture(case, group, proxy.url)
    assert again.code == 0, again.stderr
    assert proxy.calls["CreateExportTask"] == 2 and "starting a new one" in again.stderr
    assert again.json()["items"][0]["captured"] == 2


def test_a_second_export_running_in_the_account_is_named(
    group: dict[str, Any], proxy: ExportProxy, tmp_path: Path
) -> None:
    proxy.limit_exceeded = True
    run = _capture(tmp_path / "case", group, proxy.url)
    assert run.code == 4
    last = run.stderr.strip().splitlines()[-1]
    assert "another export task is already running" in last and "one at a time" in last


def test_a_refused_export_is_one_line(
    group: dict[str, Any], proxy: ExportProxy, tmp_path: Path
) -> None:
    proxy.denied = True
    run = _capture(tmp_path / "case", group, proxy.url)
    assert run.code == 4
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("error: logs:CreateExportTask denied: missing permission logs:CreateExportTask")
    )


def test_a_bucket_that_does_not_exist_is_one_line_before_the_case(
    group: dict[str, Any], moto_url: str, tmp_path: Path
) -> None:
    run = cloudir(
        "capture", "logs", "--case", str(tmp_path / "case"), "--endpoint-url", moto_url,
        "--region", "us-east-1", "--log-group", group["name"],
        "--export-to", "s3://no-such-bucket-here/x",
    )  # fmt: skip
    assert run.code == 2
    assert run.stderr.strip().splitlines() == [
        "error: --export-to: there is no bucket named no-such-bucket-here"
    ]
    assert not (tmp_path / "case").exists()


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--filter", "ERROR"], "--filter cannot go with --export-to"),
        (["--export-timeout", "0"], "--export-timeout must be"),
    ],
)
def test_what_cannot_go_with_an_export_is_exit_2(
    group: dict[str, Any], moto_url: str, tmp_path: Path, extra: list[str], why: str
) -> None:
    run = _capture(tmp_path / "case", group, moto_url, *extra)
    assert run.code == 2 and why in run.stderr
    assert not (tmp_path / "case").exists()
    bad_uri = cloudir("capture", "logs", "--case", str(tmp_path / "c"), "--log-group", "g",
                      "--export-to", "https://bucket/x")  # fmt: skip
    assert bad_uri.code == 2 and "s3://BUCKET[/PREFIX]" in bad_uri.stderr
    no_group = cloudir("capture", "logs", "--case", str(tmp_path / "c"), "--dns", "all",
                       "--export-to", "s3://bucket/x")  # fmt: skip
    assert no_group.code == 2 and "--log-group NAME" in no_group.stderr


# -- the export's files as an adversary writes them -------------------------------------
def _parse(tmp_path: Path, data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    path = tmp_path / "stream-a" / "000000.gz"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    errors = ErrorLog("e1", "logs/000000.gz")
    rows = [r for b in parser.parse(path, "e1", errors, ParseOptions()) for r in b.to_pylist()]
    return rows, errors.entries


def test_export_lines_continuations_and_bad_lines(tmp_path: Path) -> None:
    text = (
        "no time before any event\n"
        "2024-07-31T10:00:00.123Z Traceback (most recent call last):\n"
        '  File "x.py", line 1\n'
        "2024-07-31T10:00:01.000Z second\n"
        "2024-13-45T10:00:01.000Z a date that is none\n"
        "2024-07-31T10:00:01.000Z second\n"
    )
    rows, errors = _parse(tmp_path, gzip.compress(text.encode()))
    assert [json.loads(r["raw"])["message"] for r in rows] == [
        'Traceback (most recent call last):\n  File "x.py", line 1',  # one event, two lines
        "second",
        "second",
    ]
    assert "\n" not in rows[0]["message"]  # made inert
    assert rows[0]["host"] == "stream-a" and rows[0]["timestamp"].isoformat().startswith(
        "2024-07-31T10:00:00.123"
    )
    assert json.loads(rows[0]["raw"])["timestamp"] == 1722420000123
    assert rows[1]["event_id"] != rows[2]["event_id"]  # two identical lines: two events
    assert [(e["line"], e["reason"][:20]) for e in errors] == [
        (1, "a line that does not"),
        (5, "an export line whose"),
    ]


def test_a_truncated_or_foreign_file_is_a_logged_skip(tmp_path: Path) -> None:
    whole = gzip.compress(b"2024-07-31T10:00:00.000Z one\n" * 200 + b"2024-07-31T10:00:00.000Z x")
    rows, errors = _parse(tmp_path, whole[: len(whole) // 2])
    assert len(errors) == 1 and "truncated or corrupt gzip" in errors[0]["reason"]
    assert all(r["message"] == "one" for r in rows)
    rows, errors = _parse(tmp_path, b"\x1f\x8b\x08\x00garbage")
    assert rows == [] and len(errors) == 1 and "gzip" in errors[0]["reason"]
