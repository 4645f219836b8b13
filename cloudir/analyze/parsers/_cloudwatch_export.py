"""The files a CloudWatch Logs export task writes to S3, read as the group's events.

An export task (`capture logs --export-to`) writes, per log stream, gzipped text under
`<prefix>/<taskId>/<stream name>/000000.gz` (`000001.gz`, ... for more): one event per
line as `<ISO 8601 time>Z <message>`. There is no event id and no ingestion time, so a
row holds what the line holds: the stream (from the object's key, which the item's file
name encodes reversibly), the time and the message. A message with line breaks (a stack
trace) is written over several lines; a line that does not start with a time continues
the event before it. A line without a time before any event, an over-long line and a
truncated or corrupt gzip are entries in timeline/errors.jsonl; the rest is read.

Shared by `cloudwatch_logs.py`, whose rows these are (artifact `aws:cloudwatch-logs`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cloudir.analyze.parsers import ErrorLog
from cloudir.analyze.parsers._access_log import log_lines
from cloudir.s3_key_names import key_for_evidence_name

TIME_DESC: Final = "Exported Event Time"
_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)Z(?: (.*))?$", re.S)
_MAX_PARENTS: Final = 64  # how far up an item's folder is looked for


def is_export_object(path: Path) -> bool:
    """A gzip file of an export task (`000000.gz`): the name is all AWS gives."""
    return path.name.lower().endswith(".gz")


def stream_of(path: Path, evidence_id: str) -> str | None:
    """The log stream an export object belongs to. In an item `capture logs --export-to`
    made, the file's name in the item encodes the key `<taskId>/<stream>/<file>`
    (`cloudir.s3_key_names`), so a stream named with `/` (Lambda's
    `2024/07/31/[$LATEST]...`) comes back whole; elsewhere (`capture files` of an export
    downloaded by hand) it is the name of the folder the file is in."""
    root = _item_root(path, evidence_id)
    if root is not None:
        name = path.relative_to(root).as_posix()
        try:
            key = key_for_evidence_name(name)
        except ValueError:
            key = None
        if key is not None and key.count("/") >= 2:
            return key.split("/", 1)[1].rsplit("/", 1)[0]
    return path.parent.name or None


def _item_root(path: Path, evidence_id: str) -> Path | None:
    for number, folder in enumerate(path.parents):
        if number >= _MAX_PARENTS:
            break
        if folder.name == evidence_id and (folder / "meta.json").is_file():
            return folder
    return None


def read_export(path: Path, errors: ErrorLog) -> Iterator[tuple[int, str, str]]:
    """(line number, ISO time text, message) of each event of the file; continuation
    lines are joined to their event's message with a line break."""
    pending: tuple[int, str, str] | None = None
    for number, text in log_lines(path, errors):
        found = _LINE.match(text)
        if found is None:
            if pending is None:
                errors.add("a line that does not start with an export's time "
                           "(YYYY-MM-DDTHH:MM:SS.sssZ); not placed", line=number)  # fmt: skip
                continue
            pending = (pending[0], pending[1], f"{pending[2]}\n{text}")
            continue
        if pending is not None:
            yield pending
        pending = (number, found.group(1), found.group(2) or "")
    if pending is not None:
        yield pending


def epoch_ms(stamp: str) -> int | None:
    """The line's time as epoch milliseconds (UTC); None for a date that is none."""
    whole, _, fraction = stamp.partition(".")
    try:
        moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    millis = int((fraction + "000")[:3]) if fraction else 0
    return int(moment.timestamp()) * 1000 + millis


def event_id(group: str | None, stream: str | None, line: str, seen: int) -> str:
    """The same event exported twice (two tasks over one window) has the same id; two
    identical lines of one stream stay two events (`seen` counts them in the file)."""
    key = json.dumps(["cloudwatch-logs-export", group, stream, line, seen])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
