"""The alert on the timeline: one row per GuardDuty or Security Hub finding, at its first seen.

`cloudir triage` stores the alert it was given as evidence of kind `alert` (the document
exactly as received: an EventBridge event, a GetFindings response, a finding on its own);
`capture files` recognises such documents too (`--kind alert`, or `auto` by content).
Reading the alert's rows beside the CloudTrail events and host artifacts puts the
detector's claim in the story it is about: what the principal did before and after.

The rows serve no Sigma logsource: a rule over the alert would only restate it. A
document that is not an alert, or a finding in it that cannot be read, is one line in
timeline/errors.jsonl and the other findings still give their rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from cloudir.alerts.document import MAX_BYTES
from cloudir.alerts.model import Alert, AlertError
from cloudir.alerts.read import read_each
from cloudir.alerts.scope import scope_of
from cloudir.analyze.host.rows import host_row
from cloudir.analyze.parsers import (
    BY_CONTENT,
    BY_NAME_AND_STRUCTURE,
    NOT_MINE,
    ErrorLog,
    ParseOptions,
    Parser,
    Row,
    RowSource,
    batches,
    register,
)
from cloudir.safe_text import inert
from cloudir.sniff import sniff

KIND = "alert"
SOURCE = "alert"
ARTIFACTS = {"guardduty": "aws:guardduty", "securityhub": "aws:securityhub"}
TIME_DESC = "Alert First Seen"
MAX_MESSAGE = 1000
RECOGNISE_MAX_FILES = 20  # an alert item is a document or a few; a log folder is not one


def accepts(path: Path) -> bool:
    """Every file of an alert item: triage stores the document under any name (stdin)."""
    return True


def recognise(paths: Sequence[Path]) -> int:
    """Alert documents by content: each file plain JSON (not `{"Records": ...}`) shaped
    as an alert document (its findings are read, or logged, by the timeline). A `.json`
    name whose content is an alert is surer than the name alone, which CloudTrail claims
    for every `.json` file."""
    if not paths or len(paths) > RECOGNISE_MAX_FILES:
        return NOT_MINE
    named = True
    for path in paths:
        seen = sniff(path)
        if seen.compression is not None or seen.format != "json":
            return NOT_MINE
        try:
            if path.stat().st_size > MAX_BYTES:
                return NOT_MINE
            read_each(_read_bytes(path))  # an alert's shape; a bad finding in it is logged
        except (OSError, AlertError):
            return NOT_MINE
        named = named and path.name.lower().endswith(".json")
    return BY_NAME_AND_STRUCTURE if named else BY_CONTENT


def _read_bytes(path: Path) -> bytes:
    """The file, never through a link and never waiting on a FIFO (as sniff reads)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_BYTES + 1)


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions
) -> Iterator[pa.RecordBatch]:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            errors.add(f"{path.name}: {size} bytes, more than an alert document's {MAX_BYTES}")
            return
        found = read_each(_read_bytes(path))
    except OSError as exc:
        errors.add(f"{path.name}: not readable ({exc.strerror or exc})")
        return
    except AlertError as exc:
        errors.add(f"{path.name}: not an alert document: {exc}")
        return
    yield from batches(_rows(found, evidence_id, errors), errors)


def _rows(found: list[Alert | AlertError], evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    for number, item in enumerate(found, 1):
        if isinstance(item, AlertError):
            errors.add(f"finding not read: {item}", record=number)
            continue
        when = item.first_seen or item.last_seen
        if when is None:
            errors.add(f"finding {inert(item.id, 80)} has no time; not placed", record=number)
            continue
        yield _row(item, when.isoformat(), evidence_id, number)


def _row(alert: Alert, when: str, evidence_id: str, number: int) -> Row:
    scope = scope_of(alert)  # the same reading of who and where as triage's
    user = next(iter(scope.principals or scope.users or scope.roles), None)
    host = scope.instances[0] if alert.family == "instance" and scope.instances else None
    message = f"{alert.product} {alert.severity}: {alert.title}"
    if alert.sample:
        message += " (sample finding)"
    return host_row(
        when=when,
        desc=TIME_DESC,
        artifact=ARTIFACTS.get(alert.source, f"aws:{alert.source}"),
        host=host,
        evidence_id=evidence_id,
        raw=json.dumps(alert.raw, sort_keys=True),
        message=inert(message, MAX_MESSAGE),
        user=user,
        src_ip=next(iter(scope.addresses), None),
        action=alert.type,
        target=alert.resources[0].id if alert.resources else None,
        outcome=None,
        occurrence=number,
        source=SOURCE,
    )


register(
    Parser(
        name="alert",
        evidence_kinds=(KIND,),
        accepts=accepts,
        parse=parse,
        artifacts=(
            RowSource(ARTIFACTS["guardduty"], "one GuardDuty finding, at its first seen"),
            RowSource(
                ARTIFACTS["securityhub"], "one Security Hub (ASFF) finding, at its first seen"
            ),
        ),
        capture_kind=KIND,
        recognise=recognise,
        priority=45,
    )
)
