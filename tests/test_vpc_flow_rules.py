"""VPC flow logs end to end through the CLI: capture files (kind recognised) -> timeline ->
detect, with the shipped network rules finding what they should and nothing else; Sigma
network connection rules (`category: network_connection`, Sysmon field names) run on the
rows unmodified; the engine and the reference evaluator agree on every row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cloudir, query
from tests.test_detect_reference import assert_agreement
from tests.vpc_flow_lines import START, V5_FIELDS, delivery_name, flow_record, write_flow_log

DATA = Path(__file__).parent / "data" / "vpc-flow"
INBOUND_SSH = "f1ab79e9-535f-4201-9fc7-ff9a4e9fa2de"
MINING_POOL = "74ff08b8-3d77-4099-b07e-3ef0788f69bc"
PORT_SCAN = "317c2138-0a2e-4c47-8da0-7e2b38d8d65f"
FLOW_RULES = {INBOUND_SSH, MINING_POOL, PORT_SCAN}
SCAN_PORTS = [21, 22, 23, 25, 53, 80, 110, 135, 139, 143, 443, 445, 993, 995, 1433, 1521,
              3306, 3389, 5432, 5900, 6379, 8080, 8443, 9200, 27017]  # fmt: skip
SYSMON_STYLE_RULE = """\
title: Outbound Connection to TCP 3333 (a network_connection rule as SigmaHQ writes them)
id: 0e6c3a55-36a8-4b0e-9b8f-3c1f8f1d2a10
status: test
logsource:
    category: network_connection
detection:
    selection:
        DestinationPort: 3333
        Protocol: tcp
    filter_local:
        DestinationIp|cidr: 10.0.0.0/8
    condition: selection and not filter_local
level: medium
"""


def records() -> list[str]:
    """One delivery file's records: the three attacks and their near misses."""
    rec = lambda **kw: flow_record(V5_FIELDS, **kw)  # noqa: E731
    lines = [
        # inbound SSH accepted from the internet (finding) and from inside (none)
        rec(srcaddr="203.0.113.50", srcport=50022, dstaddr="10.0.1.15", dstport=22,
            flow_direction="ingress", start=START, end=START + 60),
        rec(srcaddr="10.0.0.5", srcport=50023, dstaddr="10.0.1.15", dstport=22,
            flow_direction="ingress", start=START, end=START + 60),
        # the instance calling a mining pool (finding) and a web site (none)
        rec(dstaddr="198.51.100.9", dstport=3333, start=START + 120, end=START + 180),
        rec(dstaddr="198.51.100.10", dstport=443, start=START + 120, end=START + 180),
        # five gigabytes out to one address: no rule (no value sums), the query finds it
        rec(dstaddr="198.51.100.99", dstport=443, bytes=5_000_000_000, start=START + 130,
            end=START + 190),
        # a NODATA interval: a row, no connection
        rec(srcaddr=None, dstaddr=None, srcport=None, dstport=None, protocol=None,
            packets=None, bytes=None, action=None, log_status="NODATA",
            pkt_srcaddr=None, pkt_dstaddr=None, start=START + 200, end=START + 260),
        # five rejected ports from another source: no scan
        *(rec(srcaddr="198.51.100.200", srcport=61000, dstaddr="10.0.1.15", dstport=port,
              action="REJECT", flow_direction="ingress", start=START + 300 + i,
              end=START + 360) for i, port in enumerate(SCAN_PORTS[:5])),
    ]  # fmt: skip
    # an internal host sweeping 25 ports of a neighbour in two minutes (finding)
    lines += [
        rec(srcaddr="10.0.3.7", srcport=41000 + i, dstaddr="10.0.1.15", dstport=port,
            action="REJECT", flow_direction="ingress", start=START + 400 + 5 * i,
            end=START + 460 + 5 * i)
        for i, port in enumerate(SCAN_PORTS)
    ]  # fmt: skip
    return lines


@pytest.fixture(scope="module")
def flow_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vpc-flow-e2e")
    folder = root / "AWSLogs" / "111122223333" / "vpcflowlogs" / "us-east-1" / "2026" / "01" / "01"
    folder.mkdir(parents=True)
    lines = [*records(), "2 this line is broken"]
    write_flow_log(folder / delivery_name(), lines, V5_FIELDS, gz=True)
    rules = root / "rules"
    rules.mkdir()
    (rules / "sysmon_style.yml").write_text(SYSMON_STYLE_RULE)
    case = root / "case"
    captured = cloudir("capture", "files", "--case", str(case), str(root / "AWSLogs"),
                       str(DATA / "aws-doc-default.log"), "--json")  # fmt: skip
    assert captured.code == 0, captured.stderr
    assert [item["kind"] for item in captured.json()["items"]] == ["vpc-flow", "vpc-flow"]
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.code == 0, timeline.stderr
    summary = timeline.json()
    assert (summary["rows"], summary["errors"]) == (len(records()) + 4, 1)
    detected = cloudir("detect", "--case", str(case), "--rules", str(rules), "--json",
                       "--fail-on", "critical")  # fmt: skip
    assert detected.code == 0, detected.stderr
    return case


def findings(case: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads((case / "findings" / "findings.json").read_text())
    return {f["rule_id"]: f for f in doc["findings"]}


def ids(case: Path, where: str) -> set[str]:
    rows = query(case, f"SELECT event_id FROM timeline WHERE {where}")
    return {row["event_id"] for row in rows}


def test_the_flow_rules_find_the_three_attacks_and_nothing_else(flow_case: Path) -> None:
    found = findings(flow_case)
    assert set(found) >= FLOW_RULES
    ssh = found[INBOUND_SSH]
    assert set(ssh["event_ids"]) == ids(flow_case, "src_ip = '203.0.113.50'")
    assert ssh["outcome"] == "succeeded"
    assert set(found[MINING_POOL]["event_ids"]) == ids(
        flow_case, "target = '198.51.100.9:3333/tcp'"
    )
    scan = found[PORT_SCAN]
    assert set(scan["event_ids"]) == ids(flow_case, "src_ip = '10.0.3.7'")
    assert len(scan["event_ids"]) == len(SCAN_PORTS)
    assert scan["outcome"] == "attempted"  # every scanned port was rejected
    assert scan["level"] == scan["rule_level"] == "low"  # and that is what it looks for


def test_the_rows_carry_the_flow(flow_case: Path) -> None:
    [row] = query(
        flow_case,
        "SELECT host, action, outcome, message, raw FROM timeline WHERE src_ip = '203.0.113.50'",
    )
    assert (row["host"], row["action"], row["outcome"]) == ("i-0a1b2c3d4e5f60718", "ACCEPT",
                                                           "success")  # fmt: skip
    assert row["message"].startswith("ACCEPT tcp 203.0.113.50:50022 -> 10.0.1.15:22 ")
    raw = json.loads(row["raw"])
    assert (raw["flow-direction"], raw["DestinationPort"], raw["SourceIp"]) == (
        "ingress", 22, "203.0.113.50",
    )  # fmt: skip
    statuses = query(
        flow_case,
        "SELECT action, count(*) AS n FROM timeline WHERE src_ip IS NULL GROUP BY action "
        "ORDER BY action",
    )
    assert statuses == [{"action": "NODATA", "n": 2}, {"action": "SKIPDATA", "n": 1}]


def test_the_bad_line_is_one_error_entry(flow_case: Path) -> None:
    errors = [json.loads(line) for line in
              (flow_case / "timeline" / "errors.jsonl").read_text().splitlines()]  # fmt: skip
    assert len(errors) == 1
    assert errors[0]["reason"] == "bad flow record: 5 fields where the format has 29"
    assert errors[0]["line"] == len(records()) + 2  # after the header and the records


def test_a_sysmon_style_network_connection_rule_runs_unmodified(flow_case: Path) -> None:
    found = findings(flow_case)
    rule = found["0e6c3a55-36a8-4b0e-9b8f-3c1f8f1d2a10"]
    assert set(rule["event_ids"]) == ids(flow_case, "target = '198.51.100.9:3333/tcp'")


def test_the_egress_volume_query_of_the_docs_finds_the_big_upload(flow_case: Path) -> None:
    doc = (Path(__file__).parent.parent / "docs" / "detection.md").read_text()
    sql = doc.split("`cloudir query` answers it, e.g. `", 1)[1].split("`.", 1)[0]
    top = query(flow_case, " ".join(sql.split()))[0]
    assert (top["src_ip"], top["dst"], top["bytes"]) == (
        "10.0.1.15",
        "198.51.100.99",
        5_000_000_000,
    )


def test_engine_and_reference_agree_on_flow_rows(flow_case: Path) -> None:
    reference = assert_agreement(flow_case)
    assert {rule_id for rule_id, f in reference.items() if f.event_ids} >= FLOW_RULES
