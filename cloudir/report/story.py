"""Per-principal stories: what each principal did, step by step, and which story to read first.

A list of findings sorted by severity answers "what is worst", not "what happened": the
intruder's recon, self-granted policy and new access key are three findings far apart,
and the account owner's own console work can outnumber them. A story groups the
findings by the principal they name, orders them by first_seen and labels each step with
its ATT&CK tactic, outcome and actor, so a reader sees "alice: discovery, then privilege
escalation, then persistence, in 17 minutes".

Triage fields (issue 16: `outcome`, `actor`, `rank`, `suppressed`...) come from detect;
a findings.json written before them has none, and then every finding counts as a human
actor's (an unclassified actor is never hidden below automation) and stories rank by
level and first_seen instead of `rank`.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from typing import Any

from cloudir.analyze.detect import LEVELS
from cloudir.analyze.messages import reader_names
from cloudir.report import times

HUMAN_ACTORS = ("human-console", "cli-sdk")
MACHINE_ACTORS = ("automation", "aws-service")
ACTOR_NAMES = {
    "human-console": "human at the console",
    "cli-sdk": "CLI/SDK",
    "automation": "automation",
    "aws-service": "AWS service",
}
OUTCOMES = ("succeeded", "mixed", "attempted")
STORIES_LISTED = 25  # principals with a story in the report; the rest are counted
STEPS_LISTED = 30  # findings per story; the rest are counted
TEXT_LIMIT = 300  # characters of a principal or actor detail in a story


def tactic_name(tactic: str) -> str:
    """`privilege_escalation` reads `Privilege escalation`."""
    return tactic.replace("_", " ").capitalize()


def actor_label(actor: Any, detail: Any = None) -> str:
    """`cli-sdk` and `aws-cli` read `CLI/SDK: aws-cli`; an unknown class reads as given."""
    if not actor:
        return "actor unknown"
    name = ACTOR_NAMES.get(str(actor), str(actor))
    return f"{name}: {detail}" if detail and detail != "console" else name


def outcome_label(outcome: Any, level: Any = None, rule_level: Any = None) -> str:
    """`attempted (level lowered from high)`; `unknown` when detect classified none."""
    text = str(outcome) if outcome else "unknown"
    if rule_level and level and rule_level != level:
        text += f" (level lowered from {rule_level})" if outcome == "attempted" else ""
    return text


def triage_fields(finding: dict[str, Any]) -> dict[str, Any]:
    """The issue-16 triage fields of a finding, null (or empty) where detect wrote none.

    Values of the wrong type are dropped rather than trusted: the templates and the
    story only ever see a known outcome, an int rank and counts that are ints.
    """
    level = finding.get("level")
    outcome = finding.get("outcome") if finding.get("outcome") in OUTCOMES else None
    rule_level = finding.get("rule_level") or level
    note = finding.get("level_note")
    if not note and outcome == "attempted" and rule_level != level:
        note = f"attempted: every matched call failed, level lowered from {rule_level}"
    actors = finding.get("actors")
    return {
        "outcome": outcome,
        "rule_level": rule_level,
        "level_note": _text(note) if note else None,
        "actor": _text(finding["actor"]) if finding.get("actor") else None,
        "actor_detail": _text(finding["actor_detail"]) if finding.get("actor_detail") else None,
        "actor_note": _text(finding["actor_note"]) if finding.get("actor_note") else None,
        "automation_misused": finding.get("automation_misused") is True,
        "actors": {
            _text(k): v
            for k, v in (actors.items() if isinstance(actors, dict) else [])
            if isinstance(v, int) and not isinstance(v, bool)
        },
        "rank": count_or_none(finding.get("rank")),
        "suppressed": count_or_none(finding.get("suppressed")),
    }


def principals_of(finding: dict[str, Any]) -> list[str]:
    """The principals a finding names: its `principals`, else `entities.principals`."""
    named = finding.get("principals")
    if not isinstance(named, list):
        named = (finding.get("entities") or {}).get("principals") or []
    return [str(p) for p in named if p]


def human_findings(findings: list[dict[str, Any]]) -> list[bool]:
    """For each finding: is it a human actor's (or automation whose identity is misused)?

    Human: actor human-console or cli-sdk, or not classified. Automation or an AWS
    service counts as human when its identity is misused, which the finding shows by
    `automation_misused`, by human events among its `actors`, or by its `rank`: detect ranks
    every human finding before every automation finding, so automation ranked before a
    human finding was ranked as human.
    """

    def plainly_human(f: dict[str, Any]) -> bool:
        if f.get("actor") in MACHINE_ACTORS:
            return False
        if f.get("actor") is None and f.get("actors"):
            return any(f["actors"].get(a) for a in HUMAN_ACTORS) or not all(
                a in MACHINE_ACTORS for a in f["actors"]
            )
        return True

    plain = [plainly_human(f) for f in findings]
    human_ranks = [f["rank"] for f, h in zip(findings, plain, strict=True) if h and f["rank"]]
    last_human = max(human_ranks, default=None)
    return [
        h
        or f["automation_misused"]
        or any(f["actors"].get(a) for a in HUMAN_ACTORS)
        or (last_human is not None and f["rank"] is not None and f["rank"] < last_human)
        for f, h in zip(findings, plain, strict=True)
    ]


def stories(findings: list[dict[str, Any]]) -> dict[str, Any]:
    """Every principal's story, human stories first, best first; capped with counts.

    `findings` are the report model's (with `tactics` and the triage fields); a step
    names its finding by number (1 = the first in the model, as the report numbers them).
    """
    human = human_findings(findings)
    steps: dict[str, list[int]] = {}
    unattributed = 0
    for n, f in enumerate(findings):
        named = principals_of(f)
        unattributed += not named
        for principal in dict.fromkeys(named):
            steps.setdefault(principal, []).append(n)
    names = reader_names(steps)  # the lead never names one account's user for another's
    built = [_story(p, names[p], idx, findings, human) for p, idx in steps.items()]
    built.sort(key=_story_order)
    return {
        "stories": [s for s in built[:STORIES_LISTED]],
        "stories_not_listed": max(0, len(built) - STORIES_LISTED),
        "findings_without_principal": unattributed,
    }


def lead(story_list: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the summary opens with: the highest-ranked human story (else automation's)."""
    for n, story in enumerate(story_list):
        if story["group"] == "human":
            return {"story": n + 1, "group": "human", "text": story["sentence"]}
    if story_list:
        return {"story": 1, "group": "automation", "text": story_list[0]["sentence"]}
    return None


def _story(
    principal: str,
    name: str,
    indexes: list[int],
    findings: list[dict[str, Any]],
    human: list[bool],
) -> dict[str, Any]:
    ordered = sorted(indexes, key=lambda n: _step_order(findings[n], n))
    listed = [_step(findings[n], n + 1, human[n]) for n in ordered]
    tactics = list(dict.fromkeys(t for s in listed for t in s["tactics"]))
    ranks = [s["rank"] for s in listed if s["rank"] is not None]
    levels = [s["level"] for s in listed]
    first = min((s["first_seen"] for s in listed), key=_time_key, default=None)
    last = max((s["last_seen"] for s in listed), key=_time_key, default=None)
    story = {
        "principal": _text(principal),
        "name": _text(name),  # what the report calls it: short unless that is ambiguous
        "group": "human" if any(human[n] for n in indexes) else "automation",
        "actors": dict(Counter(s["actor"] or "unknown" for s in listed)),
        "rank": min(ranks) if ranks else None,
        "severity": max(levels, key=_level_rank, default=None),
        "first_seen": first,
        "last_seen": last,
        "tactics": tactics,
        "tactic_names": [tactic_name(t) for t in tactics],
        "outcomes": dict(Counter(s["outcome"] or "unknown" for s in listed)),
        "automation_misused": any(s["automation_misused"] for s in listed),
        "findings": len(listed),
        "steps": listed[:STEPS_LISTED],
        "steps_not_listed": max(0, len(listed) - STEPS_LISTED),
    }
    story["sentence"] = _sentence(story, listed)
    return story


def _step(finding: dict[str, Any], number: int, human: bool) -> dict[str, Any]:
    tactics = list(finding.get("tactics") or [])
    return {
        "finding": number,
        "title": finding.get("title"),
        "level": finding.get("level"),
        "rule_level": finding.get("rule_level"),
        "level_note": finding.get("level_note"),
        "outcome": finding.get("outcome"),
        "actor": finding.get("actor"),
        "actor_detail": finding.get("actor_detail"),
        "actor_note": finding.get("actor_note"),
        "automation_misused": finding.get("automation_misused") is True,
        "human": human,
        "rank": finding.get("rank"),
        "first_seen": finding.get("first_seen"),
        "last_seen": finding.get("last_seen"),
        "tactics": tactics,
        "tactic_names": [tactic_name(t) for t in tactics],
        "techniques": list(finding.get("techniques") or []),
        "count": finding.get("count"),
        "suppressed": finding.get("suppressed"),
        "correlation": finding.get("correlation"),
    }


def _sentence(story: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    """One line a reader can act on: who, what in tactic order, how it ended, when."""
    who = story["name"]
    actors = [a for a in story["actors"] if a != "unknown"]
    if actors:
        details = {s["actor_detail"] for s in steps if s["actor_detail"]}
        detail = details.pop() if len(actors) == 1 and len(details) == 1 else None
        misused = "; automation identity misused" if story["automation_misused"] else ""
        who += f" ({', '.join(actor_label(a, detail) for a in actors)}{misused})"
    if story["tactic_names"]:
        what = ", then ".join(story["tactic_names"])
    else:
        what = "activity no ATT&CK tactic tag names"
    first, last = story["first_seen"], story["last_seen"]
    if first == last:
        when = f"at {times.display(first)}"
    else:
        when = f"from {times.display(first)} to {times.display(last)}"
        length = times.duration(first, last)
        when += f" ({length})" if length else ""
    outcomes = story["outcomes"]
    counted = [
        f"{outcomes[o]} {'only attempted (every call failed)' if o == 'attempted' else o}"
        for o in OUTCOMES
        if outcomes.get(o)
    ]
    total = f"{story['findings']} finding{'' if story['findings'] == 1 else 's'}"
    return f"{who}: {what}, {when}; {total}{': ' + ', '.join(counted) if counted else ''}."


def _story_order(story: dict[str, Any]) -> tuple[Any, ...]:
    return (
        story["group"] != "human",
        story["rank"] if story["rank"] is not None else math.inf,
        -_level_rank(story["severity"]),
        _time_key(story["first_seen"]),
        story["principal"],
    )


def _step_order(finding: dict[str, Any], n: int) -> tuple[Any, ...]:
    rank = finding.get("rank")
    return (_time_key(finding.get("first_seen")), rank if rank is not None else math.inf, n)


def _time_key(value: Any) -> tuple[bool, datetime]:
    moment = times.parse_time(value)
    return (moment is None, moment or times.LAST)


def _level_rank(level: Any) -> int:
    return LEVELS.index(level) if level in LEVELS else -1


def count_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    text = str(value)
    if len(text) <= TEXT_LIMIT:
        return text
    return f"{text[:TEXT_LIMIT]}... (+{len(text) - TEXT_LIMIT} characters)"
