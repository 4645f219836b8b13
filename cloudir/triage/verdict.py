"""Is the alert real? The case's own evidence, read for the alert's entities and window.

GuardDuty and Security Hub say what they saw; the responder's first question is whether
the logs the case collected say the same. This module answers it with a verdict and the
evidence behind it, from two things cloudir already has: the timeline (every row the
scoped principals, keys, instances, buckets and addresses left in the window) and
detect's findings (cloudir's own rules on the same entities). It never calls AWS and
never changes the case except for triage/validation.json.

The rules and their order are in docs/triage.md ("Validating the alert"):

1. `explained`, sample: the alert says it is a GuardDuty / ASFF sample finding;
2. `not corroborated`, no entity: the scope names nothing to search for;
3. `not corroborated`, nothing: no row of the scoped entities in the window and no
   cloudir finding on them;
4. `explained`, automation: every such row is by an AWS service or by automation whose
   identity says so (actors.py), and no finding on them is a person's or misused;
5. `explained`, suppressed: no finding on them is left, and the user's suppression
   filters removed matches of their rows;
6. `confirmed`: a finding of level high or critical whose scoped calls succeeded is on
   them, and the alert's named API call is in their rows when it names one;
7. `corroborated`: the named API call is in their rows, or a finding of level low or
   above is on them;
8. `not corroborated`: their rows hold nothing consistent with the alert.

Every reason line names its evidence: event ids, rule ids and titles, counts.
Everything read from the alert and the evidence is the attacker's text: it is stored as
data and made inert by whoever shows it (the report escapes it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudir.alerts.model import Alert, Scope
from cloudir.analyze.actors import ACTOR_CLASSES, AUTOMATION, AWS_SERVICE, actor_sql, identity_sql
from cloudir.analyze.duck import sql_str
from cloudir.case import Case
from cloudir.errors import EvidenceError

VALIDATION_VERSION = "1"
CONFIRMED = "confirmed"
CORROBORATED = "corroborated"
NOT_CORROBORATED = "not corroborated"
EXPLAINED = "explained"
VERDICTS = (CONFIRMED, CORROBORATED, NOT_CORROBORATED, EXPLAINED)

SERIOUS_LEVELS = ("high", "critical")  # a finding that can confirm
CONSISTENT_LEVELS = ("low", "medium", "high", "critical")  # one that can corroborate
LANDED = ("succeeded", "mixed")  # an outcome that says the calls worked
MACHINE = frozenset({AUTOMATION, AWS_SERVICE})  # actor classes that are no person
ALERT_KIND = "alert"  # evidence of this kind is the alert itself: never its own evidence

ROWS_SHOWN = 20  # sample rows of the scoped activity
IDS_NAMED = 5  # event ids named in one reason line
IDS_LISTED = 20  # event ids listed per finding or named action
ACTIONS_LISTED = 20  # distinct actions counted
FINDINGS_LISTED = 50  # findings on the entities; the rest are counted
TEXT = 300  # characters of one value read from evidence

# Where the alert names its API call (Alert.action): GuardDuty's awsApiCallAction and
# ASFF's Action.AwsApiCallAction use `api`/`Api` and `serviceName`/`ServiceName`.
API_KEYS = ("api", "api_name", "apiName", "Api", "ApiName")
SERVICE_KEYS = ("service", "service_name", "serviceName", "ServiceName")


@dataclass(frozen=True)
class Validation:
    """The verdict on one alert and what it rests on; `as_dict()` is triage/validation.json."""

    verdict: str  # one of VERDICTS
    rule: str  # which rule of docs/triage.md decided: "sample", "automation", ...
    reasons: tuple[str, ...]  # one line each, every one naming its evidence
    alert: dict[str, Any]
    scope: dict[str, Any]
    activity: dict[str, Any]  # the scoped entities' rows in the window
    findings: tuple[dict[str, Any], ...]  # cloudir findings on the same entities, in window
    story: dict[str, Any]  # findings on the same principals before and after the window
    suppressed: tuple[dict[str, Any], ...]  # suppression filters that removed their matches
    searched: dict[str, Any]  # what evidence was looked at
    generated: str = field(default_factory=lambda: _iso(datetime.now(UTC)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "validation_version": VALIDATION_VERSION,
            "generated": self.generated,
            "verdict": self.verdict,
            "rule": self.rule,
            "reasons": list(self.reasons),
            "alert": self.alert,
            "scope": self.scope,
            "activity": self.activity,
            "findings": list(self.findings),
            "story": self.story,
            "suppressed": list(self.suppressed),
            "searched": self.searched,
        }


def write_validation(case_root: Path, validation: Validation) -> Path:
    """triage/validation.json, written whole through a temporary name (a reader never
    sees half a verdict); returns its path."""
    path = Case.open(case_root).paths.triage_validation
    if path.parent.is_symlink() or path.is_symlink():
        raise EvidenceError(f"{path}: a symbolic link; cloudir writes triage/ only inside the case")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        text = json.dumps(validation.as_dict(), indent=2, ensure_ascii=False, default=str)
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def validate_alert(case_root: Path, alert: Alert, scope: Scope) -> Validation:
    """The verdict on `alert` from the case's timeline and findings, within `scope`.

    Raises EvidenceError (one line) when findings/findings.json exists but is not a
    findings document. A case with no timeline or no findings is searched as empty,
    and the reasons say so.
    """
    case = Case.open(case_root)
    findings_doc = _read_findings(case)
    api, service = named_api(alert.action)
    import duckdb

    try:
        with _Timeline(case, scope) as timeline:
            activity = timeline.activity(api, service)
            searched = timeline.searched()
            matched = _findings_on(timeline, findings_doc.get("findings", []))
            suppressed = _suppressed_on(timeline, findings_doc.get("suppressions", []))
    except duckdb.Error as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise EvidenceError(
            f"{case.paths.timeline}: the timeline cannot be read ({first})"
        ) from exc
    rules = findings_doc.get("rules")
    loaded = rules.get("loaded") if isinstance(rules, dict) else None
    searched["findings_file"] = findings_doc.get("_state")
    searched["rules_loaded"] = loaded if isinstance(loaded, int) else None
    in_window = [f for f in matched if f["in_window"]]
    story = {
        "earlier": [_listed(f) for f in matched if f["when"] == "earlier"][:FINDINGS_LISTED],
        "later": [_listed(f) for f in matched if f["when"] == "later"][:FINDINGS_LISTED],
    }
    rule, verdict, reasons = decide(alert, scope, activity, in_window, suppressed, searched)
    return Validation(
        verdict=verdict,
        rule=rule,
        reasons=tuple(reasons),
        alert=alert_summary(alert),
        scope=scope.as_dict(),
        activity=activity,
        findings=tuple(_listed(f) for f in in_window[:FINDINGS_LISTED]),
        story=story,
        suppressed=tuple(suppressed),
        searched=searched | {"findings_on_entities": len(in_window)},
    )


def alert_summary(alert: Alert) -> dict[str, Any]:
    """The essentials of Alert.as_dict() a reader needs beside the verdict."""
    data = alert.as_dict()
    keys = ("source", "product", "type", "title", "severity", "id", "sample", "family")
    return {k: data.get(k) for k in (*keys, "account", "region", "first_seen", "last_seen")} | {
        "action": data.get("action") or {}
    }


def named_api(action: dict[str, Any]) -> tuple[str | None, str | None]:
    """The API call the alert names (`CreateAccessKey`) and its service, when it names one."""

    def first(keys: Iterable[str]) -> str | None:
        for key in keys:
            value = action.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    return first(API_KEYS), first(SERVICE_KEYS)


# ---------------------------------------------------------------- the decision


def decide(
    alert: Alert,
    scope: Scope,
    activity: dict[str, Any],
    findings: list[dict[str, Any]],
    suppressed: list[dict[str, Any]],
    searched: dict[str, Any],
) -> tuple[str, str, list[str]]:
    """(rule, verdict, reasons) by docs/triage.md's rules, first that holds."""
    rows = activity["count"]
    named = activity["named_action"]
    where = _searched_line(scope, searched)
    if alert.sample:
        return (
            "sample",
            EXPLAINED,
            [
                f"{alert.product} marks this finding as a sample (id {_t(alert.id)}): it was "
                "generated for testing and describes no activity in the account",
                f"for the record, {where}: {_n(rows, 'row')} by the scoped entities, "
                f"{_n(len(findings), 'cloudir finding')} on them",
            ],
        )
    if scope.is_empty():
        return (
            "no-entity",
            NOT_CORROBORATED,
            [
                "the alert names no principal, key, instance, bucket or address: there is "
                f"nothing to search the evidence for ({where})"
            ],
        )
    if not rows and not findings:
        reasons = [
            f"no activity by the scoped entities ({_entities(scope)}) in the window: {where}",
            "no cloudir finding names these entities in the window",
        ]
        if named["name"]:
            reasons.append(f"so the alert's call {_t(named['name'])} is not in the evidence")
        return "nothing", NOT_CORROBORATED, reasons
    people = [f for f in findings if f.get("actor") not in MACHINE or f.get("automation_misused")]
    by_class = activity["by_actor"]
    if rows and activity["known_automation"] == rows and not people:
        kinds = ", ".join(f"{n} {k}" for k, n in by_class.items() if n)
        named_as = ", ".join(_t(i, 60) for i in activity["automation_identities"][:5])
        details = ", ".join(_t(d, 60) for d in activity["actor_details"][:5])
        if named_as:
            details = f"identity named as {named_as}; {details}"
        return (
            "automation",
            EXPLAINED,
            [
                f"every one of the {_n(rows, 'row')} by the scoped entities in the window is by "
                f"known automation or an AWS service ({kinds}; {details or 'no detail'}): "
                f"first {_ids(activity['sample_ids'])}",
                *[_finding_line(f, "is automation's, not a person's:") for f in findings[:3]],
            ],
        )
    if not findings and suppressed:
        removed = sum(s["matched"] for s in suppressed)
        return (
            "suppressed",
            EXPLAINED,
            [
                f"every cloudir match on the scoped entities in the window was removed by the "
                f"user's suppression filters ({_n(removed, 'sampled match', 'sampled matches')})",
                *[
                    f"filter {_t(s['filter_id'], 80)} ({_t(s['title'], 120)}) removed "
                    f"{_ids(s['event_ids'])}"
                    for s in suppressed[:5]
                ],
            ],
        )
    api_line = _api_line(named)
    serious = [
        f for f in findings if f.get("level") in SERIOUS_LEVELS and f.get("outcome") in LANDED
    ]
    if serious and (not named["name"] or named["count"]):
        return (
            "serious-finding",
            CONFIRMED,
            [
                *[_finding_line(f, "raised on the scoped entities:") for f in serious[:5]],
                *([api_line] if api_line else []),
                f"{_n(rows, 'row')} by the scoped entities in the window ({where})",
            ],
        )
    consistent = [f for f in findings if f.get("level") in CONSISTENT_LEVELS]
    if named["count"] or consistent:
        reasons = [api_line] if named["count"] and api_line else []
        reasons += [_finding_line(f, "raised on the scoped entities:") for f in consistent[:5]]
        if serious and named["name"] and not named["count"]:
            reasons.append(
                f"not confirmed: the alert's call {_t(named['name'])} is not among the "
                f"{_n(rows, 'row')} by the scoped entities in the window"
            )
        elif consistent and not serious:
            reasons.append(
                "not confirmed: no finding of level high or critical that succeeded "
                "(succeeded or mixed) is on the scoped entities in the window"
            )
        return "consistent", CORROBORATED, reasons
    reasons = [
        f"{_n(rows, 'row')} by the scoped entities in the window ({where}), "
        f"first {_ids(activity['sample_ids'])}, but nothing consistent with the alert"
    ]
    if named["name"]:
        reasons.append(f"the alert's call {_t(named['name'])} is not among them")
    reasons.append(
        "no cloudir finding of level low or above names these entities in the window"
        + (f" ({_n(len(findings), 'informational finding')} only)" if findings else "")
    )
    return "inconsistent", NOT_CORROBORATED, reasons


def _api_line(named: dict[str, Any]) -> str | None:
    if not named["name"]:
        return None
    if not named["count"]:
        return f"the alert's call {_t(named['name'])} is not among the scoped entities' rows"
    return (
        f"the alert's call {_t(named['name'])} is in the evidence: "
        f"{_n(named['count'], 'call')} by the scoped entities in the window, "
        f"{_ids(named['event_ids'])}"
    )


def _finding_line(finding: dict[str, Any], verb: str) -> str:
    return (
        f"cloudir rule {_t(finding['rule_id'], 80)} \u201c{_t(finding['title'], 160)}\u201d "
        f"({finding.get('level')}, {finding.get('outcome') or 'outcome unknown'}, actor "
        f"{finding.get('actor') or 'unknown'}) {verb.rstrip(':')}: "
        f"{finding['events_in_scope']:,} of its {_n(finding['count'], 'event')} by the scoped "
        f"entities, {_ids(finding['event_ids'])}"
    )


def _searched_line(scope: Scope, searched: dict[str, Any]) -> str:
    if not searched.get("timeline"):
        return "the case has no timeline, so no row was searched"
    sources = ", ".join(f"{k} {v:,}" for k, v in searched["rows_in_window_by_source"].items())
    return (
        f"searched {_n(searched['rows_in_window'], 'timeline row')} from "
        f"{_iso(scope.start)} to {_iso(scope.end)} ({sources or 'no source'}) of "
        f"{searched['rows']:,} in the case"
    )


def _entities(scope: Scope) -> str:
    named = [
        f"{k} {', '.join(_t(v, 80) for v in vals[:3])}{' ...' if len(vals) > 3 else ''}"
        for k, vals in scope.as_dict().items()
        if isinstance(vals, list) and vals
    ]
    return "; ".join(named)


def _ids(ids: list[str]) -> str:
    if not ids:
        return "no event id"
    shown = ", ".join(_t(i, 80) for i in ids[:IDS_NAMED])
    more = f" and {len(ids) - IDS_NAMED} more" if len(ids) > IDS_NAMED else ""
    return f"event{'s' if len(ids) > 1 else ''} {shown}{more}"


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


_LINE = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")


def _t(value: Any, limit: int = TEXT) -> str:
    """Evidence text for a reason line: one line, capped (shown inert by its reader)."""
    text = _LINE.sub(" ", "" if value is None else str(value))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- the evidence


def _read_findings(case: Case) -> dict[str, Any]:
    path = case.paths.findings_json
    if not path.is_file():
        return {"findings": [], "suppressions": [], "_state": "absent"}
    try:
        doc = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"{path}: unreadable findings ({exc}); run `cloudir detect`") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
        raise EvidenceError(f"{path}: not a findings document; run `cloudir detect` again")
    findings = [f for f in doc["findings"] if isinstance(f, dict)]
    suppressions = doc.get("suppressions")
    return doc | {
        "findings": findings,
        "suppressions": [s for s in suppressions if isinstance(s, dict)]
        if isinstance(suppressions, list)
        else [],
        "_state": "read",
    }


def _raw(path: str) -> str:
    return f"json_extract_string(raw, {sql_str('$.' + path)})"


USER = '"user"'
# How the timeline's columns name each kind of scoped entity (docs/triage.md).
USER_NAME_SQL = r"""regexp_extract("user", ':user/(?:[^/]*/)*([^/]+)$', 1)"""
ROLE_NAME_SQL = (
    r"""COALESCE(NULLIF(regexp_extract("user", ':assumed-role/([^/]+)/', 1), ''), """
    r"""NULLIF(regexp_extract("user", ':role/(?:[^/]*/)*([^/]+)$', 1), ''))"""
)
SESSION_SQL = r"""regexp_extract("user", ':assumed-role/[^/]+/(.+)$', 1)"""


def scope_condition() -> str:
    """SQL that holds for a timeline row by (or on) one of the scoped entities; named
    parameters carry the scope's values, so no evidence text is ever spliced into SQL."""
    arms = [
        f'"user" IN (SELECT unnest($principals)) OR {identity_sql(USER)} '
        "IN (SELECT unnest($principals))",
        f"{USER_NAME_SQL} IN (SELECT unnest($users))",
        f"{ROLE_NAME_SQL} IN (SELECT unnest($roles))",
        f"{_raw('userIdentity.accessKeyId')} IN (SELECT unnest($access_keys))",
        "host IN (SELECT unnest($hosts)) OR target IN (SELECT unnest($targets)) "
        f"OR {SESSION_SQL} IN (SELECT unnest($instances))",
        f"{_raw('requestParameters.bucketName')} IN (SELECT unnest($buckets))",
        "src_ip IN (SELECT unnest($addresses))",
    ]
    return " OR ".join(f"COALESCE({arm}, false)" for arm in arms)


def scope_params(scope: Scope) -> dict[str, Any]:
    resources = [
        *scope.instances, *scope.buckets, *scope.clusters, *scope.functions, *scope.databases,
        *scope.containers,
    ]  # fmt: skip
    return {
        "principals": list(scope.principals),
        "users": list(scope.users),
        # a role's ARN names every session of it: arn:aws:sts::...:assumed-role/NAME/...
        "roles": [*scope.roles, *(p.rsplit("/", 1)[1] for p in scope.principals if ":role/" in p)],
        "access_keys": list(scope.access_keys),
        "hosts": [*scope.instances, *scope.containers],
        "targets": resources,
        "instances": list(scope.instances),
        "buckets": list(scope.buckets),
        "addresses": list(scope.addresses),
    }


class _Timeline:
    """The case's timeline opened read-only in DuckDB, with `scoped`: the ids, times and
    actor classes of the rows by the scoped entities in the window (alert rows left out)."""

    def __init__(self, case: Case, scope: Scope) -> None:
        self.case = case
        self.scope = scope
        self.files = case.paths.timeline_parts()
        self.con: Any = None
        self.alert_evidence = [
            e for e in case.evidence_ids() if case.read_meta(e).get("kind") == ALERT_KIND
        ]

    def __enter__(self) -> _Timeline:
        if not self.files:
            return self
        from cloudir.analyze.duck import connect, timeline_source, timeline_view_sql

        self.con = connect()
        source = timeline_source(self.con, self.files)
        self.con.execute(
            f"CREATE VIEW timeline AS {timeline_view_sql(self.con, source)}"
        ).fetchall()
        actor = actor_sql(_raw)
        window = "timestamp BETWEEN $start::TIMESTAMPTZ AND $end::TIMESTAMPTZ"
        not_alert = "COALESCE(evidence_id NOT IN (SELECT unnest($alert_evidence)), true)"
        # Every row of the entities, at any time: their findings before and after the
        # window are the story's earlier and later steps.
        self.con.execute(
            f"""CREATE TEMP TABLE entity_rows AS SELECT event_id, timestamp FROM timeline
                WHERE {not_alert} AND ({scope_condition()})""",
            {"alert_evidence": self.alert_evidence} | scope_params(self.scope),
        ).fetchall()
        self.con.execute(
            f"""CREATE TEMP TABLE scoped AS
                SELECT event_id, timestamp, action, outcome, src_ip, "user", source,
                       evidence_id, {_raw("userAgent")} AS user_agent,
                       CASE WHEN source = 'cloudtrail' THEN {actor.kind} END AS actor,
                       CASE WHEN source = 'cloudtrail' THEN {actor.detail} END AS actor_detail,
                       CASE WHEN source = 'cloudtrail' THEN {actor.automation_identity} END
                           AS automation_identity
                FROM timeline
                WHERE {window} AND event_id IN (SELECT event_id FROM entity_rows)
                  AND {not_alert} AND ({scope_condition()})""",
            self._window() | {"alert_evidence": self.alert_evidence} | scope_params(self.scope),
        ).fetchall()
        return self

    def __exit__(self, *_: object) -> None:
        if self.con is not None:
            self.con.close()

    def _window(self) -> dict[str, Any]:
        return {"start": _iso(self.scope.start), "end": _iso(self.scope.end)}

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if self.con is None:
            return []
        cursor = self.con.execute(sql, params or {})
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def activity(self, api: str | None, service: str | None) -> dict[str, Any]:
        """What the scoped entities did in the window: counts, actions, actors, samples."""
        iso = "strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%fZ')"
        empty: dict[str, Any] = {"count": 0, "first": None, "last": None}
        [stats] = self.rows(
            f"SELECT count(*) AS count, {iso.replace('timestamp', 'min(timestamp)')} AS first, "
            f"{iso.replace('timestamp', 'max(timestamp)')} AS last FROM scoped"
        ) or [empty]
        actions = self.rows(
            f"""SELECT action, count(*) AS count FROM scoped GROUP BY action
                ORDER BY count DESC, action LIMIT {ACTIONS_LISTED}"""
        )
        classes = {
            r["actor"] or "unknown": r["count"]
            for r in self.rows("SELECT actor, count(*) AS count FROM scoped GROUP BY actor")
        }
        [known] = self.rows(
            f"""SELECT count(*) AS n, list(DISTINCT automation_identity) FILTER (WHERE actor =
                       '{AUTOMATION}') AS identities FROM scoped
                WHERE actor = '{AWS_SERVICE}'
                   OR (actor = '{AUTOMATION}' AND automation_identity IS NOT NULL)"""
        ) or [{"n": 0, "identities": []}]
        details = self.rows(
            """SELECT actor_detail, count(*) AS count FROM scoped WHERE actor_detail IS NOT NULL
               GROUP BY actor_detail ORDER BY count DESC, actor_detail LIMIT 10"""
        )
        sample = self.rows(
            f"""SELECT {iso} AS timestamp, action, outcome, src_ip, "user", user_agent, actor,
                       event_id, evidence_id
                FROM scoped ORDER BY timestamp, event_id LIMIT {ROWS_SHOWN}"""
        )
        named: dict[str, Any] = {"name": api, "service": service, "count": 0, "event_ids": []}
        if api:
            match = "lower(regexp_extract(action, '[^:]*$')) = lower($api)"
            if service:
                match += " AND starts_with(lower(action), lower($service) || ':')"
            params = {"api": api} | ({"service": service} if service else {})
            [hit] = self.rows(
                f"""SELECT count(*) AS count, list(event_id ORDER BY timestamp, event_id)
                    [1:{IDS_LISTED}] AS ids FROM scoped WHERE {match}""",
                params,
            ) or [{"count": 0, "ids": []}]
            named |= {"count": hit["count"], "event_ids": [_t(i) for i in hit["ids"] or []]}
        return {
            "count": stats["count"],
            "first": stats["first"],
            "last": stats["last"],
            "by_action": [{"action": _t(a["action"]), "count": a["count"]} for a in actions],
            "by_actor": {k: classes.get(k, 0) for k in (*ACTOR_CLASSES, "unknown")},
            # AWS itself, or automation whose role or user name says so: a user agent
            # alone is the caller's own text and explains nothing
            "known_automation": known["n"],
            "automation_identities": sorted(_t(i) for i in known["identities"] or []),
            "actor_details": [_t(d["actor_detail"]) for d in details],
            "named_action": named,
            "rows": [{k: _t(v) if isinstance(v, str) else v for k, v in r.items()} for r in sample],
            "rows_not_shown": max(0, stats["count"] - len(sample)),
            "sample_ids": [_t(r["event_id"]) for r in sample[:IDS_NAMED]],
        }

    def searched(self) -> dict[str, Any]:
        """Which evidence the verdict rests on: rows, time span and sources."""
        if self.con is None:
            return {"timeline": False, "rows": 0, "rows_in_window": 0,
                    "rows_in_window_by_source": {}, "first": None, "last": None,
                    "window": self._window(), "evidence_in_window": [],
                    "alert_evidence_left_out": self.alert_evidence}  # fmt: skip
        iso = "strftime({}, '%Y-%m-%dT%H:%M:%S.%fZ')"
        [total] = self.rows(
            f"SELECT count(*) AS rows, {iso.format('min(timestamp)')} AS first, "
            f"{iso.format('max(timestamp)')} AS last FROM timeline"
        )
        window = "timestamp BETWEEN $start::TIMESTAMPTZ AND $end::TIMESTAMPTZ"
        by_source = self.rows(
            f"""SELECT COALESCE(source, 'unknown') AS source, count(*) AS n FROM timeline
                WHERE {window} GROUP BY ALL ORDER BY n DESC, source""",
            self._window(),
        )
        evidence = self.rows(
            f"""SELECT evidence_id, count(*) AS n FROM timeline WHERE {window}
                GROUP BY ALL ORDER BY evidence_id LIMIT 100""",
            self._window(),
        )
        return {
            "timeline": True,
            "rows": total["rows"],
            "first": total["first"],
            "last": total["last"],
            "window": self._window(),
            "rows_in_window": sum(r["n"] for r in by_source),
            "rows_in_window_by_source": {_t(r["source"]): r["n"] for r in by_source},
            "evidence_in_window": [
                {"evidence_id": _t(r["evidence_id"]), "rows": r["n"]} for r in evidence
            ],
            "alert_evidence_left_out": self.alert_evidence,
        }

    def scoped_ids(self, event_ids: list[str]) -> list[str]:
        return [r["event_id"] for r in self.scoped_hits(event_ids)]

    def outside(self, event_ids: list[str]) -> str | None:
        """ "earlier" or "later": where the entities' rows among `event_ids` lie when none
        is in the window (earlier when any is before it); None when there is none."""
        if self.con is None or not event_ids:
            return None
        [row] = self.rows(
            """SELECT count(*) AS n, min(timestamp) < $start::TIMESTAMPTZ AS before
               FROM entity_rows WHERE event_id IN (SELECT unnest($ids))""",
            {"ids": event_ids, "start": self._window()["start"]},
        )
        if not row["n"]:
            return None
        return "earlier" if row["before"] else "later"

    def scoped_hits(self, event_ids: list[str]) -> list[dict[str, Any]]:
        """Those of `event_ids` that are scoped rows in the window, in time order, with
        each one's actor class and outcome."""
        if self.con is None or not event_ids:
            return []
        return self.rows(
            """SELECT event_id, actor, actor_detail, outcome FROM scoped
               WHERE event_id IN (SELECT unnest($ids)) ORDER BY timestamp, event_id""",
            {"ids": event_ids},
        )


# ---------------------------------------------------------------- findings on the entities


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value if isinstance(v, (str, int))] if isinstance(value, list) else []


def _findings_on(timeline: _Timeline, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each finding on the scoped entities, marked in the window, earlier or later.

    On the entities: one of its matched events is a row of theirs. In the window: one
    such row is in the window. Earlier / later: all such rows are outside it, the first
    before it / all after it. A finding's entity lists are not used: one rule's finding
    gathers every principal's matches, so naming an entity says nothing about when.
    """
    on: list[dict[str, Any]] = []
    for finding in findings:
        ids = _strings(finding.get("event_ids"))
        scoped = timeline.scoped_hits(ids)
        hits = [h["event_id"] for h in scoped]
        when = "in" if hits else timeline.outside(ids)
        if when is None:
            continue
        count = finding.get("count")
        on.append(
            {
                "rule_id": _t(finding.get("rule_id")),
                "title": _t(finding.get("title")),
                "level": _t(finding.get("level")),
                **_triage_of(finding, scoped),
                "automation_misused": finding.get("automation_misused") is True,
                "count": count if isinstance(count, int) else len(ids),
                "first_seen": _t(finding.get("first_seen")),
                "last_seen": _t(finding.get("last_seen")),
                "rank": finding.get("rank") if isinstance(finding.get("rank"), int) else None,
                "events_in_scope": len(hits),
                "event_ids": [_t(i) for i in (hits or ids)[:IDS_LISTED]],
                "in_window": when == "in",
                "when": when,
            }
        )
    return on


def _triage_of(finding: dict[str, Any], scoped: list[dict[str, Any]]) -> dict[str, Any]:
    """Outcome and actor of the finding's events by the scoped entities.

    A finding is one rule's matches across every principal: its own `outcome` and
    `actor` may be another principal's (a person's key creation and Terraform's in one
    finding). Over its scoped events: succeeded when every one with an outcome is a
    success, attempted when none is, mixed otherwise; the actor is the most human class
    among them (actors.ACTOR_CLASSES' order). With no scoped event (a finding matched by
    the entities it names), the finding's own values.
    """
    if not scoped:
        return {
            k: _t(finding.get(k)) if finding.get(k) else None
            for k in ("outcome", "actor", "actor_detail")
        }
    outcomes = {h["outcome"] == "success" for h in scoped if h["outcome"]}
    outcome = (
        None if not outcomes else "mixed" if len(outcomes) == 2 else
        "succeeded" if True in outcomes else "attempted"
    )  # fmt: skip
    order = {kind: n for n, kind in enumerate(ACTOR_CLASSES)}
    first = min(scoped, key=lambda h: order.get(h["actor"], -1))  # unclassified: a person
    return {
        "outcome": outcome,
        "actor": first["actor"],
        "actor_detail": _t(first["actor_detail"]) if first["actor_detail"] else None,
    }


def _listed(finding: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in finding.items() if k not in ("in_window", "when")}


def _suppressed_on(timeline: _Timeline, suppressions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Suppression filters whose sampled removed matches are scoped rows in the window.

    findings.json keeps a sample of each filter's removed event ids (`event_ids_sample`),
    so this sees the filters that removed matches of the scoped rows, not every match.
    """
    listed = []
    for item in suppressions:
        hits = timeline.scoped_ids(_strings(item.get("event_ids_sample")))
        if hits:
            listed.append(
                {
                    "filter_id": _t(item.get("filter_id")),
                    "title": _t(item.get("title")),
                    "rules": [_t(r) for r in _strings(item.get("rules"))[:IDS_LISTED]],
                    "suppressed": item.get("suppressed")
                    if isinstance(item.get("suppressed"), int)
                    else None,
                    "matched": len(hits),
                    "event_ids": [_t(i) for i in hits[:IDS_LISTED]],
                }
            )
    return listed
