"""End to end through the CLI: S3 access and ALB logs captured, read and detected on.

`capture files` recognises both kinds by AWS's delivery names, `timeline` reads them (a
bad line is one counted error), and `detect` names the rule and the very rows of the
attack: the bulk download, the anonymous read, the refused burst, the scanner's SQL
injection and path traversal. The Sigma reference evaluator agrees with the engine on
every rule over the same timeline.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.access_log_lines import alb_line, s3_line, write_log
from tests.conftest import cloudir, query
from tests.test_detect_reference import assert_agreement

START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
THIEF = "arn:aws:iam::111122223333:user/leaked-ci"
THIEF_IP = "203.0.113.50"
GUESSER_IP = "198.51.100.66"
SCANNER_IP = "192.0.2.200"

BULK = "08b11cf4-0705-4c46-bbbb-1aa39a6e5121"
ANONYMOUS = "feb4b8d4-f8d1-4bae-9581-8ab8dc095f4d"
DENIED_BURST = "d075c7b0-5f26-4854-83e4-8bd601ba5764"
WEB_ATTACK = "ffb17dbc-3db0-482b-807d-41d2400e6bf9"
SCANNER = "7ef3f7cc-89dd-4825-b86a-92dc728b842b"


def at(seconds: int) -> datetime:
    return START + timedelta(seconds=seconds)


def s3_lines() -> list[str]:
    lines = [s3_line(time=at(0), key="index.html")]  # an ordinary read by the app's user
    lines += [
        s3_line(time=at(60 + 5 * n), requester=THIEF, remote_ip=THIEF_IP, key=f"db/t{n:03d}.csv")
        for n in range(30)
    ]
    lines.append(s3_line(time=at(400), requester="-", remote_ip="198.51.100.7", key="pub/a.pdf"))
    lines += [
        s3_line(
            time=at(600 + 10 * n),
            requester="-",
            remote_ip=GUESSER_IP,
            key=f"k{n}",
            http_status="403",
            error_code="AccessDenied",
        )
        for n in range(22)
    ]
    lines.append('79a5 bucket [05/Jan/2026:10:20:00 +0000] "broken')  # one bad line
    return lines


def alb_lines() -> list[str]:
    sqlmap = "sqlmap/1.8.2#stable (https://sqlmap.org)"
    return [
        alb_line(time=at(30)),
        alb_line(
            time=at(900),
            **{"client:port": f"{SCANNER_IP}:5000"},
            user_agent=sqlmap,
            request="GET https://shop.example.com:443/item?id=1%20UNION%20SELECT%201,2 HTTP/1.1",
        ),
        alb_line(
            time=at(905),
            **{"client:port": f"{SCANNER_IP}:5001"},
            elb_status_code="404",
            request="GET https://shop.example.com:443/../../etc/passwd HTTP/1.1",
        ),
    ]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("access-e2e")
    s3_file = write_log(folder / "2026-01-05-10-15-42-1A2B3C4D5E6F7A8B", s3_lines())
    alb_file = write_log(
        folder / "111122223333_elasticloadbalancing_us-east-1_app.web.50dc6c495c0c9188_"
        "20260105T1015Z_192.0.2.10_2kd8fz9x.log.gz",
        alb_lines(),
        gz=True,
    )
    case = folder / "case"
    captured = cloudir(
        "capture", "files", "--case", str(case), str(s3_file), str(alb_file), "--json"
    )
    assert captured.code == 0, captured.stderr
    assert sorted(item["kind"] for item in captured.json()["items"]) == ["alb-access", "s3-access"]
    built = cloudir("timeline", "--case", str(case), "--json")
    assert built.code == 0, built.stderr
    summary = built.json()
    assert (summary["rows"], summary["errors"]) == (len(s3_lines()) - 1 + len(alb_lines()), 1)
    return case


def ids(case: Path, where: str) -> set[str]:
    return {r["event_id"] for r in query(case, f"SELECT event_id FROM timeline WHERE {where}")}


def test_detect_names_each_attack_and_its_rows(case: Path) -> None:
    result = cloudir("detect", "--case", str(case), "--json", "--fail-on", "critical")
    assert result.code == 0, result.stderr
    found: dict[str, set[str]] = {}
    for finding in result.json()["findings"]:
        found.setdefault(finding["rule_id"], set()).update(finding["event_ids"])
    assert found[BULK] == ids(case, f"src_ip = '{THIEF_IP}'")
    assert found[ANONYMOUS] == ids(case, "user = '-' AND outcome = 'success'")
    assert found[DENIED_BURST] == ids(case, f"src_ip = '{GUESSER_IP}'")
    assert found[WEB_ATTACK] == ids(case, f"src_ip = '{SCANNER_IP}'")
    assert found[SCANNER] == ids(case, f"src_ip = '{SCANNER_IP}' AND action = 'GET'") - ids(
        case, "outcome = '404'"
    )
    assert len(found[BULK]) == 30 and len(found[DENIED_BURST]) == 22
    levels = {f["rule_id"]: (f["outcome"], f["level"]) for f in result.json()["findings"]}
    assert levels[DENIED_BURST] == ("attempted", "medium")  # refusals are the point: kept
    assert levels[BULK] == ("succeeded", "medium")
    assert not set().union(*found.values()) & ids(case, "target LIKE '%index.html'")


def test_the_reference_evaluator_agrees_on_every_rule(case: Path) -> None:
    reference = assert_agreement(case)
    assert {BULK, ANONYMOUS, DENIED_BURST, WEB_ATTACK, SCANNER} <= {
        rule_id for rule_id, finding in reference.items() if finding.event_ids
    }


def test_query_reads_the_access_rows(case: Path) -> None:
    rows = query(
        case,
        "SELECT artifact, action, target, outcome FROM timeline "
        "WHERE src_ip = '192.0.2.200' ORDER BY timestamp",
    )
    assert rows == [
        {
            "artifact": "aws:alb_access", "action": "GET", "outcome": "success",
            "target": "https://shop.example.com:443/item?id=1%20UNION%20SELECT%201,2",
        },
        {
            "artifact": "aws:alb_access", "action": "GET", "outcome": "404",
            "target": "https://shop.example.com:443/../../etc/passwd",
        },
    ]  # fmt: skip


# Rules in the shape of SigmaHQ's web rules (rules/web/...: `category: webserver` or
# `proxy`, W3C field names, no product), written here: they run on ALB rows unmodified.
WEB_RULES = """\
title: Passwd File Requested Without a 404
id: 5b4a3f1e-0c7d-4e52-9a61-2f0d8c3b7e11
status: test
logsource:
    category: webserver
detection:
    selection:
        cs-method: GET
        cs-uri-query|contains: '/etc/passwd'
    filter_main_not_found:
        sc-status: 404
    condition: selection and not 1 of filter_main_*
level: high
---
title: SQLMap Through a Proxy
id: 0f3e2d1c-4b5a-4c69-8d7e-6f5a4b3c2d1e
status: test
logsource:
    category: proxy
detection:
    selection:
        c-useragent|startswith: 'sqlmap/'
        cs-host: 'shop.example.com'
        c-uri-query|contains: 'union%20select'
    condition: selection
level: high
"""


def test_sigma_web_rules_run_unmodified_on_alb_rows(case: Path, tmp_path: Path) -> None:
    rules = tmp_path / "web.yml"
    rules.write_text(WEB_RULES)
    result = cloudir("detect", "--case", str(case), "--rules", str(rules), "--no-builtin", "--json")
    assert result.code == 1, result.stderr  # findings at high
    found = {f["title"]: set(f["event_ids"]) for f in result.json()["findings"]}
    sqlmap = ids(case, "message LIKE '%sqlmap%'")
    assert found == {"SQLMap Through a Proxy": sqlmap}  # the passwd request got a 404
    assert len(sqlmap) == 1
