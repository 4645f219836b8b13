"""The alert on the timeline: `capture files` recognises alert documents (kind `alert`),
`cloudir timeline` gives one row per finding at its first seen, and documents or findings
that cannot be read are counted and logged, never dropped in silence."""

from __future__ import annotations

import json
from pathlib import Path

from cloudir.analyze.parsers import recognise_kind
from tests.conftest import cloudir, query

DATA = Path(__file__).parent / "data" / "findings"
CUSTODIAN = DATA / "cloud-custodian"
AFO = DATA / "automated-forensic-orchestrator"
DOCUMENTED = DATA / "documented"

COLUMNS = 'timestamp, artifact, host, "user", src_ip, action, target, message, evidence_id'


def test_alert_documents_are_recognised_by_content() -> None:
    assert recognise_kind([CUSTODIAN / "ec2-duty-event.json"]) == "alert"
    assert recognise_kind([DOCUMENTED / "guardduty-cli-getfindings.json"]) == "alert"
    assert recognise_kind([AFO / "CIS-bad.json"]) == "alert"  # an alert event, a bad finding
    # Not alerts: an insight result, CloudTrail records and CloudTrail's EventBridge events.
    assert recognise_kind([CUSTODIAN / "event-securityhub-insight-2.json"]) == "cloudtrail"
    corpus = Path(__file__).parent / "data" / "corpus" / "cloudtrail"
    cloudtrail_events = [
        *sorted((corpus / "stratus-red-team" / "detonation-logs").glob("*.json")),
        corpus / "cloud-custodian" / "cwe_cloudtrail_details.jsonl",
    ]
    assert len(cloudtrail_events) == 36
    assert {recognise_kind([p]) for p in cloudtrail_events} == {"cloudtrail"}


def test_one_row_per_finding_at_its_first_seen(tmp_path: Path) -> None:
    case = tmp_path / "case"
    captured = cloudir(
        "capture", "files", "--case", str(case), "--json",
        str(CUSTODIAN / "ec2-duty-event.json"), str(CUSTODIAN / "iam-duty-event.json"),
        str(AFO / "CIS_1-6-multi-select.json"), str(DOCUMENTED / "securityhub-from-guardduty.json"),
    )  # fmt: skip
    assert captured.code == 0, captured.stderr
    assert {i["kind"] for i in captured.json()["items"]} == {"alert"}
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.code == 0, timeline.stderr
    assert timeline.json()["rows"] == 6 and timeline.json()["errors"] == 0
    rows = query(case, f"SELECT {COLUMNS} FROM timeline ORDER BY timestamp, evidence_id")
    ec2, iam = rows[0], rows[1]
    assert ec2 == {
        "timestamp": "2017-12-08 15:32:49+00:00",
        "artifact": "aws:guardduty",
        "host": "i-99999999",
        "user": None,
        "src_ip": None,
        "action": "Backdoor:EC2/C&CActivity.B!DNS",
        "target": "i-99999999",
        "message": "GuardDuty medium: Command and Control server domain name queried by EC2 "
        "instance i-99999999. (sample finding)",
        "evidence_id": "alert-ec2-duty-event.json",
    }
    assert (iam["user"], iam["src_ip"], iam["target"]) == (
        "arn:aws:iam::883606788610:user/GeneratedFindingUserName", "198.51.100.0",
        "GeneratedFindingAccessKeyId",
    )  # fmt: skip
    hub = [r for r in rows if r["evidence_id"] == "alert-CIS_1-6-multi-select.json"]
    assert [r["timestamp"] for r in hub] == [
        "2020-05-08 03:39:36.463000+00:00", "2020-06-02 03:04:33.561000+00:00",
    ]  # fmt: skip
    assert {r["artifact"] for r in hub} == {"aws:securityhub"}
    forwarded = [r for r in rows if r["evidence_id"] == "alert-securityhub-from-guardduty.json"]
    assert [(r["user"], r["src_ip"]) for r in forwarded] == [
        ("arn:aws:sts::123456789012:assumed-role/ec2-app-role/i-0abcdef1234567890", "198.51.100.7"),
        (None, "198.51.100.99"),
    ]
    raw = query(case, "SELECT raw FROM timeline WHERE evidence_id = 'alert-ec2-duty-event.json'")
    document = json.loads((CUSTODIAN / "ec2-duty-event.json").read_text())
    assert json.loads(raw[0]["raw"]) == document["detail"]  # the finding as it came


def test_broken_documents_and_findings_are_logged_and_counted(tmp_path: Path) -> None:
    case = tmp_path / "case"
    mixed = tmp_path / "mixed.json"
    event = json.loads((AFO / "CIS_1-6-multi-select.json").read_text())
    del event["detail"]["findings"][1]["GeneratorId"]
    mixed.write_text(json.dumps(event))
    hostile = tmp_path / "hostile"
    hostile.write_bytes(b'{"id": "x\\u001b[2J", "type": "T", "severity": 1, "resource": {}}')
    huge = tmp_path / "huge.json"
    huge.write_bytes(b'{"findings": ["' + b"a" * (10 << 20) + b'"]}')
    captured = cloudir(
        "capture", "files", "--case", str(case), "--kind", "alert", str(mixed),
        str(CUSTODIAN / "event-securityhub-insight-2.json"), str(hostile), str(huge),
    )  # fmt: skip
    assert captured.code == 0, captured.stderr
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.json()["rows"] == 1
    assert timeline.json()["errors"] == 4
    errors = [
        json.loads(line) for line in (case / "timeline" / "errors.jsonl").read_text().splitlines()
    ]
    reasons = {e["evidence_id"]: e["reason"] for e in errors}
    assert reasons["alert-mixed.json"] == (
        "finding not read: $.detail.findings[1].GeneratorId: missing (Security Hub requires it)"
    )
    assert reasons["alert-event-securityhub-insight-2.json"].startswith(
        "event-securityhub-insight-2.json: not an alert document: $.detail-type: "
        "'Security Hub Insight Results' carries an insight's result counts, not a finding"
    )
    assert reasons["alert-hostile"] == (
        "finding not read: $.id: holds control characters; not an AWS name or id"
    )
    assert reasons["alert-huge.json"] == (
        f"huge.json: {huge.stat().st_size} bytes, more than an alert document's 10485760"
    )
    assert [e.get("record") for e in errors if e["evidence_id"] == "alert-mixed.json"] == [2]
