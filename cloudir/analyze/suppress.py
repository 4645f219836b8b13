"""Suppressions: Sigma filter rules (the Sigma specification's `filter:` documents) that
remove known-good events from the rules they name, and say how many they removed.

A filter is what pySigma's `SigmaFilter` reads:

    title: Terraform CI role
    logsource: {product: aws, service: cloudtrail}
    filter:
      rules: [<rule id or name>, ...]      # or `any`
      selection:
        userIdentity.sessionContext.sessionIssuer.userName: terraform-ci
      condition: not selection

pySigma applies it by appending ` and (condition)` to each named rule: the condition says
which events the rule KEEPS. cloudir compiles the condition once as its own predicate, so
the events a filter removes (rule matched, condition false) are counted, sampled and named
in findings.json `suppressions` instead of vanishing: a suppression is never a silent drop.
A filter file that cannot be read is a usage error naming the file (exit 2), never a
half-applied suppression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudir.errors import UsageError

SAMPLE = 20  # event ids listed per filter; the count is always exact


@dataclass
class Suppression:
    filter_id: str
    title: str
    path: str
    references: list[str] | None  # None: `rules: any`
    logsource: Any  # pySigma SigmaLogSource: the rules it may apply to
    keep: str  # the filter's condition as SQL: the events a rule keeps
    applies_to: list[int] = field(default_factory=list)  # indexes into RuleSet.rules
    not_applied: list[dict[str, str]] = field(default_factory=list)
    suppressed: int = 0
    event_ids_sample: list[str] = field(default_factory=list)

    def summary(self, rule_ids: list[str]) -> dict[str, Any]:
        return {
            "filter_id": self.filter_id,
            "title": self.title,
            "path": self.path,
            "rules": rule_ids,
            "suppressed": self.suppressed,
            "event_ids_sample": self.event_ids_sample,
            "not_applied": self.not_applied,
        }


def filter_files(folders: list[Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"--suppress {folder}: not a folder of Sigma filter files")
        found = sorted(p for p in folder.rglob("*") if p.suffix in (".yml", ".yaml"))
        if not found:
            raise UsageError(f"--suppress {folder}: no filter files (*.yml) in it")
        files.extend(found)
    return files


def load(folders: list[Path], ruleset: Any, con: Any) -> list[Suppression]:
    """Every filter of every folder, compiled with the rules' backend and bound on `con`;
    which loaded rules each applies to, and why it does not apply to the others it names."""
    suppressions = []
    for path in filter_files(folders):
        for data in _documents(path):
            suppression = _compile(path, data, ruleset, con)
            _resolve(suppression, ruleset)
            suppressions.append(suppression)
    return suppressions


def _documents(path: Path) -> list[dict[str, Any]]:
    from cloudir.analyze.detect import _rule_text, split_documents

    try:
        documents = split_documents(_rule_text(path))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the filter: {exc}") from None
    if not documents:
        raise UsageError(f"{path}: empty; a suppression is a Sigma filter rule")
    found = []
    for document in documents:
        if document.error is not None:
            raise UsageError(f"{path}: {document.error}")
        data = document.data
        if not isinstance(data, dict) or "filter" not in data:
            raise UsageError(
                f"{path}: not a Sigma filter (no `filter:` mapping); see docs/detection.md"
            )
        found.append(data)
    return found


def _compile(path: Path, data: dict[str, Any], ruleset: Any, con: Any) -> Suppression:
    from sigma.filters import SigmaFilter
    from sigma.rule import SigmaRule

    from cloudir.analyze.detect import _quiet_stderr, scan_sql
    from cloudir.analyze.duck import bind

    def bad(reason: str) -> UsageError:
        return UsageError(f"{path}: invalid Sigma filter: {' '.join(reason.split())}")

    try:
        sigma_filter = SigmaFilter.from_dict(data, collect_errors=True)
    except Exception as exc:  # pySigma raises more than SigmaError on odd shapes
        raise bad(str(exc) or type(exc).__name__) from None
    if sigma_filter.errors:
        raise bad("; ".join(str(e) for e in sigma_filter.errors))
    body = {k: v for k, v in data["filter"].items() if k != "rules"}
    backend = ruleset.backend
    try:
        with _quiet_stderr():
            keep_rule = SigmaRule.from_dict(
                {
                    "title": str(sigma_filter.title or path.stem),
                    "logsource": data["logsource"],
                    "detection": body,
                }
            )
            backend.convert_rule(keep_rule)
            keep = " OR ".join(f"({q})" for q in keep_rule.get_conversion_result())
            bind(
                con,
                f"SELECT event_id FROM ({scan_sql(backend)}) WHERE {backend.fields.resolve(keep)}",
            )
    except Exception as exc:  # pySigma's conversion or DuckDB's binder: the file is bad
        raise bad(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    rules = sigma_filter.filter.rules
    return Suppression(
        filter_id=str(sigma_filter.id or sigma_filter.name or path.stem),
        title=str(sigma_filter.title or path.stem),
        path=str(path),
        references=None if isinstance(rules, str) else [str(r.reference) for r in rules],
        logsource=sigma_filter.logsource,
        keep=keep,
    )


def _resolve(suppression: Suppression, ruleset: Any) -> None:
    """Which rules the filter applies to: named by id or name (as pySigma resolves a
    reference), a detection rule, inside the filter's logsource."""
    rules = ruleset.rules
    if suppression.references is None:  # `rules: any`
        suppression.applies_to = [
            n
            for n, r in enumerate(rules)
            if not r.is_correlation and r.sigma_logsource in suppression.logsource
        ]
        return
    for reference in suppression.references:
        named = [n for n, r in enumerate(rules) if reference in (r.rule_id, r.name)]
        reason = None
        if not named:
            reason = "no loaded rule has this id or name"
        elif all(rules[n].is_correlation for n in named):
            reason = (
                "a correlation rule: filters apply to detection rules (as in pySigma); "
                "name the rules it refers to"
            )
        elif not any(rules[n].sigma_logsource in suppression.logsource for n in named):
            reason = "the rule's logsource is outside the filter's logsource"
        if reason:
            suppression.not_applied.append({"rule": reference, "reason": reason})
            continue
        for n in named:
            rule = rules[n]
            usable = not rule.is_correlation and rule.sigma_logsource in suppression.logsource
            if usable and n not in suppression.applies_to:
                suppression.applies_to.append(n)


def warnings(suppressions: list[Suppression]) -> list[str]:
    return [
        f"suppression {s.title!r} ({s.path}): rule {miss['rule']!r} not filtered: "
        f"{miss['reason']}; it suppresses nothing there"
        for s in suppressions
        for miss in s.not_applied
    ]
