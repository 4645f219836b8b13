"""One report model built from the case; the HTML, Markdown and JSON renderings share it.

Everything in the report is read from the case as it is (case.json, custody, evidence
metadata, the timeline Parquet, findings/findings.json) and nothing in the case is
changed. Every string passes through `mask_document` before it is rendered, so a secret
that an event carried never reaches a reader. The JSON rendering is this model as it is,
versioned by REPORT_VERSION and described in docs/report.md.

Nothing in the case may stop the report or blow it up: every time the timeline holds
(year 1 to 9999) is handled (`times`), the chart has at most CHART_MAX_BUCKETS bars
whatever the span, and every list that grows with the evidence (event ids, entity
values, parse errors, problems) is capped with a count of the rest, so report.json
stays small whatever an intruder writes into the logs. What the timeline says went
wrong (incomplete or missing evidence, disagreeing copies, implausible times, parse
errors) is carried to the top of the report as `warnings`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from cloudir import __version__
from cloudir.analyze.detect import ENTITY_FIELDS, LEVELS
from cloudir.case import Case, utc_now
from cloudir.errors import UsageError
from cloudir.report import story, times
from cloudir.report.mask import mask_document

REPORT_VERSION = "1.3"
EVENTS_PER_FINDING = 25  # matched events shown in full; the rest are counted
CONTEXT_MINUTES = 30  # the key timeline: this long before and after a finding
CONTEXT_EVENTS = 40
ENTITY_ROWS = 50
PARSE_ERRORS_SHOWN = 200
CHART_BUCKETS = 60  # the bars a chart aims for
CHART_MAX_BUCKETS = 200  # and never exceeds, whatever the span
EVENT_IDS_LISTED = 1000  # per finding; findings/findings.json has them all
ENTITY_VALUES_LISTED = 100  # per finding and kind
PROBLEMS_LISTED = 200  # evidence problems, disagreeing copies, error groups
EXAMPLES_LISTED = 20  # implausible times
TEXT_LIMIT = 2000  # characters of one string read from the timeline's own files
# errors.jsonl kinds whose rows are in the timeline all the same (counted, not lost)
KEPT_KINDS = frozenset({"implausible_time", "conflicting_copies"})

# ATT&CK enterprise tactics in kill-chain order, as Sigma tags name them.
TACTICS = [
    "reconnaissance", "resource_development", "initial_access", "execution", "persistence",
    "privilege_escalation", "defense_evasion", "credential_access", "discovery",
    "lateral_movement", "collection", "command_and_control", "exfiltration", "impact",
]  # fmt: skip

ROW_COLUMNS = (
    "strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%fZ') AS timestamp, timestamp_desc, source, "
    'artifact, host, "user", src_ip, action, target, outcome, message, evidence_id, event_id'
)
ENTITY_SQL = {
    "principals": '"user"',
    "access_keys": "json_extract_string(raw, '$.userIdentity.accessKeyId')",
    "source_ips": "src_ip",
    "hosts": "host",
}
DAY = 86400
YEAR = 365 * DAY
STEPS = [60, 300, 900, 3600, 6 * 3600, DAY, 7 * DAY, 30 * DAY, 91 * DAY, YEAR] + [
    n * YEAR for n in (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
]


def build(case: Case) -> dict[str, Any]:
    """The whole report as plain data (JSON types only)."""
    from cloudir.analyze.query import connect

    summary_file = _timeline_summary(case)
    findings_doc = _read_findings(case, summary_file)
    con = connect(case) if _has_rows(case) else _empty_timeline()
    findings = [_finding(con, f) for f in findings_doc["findings"]]
    stories = story.stories(findings)
    suppressions = _suppressions(findings_doc)
    generated = utc_now()
    window = times.plausible_window(summary_file, times.parse_time(generated) or times.LAST)

    timeline = _timeline(con, summary_file, findings, window)
    problems = _evidence_problems(summary_file)
    conflicts = _conflicting_copies(summary_file)
    suspicious = _suspicious_times(con, summary_file, window)
    suspicious["rule"] = _time_rule(suspicious)
    parse_errors = _parse_errors(case, summary_file)
    custody = _custody(case)
    head: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "generated": generated,
        "cloudir_version": __version__,
        "case": {**case.info, "path": str(case.root)},
    }
    validation = _alert_validation(case)
    if validation is not None:  # only a triaged case has one; others keep their shape
        head["alert_validation"] = validation
    model = head | {
        "evidence_incomplete": bool(problems["count"]),
        "warnings": _warnings(problems, conflicts, suspicious, parse_errors, timeline, custody),
        "evidence_problems": problems,
        "summary": _summary(findings, timeline, stories["stories"], suppressions),
        "stories": stories["stories"],
        "stories_not_listed": stories["stories_not_listed"],
        "findings_without_principal": stories["findings_without_principal"],
        "findings": findings,
        "suppressions": suppressions,
        "attack": _attack(findings),
        "entities": _entities(con, findings),
        "timeline": timeline,
        "evidence": _evidence(case),
        "containment": _containment(case),
        "custody": custody,
        "conflicting_copies": conflicts,
        "suspicious_times": suspicious,
        "parse_errors": parse_errors,
        "rules": findings_doc.get("rules", {}),
    }
    return mask_document(model)


def _timeline_summary(case: Case) -> dict[str, Any]:
    """timeline/summary.json, or {} when it is missing or unreadable (the report says so)."""
    path = case.paths.timeline_summary
    try:
        summary = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


VERDICTS = ("confirmed", "corroborated", "not corroborated", "explained")
VALIDATION_ROWS = 20  # scoped activity rows shown in the alert validation
VALIDATION_FINDINGS = 50  # findings on the alert's entities, and per story side
VALIDATION_LINES = 30  # reason lines
ALERT_FIELDS = ("source", "product", "type", "title", "severity", "id", "family", "account",
                "region", "first_seen", "last_seen")  # fmt: skip


def _alert_validation(case: Case) -> dict[str, Any] | None:
    """triage/validation.json as the report shows it, or None when the case has none.

    `cloudir triage` writes the file (cloudir/triage/verdict.py); the report reads it as
    data, never the code. Every field is checked for its type and capped here, so the
    templates see the same shape whatever the file holds; an unreadable file is shown as
    such (`unreadable`), never dropped.
    """
    path = case.paths.triage_validation
    if not path.exists() and not path.is_symlink():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        return _validation_view({}, f"{path.name}: unreadable ({_cap(str(exc))})")
    if not isinstance(doc, dict):
        return _validation_view({}, f"{path.name}: not a validation document")
    return _validation_view(doc, None)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str | None:
    return None if value is None or isinstance(value, (dict, list)) else _cap(str(value))


def _texts(value: Any, most: int = EXAMPLES_LISTED) -> list[str]:
    return [_cap(str(v)) for v in value[:most] if v is not None] if isinstance(value, list) else []


def _validation_view(doc: dict[str, Any], unreadable: str | None) -> dict[str, Any]:
    verdict = doc.get("verdict")
    alert = _dict(doc.get("alert"))
    scope = _dict(doc.get("scope"))
    activity = _dict(doc.get("activity"))
    named = _dict(activity.get("named_action"))
    searched = _dict(doc.get("searched"))
    row_keys = ("timestamp", "action", "outcome", "src_ip", "user", "user_agent", "actor",
                "event_id")  # fmt: skip
    finding_keys = ("rule_id", "title", "level", "outcome", "actor", "actor_detail",
                    "first_seen", "last_seen")  # fmt: skip

    def finding(item: dict[str, Any]) -> dict[str, Any]:
        return {k: _text(item.get(k)) for k in finding_keys} | {
            "count": _int(item.get("count")),
            "events_in_scope": _int(item.get("events_in_scope")),
            "automation_misused": item.get("automation_misused") is True,
            "event_ids": _texts(item.get("event_ids")),
        }

    def findings(value: Any) -> list[dict[str, Any]]:
        items = value if isinstance(value, list) else []
        return [finding(f) for f in items[:VALIDATION_FINDINGS] if isinstance(f, dict)]

    given_rows = activity.get("rows")
    rows: list[Any] = given_rows if isinstance(given_rows, list) else []
    by_source = _dict(searched.get("rows_in_window_by_source"))
    story_doc = _dict(doc.get("story"))
    return {
        "verdict": verdict if verdict in VERDICTS else None,
        "verdict_given": _text(verdict),  # what the file said, when it is no known verdict
        "rule": _text(doc.get("rule")),
        "unreadable": unreadable,
        "generated": _text(doc.get("generated")),
        "reasons": _texts(doc.get("reasons"), VALIDATION_LINES),
        "alert": {k: _text(alert.get(k)) for k in ALERT_FIELDS}
        | {"sample": alert.get("sample") is True},
        "scope": {
            "start": _text(scope.get("start")),
            "end": _text(scope.get("end")),
            "entities": {
                _cap(str(k)): _texts(v, ENTITY_VALUES_LISTED)
                for k, v in list(scope.items())[:50]
                if isinstance(v, list) and v
            },
        },
        "activity": {
            "count": _int(activity.get("count")),
            "first": _text(activity.get("first")),
            "last": _text(activity.get("last")),
            "named_action": {
                "name": _text(named.get("name")),
                "service": _text(named.get("service")),
                "count": _int(named.get("count")),
                "event_ids": _texts(named.get("event_ids")),
            },
            "by_action": [
                {"action": _text(a.get("action")), "count": _int(a.get("count"))}
                for a in (activity.get("by_action") or [])[:EXAMPLES_LISTED]
                if isinstance(a, dict)
            ]
            if isinstance(activity.get("by_action"), list)
            else [],
            "by_actor": {
                _cap(str(k)): _int(v) for k, v in list(_dict(activity.get("by_actor")).items())[:10]
            },
            "rows": [
                {k: _text(r.get(k)) for k in row_keys}
                for r in rows[:VALIDATION_ROWS]
                if isinstance(r, dict)
            ],
            "rows_not_shown": _int(activity.get("rows_not_shown"))
            + max(0, len(rows) - VALIDATION_ROWS),
        },
        "findings": findings(doc.get("findings")),
        "story": {side: findings(story_doc.get(side)) for side in ("earlier", "later")},
        "suppressed": [
            {
                "filter_id": _text(s.get("filter_id")),
                "title": _text(s.get("title")),
                "matched": _int(s.get("matched")),
                "event_ids": _texts(s.get("event_ids")),
            }
            for s in (doc.get("suppressed") or [])[:EXAMPLES_LISTED]
            if isinstance(s, dict)
        ]
        if isinstance(doc.get("suppressed"), list)
        else [],
        "searched": {
            "timeline": searched.get("timeline") is True,
            "rows": _int(searched.get("rows")),
            "first": _text(searched.get("first")),
            "last": _text(searched.get("last")),
            "rows_in_window": _int(searched.get("rows_in_window")),
            "rows_in_window_by_source": {
                _cap(str(k)): _int(v) for k, v in list(by_source.items())[:EXAMPLES_LISTED]
            },
            "findings_file": _text(searched.get("findings_file")),
            "rules_loaded": _int(searched.get("rules_loaded")),
            "findings_on_entities": _int(searched.get("findings_on_entities")),
        },
    }


def _has_rows(case: Case) -> bool:
    return bool(case.paths.timeline_parts())


def _empty_timeline() -> Any:
    """A timeline view with no rows: the timeline ran but could read nothing."""
    from cloudir.analyze.duck import connect as duck_connect
    from cloudir.analyze.schema import TIMELINE_SCHEMA

    con = duck_connect()
    columns = ", ".join(
        f'NULL::{"TIMESTAMPTZ" if f.name == "timestamp" else "VARCHAR"} AS "{f.name}"'
        for f in TIMELINE_SCHEMA
    )
    con.execute(f"CREATE VIEW timeline AS SELECT {columns} WHERE false").fetchall()
    return con


def _read_findings(case: Case, summary: dict[str, Any]) -> dict[str, Any]:
    """findings.json; when the timeline ran and read no row, no findings (nothing to run on)."""
    path = case.paths.findings_json
    if not path.is_file():
        if summary and (summary.get("rows") == 0 or not _has_rows(case)):
            return {"findings": [], "rules": {"loaded": 0, "skipped": []}}
        raise UsageError(
            f"{case.root}: no findings yet; run `cloudir detect --case {case.root}` "
            f"(or `cloudir analyze --case {case.root}` for all steps)"
        )
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); run `cloudir detect` again") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
        raise UsageError(f"{path}: not a findings document; run `cloudir detect` again")
    return doc


def _rows(
    con: Any, sql: str, params: list[Any] | dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _finding(con: Any, finding: dict[str, Any]) -> dict[str, Any]:
    """The finding with its matched events (raw included) and the key timeline around it.

    Its times are rewritten in ISO form with a four-digit year, which findings.json may
    lack (strftime writes year 1 as "1-01-01"); its id and entity lists are capped.
    """
    finding = {
        **finding,
        "first_seen": times.iso_text(finding.get("first_seen")),
        "last_seen": times.iso_text(finding.get("last_seen")),
    }
    ids = finding["event_ids"]
    shown = ids[:EVENTS_PER_FINDING]
    events = _rows(
        con,
        f"SELECT {ROW_COLUMNS}, raw FROM timeline WHERE event_id IN (SELECT unnest(?)) "
        "ORDER BY timestamp, event_id",
        [shown],
    )
    for event in events:
        event["raw"] = _parse_raw(event["raw"])
    tags = [t.split(".", 1)[1].replace("-", "_") for t in finding["tags"] if "." in t]
    tactics = [t for t in tags if t in TACTICS]  # Sigma writes attack.defense-evasion
    entities = finding.get("entities") or {}
    principals = finding.get("principals")
    if isinstance(principals, list):  # issue 16: the principals, beside entities.principals
        finding["principals_not_listed"] = max(0, len(principals) - ENTITY_VALUES_LISTED)
        finding["principals"] = principals[:ENTITY_VALUES_LISTED]
    return {
        **{k: v for k, v in finding.items() if k != "event_ids"},
        **story.triage_fields(finding),
        "event_ids": ids[:EVENT_IDS_LISTED],
        "event_ids_not_listed": max(0, len(ids) - EVENT_IDS_LISTED),
        "entities": {k: list(v)[:ENTITY_VALUES_LISTED] for k, v in entities.items()},
        "entities_not_listed": {
            k: len(v) - ENTITY_VALUES_LISTED
            for k, v in entities.items()
            if len(v) > ENTITY_VALUES_LISTED
        },
        "tactics": tactics,
        "events": events,
        "events_not_shown": len(ids) - len(events),
        "context": _context(con, finding),
    }


def _context(con: Any, finding: dict[str, Any]) -> list[dict[str, Any]]:
    """What the same principals and addresses did around the finding, matched rows marked."""
    who = finding["entities"].get("principals", [])
    where = finding["entities"].get("source_ips", [])
    span = [times.parse_time(finding.get(k)) for k in ("first_seen", "last_seen")]
    if (not who and not where) or None in span:  # no time to centre on: no context
        return []
    rows = _rows(
        con,
        f"""SELECT {ROW_COLUMNS}, event_id IN (SELECT unnest(?)) AS matched FROM timeline
            WHERE timestamp BETWEEN ?::TIMESTAMPTZ - INTERVAL {CONTEXT_MINUTES} MINUTE
                                AND ?::TIMESTAMPTZ + INTERVAL {CONTEXT_MINUTES} MINUTE
              AND ("user" IN (SELECT unnest(?)) OR src_ip IN (SELECT unnest(?)))
            ORDER BY timestamp, event_id LIMIT {CONTEXT_EVENTS * 4}""",
        [finding["event_ids"], finding["first_seen"], finding["last_seen"], who, where],
    )
    if len(rows) <= CONTEXT_EVENTS:
        return rows
    first = next((n for n, r in enumerate(rows) if r["matched"]), 0)  # centre on the finding
    start = max(0, min(first - CONTEXT_EVENTS // 2, len(rows) - CONTEXT_EVENTS))
    return rows[start : start + CONTEXT_EVENTS]


def _parse_raw(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


def _summary(
    findings: list[dict[str, Any]],
    timeline: dict[str, Any],
    stories: list[dict[str, Any]],
    suppressions: list[dict[str, Any]],
) -> dict[str, Any]:
    """What happened, when, who and how bad: the paragraph an incident lead reads first.

    It opens with `lead`, the highest-ranked human actor's story in one sentence, not
    with counts: volume is what an owner's own busy console session has most of.
    """
    by_level = Counter(f["level"] for f in findings)
    worst = max((f["level"] for f in findings), key=_rank, default=None)
    entities: dict[str, Counter[str]] = {name: Counter() for name in ENTITY_FIELDS}
    for f in findings:
        for name, values in f["entities"].items():
            entities.setdefault(name, Counter()).update(values)
    first = min((f["first_seen"] for f in findings), default=None)
    last = max((f["last_seen"] for f in findings), default=None)
    top = sorted(findings, key=_top_order)[:5]
    counts = ", ".join(f"{by_level[lv]} {lv}" for lv in reversed(LEVELS) if by_level[lv])
    capped = {k for f in findings for k in f.get("entities_not_listed", {})}

    def involved(kind: str, one: str, many: str | None = None) -> str:
        counted = _count(len(entities[kind]), one, many)
        return f"at least {counted}" if kind in capped else counted

    if findings:
        headline = (
            f"{_count(len(findings), 'finding')} ({counts}) between {first} and {last}, "
            f"involving {involved('principals', 'principal')} and "
            f"{involved('source_ips', 'source address', 'source addresses')}."
        )
    else:
        headline = f"No findings in {_count(timeline['events'], 'event')}."
    return {
        "lead": story.lead(stories),
        "headline": headline,
        "severity": worst,
        "findings_by_level": {level: by_level[level] for level in reversed(LEVELS)},
        "first_finding": first,
        "last_finding": last,
        "top_findings": [{"title": f["title"], "level": f["level"]} for f in top],
        "ranked": any(f.get("rank") is not None for f in findings),
        "suppressed": sum(s["suppressed"] for s in suppressions),
        "suppression_filters": len(suppressions),
        "principals": [v for v, _ in entities["principals"].most_common(5)],
        "source_ips": [v for v, _ in entities["source_ips"].most_common(5)],
        "events": timeline["events"],
        "first_event": timeline["first"],
        "last_event": timeline["last"],
    }


def _top_order(finding: dict[str, Any]) -> tuple[Any, ...]:
    """Detect's `rank` when it wrote one (1 = read first), else severity then time."""
    rank = finding.get("rank")
    return (rank is None, rank or 0, -_rank(finding["level"]), str(finding["first_seen"]))


def _suppressions(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """findings.json `suppressions`: each filter read, the rules it names and what it
    removed (0 too), so no suppressed match is hidden without a trace; [] when absent."""
    items = doc.get("suppressions")
    listed = []
    for item in items[:PROBLEMS_LISTED] if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        count = item.get("suppressed")
        rules = item.get("rules")
        sample = item.get("event_ids_sample")
        listed.append(
            {
                "filter_id": _capped(item.get("filter_id")),
                "title": _capped(item.get("title")),
                "path": _capped(item.get("path")),
                "rules": [_cap(str(r)) for r in rules[:PROBLEMS_LISTED]]
                if isinstance(rules, list)
                else [],
                "suppressed": story.count_or_none(count) or 0,
                "event_ids_sample": [_cap(str(e)) for e in sample[:EXAMPLES_LISTED]]
                if isinstance(sample, list)
                else [],
                "not_applied": _listed(item, "not_applied")[:PROBLEMS_LISTED],
            }
        )
    return listed


def _time_rule(suspicious: dict[str, Any]) -> str:
    """The implausible-time rule in words, for the warning and the section."""
    return (
        f"CloudTrail before {times.display(suspicious['cloudtrail_before'])[:10]}, other "
        f"sources before {times.display(suspicious['other_before'])[:10]}, any after "
        f"{times.display(suspicious['after'])}"
    )


def _rank(level: Any) -> int:
    """A severity's place in LEVELS; a level no rule format knows ranks below them all."""
    return LEVELS.index(level) if level in LEVELS else -1


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _attack(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ATT&CK tactics in kill-chain order, each with its techniques and findings."""
    overview = []
    for tactic in TACTICS:
        hits = [f for f in findings if tactic in f["tactics"]]
        if not hits:
            continue
        techniques = sorted({t for f in hits for t in f["techniques"]})
        overview.append(
            {
                "tactic": tactic,
                "name": tactic.replace("_", " ").title(),
                "techniques": techniques,
                "findings": [{"title": f["title"], "level": f["level"]} for f in hits],
            }
        )
    return overview


def _entities(con: Any, findings: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each entity a finding names, with its activity over the whole timeline."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for name, sql in ENTITY_SQL.items():
        named: Counter[str] = Counter()
        for f in findings:
            named.update(f["entities"].get(name, []))
        values = [v for v, _ in named.most_common(ENTITY_ROWS)]
        if not values:
            tables[name] = []
            continue
        stats = _rows(
            con,
            f"""SELECT {sql} AS value, count(*) AS events,
                   strftime(min(timestamp), '%Y-%m-%dT%H:%M:%S.%fZ') AS first_seen,
                   strftime(max(timestamp), '%Y-%m-%dT%H:%M:%S.%fZ') AS last_seen
                FROM timeline WHERE {sql} IN (SELECT unnest(?)) GROUP BY 1""",
            [values],
        )
        by_value = {row["value"]: row for row in stats}
        tables[name] = [
            {
                "value": v,
                "events": by_value.get(v, {}).get("events", 0),
                "first_seen": by_value.get(v, {}).get("first_seen"),
                "last_seen": by_value.get(v, {}).get("last_seen"),
                "findings": named[v],
            }
            for v in values
        ]
    return tables


def _timeline(
    con: Any,
    summary: dict[str, Any],
    findings: list[dict[str, Any]],
    window: times.Window,
) -> dict[str, Any]:
    """Counts per source and over time: the chart and the data-source coverage."""
    iso = "'%Y-%m-%dT%H:%M:%S.%fZ'"
    [total] = _rows(
        con,
        f"SELECT count(*) AS events, strftime(min(timestamp), {iso}) AS first, "
        f"strftime(max(timestamp), {iso}) AS last FROM timeline",
    )
    by_source = _rows(
        con,
        f"""SELECT source, artifact, count(*) AS events,
               strftime(min(timestamp), {iso}) AS first, strftime(max(timestamp), {iso}) AS last
            FROM timeline GROUP BY ALL ORDER BY events DESC, source, artifact""",
    )
    return {
        "events": total["events"],
        "first": total["first"],
        "last": total["last"],
        "by_source": by_source[:PROBLEMS_LISTED],
        "by_source_not_listed": max(0, len(by_source) - PROBLEMS_LISTED),
        "rows_by_evidence": summary.get("rows_by_evidence", {}),
        "duplicates_dropped": summary.get("duplicates_dropped", 0),
        "chart": _chart(con, findings, window),
    }


def _chart(con: Any, findings: list[dict[str, Any]], window: times.Window) -> dict[str, Any]:
    """Events per bar and source over the plausible span, at most CHART_MAX_BUCKETS bars.

    Events at implausible times are counted under `not_charted` rather than drawn: one
    forged year-9999 event must not squeeze the real incident into one bar. When every
    event is implausible, those are what the chart shows.
    """
    plausible = times.PLAUSIBLE_SQL
    [span] = _rows(
        con,
        f"""SELECT count(*) FILTER (WHERE {plausible}) AS plausible,
               count(timestamp) AS timed, count(*) AS events,
               min(epoch(timestamp)) FILTER (WHERE {plausible}) AS p0,
               max(epoch(timestamp)) FILTER (WHERE {plausible}) AS p1,
               min(epoch(timestamp)) AS t0, max(epoch(timestamp)) AS t1
           FROM timeline""",
        window.params(),
    )
    only_plausible = bool(span["plausible"])
    t0, t1 = (span["p0"], span["p1"]) if only_plausible else (span["t0"], span["t1"])
    chart: dict[str, Any] = {
        "bucket_seconds": STEPS[0],
        "buckets": [],
        "marks": [],
        "not_charted": {
            "implausible_time": span["timed"] - span["plausible"] if only_plausible else 0,
            "no_time": span["events"] - span["timed"],
        },
    }
    if t0 is None or t1 is None:
        return chart
    step = _bucket_seconds(t0, t1)
    origin = math.floor(t0 / step) * step
    count = int((t1 - origin) // step) + 1
    rows = _rows(
        con,
        f"""SELECT CAST(floor((epoch(timestamp) - $origin) / $step) AS BIGINT) AS bucket,
               source, count(*) AS events FROM timeline
            WHERE timestamp IS NOT NULL AND ($everything OR {plausible})
            GROUP BY ALL ORDER BY bucket""",
        window.params() | {"origin": origin, "step": step, "everything": not only_plausible},
    )
    grouped: dict[int, dict[str, int]] = {}
    for row in rows:
        bucket = min(max(int(row["bucket"]), 0), count - 1)  # float rounding at the edges
        counts = grouped.setdefault(bucket, {})
        name = row["source"] or "unknown"
        counts[name] = counts.get(name, 0) + row["events"]
    chart["bucket_seconds"] = step
    chart["buckets"] = [
        {"start": times.iso(times.from_seconds(origin + b * step)), "counts": grouped.get(b, {})}
        for b in range(count)
    ]
    end = origin + count * step
    for n, f in enumerate(findings, 1):
        moment = times.parse_time(f["first_seen"])
        if moment is not None and origin <= times.to_seconds(moment) < end:
            chart["marks"].append(
                {"timestamp": f["first_seen"], "level": f["level"], "title": f["title"]}
                | {"finding": n}
            )
    return chart


def _bucket_seconds(t0: float, t1: float) -> int:
    """The smallest round step that draws the span in about CHART_BUCKETS bars, and one
    that keeps it within CHART_MAX_BUCKETS whatever the span (a bar is one more when the
    span does not start on a step)."""
    span = max(t1 - t0, 1)
    step = next((s for s in STEPS if span / s <= CHART_BUCKETS), STEPS[-1])
    if span / step > CHART_MAX_BUCKETS - 2:
        step = math.ceil(span / (CHART_MAX_BUCKETS - 2))
    return step


def _evidence(case: Case) -> list[dict[str, Any]]:
    """Every evidence item with its files and hashes as custody recorded them."""
    recorded = case.recorded_files()
    pinned = _pinned_in_s3(case)
    items = []
    for evidence_id in case.evidence_ids():
        meta = case.read_meta(evidence_id)
        prefix = f"evidence/{evidence_id}/"
        files = [r.as_dict() for p, r in sorted(recorded.items()) if p.startswith(prefix)]
        items.append(
            {
                "evidence_id": evidence_id,
                "kind": meta.get("kind"),
                "source": meta.get("source"),
                "captured": meta.get("captured"),
                "window": meta.get("window"),
                "files": files,
                "bytes": sum(f["bytes"] for f in files),
                "pinned": pinned.get(evidence_id),
            }
        )
    return items


def _pinned_in_s3(case: Case) -> dict[str, dict[str, int]]:
    """Per item, the object versions its manifests pin and their bytes (custody's
    `s3-manifest` sources): evidence the case names but does not hold."""
    found: dict[str, dict[str, int]] = {}
    for entry in case.custody_entries():
        source = entry.get("source")
        if isinstance(source, dict) and source.get("type") == "s3-manifest":
            item = found.setdefault(str(entry.get("evidence_id")), {"objects": 0, "bytes": 0})
            item["objects"] += _int(source.get("objects"))
            item["bytes"] += _int(source.get("object_bytes"))
    return found


def _containment(case: Case) -> list[dict[str, Any]]:
    """What the responders changed in the account (`cloudir respond`), from custody."""
    from cloudir.case_responses import response_records

    return [record.as_dict() for record in response_records(case)]


def _custody(case: Case) -> dict[str, Any]:
    """The custody log as a reader checks it: entries, actions, chain state and head."""
    entries = list(case.custody_entries())
    return {
        "entries": len(entries),
        "actions": dict(Counter(e.get("action", "?") for e in entries)),
        "first": entries[0].get("ts") if entries else None,
        "last": entries[-1].get("ts") if entries else None,
        "operators": sorted({e.get("operator", "") for e in entries} - {""}),
        "head_sha256": case.custody_head(),
        "chain_errors": case.custody_chain_errors(),
        "log": [
            {
                "ts": e.get("ts"),
                "action": e.get("action"),
                "evidence_id": e.get("evidence_id"),
                "files": len(e.get("files") or []),
                "operator": e.get("operator"),
                "note": e.get("note"),
            }
            for e in entries[-200:]
        ],
    }


def _parse_errors(case: Case, summary: dict[str, Any]) -> dict[str, Any]:
    """What the timeline could not read: each skipped record or file, with its reason.

    Every line of errors.jsonl is counted (`count`), by kind; `unread` leaves out the
    kinds whose rows are kept (implausible times, disagreeing copies). The first
    PARSE_ERRORS_SHOWN are listed, their strings capped, with the count per evidence
    item, so a case where every file is bad still says which and why.
    """
    path = case.paths.timeline_errors
    items: list[dict[str, Any]] = []
    count = 0
    file_reasons: dict[str, str] = {}
    by_evidence: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                count += 1
                try:
                    item = json.loads(line)
                except ValueError:
                    item = {"reason": line.strip()}
                if not isinstance(item, dict):
                    item = {"reason": str(item)}
                item = _capped(item)
                by_evidence[str(item.get("evidence_id") or "unknown")] += 1
                by_kind[str(item.get("kind") or "parse")] += 1
                if "line" not in item and "record" not in item and item.get("path"):
                    file_reasons.setdefault(str(item["path"]), str(item.get("reason", "")))
                if len(items) < PARSE_ERRORS_SHOWN:
                    items.append(item)
    unparsed_paths = summary.get("unparsed_files") or []
    unparsed = [
        {
            "evidence_id": _evidence_id_of(str(p)),
            "path": _cap(str(p)),
            "reason": file_reasons.get(str(p)),
        }
        for p in (unparsed_paths if isinstance(unparsed_paths, list) else [])
    ]
    return {
        "count": count,
        "unread": sum(n for kind, n in by_kind.items() if kind not in KEPT_KINDS),
        "by_kind": dict(by_kind),
        "items": items,
        "by_evidence": dict(by_evidence.most_common(PROBLEMS_LISTED)),
        "unparsed_files": unparsed[:PROBLEMS_LISTED],
        "unparsed_files_not_listed": max(0, len(unparsed) - PROBLEMS_LISTED),
    }


def _cap(text: str) -> str:
    if len(text) <= TEXT_LIMIT:
        return text
    return f"{text[:TEXT_LIMIT]}... (+{len(text) - TEXT_LIMIT} characters)"


def _capped(value: Any, depth: int = 0) -> Any:
    """A JSON value from the timeline's own files with long strings and lists cut."""
    if isinstance(value, str):
        return _cap(value)
    if depth > 4:
        return _cap(json.dumps(value, default=str))
    if isinstance(value, dict):
        return {_cap(str(k)): _capped(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        return [_capped(v, depth + 1) for v in value[:50]]
    return value


def _listed(summary: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = summary.get(key)
    return [_capped(v) for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _evidence_problems(summary: dict[str, Any]) -> dict[str, Any]:
    """Evidence the timeline found incomplete, missing, unreadable or not recorded."""
    problems = _listed(summary, "evidence_problems")
    return {
        "count": len(problems),
        "by_kind": dict(Counter(str(p.get("kind") or "unknown") for p in problems)),
        "items": problems[:PROBLEMS_LISTED],
    }


def _conflicting_copies(summary: dict[str, Any]) -> dict[str, Any]:
    """Events whose copies disagree (one eventID, two records): a sign of tampering."""
    value = summary.get("conflicting_copies")
    value = value if isinstance(value, dict) else {}
    events = value.get("events")
    examples = _listed(value, "examples")
    return {
        "events": events if isinstance(events, int) else len(examples),
        "examples": examples[:PROBLEMS_LISTED],
    }


def _suspicious_times(con: Any, summary: dict[str, Any], window: times.Window) -> dict[str, Any]:
    """Events dated before the earliest or after the latest plausible time.

    The timeline's count (summary.json `implausible_times`) when it wrote one; otherwise
    counted here by the same rule, so a timeline built by an older cloudir is checked too.
    """
    rule = {
        "cloudtrail_before": times.iso(window.cloudtrail_from),
        "other_before": times.iso(window.other_from),
        "after": times.iso(window.until),
    }
    given = summary.get("implausible_times")
    if isinstance(given, dict) and isinstance(given.get("rows"), int):
        return {
            "rows": given["rows"],
            "earliest": times.iso_text(given.get("earliest")),
            "latest": times.iso_text(given.get("latest")),
            **rule,
            "counted_by": "timeline",
            "examples": _listed(given, "examples")[:EXAMPLES_LISTED],
        }
    outside = f"timestamp IS NOT NULL AND NOT {times.PLAUSIBLE_SQL}"
    iso = "'%Y-%m-%dT%H:%M:%S.%fZ'"
    [stats] = _rows(
        con,
        f"SELECT count(*) AS n, strftime(min(timestamp), {iso}) AS earliest, "
        f"strftime(max(timestamp), {iso}) AS latest FROM timeline WHERE {outside}",
        window.params(),
    )
    examples = _rows(
        con,
        f"""SELECT strftime(timestamp, {iso}) AS timestamp, source, artifact, evidence_id,
               event_id, action FROM timeline WHERE {outside}
            ORDER BY timestamp, event_id LIMIT {EXAMPLES_LISTED}""",
        window.params(),
    )
    return {
        "rows": stats["n"],
        "earliest": stats["earliest"],
        "latest": stats["latest"],
        **rule,
        "counted_by": "report",
        "examples": [_capped(e) for e in examples],
    }


def _warnings(
    problems: dict[str, Any],
    conflicts: dict[str, Any],
    suspicious: dict[str, Any],
    parse_errors: dict[str, Any],
    timeline: dict[str, Any],
    custody: dict[str, Any],
) -> list[dict[str, str]]:
    """What a reader must know before trusting anything below it, most serious first."""
    warnings = []
    if problems["count"]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(problems["by_kind"].items()))
        warnings.append(
            {
                "kind": "evidence_incomplete",
                "anchor": "evidence-problems",
                "text": f"EVIDENCE INCOMPLETE: {_count(problems['count'], 'problem')} "
                f"({kinds}); findings and counts below cover only what could be read.",
            }
        )
    if custody["chain_errors"]:
        warnings.append(
            {
                "kind": "custody_chain_broken",
                "anchor": "custody",
                "text": f"CUSTODY CHAIN BROKEN: {_count(len(custody['chain_errors']), 'error')}.",
            }
        )
    if conflicts["events"]:
        warnings.append(
            {
                "kind": "conflicting_copies",
                "anchor": "conflicting-copies",
                "text": f"{_count(conflicts['events'], 'event')} recorded more than once with "
                "copies that disagree: a sign of tampering; every copy was kept.",
            }
        )
    unread = parse_errors["unread"]
    if not timeline["events"] and parse_errors["count"]:
        warnings.append(
            {
                "kind": "nothing_read",
                "anchor": "parse-errors",
                "text": "NO EVENTS COULD BE READ: "
                f"{_count(unread, 'record or file', 'records or files')} the timeline could "
                "not read, each listed under Parse errors; the evidence was not analysed.",
            }
        )
    else:
        no_parser = parse_errors["by_kind"].get("no_parser", 0)
        if unread - no_parser:
            warnings.append(
                {
                    "kind": "parse_errors",
                    "anchor": "parse-errors",
                    "text": f"{_count(unread - no_parser, 'record or file', 'records or files')}"
                    " could not be read (listed under Parse errors).",
                }
            )
        if no_parser:
            warnings.append(
                {
                    "kind": "no_parser",
                    "anchor": "parse-errors",
                    "text": f"{_count(no_parser, 'evidence file')} of a kind no timeline parser "
                    "reads: kept as evidence, not analysed (listed under Parse errors).",
                }
            )
    if suspicious["rows"]:
        warnings.append(
            {
                "kind": "implausible_times",
                "anchor": "suspicious-times",
                "text": f"{_count(suspicious['rows'], 'event')} with "
                f"{'an implausible time' if suspicious['rows'] == 1 else 'implausible times'} "
                f"({_time_rule(suspicious)}): a forged record or a broken clock.",
            }
        )
    return warnings


def _evidence_id_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "evidence" else None
