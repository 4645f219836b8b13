"""Sigma rules over the timeline: compiled once to DuckDB SQL, run in one scan.

This module is the orchestration: it reads the rule files (each YAML document parsed on
its own, so one broken document costs only itself; Sigma's collection actions and filters
applied as pySigma applies them), converts each rule with the DuckDB backend of
`cloudir/analyze/sigma/`, runs them and writes the findings. Every rule's predicate is
bound on its own first (a rule DuckDB cannot bind, or whose regex RE2 refuses, is skipped
with the reason); the good ones are then evaluated together in a single pass over the
Parquet files, which keeps every matched event in a small temp table. Correlation rules
run over that table (`sigma/correlation.py`). The evaluation semantics are written down
in docs/detection.md.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol

from cloudir import __version__
from cloudir.analyze.duck import bind, sql_str
from cloudir.analyze.schema import PROMOTED_ARTIFACT, PROMOTED_FROM
from cloudir.analyze.sigma.context import FactSources
from cloudir.analyze.sigma.correlation import Correlation, Referenced, Unsupported, alert_count
from cloudir.analyze.sigma.correlation import from_rule as correlation_from_rule
from cloudir.analyze.sigma.correlation import run as run_correlation
from cloudir.analyze.sigma.runtime import register_functions
from cloudir.analyze.suppress import SAMPLE as SUPPRESSED_SAMPLE
from cloudir.analyze.suppress import Suppression
from cloudir.analyze.triage import (
    AUTOMATION_CALLS,
    CLOUDTRAIL_COLUMNS,
    actor_class_table,
    actor_joined_sql,
    actor_key_columns,
    automation_baseline,
    automation_calls_sql,
    event_columns,
    finding_triage,
    shown_level,
    tests_outcome,
)
from cloudir.analyze.triage import LEVELS as LEVELS
from cloudir.analyze.triage import rank as rank_findings
from cloudir.case import Case, utc_now
from cloudir.errors import UsageError

BUILTIN_RULES = Path(__file__).with_name("rules")


@dataclass(frozen=True)
class LogSource:
    artifacts: tuple[str, ...]
    condition: str | None = None  # an extra row test, for categories inside an artifact


LogsourceKey = tuple[str | None, str | None, str | None]


def declared_logsources() -> dict[LogsourceKey, LogSource]:
    """logsource (product, service, category) -> timeline rows, as the parsers declare them
    (`RowSource.logsources`); a rule whose logsource is not here cannot run and says so."""
    from cloudir.analyze.parsers import logsource_rows

    return {key: _selection(pairs) for key, pairs in logsource_rows().items()}


def _selection(pairs: list[tuple[str, str | None]]) -> LogSource:
    """The artifacts, and one row condition: the artifacts' own where they differ."""
    artifacts = tuple(dict.fromkeys(artifact for artifact, _ in pairs))
    conditions = {condition for _, condition in pairs}
    if len(conditions) == 1:
        return LogSource(artifacts, conditions.pop())
    tests = [
        f"artifact = {sql_str(artifact)}" + (f" AND ({condition})" if condition else "")
        for artifact, condition in pairs
    ]
    return LogSource(artifacts, " OR ".join(f"({test})" for test in tests))


LOGSOURCES: dict[LogsourceKey, LogSource] = declared_logsources()


def field_mapping_pipeline() -> Any:
    """The logsources' declared field names (`Logsource.fields`) as pySigma's own field
    mapping, each under the condition that the rule's logsource is that one: a rule for
    `category: dns` reads `query` where the DNS rows hold the name, and a CloudTrail rule
    that names a `query` field still reads its own."""
    from sigma.processing.conditions import LogsourceCondition
    from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
    from sigma.processing.transformations import FieldMappingTransformation

    from cloudir.analyze.parsers import logsource_fields

    items = [
        ProcessingItem(
            FieldMappingTransformation({k: v for k, v in mapping.items()}),
            rule_conditions=[
                LogsourceCondition(category=category, product=product, service=service)
            ],
            identifier=f"cloudir-fields-{product}-{service}-{category}",
        )
        for (product, service, category), mapping in logsource_fields().items()
    ]
    return ProcessingPipeline(items, name="cloudir logsource field names")


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
    correlation: Correlation | None = None
    sigma_logsource: Any = None  # pySigma's, for the suppression filters' logsource test
    about_failure: bool = False  # it tests the outcome: an attempt keeps its level
    # where, on rows with promoted columns, it may read a field that is only in `raw`
    # (SQL over the promoted columns; None: nowhere); see raw_parse_gate
    raw_guard: str | None = None

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
    key_feeds: dict[str, list[LoadedRule]] = field(default_factory=dict)  # column -> its rules
    suppressed: dict[int, int] = field(default_factory=dict)  # rule index -> matches removed

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
    A failure costs one document of a file, not the file's other rules; only a broken
    collection action (`action: global`) also costs the rules after it that it would set.
    """
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule
    from sigma.exceptions import SigmaError

    from cloudir.analyze.sigma.backend import DuckDBBackend

    result = RuleSet(
        backend=DuckDBBackend(
            processing_pipeline=field_mapping_pipeline(),
            collect_errors=False,
            fulltext_field="raw",
        )
    )
    rules: list[Any] = []
    origin: dict[int, tuple[Path, RuleDocument]] = {}  # id(pySigma rule) -> where it is
    for path in files:
        for rule, document in read_rule_file(path, result):
            origin[id(rule)] = (path, document)
            rules.append(rule)
    collection = SigmaCollection(rules, resolve_references=False)
    usable = []
    for rule in rules:
        if isinstance(rule, SigmaCorrelationRule):
            try:
                rule.resolve_rule_references(collection)
            except SigmaError as exc:
                path, document = origin[id(rule)]
                result.skipped.append(_skip(path, rule, f"cannot resolve: {exc}", document))
                continue
        usable.append(rule)
    order = SigmaCollection._referenced_first(usable)
    # Convert every plain rule first, then test-bind them all in one statement: a rule's
    # bind covers the whole scan (every field's path, the computed fields' joins), so
    # one per rule grew with rules x fields (5 s for the shipped rules). Skips are kept
    # per rule and reported in the rules' order, as before.
    converted: dict[int, LoadedRule | None] = {}
    skips: dict[int, list[dict[str, Any]]] = {}
    for rule in order:
        if not isinstance(rule, SigmaCorrelationRule):
            path, document = origin[id(rule)]
            before = len(result.skipped)
            converted[id(rule)] = _convert(result.backend, rule, path, result, document)
            skips[id(rule)] = result.skipped[before:]
            del result.skipped[before:]
    by_key = {id(rule): rule for rule in order}
    for key, reason in _unbindable(result.backend, con, converted).items():
        path, document = origin[key]
        skips[key].append(_skip(path, by_key[key], reason, document))
        converted[key] = None
    loaded: dict[int, LoadedRule] = {}  # id(pySigma rule) -> what it became
    for rule in order:
        path, document = origin[id(rule)]
        if isinstance(rule, SigmaCorrelationRule):
            done = _convert_correlation(rule, path, loaded, result, document)
        else:
            result.skipped.extend(skips[id(rule)])
            done = converted[id(rule)]
        if done is not None:
            loaded[id(rule)] = done
            result.rules.append(done)
    return result


def _unbindable(backend: Any, con: Any, converted: dict[int, LoadedRule | None]) -> dict[int, str]:
    """Why DuckDB cannot run each rule that fails to bind (RE2 refusing a pattern, a
    binder error), by rule: all rules bound in one statement (duck.bind), and one per rule
    only when that fails, to tell which."""
    candidates = {key: rule for key, rule in converted.items() if rule is not None}
    if not candidates:
        return {}
    scan = scan_sql(backend)

    def failure(predicates: list[str]) -> str | None:
        where = " OR ".join(f"({backend.fields.resolve(p)})" for p in predicates)
        try:
            with _quiet_stderr():  # RE2 logs refused patterns itself; the reason is in exc
                bind(con, f"SELECT event_id FROM ({scan}) WHERE {where}")
        except Exception as exc:  # DuckDB binder or RE2 refusing the rule's SQL
            return str(exc).splitlines()[0]
        return None

    if failure([rule.predicate for rule in candidates.values()]) is None:
        return {}
    found = {key: failure([rule.predicate]) for key, rule in candidates.items()}
    return {key: f"DuckDB cannot run it: {reason}" for key, reason in found.items() if reason}


@dataclass
class RuleDocument:
    """One YAML document of a rule file: where it starts, and its data or why not."""

    index: int  # 1-based, counting the documents that hold anything
    line: int  # 1-based line of the file where it starts
    text: str
    data: Any = None
    error: str | None = None


# A document starts at `---` in column 0 followed by a blank or the line's end: YAML's
# scanner reads that as a document start in every context, so splitting there first is
# what the parser would do, and a document it cannot parse leaves the others readable.
_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
_ONLY_DIRECTIVES = re.compile(r"\A(?:[ \t]*(?:[#%][^\n]*)?(?:\n|\Z))*\Z")
_ACTION_LINE = re.compile(r"^action\s*:", re.MULTILINE)


def split_documents(text: str) -> list[RuleDocument]:
    """The YAML stream's documents, each parsed alone: a syntax error costs one."""
    import yaml

    cuts = [0] + [m.start() for m in _DOCUMENT_START.finditer(text) if m.start()]
    pieces = [text[a:b] for a, b in zip(cuts, [*cuts[1:], len(text)], strict=True)]
    documents: list[RuleDocument] = []
    line, carried = 1, ""
    for piece in pieces:
        start = line - carried.count("\n")
        line += piece.count("\n")
        chunk = carried + piece
        if _ONLY_DIRECTIVES.match(chunk) and not chunk.lstrip().startswith("---"):
            carried = chunk  # comments or %directives belong to the next document
            continue
        carried = ""
        document = RuleDocument(index=len(documents) + 1, line=start, text=chunk)
        try:
            document.data = yaml.load(chunk, Loader=_safe_loader())
        except yaml.YAMLError as exc:
            document.error = _yaml_reason(exc, start)
        if document.data is None and document.error is None:
            continue  # an empty document (`---` with nothing after it)
        documents.append(document)
    return documents


@functools.cache
def _safe_loader() -> Any:
    """libyaml's safe loader where PyYAML was built with it: the same documents, the same
    errors and marks, faster (`rules validate` of the shipped rules: 1.72-1.88 s before,
    1.54-1.71 s after); the pure-Python one otherwise."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_reason(exc: Any, first_line: int) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {first_line + mark.line}, column {mark.column + 1}" if mark else ""
    return f"cannot read YAML{where}: {' '.join(str(problem).split())}"


def read_rule_file(path: Path, result: RuleSet) -> list[tuple[Any, RuleDocument]]:
    """Every rule a file's documents make, honouring Sigma's collection actions
    (global, reset, repeat) as pySigma does; each bad document is one skip."""
    try:
        text = _rule_text(path)
    except (OSError, ValueError) as exc:
        result.skipped.append(_skip(path, None, f"cannot read: {exc}"))
        return []
    with _quiet_stderr():  # pySigma's RE2 check logs refused patterns natively
        made = _rules_of(path, split_documents(text), result)
    return _apply_filters(path, made, result)


MAX_RULE_FILE = 8 << 20  # SigmaHQ's largest rule file is under 100 KB


def _rule_text(path: Path) -> str:
    """The file's text, if it is a regular file of sane size: a rules repository may carry
    links (git keeps them) to a FIFO, which would hang the read, or to /dev/zero."""
    info = path.stat()  # follows a link: a link to a regular file is fine
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file (a FIFO, device or folder, perhaps by a link)")
    if info.st_size > MAX_RULE_FILE:
        raise ValueError(f"larger than {MAX_RULE_FILE >> 20} MiB; no Sigma rule is")
    with path.open("rb") as fh:
        data = fh.read(MAX_RULE_FILE + 1)
    if len(data) > MAX_RULE_FILE:
        raise ValueError(f"larger than {MAX_RULE_FILE >> 20} MiB; no Sigma rule is")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from exc


def _rules_of(
    path: Path, documents: list[RuleDocument], result: RuleSet
) -> list[tuple[Any, RuleDocument]]:
    made: list[tuple[Any, RuleDocument]] = []
    global_rule: dict[str, Any] = {}
    previous: dict[str, Any] | None = {}
    lost_action: int | None = None  # a broken document that may have been an action
    for document in documents:
        data = document.data
        if document.error is not None or not isinstance(data, dict):
            reason = document.error or f"not a Sigma rule: a YAML {_kind(data)}, not a mapping"
            result.skipped.append(_skip(path, None, reason, document))
            previous = None
            if document.error is not None and _ACTION_LINE.search(document.text):
                lost_action = document.index
            continue
        action = data.get("action")
        if action in ("global", "reset"):
            global_rule = {k: v for k, v in data.items() if k != "action"}
            if action == "reset":
                global_rule = {}
            previous, lost_action = global_rule, None
            continue
        if action == "repeat":
            if previous is None:
                reason = "repeats the document before it, which could not be read"
                result.skipped.append(_skip(path, None, reason, document))
                continue
            previous = deep_update(copy.deepcopy(previous), data)
            rule = _parse(path, previous, document, result)
        elif action is not None:
            reason = f"unknown Sigma collection action {action!r}"
            result.skipped.append(_skip(path, None, reason, document))
            continue
        elif lost_action is not None and "correlation" not in data and "filter" not in data:
            reason = (
                f"follows document {lost_action}, a collection action that could not be "
                "read; the rule would lack what it sets"
            )
            result.skipped.append(_skip(path, None, reason, document))
            previous = None
            continue
        else:
            merged = data
            if "correlation" not in data and "filter" not in data:
                merged = deep_update(copy.deepcopy(data), copy.deepcopy(global_rule))
                previous = data
            rule = _parse(path, merged, document, result)
        if rule is not None:
            made.append((rule, document))
    return made


def deep_update(dest: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    """pySigma's merge for collection actions: `src` wins, nested mappings merged."""
    from sigma.collection import deep_dict_update

    return deep_dict_update(dest, src)


def _kind(data: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(data), type(data).__name__
    )


def _parse(path: Path, data: dict[str, Any], document: RuleDocument, result: RuleSet) -> Any:
    """One pySigma rule, correlation or filter from a document, or a skip with why."""
    from sigma.collection import check_alias_expansion
    from sigma.correlations import SigmaCorrelationRule
    from sigma.exceptions import SigmaCollectionError
    from sigma.filters import SigmaFilter
    from sigma.rule import SigmaRule

    rule: SigmaCorrelationRule | SigmaFilter | SigmaRule
    try:
        check_alias_expansion(data, SigmaCollectionError, None)
        if "correlation" in data:
            rule = SigmaCorrelationRule.from_dict(data, collect_errors=True)
        elif "filter" in data:
            rule = SigmaFilter.from_dict(data, collect_errors=True)
        else:
            rule = SigmaRule.from_dict(data, collect_errors=True)
    except Exception as exc:  # pySigma raises more than SigmaError on odd shapes
        reason = " ".join(str(exc).split()) or type(exc).__name__
        result.skipped.append(_skip(path, data, f"invalid Sigma: {reason}", document))
        return None
    if getattr(rule, "errors", None):
        reasons = "; ".join(" ".join(str(e).split()) for e in rule.errors)
        result.skipped.append(_skip(path, rule, f"invalid Sigma: {reasons}", document))
        return None
    return rule


def _apply_filters(
    path: Path, made: list[tuple[Any, RuleDocument]], result: RuleSet
) -> list[tuple[Any, RuleDocument]]:
    """Sigma filters in a file apply to that file's rules, as in a pySigma collection."""
    from sigma.filters import SigmaFilter
    from sigma.rule import SigmaRule

    filters = [(f, d) for f, d in made if isinstance(f, SigmaFilter)]
    rules = [(r, d) for r, d in made if not isinstance(r, SigmaFilter)]
    for sigma_filter, document in filters:
        try:
            rules = [
                (sigma_filter.apply_on_rule(r) if isinstance(r, SigmaRule) else r, d)
                for r, d in rules
            ]
        except Exception as exc:
            reason = f"filter cannot apply: {' '.join(str(exc).split())}"
            result.skipped.append(_skip(path, sigma_filter, reason, document))
    return rules


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


def _convert(
    backend: Any, rule: Any, path: Path, result: RuleSet, document: RuleDocument
) -> LoadedRule | None:
    """The rule as SQL, not yet test-bound (load_rules binds all rules at once)."""
    from sigma.exceptions import SigmaError

    def skip(reason: str) -> None:
        result.skipped.append(_skip(path, rule, reason, document))

    source = rule.logsource
    key = (source.product, source.service, source.category)
    logsource = LOGSOURCES.get(key)
    if logsource is None:
        skip(f"no timeline data for logsource {key}")
        return None
    try:
        backend.convert_rule(rule)
        queries = rule.get_conversion_result()
    except (SigmaError, ValueError, TypeError, AttributeError) as exc:
        skip(f"cannot convert: {' '.join(str(exc).split())}")
        return None
    predicate = " OR ".join(f"({q})" for q in queries)
    return LoadedRule(
        **_describe(rule, path),
        logsource=logsource,
        predicate=predicate,
        raw_guard=raw_guard(backend, queries, logsource),
        sigma_logsource=rule.logsource,
        about_failure=tests_outcome(rule),
    )


def _convert_correlation(
    rule: Any,
    path: Path,
    loaded: dict[int, LoadedRule],
    result: RuleSet,
    document: RuleDocument | None = None,
) -> LoadedRule | None:
    def referenced(target: Any) -> Referenced | None:
        done = loaded.get(id(target))
        if done is None:
            return None
        return Referenced(result.rules.index(done), done.title, done.correlation)

    try:
        spec = correlation_from_rule(
            rule,
            referenced,
            lambda f, base: _key_column(result, mapped_field(f, base), loaded.get(id(base))),
        )
    except Unsupported as exc:
        result.skipped.append(_skip(path, rule, str(exc), document))
        return None
    bases = [loaded.get(id(ref.rule)) for ref in rule.referenced_rules]
    about_failure = any(base is not None and base.about_failure for base in bases)
    return LoadedRule(**_describe(rule, path), correlation=spec, about_failure=about_failure)


def mapped_field(field_name: str, rule: Any) -> str:
    """Where the rows of `rule`'s logsource hold `field_name` (its declared field names,
    as field_mapping_pipeline applies them to the rule's own detection)."""
    source = getattr(rule, "logsource", None)
    if source is None:
        return field_name
    from cloudir.analyze.parsers import logsource_fields

    mapping = logsource_fields().get((source.product, source.service, source.category), {})
    return mapping.get(field_name, field_name)


def _key_column(result: RuleSet, field_name: str, base: LoadedRule | None) -> str:
    """A column of _hits holding `field_name`, shared by every correlation that needs it;
    `base` is a rule whose matched rows the correlation reads it of."""
    sql = result.backend.field_sql(field_name)
    column = result.key_columns.setdefault(sql, f"k{len(result.key_columns)}")
    feeds = result.key_feeds.setdefault(column, [])
    if base is not None and all(rule is not base for rule in feeds):
        feeds.append(base)
    return column


def raw_guard(backend: Any, queries: Sequence[str], logsource: LogSource) -> str | None:
    """Where the rule may read a non-promoted field on a row with promoted columns: its
    logsource, and what the conversion knows holds wherever it does (FieldPlan.reach)."""
    fields = backend.fields
    if PROMOTED_ARTIFACT not in logsource.artifacts:
        return None  # its rows never have promoted columns: `_f` is there for all of them
    reach = "false"
    for query in queries:  # one rule may convert to several
        one = fields.reach(query)
        if one is None:
            return f"artifact IN ({_in_list(logsource.artifacts)})"
        reach = one if reach == "false" else f"({reach}) OR ({one})"
    if reach == "false":
        return None
    return f"artifact IN ({_in_list(logsource.artifacts)}) AND ({reach})"


def raw_parse_gate(ruleset: RuleSet, entities: Sequence[str]) -> str:
    """Where a row with promoted columns needs `_f` (its fields parsed from `raw`): where
    some rule may read a field that is not promoted. The entity columns are computed on
    every row beside the rules; one that is not promoted parses every row, as before the
    promoted columns. (Key, triage and filter columns read `raw` themselves, on matched
    rows only: `FieldPlan.typed_reads`.)"""
    fields = ruleset.backend.fields
    if any(fields.reads_raw(sql) for sql in entities):
        return "true"
    guards = [r.raw_guard for r in ruleset.rules if r.raw_guard is not None]
    return " OR ".join(f"({g})" for g in dict.fromkeys(guards)) or "false"


def scan_sql(
    backend: Any,
    context_tables: dict[str, str] | None = None,
    typed_parse: str | None = None,
    promoted: bool = False,
    used: str | None = None,
) -> str:
    """The timeline as rules see them: every row with its raw fields parsed once (rows
    with promoted columns: only where `typed_parse` holds, see raw_parse_gate)."""
    plan = backend.fields
    return str(plan.scan_sql("timeline", context_tables, typed_parse, promoted, used))


@dataclass(frozen=True)
class Gather:
    """A temp table of the driver's connection made from the timeline's parts: the rows of
    `sql` over every part. `sql` may read the tables of the connection named in `shipped`
    (small: they go to every task)."""

    table: str
    sql: str
    shipped: tuple[str, ...] = ()


class TimelineParts(Protocol):
    """Where the timeline's rows are when they are not all in the DuckDB connection.

    A Spark job (analyze/spark_detect.py) evaluates SQL that reads `timeline` on each part
    of the timeline, in a DuckDB of its own per task, and gathers the rows of all parts
    into tables of the driver's connection. Only SQL whose result over the whole timeline
    is the union of its results over the parts is given to `gather`: row-level selections,
    and the `partial` facts of the computed fields (sigma/context.py), which the driver then
    groups again.
    """

    def gather(self, con: Any, gathers: Sequence[Gather]) -> None:
        """Make every gather's temp table in `con` in ONE pass over the parts: each part is
        read once and every SQL of the batch evaluated on it. A batch holds only SQL whose
        inputs already exist, so each pass over the timeline is one step of the data's
        dependencies, not one per table (detect runs two: the computed fields' facts, then
        the scan with the automation baseline's calls)."""


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


def _skip(
    path: Path, rule: Any, reason: str, document: RuleDocument | None = None
) -> dict[str, Any]:
    """A skipped rule or document: file, document number and first line when known,
    and the rule's id and title when they can be read at all."""
    rule_id, title = _identity(rule, document)
    return {
        "path": str(path),
        "id": rule_id,
        "title": title,
        "reason": reason,
        "document": document.index if document else None,
        "line": document.line if document else None,
    }


_TITLE_LINE = re.compile(r"^title\s*:[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_ID_LINE = re.compile(r"^id\s*:[ \t]*['\"]?([^'\"\s]+)", re.MULTILINE)


def _identity(rule: Any, document: RuleDocument | None) -> tuple[str, str]:
    if isinstance(rule, dict):
        return str(rule.get("id") or ""), str(rule.get("title") or "")
    if rule is not None:
        return str(getattr(rule, "id", "") or ""), str(getattr(rule, "title", "") or "")
    if document is not None and isinstance(document.data, dict):
        return str(document.data.get("id") or ""), str(document.data.get("title") or "")
    if document is not None:  # unreadable YAML: what the lines still say
        title = _TITLE_LINE.search(document.text)
        found_id = _ID_LINE.search(document.text)
        return (found_id[1] if found_id else ""), (title[1].strip("'\"") if title else "")
    return "", ""


ENTITY_FIELDS = {
    "principals": "user",
    "access_keys": "userIdentity.accessKeyId",
    "source_ips": "src_ip",
    "hosts": "host",
    "targets": "target",
}


def run_rules(
    con: Any,
    ruleset: RuleSet,
    suppressions: Sequence[Suppression] = (),
    parts: TimelineParts | None = None,
) -> dict[int, list[str]]:
    """One scan: each detection rule is a boolean column; matched rows go to `_hits` (a
    view of `_hits_rows`, where the columns are bits: see packed_sql).

    Returns, per reported rule (index into ruleset.rules), the matched event ids. A rule
    some suppression filter applies to has its raw match in `a<n>`, each filter's verdict
    (the rule matched, the filter's condition did not hold) in `s<k>`, and what is left in
    `h<n>`, which the findings and the correlations read. With `parts`, the scan runs on
    the parts of the timeline and only its matched rows come to `con` (with, from the same
    pass, the automation calls that findings_from's baseline reads): everything after the
    scan is the same code over the same `_hits`.
    """
    detections = [(n, r) for n, r in enumerate(ruleset.rules) if not r.is_correlation]
    hits: dict[int, list[str]] = {}
    filtered = {
        n: [k for k, s in enumerate(suppressions) if n in s.applies_to] for n, _ in detections
    }
    filtered = {n: ks for n, ks in filtered.items() if ks}
    flags = flag_columns(ruleset)
    if parts is None:
        promoted = all_promoted(con)
        tables = context_tables(con, ruleset.backend.fields, promoted)
        actor_keys = actor_class_table(con) if promoted else None
        select = packed_sql(
            hits_sql(ruleset, suppressions, filtered, tables, promoted, actor_keys), flags
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE {HITS_ROWS} AS {select}").fetchall()
    else:
        tables = gather_context(con, ruleset.backend.fields, parts)
        select = packed_sql(hits_sql(ruleset, suppressions, filtered, tables), flags)
        scan = Gather(HITS_ROWS, select, tuple(tables.values()))
        # the automation baseline's calls ride on the scan's pass: its identities come from
        # `_hits`, so it takes every identity's and findings_from keeps the matched ones
        parts.gather(con, [scan, Gather(AUTOMATION_CALLS, automation_calls_sql())])
    con.execute(f"CREATE OR REPLACE TEMP VIEW _hits AS {unpacked_sql(HITS_ROWS, flags)}")
    _count_suppressed(con, ruleset, suppressions, filtered)
    # a base rule's hits stay in DuckDB for the correlations
    hits.update(matched_event_ids(con, flags, [n for n, r in detections if r.output]))
    chained = {i.alerts_of for r in ruleset.rules if r.correlation for i in r.correlation.inputs}
    for n, rule in enumerate(ruleset.rules):
        if rule.correlation is not None:
            hits[n] = run_correlation(con, n, rule.correlation, n in chained)
    return {n: ids for n, ids in hits.items() if ruleset.rules[n].output and ids}


HITS_ROWS = "_hits_rows"  # `_hits` as stored: the rules' flags packed into bits
WORD_BITS = 63  # flags a BIGINT holds (not the sign bit)


def flag_columns(ruleset: RuleSet) -> list[str]:
    """`h<n>` of every detection rule: its matches, after any suppression filter."""
    return [f"h{n}" for n, rule in enumerate(ruleset.rules) if not rule.is_correlation]


def matched_event_ids(con: Any, flags: Sequence[str], rules: Sequence[int]) -> dict[int, list[str]]:
    """The event ids each of `rules` (detection rules' indexes) matched, in time order, one
    per matched row, from `_hits_rows` in one statement.

    Most `_hits` rows match only base rules (the discovery base rule's: half a busy
    account's rows), so the rows with a reported rule's bit are picked from the masks
    first; one query per rule read every row of `_hits` again (143 rules: 1.6 s at
    500k rows, more than the findings).
    """
    bit = {f"h{n}": n for n in rules}
    placed = [(bit[h], i // WORD_BITS, i % WORD_BITS) for i, h in enumerate(flags) if h in bit]
    if not placed:
        return {}
    words: dict[int, int] = {}
    for _, word, position in placed:
        words[word] = words.get(word, 0) | 1 << position
    reported = " OR ".join(f"(m{w} & {mask}) <> 0" for w, mask in sorted(words.items()))
    pairs = ", ".join(f"({n}, {w}, {p})" for n, w, p in placed)
    word_of = " ".join(f"WHEN {w} THEN m{w}" for w in sorted(words))
    rows = con.execute(
        f"""SELECT r.n, list(h.event_id ORDER BY h.timestamp, h.event_id)
            FROM (SELECT * FROM {HITS_ROWS} WHERE {reported}) h
            JOIN (VALUES {pairs}) r(n, word, bit)
              ON ((CASE r.word {word_of} END) >> r.bit) & 1 = 1
            GROUP BY r.n ORDER BY r.n"""
    ).fetchall()
    return {int(n): list(ids) for n, ids in rows}


def packed_sql(select: str, flags: Sequence[str]) -> str:
    """`select` with its boolean `flags` packed into BIGINT bit masks `m0`, `m1`, ...

    Every detection rule is a column of `_hits`, whose rows are every row any rule
    matched: half a busy account's rows match the discovery base rule, so at 5M rows
    `_hits` held 2.9M rows of 182 booleans, outgrew the memory limit and spilled, and
    writing it was a tenth of the scan. Packed, a row's flags are 24 bytes.
    """
    if not flags:
        return select
    words = [flags[i : i + WORD_BITS] for i in range(0, len(flags), WORD_BITS)]
    masks = [
        " | ".join(f"(CASE WHEN {h} THEN {1 << b} ELSE 0 END)::BIGINT" for b, h in enumerate(w))
        + f" AS m{k}"
        for k, w in enumerate(words)
    ]
    return f"SELECT * EXCLUDE ({', '.join(flags)}), {', '.join(masks)} FROM ({select})"


def unpacked_sql(source: str, flags: Sequence[str]) -> str:
    """The rows of `source` (packed_sql's) with each flag a boolean column again. A view
    of it computes only the flags a statement reads."""
    if not flags:
        return f"SELECT * FROM {source}"
    words = (len(flags) + WORD_BITS - 1) // WORD_BITS
    bits = [f"(m{i // WORD_BITS} >> {i % WORD_BITS}) & 1 = 1 AS {h}" for i, h in enumerate(flags)]
    masks = ", ".join(f"m{k}" for k in range(words))
    return f"SELECT * EXCLUDE ({masks}), {', '.join(bits)} FROM {source}"


def hits_sql(
    ruleset: RuleSet,
    suppressions: Sequence[Suppression],
    filtered: dict[int, list[int]],
    context_tables: dict[str, str] | None = None,
    promoted: bool = False,
    actor_keys: Sequence[str] | None = None,
) -> str:
    """The rows of `_hits`: every row some rule matched, with what the findings need.

    A row-level selection over `timeline`: over parts of it, it gives parts of `_hits`.
    `promoted`: every CloudTrail row of the timeline has promoted columns (all_promoted).
    `actor_keys` (with `promoted`): triage.actor_class_table made its table over these
    columns, and a matched CloudTrail row's actor columns come from it by a join.
    """
    detections = [(n, r) for n, r in enumerate(ruleset.rules) if not r.is_correlation]
    backend = ruleset.backend
    fields = backend.fields
    entities = [f"{backend.field_sql(f)} AS e_{name}" for name, f in ENTITY_FIELDS.items()]
    raw_flags = {n: f"a{n}" if n in filtered else f"h{n}" for n, _ in detections}
    flags = [f"{_gated(r, backend, promoted)} AS {raw_flags[n]}" for n, r in detections]
    index = {id(rule): n for n, rule in enumerate(ruleset.rules)}
    # keys, triage and filter columns: matched rows only, after the rules' flags
    keys = []
    for sql, column in ruleset.key_columns.items():
        feeds = [raw_flags[index[id(r)]] for r in ruleset.key_feeds.get(column, [])]
        fed = " OR ".join(f for f in feeds if f) or "true"
        keys.append(f"CASE WHEN {fed} THEN {fields.typed_reads(sql)} END AS {column}")
    joined = actor_keys if promoted else None  # the actor columns come from the join
    triage = [c.rsplit(" AS ", 1) for c in event_columns(backend.field_sql)]
    triage_columns = [
        f"{_cloudtrail_reads(fields, sql, promoted and name in CLOUDTRAIL_COLUMNS)} AS {name}"
        for sql, name in triage
        if joined is None or name not in CLOUDTRAIL_COLUMNS
    ]
    verdicts = [
        f"CASE WHEN {' OR '.join(f'a{n}' for n in s.applies_to)} "
        f"THEN (CASE WHEN {fields.typed_reads(fields.resolve(s.keep))} THEN false ELSE true END) "
        f"ELSE false END AS s{k}"  # the filter a condition (DuckDBBackend._lazy)
        for k, s in enumerate(suppressions)
        if s.applies_to
    ]
    kept = [
        f"a{n} AND NOT ({' OR '.join(f's{k}' for k in ks)}) AS h{n}" for n, ks in filtered.items()
    ]
    artifacts = sorted({a for _, r in detections if r.logsource for a in r.logsource.artifacts})
    any_hit = " OR ".join(raw_flags.values()) or "false"
    carried = [
        "event_id", "timestamp", *(f"e_{name}" for name in ENTITY_FIELDS), *raw_flags.values(),
    ]  # fmt: skip
    later = keys + triage_columns + verdicts
    # the same columns in the same order whether the actor columns are joined or not
    names = [c.rsplit(" AS ", 1)[1] for c in keys] + [n for _, n in triage]
    names += [c.rsplit(" AS ", 1)[1] for c in verdicts]
    judged = ", ".join(carried + names)
    gate = raw_parse_gate(ruleset, entities)
    reads = " ".join(entities + flags + later) if promoted else None
    scan = scan_sql(backend, context_tables, gate, promoted, reads)
    extra = actor_key_columns(joined) if joined is not None else []
    matched = f"""SELECT {", ".join(carried + later + extra)} FROM (
                SELECT *, {", ".join(entities + flags)}
                FROM ({scan}) WHERE artifact IN ({_in_list(artifacts) or "NULL"})
              ) WHERE {any_hit}"""
    if joined is not None:
        matched = actor_joined_sql(matched, joined)
    return f"""SELECT {judged}{"".join(", " + c for c in kept)}
            FROM ({matched})"""


def _cloudtrail_reads(fields: Any, sql: str, promoted: bool) -> str:
    """`sql` for matched rows (FieldPlan.typed_reads); `promoted`: it reads CloudTrail rows
    only and every one has promoted columns, so it reads them directly (resolve)."""
    typed = fields.typed_reads(sql)
    return str(fields.promoted_reads(typed)) if promoted else str(typed)


def all_promoted(con: Any) -> bool:
    """Whether every CloudTrail row of `timeline` has promoted columns (schema 2): then SQL
    outside the scan reads those fields from them alone and never names `raw`, which
    DuckDB decompresses whole for any statement that does. Two dictionary columns read."""
    return not con.execute(
        f"SELECT EXISTS (SELECT 1 FROM timeline WHERE artifact = {sql_str(PROMOTED_ARTIFACT)} "
        f"AND {PROMOTED_FROM} IS NULL)"
    ).fetchall()[0][0]


def context_tables(con: Any, plan: Any, promoted: bool) -> dict[str, str]:
    """The computed fields' tables, made before the scan from the whole timeline: field
    name -> temp table of `con` that the scan joins.

    Each field's facts read the timeline's cheap columns; the few rows whose `raw` some
    facts read (context.rare_rows_sql) are read into `_rare` once. Where every CloudTrail
    row has promoted columns (`promoted`: all_promoted) no other fact reads `raw`, which
    DuckDB decompresses whole for any statement that names it: one read of it for all the
    fields, not one each.
    """
    from cloudir.analyze.sigma.context import CONTEXTS, RARE_READERS, rare_rows_sql

    used = [(name, CONTEXTS[name]) for name in sorted(plan.context)]
    if not used:
        return {}
    rare = "timeline"
    if any(name in RARE_READERS for name, _ in used):
        rare = "_rare"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {rare} AS {rare_rows_sql()}").fetchall()
    sources = FactSources(rows="timeline", rare=rare, typed=promoted)
    tables = {}
    for name, context in used:
        table = f"_table{context.column}"
        facts = f"({context.partial(sources)})"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {context.final(facts)}").fetchall()
        tables[name] = table
    return tables


def gather_context(con: Any, plan: Any, parts: TimelineParts) -> dict[str, str]:
    """The computed fields' tables, from each part's facts (context.Context): field name
    -> temp table of `con` that the scan joins instead of computing the aggregate.

    Every field's facts come from one pass over the parts; the scan, which joins the
    tables `final` makes of them, cannot be in that pass.
    """
    from cloudir.analyze.sigma.context import CONTEXTS

    used = [(name, CONTEXTS[name]) for name in sorted(plan.context)]
    if not used:
        return {}
    parts.gather(con, [Gather(f"_facts{c.column}", c.partial(FactSources())) for _, c in used])
    tables = {}
    for name, context in used:
        facts, table = f"_facts{context.column}", f"_table{context.column}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {context.final(facts)}").fetchall()
        tables[name] = table
    return tables


def _count_suppressed(
    con: Any,
    ruleset: RuleSet,
    suppressions: Sequence[Suppression],
    filtered: dict[int, list[int]],
) -> None:
    """Each filter's removed matches (rule, event) with a sample of their event ids, and
    each rule's matches removed by any filter: counted, never silently gone."""
    for k, suppression in enumerate(suppressions):
        if not suppression.applies_to:
            continue
        removed = " + ".join(
            f"count(*) FILTER (WHERE a{n} AND s{k})" for n in suppression.applies_to
        )
        suppression.suppressed = int(con.execute(f"SELECT {removed} FROM _hits").fetchall()[0][0])
        suppression.event_ids_sample = [
            r[0]
            for r in con.execute(
                f"SELECT event_id FROM _hits WHERE s{k} GROUP BY event_id "
                f"ORDER BY min(timestamp), event_id LIMIT {SUPPRESSED_SAMPLE}"
            ).fetchall()
        ]
    for n in filtered:
        count = con.execute(f"SELECT count(*) FILTER (WHERE a{n} AND NOT h{n}) FROM _hits")
        ruleset.suppressed[n] = int(count.fetchall()[0][0])


def _gated(rule: LoadedRule, backend: Any, promoted: bool = False) -> str:
    """The rule on its own rows only, never NULL.

    One CASE whose condition is the artifact test, the logsource's and the rule's (see
    DuckDBBackend._lazy): DuckDB evaluates it stopping at the first deciding operand, so
    rows of other logsources, or whose eventName already differs, cost one compare.
    `promoted`: every row of the timeline's promoted artifact has promoted columns, so a
    rule of that artifact alone reads them directly (FieldPlan.resolve).
    """
    source = rule.logsource
    if source is None:
        raise ValueError(f"{rule.title!r} is a correlation: it reads other rules' hits")
    typed = promoted and source.artifacts == (PROMOTED_ARTIFACT,)
    predicate = backend.fields.resolve(rule.predicate, promoted=typed)
    tests = [f"artifact IN ({_in_list(source.artifacts)})", source.condition, predicate]
    return f"CASE WHEN {' AND '.join(f'({t})' for t in tests if t)} THEN true ELSE false END"


def _in_list(values: Iterable[str]) -> str:
    return ", ".join(sql_str(v) for v in values)


def findings_from(
    con: Any, ruleset: RuleSet, hits: dict[int, list[str]], parts: TimelineParts | None = None
) -> list[dict[str, Any]]:
    """One finding per rule with hits, its events' entities gathered from `_hits`, triaged
    (outcome, actor, level; triage.py) and in reading order (`rank`).

    With `parts`, run_rules gathered the automation calls (AUTOMATION_CALLS) with the scan.
    """
    findings = []
    found_rows(con, hits, flag_columns(ruleset))
    if hits and parts is not None:
        automation_baseline(con, AUTOMATION_CALLS, FOUND)
    elif hits:
        automation_baseline(con, None, FOUND, typed=all_promoted(con))
    for n, event_ids in hits.items():
        rule = ruleset.rules[n]
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _ids AS SELECT unnest(?::VARCHAR[]) AS id", [event_ids]
        ).fetchall()
        columns = ", ".join(
            f"list_sort(list_distinct(list(e_{name}::VARCHAR)))" for name in ENTITY_FIELDS
        )
        first, last, *values = con.execute(
            f"SELECT min(timestamp), max(timestamp), {columns} FROM {FOUND} "
            "WHERE event_id IN (SELECT id FROM _ids)"
        ).fetchall()[0]
        # a detection rule's own rows; a correlation's events are other rules' rows
        where = "event_id IN (SELECT id FROM _ids)" if rule.correlation else f"h{n}"
        triage = finding_triage(con, where, FOUND)
        level, level_note = shown_level(rule.level, triage["outcome"], rule.about_failure)
        finding: dict[str, Any] = {
            "rule_id": rule.rule_id,
            "title": rule.title,
            "level": level,
            "rule_level": rule.level,
            "level_note": level_note,
            "outcome": triage.pop("outcome"),
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
            **triage,
            "suppressed": ruleset.suppressed.get(n, 0),
        }
        if rule.correlation is not None:
            finding["correlation"] = rule.correlation.kind
            finding["alerts"] = alert_count(con, n)
        findings.append(finding)
    return rank_findings(findings)


FOUND = "_found"  # the `_hits` rows of the findings' events


def found_rows(con: Any, hits: dict[int, list[str]], flags: Sequence[str]) -> None:
    """`_found`: every `_hits` row of an event some finding reports (all its copies).

    The findings read only these. `_hits` also holds every row of the broad base rules
    (every read-only call feeds the discovery-burst correlation: half the rows of a busy
    account), and each finding's statements scanning all of it cost more at 5M rows than
    the scan's tenth; a finding's rows, a detection rule's (`h<n>`) as a correlation's
    events, are all in `_found`, so every result is the same.
    """
    found = sorted({event_id for ids in hits.values() for event_id in ids})
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _found_ids AS SELECT unnest(?::VARCHAR[]) AS id", [found]
    ).fetchall()
    rows = f"(SELECT * FROM {HITS_ROWS} WHERE event_id IN (SELECT id FROM _found_ids))"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {FOUND} AS {unpacked_sql(rows, flags)}").fetchall()


def _iso(moment: Any) -> str:
    """ISO 8601 for years 1-9999 alike; strftime writes year 1 as `1-01-01`."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def validate(paths: list[Path], builtin: bool) -> RuleSet:
    """Load and compile rules against an empty timeline: no case needed."""
    from cloudir.analyze.duck import seal

    con = empty_timeline()
    register_functions(con)
    seal(con)  # a rule's SQL reads nothing, writes nothing, whoever wrote the rule
    files = rule_files(paths, builtin)
    if paths and not files:
        raise UsageError(f"no rule files (.yml, .yaml) in {', '.join(map(str, paths))}")
    return load_rules(files, con)


def empty_timeline() -> Any:
    """A connection whose view `timeline` has the timeline's columns and no rows: rules
    bind against it, and SQL that must only be planned (or read tables of its own) runs."""
    from cloudir.analyze.duck import connect
    from cloudir.analyze.schema import TIMELINE_SCHEMA

    con = connect()
    columns = ", ".join(
        f'NULL::{"TIMESTAMPTZ" if f.name == "timestamp" else "VARCHAR"} AS "{f.name}"'
        for f in TIMELINE_SCHEMA
    )
    con.execute(f"CREATE VIEW timeline AS SELECT {columns} WHERE false").fetchall()
    return con


@dataclass
class DetectResult:
    rules: RuleSet
    findings: list[dict[str, Any]]
    path: Path
    suppressions: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def detect(
    case: Case,
    extra_rules: list[Path],
    builtin: bool = True,
    suppress: Sequence[Path] = (),
    parts: TimelineParts | None = None,
) -> DetectResult:
    """Run the rules over the case's timeline; writes findings/findings.{json,parquet}.

    The rules' SQL runs on a sealed connection (duck.seal): it reads the timeline's files
    and nothing else, whoever wrote the rule. Rules the user named that cannot run at all
    are a usage error, raised before any findings file is written (only DuckDB's empty
    spill folder, findings/.spill, is made first): "no findings" must mean rules ran.
    So is a suppression filter (`suppress`: folders of Sigma filters) that cannot be read.

    With `parts` (analyze/spark_detect.py), the timeline is read only there: this process's
    connection holds an empty `timeline` to bind the rules, and the rows the scan matched.
    """
    from cloudir.analyze import suppress as suppressions
    from cloudir.analyze.duck import seal
    from cloudir.analyze.query import connect, timeline_files

    if not extra_rules and not builtin:
        raise UsageError("no rules to run: give --rules PATH, or leave out --no-builtin")
    suppressions.filter_files(list(suppress))  # a wrong folder fails before any work
    con = connect(case) if parts is None else empty_timeline()
    register_functions(con)
    limit_memory(con, case.paths.findings)
    seal(con, timeline_files(case) if parts is None else ())
    rules = load_rules(rule_files(extra_rules, builtin), con)
    require_runnable(extra_rules, rules)
    filters = suppressions.load(list(suppress), rules, con)
    hits = run_rules(con, rules, filters, parts)
    findings = findings_from(con, rules, hits, parts)
    applied = [f.summary([rules.rules[n].rule_id for n in f.applies_to]) for f in filters]
    out = case.paths.findings
    out.mkdir(exist_ok=True)
    document = {
        "case": case.info.get("id"),
        "generated": utc_now(),
        "cloudir_version": __version__,
        "rules": {"loaded": len(rules.reported), "skipped": rules.skipped},
        "suppressions": applied,
        "findings": findings,
    }
    _write_json(case.paths.findings_json, document)
    _write_parquet(con, case.paths.findings_parquet, findings)
    con.close()
    with contextlib.suppress(OSError):
        (out / ".spill").rmdir()  # DuckDB removed its spill files when it closed
    return DetectResult(rules, findings, out, applied, suppressions.warnings(filters))


def require_runnable(paths: list[Path], rules: RuleSet) -> None:
    """Every rules path the user gave contributes at least one rule that runs."""
    for root in paths:
        files = {str(f) for f in rule_files([root], builtin=False)}
        if not files:
            raise UsageError(f"{root}: no rule files (.yml, .yaml) in it")
        if any(r.path in files for r in rules.rules):
            continue
        skipped = [s for s in rules.skipped if s["path"] in files]
        first = f"; first: {skipped[0]['reason']}" if skipped else ""
        raise UsageError(
            f"{root}: none of its rules can run ({len(skipped)} skipped{first}); "
            f"`cloudir rules validate {root}` lists why"
        )


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
    # The window self-join rewrite would compute a computed field's aggregate (sigma/
    # context.py: `min(...) OVER (PARTITION BY key)` over its facts) twice, each time
    # reading and parsing `raw` of the whole timeline; the window over the few facts is
    # far cheaper (about a seventh of detect's CPU time on the benchmark's timeline).
    con.execute("SET disabled_optimizers = 'filter_pushdown,window_self_join'").fetchall()
    con.execute("SET preserve_insertion_order = false").fetchall()


def _write_json(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(path)


def _write_parquet(con: Any, path: Path, findings: list[dict[str, Any]]) -> None:
    """One row per (rule, event): the table a responder joins back to the timeline.

    Written by cloudir through pyarrow, batch by batch: the sealed connection cannot write.
    """
    import pyarrow.parquet as pq

    pairs = [(f["rule_id"], f["title"], f["level"], e) for f in findings for e in f["event_ids"]]
    names = ["rule_id", "title", "level", "event_id"]
    columns = list(zip(*pairs, strict=True)) if pairs else [() for _ in names]
    # unnest of lists, not con.register(): registering imports pandas (half a second)
    listed = ", ".join(f"unnest(?::VARCHAR[]) AS {name}" for name in names)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _pairs AS SELECT {listed}", [list(c) for c in columns]
    ).fetchall()
    entities = ", ".join(f"h.e_{name} AS {name}" for name in ENTITY_FIELDS)
    # An event with disagreeing copies has several _hits rows: the one shown is chosen by
    # content, not by which row came first, so the file is the same on every run and engine.
    # Only the findings' events are sorted (`_found`, see found_rows).
    copy = ["timestamp", *(f"e_{name}" for name in ENTITY_FIELDS)]
    reader = con.sql(
        f"""SELECT p.rule_id, p.title, p.level, p.event_id, h.timestamp, {entities}
            FROM _pairs p JOIN (
                SELECT DISTINCT ON (event_id) event_id, {", ".join(copy)} FROM {FOUND}
                ORDER BY event_id, {" NULLS LAST, ".join(copy)} NULLS LAST
            ) h USING (event_id)
            ORDER BY h.timestamp, p.rule_id, p.event_id"""
    ).to_arrow_reader()
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
    tmp.replace(path)
