"""One report model built from the case; the HTML, Markdown and JSON renderings share it.

Everything in the report is read from the case as it is (case.json, custody, evidence
metadata, the timeline Parquet, findings/findings.json) and nothing in the case is
changed. Every string passes through `mask_document` before it is rendered, so a secret
that an event carried never reaches a reader. The JSON rendering is this model as it is,
versioned by REPORT_VERSION and described in docs/report.md.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

from cloudir import __version__
from cloudir.analyze.detect import ENTITY_FIELDS, FINDINGS_DIR, LEVELS
from cloudir.case import Case, utc_now
from cloudir.errors import UsageError
from cloudir.report.mask import mask_document

REPORT_VERSION = "1.0"
EVENTS_PER_FINDING = 25  # matched events shown in full; the rest are counted
CONTEXT_MINUTES = 30  # the key timeline: this long before and after a finding
CONTEXT_EVENTS = 40
ENTITY_ROWS = 50
PARSE_ERRORS_SHOWN = 200
CHART_BUCKETS = 60

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
STEPS = [60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400]


def build(case: Case) -> dict[str, Any]:
    """The whole report as plain data (JSON types only)."""
    from cloudir.analyze.query import connect

    findings_doc = _read_findings(case)
    con = connect(case)
    findings = [_finding(con, f) for f in findings_doc["findings"]]
    timeline = _timeline(con, case, findings)
    model = {
        "report_version": REPORT_VERSION,
        "generated": utc_now(),
        "cloudir_version": __version__,
        "case": {**case.info, "path": str(case.root)},
        "summary": _summary(findings, timeline),
        "findings": findings,
        "attack": _attack(findings),
        "entities": _entities(con, findings),
        "timeline": timeline,
        "evidence": _evidence(case),
        "containment": _containment(case),
        "custody": _custody(case),
        "parse_errors": _parse_errors(case),
        "rules": findings_doc.get("rules", {}),
    }
    return mask_document(model)


def _read_findings(case: Case) -> dict[str, Any]:
    path = case.root / FINDINGS_DIR / "findings.json"
    if not path.is_file():
        raise UsageError(
            f"{case.root}: no findings yet; run `cloudir detect --case {case.root}` "
            f"(or `cloudir analyze --case {case.root}` for all steps)"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); run `cloudir detect` again") from exc


def _rows(con: Any, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _finding(con: Any, finding: dict[str, Any]) -> dict[str, Any]:
    """The finding with its matched events (raw included) and the key timeline around it."""
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
    return {
        **{k: v for k, v in finding.items() if k != "event_ids"},
        "event_ids": ids,
        "tactics": tactics,
        "events": events,
        "events_not_shown": len(ids) - len(events),
        "context": _context(con, finding),
    }


def _context(con: Any, finding: dict[str, Any]) -> list[dict[str, Any]]:
    """What the same principals and addresses did around the finding, matched rows marked."""
    who = finding["entities"].get("principals", [])
    where = finding["entities"].get("source_ips", [])
    if not who and not where:
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


def _summary(findings: list[dict[str, Any]], timeline: dict[str, Any]) -> dict[str, Any]:
    """What happened, when, who and how bad: the paragraph an incident lead reads first."""
    by_level = Counter(f["level"] for f in findings)
    worst = max((f["level"] for f in findings), key=LEVELS.index, default=None)
    entities: dict[str, Counter[str]] = {name: Counter() for name in ENTITY_FIELDS}
    for f in findings:
        for name, values in f["entities"].items():
            entities.setdefault(name, Counter()).update(values)
    first = min((f["first_seen"] for f in findings), default=None)
    last = max((f["last_seen"] for f in findings), default=None)
    top = sorted(findings, key=lambda f: (-LEVELS.index(f["level"]), f["first_seen"]))[:5]
    counts = ", ".join(f"{by_level[lv]} {lv}" for lv in reversed(LEVELS) if by_level[lv])
    if findings:
        headline = (
            f"{_count(len(findings), 'finding')} ({counts}) between {first} and {last}, "
            f"involving {_count(len(entities['principals']), 'principal')} and "
            f"{_count(len(entities['source_ips']), 'source address', 'source addresses')}."
        )
    else:
        headline = f"No findings in {_count(timeline['events'], 'event')}."
    return {
        "headline": headline,
        "severity": worst,
        "findings_by_level": {level: by_level[level] for level in reversed(LEVELS)},
        "first_finding": first,
        "last_finding": last,
        "top_findings": [{"title": f["title"], "level": f["level"]} for f in top],
        "principals": [v for v, _ in entities["principals"].most_common(5)],
        "source_ips": [v for v, _ in entities["source_ips"].most_common(5)],
        "events": timeline["events"],
        "first_event": timeline["first"],
        "last_event": timeline["last"],
    }


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


def _timeline(con: Any, case: Case, findings: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per source and over time: the chart and the data-source coverage."""
    iso = "'%Y-%m-%dT%H:%M:%S.%fZ'"
    [total] = _rows(
        con,
        f"SELECT count(*) AS events, strftime(min(timestamp), {iso}) AS first, "
        f"strftime(max(timestamp), {iso}) AS last, epoch(min(timestamp)) AS t0, "
        "epoch(max(timestamp)) AS t1 FROM timeline",
    )
    by_source = _rows(
        con,
        f"""SELECT source, artifact, count(*) AS events,
               strftime(min(timestamp), {iso}) AS first, strftime(max(timestamp), {iso}) AS last
            FROM timeline GROUP BY ALL ORDER BY events DESC""",
    )
    step = _bucket_seconds(total["t0"], total["t1"])
    buckets = []
    if total["events"]:
        counts = _rows(
            con,
            f"""SELECT CAST(floor(epoch(timestamp) / {step}) AS BIGINT) AS bucket, source,
                   count(*) AS events FROM timeline WHERE timestamp IS NOT NULL
                GROUP BY ALL ORDER BY bucket""",
        )
        grouped: dict[int, dict[str, int]] = {}
        for row in counts:
            grouped.setdefault(row["bucket"], {})[row["source"] or "unknown"] = row["events"]
        first_bucket = int(total["t0"] // step)
        last_bucket = int(total["t1"] // step)
        buckets = [
            {"start": _iso_seconds(b * step), "counts": grouped.get(b, {})}
            for b in range(first_bucket, last_bucket + 1)
        ]
    summary_path = case.root / "timeline" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {
        "events": total["events"],
        "first": total["first"],
        "last": total["last"],
        "by_source": by_source,
        "rows_by_evidence": summary.get("rows_by_evidence", {}),
        "duplicates_dropped": summary.get("duplicates_dropped", 0),
        "chart": {
            "bucket_seconds": step,
            "buckets": buckets,
            "marks": [
                {"timestamp": f["first_seen"], "level": f["level"], "title": f["title"]}
                | {"finding": n}
                for n, f in enumerate(findings, 1)
            ],
        },
    }


def _bucket_seconds(t0: float | None, t1: float | None) -> int:
    """The smallest round step that draws the span in at most CHART_BUCKETS bars."""
    if t0 is None or t1 is None:
        return STEPS[0]
    span = max(t1 - t0, 1)
    return next((s for s in STEPS if span / s <= CHART_BUCKETS), STEPS[-1])


def _iso_seconds(seconds: float) -> str:
    from datetime import UTC

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _evidence(case: Case) -> list[dict[str, Any]]:
    """Every evidence item with its files and hashes as custody recorded them."""
    recorded = case.recorded_files()
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
            }
        )
    return items


def _containment(case: Case) -> list[dict[str, Any]]:
    """What the responders changed in the account (`cloudir respond`), from custody."""
    from cloudir.respond.restore import recorded_actions

    return [action.as_dict() for action in recorded_actions(case)]


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


def _parse_errors(case: Case) -> dict[str, Any]:
    """What the timeline could not read: each skipped record or file, with its reason."""
    path = case.root / "timeline" / "errors.jsonl"
    items, count = [], 0
    file_reasons: dict[str, str] = {}
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                count += 1
                try:
                    item = json.loads(line)
                except ValueError:
                    item = {"reason": line.strip()}
                if not isinstance(item, dict):
                    item = {"reason": str(item)}
                if "line" not in item and "record" not in item and item.get("path"):
                    file_reasons.setdefault(str(item["path"]), str(item.get("reason", "")))
                if len(items) < PARSE_ERRORS_SHOWN:
                    items.append(item)
    summary_path = case.root / "timeline" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    unparsed = [
        {
            "evidence_id": _evidence_id_of(str(p)),
            "path": str(p),
            "reason": file_reasons.get(str(p)),
        }
        for p in summary.get("unparsed_files", [])
    ]
    return {"count": count, "items": items, "unparsed_files": unparsed}


def _evidence_id_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "evidence" else None
