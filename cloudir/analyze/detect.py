"""Sigma rules over the timeline: compiled once to DuckDB SQL, run in one scan.

Rules are read with pySigma and converted by a DuckDB flavour of its SQLite backend
(`sigma_sql.py`). Every rule's predicate is checked on its own first (a rule DuckDB cannot
bind, or whose regex RE2 refuses, is skipped with the reason); the good ones are then
evaluated together in a single pass over the Parquet files, which keeps every matched
event in a small temp table. Correlation rules run over that table (`correlate.py`).
The evaluation semantics are written down in docs/detection.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudir import __version__
from cloudir.analyze import correlate
from cloudir.analyze.sigma_sql import backend_class, register_functions, sql_str
from cloudir.case import Case, utc_now
from cloudir.errors import UsageError

BUILTIN_RULES = Path(__file__).with_name("rules")
FINDINGS_DIR = "findings"
LEVELS = ["informational", "low", "medium", "high", "critical"]


@dataclass(frozen=True)
class LogSource:
    artifacts: tuple[str, ...]
    condition: str | None = None  # an extra row test, for categories inside an artifact


_SYSLOG = ("linux:syslog", "linux:auth", "linux:cron", "linux:journal")
_PROCESS = LogSource(
    ("linux:auditd", "linux:bash_history", "linux:zsh_history"),
    "json_extract_string(raw, '$.CommandLine') IS NOT NULL",
)

# logsource (product, service, category) -> timeline rows. One table, extended by the
# parsers that add artifacts; a rule whose logsource is not here cannot run and says so.
LOGSOURCES: dict[tuple[str | None, str | None, str | None], LogSource] = {
    ("aws", "cloudtrail", None): LogSource(("aws:cloudtrail",)),
    ("aws", None, None): LogSource(("aws:cloudtrail",)),
    ("linux", "auth", None): LogSource(("linux:auth",)),
    ("linux", "sshd", None): LogSource(("linux:auth",)),
    ("linux", "syslog", None): LogSource(_SYSLOG),
    ("linux", "cron", None): LogSource(("linux:cron",)),
    ("linux", "auditd", None): LogSource(("linux:auditd",)),
    ("linux", None, "process_creation"): _PROCESS,
    ("docker", "diff", None): LogSource(("container:diff",)),
    ("docker", None, None): LogSource(("container:diff", "container:state", "container:log")),
}


@dataclass
class LoadedRule:
    """A detection or correlation rule that runs; `output` False: it only feeds another."""

    rule_id: str
    title: str
    level: str
    status: str
    tags: list[str]
    path: str
    description: str = ""
    falsepositives: list[str] = field(default_factory=list)
    name: str | None = None
    output: bool = True
    logsource: LogSource | None = None
    predicate: str = ""
    correlation: correlate.Correlation | None = None

    @property
    def techniques(self) -> list[str]:
        return [t.split(".", 1)[1].upper() for t in self.tags if t.startswith("attack.t")]

    @property
    def is_correlation(self) -> bool:
        return self.correlation is not None


@dataclass
class RuleSet:
    rules: list[LoadedRule] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    backend: Any = None
    key_columns: dict[str, str] = field(default_factory=dict)  # field SQL -> _hits column

    @property
    def reported(self) -> list[LoadedRule]:
        return [r for r in self.rules if r.output]


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
    """Parse, convert and test-bind every rule; each failure is a skip with its reason.

    All files form one collection, so a correlation may refer to rules in other files.
    """
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule
    from sigma.exceptions import SigmaError

    result = RuleSet(backend=backend_class()(collect_errors=False, fulltext_field="raw"))
    rules: list[Any] = []
    paths: dict[int, Path] = {}
    for path in files:
        for rule in _read(path, result):
            paths[id(rule)] = path
            rules.append(rule)
    collection = SigmaCollection(rules)
    usable = []
    for rule in rules:
        if isinstance(rule, SigmaCorrelationRule):
            try:
                rule.resolve_rule_references(collection)
            except SigmaError as exc:
                result.skipped.append(_skip(paths[id(rule)], rule, f"cannot resolve: {exc}"))
                continue
        usable.append(rule)
    loaded: dict[int, LoadedRule] = {}  # id(pySigma rule) -> what it became
    for rule in SigmaCollection._referenced_first(usable):
        path = paths[id(rule)]
        if isinstance(rule, SigmaCorrelationRule):
            done = _convert_correlation(rule, path, loaded, result)
        else:
            done = _convert(result.backend, rule, path, con, result)
        if done is not None:
            loaded[id(rule)] = done
            result.rules.append(done)
    return result


def _read(path: Path, result: RuleSet) -> list[Any]:
    import yaml
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    try:
        with _quiet_stderr():  # pySigma's RE2 check logs refused patterns natively
            collection = SigmaCollection.from_yaml(path.read_text(), collect_errors=True)
    except (OSError, SigmaError, ValueError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        result.skipped.append(_skip(path, None, f"cannot read: {reason}"))
        return []
    if not collection.rules:
        reasons = "; ".join(str(e) for e in collection.errors) or "no rule in the file"
        result.skipped.append(_skip(path, None, f"invalid Sigma: {reasons}"))
    good = []
    for rule in collection.rules:
        if getattr(rule, "errors", None):
            reasons = "; ".join(str(e) for e in rule.errors)
            result.skipped.append(_skip(path, rule, f"invalid Sigma: {reasons}"))
        else:
            good.append(rule)
    return good


def _describe(rule: Any, path: Path) -> dict[str, Any]:
    return {
        "rule_id": str(rule.id or rule.name or path.stem),
        "title": rule.title,
        "level": str(rule.level.name).lower() if rule.level else "medium",
        "status": str(rule.status.name).lower() if rule.status else "",
        "tags": [str(t) for t in rule.tags],
        "path": str(path),
        "description": rule.description or "",
        "falsepositives": [str(f) for f in (rule.falsepositives or [])],
        "name": rule.name,
        "output": bool(getattr(rule, "_output", True)),
    }


def _convert(backend: Any, rule: Any, path: Path, con: Any, result: RuleSet) -> LoadedRule | None:
    from sigma.exceptions import SigmaError

    source = rule.logsource
    key = (source.product, source.service, source.category)
    logsource = LOGSOURCES.get(key)
    if logsource is None:
        result.skipped.append(_skip(path, rule, f"no timeline data for logsource {key}"))
        return None
    try:
        backend.convert_rule(rule)
        queries = rule.get_conversion_result()
    except (SigmaError, ValueError, TypeError, AttributeError) as exc:
        result.skipped.append(_skip(path, rule, f"cannot convert: {exc}"))
        return None
    predicate = " OR ".join(f"({q})" for q in queries)
    try:
        with _quiet_stderr():  # RE2 logs refused patterns itself; the reason is in exc
            con.execute(
                f"EXPLAIN SELECT event_id FROM ({scan_sql(backend)}) "
                f"WHERE {backend.fields.resolve(predicate)}"
            ).fetchall()
    except Exception as exc:  # DuckDB binder or RE2 refusing the rule's SQL
        reason = str(exc).splitlines()[0]
        result.skipped.append(_skip(path, rule, f"DuckDB cannot run it: {reason}"))
        return None
    return LoadedRule(**_describe(rule, path), logsource=logsource, predicate=predicate)


def _convert_correlation(
    rule: Any, path: Path, loaded: dict[int, LoadedRule], result: RuleSet
) -> LoadedRule | None:
    kind = str(rule.type.name).lower()
    if kind not in correlate.SUPPORTED:
        result.skipped.append(_skip(path, rule, f"correlation type {kind} is not supported"))
        return None
    refs = [ref.rule for ref in rule.referenced_rules]
    missing = [r.title for r in refs if id(r) not in loaded]
    if missing:
        reason = f"refers to rules that cannot run: {', '.join(missing)}"
        result.skipped.append(_skip(path, rule, reason))
        return None
    group_by = list(rule.group_by or [])
    condition = rule.condition
    if kind in ("temporal", "temporal_ordered") and condition is None:
        operator, threshold = ">=", float(len(refs))
    elif condition is None or not hasattr(condition, "op"):
        result.skipped.append(_skip(path, rule, "extended correlation conditions not supported"))
        return None
    else:
        operator = correlate.OPERATORS[condition.op.name.lower()]
        threshold = float(condition.count)
    value_field = condition.fieldref if condition is not None and kind == "value_count" else None
    if isinstance(value_field, list):
        value_field = value_field[0] if len(value_field) == 1 else None
        if value_field is None:
            result.skipped.append(_skip(path, rule, "value_count over several fields"))
            return None
    aliases = {a.alias: {ref.reference: f for ref, f in a.mapping.items()} for a in rule.aliases}
    spec = correlate.Correlation(
        kind=kind,
        timespan=float(rule.timespan.seconds),
        operator=operator,
        threshold=threshold,
        group_by=group_by,
    )
    for ref, target in zip(rule.referenced_rules, refs, strict=True):
        fields = [aliases.get(g, {}).get(ref.reference, g) for g in group_by]
        done = loaded[id(target)]
        if done.correlation is None:
            spec.inputs.append(
                correlate.CorrelationInput(
                    hit_column=f"h{result.rules.index(done)}",
                    alerts_of=None,
                    group_columns=[_key_column(result, f) for f in fields],
                    value_column=_key_column(result, value_field) if value_field else None,
                )
            )
            continue
        theirs = done.correlation.group_by
        if not all(f in theirs for f in fields):
            reason = f"groups by {fields}, which {done.title!r} does not all group by"
            result.skipped.append(_skip(path, rule, reason))
            return None
        spec.inputs.append(
            correlate.CorrelationInput(
                hit_column=None,
                alerts_of=result.rules.index(done),
                group_columns=[f"g{theirs.index(f)}" for f in fields],
            )
        )
    return LoadedRule(**_describe(rule, path), correlation=spec)


def _key_column(result: RuleSet, field_name: str) -> str:
    """A column of _hits holding `field_name`, shared by every correlation that needs it."""
    sql = result.backend.field_sql(field_name)
    return result.key_columns.setdefault(sql, f"k{len(result.key_columns)}")


def scan_sql(backend: Any) -> str:
    """The timeline as rules see it: every row with its raw fields parsed once."""
    return backend.fields.scan_sql("timeline")


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


ENTITY_FIELDS = {
    "principals": "user",
    "access_keys": "userIdentity.accessKeyId",
    "source_ips": "src_ip",
    "hosts": "host",
    "targets": "target",
}


def run_rules(con: Any, ruleset: RuleSet) -> dict[int, list[str]]:
    """One scan: each detection rule is a boolean column; matched rows go to `_hits`.

    Returns, per reported rule (index into ruleset.rules), the matched event ids.
    """
    detections = [(n, r) for n, r in enumerate(ruleset.rules) if not r.is_correlation]
    hits: dict[int, list[str]] = {}
    backend = ruleset.backend
    entities = [f"{backend.field_sql(f)} AS e_{name}" for name, f in ENTITY_FIELDS.items()]
    keys = [f"{sql} AS {column}" for sql, column in ruleset.key_columns.items()]
    flags = [f"{_gated(r, backend)} AS h{n}" for n, r in detections]
    artifacts = sorted({a for _, r in detections for a in r.logsource.artifacts})
    any_hit = " OR ".join(f"h{n}" for n, _ in detections) or "false"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _hits AS SELECT * FROM (
              SELECT event_id, timestamp, {", ".join(entities + keys + flags)}
              FROM ({scan_sql(backend)}) WHERE artifact IN ({_in_list(artifacts) or "NULL"})
            ) WHERE {any_hit}"""
    ).fetchall()
    for n, rule in detections:
        if not rule.output:
            continue  # a base rule: its hits stay in DuckDB for the correlations
        rows = con.execute(f"SELECT event_id FROM _hits WHERE h{n} ORDER BY timestamp, event_id")
        hits[n] = [r[0] for r in rows.fetchall()]
    for n, rule in enumerate(ruleset.rules):
        if rule.correlation is not None:
            hits[n] = correlate.run(con, n, rule.correlation)
    return {n: ids for n, ids in hits.items() if ruleset.rules[n].output and ids}


def _gated(rule: LoadedRule, backend: Any) -> str:
    """The rule on its own rows only, never NULL.

    Nested CASE, like the predicates themselves (see sigma_sql `_lazy`): rows of other
    logsources, or whose eventName already differs, cost one compare, not the whole rule.
    """
    source = rule.logsource
    predicate = backend.fields.resolve(rule.predicate)
    if source.condition:
        predicate = f"CASE WHEN {source.condition} THEN {predicate} ELSE false END"
    test = f"artifact IN ({_in_list(source.artifacts)})"
    return f"CASE WHEN {test} THEN {predicate} ELSE false END"


def _in_list(values: Iterable[str]) -> str:
    return ", ".join(sql_str(v) for v in values)


def findings_from(con: Any, ruleset: RuleSet, hits: dict[int, list[str]]) -> list[dict[str, Any]]:
    """One finding per rule with hits, its events' entities gathered from `_hits`."""
    findings = []
    for n, event_ids in hits.items():
        rule = ruleset.rules[n]
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _ids AS SELECT unnest(?::VARCHAR[]) AS id", [event_ids]
        ).fetchall()
        columns = ", ".join(
            f"list_sort(list_distinct(list(e_{name}::VARCHAR)))" for name in ENTITY_FIELDS
        )
        first, last, *values = con.execute(
            f"SELECT min(timestamp), max(timestamp), {columns} FROM _hits "
            "WHERE event_id IN (SELECT id FROM _ids)"
        ).fetchall()[0]
        finding = {
            "rule_id": rule.rule_id,
            "title": rule.title,
            "level": rule.level,
            "status": rule.status,
            "tags": rule.tags,
            "techniques": rule.techniques,
            "count": len(event_ids),
            "first_seen": _iso(first),
            "last_seen": _iso(last),
            "event_ids": event_ids,
            "entities": {
                name: [v for v in found if v]
                for name, found in zip(ENTITY_FIELDS, values, strict=True)
            },
            "rule_path": rule.path,
            "description": rule.description,
            "falsepositives": rule.falsepositives,
        }
        if rule.correlation is not None:
            finding["correlation"] = rule.correlation.kind
            finding["alerts"] = correlate.alert_count(con, n)
        findings.append(finding)
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
    limit_memory(con, case.root / FINDINGS_DIR)
    rules = load_rules(rule_files(extra_rules, builtin), con)
    hits = run_rules(con, rules)
    findings = findings_from(con, rules, hits)
    out = case.root / FINDINGS_DIR
    out.mkdir(exist_ok=True)
    document = {
        "case": case.info.get("id"),
        "generated": utc_now(),
        "cloudir_version": __version__,
        "rules": {"loaded": len(rules.reported), "skipped": rules.skipped},
        "findings": findings,
    }
    _write_json(out / "findings.json", document)
    _write_parquet(con, out / "findings.parquet", findings)
    con.close()
    with contextlib.suppress(OSError):
        (out / ".spill").rmdir()  # DuckDB removed its spill files when it closed
    return DetectResult(rules, findings, out)


MEMORY_LIMIT = "1GB"


def limit_memory(con: Any, scratch: Path) -> None:
    """Bound DuckDB: the matched events of a broad base rule (every read-only call feeds
    the discovery-burst correlation) can be millions of rows; they spill to disk instead."""
    spill = scratch / ".spill"
    spill.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'").fetchall()
    con.execute(f"SET temp_directory = {sql_str(str(spill))}").fetchall()
    # Filter pushdown would copy every rule's predicate into the scan's filter and then
    # evaluate it again for the kept rows; each rule's column is computed once instead.
    con.execute("SET disabled_optimizers = 'filter_pushdown'").fetchall()
    con.execute("SET preserve_insertion_order = false").fetchall()


def _write_json(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(path)


def _write_parquet(con: Any, path: Path, findings: list[dict[str, Any]]) -> None:
    """One row per (rule, event): the table a responder joins back to the timeline."""
    import pyarrow as pa

    pairs = [(f["rule_id"], f["title"], f["level"], e) for f in findings for e in f["event_ids"]]
    names = ["rule_id", "title", "level", "event_id"]
    columns = list(zip(*pairs, strict=True)) if pairs else [[] for _ in names]
    con.register("_pairs", pa.table([pa.array(c, pa.string()) for c in columns], names=names))
    entities = ", ".join(f"h.e_{name} AS {name}" for name in ENTITY_FIELDS)
    tmp = path.with_name(path.name + ".tmp")
    con.execute(
        f"""COPY (SELECT p.rule_id, p.title, p.level, p.event_id, h.timestamp, {entities}
                  FROM _pairs p JOIN (SELECT DISTINCT ON (event_id) * FROM _hits) h
                  USING (event_id) ORDER BY h.timestamp, p.rule_id)
            TO {sql_str(str(tmp))} (FORMAT parquet)"""
    ).fetchall()
    tmp.replace(path)
