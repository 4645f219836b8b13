"""CloudWatch Logs events on the timeline: one row per event of a FilterLogEvents page or
of the files an export task wrote.

`cloudir capture logs --log-group` stores each FilterLogEvents response as received
(`pages/page-NNNNN.json`: `{"events": [{logStreamName, timestamp, message,
ingestionTime, eventId}], "nextToken": ...}`); `capture files` recognises such pages too.
A row keeps the event whole in `raw` (with its log group, from the item's meta.json) and
its message, made inert, as the row's message, so a Lambda function's output or an
application's log sits on the timeline beside the API calls that caused it.

The event id is the service's own `eventId` within its log group and stream: two
captures whose windows overlap, or a resumed capture that read pages again, hold the same
event with the same bytes, and the timeline's de-duplication keeps one. The messages are
whatever the group holds: typed readings of particular groups (flow logs, Resolver
queries, EKS audit) belong to those sources' parsers. A page that is not JSON, or an
event without a time, is one line in timeline/errors.jsonl; the page's other events still
give their rows.

`capture logs --export-to` holds the gzipped lines an export task wrote
(`logs/<taskId>/<stream>/000000.gz`, read by `_cloudwatch_export.py`): the same rows, the
stream from the object's key, the time from the line, `raw` the group, stream, time (ms)
and message. The task's own answers (`export-task/<taskId>/*.json`) are kept as received
and left unread on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

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
    json_loads,
    register,
)
from cloudir.analyze.parsers._cloudwatch_export import TIME_DESC as EXPORT_TIME_DESC
from cloudir.analyze.parsers._cloudwatch_export import (
    epoch_ms,
    is_export_object,
    read_export,
    stream_of,
)
from cloudir.analyze.parsers._cloudwatch_export import event_id as export_event_id
from cloudir.safe_text import inert
from cloudir.sniff import sniff

KIND: Final = "cloudwatch-logs"
SOURCE: Final = "cloudwatch"
ARTIFACT: Final = "aws:cloudwatch-logs"
TIME_DESC: Final = "Log Event Time"
TASK_DIR: Final = "export-task"  # capture/log_export.py keeps the task's answers there
MAX_PAGE_BYTES: Final = 256 << 20  # FilterLogEvents answers at most 1 MB; room for odd files
MAX_MESSAGE: Final = 1000
RECOGNISE_MAX_FILES: Final = 10_000
_EVENT_KEYS: Final = {"timestamp", "message"}
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def accepts(path: Path) -> bool:
    if is_export_object(path):
        return True
    return path.suffix.lower() == ".json" and path.name != "meta.json" and not _task_answer(path)


def _task_answer(path: Path) -> bool:
    """An export task's CreateExportTask or DescribeExportTasks answer in its item."""
    return path.parent.parent.name == TASK_DIR


def skip_reason(path: Path) -> str | None:
    if path.suffix.lower() == ".json" and _task_answer(path):
        return "the export task's answer as received (task id and status); not log events"
    return None


def recognise(paths: Sequence[Path]) -> int:
    """FilterLogEvents (or GetLogEvents) pages by content: a JSON object whose `events`
    are objects with a time and a message. Named `.json`, surer than content alone."""
    if not paths or len(paths) > RECOGNISE_MAX_FILES:
        return NOT_MINE
    named = True
    for path in paths[:20]:  # a capture's pages are alike; the first ones decide
        seen = sniff(path)
        if seen.compression is not None or seen.format != "json":
            return NOT_MINE
        try:
            document = json_loads(read_bounded(path))
        except (OSError, ValueError):
            return NOT_MINE
        events = document.get("events") if isinstance(document, dict) else None
        if not isinstance(events, list) or "Records" in document:
            return NOT_MINE
        if any(not isinstance(e, dict) or not e.keys() >= _EVENT_KEYS for e in events[:50]):
            return NOT_MINE
        named = named and path.name.lower().endswith(".json")
    return BY_NAME_AND_STRUCTURE if named else BY_CONTENT


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions
) -> Iterator[pa.RecordBatch]:
    if is_export_object(path):
        yield from batches(_export_rows(path, evidence_id, errors), errors)
        return
    page = read_page(path, errors)
    if page is not None:
        events, group = page
        yield from batches(_rows(events, group, evidence_id, errors), errors)


def read_page(path: Path, errors: ErrorLog) -> tuple[list[Any], str | None] | None:
    """A page's events and its item's log group; None (logged) for what is not a page.
    Shared with the parsers of sources delivered to CloudWatch Logs (Kubernetes audit)."""
    try:
        data = read_bounded(path)
    except OSError as exc:
        errors.add(f"{path.name}: not readable ({exc.strerror or exc})")
        return None
    if len(data) > MAX_PAGE_BYTES:
        errors.add(f"{path.name}: over {MAX_PAGE_BYTES} bytes, not a log events page; not read")
        return None
    try:
        document = json_loads(data)
    except ValueError as exc:
        errors.add(f"{path.name}: not valid JSON ({exc})")
        return None
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list):
        errors.add(f"{path.name}: no `events` list: not a CloudWatch Logs events page")
        return None
    return events, _log_group(path)


def _rows(
    events: list[Any], group: str | None, evidence_id: str, errors: ErrorLog
) -> Iterator[Row]:
    for number, event in enumerate(events, 1):
        if not isinstance(event, dict):
            errors.add("an event that is not a JSON object", record=number)
            continue
        when = iso_from_ms(event.get("timestamp"))
        if when is None:
            stamp = inert(event.get("timestamp"), 60)
            errors.add(f"an event whose `timestamp` is not a time in ms ({stamp}); not placed",
                       record=number)  # fmt: skip
            continue
        message = event.get("message")
        text = message if isinstance(message, str) else json.dumps(message)
        stream = event.get("logStreamName")
        stream = stream if isinstance(stream, str) else None
        raw = dict(event, logGroupName=group) if group else event
        event_id = _event_id(group, event, number, evidence_id)
        yield _row(when, TIME_DESC, stream, group, text, evidence_id, event_id, raw)


def _export_rows(path: Path, evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    """One row per event of an export task's file, as a page's event would give."""
    group = _log_group(path)
    stream = stream_of(path, evidence_id)
    seen: dict[str, int] = {}
    for number, stamp, message in read_export(path, errors):
        millis = epoch_ms(stamp)
        when = iso_from_ms(millis)
        if millis is None or when is None:
            errors.add(f"an export line whose time is no date ({inert(stamp, 40)}); not placed",
                       line=number)  # fmt: skip
            continue
        line = f"{stamp}Z {message}"
        seen[line] = seen.get(line, 0) + 1
        raw = {"logGroupName": group, "logStreamName": stream, "timestamp": millis,
               "message": message}  # fmt: skip
        event_id = export_event_id(group, stream, line, seen[line])
        yield _row(when, EXPORT_TIME_DESC, stream, group, message, evidence_id, event_id, raw)


def _row(
    when: str,
    time_desc: str,
    stream: str | None,
    group: str | None,
    text: str,
    evidence_id: str,
    event_id: str,
    raw: dict[str, Any],
) -> Row:
    """One event's row, whichever way it came (a page of the API, an export file)."""
    return Row(
        timestamp=when,
        timestamp_desc=time_desc,
        source=SOURCE,
        artifact=ARTIFACT,
        host=stream,
        user=None,
        src_ip=None,
        action=None,
        target=group,
        outcome=None,
        message=inert(text, MAX_MESSAGE),
        evidence_id=evidence_id,
        event_id=event_id,
        raw=json.dumps(raw, sort_keys=True, ensure_ascii=False),
    )


def iso_from_ms(stamp: Any) -> str | None:
    """Epoch milliseconds (the API's times) as ISO 8601 UTC text; None for anything else,
    or a time outside years 1-9999."""
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or stamp != stamp:
        return None
    try:
        moment = EPOCH + timedelta(milliseconds=int(stamp))
    except (OverflowError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds")


def _event_id(group: str | None, event: dict[str, Any], number: int, evidence_id: str) -> str:
    """The service's id within its group and stream (an emulator numbers each stream from
    0); without one, this event's place in the item."""
    given, stream = event.get("eventId"), event.get("logStreamName")
    if isinstance(given, str) and given and group:
        key = f"cloudwatch-logs\x00{group}\x00{stream}\x00{given}"
    else:
        key = f"{evidence_id}\x00{json.dumps(event, sort_keys=True)}\x00{number}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _log_group(path: Path) -> str | None:
    """The item's log group (meta.json `source.log_group`), or None for pages brought in
    by `capture files`, whose item does not say. An export's files sit deeper
    (`logs/<taskId>/<stream...>/000000.gz`): the first meta.json above them is the item's."""
    folders = [path.parent.parent, path.parent]
    if is_export_object(path):
        found = next((f for f in path.parents if (f / "meta.json").is_file()), None)
        folders = [found] if found else []
    for folder in folders:
        try:
            meta = json_loads((folder / "meta.json").read_bytes())
        except (OSError, ValueError):
            continue
        source = meta.get("source") if isinstance(meta, dict) else None
        group = source.get("log_group") if isinstance(source, dict) else None
        if isinstance(group, str) and group:
            return group
    return None


def read_bounded(path: Path, limit: int = MAX_PAGE_BYTES) -> bytes:
    """At most `limit + 1` bytes of the file (more than `limit` means too big: the caller
    says so and reads nothing of it), never through a link and never waiting on a FIFO.
    Shared with the parsers of the API answers kept beside such pages (EKS's cluster)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit + 1)


register(
    Parser(
        name="cloudwatch-logs",
        evidence_kinds=(KIND,),
        accepts=accepts,
        parse=parse,
        skip_reason=skip_reason,
        artifacts=(
            RowSource(
                ARTIFACT,
                "one CloudWatch Logs event (FilterLogEvents page or export task file), at its time",
            ),
        ),
        capture_kind=KIND,
        recognise=recognise,
        priority=60,
    )
)
