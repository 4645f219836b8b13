"""Playbooks: YAML files that say what to collect for an alert, and what would contain it.

A playbook is data, not code, so a responder can read, review and change what triage
does without reading Python, and a security team can keep its own in version control.
cloudir ships one per alert family (`playbooks/*.yml`); a user's files override a shipped
one of the same name and are tried first. Every file is checked against `SCHEMA` (JSON
Schema, also printed in docs/triage.md) plus the few rules a schema cannot say, and each
bad field is one line naming the file and the field's path:

    playbooks/x.yml: collect[2].kind: 'ebz' is not one of cloudtrail, lookup-events, ...

The YAML is read strictly: one document, string keys, no duplicate keys, no anchors or
aliases, and only `true`/`false` are booleans (`auto: yes` is an error, not a yes), so a
containment that runs without a person can only be switched on by writing `auto: true`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cloudir.alerts.model import FAMILIES, Alert
from cloudir.errors import UsageError
from cloudir.safe_text import inert

SHIPPED = Path(__file__).resolve().parent / "playbooks"
FALLBACK = "account"  # the shipped playbook chosen when no other matches
MAX_FILE_BYTES = 1 << 20

STEP_KINDS = ("cloudtrail", "lookup-events", "ebs", "containers", "related-findings")
CONTAIN_ACTIONS = ("isolate", "disable-key")  # exactly `cloudir respond isolate|disable-key`
LOOKUP_BY = ("access-key", "user", "resource")
LOOKUP_WHEN = ("no-trail", "always")

_TEXT = "^[^\\x00-\\x1f\\x7f]*$"  # one line, no control characters
_COUNT = {"type": "integer", "minimum": 1, "maximum": 64}

# What each step kind accepts besides `kind`; every option has a default (DEFAULTS).
STEP_OPTIONS: dict[str, dict[str, Any]] = {
    "cloudtrail": {
        "trail": {"type": "string", "minLength": 1, "maxLength": 2048, "pattern": _TEXT},
        "bucket": {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
            "x-message": "is not an S3 bucket name",
        },
        "prefix": {"type": "string", "maxLength": 1024, "pattern": _TEXT},
        "workers": _COUNT,
    },
    "lookup-events": {
        "by": {
            "type": "array",
            "items": {"enum": list(LOOKUP_BY)},
            "minItems": 1,
            "uniqueItems": True,
        },
        "when": {"enum": list(LOOKUP_WHEN)},
    },
    "ebs": {
        "download": {"type": "boolean"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        "workers": _COUNT,
    },
    "containers": {
        "pause": {"type": "boolean"},
        "changed_only": {"type": "boolean"},
        "workers": _COUNT,
    },
    "related-findings": {
        "max_findings": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
}

STEP_DEFAULTS: dict[str, dict[str, Any]] = {
    "cloudtrail": {"trail": None, "bucket": None, "prefix": "", "workers": 16},
    "lookup-events": {"by": ["access-key", "user"], "when": "no-trail"},
    "ebs": {"download": False, "timeout": 1800, "workers": 32},
    "containers": {"pause": False, "changed_only": False, "workers": 4},
    "related-findings": {"max_findings": 200},
}

ACTION_OPTIONS: dict[str, dict[str, Any]] = {
    "isolate": {
        "snapshot": {"type": "boolean"},
        "replace": {"type": "boolean"},
        "keep_credentials": {"type": "boolean"},
        "allow_cidrs": {
            "type": "array",
            "items": {"type": "string", "maxLength": 64, "pattern": _TEXT},
            "uniqueItems": True,
        },
    },
    "disable-key": {
        "revoke_sessions": {"type": "boolean"},
    },
}

ACTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "isolate": {"snapshot": True, "replace": False, "keep_credentials": False, "allow_cidrs": []},
    "disable-key": {"revoke_sessions": True},
}


def _tagged(tag: str, values: tuple[str, ...], options: dict[str, dict[str, Any]]) -> Any:
    """An object with a `tag` field naming its shape, and per shape its own fields only."""
    return {
        "type": "object",
        "required": [tag],
        "properties": {tag: {"enum": list(values)}},
        "allOf": [
            {
                "if": {"properties": {tag: {"const": value}}, "required": [tag]},
                "then": {
                    "properties": {tag: True, **options[value]},
                    "additionalProperties": False,
                },
            }
            for value in values
        ],
    }


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://cloudir.example/schemas/triage-playbook-1.json",
    "title": "cloudir triage playbook",
    "type": "object",
    "required": ["name", "match", "collect"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "name": {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9-]{0,62}$",
            "x-message": "must be 1-63 lower-case letters, digits and '-', starting with "
            "a letter or digit",
        },
        "description": {"type": "string", "maxLength": 4000},
        "match": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "x-message": "name families, types or both",
            "properties": {
                "families": {
                    "type": "array",
                    "items": {"enum": list(FAMILIES)},
                    "minItems": 1,
                    "uniqueItems": True,
                },
                "types": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 256,
                        "pattern": _TEXT,
                    },
                    "minItems": 1,
                    "uniqueItems": True,
                },
            },
        },
        "collect": {
            "type": "array",
            "maxItems": 20,
            "items": _tagged("kind", STEP_KINDS, STEP_OPTIONS),
        },
        "contain": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "auto": {"type": "boolean"},
                "actions": {
                    "type": "array",
                    "maxItems": 10,
                    "items": _tagged("action", CONTAIN_ACTIONS, ACTION_OPTIONS),
                },
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


class PlaybookError(UsageError):
    """One or more bad playbooks: one line per bad field, `<file>: <path>: <problem>`.
    A usage error (exit 2): the files the responder named are wrong, nothing ran."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class Step:
    """One `collect` entry: its kind and its options, defaults filled in."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.options[key]


@dataclass(frozen=True)
class ContainAction:
    """One containment the playbook names: a `cloudir respond` action and its options."""

    action: str  # one of CONTAIN_ACTIONS
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Playbook:
    name: str
    description: str
    families: tuple[str, ...]
    types: tuple[str, ...]  # glob patterns over Alert.type (fnmatch, case-sensitive)
    steps: tuple[Step, ...]
    contain: tuple[ContainAction, ...] = ()
    auto_contain: bool = False  # only ever true when the file says `auto: true`
    source: str = ""  # the file it came from, as named in messages
    shipped: bool = True

    def matches(self, alert: Alert) -> str | None:
        """How this playbook matches the alert: "type" (a pattern), "family", or None."""
        if any(fnmatch.fnmatchcase(alert.type, pattern) for pattern in self.types):
            return "type"
        if alert.family in self.families:
            return "family"
        return None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for triage/result.json and `--json`."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "shipped": self.shipped,
            "match": {"families": list(self.families), "types": list(self.types)},
            "collect": [{"kind": s.kind, **s.options} for s in self.steps],
            "contain": {
                "auto": self.auto_contain,
                "actions": [{"action": a.action, **a.options} for a in self.contain],
            },
        }


# -- loading -----------------------------------------------------------------------------
def load_playbooks(paths: list[Path]) -> list[Playbook]:
    """The shipped playbooks and the user's (`paths`: files, or folders of *.yml/*.yaml).

    User playbooks come first, in the order given (a folder's files by name); one named
    like a shipped playbook replaces it. Every problem in every file is collected and
    raised together as one PlaybookError, so one run shows everything to fix.
    """
    errors: list[str] = []
    user: list[Playbook] = []
    for path in _user_files(paths, errors):
        try:
            user.append(load_file(path, str(path), shipped=False))
        except PlaybookError as exc:
            errors.extend(exc.lines)
    seen: dict[str, str] = {}
    for book in user:
        if book.name in seen:
            errors.append(
                f"{book.source}: name: {book.name!r} is also the name of {seen[book.name]}; "
                "a name chooses one playbook"
            )
        seen.setdefault(book.name, book.source)
    shipped = [
        load_file(path, f"<shipped>/{path.name}", shipped=True)
        for path in sorted(SHIPPED.glob("*.yml"))
    ]
    if errors:
        raise PlaybookError(errors)
    return user + [book for book in shipped if book.name not in seen]


def _user_files(paths: list[Path], errors: list[str]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml"))
            if not found:
                errors.append(f"{path}: no playbook files (*.yml, *.yaml) in this folder")
            yield from (p for p in found if p.is_file())
        elif path.is_file():
            yield path
        else:
            errors.append(f"{path}: no such playbook file or folder")


def load_file(path: Path, label: str, shipped: bool = False) -> Playbook:
    """One playbook file, checked; PlaybookError naming `label` and each bad field."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PlaybookError([f"{label}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise PlaybookError([f"{label}: larger than {MAX_FILE_BYTES} bytes; not a playbook"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlaybookError([f"{label}: not UTF-8 text (byte {exc.start})"]) from None
    return parse(text, label, shipped)


def parse(text: str, label: str, shipped: bool = False) -> Playbook:
    """A playbook from YAML text; `label` names it in every error line."""
    document = read_yaml(text, label)
    lines = [f"{label}: {line}" for line in problems(document)]
    if lines:
        raise PlaybookError(lines)
    return _build(document, label, shipped)


def problems(document: Any) -> list[str]:
    """`<path>: <problem>` for each bad field (the first problem of each), in file order
    of paths; the schema first, then the rules it cannot express."""
    if document is None:
        return ["(top): the file is empty; a playbook is a YAML mapping (name, match, collect)"]
    if not isinstance(document, dict):
        return [
            f"(top): a playbook is a YAML mapping (name, match, collect, ...), "
            f"not {_type_word(document)}"
        ]
    found: dict[str, str] = {}
    for error in _VALIDATOR.iter_errors(document):
        for path, message in _explain(error):
            found.setdefault(path, message)
    if not found:
        for path, message in _rules(document):
            found.setdefault(path, message)
    return [f"{path}: {message}" for path, message in sorted(found.items(), key=_path_order)]


def _path_order(item: tuple[str, str]) -> list[Any]:
    return [
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\[\]]+", item[0]) if p
    ]


def _rules(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """What the schema cannot say: exclusive options, one step per kind, real networks."""
    first: dict[str, int] = {}
    for n, step in enumerate(document.get("collect") or []):
        kind = step["kind"]
        if kind in first:
            yield f"collect[{n}].kind", f"{kind!r} is already collect[{first[kind]}]"
        first.setdefault(kind, n)
        if kind == "cloudtrail":
            if "bucket" in step and "trail" in step:
                yield f"collect[{n}].trail", "give bucket or trail, not both"
            if "prefix" in step and "bucket" not in step:
                yield f"collect[{n}].prefix", "only with bucket (a trail names its own prefix)"
    contain = document.get("contain") or {}
    actions = contain.get("actions") or []
    taken: dict[str, int] = {}
    for n, action in enumerate(actions):
        name = action["action"]
        if name in taken:
            yield f"contain.actions[{n}].action", f"{name!r} is already actions[{taken[name]}]"
        taken.setdefault(name, n)
        for m, cidr in enumerate(action.get("allow_cidrs") or []):
            reason = _cidr_problem(cidr)
            if reason:
                yield f"contain.actions[{n}].allow_cidrs[{m}]", reason
    if contain.get("auto") is True and not actions:
        yield "contain.auto", "true, but no actions to run"


def _cidr_problem(text: str) -> str | None:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"{_shown(text)} is not an IP network (198.51.100.0/24)"
    if net.prefixlen == 0:
        return f"{_shown(text)} lets the whole internet in; name your examiners' range"
    return None


def _explain(error: jsonschema.ValidationError) -> Iterator[tuple[str, str]]:
    """One schema error as (field path, message), in words for a person editing YAML."""
    path = _path(error.absolute_path)
    value = error.instance
    rule = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    if rule == "required":
        for name in error.validator_value:
            if isinstance(value, dict) and name not in value:
                yield _join(path, name), "missing" + _choices_of(error, name)
        return
    if rule == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        for name in value:
            if name not in schema.get("properties", {}):
                yield _join(path, str(name)), f"unknown field; expected {_words(allowed)}"
        return
    yield path or "(top)", _message(rule, error.validator_value, value, schema)


def _message(rule: str, expected: Any, value: Any, schema: dict[str, Any]) -> str:
    if rule == "pattern" and "x-message" in schema:
        return f"{_shown(value)} {schema['x-message']}"
    if rule == "minProperties" and "x-message" in schema:
        return str(schema["x-message"])
    if rule == "enum":
        return f"{_shown(value)} is not one of {', '.join(map(str, expected))}"
    if rule == "const":
        return f"{_shown(value)} is not {expected!r}"
    if rule == "type":
        return f"expected {_type_name(expected)}, not {_type_word(value)}"
    if rule == "pattern":
        return f"{_shown(value)} contains a control character (a line break, a tab, ...)"
    if rule == "minItems":
        return "must not be empty"
    if rule == "maxItems":
        return f"at most {expected} entries"
    if rule == "uniqueItems":
        return "lists an entry twice"
    if rule == "minLength":
        return "must not be empty"
    if rule == "maxLength":
        return f"longer than {expected} characters"
    if rule == "minimum":
        return f"{_shown(value)} is too small (at least {expected})"
    if rule == "exclusiveMinimum":
        return f"{_shown(value)} is too small (more than {expected})"
    if rule == "maximum":
        return f"{_shown(value)} is too large (at most {expected})"
    if rule == "minProperties":
        return "must not be empty"
    return f"{_shown(value)} is not valid ({rule})"


def _choices_of(error: jsonschema.ValidationError, name: str) -> str:
    enum = (
        error.schema.get("properties", {}).get(name, {}).get("enum")
        if isinstance(error.schema, dict)
        else None
    )
    return f" (one of {', '.join(enum)})" if enum else ""


def _path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, str(part))
    return out


def _join(path: str, name: str) -> str:
    return f"{path}.{_shown_key(name)}" if path else _shown_key(name)


def _shown_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) else _quoted(name, 64)


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, float)):
        return inert(repr(value), 40)
    return _type_word(value)


def _quoted(text: str, limit: int = 80) -> str:
    """Python's quoting (control and invisible characters escaped), cut to `limit`."""
    return inert(repr(text if len(text) <= limit else text[: limit - 1] + "…"))


def _type_name(expected: Any) -> str:
    names = {
        "string": "a string",
        "boolean": "true or false",
        "integer": "a whole number",
        "number": "a number",
        "array": "a list",
        "object": "a mapping",
    }
    if isinstance(expected, list):
        return " or ".join(names.get(str(e), str(e)) for e in expected)
    return names.get(expected, str(expected))


def _type_word(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"the number {inert(repr(value), 40)}"
    if isinstance(value, str):
        return f"the string {_quoted(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _words(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def _build(document: dict[str, Any], label: str, shipped: bool) -> Playbook:
    match = document["match"]
    contain = document.get("contain") or {}
    steps = tuple(
        Step(
            step["kind"],
            {**STEP_DEFAULTS[step["kind"]], **{k: v for k, v in step.items() if k != "kind"}},
        )
        for step in document["collect"]
    )
    actions = tuple(
        ContainAction(
            action["action"],
            {
                **ACTION_DEFAULTS[action["action"]],
                **{k: v for k, v in action.items() if k != "action"},
            },
        )
        for action in contain.get("actions") or []
    )
    return Playbook(
        name=document["name"],
        description=" ".join(str(document.get("description", "")).split()),
        families=tuple(match.get("families", ())),
        types=tuple(match.get("types", ())),
        steps=steps,
        contain=actions,
        auto_contain=contain.get("auto") is True,
        source=label,
        shipped=shipped,
    )


# -- choosing ------------------------------------------------------------------------------
def choose(alert: Alert, playbooks: list[Playbook]) -> Playbook:
    """The playbook for the alert: user playbooks before shipped ones, and within each a
    type pattern before a family; the first in order wins a tie. With no match, the
    playbook named `account` (the shipped fallback, or a user file of that name)."""
    ranked = []
    for order, book in enumerate(playbooks):
        how = book.matches(alert)
        if how:
            ranked.append(((1 if book.shipped else 0), (0 if how == "type" else 1), order))
    if ranked:
        return playbooks[min(ranked)[2]]
    for book in playbooks:
        if book.name == FALLBACK:
            return book
    raise PlaybookError(
        [
            f"no playbook matches family {alert.family!r} or type {inert(alert.type, 120)!r}, "
            f"and there is no {FALLBACK!r} playbook to fall back on"
        ]
    )


# -- strict YAML -------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's surprises: only true/false are booleans, dates stay
    strings, and anchors, aliases, duplicate and non-string keys are refused."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _Refused(Exception):
    def __init__(self, mark: Any, text: str) -> None:
        super().__init__(text)
        self.mark = mark


def _compose_node(self: _StrictLoader, parent: Any, index: Any) -> Any:
    event: Any = self.peek_event()  # type: ignore[no-untyped-call]
    if isinstance(event, yaml.AliasEvent):
        raise _Refused(event.start_mark, "aliases (*name) are not allowed")
    if getattr(event, "anchor", None):
        raise _Refused(event.start_mark, "anchors (&name) are not allowed")
    return yaml.SafeLoader.compose_node(self, parent, index)


def _construct_mapping(self: _StrictLoader, node: Any, deep: bool = False) -> Any:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused(key_node.start_mark, "merge keys (<<) are not allowed")
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _Refused(key_node.start_mark, f"keys must be text, not {_type_word(key)}")
            if key in seen:
                raise _Refused(key_node.start_mark, f"duplicate key {_shown(key)}")
            seen.add(key)
    return yaml.SafeLoader.construct_mapping(self, node, deep=deep)


_StrictLoader.compose_node = _compose_node  # type: ignore[method-assign,assignment]
_StrictLoader.construct_mapping = _construct_mapping  # type: ignore[method-assign,assignment]


def read_yaml(text: str, label: str) -> Any:
    """The one YAML document in `text`; PlaybookError (one line, with its line number)."""
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)
        return loader.get_single_data()
    except _Refused as exc:
        raise PlaybookError([f"{label}: line {exc.mark.line + 1}: {exc}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        what = " ".join(str(exc.problem or exc.context or "not YAML").split())
        raise PlaybookError([f"{label}: {where}{inert(what, 200)}"]) from None
    except yaml.YAMLError as exc:
        raise PlaybookError([f"{label}: {inert(' '.join(str(exc).split()), 200)}"]) from None
    except RecursionError:
        raise PlaybookError([f"{label}: nested too deeply to be a playbook"]) from None
    finally:
        if loader is not None:
            loader.dispose()
