"""`cloudir report` under hostile and unlucky cases (issue 14: items 5, 3, 6 and 15 on the
report side, and the adversarial report module).

An intruder writes the logs the report is made from: every string column, the event
times (year 1 to 9999 parse), the number of users and the size of a finding. Whatever
the case holds, the report must be written (exit 0, no traceback), stay small, keep
evidence text inert in HTML and Markdown, and say at the top what the timeline could not
vouch for: incomplete evidence, disagreeing copies, implausible times, parse errors.

Cases are built the way tests/test_report.py and tests/test_detect.py build them: real
ones through the CLI (capture, timeline, detect), generated ones as Parquet rows written
straight to the case's timeline (tests/timeline_rows.py) with a findings.json in
detect's format, then `cloudir report` run in-process (typer's runner: the same command
code, error handler included, without a Python start-up per example).

The size bound stated and checked here: report.json is at most REPORT_JSON_BASE bytes
plus, per finding, 8 times the JSON size of the rows it shows (25 matched and 40 context
rows at most): it does not grow with the time span, the number of rows, of users or of
event ids.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.report.model import (
    CHART_MAX_BUCKETS,
    CONTEXT_EVENTS,
    ENTITY_VALUES_LISTED,
    EVENT_IDS_LISTED,
    EVENTS_PER_FINDING,
    _bucket_seconds,
)
from cloudir.report.times import FIRST_SECONDS, LAST_SECONDS
from tests.conftest import cloudir, ct_event, records_gz
from tests.test_report import BAD_CHARS, parse_html, table_rows, unescaped_pipes
from tests.timeline_rows import timeline_row, write_timeline

FORMATS = ("html", "md", "json")
REPORT_JSON_BASE = 1024 * 1024
ROW_FACTOR = 8  # JSON escapes (\u202e is 6 bytes for 3) and the row shown twice at most
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


# -- helpers (the masking tests use them too) ------------------------------------------


def detect_iso(moment: datetime) -> str:
    """A time as detect writes it in findings.json (strftime: year 1 is "1-01-01...")."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def finding_for(rows: list[dict[str, Any]], n: int = 0, **fields: Any) -> dict[str, Any]:
    """One finding over `rows` in detect's findings.json format; `fields` override."""
    stamps = sorted(r["timestamp"] for r in rows)

    def values(column: str) -> list[str]:
        return sorted({str(r[column]) for r in rows if r.get(column)})

    finding = {
        "rule_id": f"00000000-0000-4000-8000-{n:012d}",
        "title": f"Generated finding {n}",
        "level": "high",
        "status": "test",
        "tags": ["attack.defense-evasion", "attack.t1562.008"],
        "techniques": ["T1562.008"],
        "count": len(rows),
        "first_seen": detect_iso(stamps[0]),
        "last_seen": detect_iso(stamps[-1]),
        "event_ids": [r["event_id"] for r in rows],
        "entities": {
            "principals": values("user"),
            "access_keys": [],
            "source_ips": values("src_ip"),
            "hosts": values("host"),
            "targets": values("target"),
        },
        "rule_path": "generated.yml",
        "description": "generated",
        "falsepositives": [],
    }
    finding.update(fields)
    finding["count"] = len(finding["event_ids"])
    return finding


def build_case(
    root: Path,
    rows: list[dict[str, Any]],
    findings: list[dict[str, Any]] | None = None,
    summary: dict[str, Any] | None = None,
    errors: list[Any] | None = None,
) -> Path:
    """A case whose timeline is `rows`, with findings.json (default: one over all rows),
    timeline/summary.json and timeline/errors.jsonl as the timeline and detect write them."""
    case = root / "case"
    write_timeline(case, rows)
    if findings is None:
        findings = [finding_for(rows)] if rows else []
    (case / "findings").mkdir(exist_ok=True)
    (case / "findings/findings.json").write_text(
        json.dumps(
            {
                "case": "generated",
                "generated": "2026-01-01T00:00:00Z",
                "cloudir_version": "test",
                "rules": {"loaded": 1, "skipped": []},
                "findings": findings,
            },
            default=str,
        )
    )
    counted = {"rows": len(rows), "rows_by_evidence": {"synthetic": len(rows)}} if rows else {}
    (case / "timeline/summary.json").write_text(json.dumps({**counted, **(summary or {})}))
    if errors is not None:
        (case / "timeline/errors.jsonl").write_text("".join(json.dumps(e) + "\n" for e in errors))
    return case


def run_report(case: Path, *extra: str) -> Any:
    """`cloudir report` through the CLI's own command and error handling, in-process."""
    from typer.testing import CliRunner

    from cloudir.cli import app

    return CliRunner().invoke(app, ["report", "--case", str(case), *extra])


def raw_reports(case: Path) -> dict[str, str]:
    return {fmt: (case / f"report/report.{fmt}").read_text(encoding="utf-8") for fmt in FORMATS}


def report_files(case: Path) -> dict[str, str]:
    """Each report file decoded as a reader sees it: HTML entities and Markdown escapes
    undone, defanged links put back, so that a needle cannot hide behind an escape."""
    texts = raw_reports(case)
    texts["html"] = unescape(texts["html"])
    md = re.sub(r"\\(.)", r"\1", texts["md"])
    texts["md"] = md.replace("[:]//", "://").replace("[.]", ".")
    return texts


ATTACKS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "<iframe src=javascript:alert(1)>",
    "[click](javascript:alert(1))",
    "![x](http://evil.example/x.png)",
    "<http://evil.example>",
    "| a | b |",
    "|",
    "\n",
    "\r\n",
    "\n| --- |\n",
    "\u202e",
    "\u2066",
    "\u200b",
    "\x1b[31m",
    "\x00",
    "\x7f",
    "\x85",
    "\u2028",
    "`",
    "**",
    "_",
    "# ",
    "1. ",
    "<!--",
    "]]>",
    "&amp;",
    "&#60;script&#62;",
    "{{ 7*7 }}",
    "{% raw %}",
    "\\",
    "www.evil.example",
]
text_chars = st.characters(blacklist_categories=("Cs",))  # Parquet strings are UTF-8


def hostile_text(max_size: int = 200) -> st.SearchStrategy[str]:
    """Attacker text: markup, Markdown, controls and bidi overrides among random characters."""
    piece = st.one_of(st.sampled_from(ATTACKS), st.text(text_chars, max_size=12))
    return st.lists(piece, max_size=8).map(lambda parts: "".join(parts)[:max_size])


times_any = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
)
times_near = st.datetimes(
    min_value=datetime(2026, 3, 1), max_value=datetime(2026, 3, 2), timezones=st.just(UTC)
)

COLUMNS = ("user", "src_ip", "host", "action", "target", "outcome", "message", "source")


@st.composite
def hostile_row(draw: st.DrawFn, n: int) -> dict[str, Any]:
    columns = {c: draw(hostile_text()) for c in COLUMNS}
    key = draw(hostile_text(40))
    raw = {
        "eventName": draw(hostile_text(40)),
        "userAgent": draw(hostile_text()),
        "requestParameters": {key: draw(hostile_text()), "n": n},
    }
    when = draw(st.one_of(times_any, times_near, st.sampled_from([EARLIEST, LATEST])))
    row = timeline_row(draw(st.sampled_from(["aws:cloudtrail", "linux:auth"])), when, raw)
    row.update(columns)
    row["timestamp_desc"] = draw(hostile_text(40))
    row["evidence_id"] = draw(hostile_text(40))
    row["event_id"] = f"{draw(hostile_text(40))}#{n}"
    return row


@st.composite
def hostile_case(draw: st.DrawFn) -> dict[str, Any]:
    """Rows (maybe none), findings over some of them (hostile rule text, maybe thousands of
    event ids), and a summary.json whose problem lists carry attacker text too."""
    count = draw(st.integers(0, 12))
    rows = [draw(hostile_row(n)) for n in range(count)]
    findings = []
    for n in range(draw(st.integers(0, 3)) if rows else 0):
        chosen = draw(st.lists(st.sampled_from(rows), min_size=1, max_size=len(rows)))
        chosen = list({r["event_id"]: r for r in chosen}.values())
        extra_ids = [f"absent-{i}" for i in range(draw(st.sampled_from([0, 0, 3, 5000])))]
        findings.append(
            finding_for(
                chosen,
                n,
                title=draw(hostile_text()),
                level=draw(st.sampled_from(["critical", "high", "low", "<b>x</b>"])),
                description=draw(hostile_text()),
                falsepositives=[draw(hostile_text())],
                tags=["attack.defense-evasion", draw(hostile_text(40))],
                techniques=[draw(hostile_text(20))],
                rule_path=draw(hostile_text()),
                event_ids=[r["event_id"] for r in chosen] + extra_ids,
            )
        )
    problem = st.fixed_dictionaries(
        {
            "evidence_id": hostile_text(40),
            "path": hostile_text(),
            "kind": st.sampled_from(["incomplete", "missing", "unreadable", "not_regular"]),
            "reason": hostile_text(),
        }
    )
    conflict = st.fixed_dictionaries(
        {
            "event_id": hostile_text(40),
            "copies": st.integers(2, 5),
            "evidence_ids": st.lists(hostile_text(40), max_size=3),
            "paths": st.lists(hostile_text(), max_size=3),
            "differs_in": st.lists(hostile_text(40), max_size=3),
        }
    )
    summary: dict[str, Any] = {}
    if draw(st.booleans()):
        summary["evidence_problems"] = draw(st.lists(problem, max_size=4))
    if draw(st.booleans()):
        examples = draw(st.lists(conflict, max_size=3))
        summary["conflicting_copies"] = {"events": len(examples), "examples": examples}
    errors = draw(
        st.lists(
            st.fixed_dictionaries(
                {"evidence_id": hostile_text(40), "path": hostile_text(), "reason": hostile_text()}
            ),
            max_size=4,
        )
    )
    return {"rows": rows, "findings": findings, "summary": summary, "errors": errors}


def shown_rows_bound(rows: list[dict[str, Any]], findings: list[dict[str, Any]]) -> int:
    """The size bound this module states for report.json (see the module docstring)."""
    largest = max((len(json.dumps(r, default=str)) for r in rows), default=0)
    per_finding = min(len(rows), EVENTS_PER_FINDING + CONTEXT_EVENTS) * largest * ROW_FACTOR
    return REPORT_JSON_BASE + len(findings) * per_finding


DANGEROUS_TAGS = {"script", "img", "iframe", "object", "embed", "base", "form", "link", "meta"}


def assert_html_inert(html: str) -> None:
    """No element, attribute or URL in the page came from the evidence."""
    assert "<script" not in html.lower()
    page = parse_html(html)
    allowed_meta = {"charset", "http-equiv", "content", "name"}
    for element in page.elements:
        if element.tag == "meta":
            assert {name for name, _ in element.attrs} <= allowed_meta, element.attrs
            continue
        assert element.tag not in DANGEROUS_TAGS, element.tag
        for name, value in element.attrs:
            assert not name.startswith("on"), (element.tag, name)
            if name in ("href", "src", "xlink:href", "action", "style"):
                text = (value or "").strip().lower()
                assert text.startswith("#") or name == "style", (element.tag, name, value)
                assert "url(" not in text and "javascript:" not in text, (element.tag, value)
    assert not BAD_CHARS.findall(html), sorted(set(map(ascii, BAD_CHARS.findall(html))))
    assert not BAD_CHARS.findall(unescape(html))


def assert_markdown_inert(md: str) -> None:
    from markdown_it import MarkdownIt

    for rows in table_rows(md):
        header = unescaped_pipes(rows[0])
        for row in rows[1:]:
            assert unescaped_pipes(row) == header, row[:300]
    assert not BAD_CHARS.findall(md)
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    stack = list(tokens)
    while stack:
        token = stack.pop()
        stack.extend(token.children or [])
        assert token.type not in ("html_inline", "html_block", "image"), token
        if token.type == "link_open":
            assert str(token.attrGet("href") or "").startswith("#"), token


def assert_report_holds(case: Path, result: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Every invariant of a hostile case's report; returns report.json."""
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    size = (case / "report/report.json").stat().st_size
    assert size <= shown_rows_bound(spec["rows"], spec["findings"]), size
    texts = raw_reports(case)
    assert_html_inert(texts["html"])
    assert_markdown_inert(texts["md"])
    doc = json.loads(texts["json"])
    chart = doc["timeline"]["chart"]
    assert len(chart["buckets"]) <= CHART_MAX_BUCKETS
    charted = sum(sum(b["counts"].values()) for b in chart["buckets"])
    not_charted = sum(chart["not_charted"].values())
    assert charted + not_charted == doc["timeline"]["events"] == len(spec["rows"])
    for finding in doc["findings"]:
        assert len(finding["event_ids"]) <= EVENT_IDS_LISTED
        assert len(finding["event_ids"]) + finding["event_ids_not_listed"] == finding["count"]
    return doc


# -- generated hostile cases ------------------------------------------------------------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(hostile_case())
def test_any_hostile_case_gives_a_small_inert_report(
    tmp_path_factory: pytest.TempPathFactory, spec: dict[str, Any]
) -> None:
    case = build_case(
        tmp_path_factory.mktemp("hostile"),
        spec["rows"],
        spec["findings"],
        spec["summary"],
        spec["errors"],
    )
    doc = assert_report_holds(case, run_report(case), spec)
    problems = spec["summary"].get("evidence_problems") or []
    assert doc["evidence_incomplete"] is bool(problems)
    assert doc["evidence_problems"]["count"] == len(problems)
    assert doc["parse_errors"]["count"] == len(spec["errors"])
    suspicious = doc["suspicious_times"]
    assert suspicious["cloudtrail_before"] == "2006-01-01T00:00:00.000000Z"  # the timeline's rule
    assert suspicious["other_before"] == "1980-01-01T00:00:00.000000Z"
    after = datetime.fromisoformat(suspicious["after"].replace("Z", "+00:00"))
    assert after > datetime.now(UTC)

    def implausible(row: dict[str, Any]) -> bool:
        year = 2006 if row["source"] == "cloudtrail" else 1980
        return row["timestamp"] < datetime(year, 1, 1, tzinfo=UTC) or row["timestamp"] > after

    implausible_rows = sum(map(implausible, spec["rows"]))
    assert suspicious["rows"] == implausible_rows
    kinds = {w["kind"] for w in doc["warnings"]}
    assert ("evidence_incomplete" in kinds) is bool(problems)
    assert ("implausible_times" in kinds) is bool(implausible_rows)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(FIRST_SECONDS, LAST_SECONDS, allow_nan=False),
    st.floats(FIRST_SECONDS, LAST_SECONDS, allow_nan=False),
)
def test_chart_buckets_are_bounded_for_any_span(a: float, b: float) -> None:
    t0, t1 = min(a, b), max(a, b)
    step = _bucket_seconds(t0, t1)
    origin = (t0 // step) * step
    assert int((t1 - origin) // step) + 1 <= CHART_MAX_BUCKETS


# -- item 5: extreme times through the real pipeline ------------------------------------


def capture_and_analyze(root: Path, events: list[dict[str, Any]]) -> Path:
    logs = root / "logs"
    logs.mkdir()
    (logs / "trail.json.gz").write_bytes(records_gz(events))
    case = root / "case"
    result = cloudir("capture", "files", "--case", str(case), str(logs))
    assert result.code == 0, result.stderr
    result = cloudir("analyze", "--case", str(case), "--fail-on", "critical")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    return case


def test_year_1_and_year_9999_are_reported_as_suspicious(tmp_path: Path) -> None:
    """Failed before: `report` exited 3 with "year 0 is out of range"."""
    stop = {"eventSource": "cloudtrail.amazonaws.com", "requestParameters": {"name": "main"}}
    events = [
        ct_event("0001-01-01T00:00:00Z", "StopLogging", **stop),
        ct_event("9999-12-31T23:59:59Z", "StopLogging", **stop),
        ct_event("2026-03-01T10:00:00Z", "StopLogging", **stop),
        ct_event("2026-03-01T10:05:00Z", "ListBuckets"),
    ]
    case = capture_and_analyze(tmp_path, events)
    doc = json.loads((case / "report/report.json").read_text())
    suspicious = doc["suspicious_times"]
    assert suspicious["rows"] == 2
    assert suspicious["earliest"].startswith("0001-01-01T00:00:00")
    assert suspicious["latest"].startswith("9999-12-31T23:59:59")
    assert {e["event_id"] for e in suspicious["examples"]} == {
        events[0]["eventID"],
        events[1]["eventID"],
    }
    [finding] = [f for f in doc["findings"] if f["title"] == "CloudTrail Logging Stopped"]
    assert finding["first_seen"] == "0001-01-01T00:00:00.000000Z"  # detect wrote "1-01-01"
    assert finding["last_seen"].startswith("9999-12-31T23:59:59")
    chart = doc["timeline"]["chart"]
    assert chart["not_charted"] == {"implausible_time": 2, "no_time": 0}
    assert sum(sum(b["counts"].values()) for b in chart["buckets"]) == 2
    assert chart["bucket_seconds"] == 60 and len(chart["buckets"]) <= 10  # the real 5 minutes
    assert "implausible_times" in {w["kind"] for w in doc["warnings"]}
    html = unescape((case / "report/report.html").read_text())
    md = (case / "report/report.md").read_text()
    for text in (html, md):
        assert "Suspicious times" in text
        assert "0001-01-01 00:00:00 UTC" in text
        assert "9999-12-31 23:59:59 UTC" in text
    assert html.index('id="warnings"') < html.index('id="summary"')
    assert md.index("## Read this first") < md.index("## Summary")


def test_a_span_from_1970_to_9000_keeps_report_json_small(tmp_path: Path) -> None:
    """Failed before: three events made a 7 MB report.json (one bar per 30 days)."""
    events = [
        ct_event("1970-01-01T00:00:00Z", "ListBuckets"),
        ct_event("2026-03-01T10:00:00Z", "ListBuckets"),
        ct_event("9000-01-01T00:00:00Z", "ListBuckets"),
    ]
    case = capture_and_analyze(tmp_path, events)
    assert (case / "report/report.json").stat().st_size < 64 * 1024
    doc = json.loads((case / "report/report.json").read_text())
    assert len(doc["timeline"]["chart"]["buckets"]) <= CHART_MAX_BUCKETS
    assert doc["suspicious_times"]["rows"] == 2


def test_when_every_time_is_implausible_the_chart_spans_them_in_bounded_bars(
    tmp_path: Path,
) -> None:
    rows = [
        timeline_row("aws:cloudtrail", moment, {"n": n})
        for n, moment in enumerate([EARLIEST, datetime(1500, 6, 1, tzinfo=UTC), LATEST])
    ]
    case = build_case(tmp_path, rows)
    assert_report_holds(case, run_report(case), {"rows": rows, "findings": [{}]})
    doc = json.loads((case / "report/report.json").read_text())
    chart = doc["timeline"]["chart"]
    assert chart["not_charted"]["implausible_time"] == 0
    assert sum(sum(b["counts"].values()) for b in chart["buckets"]) == 3
    assert chart["buckets"][0]["start"] == "0001-01-01T00:00:00.000000Z"  # clamped, not year 0


def test_the_timeline_s_own_implausible_count_and_bounds_are_used(tmp_path: Path) -> None:
    """summary.json `implausible_times` wins over the report's count; the chart leaves out
    the 2005 CloudTrail row by the timeline's rule (CloudTrail before 2006)."""
    rows = [
        timeline_row("aws:cloudtrail", "2026-03-01T10:00:00Z", {"n": 1}),
        timeline_row("aws:cloudtrail", "2005-03-01T10:00:00Z", {"n": 2}),
    ]
    given_times = {
        "rows": 1,
        "earliest": "2005-03-01T10:00:00Z",
        "latest": "2005-03-01T10:00:00Z",
        "examples": [{"event_id": rows[1]["event_id"], "timestamp": "2005-03-01T10:00:00Z"}],
    }
    case = build_case(tmp_path, rows, summary={"implausible_times": given_times})
    assert run_report(case).exit_code == 0
    doc = json.loads((case / "report/report.json").read_text())
    suspicious = doc["suspicious_times"]
    assert suspicious["rows"] == 1 and suspicious["counted_by"] == "timeline"
    assert suspicious["examples"] == given_times["examples"]
    assert doc["timeline"]["chart"]["not_charted"]["implausible_time"] == 1


# -- item 3, 6: what the timeline says about the evidence, at the top -------------------

PROBLEMS = [
    {"evidence_id": "cloudtrail-a", "path": "evidence/cloudtrail-a", "kind": "incomplete",
     "reason": "its last capture did not complete"},
    {"evidence_id": "cloudtrail-a", "path": "evidence/cloudtrail-a/files/x<script>.json.gz",
     "kind": "missing", "reason": "recorded in custody.jsonl but not on disk"},
    {"evidence_id": "ebs-snap", "path": "evidence/ebs-snap/image.raw", "kind": "unreadable",
     "reason": "Permission denied"},
]  # fmt: skip
CONFLICTS = {
    "events": 1,
    "examples": [
        {
            "event_id": "5f0d6a4e-0000-4000-8000-00000000cafe",
            "copies": 2,
            "evidence_ids": ["cloudtrail-a", "cloudtrail-b"],
            "paths": [
                "evidence/cloudtrail-a/files/1.json.gz",
                "evidence/cloudtrail-b/files/2.json",
            ],
            "differs_in": ["sourceIPAddress", "requestParameters"],
        }
    ],
}


@pytest.fixture(scope="module")
def problem_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [timeline_row("aws:cloudtrail", "2026-03-01T10:00:00Z", {"n": 1}, user="alice")]
    case = build_case(
        tmp_path_factory.mktemp("problems"),
        rows,
        summary={"evidence_problems": PROBLEMS, "conflicting_copies": CONFLICTS},
    )
    result = run_report(case)
    assert result.exit_code == 0, result.output
    return case


def test_incomplete_evidence_is_said_first_in_every_format(problem_case: Path) -> None:
    """Failed before: the report said nothing of summary.json's evidence_problems."""
    doc = json.loads((problem_case / "report/report.json").read_text())
    assert list(doc).index("evidence_incomplete") < list(doc).index("summary")
    assert doc["evidence_incomplete"] is True
    assert doc["evidence_problems"]["items"] == PROBLEMS
    assert doc["evidence_problems"]["by_kind"] == {"incomplete": 1, "missing": 1, "unreadable": 1}
    assert doc["warnings"][0]["kind"] == "evidence_incomplete"
    html = raw_reports(problem_case)["html"]
    page = unescape(html)
    warnings_at = page.index('id="warnings"')
    assert warnings_at < page.index('id="summary"')
    top = page[warnings_at : page.index('id="summary"')]
    assert "EVIDENCE INCOMPLETE: 3 problems" in top
    for problem in PROBLEMS:
        assert problem["path"] in top and problem["reason"] in top and problem["kind"] in top
    assert "x&lt;script&gt;.json.gz" in html  # listed, escaped
    md = report_files(problem_case)["md"]
    top_md = md[: md.index("## Summary")]
    assert "EVIDENCE INCOMPLETE: 3 problems" in top_md
    for problem in PROBLEMS:
        assert problem["path"] in top_md and problem["reason"] in top_md


def test_disagreeing_copies_are_a_section_and_a_warning(problem_case: Path) -> None:
    """Failed before: summary.json's conflicting_copies were not in the report."""
    doc = json.loads((problem_case / "report/report.json").read_text())
    assert doc["conflicting_copies"] == CONFLICTS
    assert "conflicting_copies" in {w["kind"] for w in doc["warnings"]}
    texts = report_files(problem_case)
    for fmt in ("html", "md"):
        text = texts[fmt]
        assert "Disagreeing copies" in text
        assert "5f0d6a4e-0000-4000-8000-00000000cafe" in text
        assert "sourceIPAddress" in text and "tampering" in text


def test_without_the_keys_no_warning_and_a_complete_verdict(tmp_path: Path) -> None:
    rows = [timeline_row("aws:cloudtrail", "2026-03-01T10:00:00Z", {"n": 1})]
    case = build_case(tmp_path, rows)
    assert run_report(case).exit_code == 0
    doc = json.loads((case / "report/report.json").read_text())
    assert doc["evidence_incomplete"] is False
    assert doc["warnings"] == []
    assert doc["conflicting_copies"] == {"events": 0, "examples": []}
    assert 'id="warnings"' not in raw_reports(case)["html"]


# -- item 15: every evidence file bad -----------------------------------------------------


def test_a_case_where_every_file_is_bad_reports_its_parse_errors(tmp_path: Path) -> None:
    """Failed before: no timeline rows, so `report` stopped ("no findings yet") and
    nothing said why each file was refused."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.json").write_text("{not json\n")
    (logs / "b<script>.json.gz").write_bytes(b"garbage")
    (logs / "c.json").write_text('{"Records": [1, 2')
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(logs)).code == 0
    cloudir("timeline", "--case", str(case))  # its exit code is the timeline's business
    result = cloudir("report", "--case", str(case))
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    doc = json.loads((case / "report/report.json").read_text())
    errors = (case / "timeline/errors.jsonl").read_text().splitlines()
    assert doc["parse_errors"]["count"] == len(errors) >= 3
    assert doc["timeline"]["events"] == 0
    assert doc["warnings"][0]["kind"] in ("evidence_incomplete", "nothing_read")
    assert "nothing_read" in {w["kind"] for w in doc["warnings"]}
    assert doc["parse_errors"]["items"] == [json.loads(line) for line in errors]
    texts = report_files(case)
    for error in doc["parse_errors"]["items"]:  # capture stored b<script> as b_script_...
        for fmt in ("html", "md"):
            assert error["path"] in texts[fmt], (fmt, error)
            assert error["reason"] in texts[fmt], (fmt, error)
    assert "NO EVENTS COULD BE READ" in texts["html"] and "NO EVENTS COULD BE READ" in texts["md"]
    assert_html_inert(raw_reports(case)["html"])
    assert_markdown_inert(raw_reports(case)["md"])


def test_many_parse_errors_are_counted_and_the_list_is_bounded(tmp_path: Path) -> None:
    rows = [timeline_row("aws:cloudtrail", "2026-03-01T10:00:00Z", {"n": 1})]
    errors = [
        {"evidence_id": "e", "path": f"evidence/e/{n}<script>.json", "line": n,
         "reason": "<img src=x onerror=alert(1)>|" + "x" * 5000}
        for n in range(5000)
    ]  # fmt: skip
    case = build_case(tmp_path, rows, errors=errors)
    assert run_report(case).exit_code == 0
    doc = json.loads((case / "report/report.json").read_text())
    assert doc["parse_errors"]["count"] == 5000
    assert len(doc["parse_errors"]["items"]) == 200
    assert doc["parse_errors"]["by_evidence"] == {"e": 5000}
    assert (case / "report/report.json").stat().st_size < 1024 * 1024
    texts = raw_reports(case)
    assert "4,900 more parse errors" in texts["md"]
    assert_html_inert(texts["html"])
    assert_markdown_inert(texts["md"])
    assert "evidence/e/199&lt;script&gt;.json" in texts["html"]


# -- huge counts ---------------------------------------------------------------------------


def test_thousands_of_users_and_event_ids_keep_the_report_small(tmp_path: Path) -> None:
    rows = [
        timeline_row("aws:cloudtrail", f"2026-03-01T10:{n % 60:02d}:{n % 59:02d}Z",
                     {"n": n}, user=f"arn:aws:iam::111111111111:user/u{n:05d}",
                     src_ip=f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        for n in range(3000)
    ]  # fmt: skip
    finding = finding_for(rows)
    finding["event_ids"] += [f"elsewhere-{n}" for n in range(200_000)]
    finding["count"] = len(finding["event_ids"])
    case = build_case(tmp_path, rows, findings=[finding])
    doc = assert_report_holds(case, run_report(case), {"rows": rows, "findings": [finding]})
    [reported] = doc["findings"]
    assert reported["count"] == 203_000
    assert reported["event_ids_not_listed"] == 203_000 - EVENT_IDS_LISTED
    assert len(reported["entities"]["principals"]) == ENTITY_VALUES_LISTED
    assert reported["entities_not_listed"]["principals"] == 3000 - ENTITY_VALUES_LISTED
    assert (case / "report/report.json").stat().st_size < 1024 * 1024
    assert "at least" in doc["summary"]["headline"] or "3000 principals" in doc["summary"][
        "headline"
    ].replace(",", "")
