"""The report tells each principal's story and leads with the intruder's (issue 16, sections
2 and 4, report side).

The case is the issue's own: a leaked IAM user key (recon with denied calls, a
self-granted policy, a second access key) beside the account owner's busy root console
session and a Terraform role deleting a trail. Findings carry the triage fields detect
writes (docs/report.md: outcome, rule_level, level_note, actor, actor_detail, actors,
rank, suppressed; `suppressions` at the top), written straight into findings.json the way
tests/test_adversarial_report.py builds cases, then `cloudir report` runs in-process.
Each test reads all three renderings: what JSON says, HTML and Markdown must show.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloudir.report.mask import MASK
from cloudir.report.story import STEPS_LISTED as STEPS
from tests.test_adversarial_report import (
    ATTACKS,
    assert_html_inert,
    assert_markdown_inert,
    build_case,
    finding_for,
    raw_reports,
    report_files,
    run_report,
)
from tests.test_report import parse_html
from tests.timeline_rows import timeline_row

EVE = "arn:aws:iam::111111111111:user/eve"
ROOT = "arn:aws:iam::111111111111:root"
TERRAFORM = "arn:aws:iam::111111111111:role/terraform-apply"
LOWERED = "attempted: every matched call failed, level lowered from medium"


def row(when: str, user: str, action: str, outcome: str = "success", n: int = 0) -> dict:
    return timeline_row(
        "aws:cloudtrail",
        when,
        {"eventName": action, "n": n, "u": user},
        user=user,
        action=action,
        outcome=outcome,
        src_ip="203.0.113.9",
    )


def intrusion(with_triage: bool = True) -> tuple[list[dict], list[dict[str, Any]]]:
    """Timeline rows and findings: eve's three steps, root's big discovery burst, terraform."""
    root_burst = [row(f"2026-03-01T09:{m:02d}:00Z", ROOT, "ListRoles", n=m) for m in range(40)]
    recon = row("2026-03-01T10:00:00Z", EVE, "ListBuckets", "AccessDenied")
    grant = row("2026-03-01T10:05:00Z", EVE, "PutUserPolicy")
    key = row("2026-03-01T10:09:00Z", EVE, "CreateAccessKey")
    trail = row("2026-03-01T08:00:00Z", TERRAFORM, "DeleteTrail")
    triage: list[dict[str, Any]] = [
        # model order is detect's (severity), not the story's (time)
        dict(outcome="succeeded", actor="automation", actor_detail="terraform", rank=5),
        dict(outcome="succeeded", actor="cli-sdk", actor_detail="aws-cli", rank=1),
        dict(outcome="succeeded", actor="cli-sdk", actor_detail="boto3", rank=2),
        dict(outcome="succeeded", actor="human-console", actor_detail="console", rank=3),
        dict(
            outcome="attempted",
            rule_level="medium",
            level_note=LOWERED,
            actor="cli-sdk",
            actor_detail="aws-cli",
            rank=4,
            suppressed=3,
        ),
    ]
    base: list[dict[str, Any]] = [
        dict(title="CloudTrail trail deleted", level="critical", tags=["attack.defense-evasion"]),
        dict(
            title="Inline policy granted to oneself",
            level="high",
            tags=["attack.privilege-escalation", "attack.persistence", "attack.t1098"],
            techniques=["T1098"],
        ),
        dict(title="Access key created for oneself", level="medium", tags=["attack.persistence"]),
        dict(title="Discovery burst", level="medium", tags=["attack.discovery"]),
        dict(title="Denied reconnaissance", level="low", tags=["attack.discovery"]),
    ]
    if not with_triage:  # an older detect: the rule's level, no triage fields
        base[4]["level"] = "medium"
    matched = [[trail], [grant], [key], root_burst, [recon]]
    findings = [
        finding_for(rows, n, **base[n], **(triage[n] if with_triage else {}))
        for n, rows in enumerate(matched)
    ]
    return [trail, *root_burst, recon, grant, key], findings


SUPPRESSIONS = [
    {
        "filter_id": "6f9d2c1e-0000-4000-8000-000000000001",
        "title": "Terraform CI applies",
        "path": "suppress/terraform.yml",
        "rules": ["00000000-0000-4000-8000-000000000004"],
        "suppressed": 17,
        "event_ids_sample": ["ev-suppressed-1", "ev-suppressed-2"],
        "not_applied": [{"rule": "no_such_rule", "reason": "names no loaded rule"}],
    },
    {
        "filter_id": "6f9d2c1e-0000-4000-8000-000000000002",
        "title": "Quiet filter",
        "path": "suppress/quiet.yml",
        "rules": [],
        "suppressed": 0,
        "event_ids_sample": [],
        "not_applied": [],
    },
]


def make_case(root: Path, rows: list[dict], findings: list[dict], **top: Any) -> Path:
    case = build_case(root, rows, findings)
    path = case / "findings/findings.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **top}))
    result = run_report(case)
    assert result.exit_code == 0, result.output
    return case


@pytest.fixture(scope="module")
def triaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows, findings = intrusion()
    return make_case(tmp_path_factory.mktemp("story"), rows, findings, suppressions=SUPPRESSIONS)


@pytest.fixture(scope="module")
def reports(triaged: Path) -> dict[str, str]:
    return raw_reports(triaged)


@pytest.fixture(scope="module")
def doc(reports: dict[str, str]) -> dict[str, Any]:
    return json.loads(reports["json"])


def html_section(html: str, section: str) -> str:
    return next(e.text for e in parse_html(html).elements if ("id", section) in e.attrs)


def md_section(md: str, heading: str) -> str:
    return md.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


# -- the story -------------------------------------------------------------------------


def test_each_principal_s_story_is_in_time_order_with_its_tactics(doc: dict) -> None:
    eve = next(s for s in doc["stories"] if s["principal"] == EVE)
    steps = [(s["title"], s["tactic_names"], s["outcome"]) for s in eve["steps"]]
    assert steps == [
        ("Denied reconnaissance", ["Discovery"], "attempted"),
        ("Inline policy granted to oneself", ["Privilege escalation", "Persistence"], "succeeded"),
        ("Access key created for oneself", ["Persistence"], "succeeded"),
    ]
    assert eve["tactic_names"] == ["Discovery", "Privilege escalation", "Persistence"]
    assert [s["finding"] for s in eve["steps"]] == [5, 2, 3]  # the report's finding numbers
    assert eve["steps"][1]["techniques"] == ["T1098"]
    assert (eve["first_seen"], eve["last_seen"]) == (
        "2026-03-01T10:00:00.000000Z",
        "2026-03-01T10:09:00.000000Z",
    )


def test_people_come_first_best_ranked_first_and_automation_apart(doc: dict) -> None:
    order = [(s["principal"], s["group"]) for s in doc["stories"]]
    assert order == [(EVE, "human"), (ROOT, "human"), (TERRAFORM, "automation")]


def test_the_summary_leads_with_the_intruder_not_the_busiest_principal(
    doc: dict, reports: dict[str, str]
) -> None:
    lead = doc["summary"]["lead"]
    assert lead["group"] == "human" and lead["story"] == 1
    text = lead["text"]
    assert text.startswith("user/eve (CLI/SDK): ")  # aws-cli and boto3: no one detail
    assert "Discovery, then Privilege escalation, then Persistence" in text
    assert "2026-03-01 10:00:00 UTC to 2026-03-01 10:09:00 UTC (9 min)" in text
    assert "2 succeeded, 1 only attempted" in text
    # HTML: the first thing in the summary; Markdown: the first line under ## Summary
    summary = html_section(reports["html"], "summary")
    assert summary.split()[:4] == ["Summary", "Read", "first:", "user/eve"]
    first_line = md_section(reports["md"], "Summary").strip().splitlines()[0]
    assert first_line.startswith("**Read first:** user/eve")
    assert "Privilege escalation" in first_line and "Discovery burst" not in first_line
    assert doc["summary"]["top_findings"][0]["title"] == "Inline policy granted to oneself"


def test_stories_are_in_html_and_markdown_with_automation_below(reports: dict[str, str]) -> None:
    html = html_section(reports["html"], "stories")
    md = md_section(reports["md"], "Stories")
    for text in (html, md):
        people, automation = text.index("People"), text.index("Automation")
        assert people < text.index("user/eve") < text.index("root") < automation
        assert automation < text.index("role/terraform-apply")
        assert "Privilege escalation" in text and "T1098" in text
    page = parse_html(reports["html"])
    story = next(e for e in page.elements if ("id", "story-1") in e.attrs)
    links = [v for e in page.elements for k, v in e.attrs if k == "href"]
    assert "#story-1" in links and "#finding-2" in links
    assert "user/eve" in story.text


def test_attempted_is_shown_and_its_level_lowered(doc: dict, reports: dict[str, str]) -> None:
    denied = next(f for f in doc["findings"] if f["title"] == "Denied reconnaissance")
    assert (denied["outcome"], denied["rule_level"], denied["level"]) == (
        "attempted",
        "medium",
        "low",
    )
    assert denied["level_note"] == LOWERED
    assert f"### 5. LOW: Denied reconnaissance ({LOWERED})" in reports["md"]
    heading = next(
        e.text
        for e in parse_html(reports["html"]).elements
        if e.attrs == [("class", "finding-title")] and "Denied" in e.text
    )
    assert LOWERED in heading
    step_md = next(line for line in reports["md"].splitlines() if "Denied reconnaissance |" in line)
    assert "attempted \\(level lowered from medium\\)" in step_md
    assert "attempted (level lowered from medium)" in html_section(reports["html"], "stories")


def test_outcome_and_actor_are_in_every_format(doc: dict, reports: dict[str, str]) -> None:
    grant = next(f for f in doc["findings"] if f["title"].startswith("Inline policy"))
    assert (grant["outcome"], grant["actor"], grant["actor_detail"]) == (
        "succeeded",
        "cli-sdk",
        "aws-cli",
    )
    index = next(line for line in reports["md"].splitlines() if line.startswith("| 2 | HIGH |"))
    assert "| succeeded | CLI/SDK: aws-cli |" in index
    rows = [e.text for e in parse_html(reports["html"]).elements if e.tag == "tr"]
    assert any("Inline policy" in r and "succeeded" in r and "CLI/SDK: aws-cli" in r for r in rows)
    assert any(
        "Trail deleted" in r or ("trail deleted" in r and "automation: terraform" in r)
        for r in rows
    )


def test_suppressed_counts_are_in_every_format(doc: dict, reports: dict[str, str]) -> None:
    assert doc["suppressions"] == SUPPRESSIONS
    assert doc["summary"]["suppressed"] == 17 and doc["summary"]["suppression_filters"] == 2
    denied = next(f for f in doc["findings"] if f["title"] == "Denied reconnaissance")
    assert denied["suppressed"] == 3
    md = md_section(reports["md"], "Suppressed matches")
    html = html_section(reports["html"], "suppressions")
    for text in (md, html):
        assert "Terraform CI applies" in text and "Quiet filter" in text
        assert re.search(r"\b17\b", text) and "ev" in text
    md_rows = [line for line in md.splitlines() if line.startswith("| 6f9d")]
    assert [line.split("|")[5].strip() for line in md_rows] == ["17", "0"]
    assert "17 matched events removed by 2 suppression filters" in reports["md"]
    assert "17 matched events removed by 2 suppression filters" in html_section(
        reports["html"], "summary"
    )
    assert "3 matched events removed by a suppression filter" in reports["md"]
    assert "3 matched events removed by a suppression filter" in reports["html"]
    for text in (md, html):
        assert "no_such_rule" in text.replace("\\", "") and "names no loaded rule" in text


def test_misused_automation_is_told_with_the_people(tmp_path: Path) -> None:
    """Terraform's role used from a console: its finding has human events, so it is not
    pushed below; a ranked-before-a-human automation finding is not either."""
    rows, findings = intrusion()
    findings[0]["actors"] = {"automation": 1, "human-console": 1}
    doc = json.loads(raw_reports(make_case(tmp_path, rows, findings))["json"])
    assert {s["principal"]: s["group"] for s in doc["stories"]}[TERRAFORM] == "human"

    rows, findings = intrusion()
    findings[0].update(automation_misused=True, actor_note="terraform-apply used by hand (cli-sdk)")
    texts = raw_reports(make_case(tmp_path / "flagged", rows, findings))
    terraform = next(s for s in json.loads(texts["json"])["stories"] if s["principal"] == TERRAFORM)
    assert terraform["group"] == "human" and "automation identity misused" in terraform["sentence"]
    assert "used by hand \\(cli-sdk\\)" in texts["md"] and "**misused**" in texts["md"]
    assert "used by hand (cli-sdk)" in texts["html"]

    rows, findings = intrusion()
    findings[0]["rank"], findings[3]["rank"] = 3, 5  # ahead of root's console work
    doc = json.loads(raw_reports(make_case(tmp_path / "ranked", rows, findings))["json"])
    assert {s["principal"]: s["group"] for s in doc["stories"]}[TERRAFORM] == "human"


def test_only_automation_still_leads_and_says_so(tmp_path: Path) -> None:
    rows, findings = intrusion()
    case = make_case(tmp_path, [rows[0]], [findings[0]])
    doc = json.loads(raw_reports(case)["json"])
    assert doc["summary"]["lead"]["group"] == "automation"
    assert "**Only automation named:** role/terraform" in raw_reports(case)["md"]


# -- findings.json from an older detect ---------------------------------------------------


def test_findings_without_triage_fields_still_tell_the_story(tmp_path: Path) -> None:
    rows, findings = intrusion(with_triage=False)
    case = make_case(tmp_path, rows, findings)
    texts = raw_reports(case)
    doc = json.loads(texts["json"])
    assert doc["suppressions"] == [] and doc["summary"]["suppressed"] == 0
    for f in doc["findings"]:
        assert f["outcome"] is None and f["actor"] is None and f["rank"] is None
        assert f["rule_level"] == f["level"] and f["level_note"] is None
    # every unclassified actor counts as a person; stories rank by level, then time
    assert [(s["principal"], s["group"]) for s in doc["stories"]] == [
        (TERRAFORM, "human"),
        (EVE, "human"),
        (ROOT, "human"),
    ]
    assert doc["summary"]["lead"]["text"].startswith("role/terraform-apply: Defense evasion")
    assert "No suppression filter was applied" in texts["md"]
    assert "No suppression filter was applied" in texts["html"]
    assert "| unknown | unknown |" in texts["md"]
    assert_html_inert(texts["html"])
    assert_markdown_inert(texts["md"])


# -- escaping and masking -------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8kLmN2pR"
HOSTILE = [
    f"user/x aws_secret_access_key={SECRET}",
    *(f"arn:aws:iam::111111111111:user/{attack}" for attack in ATTACKS),
]


def test_hostile_principal_names_and_actors_stay_inert_and_masked(tmp_path: Path) -> None:
    rows = [
        row(f"2026-03-01T10:{n:02d}:00Z", name, "PutUserPolicy", n=n)
        for n, name in enumerate(HOSTILE)
    ]
    findings = [
        finding_for(
            [r],
            n,
            title=f"Step {n}",
            tags=["attack.privilege-escalation"],
            outcome="succeeded",
            actor="cli-sdk",
            actor_detail=f"<img src=x onerror=alert({n})>|**{n}**",
            rank=n + 1,
        )
        for n, r in enumerate(rows)
    ]
    case = make_case(tmp_path, rows, findings)
    texts = raw_reports(case)
    assert_html_inert(texts["html"])
    assert_markdown_inert(texts["md"])
    for fmt, text in report_files(case).items():
        assert SECRET not in text, fmt
    doc = json.loads(texts["json"])
    assert len(doc["stories"]) == min(len(HOSTILE), 25)
    masked = next(s for s in doc["stories"] if "aws_secret_access_key" in s["principal"])
    assert MASK in masked["principal"] and MASK in masked["sentence"]
    # each story's principal is there as text, escaped, not lost
    decoded = report_files(case)
    for attack in ("<script>alert(1)</script>", "[click](javascript:alert(1))", "| a | b |"):
        assert ATTACKS.index(attack) < 24  # among the stories listed
        assert f"user/{attack}" in decoded["html"]
        assert f"user/{attack}" in decoded["md"]
    assert "<img src=x onerror=alert(0)>" in decoded["html"]


def test_many_principals_are_counted_not_listed(tmp_path: Path) -> None:
    rows = [
        row(f"2026-03-01T10:{n % 60:02d}:{n // 60:02d}Z", f"user/u{n}", "X", n=n) for n in range(60)
    ]
    case = make_case(tmp_path, rows, [finding_for(rows, 0, tags=["attack.discovery"])])
    doc = json.loads(raw_reports(case)["json"])
    assert len(doc["stories"]) == 25 and doc["stories_not_listed"] == 35
    assert "35 more principals not shown" in raw_reports(case)["md"]


def test_a_long_story_lists_its_first_steps_and_counts_the_rest(tmp_path: Path) -> None:
    rows = [row(f"2026-03-01T10:{n:02d}:00Z", EVE, f"Call{n}", n=n) for n in range(STEPS + 5)]
    findings = [finding_for([r], n, title=f"Step {n}") for n, r in enumerate(rows)]
    texts = raw_reports(make_case(tmp_path, rows, findings[::-1]))  # model order: not time
    [story] = json.loads(texts["json"])["stories"]
    assert [s["title"] for s in story["steps"]] == [f"Step {n}" for n in range(STEPS)]
    assert story["steps_not_listed"] == 5 and story["findings"] == STEPS + 5
    assert "5 more findings of this principal" in texts["md"]
    assert "5 more findings of this principal" in texts["html"]


def test_one_user_name_in_two_accounts_is_two_stories_named_with_the_account() -> None:
    """`user/christophe` in two accounts (the Stratus corpus has five): the stories name
    the account too, so the lead cannot name one account's user for the other's."""
    from cloudir.report.story import stories, triage_fields

    def finding(arn: str, title: str, when: str) -> dict[str, Any]:
        found = {"title": title, "level": "high", "first_seen": when, "last_seen": when,
                 "principals": [arn], "tactics": ["credential-access"]}  # fmt: skip
        return {**found, **triage_fields(found)}  # as the report model holds it

    first = "arn:aws:iam::111122223333:user/christophe"
    second = "arn:aws:iam::444455556666:user/christophe"
    alone = "arn:aws:iam::111122223333:user/alice"
    told = stories(
        [
            finding(first, "Secrets read", "2024-07-31T12:36:48Z"),
            finding(second, "Trail deleted", "2024-07-31T12:46:41Z"),
            finding(alone, "Key created", "2024-07-31T12:50:00Z"),
        ]
    )["stories"]
    names = {s["principal"]: s["name"] for s in told}
    assert names == {
        first: "111122223333:user/christophe",
        second: "444455556666:user/christophe",
        alone: "user/alice",
    }
    by_principal = {s["principal"]: s["sentence"] for s in told}
    assert by_principal[second].startswith("444455556666:user/christophe: ")
    assert by_principal[alone].startswith("user/alice: ")


def test_the_findings_table_names_the_account_only_where_a_user_name_repeats(
    tmp_path: Path,
) -> None:
    """The HTML findings table and each finding's key timeline shorten principals as the
    stories do: `user/christophe` of two accounts reads with its account, `user/alice`
    alone stays short. (The Markdown table lists whole ARNs: nothing to confuse.)"""
    first = "arn:aws:iam::111122223333:user/christophe"
    second = "arn:aws:iam::444455556666:user/christophe"
    alone = "arn:aws:iam::111122223333:user/alice"
    rows = [
        row("2026-03-01T10:00:00Z", first, "GetSecretValue"),
        row("2026-03-01T10:05:00Z", second, "DeleteTrail"),
        row("2026-03-01T10:09:00Z", alone, "CreateAccessKey"),
    ]
    findings = [
        finding_for([r], n, title=f"Finding {n}", rule_level="high") for n, r in enumerate(rows)
    ]
    page = parse_html(raw_reports(make_case(tmp_path, rows, findings))["html"])
    cells = [e for e in page.elements if e.tag == "td" and ("class", "principal") in e.attrs]
    named = {
        first: "111122223333:user/christophe",
        second: "444455556666:user/christophe",
        alone: "user/alice",
    }
    table = [e.text for e in cells if len(e.attrs) == 1]  # the findings table's "Who"
    assert sorted(table) == sorted(named.values())
    timeline = [(dict(e.attrs)["title"], e.text) for e in cells if len(e.attrs) == 2]
    assert len(timeline) == 9  # three findings' key timelines, each with the three rows
    assert all(text == named[str(arn)] for arn, text in timeline)
