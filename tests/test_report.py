"""`cloudir report` and `cloudir analyze`: what the report says is what the case holds.

A report is what leaves the responder's laptop: it is read by managers, pasted into
tickets and forwarded to people who never open the case. So these tests check three
things against real cases built through the CLI: every number and hash in it agrees
with the case (a wrong count or hash in a handover is worse than none), no secret an
event carried reaches it, and attacker-controlled text in events cannot run, load,
restyle or reshape anything in the HTML or Markdown renderings.
"""

from __future__ import annotations

import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cloudir.case import Case
from tests.conftest import cloudir, ct_event, query, records_gz

FORMATS = ("html", "md", "json")

# -- helpers -----------------------------------------------------------------------


def read_reports(folder: Path) -> dict[str, str]:
    """The three renderings as text, keyed by format."""
    return {fmt: (folder / f"report.{fmt}").read_text(encoding="utf-8") for fmt in FORMATS}


def analyze(case: Path, *extra: str) -> Any:
    """`cloudir analyze` as CI runs it; the exit code is the caller's to check."""
    return cloudir("analyze", "--case", str(case), *extra)


def capture(case: Path, *paths: Path) -> None:
    result = cloudir("capture", "files", "--case", str(case), *map(str, paths))
    assert result.code == 0, result.stderr


class Element:
    """One element of a parsed HTML page: its tag, attributes and all text inside it."""

    def __init__(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parts: list[str] = []
        self.plain_parts: list[str] = []  # text outside any <pre> (a raw-event view)

    @property
    def text(self) -> str:
        return " ".join(self.parts)  # cells apart: "Instances 30", not "Instances30"

    @property
    def plain_text(self) -> str:
        return " ".join(self.plain_parts)


class PageParser(HTMLParser):
    """Every element with its text (nested text counted in each ancestor), and raw data.

    Deliberately forgiving: the point is to see the page as a browser's tokenizer
    would, then look for things that must not be there (script, on* handlers, remote
    loads), not to validate the markup.
    """

    VOID: ClassVar[frozenset[str]] = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"}
        | {"source", "track", "wbr"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.stack: list[Element] = []
        self.style_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, attrs)
        self.elements.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        for n in range(len(self.stack) - 1, -1, -1):
            if self.stack[n].tag == tag:
                del self.stack[n:]
                break

    def handle_data(self, data: str) -> None:
        in_pre = False
        for element in reversed(self.stack):
            in_pre = in_pre or element.tag == "pre"
            element.parts.append(data)
            if not in_pre:
                element.plain_parts.append(data)
        if self.stack and self.stack[-1].tag == "style":
            self.style_text.append(data)


def parse_html(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


def time_forms(iso: str) -> list[str]:
    """A timestamp as a report may print it: ISO or with a space, to the second."""
    return [iso[:19], iso[:19].replace("T", " ")]


def has_count(text: str, count: int) -> bool:
    return re.search(rf"(?<![\d.,:-]){count}(?![\d.,:-])", text) is not None


def shows_finding(chunks: list[str], finding: dict[str, Any], titles: set[str]) -> bool:
    """Some chunk (row, section) names this finding alone with its count and first seen."""
    others = titles - {finding["title"]}
    for chunk in chunks:
        if finding["title"] not in chunk or any(t in chunk for t in others):
            continue
        if has_count(chunk, finding["count"]) and any(
            form in chunk for form in time_forms(finding["first_seen"])
        ):
            return True
    return False


def markdown_chunks(text: str) -> list[str]:
    """Lines and heading-delimited sections of a Markdown document."""
    sections = re.split(r"(?m)^(?=#{1,6} )", text)
    return text.splitlines() + sections


def table_rows(md: str) -> list[list[str]]:
    """Markdown tables as lists of row lines (a table: consecutive lines starting with |)."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in md.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def unescaped_pipes(line: str) -> int:
    """Cell separators as GFM counts them: a pipe not preceded by a backslash."""
    return len(re.findall(r"(?<!\\)\|", line))


# -- a real case: the Stratus Red Team detonations, plus broken files ---------------


@pytest.fixture(scope="module")
def stratus(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stratus detonation logs and a few broken files, analyzed once for every test here.

    The broken files (a bad JSON line, a cut gzip) make the parse-error count non-zero,
    so the report is checked against a count that could be wrong.
    """
    root = tmp_path_factory.mktemp("report")
    case = root / "case"
    broken = root / "broken"
    broken.mkdir()
    (broken / "lines.jsonl").write_text(
        json.dumps(ct_event("2024-07-31T12:00:00Z")) + "\n{not json\n[1, 2\n"
    )
    whole = records_gz([ct_event(f"2024-07-31T11:{n:02d}:00Z") for n in range(50)])
    (broken / "cut.json.gz").write_bytes(whole[: len(whole) // 2])
    capture(case, corpus / "cloudtrail/stratus-red-team/detonation-logs")
    capture(case, broken)
    result = analyze(case, "--fail-on", "critical")
    assert result.code == 0, result.stderr
    return case


@pytest.fixture(scope="module")
def stratus_json(stratus: Path) -> dict[str, Any]:
    return json.loads((stratus / "report/report.json").read_text())


@pytest.fixture(scope="module")
def stratus_findings(stratus: Path) -> list[dict[str, Any]]:
    return json.loads((stratus / "findings/findings.json").read_text())["findings"]


def test_report_json_findings_are_the_case_findings(
    stratus_json: dict[str, Any], stratus_findings: list[dict[str, Any]]
) -> None:
    keys = ("rule_id", "title", "level", "count", "first_seen", "last_seen")
    assert len(stratus_findings) >= 30  # the Stratus corpus fires most shipped rules
    reported = sorted(tuple(f[k] for k in keys) for f in stratus_json["findings"])
    assert reported == sorted(tuple(f[k] for k in keys) for f in stratus_findings)
    for finding in stratus_json["findings"]:
        assert finding["count"] == len(finding["event_ids"])
        shown = {e["event_id"] for e in finding["events"]}
        assert shown <= set(finding["event_ids"])
        assert len(shown) + finding["events_not_shown"] == finding["count"]
    by_level = stratus_json["summary"]["findings_by_level"]
    for level, n in by_level.items():
        assert n == sum(1 for f in stratus_findings if f["level"] == level), level


def test_report_json_event_counts_are_the_timeline(
    stratus: Path, stratus_json: dict[str, Any]
) -> None:
    [total] = query(
        stratus,
        "SELECT count(*) AS n, strftime(min(timestamp), '%Y-%m-%dT%H:%M:%S') AS first, "
        "strftime(max(timestamp), '%Y-%m-%dT%H:%M:%S') AS last FROM timeline",
    )
    timeline = stratus_json["timeline"]
    assert timeline["events"] == stratus_json["summary"]["events"] == total["n"] > 300
    assert timeline["first"].startswith(total["first"])
    assert timeline["last"].startswith(total["last"])
    per_source = query(stratus, "SELECT source, count(*) AS n FROM timeline GROUP BY ALL")
    assert {r["source"]: r["n"] for r in per_source} == {
        r["source"]: r["events"] for r in timeline["by_source"]
    }
    charted = sum(n for b in timeline["chart"]["buckets"] for n in b["counts"].values())
    assert charted == total["n"]  # every event lands in exactly one bar


def test_report_json_evidence_and_custody_are_what_custody_recorded(
    stratus: Path, stratus_json: dict[str, Any]
) -> None:
    case = Case.open(stratus)
    recorded = {path: (r.sha256, r.bytes) for path, r in case.recorded_files().items()}
    reported = {
        f["path"]: (f["sha256"], f["bytes"]) for item in stratus_json["evidence"] for f in item
        ["files"]
    }  # fmt: skip
    assert reported == recorded
    assert len(stratus_json["evidence"]) == len(case.evidence_ids()) == 2
    custody = stratus_json["custody"]
    assert custody["head_sha256"] == case.custody_head()
    assert custody["entries"] == len(list(case.custody_entries()))
    assert custody["chain_errors"] == []


def test_report_json_parse_errors_are_the_timeline_errors(
    stratus: Path, stratus_json: dict[str, Any]
) -> None:
    lines = (stratus / "timeline/errors.jsonl").read_text().splitlines()
    assert len(lines) >= 2  # the bad JSON lines and the cut gzip
    assert stratus_json["parse_errors"]["count"] == len(lines)
    assert stratus_json["parse_errors"]["items"] == [json.loads(line) for line in lines]


def test_attack_overview_names_every_tactic_the_findings_are_tagged_with(
    stratus_json: dict[str, Any],
) -> None:
    """Shipped rules tag tactics as Sigma writes them (attack.defense-evasion, hyphens)."""
    for finding in stratus_json["findings"]:
        tagged = {
            t.split(".", 1)[1].replace("-", "_")
            for t in finding["tags"]
            if t.startswith("attack.") and not re.fullmatch(r"attack\.t\d+(\.\d+)?", t)
        }
        assert tagged <= set(finding["tactics"]), finding["title"]
    overview = {a["tactic"]: {f["title"] for f in a["findings"]} for a in stratus_json["attack"]}
    for tactic in ("defense_evasion", "credential_access", "privilege_escalation"):
        assert overview.get(tactic), f"no {tactic} in the ATT&CK overview"


def test_html_and_markdown_show_findings_and_evidence_hashes(
    stratus: Path, stratus_json: dict[str, Any], stratus_findings: list[dict[str, Any]]
) -> None:
    reports = read_reports(stratus / "report")
    titles = {f["title"] for f in stratus_findings}
    page = parse_html(reports["html"])
    html_chunks = [e.text for e in page.elements]
    md_chunks = markdown_chunks(reports["md"])
    for finding in stratus_findings:
        assert shows_finding(html_chunks, finding, titles), f"html: {finding['title']}"
        assert shows_finding(md_chunks, finding, titles), f"md: {finding['title']}"
    html_text = unescape(reports["html"])
    for item in stratus_json["evidence"]:
        for f in item["files"]:
            assert f["sha256"] in html_text, f["path"]
            assert f["sha256"] in reports["md"], f["path"]
    head = Case.open(stratus).custody_head()
    assert head in html_text
    assert head in reports["md"]


# -- exit codes and options -----------------------------------------------------------


@pytest.fixture(scope="module")
def small_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One high finding (StopLogging) among ordinary calls: a quick case."""
    folder = tmp_path_factory.mktemp("small-logs")
    events = [
        ct_event("2024-07-31T10:00:00Z", "StopLogging", eventSource="cloudtrail.amazonaws.com",
                 requestParameters={"name": "main"}),
        ct_event("2024-07-31T10:05:00Z", "ListBuckets"),
    ]  # fmt: skip
    (folder / "events.json.gz").write_bytes(records_gz(events))
    return folder


def new_case(small_logs: Path, tmp_path: Path) -> Path:
    case = tmp_path / "case"
    capture(case, small_logs)
    return case


def test_analyze_exits_1_at_fail_on_and_0_below(small_logs: Path, tmp_path: Path) -> None:
    case = new_case(small_logs, tmp_path)
    high = analyze(case)
    assert high.code == 1, high.stderr  # default --fail-on high, a high finding
    assert "CloudTrail Logging Stopped" in high.stdout
    assert sorted(p.name for p in (case / "report").iterdir()) == [
        "report.html", "report.json", "report.md",
    ]  # fmt: skip
    assert analyze(case, "--fail-on", "critical").code == 0
    assert analyze(case, "--fail-on", "medium").code == 1
    assert analyze(case, "--fail-on", "nonsense").code == 2


def test_analyze_format_json_writes_only_json(small_logs: Path, tmp_path: Path) -> None:
    case = new_case(small_logs, tmp_path)
    result = analyze(case, "--format", "json", "--fail-on", "critical", "--json")
    assert result.code == 0, result.stderr
    assert [p.name for p in (case / "report").iterdir()] == ["report.json"]
    assert result.json() == {"json": str(case / "report/report.json")}
    doc = json.loads((case / "report/report.json").read_text())
    assert [f["title"] for f in doc["findings"]] == ["CloudTrail Logging Stopped"]


def test_out_writes_elsewhere_and_leaves_the_case_report_folder_alone(
    small_logs: Path, tmp_path: Path
) -> None:
    case = new_case(small_logs, tmp_path)
    out = tmp_path / "handover" / "nested"
    result = analyze(case, "--out", str(out), "--fail-on", "critical")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert not (case / "report").exists()
    assert str(out / "report.json") in result.stdout
    again = tmp_path / "again"
    result = cloudir("report", "--case", str(case), "--format", "md", "--out", str(again))
    assert result.code == 0, result.stderr
    assert [p.name for p in again.iterdir()] == ["report.md"]


def test_unknown_format_is_a_usage_error(small_logs: Path, tmp_path: Path) -> None:
    case = new_case(small_logs, tmp_path)
    for args in (["analyze", "--format", "pdf"], ["report", "--format", "html,pdf"]):
        result = cloudir(*args[:1], "--case", str(case), *args[1:])
        assert result.code == 2, (args, result.stderr)
        assert "pdf" in result.stderr
    assert not (case / "report").exists()


def test_report_without_findings_names_cloudir_detect(small_logs: Path, tmp_path: Path) -> None:
    case = new_case(small_logs, tmp_path)
    assert cloudir("timeline", "--case", str(case)).code == 0
    result = cloudir("report", "--case", str(case))
    assert result.code == 2
    assert "cloudir detect" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (case / "report").exists()


# -- secrets ----------------------------------------------------------------------------

ACCESS_KEY_ID = "AKIAREPORTTESTKEY123"
NEW_KEY_ID = "AKIANEWBACKDOORKEY99"
SECRETS = {
    "secret_access_key": "wJalrXUtnFEMIK7MDENGbPxRfiCYSECRETKEY001",
    "session_token": "FwoGZXIvYXdzEXAMPLEsessionTOKENvalue0123456789abcdefSECRET002",
    "password": "Hunter2-Correct-Horse-SECRET003",
    "user_data_key": "UserDataSecretKeyValueSECRET004xyz",
    "error_token": "IQoJb3JpZ2luX2VjEXAMPLEerrorTOKEN5678SECRET005",
    "new_secret_key": "NEWbackdoorSecretAccessKeySECRET006abcd",
}
PEM_BODY = [
    "MIIEowIBAAKCAQEAreportTestPrivateKeyBodyLineOneSECRET007abcdefghij",
    "Zm9vYmFyYmF6cXV4UEVNbGluZVR3b1NFQ1JFVDAwOGFiY2RlZmdoaWprbG1ub3Bx",
]
PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END RSA PRIVATE KEY-----"


def secret_events() -> list[dict[str, Any]]:
    """Events that each fire a shipped rule while carrying a live-looking secret."""
    identity = {
        "type": "IAMUser", "principalId": "AIDAREPORT", "accountId": "111111111111",
        "arn": "arn:aws:iam::111111111111:user/mallory", "userName": "mallory",
        "accessKeyId": ACCESS_KEY_ID,
    }  # fmt: skip
    when = "2024-08-01T09:{:02d}:00Z"
    return [
        ct_event(when.format(0), "GetFederationToken", eventSource="sts.amazonaws.com",
                 userIdentity=identity, requestParameters={"name": "ops"},
                 responseElements={"credentials": {
                     "accessKeyId": "ASIAFEDERATEDKEY0001",
                     "secretAccessKey": SECRETS["secret_access_key"],
                     "sessionToken": SECRETS["session_token"],
                     "expiration": "Aug 2, 2024, 9:00:00 AM"}}),
        ct_event(when.format(1), "CreateLoginProfile", eventSource="iam.amazonaws.com",
                 userIdentity=identity,
                 requestParameters={"userName": "bob", "password": SECRETS["password"],
                                    "passwordResetRequired": False}),
        ct_event(when.format(2), "RunInstances", eventSource="ec2.amazonaws.com",
                 userIdentity=identity,
                 requestParameters={"instanceType": "t3.micro", "userData": (
                     "#!/bin/bash\ncat > /root/.aws/credentials <<EOF\n[default]\n"
                     f"aws_access_key_id={ACCESS_KEY_ID}\n"
                     f"aws_secret_access_key={SECRETS['user_data_key']}\nEOF\n")}),
        ct_event(when.format(3), "CreateAccessKey", eventSource="iam.amazonaws.com",
                 userIdentity=identity, requestParameters={"userName": "bob"},
                 responseElements={"accessKey": {
                     "userName": "bob", "accessKeyId": NEW_KEY_ID, "status": "Active",
                     "secretAccessKey": SECRETS["new_secret_key"]}}),
        ct_event(when.format(4), "GetParameters", eventSource="ssm.amazonaws.com",
                 userIdentity=identity,
                 requestParameters={"names": ["/prod/deploy-key"], "withDecryption": True},
                 responseElements={"parameters": [{"name": "/prod/deploy-key", "value": PEM}]}),
        ct_event(when.format(5), "StopLogging", eventSource="cloudtrail.amazonaws.com",
                 userIdentity=identity, requestParameters={"name": "main"},
                 errorCode="AccessDenied",
                 errorMessage=f"denied for token {SECRETS['error_token']} in request"),
    ]  # fmt: skip


SECRET_EVENTS = secret_events()  # built once: ct_event gives each call fresh event ids


@pytest.fixture(scope="module")
def secrets_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secrets")
    logs = root / "logs"
    logs.mkdir()
    (logs / "secrets.json.gz").write_bytes(records_gz(SECRET_EVENTS))
    case = root / "case"
    capture(case, logs)
    result = analyze(case, "--fail-on", "critical")
    assert result.code == 0, result.stderr
    return case


def secret_needles() -> dict[str, str]:
    return {**SECRETS, **{f"pem_line_{n}": line for n, line in enumerate(PEM_BODY)}}


def test_the_secrets_are_in_the_evidence_and_their_events_are_reported(
    secrets_case: Path,
) -> None:
    """The control: without masking these secrets would be in the report."""
    raw = "\n".join(r["raw"] for r in query(secrets_case, "SELECT raw FROM timeline"))
    for name, needle in secret_needles().items():
        assert needle in raw, name
    doc = json.loads((secrets_case / "report/report.json").read_text())
    reported = {e["event_id"] for f in doc["findings"] for e in f["events"]}
    assert {e["eventID"] for e in SECRET_EVENTS} <= reported


def test_no_secret_reaches_any_report_file(secrets_case: Path) -> None:
    for fmt in FORMATS:
        data = (secrets_case / f"report/report.{fmt}").read_bytes()
        for name, needle in secret_needles().items():
            assert needle.encode() not in data, f"{name} in report.{fmt}"
        assert b"PRIVATE KEY-----\n" + PEM_BODY[0][:16].encode() not in data


def test_access_key_ids_stay_visible(secrets_case: Path) -> None:
    """Key ids are what a responder deactivates: masking must not hide them."""
    reports = read_reports(secrets_case / "report")
    for fmt, text in reports.items():
        assert ACCESS_KEY_ID in text, fmt
    doc = json.loads(reports["json"])
    keys = [row["value"] for row in doc["entities"]["access_keys"]]
    assert ACCESS_KEY_ID in keys
    assert NEW_KEY_ID in reports["json"]


# -- hostile input ---------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
ATTR_BREAK = '"><img src=x onerror=alert(1)>'
MD_LINK = "[click](javascript:alert(1))"
MD_IMAGE = "![x](http://evil.example/x.png)"
MD_TABLE = "| a | b |"
CONTROL = "\x1b[31m\u202e\u200b\x00"
LONG = "W" * 20_000
HOSTILE = f"{SCRIPT}\n{ATTR_BREAK}\n{MD_LINK}\n{MD_IMAGE}\n{MD_TABLE}\n{CONTROL}end"
# C0/C1 controls (but tab and newlines), zero-width and bidi override/isolate characters
BAD_CHARS = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]"
)

HOSTILE_RULE = """title: Hostile {title}
id: 00000000-0000-4000-8000-000000000666
status: experimental
description: "{description}"
references:
    - "javascript:alert(2)"
logsource: {{product: aws, service: cloudtrail}}
detection:
    selection:
        eventName: StopLogging
    condition: selection
level: high
"""


def hostile_events() -> list[dict[str, Any]]:
    """StopLogging calls (a shipped high rule) with markup in every field a report shows."""
    events = []
    for n, payload in enumerate([HOSTILE, SCRIPT, ATTR_BREAK, MD_LINK, MD_IMAGE, MD_TABLE, LONG]):
        identity = {
            "type": "IAMUser", "principalId": f"AIDAHOSTILE{n}", "accountId": "111111111111",
            "arn": f"arn:aws:iam::111111111111:user/{payload}", "userName": payload,
            "accessKeyId": f"AKIAHOSTILE{n:09d}",
        }  # fmt: skip
        events.append(
            ct_event(
                f"2024-08-02T10:{n:02d}:00Z",
                "StopLogging",
                eventSource="cloudtrail.amazonaws.com",
                userIdentity=identity,
                userAgent=payload + LONG if n == 0 else payload,
                sourceIPAddress="198.51.100.66",
                requestParameters={"name": payload, "bucketName": payload},
                errorCode="AccessDenied",
                errorMessage=f"{payload} {CONTROL} {LONG}",
            )
        )
    return events


@pytest.fixture(scope="module")
def hostile_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hostile events, plus a rule whose own title and description carry markup."""
    root = tmp_path_factory.mktemp("hostile")
    logs = root / "logs"
    logs.mkdir()
    (logs / "hostile.json.gz").write_bytes(records_gz(hostile_events()))
    rules = root / "rules"
    rules.mkdir()
    (rules / "hostile.yml").write_text(
        HOSTILE_RULE.format(
            title=f"{SCRIPT} {MD_TABLE} {MD_LINK}",
            description=f"{ATTR_BREAK} {MD_IMAGE} \\u202e \\x1b[31m".replace('"', '\\"'),
        )
    )
    case = root / "case"
    capture(case, logs)
    result = analyze(case, "--rules", str(rules), "--fail-on", "critical")
    assert result.code == 0, result.stderr
    return case


@pytest.fixture(scope="module")
def hostile_reports(hostile_case: Path) -> dict[str, str]:
    return read_reports(hostile_case / "report")


def test_hostile_events_are_in_the_report(hostile_case: Path, hostile_reports: dict) -> None:
    """The control: the payloads reached the findings, so their absence below means escaping."""
    doc = json.loads(hostile_reports["json"])
    titles = {f["title"] for f in doc["findings"]}
    assert "CloudTrail Logging Stopped" in titles
    assert any(t.startswith("Hostile <script>") for t in titles)
    raw = json.dumps([e["raw"] for f in doc["findings"] for e in f["events"]])
    for payload in (SCRIPT, ATTR_BREAK, MD_LINK, MD_IMAGE, MD_TABLE):
        assert json.dumps(payload)[1:-1] in raw


def test_html_runs_and_loads_nothing_from_the_evidence(hostile_reports: dict[str, str]) -> None:
    text = hostile_reports["html"]
    assert "<script" not in text.lower()
    assert "<img" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    page = parse_html(text)
    tags = {e.tag for e in page.elements}
    assert not tags & {"script", "img", "iframe", "object", "embed", "base", "form", "svg:script"}
    for element in page.elements:
        for name, value in element.attrs:
            assert not name.startswith("on"), (element.tag, name, value)
            value = (value or "").strip().lower()
            if name in ("href", "src", "srcset", "action", "formaction", "poster", "data",
                        "xlink:href", "background", "ping"):  # fmt: skip
                assert not value.startswith(("javascript:", "vbscript:", "data:text/html")), (
                    element.tag, name, value,
                )  # fmt: skip
                assert "evil.example" not in value, (element.tag, name, value)
                if name != "href" or element.tag not in ("a", "area"):
                    assert not re.match(r"(https?:)?//", value), (element.tag, name, value)
            if name == "style":
                assert "url(" not in value and "expression(" not in value, value
            if element.tag == "meta" and name == "http-equiv":
                assert value != "refresh"
    css = "".join(page.style_text).lower()
    assert "@import" not in css
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", css)


def test_html_and_markdown_carry_no_control_or_bidi_characters(
    hostile_reports: dict[str, str],
) -> None:
    for fmt in ("html", "md"):
        found = BAD_CHARS.findall(hostile_reports[fmt])
        assert not found, f"{fmt}: {sorted(set(map(ascii, found)))}"
    found = BAD_CHARS.findall(unescape(hostile_reports["html"]))
    assert not found, f"html entities decode to {sorted(set(map(ascii, found)))}"


def test_markdown_keeps_evidence_inert(hostile_reports: dict[str, str]) -> None:
    md = hostile_reports["md"]
    assert not re.search(r"(?<!\\)<(script|img)", md, re.I)  # \< is CommonMark's escape
    assert not re.search(r"(?<!\\)\]\((javascript:|http://evil\.example)", md)
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    stack = list(tokens)
    while stack:
        token = stack.pop()
        stack.extend(token.children or [])
        if token.type in ("html_inline", "html_block"):
            assert not re.search(r"<(script|img|iframe|a)\b|on\w+=", token.content, re.I), token
        if token.type in ("link_open", "image"):
            target = str(token.attrGet("href") or token.attrGet("src") or "")
            assert token.type != "image", target
            assert not target.lower().startswith("javascript:"), target
            assert "evil.example" not in target, target


def test_markdown_tables_keep_their_columns(hostile_reports: dict[str, str]) -> None:
    tables = table_rows(hostile_reports["md"])
    assert tables, "the report has no Markdown table"
    for rows in tables:
        header = unescaped_pipes(rows[0])
        for row in rows[1:]:
            assert unescaped_pipes(row) == header, row[:300]


def test_long_strings_are_capped_in_tables(hostile_reports: dict[str, str]) -> None:
    """Cells are capped; a raw event in a <pre> (the evidence as it is) may stay whole."""
    longest = "W" * 2000
    for rows in table_rows(hostile_reports["md"]):
        for row in rows:
            assert longest not in row, row[:200]
    page = parse_html(hostile_reports["html"])
    for element in page.elements:
        if element.tag in ("td", "th"):
            assert longest not in element.plain_text, element.plain_text[:200]


def _case_with_a_zip(tmp_path: Path) -> Path:
    """One CloudTrail file and a zip no parser opens, captured into a new case."""
    import zipfile

    from tests.conftest import ct_event, records_gz

    logs = tmp_path / "logs"
    logs.mkdir()
    stop = ct_event("2024-07-31T10:00:00Z", "StopLogging", eventSource="cloudtrail.amazonaws.com")
    (logs / "trail.json.gz").write_bytes(records_gz([stop]))
    with zipfile.ZipFile(logs / "more.zip", "w") as archive:
        archive.writestr("inner.json", "{}")
    case = tmp_path / "case"
    capture(case, logs)
    return case


def test_a_file_the_timeline_could_not_open_is_named_with_its_reason(tmp_path: Path) -> None:
    """A zip among the logs: the timeline skips it, the report says which and why."""
    case = _case_with_a_zip(tmp_path)
    result = analyze(case, "--fail-on", "critical")
    assert result.code == 0, result.stderr
    report = json.loads((case / "report/report.json").read_text())
    [unparsed] = report["parse_errors"]["unparsed_files"]
    assert unparsed["path"].endswith("more.zip")
    assert unparsed["reason"].startswith("zip archive")
    assert "more.zip" in (case / "report/report.html").read_text()


def test_evidence_no_parser_reads_is_not_called_unreadable(tmp_path: Path) -> None:
    """Files of a kind no parser reads (here a zip) are kept evidence that was not
    analysed: the report says so in those words, not that they "could not be read"."""
    case = _case_with_a_zip(tmp_path)
    assert analyze(case, "--fail-on", "critical").code == 0
    report = json.loads((case / "report/report.json").read_text())
    kinds = {w["kind"]: w["text"] for w in report["warnings"]}
    assert "parse_errors" not in kinds
    assert kinds["no_parser"].startswith("1 evidence file of a kind no timeline parser reads")
    assert report["parse_errors"]["by_kind"] == {"no_parser": 1}
