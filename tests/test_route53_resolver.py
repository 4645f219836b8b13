"""Route 53 Resolver query logs on the timeline: one row per query, every bad line counted.

The parser is called directly for the columns and for hostile input (Hypothesis over
line shapes); recognition through `recognise_kind`; and once end to end through the CLI
(capture files with the kind recognised, timeline, detect) in test_route53_resolver_e2e.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze import parsers
from cloudir.analyze.parsers import ErrorLog, recognise_kind
from cloudir.analyze.parsers import route53_resolver as resolver
from cloudir.analyze.schema import PROMOTED_COLUMNS
from cloudir.safe_text import _CONTROL as CONTROL
from tests.conftest import cloudir, query, records_gz
from tests.route53_resolver_logs import (
    INSTANCE,
    blocked,
    line_of,
    resolver_record,
    s3_name,
    write_log,
)

DATA = Path(__file__).parent / "data" / "route53-resolver"
DOC_EXAMPLE = DATA / "aws-documentation-example.log"
WHEN = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def parse(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    errors = ErrorLog("ev-dns", str(path))
    rows = [row for batch in resolver.parse(path, "ev-dns", errors) for row in batch.to_pylist()]
    return rows, errors.entries


# -- rows -----------------------------------------------------------------------------------
def test_the_aws_documentation_example_is_one_row_with_its_columns() -> None:
    rows, errors = parse(DOC_EXAMPLE)
    assert errors == []
    [row] = rows
    line = DOC_EXAMPLE.read_text().rstrip("\n")
    # not a CloudTrail record: the promoted columns stay NULL and rules read `raw`
    assert [row.pop(name) for name in PROMOTED_COLUMNS] == [None] * len(PROMOTED_COLUMNS)
    assert {k: v for k, v in row.items() if k != "event_id"} == {
        "timestamp": datetime(2021, 2, 4, 17, 51, 55, tzinfo=UTC),
        "timestamp_desc": "Query Time",
        "source": "route53",
        "artifact": "aws:route53_resolver",
        "host": "i-0d15cd0d3example",
        "user": None,
        "src_ip": "4.5.64.102",
        "action": "dns:PTR",
        "target": "15.3.4.32.in-addr.arpa",
        "outcome": "blocked",  # DNS Firewall's BLOCK, whatever the rcode says
        "message": "4.5.64.102 (i-0d15cd0d3example) asked PTR 15.3.4.32.in-addr.arpa: "
        "NOERROR 203.0.113.9 (DNS Firewall BLOCK)",
        "evidence_id": "ev-dns",
        "raw": line,  # byte for byte as delivered
    }
    assert len(row["event_id"]) == 32


def test_the_cloudwatch_export_form_reads_as_the_s3_form() -> None:
    rows, errors = parse(DATA / "cloudwatch-export-example.log")
    assert errors == []
    assert rows == parse(DOC_EXAMPLE)[0]  # the export's time prefix is not the record


def test_gzip_and_plain_files_give_the_same_rows(tmp_path: Path) -> None:
    records = [
        resolver_record(query_timestamp=f"2026-01-01T10:00:0{n}Z", query_name=f"h{n}.example.com.")
        for n in range(5)
    ]
    plain, plain_errors = parse(write_log(tmp_path / "a.log", records, gz=False))
    packed, packed_errors = parse(write_log(tmp_path / s3_name(WHEN), records))
    assert plain_errors == packed_errors == []
    assert [r["target"] for r in plain] == [f"h{n}.example.com" for n in range(5)]
    assert plain == packed


def test_columns_of_an_answered_query_and_of_the_other_outcomes(tmp_path: Path) -> None:
    many = [{"Rdata": f"198.51.100.{n}", "Type": "A", "Class": "IN"} for n in range(7)]
    records = [
        resolver_record(answers=many),
        resolver_record(rcode="NXDOMAIN", answers=[], query_type="TXT"),
        resolver_record(rcode="SERVFAIL", answers=None, srcids=None, query_type=None),
        blocked(resolver_record(), "ALERT"),
        resolver_record(srcids={"resolver_endpoint": "rslvr-in-0123456789abcdef0"}),
    ]
    rows, errors = parse(write_log(tmp_path / "q.log.gz", records))
    assert errors == []
    assert [(r["action"], r["outcome"], r["host"]) for r in rows] == [
        ("dns:A", "success", INSTANCE),
        ("dns:TXT", "success", INSTANCE),  # answered: the name does not exist
        ("dns:query", "SERVFAIL", None),
        ("dns:A", "success", INSTANCE),  # ALERT lets the query through
        ("dns:A", "success", None),  # an inbound endpoint's query: no instance
    ]
    assert rows[0]["message"] == (
        f"10.0.1.25 ({INSTANCE}) asked A example.com: NOERROR 198.51.100.0, 198.51.100.1, "
        "198.51.100.2, 198.51.100.3, 198.51.100.4, ... (7 answers)"
    )
    assert rows[3]["message"].endswith("(DNS Firewall ALERT)")
    assert {r["src_ip"] for r in rows} == {"10.0.1.25"}


def test_rows_come_in_batches_of_at_most_batch_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsers, "BATCH_ROWS", 4)
    records = [resolver_record(query_name=f"n{n}.example.com.") for n in range(10)]
    errors = ErrorLog()
    sizes = [b.num_rows for b in resolver.parse(write_log(tmp_path / "x.log.gz", records),
                                                "ev", errors)]  # fmt: skip
    assert sizes == [4, 4, 2] and errors.entries == []


# -- bad lines --------------------------------------------------------------------------------
def test_every_bad_line_is_one_counted_error_and_the_rest_are_rows(tmp_path: Path) -> None:
    good = line_of(resolver_record())
    lines = [
        good,  # 1
        '{"query_name": "x.example.com.", "srcids": {}',  # 2 truncated JSON
        line_of(resolver_record(query_timestamp=None)),  # 3 no time
        line_of(resolver_record(query_timestamp="2026-02-30T10:00:00Z")),  # 4 no such day
        line_of(resolver_record(query_timestamp="9999-12-31T23:59:59-01:00")),  # 5 year 10000
        line_of(resolver_record(query_timestamp=1767261600)),  # 6 a number, not ISO text
        line_of(resolver_record(query_name=12)),  # 7 wrong type
        line_of(resolver_record(srcids="i-0abc")),  # 8 wrong type
        line_of(resolver_record(answers={"Rdata": "1.2.3.4"})),  # 9 wrong type
        line_of(resolver_record(srcids={"instance": ["i-1"]})),  # 10 wrong type inside
        '["not", "a", "record"]',  # 11
        line_of(resolver_record(query_name=None)),  # 12 no name
        "",  # 13 blank: nothing
        good,  # 14
    ]
    path = tmp_path / "bad.log"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"query_name": "\xff"}\n')
    rows, errors = parse(path)
    assert len(rows) == 2
    assert [e["line"] for e in errors] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15]
    reasons = [e["reason"] for e in errors]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "no query_timestamp; not placed"
    assert reasons[2] == "unreadable query_timestamp '2026-02-30T10:00:00Z'"
    assert reasons[4] == "query_timestamp is not a string; not placed"
    assert reasons[5] == "query_name is a JSON number, not a str"
    assert reasons[7] == "answers is a JSON object, not a list"
    assert reasons[8] == "srcids.instance is a JSON array, not a str"
    assert reasons[-1] == "not valid UTF-8; not a query record"


def test_an_over_long_line_is_reported_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resolver, "MAX_LINE_BYTES", 400)
    huge = line_of(resolver_record(query_name="a" * 2000 + "."))
    path = write_log(tmp_path / "long.log.gz", [huge, line_of(resolver_record())])
    rows, errors = parse(path)
    assert len(rows) == 1
    assert [(e["line"], e["reason"]) for e in errors] == [(1, "line over 400 bytes; not parsed")]


def test_a_truncated_gzip_keeps_the_rows_before_the_cut(tmp_path: Path) -> None:
    records = [resolver_record(query_name=f"n{n}.example.com.") for n in range(2000)]
    whole = write_log(tmp_path / "whole.log.gz", records).read_bytes()
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    rows, errors = parse(cut)
    assert 0 < len(rows) < 2000
    assert len(errors) == 1 and errors[0]["reason"].startswith("truncated or corrupt gzip")


HOSTILE_NAMES = [
    "'; DROP TABLE timeline; --.example.com.",
    "\x1b[31mred\x1b[0m.example.com.",
    "evil\u202etxt.exe.example.com.",
    "a\nb.example.com.",
    '"},{"query_name":"forged.example.com.".',
    "%s%n.example.com.",
    ".",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_an_attackers_query_name_stays_data(tmp_path: Path, name: str) -> None:
    rows, errors = parse(write_log(tmp_path / "h.log", [resolver_record(query_name=name)]))
    assert errors == []
    [row] = rows
    assert row["target"] == (name[:-1] if len(name) > 1 else name)
    assert json.loads(row["raw"])["query_name"] == name
    assert not any(ord(c) < 0x20 or 0x202A <= ord(c) <= 0x202E for c in row["message"])


@given(name=st.text(min_size=1, max_size=300))
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_query_name_is_kept_as_data(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    path = write_log(tmp_path_factory.mktemp("n") / "n.log", [resolver_record(query_name=name)])
    rows, errors = parse(path)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):  # a lone surrogate: no UTF-8 text
        assert len(rows) + len(errors) == 1
        return
    assert errors == []
    [row] = rows
    assert row["target"] == resolver.domain_of(name)
    assert json.loads(row["raw"])["query_name"] == name
    assert CONTROL.search(row["message"]) is None


# -- anything at all: rows or counted errors, never a traceback ---------------------------------
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=8,
)  # fmt: skip
FIELD_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(["2026-01-01T10:00:00Z", "2026-01-01T10:00:00.123Z", "2026-13-01T00:00:00Z",
                     "0000-01-01T00:00:00Z", "", "NOERROR", "example.com.", "10.0.1.5"]),
)  # fmt: skip
RECORDS = st.dictionaries(
    st.sampled_from([*resolver.FIELD_TYPES, "query_timestamp", "version", "other"]),
    FIELD_VALUES,
    max_size=10,
)


def _lines_from(records: list[dict[str, Any]], cuts: list[int]) -> list[bytes]:
    lines = []
    for record, cut in zip(records, cuts, strict=True):
        base = {**resolver_record(), **record}
        text = json.dumps(base).encode()
        lines.append(text[: cut % (len(text) + 1)] if cut % 3 == 0 else text)
    return lines


@given(
    records=st.lists(RECORDS, min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), min_size=8, max_size=8),
    packed=st.booleans(),
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_line_shape_gives_a_row_or_an_error_entry(
    tmp_path_factory: pytest.TempPathFactory,
    records: list[dict[str, Any]],
    cuts: list[int],
    packed: bool,
) -> None:
    lines = _lines_from(records, cuts[: len(records)])
    data = b"\n".join(lines) + b"\n"
    path = tmp_path_factory.mktemp("h") / "any.log"
    path.write_bytes(gzip.compress(data) if packed else data)
    rows, errors = parse(path)
    nonblank = sum(1 for line in lines if line.strip())
    assert len(rows) + len(errors) == nonblank
    for row in rows:
        assert row["artifact"] == "aws:route53_resolver" and row["timestamp"] is not None
        assert row["raw"].encode() in lines
    for error in errors:
        assert set(error) >= {"reason", "line"} and error["line"] >= 1


# -- recognition ----------------------------------------------------------------------------
def test_resolver_logs_are_recognised_by_content_and_name(tmp_path: Path) -> None:
    records = [resolver_record()]
    aws = write_log(tmp_path / "a" / s3_name(WHEN), records)
    jsonl = write_log(tmp_path / "b" / "dns.jsonl", records, gz=False)  # CloudTrail's name
    bare = write_log(tmp_path / "c" / "evidence.bin", records)
    assert resolver.recognise([aws]) == parsers.BY_NAME_AND_STRUCTURE
    assert resolver.recognise([bare]) == parsers.BY_CONTENT
    for path in (aws, jsonl, bare, DOC_EXAMPLE, DATA / "cloudwatch-export-example.log"):
        assert recognise_kind([path]) == "route53-resolver", path
    folder = [write_log(tmp_path / "d" / s3_name(WHEN, tag=f"{n:08x}"), records) for n in range(3)]
    assert recognise_kind(folder) == "route53-resolver"


def test_other_json_and_logs_are_not_resolver_logs(tmp_path: Path) -> None:
    trail = tmp_path / "trail.json.gz"
    trail.write_bytes(records_gz([{"eventTime": "2026-01-01T10:00:00Z", "eventName": "X"}]))
    other = write_log(tmp_path / "app.log.gz", ['{"level": "info", "msg": "hi"}'])
    no_srcids = write_log(tmp_path / "n.log", [resolver_record(srcids=None)], gz=False)
    assert recognise_kind([trail]) == "cloudtrail"
    assert resolver.recognise([other]) == resolver.recognise([no_srcids]) == parsers.NOT_MINE
    empty = tmp_path / s3_name(WHEN)
    empty.write_bytes(b"")
    assert resolver.recognise([empty]) == parsers.BY_NAME  # AWS's name, nothing to read
    mixed = [write_log(tmp_path / "m" / s3_name(WHEN), [resolver_record()]), other]
    assert resolver.recognise(mixed) == parsers.NOT_MINE


# -- end to end through the CLI -----------------------------------------------------------------
RULE_IDS = {
    "mining": "4b33c60d-9ac4-4af6-bde1-c8058a24ed70",
    "long_label": "84314776-0add-47fd-ae0c-f66845efd7a4",
    "subdomains": "b8bbff13-c6ae-40ca-85b8-0c9f56dbe940",
    "firewall": "28c7ab96-d069-4caa-9dec-e9e43169a07b",
}


def _at(second: int) -> str:
    return f"2026-03-01T09:{second // 60:02d}:{second % 60:02d}Z"


def test_capture_timeline_detect_finds_the_miner_and_the_tunnel(tmp_path: Path) -> None:
    """A compromised instance resolves its pool, then tunnels out; a quiet neighbour does
    neither. Every DNS rule fires on the first one's queries only, the engine agrees with
    the reference evaluator, and the documentation's BLOCK record is found too."""
    from tests.test_detect_reference import assert_agreement

    bad = {"srcaddr": "10.0.1.99", "srcids": {"instance": "i-0badbadbadbad0001"}}
    tunnel = [
        resolver_record(query_timestamp=_at(60 + n), query_type="TXT", rcode="NXDOMAIN",
                        answers=[], query_name=f"{n:02d}{'q7x2k9m4' * 7}.t.exfil.example.", **bad)
        for n in range(30)
    ]  # fmt: skip
    noisy = [
        resolver_record(query_timestamp=_at(n), query_name=f"bucket{n}.s3.amazonaws.com.")
        for n in range(30)
    ]
    logs = tmp_path / "AWSLogs" / "111122223333" / "vpcdnsquerylogs" / "vpc-0a1b2c3d4e5f60718"
    write_log(logs / s3_name(WHEN), [
        resolver_record(query_timestamp=_at(0), query_name="pool.supportxmr.com.", **bad),
        resolver_record(query_timestamp=_at(1), query_name="www.example.com."),
        *tunnel,
        *noisy,
    ])  # fmt: skip
    case = tmp_path / "case"
    captured = cloudir("capture", "files", "--case", str(case), "--json", str(tmp_path / "AWSLogs"),
                       str(DOC_EXAMPLE))  # fmt: skip
    assert captured.code == 0, captured.stderr
    assert [i["kind"] for i in captured.json()["items"]] == ["route53-resolver"] * 2
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.code == 0, timeline.stderr
    assert (timeline.json()["rows"], timeline.json()["errors"]) == (63, 0)

    ids = {r["target"]: r["event_id"] for r in query(case, "SELECT target, event_id FROM timeline")}
    detected = cloudir("detect", "--case", str(case), "--json", "--fail-on", "critical")
    assert detected.code == 0, detected.stderr
    findings = {f["rule_id"]: f for f in detected.json()["findings"]}
    tunnel_ids = {ids[r["query_name"][:-1]] for r in tunnel}
    assert set(findings["4b33c60d-9ac4-4af6-bde1-c8058a24ed70"]["event_ids"]) == {
        ids["pool.supportxmr.com"]
    }
    assert set(findings[RULE_IDS["long_label"]]["event_ids"]) == tunnel_ids
    assert set(findings[RULE_IDS["subdomains"]]["event_ids"]) == tunnel_ids
    assert set(findings[RULE_IDS["firewall"]]["event_ids"]) == {ids["15.3.4.32.in-addr.arpa"]}
    assert findings[RULE_IDS["firewall"]]["outcome"] == "attempted"  # blocked: it did not work
    assert findings[RULE_IDS["mining"]]["outcome"] == "succeeded"
    # the tunnel's server answers NXDOMAIN: the data still reached it, the level stays
    assert findings[RULE_IDS["long_label"]]["outcome"] == "succeeded"
    assert findings[RULE_IDS["long_label"]]["level"] == "medium"
    dns_findings = {r for r in findings if r in RULE_IDS.values()}
    assert dns_findings == set(RULE_IDS.values())
    assert_agreement(case)


def test_a_quiet_vpc_gives_no_dns_findings(tmp_path: Path) -> None:
    records = [
        resolver_record(query_timestamp=_at(n), query_name=f"{host}.example.com.")
        for n, host in enumerate(["www", "api", "www", "cdn", "mail"] * 4)
    ]
    log = write_log(tmp_path / "logs" / s3_name(WHEN), records)
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(log)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    detected = cloudir("detect", "--case", str(case), "--json", "--fail-on", "critical")
    assert detected.code == 0, detected.stderr
    assert {f["rule_id"] for f in detected.json()["findings"]} & set(RULE_IDS.values()) == set()


# -- Sigma's `category: dns` rules, unmodified ---------------------------------------------------
COMMUNITY_RULES = {
    # as SigmaHQ writes them (rules/network/dns): Sigma's field names, no product
    "pool.yml": """
title: Monero Mining Pool Lookup (community style)
id: 6a3f0e43-0000-4000-8000-000000000001
logsource: {category: dns}
detection:
    selection:
        query|endswith: [pool.supportxmr.com, .nanopool.org]
    condition: selection
level: high
""",
    "txt.yml": """
title: DNS TXT Answer with Execution Strings (community style)
id: 6a3f0e43-0000-4000-8000-000000000002
logsource: {category: dns}
detection:
    selection:
        record_type: TXT
        answer|contains: [IEX, powershell]
    condition: selection
level: high
""",
    "names.yml": """
title: Sysmon-style names for the same query
id: 6a3f0e43-0000-4000-8000-000000000003
logsource: {category: dns}
detection:
    selection:
        QueryName: pool.supportxmr.com
        QueryResults|contains: 198.51.100.7
    condition: selection
level: high
""",
    "tunnel.yml": """
title: DNS query under one parent domain (community style base)
name: community_dns_any
id: 6a3f0e43-0000-4000-8000-000000000004
logsource: {category: dns}
detection:
    selection:
        query|contains: '.'
    condition: selection
level: informational
---
title: Many unique queries under one parent domain (community style)
id: 6a3f0e43-0000-4000-8000-000000000005
correlation:
    type: value_count
    rules: [community_dns_any]
    group-by: [src_ip, parent_domain]
    timespan: 5m
    condition: {gte: 20, field: query}
level: high
""",
    "own_names.yml": """
title: The mapping is the dns category's only
id: 6a3f0e43-0000-4000-8000-000000000006
logsource: {product: aws, service: route53}
detection:
    selection:
        query|contains: '.'
    condition: selection
level: high
""",
}


def test_sigma_dns_rules_run_unmodified_and_agree_with_the_reference(tmp_path: Path) -> None:
    from tests.sigma_reference import evaluate, read_timeline
    from tests.sigma_reference import load_rules as reference_rules

    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in COMMUNITY_RULES.items():
        (rules / name).write_text(text)
    asker = {"srcaddr": "10.0.3.7", "srcids": {"instance": "i-0c0ffee0c0ffee007"}}
    records = [
        resolver_record(query_timestamp=_at(0), query_name="pool.supportxmr.com.",
                        answers=[{"Rdata": "198.51.100.7", "Type": "A", "Class": "IN"}], **asker),
        resolver_record(query_timestamp=_at(1), query_name="cmd.stage.example.", query_type="TXT",
                        answers=[{"Rdata": '"IEX (New-Object Net.WebClient)"', "Type": "TXT",
                                  "Class": "IN"}], **asker),
        resolver_record(query_timestamp=_at(2), query_name="txt.benign.example.", query_type="TXT",
                        answers=[{"Rdata": '"v=spf1 -all"', "Type": "TXT", "Class": "IN"}]),
        *[resolver_record(query_timestamp=_at(10 + n), query_name=f"c{n}.chunks.exfil.example.",
                          **asker) for n in range(20)],
        *[resolver_record(query_timestamp=_at(10 + n), query_name=f"c{n}.chunks.exfil.example.",
                          srcaddr="10.0.3.8") for n in range(19)],
    ]  # fmt: skip
    case = tmp_path / "case"
    log = write_log(tmp_path / "logs" / s3_name(WHEN), records)
    assert cloudir("capture", "files", "--case", str(case), str(log)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    ids = {
        (r["target"], r["src_ip"]): r["event_id"]
        for r in query(case, "SELECT target, src_ip, event_id FROM timeline")
    }
    result = cloudir("detect", "--case", str(case), "--rules", str(rules), "--no-builtin", "--json",
                     "--fail-on", "critical")  # fmt: skip
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["rules"]["skipped"] == []
    engine = {f["rule_id"]: set(f["event_ids"]) for f in doc["findings"]}
    chunks = {ids[(f"c{n}.chunks.exfil.example", "10.0.3.7")] for n in range(20)}
    assert engine == {
        "6a3f0e43-0000-4000-8000-000000000001": {ids[("pool.supportxmr.com", "10.0.3.7")]},
        "6a3f0e43-0000-4000-8000-000000000002": {ids[("cmd.stage.example", "10.0.3.7")]},
        "6a3f0e43-0000-4000-8000-000000000003": {ids[("pool.supportxmr.com", "10.0.3.7")]},
        "6a3f0e43-0000-4000-8000-000000000005": chunks,  # 19 from the other source: no
    }  # and own_names.yml (aws/route53, AWS's names) reads a `query` no record has
    reference = evaluate(reference_rules([rules]), read_timeline(case))
    assert {k: v.event_ids for k, v in reference.items() if v.event_ids} == engine


# -- CloudWatch Logs delivery: FilterLogEvents pages as `capture logs` stores them ---------------
def filter_log_events_page(records: list[Any], start: int = 0) -> bytes:
    """A FilterLogEvents response: each event's message is one record's line."""
    events = [
        {
            "logStreamName": "vpc-0a1b2c3d4e5f60718_fbd0a8a1",
            "timestamp": 1767261600000 + n,
            "message": r if isinstance(r, str) else line_of(r),
            "ingestionTime": 1767261601000 + n,
            "eventId": f"3791948759329175634851347837452{start + n:05d}",
        }
        for n, r in enumerate(records)
    ]
    return json.dumps({"events": events, "searchedLogStreams": []}).encode()


def test_cloudwatch_logs_pages_give_one_row_per_event(tmp_path: Path) -> None:
    page = tmp_path / "pages" / "page-00001.json"
    page.parent.mkdir()
    data = json.loads(
        filter_log_events_page([resolver_record(), resolver_record(rcode="SERVFAIL")])
    )
    data["events"] += [{"message": 7}, "not an event", {"message": "{broken"}]
    page.write_text(json.dumps(data))
    rows, errors = parse(page)
    assert [r["outcome"] for r in rows] == ["success", "SERVFAIL"]
    assert rows[0]["raw"] == line_of(resolver_record())  # the message, as delivered
    assert [(e["record"], e["reason"][:22]) for e in errors] == [
        (3, "event has no message t"),
        (4, "event is not a CloudWa"),
        (5, "invalid JSON: object k"),
    ]
    again = tmp_path / "pages" / "page-00002.json"
    again.write_text(json.dumps(data))  # a resumed capture reading the window again
    assert [r["event_id"] for r in parse(again)[0]] == [r["event_id"] for r in rows]
    assert resolver.recognise([page]) == parsers.BY_NAME_AND_STRUCTURE
    assert recognise_kind([page, again]) == "route53-resolver"


def test_pages_read_twice_collapse_in_the_timeline(tmp_path: Path) -> None:
    pages = tmp_path / "group" / "pages"
    pages.mkdir(parents=True)
    records = [resolver_record(query_name=f"n{n}.example.com.") for n in range(3)]
    (pages / "page-00001.json").write_bytes(filter_log_events_page(records))
    (pages / "page-00002.json").write_bytes(filter_log_events_page(records[1:], start=1))
    case = tmp_path / "case"
    captured = cloudir("capture", "files", "--case", str(case), str(tmp_path / "group"), "--json")
    assert captured.code == 0, captured.stderr
    assert [i["kind"] for i in captured.json()["items"]] == ["route53-resolver"]
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.code == 0, timeline.stderr
    assert (timeline.json()["rows"], timeline.json()["errors"]) == (3, 0)
