"""The responders' own actions on the timeline: each containment change at its time.

An analyst reading the timeline must see "isolated at 06:10" between the intruder's
events, and the CloudTrail events the isolation itself caused must not read as the
intruder's. Each change made is `steps/NNN.json` of a `response` item, written the
moment it lands (so a run killed half-way still has its rows); `outcome.json` adds the
step that failed. The plan beside them is the intent and gives no rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from cloudir.analyze.host.rows import host_row
from cloudir.analyze.parsers import (
    ErrorLog,
    ParseOptions,
    Parser,
    RowSource,
    batches,
    json_loads,
    json_object,
    register,
)

SOURCE = "response"
ARTIFACT = "cloudir:respond"
MAX_BYTES = 16 << 20


def accepts(path: Path) -> bool:
    return path.name == "outcome.json" or (path.parent.name == "steps" and path.suffix == ".json")


def skip_reason(path: Path) -> str | None:
    if path.name == "plan.json":
        return "the containment plan: what was done is read from outcome.json"
    return None


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions
) -> Iterator[pa.RecordBatch]:
    try:
        if path.stat().st_size > MAX_BYTES:
            errors.add(f"{path.name}: larger than {MAX_BYTES} bytes, not read")
            return
        outcome = json_loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        errors.add(f"{path.name}: not valid JSON ({exc})")
        return
    if not isinstance(outcome, dict):
        errors.add(f"{path.name}: not a containment record")
        return
    meta = _meta(path)
    yield from batches(_rows(path, outcome, meta, evidence_id, errors), errors)


def _meta(path: Path) -> dict[str, Any]:
    """The item's meta.json: which action, on what, by whom (for the step files)."""
    folder = path.parent.parent if path.parent.name == "steps" else path.parent
    try:
        meta = json_loads((folder / "meta.json").read_bytes())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _rows(
    path: Path,
    document: dict[str, Any],
    meta: dict[str, Any],
    evidence_id: str,
    errors: ErrorLog,
) -> Iterator[Any]:
    source = json_object(meta.get("source"))
    action = str(source.get("action") or document.get("action") or "respond")
    subject = str(source.get("target") or document.get("target") or "")
    actor = json_object(meta.get("caller_identity")).get("Arn") or document.get("actor")
    host = subject if subject.startswith("i-") else None
    if path.name == "outcome.json":  # each change done has its own step file
        steps = [(document["failed"], "failure")] if document.get("failed") else []
    else:
        steps = [(document, "success")]
    for number, (step, result) in enumerate(steps, 1):
        if not isinstance(step, dict) or not step.get("at"):
            errors.add("a step without a time is not placed on the timeline", record=number)
            continue
        message = f"cloudir respond {action}: {step.get('summary', '')}"
        if result == "failure":
            message += f" FAILED: {step.get('error', '')}"
        yield host_row(
            when=step["at"],
            desc="Response Time",
            artifact=ARTIFACT,
            host=host,
            evidence_id=evidence_id,
            raw=json.dumps(step, sort_keys=True, default=str),
            message=message,
            user=actor or None,
            action=f"cloudir:{action}:{step.get('kind', '')}",
            target=str(step.get("target") or ""),
            outcome=result,
            occurrence=number,
            source=SOURCE,
        )


register(
    Parser(
        name="response",
        evidence_kinds=("response",),
        accepts=accepts,
        parse=parse,
        skip_reason=skip_reason,
        artifacts=(RowSource(ARTIFACT, "one containment change cloudir made, at its time"),),
        priority=50,
    )
)
