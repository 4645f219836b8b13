"""One line of `timeline/errors.jsonl`: what the timeline could not read, or read with doubt.

errors.jsonl is a contract (docs/DESIGN.md; the report, `--strict` and tests read it), and
its lines come from the parsers, the completeness check, the file planner, the worker
pool, de-duplication and the implausible-time check. They are all built here, so every
line says the same things the same way: where (`evidence_id`, `path`, then `line` and
`record` when known), what kind of trouble (`kind`; none for a record a parser could not
read), any details of that kind, and last the `reason` a person reads. The entries keep
that order in memory (summary.json's `evidence_problems`, `--json` output); the file
itself is written with its keys sorted.
"""

from __future__ import annotations

from typing import Any


def error_entry(
    evidence_id: str,
    path: str,
    reason: str,
    *,
    kind: str | None = None,
    line: int | None = None,
    record: int | None = None,
    **details: Any,
) -> dict[str, Any]:
    """An errors.jsonl entry. `line`, `record` and `kind` are left out when unknown
    (None), as readers test for the key; `details` are kept as given.

    `record` counts a file's events from 1 in file order, `line` is the JSONL line;
    `details` are a kind's own fields (the `event_id` of an implausible time, the
    copies of a disagreeing event) and come after `kind`, before `reason`.
    """
    entry: dict[str, Any] = {"evidence_id": evidence_id, "path": path}
    if line is not None:
        entry["line"] = line
    if record is not None:
        entry["record"] = record
    if kind is not None:
        entry["kind"] = kind
    entry.update(details)
    entry["reason"] = reason
    return entry
