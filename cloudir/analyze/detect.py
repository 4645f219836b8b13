"""Sigma rules over the timeline: compiled once to DuckDB SQL, run in one scan.

Rules are read with pySigma and converted by a DuckDB flavour of pySigma's SQLite backend:
string matching is case-insensitive as Sigma requires (ILIKE), regular expressions go to
RE2 through `regexp_matches`, and a field that is not a timeline column is a JSON path into
`raw`, so community rules run unmodified. Every rule's predicate is checked on its own
first (a rule DuckDB cannot bind, or whose regex RE2 refuses, is skipped with the reason);
the good ones are then evaluated together in a single pass over the Parquet files.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cloudir import __version__
from cloudir.analyze.schema import COLUMN_NAMES
from cloudir.case import Case, utc_now
from cloudir.errors import UsageError

BUILTIN_RULES = Path(__file__).with_name("rules")
FINDINGS_DIR = "findings"
LEVELS = ["informational", "low", "medium", "high", "critical"]

# logsource (product, service, category) -> timeline artifacts. One table, extended by the
# parsers that add artifacts; a rule whose logsource is not here cannot run and says so.
LOGSOURCES: dict[tuple[str | None, str | None, str | None], tuple[str, ...]] = {
    ("aws", "cloudtrail", None): ("aws:cloudtrail",),
    ("aws", None, None): ("aws:cloudtrail",),
}


def _backend_class() -> type:
    """Built on first use: pySigma is only imported by the commands that run rules."""
    from sigma.backends.sqlite import sqliteBackend
    from sigma.conditions import ConditionFieldEqualsValueExpression
    from sigma.conversion.state import ConversionState

    class DuckDBBackend(sqliteBackend):
        identifier: ClassVar[str] = "cloudir-duckdb"
        name: ClassVar[str] = "cloudir DuckDB backend"
        wildcard_match_expression: ClassVar[str] = "{field} ILIKE '{value}' ESCAPE '\\'"
        contains_expression: ClassVar[str] = "{field} ILIKE '%{value}%' ESCAPE '\\'"
        eq_expression: ClassVar[str] = "{field} ILIKE {value}"
        re_expression: ClassVar[str] = "regexp_matches({field}, '{regex}')"
        bool_expression: ClassVar[str] = "lower({field}) = {value}"
        null_safe_expression: ClassVar[str] = "COALESCE({expr}, false)"
        compare_op_expression: ClassVar[str] = "TRY_CAST({field} AS DOUBLE) {operator} {value}"
        timestamp_seconds_expression = "epoch({field})"
        event_id_field = "event_id"
        table = "timeline"

        def escape_and_quote_field(self, field_name: str) -> str:
            if field_name in COLUMN_NAMES:
                return f'"{field_name}"'
            return json_path(field_name)

        def resolve_table(self, state: Any = None) -> str:
            return "timeline"

        def convert_condition_field_eq_val_num(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
        ) -> str:
            field_sql = self.escape_and_quote_field(cond.field)
            return f"TRY_CAST({field_sql} AS DOUBLE) = {cond.value.number}"

        def convert_condition_field_eq_val_cidr(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
        ) -> str:
            """Real network math (IPv4 and IPv6), not string prefixes: see cidr_match."""
            network = str(cond.value.network).replace("'", "''")
            return f"cidr_match({self.escape_and_quote_field(cond.field)}, '{network}')"

        def finalize_query_default(self, rule: Any, query: str, index: int, state: Any) -> Any:
            return query  # the bare predicate: detect.py builds the one scan around it

    return DuckDBBackend


def cidr_match(address: str | None, network: str) -> bool | None:
    """DuckDB UDF: is `address` inside `network`? DuckDB's inet extension is not built in."""
    if address is None:
        return None
    try:
        return ipaddress.ip_address(address.strip()) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False  # not an address (a service name such as "ec2.amazonaws.com")


def register_functions(con: Any) -> None:
    con.create_function(
        "cidr_match", cidr_match, ["VARCHAR", "VARCHAR"], "BOOLEAN", null_handling="special"
    )


def json_path(field_name: str) -> str:
    """`requestParameters.userName` -> the string at that path in `raw` (NULL if absent)."""
    parts = [p.replace('"', '\\"') for p in field_name.split(".")]
    path = "$." + ".".join(f'"{p}"' for p in parts)
    return "json_extract_string(raw, '" + path.replace("'", "''") + "')"


@dataclass
class LoadedRule:
    rule_id: str
    title: str
    level: str
    status: str
    tags: list[str]
    path: str
    artifacts: tuple[str, ...]
    predicate: str
    description: str = ""

    @property
    def techniques(self) -> list[str]:
        return [t.split(".", 1)[1].upper() for t in self.tags if t.startswith("attack.t")]


@dataclass
class RuleSet:
    rules: list[LoadedRule] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def rule_files(paths: Iterable[Path], builtin: bool) -> list[Path]:
    roots = ([BUILTIN_RULES] if builtin and BUILTIN_RULES.is_dir() else []) + list(paths)
    files: list[Path] = []
    for root in roots:
        if not root.exists():
            raise UsageError(f"{root}: no such rule file or folder")
        if root.is_file():
            files.append(root)
        else:
            files.extend(sorted(p for p in root.rglob("*") if p.suffix in (".yml", ".yaml")))
    return files


def load_rules(files: list[Path], con: Any) -> RuleSet:
    """Parse, convert and test-bind every rule; each failure is a skip with its reason."""
    import yaml
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule
    from sigma.exceptions import SigmaError

    backend = _backend_class()(collect_errors=False, fulltext_field="raw")
    result = RuleSet()
    for path in files:
        try:
            with _quiet_stderr():  # pySigma's RE2 check logs refused patterns natively
                collection = SigmaCollection.from_yaml(path.read_text(), collect_errors=True)
        except (OSError, SigmaError, ValueError, yaml.YAMLError) as exc:
            reason = " ".join(str(exc).split())
            result.skipped.append(_skip(path, None, f"cannot read: {reason}"))
            continue
        if not collection.rules:
            reasons = "; ".join(str(e) for e in collection.errors) or "no rule in the file"
            result.skipped.append(_skip(path, None, f"invalid Sigma: {reasons}"))
        for rule in collection.rules:
            if isinstance(rule, SigmaCorrelationRule):
                result.skipped.append(_skip(path, rule, "correlation rules are not run yet"))
                continue
            loaded = _convert(backend, rule, path, con, result)
            if loaded is not None:
                result.rules.append(loaded)
    return result


def _convert(backend: Any, rule: Any, path: Path, con: Any, result: RuleSet) -> LoadedRule | None:
    from sigma.exceptions import SigmaError

    if getattr(rule, "errors", None):
        reasons = "; ".join(str(e) for e in rule.errors)
        result.skipped.append(_skip(path, rule, f"invalid Sigma: {reasons}"))
        return None
    source = rule.logsource
    key = (source.product, source.service, source.category)
    artifacts = LOGSOURCES.get(key)
    if artifacts is None:
        result.skipped.append(_skip(path, rule, f"no timeline data for logsource {key}"))
        return None
    try:
        queries = backend.convert_rule(rule)
    except (SigmaError, ValueError, TypeError, AttributeError) as exc:
        result.skipped.append(_skip(path, rule, f"cannot convert: {exc}"))
        return None
    if not queries:  # a base rule with generate: false only feeds its correlation
        result.skipped.append(_skip(path, rule, "only feeds a correlation rule, not run alone"))
        return None
    predicate = " OR ".join(f"({q})" for q in queries)
    try:
        with _quiet_stderr():  # RE2 logs refused patterns itself; the reason is in exc
            con.execute(f"EXPLAIN SELECT event_id FROM timeline WHERE {predicate}").fetchall()
    except Exception as exc:  # DuckDB binder or RE2 refusing the rule's SQL
        reason = str(exc).splitlines()[0]
        result.skipped.append(_skip(path, rule, f"DuckDB cannot run it: {reason}"))
        return None
    return LoadedRule(
        rule_id=str(rule.id or path.stem),
        title=rule.title,
        level=str(rule.level.name).lower() if rule.level else "medium",
        status=str(rule.status.name).lower() if rule.status else "",
        tags=[str(t) for t in rule.tags],
        path=str(path),
        artifacts=artifacts,
        predicate=predicate,
        description=rule.description or "",
    )


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (native libraries write there directly) for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _skip(path: Path, rule: Any, reason: str) -> dict[str, str]:
    return {
        "path": str(path),
        "id": str(getattr(rule, "id", "") or ""),
        "title": str(getattr(rule, "title", "") or ""),
        "reason": reason,
    }


ENTITY_COLUMNS = {
    "principals": '"user"',
    "access_keys": "json_extract_string(raw, '$.userIdentity.accessKeyId')",
    "source_ips": "src_ip",
    "hosts": "host",
    "targets": "target",
}


def run_rules(con: Any, rules: list[LoadedRule]) -> list[dict[str, Any]]:
    """One scan: every rule's predicate is a column, rows that match none are never read."""
    if not rules:
        return []
    hits = [
        f"COALESCE(artifact IN ({_in_list(r.artifacts)}) AND ({r.predicate}), false) AS h{n}"
        for n, r in enumerate(rules)
    ]
    entity_sql = ", ".join(f"{sql} AS {name}" for name, sql in ENTITY_COLUMNS.items())
    where = " OR ".join(f"h{n}" for n in range(len(rules)))
    rows = con.execute(
        f"""SELECT * FROM (
              SELECT event_id, timestamp, {entity_sql}, {", ".join(hits)} FROM timeline
            ) WHERE {where} ORDER BY timestamp"""
    ).fetchall()
    matches: list[dict[str, Any]] = []
    width = 2 + len(ENTITY_COLUMNS)
    for row in rows:
        for n, matched in enumerate(row[width:]):
            if matched:
                entities = dict(zip(ENTITY_COLUMNS, row[2:width], strict=True))
                matches.append({"rule": n, "event_id": row[0], "timestamp": row[1], **entities})
    return matches


def _in_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def findings_from(rules: list[LoadedRule], matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for match in matches:
        grouped.setdefault(match["rule"], []).append(match)
    findings = []
    for n, hits in grouped.items():
        rule = rules[n]
        entities = {
            name: sorted({str(h[name]) for h in hits if h[name]}) for name in ENTITY_COLUMNS
        }
        findings.append(
            {
                "rule_id": rule.rule_id,
                "title": rule.title,
                "level": rule.level,
                "status": rule.status,
                "tags": rule.tags,
                "techniques": rule.techniques,
                "count": len(hits),
                "first_seen": _iso(hits[0]["timestamp"]),
                "last_seen": _iso(hits[-1]["timestamp"]),
                "event_ids": [h["event_id"] for h in hits],
                "entities": entities,
                "rule_path": rule.path,
                "description": rule.description,
            }
        )
    findings.sort(key=lambda f: (-LEVELS.index(f["level"]), f["first_seen"], f["title"]))
    return findings


def _iso(moment: Any) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate(paths: list[Path], builtin: bool) -> RuleSet:
    """Load and compile rules against an empty timeline: no case needed."""
    from cloudir.analyze.duck import connect
    from cloudir.analyze.schema import TIMELINE_SCHEMA

    con = connect()
    columns = ", ".join(
        f'NULL::{"TIMESTAMPTZ" if f.name == "timestamp" else "VARCHAR"} AS "{f.name}"'
        for f in TIMELINE_SCHEMA
    )
    con.execute(f"CREATE VIEW timeline AS SELECT {columns} WHERE false").fetchall()
    register_functions(con)
    return load_rules(rule_files(paths, builtin), con)


@dataclass
class DetectResult:
    rules: RuleSet
    findings: list[dict[str, Any]]
    path: Path


def detect(case: Case, extra_rules: list[Path], builtin: bool = True) -> DetectResult:
    """Run the rules over the case's timeline; writes findings/findings.{json,parquet}."""
    from cloudir.analyze.query import connect

    con = connect(case)
    register_functions(con)
    rules = load_rules(rule_files(extra_rules, builtin), con)
    matches = run_rules(con, rules.rules)
    findings = findings_from(rules.rules, matches)
    out = case.root / FINDINGS_DIR
    out.mkdir(exist_ok=True)
    document = {
        "case": case.info.get("id"),
        "generated": utc_now(),
        "cloudir_version": __version__,
        "rules": {"loaded": len(rules.rules), "skipped": rules.skipped},
        "findings": findings,
    }
    _write_json(out / "findings.json", document)
    _write_parquet(out / "findings.parquet", rules.rules, matches)
    return DetectResult(rules, findings, out)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(path)


def _write_parquet(path: Path, rules: list[LoadedRule], matches: list[dict[str, Any]]) -> None:
    """One row per (rule, event): the table a responder joins back to the timeline."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "rule_id": [rules[m["rule"]].rule_id for m in matches],
            "title": [rules[m["rule"]].title for m in matches],
            "level": [rules[m["rule"]].level for m in matches],
            "event_id": [m["event_id"] for m in matches],
            "timestamp": pa.array([m["timestamp"] for m in matches], pa.timestamp("us", "UTC")),
            **{name: [m[name] for m in matches] for name in ENTITY_COLUMNS},
        }
    )
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
