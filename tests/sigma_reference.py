"""A plain-Python reference evaluator for Sigma rules over a cloudir timeline.

It implements docs/detection.md (the contract) independently of the DuckDB engine in
`cloudir/analyze/detect.py`, so the two can be checked against each other: pySigma parses
the rules, and every condition is walked here row by row with Python `re` and `ipaddress`.
It is deliberately slow and simple; nothing in it may import the engine.
"""

from __future__ import annotations

import ipaddress
import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from sigma.collection import SigmaCollection
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
)

from cloudir.analyze.actors import agent_family
from cloudir.analyze.policy_grants import resource_grant
from cloudir.analyze.schema import COLUMN_NAMES
from cloudir.analyze.sigma.fields import VIRTUAL_FIELDS
from cloudir.case_folder import timeline_files

LogsourceKey = tuple[str | None, str | None, str | None]


def _has_command_line(row: Row) -> bool:
    return bool(row.values("CommandLine"))


def _has_source_address(row: Row) -> bool:
    return row.record.get("src_ip") is not None


# Re-stated from docs/detection.md rather than imported, so that a change to the engine's
# table shows up as a disagreement instead of silently changing the reference too.
_SYSLOG = ("linux:syslog", "linux:auth", "linux:cron", "linux:journal")
_PROCESS = ("linux:auditd", "linux:bash_history", "linux:zsh_history", "linux:shell_history")
LOGSOURCES: dict[LogsourceKey, tuple[tuple[str, ...], Callable[[Row], bool] | None]] = {
    ("aws", "cloudtrail", None): (("aws:cloudtrail",), None),
    ("aws", None, None): (("aws:cloudtrail",), None),
    ("linux", "auth", None): (("linux:auth",), None),
    ("linux", "sshd", None): (("linux:auth",), None),
    ("linux", "syslog", None): (_SYSLOG, None),
    ("linux", "cron", None): (("linux:cron",), None),
    ("linux", "auditd", None): (("linux:auditd",), None),
    ("linux", None, "process_creation"): (_PROCESS, _has_command_line),
    ("docker", "diff", None): (("container:diff",), None),
    ("docker", None, None): (("container:diff", "container:state", "container:log"), None),
    ("aws", "vpcflowlogs", None): (("aws:vpc-flow",), None),
    ("aws", None, "network_connection"): (("aws:vpc-flow",), _has_source_address),
    (None, None, "network_connection"): (("aws:vpc-flow",), _has_source_address),
    ("aws", "route53", None): (("aws:route53_resolver",), None),
    (None, None, "dns"): (("aws:route53_resolver",), None),
    ("aws", "s3", None): (("aws:s3_access",), None),
    (None, None, "webserver"): (("aws:alb_access",), None),
    (None, None, "proxy"): (("aws:alb_access",), None),
    ("aws", "elb", None): (("aws:alb_access",), None),
    ("aws", "lambda", None): (("aws:lambda",), None),
}
# Sigma field names a logsource reads elsewhere (docs/detection.md, the declared tables).
FIELD_NAMES: dict[LogsourceKey, dict[str, str]] = {
    (None, None, "dns"): {
        "query": "target",
        "QueryName": "target",
        "answer": "answers.Rdata",
        "QueryResults": "answers.Rdata",
        "record_type": "query_type",
        "parent_domain": "cloudir.query_domain",
    },
}


def _field_names(rule: Any) -> dict[str, str]:
    source = getattr(rule, "logsource", None)
    if source is None:
        return {}
    return FIELD_NAMES.get((source.product, source.service, source.category), {})


def _rename_fields(node: Any, names: dict[str, str]) -> None:
    """Detection items of a rule (nested detections too) renamed as its logsource says."""
    for item in getattr(node, "detection_items", []):
        if isinstance(getattr(item, "field", None), str) and item.field in names:
            item.field = names[item.field]
        _rename_fields(item, names)


# -- rows and field values ------------------------------------------------------------------


class JsonNumber(str):
    """A JSON number kept as its source text: the doc compares numbers "as their JSON text"."""


def _json_text(node: Any) -> str:
    """Compact JSON text of an object or array leaf, numbers exactly as in the source."""
    if isinstance(node, JsonNumber):
        return str(node)
    if isinstance(node, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{_json_text(v)}" for k, v in node.items())
        return "{" + ",".join(items) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_json_text(v) for v in node) + "]"
    return json.dumps(node, ensure_ascii=False)


def _text(node: Any) -> str:
    if isinstance(node, str):  # also JsonNumber
        return str(node)
    if isinstance(node, bool):
        return "true" if node else "false"
    return _json_text(node)


def _walk(node: Any, keys: list[str]) -> Iterator[Any]:
    """Every value at `keys` below `node`, descending into every element of any array."""
    if isinstance(node, list):
        for element in node:
            yield from _walk(element, keys)
    elif not keys:
        yield node
    elif isinstance(node, dict) and keys[0] in node:
        yield from _walk(node[keys[0]], keys[1:])


class Row:
    """One timeline row; `raw` is parsed on first use only."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.event_id: str = record["event_id"]
        self.time: datetime | None = record.get("timestamp")

    @cached_property
    def doc(self) -> Any:
        try:
            return json.loads(
                self.record.get("raw") or "null", parse_int=JsonNumber, parse_float=JsonNumber
            )
        except ValueError:
            return None

    computed: dict[str, str] | None = None  # cloudir.* fields, set by annotate_computed

    def values(self, field: str) -> list[str]:
        """The field's values as text; empty means "no value" (missing key or JSON null)."""
        if field in COMPUTED_FIELDS:
            value = (self.computed or {}).get(field)
            return [] if value is None else [value]
        if field in COLUMN_NAMES:
            value = self.record.get(field)
            return [] if value is None else [value if isinstance(value, str) else str(value)]
        if field in VIRTUAL_FIELDS:  # computed by the same function the engine calls
            grant = resource_grant(self.record.get("raw"))
            return [] if grant is None else [grant]
        found = _walk(self.doc, field.split("."))
        return [_text(v) for v in found if v is not None]

    def whole_value(self, field: str) -> list[str]:
        """The value reached through objects only (exists, null, fieldref): an array is one
        value, its JSON text; an array on the way means no value."""
        if field in COLUMN_NAMES or field in COMPUTED_FIELDS:
            return self.values(field)
        node = self.doc
        for key in field.split("."):
            if not isinstance(node, dict) or key not in node:
                return []
            node = node[key]
        return [] if node is None else [_text(node)]


def read_timeline(case: Path) -> list[Row]:
    """All rows of `<case>/timeline/*.parquet`, read with pyarrow."""
    import pyarrow.parquet as pq

    rows: list[Row] = []
    for path in sorted(timeline_files(case / "timeline")):
        rows.extend(Row(r) for r in pq.read_table(path).to_pylist())
    return rows


# -- matching -------------------------------------------------------------------------------


@cache
def _regex(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


def _string_regex(value: SigmaString) -> re.Pattern[str]:
    flags = re.DOTALL if isinstance(value, SigmaCasedString) else re.DOTALL | re.IGNORECASE
    return _regex(str(value.to_regex().regexp), flags)


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _number(text: str) -> float | None:
    return float(text) if _NUMBER.fullmatch(text) else None


_COMPARE: dict[CompareOperators, Callable[[float, float], bool]] = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
    CompareOperators.NEQ: lambda a, b: a != b,
}


def _value_matches(value: Any, text: str) -> bool:
    """One Sigma value against one field value (text)."""
    if isinstance(value, SigmaExpansion):
        return any(_value_matches(v, text) for v in value.values)
    if isinstance(value, SigmaString):
        return _string_regex(value).fullmatch(text) is not None
    if isinstance(value, SigmaRegularExpression):
        flags = sum(value.sigma_to_python_flags[f] for f in value.flags)
        return _regex(str(value.regexp), flags).search(text) is not None
    if isinstance(value, SigmaCIDRExpression):
        try:
            return ipaddress.ip_address(text) in value.network
        except ValueError:
            return False  # not an address, e.g. "ec2.amazonaws.com"
    if isinstance(value, SigmaCompareExpression):
        number = _number(text)
        return number is not None and _COMPARE[value.op](number, value.number.number)
    if isinstance(value, SigmaNumber):
        return _number(text) == value.number
    if isinstance(value, SigmaBool):
        return text.lower() == ("true" if value.boolean else "false")
    raise NotImplementedError(f"no reference semantics for {type(value).__name__}")


def _fieldref_matches(ref: SigmaFieldReference, text: str, other: str) -> bool:
    text, other = text.lower(), other.lower()
    if ref.starts_with and ref.ends_with:
        return other in text
    if ref.starts_with:
        return text.startswith(other)
    if ref.ends_with:
        return text.endswith(other)
    return text == other


def _field_condition(cond: ConditionFieldEqualsValueExpression, row: Row) -> bool:
    """Any-element semantics: true if the value matches any value found on the path."""
    value = cond.value
    if isinstance(value, SigmaNull):
        return not row.whole_value(cond.field)
    if isinstance(value, SigmaExists):
        return bool(row.whole_value(cond.field)) == value.exists
    if isinstance(value, SigmaFieldReference):
        mine, others = row.whole_value(cond.field), row.whole_value(value.field)
        return any(_fieldref_matches(value, v, o) for v in mine for o in others)
    return any(_value_matches(value, v) for v in row.values(cond.field))


def _keyword(value: Any, raw: str) -> bool:
    """A keyword is a case-insensitive substring (wildcards allowed) of `raw` as stored."""
    if isinstance(value, SigmaExpansion):
        return any(_keyword(v, raw) for v in value.values)
    if isinstance(value, SigmaString):
        return _string_regex(value).search(raw) is not None
    if isinstance(value, SigmaNumber):
        return str(value.number) in raw
    if isinstance(value, SigmaRegularExpression):
        return _value_matches(value, raw)
    raise NotImplementedError(f"no reference semantics for keyword {type(value).__name__}")


def holds(node: Any, row: Row) -> bool:
    """Evaluate a node of pySigma's parsed condition tree on one row."""
    if isinstance(node, ConditionAND):
        return all(holds(arg, row) for arg in node.args)
    if isinstance(node, ConditionOR):
        return any(holds(arg, row) for arg in node.args)
    if isinstance(node, ConditionNOT):
        return not holds(node.args[0], row)
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return _field_condition(node, row)
    if isinstance(node, ConditionValueExpression):
        return _keyword(node.value, row.record.get("raw") or "")
    raise NotImplementedError(f"no reference semantics for {type(node).__name__}")


def rule_matches(rule: SigmaRule, row: Row) -> bool:
    return any(holds(c.parsed, row) for c in rule.detection.parsed_condition)


# -- rules, correlations, findings ----------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Something a correlation counts: a matched row, or an alert carrying its events."""

    row: Row  # for an alert: the row at its window's end (group-by values are read there)
    time: datetime
    ids: frozenset[str]


@dataclass
class Finding:
    rule_id: str
    title: str
    event_ids: set[str]


def load_rules(paths: Iterable[Path]) -> list[SigmaRule | SigmaCorrelationRule]:
    """Every valid rule of the files (folders are searched for .yml/.yaml), references resolved."""
    files: list[Path] = []
    for path in paths:
        files.extend(
            sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml"))
            if path.is_dir()
            else [path]
        )
    rules = []
    for file in files:
        collection = SigmaCollection.from_yaml(
            file.read_text(), collect_errors=True, resolve_references=False
        )
        rules.extend(r for r in collection.rules if not r.errors)
    for rule in rules:
        names = _field_names(rule) if isinstance(rule, SigmaRule) else {}
        for detection in rule.detection.detections.values() if names else ():
            _rename_fields(detection, names)
    return list(SigmaCollection(rules, resolve_references=True).rules)


class Evaluator:
    """Evaluates rules over a fixed set of rows; a base rule shared by correlations runs once."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        annotate_computed(rows)
        self._matches: dict[int, list[Row]] = {}
        self._windows: dict[int, list[list[Event]]] = {}

    def hits(self, rule: SigmaRule | SigmaCorrelationRule) -> set[str]:
        """A rule's finding: its rows, or every event of each qualifying window."""
        if isinstance(rule, SigmaCorrelationRule):
            return {i for window in self.windows(rule) for e in window for i in e.ids}
        return {row.event_id for row in self.matches(rule)}

    def matches(self, rule: SigmaRule) -> list[Row]:
        if id(rule) not in self._matches:
            self._matches[id(rule)] = [row for row in self.rows if _selects(rule, row)]
        return self._matches[id(rule)]

    def events(self, rule: SigmaRule | SigmaCorrelationRule) -> list[Event]:
        """What a correlation counts: matched rows, or a referenced correlation's alerts."""
        if isinstance(rule, SigmaCorrelationRule):
            return [_alert(window) for window in self.windows(rule)]
        return [
            Event(row, row.time, frozenset([row.event_id]))
            for row in self.matches(rule)
            if row.time is not None
        ]

    def windows(self, corr: SigmaCorrelationRule) -> list[list[Event]]:
        """The events of every qualifying window `[t - timespan, t]`, per group."""
        if id(corr) in self._windows:
            return self._windows[id(corr)]
        groups: dict[tuple[Any, ...], list[tuple[int, Event]]] = {}
        for slot, ref in enumerate(corr.rules):
            for event in self.events(ref.rule):
                key = _group_key(corr, ref.rule, event)
                if key is not None:
                    groups.setdefault(key, []).append((slot, event))
        found = []
        for members in groups.values():
            members.sort(key=lambda m: m[1].time)
            times = [e.time for _, e in members]
            for end in sorted(set(times)):
                window = members[bisect_left(times, end - _span(corr)) : bisect_right(times, end)]
                if _qualifies(corr, window, end):
                    found.append([e for _, e in window])
        self._windows[id(corr)] = found
        return found


def _selects(rule: SigmaRule, row: Row) -> bool:
    """The rule's logsource admits the row, and its condition holds."""
    source = rule.logsource
    entry = LOGSOURCES.get((source.product, source.service, source.category))
    if entry is None:
        return False  # the engine skips such a rule: no finding
    artifacts, extra = entry
    if row.record.get("artifact") not in artifacts or (extra and not extra(row)):
        return False
    return rule_matches(rule, row)


def _alert(window: list[Event]) -> Event:
    """A qualifying window as an event for a chained correlation: at its end, with its events."""
    end = max(window, key=lambda e: e.time)
    return Event(end.row, end.time, frozenset(i for e in window for i in e.ids))


def _span(corr: SigmaCorrelationRule) -> timedelta:
    return timedelta(seconds=corr.timespan.seconds)


def _resolve(corr: SigmaCorrelationRule, field: str, rule: Any) -> str:
    """The field name `field` stands for in events of `rule`, after the correlation's aliases."""
    alias = corr.aliases.aliases.get(field)
    if alias is not None:
        # the mapping's keys are unresolved references: a rule's name (or id) as written
        names = {str(n) for n in (getattr(rule, "name", None), getattr(rule, "id", None)) if n}
        for ref, name in alias.mapping.items():
            if ref.reference in names:
                field = name
                break
    return _field_names(rule).get(field, field)


def _group_key(corr: SigmaCorrelationRule, rule: Any, event: Event) -> tuple[Any, ...] | None:
    key = []
    for field in corr.group_by or []:
        values = event.row.values(_resolve(corr, field, rule))
        if not values:
            return None  # an event with a missing group-by value is not counted
        key.append(tuple(v.lower() for v in values))
    return tuple(key)


_THRESHOLD: dict[str, Callable[[int, int], bool]] = {
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
}


def _qualifies(corr: SigmaCorrelationRule, window: list[tuple[int, Event]], end: Any) -> bool:
    """Does the window ending at `end` (events tagged with their rule's slot) qualify?"""
    kind = corr.type.name.lower()
    slots = len(corr.rules)
    if kind == "temporal":
        return {slot for slot, _ in window} == set(range(slots))
    if kind == "temporal_ordered":
        earliest = end - _span(corr)  # greedy: each rule's first event after the last
        for slot in range(slots - 1):
            times = [e.time for s, e in window if s == slot and e.time >= earliest]
            if not times:
                return False
            earliest = min(times)
        return any(s == slots - 1 and e.time == end for s, e in window)
    condition = corr.condition
    if kind == "event_count":
        metric = len(window)
    elif kind == "value_count":
        metric = len(
            {
                v.lower()
                for slot, e in window
                for v in e.row.values(_resolve(corr, condition.fieldref, corr.rules[slot].rule))
            }
        )
    elif kind in ("value_sum", "value_avg"):
        numbers = [
            number
            for slot, e in window
            for v in e.row.values(_resolve(corr, condition.fieldref, corr.rules[slot].rule))
            if (number := _number(v)) is not None
        ]
        if not numbers:
            return False  # no number in the window: no sum or average to compare
        metric = sum(numbers) if kind == "value_sum" else sum(numbers) / len(numbers)
    else:
        raise NotImplementedError(f"no reference semantics for correlation type {kind}")
    return _THRESHOLD[condition.op.name.lower()](metric, condition.count)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def evaluate(rules: list[SigmaRule | SigmaCorrelationRule], rows: list[Row]) -> dict[str, Finding]:
    """Every reported rule's finding, keyed by rule id (an empty set: the rule has no hits).

    Rules that only feed a correlation (referenced by one whose `generate` is false) are
    not reported, as in the engine.
    """
    hidden = {
        id(ref.rule)
        for rule in rules
        if isinstance(rule, SigmaCorrelationRule) and not rule.generate
        for ref in rule.rules
    }
    evaluator = Evaluator(rows)
    return {
        str(rule.id): Finding(str(rule.id), rule.title, evaluator.hits(rule))
        for rule in rules
        if id(rule) not in hidden
    }


# -- computed fields (docs/detection.md "Computed fields"), worked out row by row -----------

COMPUTED_FIELDS = (
    "cloudir.api_family",
    "cloudir.query_domain",
    "cloudir.key_new_address",
    "cloudir.key_new_agent_family",
    "cloudir.caller_in_group",
    "cloudir.instance_address",
    "cloudir.discovery_unusual",
    "cloudir.family_failing",
    "cloudir.lambda_new_deployer",
)
_ADDRESS_KEYS = ("privateIpAddress", "ipAddress", "publicIp", "ipv6Address")


def _one(row: Row, field: str) -> str | None:
    found = row.whole_value(field)
    return found[0] if found else None


def _cloudtrail(row: Row) -> bool:
    return row.record.get("artifact") == "aws:cloudtrail"


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def _api_family(row: Row) -> str | None:
    source, name = _one(row, "eventSource"), _one(row, "eventName")
    verb = re.match(r"[A-Za-z][a-z]*", name) if name is not None else None
    return f"{source}:{verb[0]}".lower() if source is not None and verb else None


def _query_domain(row: Row) -> str | None:
    """The domain a DNS query's name is under (docs/detection.md): two labels, or three
    under a country code's `co.`-like second level."""
    if row.record.get("artifact") not in ("aws:route53_resolver",):
        return None
    name = (row.record.get("target") or "").lower()
    found = re.search(r"([^.]+\.(?:co|com|net|org|gov|edu|ac|or|ne|go)\.[^.]{2})\Z", name)
    found = found or re.search(r"([^.]+\.[^.]+)\Z", name)
    return found[1] if found else None


def _key_address(row: Row) -> str | None:
    ip = row.record.get("src_ip")
    return None if ip is None else ip.lower()


def _key_agent_family(row: Row) -> str | None:
    family = agent_family(_one(row, "userAgent"))
    return None if family == "aws-service" else family


def _key_new_address(
    rows: list[Row], place: Callable[[Row], str | None] = _key_address
) -> dict[str, str]:
    """First (key, place) time, and the key's first time, over the whole case; the place
    is the source address (cloudir.key_new_address) or the client family."""
    first_pair: dict[tuple[str, str], datetime] = {}
    first_key: dict[str, datetime] = {}
    used = []
    for row in rows:
        key, where = _one(row, "userIdentity.accessKeyId"), place(row)
        if not _cloudtrail(row) or row.time is None or where is None or key is None:
            continue
        if not key.startswith("AKIA"):
            continue
        pair = (key, where)
        first_pair[pair] = min(first_pair.get(pair, row.time), row.time)
        first_key[key] = min(first_key.get(key, row.time), row.time)
        used.append((row, pair))
    return {
        row.event_id: str(
            first_key[pair[0]] < first_pair[pair]
            and (row.time - first_pair[pair]).total_seconds() <= 3600
        ).lower()
        for row, pair in used
    }


_MEMBERSHIP = {
    "iam.amazonaws.com:AddUserToGroup": True,
    "iam.amazonaws.com:RemoveUserFromGroup": False,
}


def _caller_in_group(rows: list[Row]) -> dict[str, str]:
    """Replays the case's membership changes: the last one strictly before each call that
    names a group decides; changes in one second count as a removal if any is one."""
    changes: dict[tuple[str, ...], dict[datetime, bool]] = {}
    for row in rows:
        member = _MEMBERSHIP.get(row.record.get("action") or "")
        if member is None or not _cloudtrail(row) or row.record.get("outcome") != "success":
            continue
        names = [_one(row, f) for f in ("recipientAccountId", "requestParameters.groupName",
                                        "requestParameters.userName")]  # fmt: skip
        if row.time is None or any(n is None for n in names):
            continue
        at = changes.setdefault(tuple(str(n).lower() for n in names), {})
        at[row.time] = at.get(row.time, True) and member
    values = {}
    for row in rows:
        names = [_one(row, f) for f in ("recipientAccountId", "requestParameters.groupName",
                                        "userIdentity.userName")]  # fmt: skip
        if not _cloudtrail(row) or _one(row, "userIdentity.type") != "IAMUser":
            continue
        if names[1] is None:
            continue
        if row.time is None or names[0] is None or names[2] is None:
            values[row.event_id] = "false"
            continue
        history = changes.get(tuple(str(n).lower() for n in names), {})
        before = [t for t in history if t < row.time]
        values[row.event_id] = str(bool(before) and history[max(before)]).lower()
    return values


def _collect_addresses(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                key in _ADDRESS_KEYS
                and isinstance(value, str)
                and not isinstance(value, JsonNumber)
            ):
                found.add(value.strip().lower())
            _collect_addresses(value, found)
    elif isinstance(node, list):
        for element in node:
            _collect_addresses(element, found)


def _instance_addresses(rows: list[Row]) -> dict[str, set[str]]:
    """Each instance's own addresses as the case shows them: launch, EIP, SSM agent."""
    known: dict[str, set[str]] = {}
    for row in rows:
        if not _cloudtrail(row):
            continue
        action, host, ip = (row.record.get(c) for c in ("action", "host", "src_ip"))
        if action == "ec2.amazonaws.com:RunInstances":
            items = _walk_keys(row.doc, ["responseElements", "instancesSet", "items"])
            for item in items if isinstance(items, list) else []:
                instance = item.get("instanceId") if isinstance(item, dict) else None
                if instance is not None:
                    addresses: set[str] = set()
                    _collect_addresses(item, addresses)
                    known.setdefault(_text(instance).lower(), set()).update(addresses)
        elif action == "ec2.amazonaws.com:AssociateAddress":
            instance = _one(row, "requestParameters.instanceId")
            public = _one(row, "requestParameters.publicIp")
            if instance is not None and public is not None:
                known.setdefault(instance.lower(), set()).add(public.strip().lower())
        if host and host.startswith("i-") and ip is not None and _is_address(ip):
            agent = _one(row, "userAgent")
            if agent is not None and "amazon-ssm-agent" in agent.lower():
                known.setdefault(host.lower(), set()).add(ip.strip().lower())
    return known


def _walk_keys(node: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _instance_address(row: Row, known: dict[str, set[str]]) -> str | None:
    host, ip = row.record.get("host"), row.record.get("src_ip")
    if not _cloudtrail(row) or not host or not host.startswith("i-"):
        return None
    if _one(row, "userIdentity.invokedBy") is not None or ip is None or not _is_address(ip):
        return "service"
    addresses = known.get(host.lower())
    if addresses is None:
        return "unknown"
    return "own" if ip.strip().lower() in addresses else "outside"


def _discovery_verb(row: Row) -> bool:
    action = row.record.get("action") or ""
    parts = action.split(":")
    name = parts[1] if len(parts) > 1 else ""
    return (
        _cloudtrail(row)
        and row.record.get("user") is not None
        and bool(re.match("List|Describe|Get", name))
    )


def _discovery_unusual(rows: list[Row]) -> dict[str, str]:
    """A principal's 10-minute bucket against three times its median bucket in the case."""
    from statistics import median

    buckets: dict[tuple[str, int], set[str]] = {}
    of_row = []
    for row in rows:
        if not _discovery_verb(row) or row.time is None:
            continue
        key = (row.record["user"], int(row.time.timestamp() // 600))
        buckets.setdefault(key, set()).add(row.record["action"].split(":")[1].lower())
        of_row.append((row, key))
    per_user: dict[str, list[int]] = {}
    for (user, _), names in buckets.items():
        per_user.setdefault(user, []).append(len(names))
    unusual = {
        key: len(per_user[key[0]]) < 4 or len(names) >= 3 * median(per_user[key[0]])
        for key, names in buckets.items()
    }
    return {row.event_id: str(unusual[key]).lower() for row, key in of_row}


_DENIED = {
    "AccessDenied", "AccessDeniedException", "Client.UnauthorizedOperation",
    "UnauthorizedOperation", "Client.AccessDenied",
}  # fmt: skip


def _action_family(row: Row) -> str | None:
    source, _, rest = (row.record.get("action") or "").partition(":")
    name = rest.split(":")[0]
    verb = re.match(r"[A-Za-z][a-z]*", name)
    return f"{source}:{verb[0]}".lower() if verb and row.record.get("action") else None


def _family_failing(rows: list[Row]) -> dict[str, str]:
    """Per principal, API family and 10-minute bucket: were half its calls refused?"""
    counts: dict[tuple[str, str | None, int], list[int]] = {}
    of_row = []
    for row in rows:
        user = row.record.get("user")
        if not _cloudtrail(row) or user is None or row.time is None:
            continue
        key = (user, _action_family(row), int(row.time.timestamp() // 600))
        tally = counts.setdefault(key, [0, 0])
        tally[0] += row.record.get("outcome") in _DENIED
        tally[1] += 1
        of_row.append((row, key))
    failing = {key: 2 * denied >= total for key, (denied, total) in counts.items()}
    anywhere = {(u, f) for (u, f, _), bad in failing.items() if bad and f is not None}
    values = {}
    for row, key in of_row:
        if key[1] is None:
            values[row.event_id] = "no"  # no family: the engine's join finds nothing
        elif failing[key]:
            values[row.event_id] = "bucket"
        else:
            values[row.event_id] = "case" if key[:2] in anywhere else "no"
    return values


_DEPLOY = re.compile(r"(CreateFunction|UpdateFunctionCode)[0-9v_]*")


def _deploy(row: Row) -> tuple[str | None, str] | None:
    """(function, principal) of a Lambda create or code update, or None for other rows; the
    function is None when the call does not name it (the engine's join then finds nothing)."""
    user = row.record.get("user")
    if not _cloudtrail(row) or user is None or row.time is None:
        return None
    source, name = _one(row, "eventSource"), _one(row, "eventName") or ""
    if source != "lambda.amazonaws.com" or not _DEPLOY.fullmatch(name):
        return None
    principal = re.sub(r"^(arn:[^:]+:sts::[^:]*:assumed-role/[^/]+)/.*$", r"\1", user)
    account, region = _one(row, "recipientAccountId"), _one(row, "awsRegion")
    named = _one(row, "requestParameters.functionName")
    if account is None or region is None or named is None:
        return None, principal
    return f"{account}/{region}/{named.rsplit(':', 1)[-1]}", principal


def _lambda_new_deployer(rows: list[Row]) -> dict[str, str]:
    """A principal's first hour of deploying a function that someone else deployed first."""
    first: dict[tuple[str | None, str], datetime] = {}
    deploys = []
    for row in rows:
        found = _deploy(row)
        if found is None:
            continue
        deploys.append((row, found))
        if row.record.get("outcome") == "success" and found[0] is not None:
            first[found] = min(first.get(found, row.time), row.time)  # type: ignore[arg-type]
    function_first: dict[str | None, datetime] = {}
    for (function, _), at in first.items():
        function_first[function] = min(function_first.get(function, at), at)
    values = {}
    for row, found in deploys:
        mine = first.get(found)
        new = (
            mine is not None
            and function_first[found[0]] < mine
            and row.time is not None
            and 0 <= (row.time - mine).total_seconds() <= 3600
        )
        values[row.event_id] = str(new).lower()
    return values


def annotate_computed(rows: list[Row]) -> None:
    """Set every row's computed fields; the engine joins the same aggregates in SQL."""
    new_address = _key_new_address(rows)
    new_family = _key_new_address(rows, _key_agent_family)
    in_group = _caller_in_group(rows)
    known = _instance_addresses(rows)
    discovery = _discovery_unusual(rows)
    family = _family_failing(rows)
    deployer = _lambda_new_deployer(rows)
    for row in rows:
        values = {
            "cloudir.api_family": _api_family(row),
            "cloudir.query_domain": _query_domain(row),
            "cloudir.key_new_address": new_address.get(row.event_id),
            "cloudir.key_new_agent_family": new_family.get(row.event_id),
            "cloudir.caller_in_group": in_group.get(row.event_id),
            "cloudir.instance_address": _instance_address(row, known),
            "cloudir.discovery_unusual": discovery.get(row.event_id),
            "cloudir.family_failing": family.get(row.event_id),
            "cloudir.lambda_new_deployer": deployer.get(row.event_id),
        }
        row.computed = {k: v for k, v in values.items() if v is not None}
