"""`capture cloudtrail --lookup` against a moto server whose LookupEvents we supply.

moto has no LookupEvents. This test starts its own `moto.server.ThreadedMotoServer` in
this process and adds a `lookup_events` handler to moto's CloudTrail response class, so
the CLI (a child process) talks real HTTP to a real moto server that answers the action
with pages we control. boto3 itself is not patched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudir.aws import Aws, AwsOptions
from cloudir.capture.cloudtrail import LOOKUP_MIN_INTERVAL, RequestSpacing
from cloudir.capture.cloudtrail import capture_lookup as lookup_capture
from cloudir.case import Case
from cloudir.timewindow import Window
from tests.conftest import cloudir, ct_event, custody, query, records_gz


def lookup_record(event: dict[str, Any]) -> dict[str, Any]:
    """One LookupEvents entry as the API sends it: CloudTrailEvent is a JSON string."""
    when = datetime.strptime(event["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return {
        "EventId": event["eventID"],
        "EventName": event["eventName"],
        "ReadOnly": "true",
        "AccessKeyId": event["userIdentity"]["accessKeyId"],
        "EventTime": when.timestamp(),
        "EventSource": event["eventSource"],
        "Username": event["userIdentity"]["userName"],
        "Resources": [],
        "CloudTrailEvent": json.dumps(event),
    }


@pytest.fixture
def lookup_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from moto.cloudtrail.responses import CloudTrailResponse
    from moto.server import ThreadedMotoServer

    events = [ct_event(f"2024-07-31T10:0{n}:00Z", name=f"Call{n}") for n in range(4)]
    pages = {
        None: {"Events": [lookup_record(e) for e in events[:2]], "NextToken": "page-2"},
        "page-2": {"Events": [lookup_record(events[2])], "NextToken": "page-3"},
        "page-3": {"Events": [lookup_record(events[3])]},
    }
    state: dict[str, Any] = {"events": events, "calls": [], "bodies": []}

    def lookup_events(self: CloudTrailResponse) -> str:
        token = self._get_param("NextToken")
        state["calls"].append((time.monotonic(), token, self._get_param("StartTime")))
        body = json.dumps(pages[token])
        state["bodies"].append(body.encode())
        return body

    monkeypatch.setattr(CloudTrailResponse, "lookup_events", lookup_events, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    state["url"] = f"http://{host}:{port}"
    yield state
    server.stop()


def capture_lookup(case: Path, url: str) -> Any:
    return cloudir(
        "capture", "cloudtrail", "--case", str(case), "--lookup", "--region", "us-east-1",
        "--endpoint-url", url, "--start", "2024-07-31T00:00:00Z",
        "--end", "2024-08-01T00:00:00Z", "--json",
    )  # fmt: skip


def test_pages_are_saved_byte_for_byte_and_paginated(
    lookup_server: dict[str, Any], tmp_path: Path
) -> None:
    case = tmp_path / "case"
    result = capture_lookup(case, lookup_server["url"])
    assert result.code == 0, result.stderr
    [item] = result.json()["items"]
    assert item["captured"] == 4
    assert item["listed"] == 3

    tokens = [token for _, token, _ in lookup_server["calls"]]
    assert tokens == [None, "page-2", "page-3"]

    pages = sorted(case.glob("evidence/cloudtrail-api-*/pages/page-*.json"))
    assert [p.read_bytes() for p in pages] == lookup_server["bodies"]
    page_entries = [e for e in custody(case) if e["action"] == "capture"]
    assert [e["source"]["events"] for e in page_entries] == [2, 1, 1]


def test_lookup_and_s3_copies_of_an_event_give_one_row(
    lookup_server: dict[str, Any], tmp_path: Path
) -> None:
    case = tmp_path / "case"
    delivered = tmp_path / "delivered.json.gz"
    delivered.write_bytes(records_gz(lookup_server["events"]))
    assert cloudir("capture", "files", "--case", str(case), str(delivered)).code == 0
    result = capture_lookup(case, lookup_server["url"])
    assert result.code == 0, result.stderr
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.code == 0, timeline.stderr
    assert timeline.json()["duplicates_dropped"] == 4
    rows = query(case, "SELECT event_id, evidence_id, action FROM timeline ORDER BY timestamp")
    assert [r["event_id"] for r in rows] == [e["eventID"] for e in lookup_server["events"]]
    assert {r["evidence_id"] for r in rows} == {"cloudtrail-delivered.json.gz"}
    assert rows[0]["action"] == "s3.amazonaws.com:Call0"


def test_request_spacing_waits_out_the_interval_and_never_before_the_first_request() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    spacing = RequestSpacing(0.6, clock=lambda: now[0], sleep=sleep)
    spacing()  # the first request goes at once
    now[0] += 0.1
    spacing()  # 0.1 s later: waits 0.5 s
    now[0] += 2.0
    spacing()  # long after: no wait
    spacing()  # straight after: the whole interval
    assert slept == [0.5, 0.6]


def test_every_lookup_request_waits_its_turn(
    lookup_server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LookupEvents allows 2 requests a second: the spacing hook is on the capture's own
    client, before every send. A frozen clock makes each wait the whole interval, so the
    waits count the requests after the first, with no time measured."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    slept: list[float] = []

    def frozen_spacing() -> RequestSpacing:
        return RequestSpacing(LOOKUP_MIN_INTERVAL, clock=lambda: 0.0, sleep=slept.append)

    aws = Aws(AwsOptions(region="us-east-1", endpoint_url=lookup_server["url"]))
    case = Case.create(tmp_path / "case")
    window = Window(datetime(2024, 7, 31, tzinfo=UTC), datetime(2024, 8, 1, tzinfo=UTC))
    [result] = lookup_capture(
        case, aws, ["us-east-1"], window, {"Account": "111122223333"}, lambda _: None,
        spacing=frozen_spacing,
    )  # fmt: skip
    assert result.captured == 4
    assert [token for _, token, _ in lookup_server["calls"]] == [None, "page-2", "page-3"]
    assert slept == [LOOKUP_MIN_INTERVAL, LOOKUP_MIN_INTERVAL]
