"""Copies of one CloudTrail event (one eventID): identical ones collapse, disagreeing ones
are all kept and reported (issue 14, item 6).

A planted record that reuses a genuine eventID must never push the genuine one out of the
timeline quietly, and must never hide itself as "1 duplicate dropped". Copies are compared
by their whole record in canonical form (keys sorted, whitespace and string escapes
normalised, numbers as written); only key order and layout count as "the same".
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze.timeline import TimelineResult, build_timeline
from cloudir.case import Case
from tests.conftest import cloudir, ct_event

EXAMPLE_EVENT_ID = "5f0d6a4e-0000-4000-8000-00000000cafe"


# -- helpers -------------------------------------------------------------------------
def add_item(case: Case, evidence_id: str, files: dict[str, bytes], lookup: bool = False) -> None:
    """One evidence item as a capture leaves it: meta, files, custody, completion."""
    source = {"type": "lookup_events"} if lookup else {"type": "files", "path": evidence_id}
    case.open_item(evidence_id, {"kind": "cloudtrail", "source": source})
    for name, data in files.items():
        case.record("capture", evidence_id, [case.store_bytes(evidence_id, name, data)])
    case.record("capture-complete", evidence_id, [])


def s3_file(*records: Any, indent: int | None = None) -> bytes:
    """An S3 delivery file; a record given as str is inserted as its exact bytes."""
    parts = [r if isinstance(r, str) else json.dumps(r, indent=indent) for r in records]
    return ('{"Records": [' + ", ".join(parts) + "]}").encode()


def lookup_page(*records: dict[str, Any]) -> bytes:
    """A LookupEvents API page: each record travels as the `CloudTrailEvent` string."""
    events = [
        {
            "EventId": r["eventID"],
            "EventName": r["eventName"],
            "EventTime": 1722420000.0,
            "Username": "alice",
            "Resources": [],
            "CloudTrailEvent": json.dumps(r, separators=(",", ":")),
        }
        for r in records
    ]
    return json.dumps({"Events": events}).encode()


def build(case: Case) -> tuple[TimelineResult, list[dict[str, Any]], list[dict[str, Any]], dict]:
    """Build the timeline; its rows, its errors.jsonl and its summary.json."""
    import duckdb

    result = build_timeline(case, workers=1)
    folder = case.root / "timeline"
    con = duckdb.connect()
    cursor = con.execute(
        "SELECT event_id, evidence_id, src_ip, raw "
        f"FROM read_parquet('{folder}/**/*.parquet', hive_partitioning=false)"
    )
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    errors = [json.loads(x) for x in (folder / "errors.jsonl").read_text().splitlines()]
    summary = json.loads((folder / "summary.json").read_text())
    return result, rows, errors, summary


def reported(errors: list[dict[str, Any]], event_id: str) -> list[dict[str, Any]]:
    return [e for e in errors if e.get("event_id") == event_id]


def genuine_event() -> dict[str, Any]:
    return ct_event(
        "2024-07-31T10:00:00Z",
        name="PutBucketPolicy",
        eventID=EXAMPLE_EVENT_ID,
        requestParameters={"bucketName": "evidence", "policy": {"Statement": [{"Effect": "Deny"}]}},
    )


@pytest.fixture
def case(tmp_path: Path) -> Case:
    return Case.create(tmp_path / "case", title="duplicates")


# -- the numbered cases of the issue ------------------------------------------------------
def test_copies_differing_only_in_source_ip_are_both_kept_and_reported(case: Case) -> None:
    genuine = genuine_event()
    planted = dict(genuine, sourceIPAddress="203.0.113.66")
    add_item(case, "cloudtrail-a", {"files/a.json": s3_file(genuine)})
    add_item(case, "cloudtrail-b", {"files/b.json": s3_file(planted)})

    result, rows, errors, summary = build(case)

    assert sorted(r["src_ip"] for r in rows) == ["198.51.100.7", "203.0.113.66"]
    assert result.duplicates_dropped == 0
    [entry] = reported(errors, EXAMPLE_EVENT_ID)
    assert entry["differs_in"] == ["sourceIPAddress"]
    assert entry["paths"] == [
        "evidence/cloudtrail-a/files/a.json",
        "evidence/cloudtrail-b/files/b.json",
    ]
    assert entry["evidence_ids"] == ["cloudtrail-a", "cloudtrail-b"]
    assert "tamper" in entry["reason"]
    assert entry["kind"] == "conflicting_copies"
    assert summary["conflicting_copies"] == {
        "events": 1,
        "examples": [
            {
                "event_id": EXAMPLE_EVENT_ID,
                "copies": 2,
                "evidence_ids": ["cloudtrail-a", "cloudtrail-b"],
                "paths": [
                    "evidence/cloudtrail-a/files/a.json",
                    "evidence/cloudtrail-b/files/b.json",
                ],
                "differs_in": ["sourceIPAddress"],
            }
        ],
    }
    assert summary["errors"] == len(errors)


def test_copies_differing_in_a_nested_request_parameter_are_reported(case: Case) -> None:
    genuine = genuine_event()
    planted = copy.deepcopy(genuine)
    planted["requestParameters"]["policy"]["Statement"][0]["Effect"] = "Allow"
    add_item(case, "cloudtrail-a", {"files/a.json": s3_file(genuine, planted)})

    _result, rows, errors, summary = build(case)

    effects = sorted(json.loads(r["raw"])["requestParameters"]["policy"]["Statement"][0]["Effect"]
                     for r in rows)  # fmt: skip
    assert effects == ["Allow", "Deny"]
    [entry] = reported(errors, EXAMPLE_EVENT_ID)
    assert entry["differs_in"] == ["requestParameters"]
    assert entry["paths"] == ["evidence/cloudtrail-a/files/a.json"] * 2
    assert summary["conflicting_copies"]["events"] == 1


def test_key_order_and_whitespace_alone_make_identical_copies(case: Case) -> None:
    genuine = genuine_event()
    reordered = {k: genuine[k] for k in reversed(list(genuine))}
    reordered["userIdentity"] = dict(reversed(list(genuine["userIdentity"].items())))
    escaped = json.dumps(reordered, indent=3, ensure_ascii=True).replace('"alice"', '"\\u0061lice"')
    add_item(case, "cloudtrail-a", {"files/a.json": s3_file(genuine)})
    add_item(case, "cloudtrail-b", {"files/b.json": s3_file(escaped)})

    result, rows, errors, summary = build(case)

    assert [r["evidence_id"] for r in rows] == ["cloudtrail-a"]
    assert result.duplicates_dropped == 1
    assert reported(errors, EXAMPLE_EVENT_ID) == []
    assert summary["conflicting_copies"] == {"events": 0, "examples": []}
    assert summary["duplicates_dropped"] == 1


def test_three_copies_two_identical_one_different(case: Case) -> None:
    genuine = genuine_event()
    planted = dict(genuine, userAgent="definitely-not-aws-cli")
    add_item(case, "cloudtrail-a", {"files/a.json": s3_file(genuine)})
    add_item(case, "cloudtrail-b", {"files/b.json": s3_file(planted, genuine)})

    result, rows, errors, summary = build(case)

    agents = sorted(json.loads(r["raw"])["userAgent"] for r in rows)
    assert agents == ["aws-cli/2", "definitely-not-aws-cli"]
    assert result.duplicates_dropped == 1
    assert result.rows == 2
    [entry] = reported(errors, EXAMPLE_EVENT_ID)
    assert entry["copies"] == 3
    assert entry["differs_in"] == ["userAgent"]
    assert sorted(entry["paths"]) == [
        "evidence/cloudtrail-a/files/a.json",
        "evidence/cloudtrail-b/files/b.json",
        "evidence/cloudtrail-b/files/b.json",
    ]
    [example] = summary["conflicting_copies"]["examples"]
    assert example["copies"] == 3
    assert summary["rows_by_evidence"] == {"cloudtrail-a": 1, "cloudtrail-b": 1}


def test_s3_and_lookup_events_copies_that_agree_give_one_row_from_s3(case: Case) -> None:
    genuine = genuine_event()
    add_item(case, "cloudtrail-api", {"pages/page-00001.json": lookup_page(genuine)}, lookup=True)
    add_item(case, "cloudtrail-s3", {"files/delivered.json": s3_file(genuine, indent=1)})

    result, rows, errors, summary = build(case)

    assert [r["evidence_id"] for r in rows] == ["cloudtrail-s3"]
    assert result.duplicates_dropped == 1
    assert summary["conflicting_copies"]["events"] == 0
    assert errors == []


def test_s3_and_lookup_events_copies_that_disagree_are_both_kept(case: Case) -> None:
    genuine = genuine_event()
    add_item(case, "cloudtrail-api", {"pages/page-00001.json": lookup_page(genuine)}, lookup=True)
    planted = dict(genuine, requestParameters={"bucketName": "evidence"})
    add_item(case, "cloudtrail-s3", {"files/delivered.json": s3_file(planted)})

    _result, rows, errors, _summary = build(case)

    assert sorted(r["evidence_id"] for r in rows) == ["cloudtrail-api", "cloudtrail-s3"]
    [entry] = reported(errors, EXAMPLE_EVENT_ID)
    assert entry["differs_in"] == ["requestParameters"]
    assert "evidence/cloudtrail-api/pages/page-00001.json" in entry["paths"]


def test_a_repeated_key_is_a_difference_not_a_spelling(case: Case) -> None:
    """`{"sourceIPAddress": "evil", ..., "sourceIPAddress": "good"}` reads as "good" to a
    last-wins parser and "evil" to a first-wins one: it never passes for the genuine copy."""
    genuine = genuine_event()
    text = json.dumps(genuine)
    doubled = text.replace(
        '"sourceIPAddress"', '"sourceIPAddress": "203.0.113.66", "sourceIPAddress"'
    )
    add_item(case, "cloudtrail-a", {"files/a.json": s3_file(genuine)})
    add_item(case, "cloudtrail-b", {"files/b.json": s3_file(doubled)})

    _result, rows, errors, _summary = build(case)

    assert len(rows) == 2
    [entry] = reported(errors, EXAMPLE_EVENT_ID)
    assert entry["differs_in"] == ["sourceIPAddress"]


def test_no_copies_no_conflicts_key_is_still_there(case: Case) -> None:
    add_item(case, "cloudtrail-a", {"files/a.json": s3_file(ct_event("2024-07-31T10:00:00Z"))})
    _result, rows, _errors, summary = build(case)
    assert len(rows) == 1
    assert summary["duplicates_dropped"] == 0
    assert summary["conflicting_copies"] == {"events": 0, "examples": []}


def test_summary_examples_are_bounded_but_every_event_is_in_errors(case: Case) -> None:
    from cloudir.analyze.duplicates import CONFLICT_EXAMPLES

    events = [genuine_event() | {"eventID": f"id-{n:03d}"} for n in range(CONFLICT_EXAMPLES + 5)]
    planted = [dict(e, sourceIPAddress="203.0.113.66") for e in events]
    add_item(case, "cloudtrail-a", {"files/a.json": s3_file(*events)})
    add_item(case, "cloudtrail-b", {"files/b.json": s3_file(*planted)})

    _result, rows, errors, summary = build(case)

    assert len(rows) == 2 * len(events)
    assert {e["event_id"] for e in errors} == {e["eventID"] for e in events}
    assert summary["conflicting_copies"]["events"] == len(events)
    assert len(summary["conflicting_copies"]["examples"]) == CONFLICT_EXAMPLES


def test_cli_reports_disagreeing_copies_and_strict_exits_3(tmp_path: Path) -> None:
    genuine = genuine_event()
    planted = dict(genuine, sourceIPAddress="203.0.113.66")
    (tmp_path / "a.json").write_bytes(s3_file(genuine))
    (tmp_path / "b.json").write_bytes(s3_file(planted))
    case = tmp_path / "case"
    for name in ("a.json", "b.json"):
        assert cloudir("capture", "files", "--case", str(case), str(tmp_path / name)).code == 0

    result = cloudir("timeline", "--case", str(case), "--json", "--strict")

    assert result.code == 3
    assert "Traceback" not in result.stderr
    assert "1 event has copies that disagree, a sign of tampering" in result.stderr
    out = result.json()
    assert out["rows"] == 2
    assert out["duplicates_dropped"] == 0
    assert out["conflicting_copies"]["events"] == 1
    assert out["conflicting_copies"]["examples"][0]["differs_in"] == ["sourceIPAddress"]
    summary = json.loads((case / "timeline/summary.json").read_text())
    assert summary["conflicting_copies"] == out["conflicting_copies"]


# -- property: identical content collapses, any difference is kept and reported -------------
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("abcdefgh", min_size=1, max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
MUTABLE = ["sourceIPAddress", "requestParameters", "userAgent", "userIdentity", "extra"]


def canonical(value: Any) -> str:
    """The test's own yardstick: Python's sort_keys serialisation (tells 1 from true)."""
    return json.dumps(value, sort_keys=True)


def reformatted(record: dict[str, Any], rng: random.Random) -> str:
    """The same record with keys shuffled at every level and a random layout."""

    def shuffle(value: Any) -> Any:
        if isinstance(value, dict):
            keys = list(value)
            rng.shuffle(keys)
            return {k: shuffle(value[k]) for k in keys}
        if isinstance(value, list):
            return [shuffle(v) for v in value]
        return value

    indent = rng.choice([None, 0, 2])
    return json.dumps(shuffle(record), indent=indent, ensure_ascii=rng.random() < 0.5)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    values=st.dictionaries(st.sampled_from(MUTABLE), VALUES, min_size=1),
    changes=st.lists(st.tuples(st.sampled_from(MUTABLE), VALUES), max_size=2),
    copies=st.integers(2, 3),
    seed=st.integers(0, 2**16),
)
def test_property_identical_content_is_one_row_any_difference_is_kept_and_reported(
    tmp_path_factory: pytest.TempPathFactory,
    values: dict[str, Any],
    changes: list[tuple[str, Any]],
    copies: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    base = genuine_event() | values
    variants = [base]
    for field, value in changes:  # each change is applied to a fresh copy of the base
        variants.append(base | {field: value})
    while len(variants) < copies:
        variants.append(base)
    case = Case.create(tmp_path_factory.mktemp("prop") / "case")
    for n, record in enumerate(variants):
        add_item(case, f"cloudtrail-{n}", {f"files/{n}.json": s3_file(reformatted(record, rng))})

    result, rows, errors, summary = build(case)

    distinct = {canonical(v) for v in variants}
    kept = sorted(canonical(json.loads(r["raw"])) for r in rows)
    assert kept == sorted(distinct), "each distinct version exactly once"
    assert result.duplicates_dropped == len(variants) - len(distinct)
    entries = reported(errors, EXAMPLE_EVENT_ID)
    if len(distinct) == 1:
        assert entries == []
        assert summary["conflicting_copies"]["events"] == 0
    else:
        [entry] = entries
        assert entry["copies"] == len(variants)
        expected = {f for f, v in changes if canonical(base | {f: v}) != canonical(base)}
        assert set(entry["differs_in"]) == expected
        assert summary["conflicting_copies"]["events"] == 1
        assert summary["conflicting_copies"]["examples"][0]["event_id"] == EXAMPLE_EVENT_ID
