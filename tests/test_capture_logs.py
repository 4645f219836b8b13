"""`cloudir capture logs --log-group`: CloudWatch Logs pages as received, on the timeline.

moto's CloudWatch Logs over HTTP holds the groups (DescribeLogGroups, FilterLogEvents with
paging and filter patterns). A capture stores every page byte for byte, records the
group's retention, resumes where a cut-short run stopped, and its events become timeline
rows that two overlapping captures do not double.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze.parsers import ErrorLog, ParseOptions
from cloudir.analyze.parsers import cloudwatch_logs as parser
from cloudir.aws import Aws, AwsOptions
from cloudir.capture import log_group as capture
from cloudir.case import Case
from cloudir.timewindow import Window
from tests.conftest import boto_client, cloudir, custody, query

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(hours=3)
END = NOW - timedelta(minutes=1)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture
def group(moto_url: str) -> dict[str, Any]:
    """A group with two streams: 6 events in the window (3 say ERROR), 1 before it."""
    logs = boto_client(moto_url, "logs")
    name = f"/aws/lambda/billing-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=name)
    logs.put_retention_policy(logGroupName=name, retentionInDays=14)
    inside = []
    for stream in ("2024/07/31/[$LATEST]aaaa", "2024/07/31/[$LATEST]bbbb"):
        logs.create_log_stream(logGroupName=name, logStreamName=stream)
        events = [
            {"timestamp": _ms(START + timedelta(minutes=10 * n + 1)), "message": text}
            for n, text in enumerate(["START RequestId: 1", "ERROR token=\x1b[31mx", "END"])
        ]
        logs.put_log_events(logGroupName=name, logStreamName=stream, logEvents=events)
        inside += events
    logs.create_log_stream(logGroupName=name, logStreamName="old")
    before = [{"timestamp": _ms(START - timedelta(minutes=30)), "message": "before the window"}]
    logs.put_log_events(logGroupName=name, logStreamName="old", logEvents=before)
    return {"name": name, "inside": inside, "url": moto_url}


def _capture(case: Path, group: dict[str, Any], *extra: str) -> Any:
    return cloudir(
        "capture", "logs", "--case", str(case), "--endpoint-url", group["url"],
        "--region", "us-east-1", "--log-group", group["name"],
        "--start", _iso(START), "--end", _iso(END), "--json", *extra,
    )  # fmt: skip


def test_a_group_is_captured_as_received_and_becomes_timeline_rows(
    group: dict[str, Any], tmp_path: Path
) -> None:
    case = tmp_path / "case"
    run = _capture(case, group)
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    assert (item["log_group"], item["events"], item["pages"]) == (group["name"], 6, 1)
    assert "are kept 14 days" in run.stderr
    folder = case / "evidence" / item["evidence_id"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "cloudwatch-logs"
    assert meta["log_group"]["retentionInDays"] == 14
    page = json.loads((folder / "pages" / "page-00001.json").read_bytes())
    assert sorted(e["message"] for e in page["events"]) == sorted(
        e["message"] for e in group["inside"]
    )
    entries = [e for e in custody(case) if e.get("evidence_id") == item["evidence_id"]]
    assert entries[-1]["action"] == "capture-complete"
    stored = [f for e in entries for f in e.get("files", [])]
    assert any(f["path"].endswith("pages/page-00001.json") for f in stored)

    assert cloudir("timeline", "--case", str(case), "--strict").code == 0
    rows = query(
        case,
        "SELECT timestamp, source, artifact, host, target, message, raw FROM timeline "
        "ORDER BY timestamp, host",
    )
    assert len(rows) == 6
    assert {r["artifact"] for r in rows} == {"aws:cloudwatch-logs"}
    assert {r["target"] for r in rows} == {group["name"]}
    assert {r["host"] for r in rows} == {"2024/07/31/[$LATEST]aaaa", "2024/07/31/[$LATEST]bbbb"}
    errors = [r for r in rows if r["message"].startswith("ERROR")]
    assert len(errors) == 2 and "\x1b" not in errors[0]["message"]  # made inert
    assert json.loads(errors[0]["raw"])["message"] == "ERROR token=\x1b[31mx"  # kept exact
    assert json.loads(errors[0]["raw"])["logGroupName"] == group["name"]


def test_a_filter_pattern_keeps_only_matching_events(group: dict[str, Any], tmp_path: Path) -> None:
    run = _capture(tmp_path / "case", group, "--filter", "ERROR")
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    assert item["events"] == 2
    meta = json.loads(
        (tmp_path / "case" / "evidence" / item["evidence_id"] / "meta.json").read_text()
    )
    assert meta["source"]["filter_pattern"] == "ERROR"


def test_a_stream_prefix_is_part_of_the_item(group: dict[str, Any], tmp_path: Path) -> None:
    """moto's FilterLogEvents (and CreateExportTask) ignore logStreamNamePrefix, so only
    what cloudir records of it is checked here: the item's source, a separate item."""
    run = _capture(tmp_path / "case", group, "--stream-prefix", "2024/07/31/[$LATEST]a")
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    meta = json.loads(
        (tmp_path / "case" / "evidence" / item["evidence_id"] / "meta.json").read_text()
    )
    assert meta["source"]["stream_prefix"] == "2024/07/31/[$LATEST]a"
    whole = _capture(tmp_path / "case", group)
    assert whole.json()["items"][0]["evidence_id"] != item["evidence_id"]
    alone = cloudir("capture", "logs", "--case", str(tmp_path / "c"), "--dns", "all",
                    "--stream-prefix", "x")  # fmt: skip
    assert alone.code == 2 and "--stream-prefix" in alone.stderr


def test_pages_follow_next_token_and_a_cut_short_capture_resumes(
    group: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture, "PAGE_LIMIT", 2)
    aws = Aws(AwsOptions(region="us-east-1", endpoint_url=group["url"]))
    case = Case.create(tmp_path / "case")
    window = Window.parse(_iso(START), _iso(END))
    said: list[str] = []

    def stop_after_two(pages: int, events: int) -> None:
        if pages == 2:
            raise KeyboardInterrupt  # the responder's Ctrl-C after the second page

    with pytest.raises(KeyboardInterrupt):
        capture.capture_log_group(
            case, aws, group["name"], window, {}, said.append, on_page=stop_after_two,
            spacing=lambda: lambda **_: None,
        )  # fmt: skip
    [evidence_id] = case.evidence_ids()
    assert [e["action"] for e in custody(case.root)][-1] == "capture-incomplete"

    again = capture.capture_log_group(
        case, aws, group["name"], window, {}, said.append, spacing=lambda: lambda **_: None
    )
    assert again.evidence_id == evidence_id and again.item.resumed
    assert any("resuming after page 2" in line for line in said)
    pages = sorted((case.evidence_dir(evidence_id) / "pages").glob("page-*.json"))
    events = [e for p in pages for e in json.loads(p.read_bytes())["events"]]
    assert len(pages) == 3 and len(events) == 6
    assert sorted(e["message"] for e in events) == sorted(e["message"] for e in group["inside"])
    assert [e["action"] for e in custody(case.root)][-1] == "capture-complete"

    whole = capture.capture_log_group(
        case, aws, group["name"], window, {}, said.append, spacing=lambda: lambda **_: None
    )
    assert whole.pages == 0 and "already captured whole" in said[-1]
    assert len(list((case.evidence_dir(evidence_id) / "pages").glob("*.json"))) == 3


def test_overlapping_captures_give_each_event_once(group: dict[str, Any], tmp_path: Path) -> None:
    case = tmp_path / "case"
    assert _capture(case, group).code == 0
    wider = cloudir(
        "capture", "logs", "--case", str(case), "--endpoint-url", group["url"],
        "--region", "us-east-1", "--log-group", group["name"],
        "--start", _iso(START - timedelta(hours=1)), "--end", _iso(END),
    )  # fmt: skip
    assert wider.code == 0, wider.stderr
    built = cloudir("timeline", "--case", str(case), "--json")
    assert built.code == 0, built.stderr
    assert built.json()["duplicates_dropped"] == 6
    assert built.json()["conflicting_copies"]["events"] == 0
    assert len(query(case, "SELECT event_id FROM timeline")) == 7  # and the one before


def test_a_group_that_does_not_exist_is_one_line(moto_url: str, tmp_path: Path) -> None:
    run = cloudir(
        "capture", "logs", "--case", str(tmp_path / "case"), "--endpoint-url", moto_url,
        "--region", "us-east-1", "--log-group", "/no/such/group",
    )  # fmt: skip
    assert run.code == 2
    assert run.stderr.strip().splitlines() == [
        "error: no log group named /no/such/group in this account and region"
    ]
    assert not (tmp_path / "case").exists()  # nothing made for a mistyped name
    no_group = cloudir("capture", "logs", "--case", str(tmp_path / "case2"))
    assert no_group.code == 2 and "--log-group NAME" in no_group.stderr


def test_pages_brought_in_by_capture_files_are_recognised(tmp_path: Path) -> None:
    page = tmp_path / "export" / "page-1.json"
    page.parent.mkdir()
    events = [
        {"logStreamName": "s", "timestamp": 1722420000000, "message": "hello", "eventId": "1"}
    ]
    page.write_text(json.dumps({"events": events, "searchedLogStreams": []}))
    captured = cloudir("capture", "files", "--case", str(tmp_path / "case"), str(page), "--json")
    assert captured.code == 0, captured.stderr
    assert [i["kind"] for i in captured.json()["items"]] == ["cloudwatch-logs"]
    assert cloudir("timeline", "--case", str(tmp_path / "case")).code == 0
    [row] = query(tmp_path / "case", "SELECT timestamp, message, target FROM timeline")
    assert row["message"] == "hello" and row["target"] is None
    assert row["timestamp"].startswith("2024-07-31 10:00:00")


# -- the parser as an adversary reads it ------------------------------------------------
def _parse(tmp_path: Path, document: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    path = tmp_path / "page.json"
    path.write_text(json.dumps(document))
    errors = ErrorLog("e1", "pages/page.json")
    rows = [r for b in parser.parse(path, "e1", errors, ParseOptions()) for r in b.to_pylist()]
    return rows, errors.entries


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ([1, 2], "no `events` list"),
        ({"events": "x"}, "no `events` list"),
        ({"events": [{"message": "no time"}]}, "not a time in ms"),
        ({"events": [{"timestamp": "1722420000000", "message": "text"}]}, "not a time in ms"),
        ({"events": [{"timestamp": 10**20, "message": "far"}]}, "not a time in ms"),
        ({"events": [{"timestamp": True, "message": "bool"}]}, "not a time in ms"),
        ({"events": ["a string"]}, "not a JSON object"),
    ],
)
def test_a_bad_page_or_event_is_a_logged_skip(tmp_path: Path, document: Any, why: str) -> None:
    rows, errors = _parse(tmp_path, document)
    assert rows == [] and len(errors) == 1 and why in errors[0]["reason"]


event = st.fixed_dictionaries(
    {},
    optional={
        "timestamp": st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.none()),
        "message": st.one_of(st.text(max_size=50), st.integers(), st.none()),
        "logStreamName": st.one_of(st.text(max_size=20), st.integers()),
        "eventId": st.one_of(st.text(max_size=10), st.integers()),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=st.lists(st.one_of(event, st.integers(), st.text(max_size=5)), max_size=8))
def test_every_event_is_a_row_or_one_logged_line(tmp_path: Path, events: list[Any]) -> None:
    rows, errors = _parse(tmp_path, {"events": events})
    assert len(rows) + len(errors) == len(events)
    assert all(r["artifact"] == "aws:cloudwatch-logs" and r["timestamp"] for r in rows)
