"""The command line as a responder meets it: help, exit codes, hostile text, the demo."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cloudir, ct_event, query, records_gz

COMMANDS = [
    ["capture", "cloudtrail"],
    ["capture", "files"],
    ["capture", "container"],
    ["respond", "isolate"],
    ["respond", "disable-key"],
    ["respond", "restore"],
    ["timeline"],
    ["timeline", "export"],
    ["query"],
    ["verify"],
    ["demo"],
    ["detect"],
    ["rules", "list"],
    ["rules", "validate"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = cloudir(*command, "--help")
    assert result.code == 0, result.stderr
    assert "Example: cloudir " + command[0] in " ".join(result.stdout.split())


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from cloudir.cli import app; "
        "heavy = [m for m in ('boto3', 'duckdb', 'pyarrow', 'moto') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version_flag() -> None:
    from cloudir import __version__

    result = cloudir("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"cloudir {__version__}"


def test_bad_time_is_a_usage_error(tmp_path: Path) -> None:
    result = cloudir(
        "capture", "cloudtrail", "--case", str(tmp_path / "c"), "--bucket", "b", "--start", "soon"
    )
    assert result.code == 2
    assert "cannot read time 'soon'" in result.stderr


def test_query_without_timeline_says_what_to_run(tmp_path: Path) -> None:
    source = tmp_path / "x.json"
    source.write_text(json.dumps([ct_event("2024-07-31T10:00:00Z")]))
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(source)).code == 0
    result = cloudir("query", "--case", str(case), "SELECT 1")
    assert result.code == 3
    assert "run `cloudir timeline" in result.stderr


def test_bad_sql_is_a_usage_error_in_one_line(tmp_path: Path) -> None:
    case = _case_with(tmp_path, [ct_event("2024-07-31T10:00:00Z")])
    result = cloudir("query", "--case", str(case), "SELEC nonsense")
    assert result.code == 2
    assert result.stderr.startswith("error: query failed:")
    assert len(result.stderr.strip().splitlines()) == 1


def _case_with(tmp_path: Path, events: list[dict], name: str = "logs.json.gz") -> Path:
    source = tmp_path / name
    source.write_bytes(records_gz(events))
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(source)).code == 0
    result = cloudir("timeline", "--case", str(case))
    assert result.code == 0, result.stderr
    return case


def test_attacker_text_reaches_the_terminal_inert(tmp_path: Path) -> None:
    hostile = "\x1b[2J\x1b]0;pwned\x07[bold red]<script>alert(1)</script>"
    case = _case_with(tmp_path, [ct_event("2024-07-31T10:00:00Z", userAgent=hostile)])
    result = cloudir("query", "--case", str(case), "SELECT raw->>'userAgent' AS ua FROM timeline")
    assert result.code == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "\\x1b[2J" in result.stdout
    assert "[bold red]" in result.stdout
    [row] = query(case, "SELECT raw->>'userAgent' AS ua FROM timeline")
    assert row["ua"] == hostile, "the timeline keeps the evidence exactly"


def test_truncated_gzip_is_counted_and_the_rest_still_parses(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    good = records_gz([ct_event("2024-07-31T10:00:00Z"), ct_event("2024-07-31T10:01:00Z")])
    (logs / "good.json.gz").write_bytes(good)
    whole = records_gz([ct_event(f"2024-07-31T11:{n:02d}:00Z") for n in range(50)])
    (logs / "cut.json.gz").write_bytes(whole[: len(whole) // 2])
    (logs / "lines.jsonl").write_text(
        json.dumps(ct_event("2024-07-31T12:00:00Z"))
        + "\n{not json\n"
        + json.dumps(ct_event("2024-07-31T12:01:00Z"))
        + "\n"
    )
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(logs)).code == 0
    result = cloudir("timeline", "--case", str(case), "--json")
    assert result.code == 0, result.stderr
    assert result.json()["rows"] == 4
    errors = [json.loads(x) for x in (case / "timeline/errors.jsonl").read_text().splitlines()]
    reasons = {Path(e["path"]).name: e for e in errors}
    assert reasons["cut.json.gz"]["reason"].startswith("truncated or corrupt gzip")
    assert reasons["lines.jsonl"]["line"] == 2
    assert "2 evidence problems skipped" in result.stderr


def test_gzip_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    case = _case_with(tmp_path, [ct_event("2024-07-31T10:00:00Z")], name="renamed.json")
    assert gzip.decompress((tmp_path / "renamed.json").read_bytes())
    assert query(case, "SELECT count(*) AS n FROM timeline") == [{"n": 1}]


def test_demo_runs_the_whole_job_offline(tmp_path: Path) -> None:
    case = tmp_path / "demo"
    result = cloudir("demo", "--case", str(case))
    assert result.code == 0, result.stderr
    assert f"cloudir verify --case {case}" in result.stdout
    assert cloudir("verify", "--case", str(case)).code == 0
    rows = query(
        case,
        "SELECT action, target FROM timeline WHERE src_ip = '203.0.113.77' "
        "AND artifact = 'aws:cloudtrail' ORDER BY timestamp",
    )
    actions = [r["action"].split(":")[1] for r in rows]
    assert len(actions) == 24 + 7  # the enumeration burst, then the intrusion
    assert actions[24:] == [
        "GetCallerIdentity",
        "ListBuckets",
        "GetObject",
        "CreateUser",
        "CreateAccessKey",
        "AttachUserPolicy",
        "StopLogging",
    ]
    # the demo goes on to run detect and shows what it found
    findings = json.loads((case / "findings/findings.json").read_text())["findings"]
    titles = {f["title"] for f in findings}
    expected = {"CloudTrail Logging Stopped", "New IAM User Given an Access Key by Its Creator"}
    assert expected <= titles
    for title in titles:
        assert title in result.stdout
    network = {
        "SSH or RDP Accepted From the Internet (VPC Flow Logs)",
        "Connection to a Cryptocurrency Mining Pool Port (VPC Flow Logs)",
        "DNS Query for a Cryptocurrency Mining Pool",
    }
    assert network <= titles  # the runner's network: the way in, the pool's name and address
    [mining] = [f for f in findings if f["title"].startswith("Connection to a Cryptocurrency")]
    runner_address = mining["entities"]["source_ips"]
    assert {ip for f in findings for ip in f["entities"]["source_ips"]} == {
        "203.0.113.77",
        *runner_address,
    }
    # and ends with the report
    assert result.stdout.rstrip().splitlines()[-1].startswith(f"Report: {case}/report/report.html")
    report = json.loads((case / "report/report.json").read_text())
    assert [f["title"] for f in report["findings"]] == [f["title"] for f in findings]
    # the triage step: GuardDuty's finding for the StopLogging, kept as evidence and judged
    validation = json.loads((case / "triage/validation.json").read_text())
    assert validation["alert"]["type"] == "Stealth:IAMUser/CloudTrailLoggingDisabled"
    assert validation["verdict"] == "confirmed"
    assert report["alert_validation"]["verdict"] == "confirmed"
    assert "triage: GuardDuty's Stealth:IAMUser/CloudTrailLoggingDisabled is confirmed" in (
        result.stderr
    )
    assert rows[24 + 3]["target"] == "svc-backup"
    _assert_the_container_was_captured_or_said_absent(case, result.stdout + result.stderr)
    _assert_the_runner_disk_was_captured(case)
    _assert_the_isolation_plan_was_shown_only(case, result.stderr)
    again = cloudir("demo", "--case", str(case))
    assert again.code == 2
    assert "already exists" in again.stderr
    assert cloudir("demo", "--case", str(case), "--force").code == 0
    real = tmp_path / "real"
    assert cloudir("capture", "files", "--case", str(real), str(case / "case.json")).code == 0
    refused = cloudir("demo", "--case", str(real), "--force")
    assert refused.code == 2
    assert (real / "custody.jsonl").exists()


def test_records_of_odd_shapes_parse_or_are_reported(tmp_path: Path) -> None:
    odd = ct_event("2024-07-31T10:00:00Z", userIdentity="not-an-object", requestParameters="x")
    lookup_bad = {"EventId": "1", "CloudTrailEvent": "{not json"}
    eventbridge = {"detail-type": "AWS API Call via CloudTrail", "source": "aws.iam",
                   "detail": ct_event("2024-07-31T10:02:00Z", name="CreateUser",
                                      requestParameters={"userName": "eve"})}  # fmt: skip
    events = [odd, 42, lookup_bad, eventbridge]
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "odd.json").write_text(json.dumps({"Records": events}))
    (logs / "notlist.json").write_text(json.dumps({"Records": {"a": 1}}))
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(logs)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    rows = query(case, "SELECT user, target, action FROM timeline ORDER BY timestamp")
    assert rows == [
        {"user": None, "target": None, "action": "s3.amazonaws.com:ListBuckets"},
        {
            "user": "arn:aws:iam::111111111111:user/alice",
            "target": "eve",
            "action": "s3.amazonaws.com:CreateUser",
        },
    ]
    errors = [json.loads(x) for x in (case / "timeline/errors.jsonl").read_text().splitlines()]
    reasons = sorted((Path(e["path"]).name, e.get("record"), e["reason"]) for e in errors)
    assert reasons[0][0] == "notlist.json"
    assert reasons[0][2].startswith("unexpected JSON shape")
    assert reasons[1] == ("odd.json", 2, "record is not a JSON object")
    assert reasons[2][:2] == ("odd.json", 3)
    assert reasons[2][2].startswith("invalid JSON")


def test_times_are_utc_whatever_the_laptop_zone(tmp_path: Path) -> None:
    case = _case_with(tmp_path, [ct_event("2024-07-31T13:06:24Z")])
    ny = {"TZ": "America/New_York"}
    out = tmp_path / "ts.jsonl"
    assert cloudir("timeline", "export", "--case", str(case), "--out", str(out), env=ny).code == 0
    assert json.loads(out.read_text())["datetime"] == "2024-07-31T13:06:24.000000+00:00"
    result = cloudir(
        "query", "--case", str(case), "SELECT strftime(timestamp, '%H:%M') AS t FROM timeline",
        "--json", env=ny,
    )  # fmt: skip
    assert result.json() == [{"t": "13:06"}]


def test_names_that_clean_alike_stay_separate_evidence(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a b.json").write_text(json.dumps([ct_event("2024-07-31T10:00:00Z")]))
    (logs / "a_b.json").write_text(json.dumps([ct_event("2024-07-31T11:00:00Z")]))
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(logs)).code == 0
    stored = sorted(p.name for p in case.glob("evidence/*/files/*"))
    assert len(stored) == 2
    assert "a_b.json" in stored
    assert cloudir("verify", "--case", str(case)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    assert query(case, "SELECT count(*) AS n FROM timeline") == [{"n": 2}]


def test_invalid_utf8_in_a_record_is_kept_visible_and_logged(tmp_path: Path) -> None:
    good = json.dumps(ct_event("2024-07-31T10:00:00Z")).encode()
    bad = json.dumps(ct_event("2024-07-31T10:01:00Z", userAgent="UA-MARK")).encode()
    bad = bad.replace(b"UA-MARK", b"ua-\xff-end")
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(good + b"\n" + bad + b"\n")
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(source)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    rows = query(case, "SELECT raw->>'userAgent' AS ua FROM timeline ORDER BY timestamp")
    assert rows == [{"ua": "aws-cli/2"}, {"ua": "ua-\\xff-end"}]
    errors = (case / "timeline/errors.jsonl").read_text()
    assert "not valid UTF-8" in errors


def test_a_planted_file_is_not_parsed(tmp_path: Path) -> None:
    case = _case_with(tmp_path, [ct_event("2024-07-31T10:00:00Z")])
    planted = next(case.glob("evidence/*/files")) / "planted.json"
    planted.write_text(json.dumps([ct_event("2024-07-31T12:00:00Z")]))
    result = cloudir("timeline", "--case", str(case), "--json")
    assert result.code == 0
    assert result.json()["rows"] == 1
    assert "not in custody.jsonl" in (case / "timeline/errors.jsonl").read_text()


def test_json_lines_with_a_broken_first_line_keep_the_rest(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    lines = ["{broken", *(json.dumps(ct_event(f"2024-07-31T10:0{n}:00Z")) for n in range(3))]
    source.write_text("\n".join(lines) + "\n")
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(source)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    assert query(case, "SELECT count(*) AS n FROM timeline") == [{"n": 3}]
    [error] = [json.loads(x) for x in (case / "timeline/errors.jsonl").read_text().splitlines()]
    assert error["line"] == 1


def test_copies_of_an_event_that_disagree_are_reported(tmp_path: Path) -> None:
    genuine = ct_event("2024-07-31T10:00:00Z", name="StopLogging")
    planted = dict(genuine, eventName="ListBuckets")
    (tmp_path / "a.json").write_text(json.dumps([genuine]))
    (tmp_path / "b.json").write_text(json.dumps([planted, genuine]))
    case = tmp_path / "case"
    for name in ("a.json", "b.json"):
        assert cloudir("capture", "files", "--case", str(case), str(tmp_path / name)).code == 0
    result = cloudir("timeline", "--case", str(case), "--json")
    assert result.json()["duplicates_dropped"] == 1  # the second genuine copy only
    rows = query(case, "SELECT action FROM timeline ORDER BY action")
    assert [r["action"] for r in rows] == [
        "s3.amazonaws.com:ListBuckets",  # the planted copy is kept beside the genuine one
        "s3.amazonaws.com:StopLogging",
    ]
    errors = (case / "timeline/errors.jsonl").read_text()
    assert f"event_id {genuine['eventID']} has 2 different versions" in errors


def _assert_the_runner_disk_was_captured(case: Path) -> None:
    """The demo's CI runner went through `capture ebs --instance-id --download`: metadata,
    a snapshot tagged to the case, and an ext4 image of the 1 GiB volume in custody."""
    import hashlib
    import shutil

    if not shutil.which("mkfs.ext4", path="/usr/sbin:/sbin:/usr/bin:/bin"):
        pytest.skip("mkfs.ext4 not installed: the demo has no instance disk")
    entries = [json.loads(line) for line in (case / "custody.jsonl").read_text().splitlines()]
    [snapshot] = [e for e in entries if e["action"] == "snapshot"]
    assert snapshot["source"]["tags"]["cloudir:case"] == case.name
    [image_entry] = [e for e in entries if e["action"] == "capture-ebs-image"]
    [image] = image_entry["files"]
    assert image_entry["source"]["snapshot_id"] == snapshot["source"]["snapshot_id"]
    assert image_entry["source"]["block_size"] == 512 * 1024
    raw = case / image["path"]
    assert raw.stat().st_size == image["bytes"] == 1 << 30
    digest = hashlib.sha256()
    with open(raw, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    assert digest.hexdigest() == image["sha256"]
    with open(raw, "rb") as fh:
        head = fh.read(48 << 20)
    assert head[1080:1082] == b"\x53\xef"  # the ext4 superblock's magic
    assert b"attacker@kali" in head and b"Accepted password for deploy" in head
    # the timeline read the downloaded disk: the guessing, the login, the commands
    host = query(
        case,
        "SELECT artifact, outcome, count(*) AS n FROM timeline WHERE source = 'host' "
        "AND src_ip = '203.0.113.77' GROUP BY ALL ORDER BY ALL",
    )
    assert {(r["artifact"], r["outcome"]): r["n"] for r in host} == {
        ("linux:auth", "failure"): 12,
        ("linux:auth", "success"): 2,
    }
    history = query(
        case,
        "SELECT json_extract_string(raw, '$.CommandLine') AS c FROM timeline "
        "WHERE artifact = 'linux:bash_history' ORDER BY timestamp",
    )
    assert [r["c"] for r in history][1] == "cat ~/.aws/credentials"
    assert len(history) == 8
    findings = json.loads((case / "findings/findings.json").read_text())["findings"]
    titles = {f["title"] for f in findings}
    assert {
        "SSH Brute Force Followed by Successful Login",
        "Shell History Cleared or Disabled",
        "SSH authorized_keys Written From the Command Line",
        "Cron Runs a Command From a Temporary Directory",
    } <= titles
    instance_item = next((case / "evidence").glob("ec2-i-*"))
    described = json.loads((instance_item / "describe-instances.json").read_text())
    [instance] = described["Reservations"][0]["Instances"]
    assert instance["IamInstanceProfile"]["Arn"].endswith("/ci-runner")


def _assert_the_container_was_captured_or_said_absent(case: Path, output: str) -> None:
    """Issue 7: with a reachable Docker engine the demo runs a compromised container and
    captures it through `capture container --pause`'s code, and the container rules fire
    on it; without one it says so in one line and the rest of the demo is unchanged."""
    import hashlib

    import docker

    from tests.conftest import custody

    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception:  # the demo's own test: anything that stops a ping means "none"
        client = None
    items = sorted((case / "evidence").glob("container-*"))
    if client is None:
        said = [line for line in output.splitlines() if "no Docker engine reachable" in line]
        assert len(said) == 1, output
        assert said[0].endswith("the demo goes on without a container")
        assert items == []
        return
    [item] = items
    entries = [e for e in custody(case) if e["evidence_id"] == item.name]
    stored = {Path(f["path"]).name: f for e in entries for f in e["files"]}
    assert {"inspect.json", "diff.json", "logs.txt", "top.json", "fs.tar"} <= set(stored)
    tar = case / stored["fs.tar"]["path"]
    assert hashlib.sha256(tar.read_bytes()).hexdigest() == stored["fs.tar"]["sha256"]
    actions = [e["action"] for e in entries]
    assert actions[-1] == "capture-complete"
    assert "container-paused" in actions and "container-unpaused" in actions
    assert f"{item.name}: " in output
    findings = json.loads((case / "findings/findings.json").read_text())["findings"]
    assert {
        "Executable Added to a Container's Temporary Directory",
        "Accounts, Sudoers or SSH Keys Changed Inside a Container",
    } <= {f["title"] for f in findings}
    # and nothing is left running on the engine
    name = json.loads((case / stored["inspect.json"]["path"]).read_text())["Name"].lstrip("/")
    assert client.containers.list(all=True, filters={"name": f"^/{name}$"}) == []
    client.close()


def _assert_the_isolation_plan_was_shown_only(case: Path, stderr: str) -> None:
    """The demo shows how it would contain the runner, and contains nothing."""
    assert "containment, plan only (nothing changed" in stderr
    assert "create security group cloudir-quarantine-demo" in stderr
    assert "→ the quarantine group only" in stderr
    assert "termination protection of i-" in stderr
    assert "connections already established may survive" in stderr
    assert "detach instance profile arn:aws:iam::" in stderr
    assert "instance metadata service of i-" in stderr
    entries = [json.loads(line) for line in (case / "custody.jsonl").read_text().splitlines()]
    assert not [e for e in entries if e["action"].startswith("respond-")]
